"""merge_grain_masks / merge_phase_masks: the crops' masks -> labels.tif and the boundary or phase map."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.merge_masks(smk.input.image, smk.input.crops, smk.input.prompts, smk.input.masks, smk.wildcards.image,
                      smk.output.labels, smk.output.map, smk.params.mode, job.section(smk, "merge"),
                      job.section(smk, "prompts").blur, job.section(smk, "quantify").pixel_size_um)
