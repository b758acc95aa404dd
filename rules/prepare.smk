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
        read=section("read"),
    script:
        "../scripts/prepare_image.py"


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
        crops=section("crops"),
    script:
        "../scripts/plan_crops.py"
