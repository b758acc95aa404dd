# What `snakemake --report report.html` shows (README "Report"): per dataset the overlays (marked in
# merge.smk), the size histogram, the per-image G or phase fraction, the ASTM table with flagged
# images and the metrics; per run the configuration and versions. Captions live in report/.


include: "report_inputs.smk"


rule dataset_report:
    input:
        summary=rules.aggregate_dataset.output.summary,
        metrics=rules.aggregate_dataset.output.metrics,
        objects=dataset_objects,
    output:
        astm=f"{RESULTS}/{{dataset}}/astm.csv",
        sizes=report(
            f"{RESULTS}/{{dataset}}/report/sizes.png",
            caption="../report/sizes.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "size distribution"},
        ),
        fields=report(
            f"{RESULTS}/{{dataset}}/report/fields.png",
            caption="../report/fields.rst",
            category="{dataset}",
            subcategory="figures",
            labels={"figure": "per image"},
        ),
        tables=report(
            f"{RESULTS}/{{dataset}}/report/tables.html",
            caption="../report/tables.rst",
            category="{dataset}",
            subcategory="tables",
            labels={"table": "ASTM, flags, metrics"},
        ),
    log:
        f"{LOGS}/dataset_report/{{dataset}}.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        mode=dataset_mode,
    script:
        "../scripts/dataset_report.py"


rule run_report:
    output:
        run=report(
            f"{RESULTS}/report/run.html",
            caption="../report/run.rst",
            category="run",
            labels={"table": "configuration and versions"},
        ),
    log:
        f"{LOGS}/run_report.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        config=config,
        checkpoints=sam_checkpoints(),
    script:
        "../scripts/run_report.py"
