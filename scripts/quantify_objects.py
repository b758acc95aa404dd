"""quantify_objects: per-object table, the image's summary row and its COCO export."""

from matsam.workflow import job, steps

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    steps.quantify_objects(smk.input.raw, smk.input.labels, smk.input.map, smk.output.objects, smk.output.summary,
                           smk.params.mode, job.section(smk, "quantify"), smk.wildcards.image, smk.output.coco)
