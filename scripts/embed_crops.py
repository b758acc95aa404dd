"""embed_crops: one SAM encoder job over a shard of images; writes every crop's embedding."""

from matsam.workflow import job, steps

with job.run(snakemake, torch_threads=True) as smk:  # noqa: F821 (injected by Snakemake)
    steps.embed_images(job.shard_names(smk.input.images), smk.input.images, smk.input.crops,
                       smk.output.embeddings, job.section(smk, "read"), job.section(smk, "model"))
