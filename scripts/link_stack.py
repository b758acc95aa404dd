"""link_stack: a stack's per-slice 2D results -> 3D objects, their tables and views."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.link_stack(smk.input.labels, smk.input.maps, smk.input.grey, dict(smk.output.items()), smk.params.stack,
                     smk.params.mode, smk.params.voxel_size_um, smk.params.align, job.section(smk, "link"))
