rule prepare_image:
    input:
        image=raw_image,
    output:
        image=f"{WORK}/{{dataset}}/{{image}}/image.png",
    log:
        f"{LOGS}/prepare_image/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cfg=stage_params("read"),
    script:
        STEP


rule plan_crops:
    input:
        image=rules.prepare_image.output.image,
    output:
        crops=f"{WORK}/{{dataset}}/{{image}}/crops.json",
    log:
        f"{LOGS}/plan_crops/{{dataset}}/{{image}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        cfg=stage_params("crops"),
    script:
        STEP
