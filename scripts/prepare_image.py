"""prepare_image: any supported micrograph -> the 8-bit RGB PNG every later step reads."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.prepare_image(smk.input.image, smk.output.image, job.section(smk, "read"))
