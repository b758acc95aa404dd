rule make_prompts:
    input:
        image=rules.prepare_image.output.image,
        crops=rules.plan_crops.output.crops,
    output:
        prompts=f"{WORK}/{{dataset}}/{{image}}/prompts.npz",
    log:
        f"{LOGS}/make_prompts/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=cpu_mem_mb,
        runtime=10,
    params:
        mode=dataset_mode,
        prompts=section("prompts"),
    script:
        "../scripts/make_prompts.py"
