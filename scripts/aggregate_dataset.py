"""aggregate_dataset: a dataset's metrics.csv and summary.csv from its images' rows."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.aggregate_dataset(smk.input.metrics, smk.input.summaries, smk.output.metrics, smk.output.summary)
