# SAM inference; the only rule that may ask the scheduler for a GPU. One job loads the model once
# and segments every crop of a shard of images (config `sam_images_per_job`, default 1 image),
# writing each crop's masks to its own file: <shard>/<image>/crop_<i>.npz.


rule segment_crops:
    input:
        images=shard_inputs("image.png"),
        crops=shard_inputs("crops.json"),
        prompts=shard_inputs("prompts.npz"),
    output:
        masks=directory(f"{WORK}/{{dataset}}/sam/{{shard}}"),
    log:
        f"{LOGS}/segment_crops/{{dataset}}/{{shard}}.log",
    benchmark:
        f"{LOGS}/segment_crops/{{dataset}}/{{shard}}.benchmark.tsv"
    conda:
        CONDA_ENV
    threads: config["sam_threads"]
    resources:
        gpu=sam_gpus,
        mem_mb=sam_mem_mb,
        runtime=sam_runtime,
    params:
        cfg=stage_params("read", "sam"),
    script:
        STEP
