"""collect_checks: a dataset's checks in one file (the checkpoint the SAM shards wait for)."""

from matsam.workflow import input_check, job

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    input_check.collect_checks(smk.input.checks, smk.output.checks)
