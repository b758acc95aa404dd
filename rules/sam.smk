# SAM inference in two rules, both scheduled like GPU work. `embed_crops` runs the image encoder
# once per crop and keeps the embeddings; `segment_crops` decodes the point prompts from them.
# Prompt, filter and merge settings reach only the second, so changing them never reruns the
# encoder. One job of each takes a shard of `sam_images_per_job` images (one model load).


rule embed_crops:
    input:
        images=shard_inputs("image.png"),
        crops=shard_inputs("crops.json"),
    output:
        embeddings=embeddings_output(f"{WORK}/{{dataset}}/embeddings/{{shard}}"),
    log:
        f"{LOGS}/embed_crops/{{dataset}}/{{shard}}.log",
    benchmark:
        f"{LOGS}/embed_crops/{{dataset}}/{{shard}}.benchmark.tsv"
    conda:
        CONDA_ENV
    threads: config["sam_threads"]
    resources:
        gpu=sam_gpus,
        mem_mb=embed_mem_mb,
        runtime=embed_runtime,
    params:
        read=section("read"),
        model=section("model"),
    script:
        "../scripts/embed_crops.py"


rule segment_crops:
    input:
        crops=shard_inputs("crops.json"),
        prompts=shard_inputs("prompts.npz"),
        embeddings=f"{WORK}/{{dataset}}/embeddings/{{shard}}",
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
        mem_mb=decode_mem_mb,
        runtime=decode_runtime,
        points_per_batch=decode_points_per_batch,
    params:
        model=section("model"),
        sam=section("sam"),
    script:
        "../scripts/segment_crops.py"
