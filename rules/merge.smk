# Cross-crop NMS and post-processing: grain images get a boundary map, phase images a phase mask.


rule merge_grain_masks:
    input:
        image=rules.prepare_image.output.image,
        crops=rules.plan_crops.output.crops,
        prompts=rules.make_prompts.output.prompts,
        masks=sam_shard,
    output:
        labels=f"{RESULTS}/{{dataset}}/{{image}}/labels.tif",
        map=f"{RESULTS}/{{dataset}}/{{image}}/boundaries.png",
    log:
        f"{LOGS}/merge_masks/{{dataset}}/{{image}}.log",
    wildcard_constraints:
        dataset=datasets_of_mode("grain"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=cpu_mem_mb,
        runtime=20,
    params:
        mode=dataset_mode,
        merge=section("merge"),
        prompts=section("prompts"),
        quantify=section("quantify"),
    script:
        "../scripts/merge_masks.py"


use rule merge_grain_masks as merge_phase_masks with:
    output:
        labels=f"{RESULTS}/{{dataset}}/{{image}}/labels.tif",
        map=f"{RESULTS}/{{dataset}}/{{image}}/phase.png",
    wildcard_constraints:
        dataset=datasets_of_mode("phase"),


rule draw_overlay:
    input:
        image=rules.prepare_image.output.image,
        labels=f"{RESULTS}/{{dataset}}/{{image}}/labels.tif",
        map=map_file,
    output:
        overlay=report(
            f"{RESULTS}/{{dataset}}/{{image}}/overlay.png",
            caption="../report/overlay.rst",
            category="{dataset}",
            subcategory="overlays",
            labels={"image": "{image}"},
        ),
    log:
        f"{LOGS}/draw_overlay/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=cpu_mem_mb,
        runtime=10,
    params:
        mode=dataset_mode,
    script:
        "../scripts/draw_overlay.py"
