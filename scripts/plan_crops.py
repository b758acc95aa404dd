"""plan_crops: the crop boxes of one image (the whole image plus the crop layers)."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.plan_crops(smk.input.image, smk.output.crops, job.section(smk, "crops"))
