# matsam: segment material micrographs with Segment Anything, then measure them.
#
# Results (see README "Output contract"):
#   <results>/<dataset>/<image>/{labels.tif, boundaries.png|phase.png, overlay.png, objects.csv}
#   <results>/<dataset>/{metrics.csv, summary.csv}, <results>/summary.csv
# Work files: <results>/_work/<dataset>/<image>/{image.png, crops.json, prompts.npz, masks/crop_<i>.npz}


import sys

from snakemake.utils import min_version

min_version("9.0")


# The sample configuration, unless --configfile names another one (which then replaces it
# instead of being merged into it).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/check.smk"
include: "rules/prepare.smk"
include: "rules/prompts.smk"
include: "rules/sam.smk"
include: "rules/merge.smk"
include: "rules/quantify.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"
include: "rules/stacks.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs,
        report_outputs(),


onsuccess:
    from matsam.workflow.input_check import failure_summary

    if summary := failure_summary(f"{RESULTS}/failed.csv"):
        print(summary, file=sys.stderr)
        raise SystemExit(1)
