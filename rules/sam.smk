# SAM inference, one job per crop; the only rule that may ask the scheduler for a GPU.


rule segment_crops:
    input:
        image=rules.prepare_image.output.image,
        crops=rules.plan_crops.output.crops,
        prompts=rules.make_prompts.output.prompts,
    output:
        masks=f"{WORK}/{{dataset}}/{{image}}/masks/crop_{{crop}}.npz",
    params:
        cfg=stage_params("read", "sam"),
    log:
        f"{LOGS}/segment_crops/{{dataset}}/{{image}}/crop_{{crop}}.log",
    conda:
        CONDA_ENV
    benchmark:
        f"{LOGS}/segment_crops/{{dataset}}/{{image}}/crop_{{crop}}.benchmark.tsv"
    threads: config["sam_threads"]
    resources:
        gpu=sam_gpus,
        mem_mb=sam_mem_mb,
        runtime=sam_runtime,
    script:
        STEP
