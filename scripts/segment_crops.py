"""segment_crops: one SAM decoder job over a shard; decodes the prompts from the embeddings."""

from matsam.workflow import job, steps

with job.run(snakemake, torch_threads=True) as smk:  # noqa: F821 (injected by Snakemake)
    steps.segment_images(job.shard_names(smk.input.crops), smk.input.crops, smk.input.prompts,
                         smk.input.embeddings, smk.output.masks, job.section(smk, "model"), job.sam_section(smk))
