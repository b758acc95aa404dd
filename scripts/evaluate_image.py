"""evaluate_image: matsam and the classic baselines scored against the image's label."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.evaluate_image(smk.input.image, smk.input.map, smk.input.label, smk.input.prompts, smk.output.metrics,
                         smk.params.mode, smk.wildcards.image, smk.params.baselines)
