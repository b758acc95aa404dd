rule aggregate_dataset:
    input:
        metrics=dataset_metrics,
        summaries=dataset_summaries,
    output:
        metrics=f"{RESULTS}/{{dataset}}/metrics.csv",
        summary=f"{RESULTS}/{{dataset}}/summary.csv",
    log:
        f"{LOGS}/aggregate_dataset/{{dataset}}.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate_dataset.py"


rule aggregate_all:
    input:
        metrics=expand(f"{RESULTS}/{{dataset}}/metrics.csv", dataset=DATASETS),
    output:
        summary=f"{RESULTS}/summary.csv",
    log:
        f"{LOGS}/aggregate_all.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        datasets=list(DATASETS),
    script:
        "../scripts/aggregate_all.py"
