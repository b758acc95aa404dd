# Each image (and label) is read once before any work; a bad one is recorded, not fatal
# (matsam/workflow/input_check.py), and left out of its SAM shard and of the tables.


rule check_input:
    input:
        unpack(check_inputs),
    output:
        check=f"{WORK}/{{dataset}}/{{image}}/check.json",
    log:
        f"{LOGS}/check_input/{{dataset}}/{{image}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        mode=dataset_mode,
    script:
        "../scripts/check_input.py"


checkpoint collect_checks:
    input:
        checks=dataset_check_files,
    output:
        checks=f"{WORK}/{{dataset}}/checks.json",
    log:
        f"{LOGS}/collect_checks/{{dataset}}.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/collect_checks.py"


rule failed_table:
    input:
        checks=expand(f"{WORK}/{{dataset}}/checks.json", dataset=checked_datasets()),
    output:
        failed=f"{RESULTS}/failed.csv",
    log:
        f"{LOGS}/failed_table.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/failed_table.py"
