# Serial-section stacks: every slice runs through the 2D rules as an image of the dataset
# "<stack>/slices" (see load_stacks in common.smk); this rule links the slices' 2D results into
# 3D objects and writes the stack's outputs (README "3D serial-section stacks").


rule link_stack:
    input:
        labels=stack_slice_files("labels"),
        maps=stack_slice_files("maps"),
        grey=stack_slice_files("grey"),
    output:
        labels3d=f"{RESULTS}/{{stack}}/labels3d.h5",
        grains3d=f"{RESULTS}/{{stack}}/grains3d.csv",
        neighbours3d=f"{RESULTS}/{{stack}}/neighbours3d.csv",
        summary=f"{RESULTS}/{{stack}}/summary.csv",
        shifts=f"{RESULTS}/{{stack}}/shifts.json",
        ortho_xy=f"{RESULTS}/{{stack}}/ortho_xy.png",
        ortho_xz=f"{RESULTS}/{{stack}}/ortho_xz.png",
        ortho_yz=f"{RESULTS}/{{stack}}/ortho_yz.png",
    log:
        f"{LOGS}/link_stack/{{stack}}.log",
    benchmark:
        f"{LOGS}/link_stack/{{stack}}.benchmark.tsv"
    wildcard_constraints:
        stack="|".join(STACKS) or "(?!)",
    conda:
        CONDA_ENV
    resources:
        mem_mb=stack_mem_mb,
        runtime=stack_runtime,
    params:
        stack=lambda wildcards: wildcards.stack,
        mode=lambda wildcards: STACKS[wildcards.stack].mode,
        voxel_size_um=stack_voxel_size,
        align=lambda wildcards: STACKS[wildcards.stack].align,
        link=stack_link,
    script:
        "../scripts/link_stack.py"
