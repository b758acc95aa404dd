"""run_report: the report's page of the run's configuration and versions."""

from matsam.measurement import report
from matsam.workflow import job

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    report.run_report(smk.params.config, smk.params.checkpoints, smk.output.run)
