"""How the workflow scales to 10,000 micrographs: DAG build time, jobs and Slurm submissions.

    .venv/bin/python benchmarks/dag_scale.py                     # 10,000 images, shards 1 and 16
    .venv/bin/python benchmarks/dag_scale.py --images 2000 --cprofile

For each `sam_images_per_job` value it writes a config over N tiny synthetic micrographs
(32x32 PNGs with a reference label each, so every per-image rule runs) and times

* `snakemake -n` without a profile (plain local DAG),
* `snakemake -n --profile profiles/slurm` (groups, group-components, set-resources),

both with their whole output written to a file. From the first it takes the number of jobs
(Snakemake's "Job stats" total), from the second the number of sbatch submissions the slurm
executor would make: one per printed "Group job" plus one per ungrouped job that is not a
local rule (local rules run in the main process and are never submitted).

With `--batches B` (default 20) it also times the first of the B dry runs that
`--batch all=i/B` splits the workflow into (each builds the DAG of 1/B of the images: how very
large collections should be run, see docs/cluster.md); `--no-full` skips the whole-DAG runs.

It also times `snakemake --list-rules` on the same config: that is the workflow parse plus the
dataset catalogue, which every Slurm job pays again (the job runs `python -m snakemake` on the
node, and a group job once per grouped job: each one is its own srun step and process).

`--sam-results FILE` (the JSON that benchmarks/sam_jobs.py writes) adds the scheduler-side
overhead per image measured there. `--cprofile` runs the profiled dry run once more under
cProfile and prints the most expensive functions of the workflow's own code and of Snakemake.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
LOCAL_RULES = {"all", "aggregate_dataset", "aggregate_all"}  # `localrule: True` / no run step
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}, "crops": {"n_layers": 0}}


def make_images(root: Path, n: int, size: int) -> Path:
    """n PNGs (a dark disc on a bright noisy background) and their 0/1 labels; kept between runs."""
    import cv2

    images, labels = root / "images", root / "labels"
    stamp = root / f"done_{n}_{size}"
    if stamp.exists():
        return root
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.2 * size) ** 2).astype(np.uint8)
        grey = np.clip(np.where(mask, 70, 190) + rng.normal(0, 4, mask.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(images / f"img_{i:05d}.png"), grey)
        cv2.imwrite(str(labels / f"img_{i:05d}.png"), mask)
    stamp.touch()
    return root


def write_config(folder: Path, data: Path, per_job: int) -> Path:
    import yaml

    config = {
        "results": "results", "device": "cpu", "sam_images_per_job": per_job, "defaults": FAST,
        "datasets": {"scale": {"images": str(data / "images"), "labels": str(data / "labels"), "mode": "phase"}},
    }
    path = folder / f"config_{per_job}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_cmd(folder: Path, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(folder), "--configfile", str(config), *args]


def timed(cmd: list[str], out: Path, timeout: int, **env: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a command; its output goes to `out`. CPU time (user + sys of the
    child) is the number to compare on a busy machine: wall time grows with the load."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with out.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, timeout=timeout, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out.read_text()[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def count_jobs(text: str) -> int:
    match = re.search(r"^total\s+(\d+)$", text, re.MULTILINE)
    if not match:
        raise ValueError("no 'Job stats' total in the dry-run output")
    return int(match.group(1))


def count_submissions(text: str) -> tuple[int, dict[str, int]]:
    """sbatch calls of a dry run with the slurm profile: group jobs + ungrouped remote jobs."""
    groups = len(re.findall(r"\] Group job \S+", text))
    ungrouped: dict[str, int] = {}
    for rule in re.findall(r"^(?:local)?rule (\w+):", text, re.MULTILINE):  # top level only
        if rule not in LOCAL_RULES:
            ungrouped[rule] = ungrouped.get(rule, 0) + 1
    return groups + sum(ungrouped.values()), {"group jobs": groups, **ungrouped}


def cprofile_dry_run(folder: Path, config: Path, top: int) -> str:
    """The dry run with the profile, in-process under cProfile; the heaviest functions."""
    from snakemake.cli import main as snakemake_main

    argv = snakemake_cmd(folder, config, "-n", "--quiet", "rules", "--profile", str(PROFILE))[3:]
    profiler = cProfile.Profile()
    cwd = os.getcwd()
    profiler.enable()
    try:
        snakemake_main(argv)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        os.chdir(cwd)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(r"common\.smk|matsam/|Snakefile", top)
    stats.sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32, help="px; matsam.io.read_image needs >= 16")
    parser.add_argument("--per-job", type=int, nargs="+", default=[1, 16], help="sam_images_per_job values")
    parser.add_argument("--group-images", type=int, nargs="+", default=[8],
                        help="MATSAM_SLURM_GROUP_IMAGES values for the profile's group-components")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/matsam-bench/dag_scale"))
    parser.add_argument("--sam-results", type=Path, default=Path("/tmp/matsam-bench/sam_jobs.json"),
                        help="JSON written by benchmarks/sam_jobs.py (optional)")
    parser.add_argument("--batches", type=int, default=20,
                        help="also time the first of B `--batch all=i/B` dry runs (0: skip)")
    parser.add_argument("--no-full", action="store_true", help="skip the whole-DAG dry runs (minutes each)")
    parser.add_argument("--cprofile", action="store_true", help="profile the DAG build (profiled run)")
    parser.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args()

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = make_images(work / f"data_{args.images}_{args.size}", args.images, args.size)
    print(f"{args.images} images of {args.size}x{args.size} px in {data} ({time.perf_counter() - t0:.1f} s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    rows: list[dict] = []
    batch_rows: list[dict] = []
    for per_job in args.per_job:
        folder = work / f"run_{args.images}_{per_job}"
        folder.mkdir(exist_ok=True)
        config = write_config(folder, data, per_job)
        parse = timed(snakemake_cmd(folder, config, "--list-rules"), folder / "list_rules.txt", args.timeout)
        if args.batches:
            out = folder / f"dry_slurm_batch_1_of_{args.batches}.txt"
            batch = timed(snakemake_cmd(folder, config, "-n", "--profile", str(PROFILE), "--batch",
                                        f"all=1/{args.batches}"), out, args.timeout)
            text = out.read_text()
            batch_row = {"per_job": per_job, "batches": args.batches, "jobs": count_jobs(text),
                         "submissions": count_submissions(text)[0], "dry_slurm_s": batch}
            batch_rows.append(batch_row)
            print(f"  sam_images_per_job={per_job} --batch all=1/{args.batches}: {batch_row['jobs']} jobs, "
                  f"{batch_row['submissions']} sbatch, -n slurm {batch[0]:.0f} s (CPU {batch[1]:.0f} s)", flush=True)
        if args.no_full:
            continue
        plain = timed(snakemake_cmd(folder, config, "-n", "--cores", "2"), folder / "dry_plain.txt", args.timeout)
        jobs = count_jobs((folder / "dry_plain.txt").read_text())
        for group in args.group_images:
            out = folder / f"dry_slurm_g{group}.txt"
            slurm = timed(snakemake_cmd(folder, config, "-n", "--profile", str(PROFILE)), out, args.timeout,
                          MATSAM_SLURM_GROUP_IMAGES=str(group))
            text = out.read_text()
            if count_jobs(text) != jobs:
                sys.exit("the profile changed the number of jobs")
            submissions, detail = count_submissions(text)
            rows.append({"per_job": per_job, "group_images": group, "jobs": jobs, "submissions": submissions,
                         "detail": detail, "parse_s": parse, "dry_plain_s": plain, "dry_slurm_s": slurm})
            print(f"  sam_images_per_job={per_job} group={group}: {jobs} jobs, {submissions} sbatch, -n plain "
                  f"{plain[0]:.0f} s (CPU {plain[1]:.0f} s), -n slurm {slurm[0]:.0f} s (CPU {slurm[1]:.0f} s)",
                  flush=True)

    print(f"\n{args.images} images; times are wall / CPU seconds (load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'images/SAM job':>14} {'images/group':>12} {'jobs':>7} {'sbatch':>7} {'jobs/sbatch':>11} "
          f"{'-n plain':>13} {'-n --profile slurm':>18} {'parse':>11}   sbatch by kind")
    for r in rows:
        fmt = lambda t: f"{t[0]:.0f}/{t[1]:.0f}"  # noqa: E731
        print(f"{r['per_job']:>14} {r['group_images']:>12} {r['jobs']:>7} {r['submissions']:>7} "
              f"{r['jobs'] / r['submissions']:>10.1f}x {fmt(r['dry_plain_s']):>13} {fmt(r['dry_slurm_s']):>18} "
              f"{fmt(r['parse_s']):>11}   " + ", ".join(f"{k} {v}" for k, v in r["detail"].items()))
    for r in batch_rows:
        print(f"{r['per_job']:>14} {'batch 1/' + str(r['batches']):>12} {r['jobs']:>7} {r['submissions']:>7} "
              f"{r['jobs'] / r['submissions']:>10.1f}x {'':>13} {r['dry_slurm_s'][0]:>9.0f}/{r['dry_slurm_s'][1]:.0f}")
    print("-n: `snakemake -n` incl. start-up and writing its whole output; parse: `snakemake --list-rules`, "
          "the start-up (workflow + catalogue) that every Slurm job pays again, once per grouped job")

    if args.sam_results.is_file():
        sam = json.loads(args.sam_results.read_text())
        print(f"\nscheduler-side overhead per image, from {args.sam_results} (Slurm minus local wall time):")
        runs = {(r["mode"], r["per_job"]): r for r in sam["runs"]}
        for (mode, per_job), slurm in sorted(runs.items()):
            local = runs.get(("local", per_job))
            if mode != "slurm" or local is None:
                continue
            extra = slurm["wall_s"] / slurm["images"] - local["wall_s"] / local["images"]
            print(f"  SAM stage, sam_images_per_job={per_job:>3}: Slurm {slurm['wall_s']:.0f} s / {slurm['images']} "
                  f"images, local {local['wall_s']:.0f} s / {local['images']} images: {extra:+.1f} s per image")
        cpu = sam.get("cpu_stage") or {}
        if "slurm_s" in cpu:
            extra = (cpu["slurm_s"] - cpu["local_s"]) / cpu["images"]
            print(f"  pre-SAM CPU steps (grouped): Slurm {cpu['slurm_s']:.0f} s, local {cpu['local_s']:.0f} s, "
                  f"{cpu['images']} images: {extra:+.1f} s per image")
    (work / f"dag_scale_{args.images}.json").write_text(json.dumps({"full": rows, "batches": batch_rows}, indent=1))

    if args.cprofile:
        per_job = args.per_job[-1]
        folder = work / f"run_{args.images}_{per_job}"
        os.environ["MATSAM_SLURM_GROUP_IMAGES"] = str(args.group_images[-1])
        print(f"\ncProfile of `snakemake -n --profile profiles/slurm` (sam_images_per_job={per_job}, "
              f"group {args.group_images[-1]}):")
        print(cprofile_dry_run(folder, folder / f"config_{per_job}.yaml", 25))


if __name__ == "__main__":
    main()
