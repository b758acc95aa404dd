rule aggregate_dataset:
    input:
        metrics=dataset_metrics,
        summaries=dataset_summaries,
    output:
        metrics=f"{RESULTS}/{{dataset}}/metrics.csv",
        summary=f"{RESULTS}/{{dataset}}/summary.csv",
    log:
        f"{LOGS}/aggregate_dataset/{{dataset}}.log",
    conda:
        CONDA_ENV
    localrule: True
    script:
        STEP


rule aggregate_all:
    input:
        metrics=expand(f"{RESULTS}/{{dataset}}/metrics.csv", dataset=DATASETS),
    output:
        summary=f"{RESULTS}/summary.csv",
    params:
        datasets=list(DATASETS),
    log:
        f"{LOGS}/aggregate_all.log",
    conda:
        CONDA_ENV
    localrule: True
    script:
        STEP
