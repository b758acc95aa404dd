"""make_prompts: pre-segment the image and write every crop's point prompts."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.make_prompts(smk.input.image, smk.input.crops, smk.output.prompts, smk.params.mode,
                       job.section(smk, "prompts"))
