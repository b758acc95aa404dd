"""check_input: read an image (and its label) once; a bad one is recorded, not fatal."""

from matsam.workflow import input_check, job

with job.run(snakemake) as smk:  # noqa: F821 (injected by Snakemake)
    input_check.check_input(smk.wildcards.dataset, smk.wildcards.image, smk.params.mode, smk.input.raw,
                            smk.input.get("label"), smk.output.check)
