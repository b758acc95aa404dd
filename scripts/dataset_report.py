"""dataset_report: a dataset's report figures and tables (ASTM, flags, metrics)."""

from matsam.measurement import report
from matsam.workflow import job

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    report.dataset_report(smk.wildcards.dataset, smk.params.mode, smk.input.summary, smk.input.metrics,
                          smk.input.objects, smk.output.astm, smk.output.sizes, smk.output.fields, smk.output.tables)
