rule prepare_image:
    input:
        image=raw_image,
    output:
        image=f"{WORK}/{{dataset}}/{{image}}/image.png",
    params:
        cfg=stage_params("read"),
    log:
        f"{LOGS}/prepare_image/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        STEP


rule plan_crops:
    input:
        image=rules.prepare_image.output.image,
    output:
        crops=f"{WORK}/{{dataset}}/{{image}}/crops.json",
    params:
        cfg=stage_params("crops"),
    log:
        f"{LOGS}/plan_crops/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    localrule: True
    script:
        STEP
