"""Entry point of every pipeline rule: log to the rule's log file, then run its matsam step.

Snakemake runs this with a `snakemake` object in scope; the step is chosen by the rule's name
(see matsam/workflow_steps.py), so the rules stay declarations of files and resources.
"""

from matsam.workflow.job import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
