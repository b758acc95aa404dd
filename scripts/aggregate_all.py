"""aggregate_all: the run's summary.csv, one row per dataset and method."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.aggregate_all(smk.params.datasets, smk.input.metrics, smk.output.summary)
