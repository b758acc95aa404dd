"""The pipeline around the algorithms: the dataset catalogue, the file-to-file steps the rules
and the CLI run, the Snakemake job adapter, input checks and pre-flight."""
