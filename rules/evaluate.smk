# Metrics against reference labels, for matsam and the classic baselines (labelled datasets only).


rule evaluate_image:
    input:
        image=rules.prepare_image.output.image,
        map=map_file,
        label=label_file,
        prompts=rules.make_prompts.output.prompts,
    output:
        metrics=f"{RESULTS}/{{dataset}}/{{image}}/metrics.csv",
    log:
        f"{LOGS}/evaluate_image/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=cpu_mem_mb,
        runtime=20,
    params:
        mode=dataset_mode,
        baselines=dataset_baselines,
    script:
        "../scripts/evaluate_image.py"
