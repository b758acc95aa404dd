"""failed_table: <results>/failed.csv, every file that failed its check (file, step, error)."""

from matsam.workflow import input_check, job

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    input_check.write_failed_table(smk.input.checks, smk.output.failed)
