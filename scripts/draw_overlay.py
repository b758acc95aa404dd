"""draw_overlay: the objects tinted over the micrograph, for a person to check at a glance."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.draw_overlay(smk.input.image, smk.input.labels, smk.input.map, smk.output.overlay, smk.params.mode)
