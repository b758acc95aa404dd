"""The SAM stage three ways: the pipeline locally, the pipeline through Slurm, one in-process loop.

    .venv/bin/python benchmarks/sam_jobs.py                       # ~20 min on 2 busy CPUs
    .venv/bin/python benchmarks/sam_jobs.py --per-job 16 --no-slurm

Work: 64 synthetic 96x96 disc micrographs (tests/synthetic.py `few_discs`), `crops: {n_layers: 0}`
(one crop per image: 64 crops), the fast prompt grid of tests/test_workflow.py, `device: cpu`,
`sam_threads: 2`, MobileSAM. The CPU steps before SAM (prepare_image, plan_crops, make_prompts)
run once, untimed, with `snakemake --cores 2 --until make_prompts`; their results (and Snakemake's
metadata) are copied into every timed run, so that a timed run does the SAM jobs only:

(a) local:  `snakemake --cores 2 --until segment_crops`, wall time of the whole command (DAG
            build and job start-ups included); also the sum of the SAM jobs' own benchmark
            files (<results>/_logs/{embed,segment}_crops/*/*.benchmark.tsv);
(b) slurm:  the same with `--profile profiles/slurm-ci` on the local one-node cluster
            (scripts/local-slurm.sh; skipped if it is not UP). Its one fake GPU and 2 CPUs run one
            SAM job at a time, as (a) does with --cores 2 and 2 threads per SAM job;
(c) loop:   `matsam.workflow.steps.embed_and_segment` over all images with ONE Segmenter, in this process
            (model load timed separately), the floor any pipeline can reach.

for each `sam_images_per_job` (default 1 and 16). With 1 image per SAM job, (b) runs on the first
`--slurm-images` images only (default 16; 64 single-image Slurm jobs take ~20 min here) and is
compared per crop. Also timed, on `--cpu-images` images: the pre-SAM CPU steps locally and
through Slurm (grouped), for the scheduler-side overhead per image. Every run's masks are checked
to be identical to the loop's. Results: a table, and JSON (`--json`) for benchmarks/dag_scale.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
PROFILE = REPO / "profiles" / "slurm-ci"
SAM_RULES = {"embed_crops", "segment_crops"}
DATASET = "bench"
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}, "crops": {"n_layers": 0}}
PREFIX = f"matsam_bench_{uuid.uuid4().hex[:8]}"  # Slurm job names: <prefix>_<run uuid>


def write_images(folder: Path, n: int, size: int) -> None:
    import cv2
    from synthetic import few_discs

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, _ = few_discs(seed=i, size=size)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), image)


def write_config(folder: Path, images: Path, per_job: int) -> Path:
    import yaml

    config = {"results": "results", "device": "cpu", "sam_threads": 2, "sam_images_per_job": per_job,
              "defaults": FAST, "datasets": {DATASET: {"images": str(images), "mode": "phase"}}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(folder: Path, *args: str, timeout: int, slurm: bool = False) -> float:
    """Wall seconds of one snakemake call (under timeout -s KILL); its output -> folder/*.log."""
    extra = ["--profile", str(PROFILE), "--slurm-jobname-prefix", PREFIX] if slurm else ["--cores", "2"]
    cmd = ["timeout", "-s", "KILL", str(timeout), *SNAKEMAKE, "--directory", str(folder),
           "--configfile", str(folder / "config.yaml"), *extra, *args]
    log = folder / f"snakemake_{'slurm' if slurm else 'local'}_{time.time_ns()}.log"
    start = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}).returncode
    elapsed = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"snakemake failed ({rc}) in {folder}: see {log}\n{log.read_text()[-2500:]}")
    return elapsed


def planned(folder: Path, *args: str) -> dict[str, int]:
    """rule -> jobs that `snakemake -n` would run."""
    out = subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                          "-n", "--cores", "2", "--quiet", "rules", *args],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    counts, in_stats = {}, False
    for line in out.splitlines():
        if line.startswith("job ") and "count" in line:
            in_stats = True
        elif in_stats and line.strip() and not line.startswith("---"):
            name, count = line.split()[:2]
            if name == "total":
                break
            counts[name] = int(count)
    return counts


def copy_prepared(base: Path, folder: Path) -> None:
    """The pre-SAM work files and their Snakemake metadata, so that only SAM jobs are left."""
    for sub in ("results/_work", ".snakemake/metadata"):
        shutil.copytree(base / sub, folder / sub, dirs_exist_ok=True)


def sam_job_seconds(folder: Path) -> float:
    total = 0.0
    for tsv in (folder / "results" / "_logs").glob("*_crops/*/*.benchmark.tsv"):
        with tsv.open() as fh:
            total += float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    return total


def masks_of(masks_root: Path) -> dict[str, dict[str, np.ndarray]]:
    """<image>/crop_<i>.npz (under any shard folder) -> arrays."""
    return {f"{p.parent.name}/{p.name}": dict(np.load(p)) for p in masks_root.rglob("crop_*.npz")}


def same_masks(a: dict, b: dict) -> bool:
    common = set(a) & set(b)
    return bool(common) and all(
        a[k].keys() == b[k].keys() and all(np.array_equal(a[k][n], b[k][n]) for n in a[k]) for k in common)


def loop(base: Path, out: Path, threads: int) -> dict:
    """(c): one Segmenter, every image, in this process."""
    import torch
    import yaml

    from matsam.segmentation.sam import Segmenter
    from matsam.workflow import steps
    from matsam.workflow.catalogue import load_catalog

    torch.set_num_threads(threads)
    config = yaml.safe_load((base / "config.yaml").read_text())
    dataset = load_catalog(config)[DATASET]
    cfg = dataset.method
    names = sorted(dataset.images)
    work = base / "results" / "_work" / DATASET
    t0 = time.perf_counter()
    segmenter = Segmenter.from_config(cfg.model)
    t1 = time.perf_counter()
    steps.embed_and_segment(names, [work / n / "image.png" for n in names],
                             [work / n / "crops.json" for n in names], [work / n / "prompts.npz" for n in names],
                             out / "embeddings", out / "masks", cfg, segmenter)
    t2 = time.perf_counter()
    return {"mode": "loop", "per_job": len(names), "images": len(names), "load_s": t1 - t0, "segment_s": t2 - t1,
            "wall_s": t2 - t0}


def cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    status = subprocess.run([str(REPO / "scripts" / "local-slurm.sh"), "status"], capture_output=True, text=True,
                            check=False, timeout=60)
    return status.returncode == 0 and "cluster: UP" in status.stdout


def cancel_leftovers() -> None:
    if shutil.which("squeue") is None:
        return
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=False,
                         timeout=60).stdout
    ours = [f[0] for f in (line.split() for line in out.splitlines()) if len(f) == 2 and f[1].startswith(PREFIX)]
    if ours:
        subprocess.run(["scancel", *ours], check=False, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--per-job", type=int, nargs="+", default=[1, 16], help="sam_images_per_job values")
    parser.add_argument("--slurm-images", type=int, default=16,
                        help="images of the Slurm run with 1 image per SAM job (0: all)")
    parser.add_argument("--cpu-images", type=int, default=16, help="images of the CPU-step runs (0: skip them)")
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/matsam-bench/sam_jobs"))
    parser.add_argument("--json", type=Path, default=Path("/tmp/matsam-bench/sam_jobs.json"))
    parser.add_argument("--timeout", type=int, default=3000, help="seconds per snakemake call")
    args = parser.parse_args()

    from matsam.segmentation.weights import default_checkpoint, is_verified

    if not is_verified(default_checkpoint()):
        sys.exit(f"MobileSAM weights missing at {default_checkpoint()}: run scripts/setup-env.sh")
    slurm = not args.no_slurm and cluster_up()
    if not args.no_slurm and not slurm:
        print("Slurm: sbatch missing or `scripts/local-slurm.sh status` not UP: skipping (b)")
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    print(f"{args.images} images {args.size}x{args.size}, 1 crop each; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; work in {work}", flush=True)

    def dataset_of(n: int) -> Path:
        folder = work / f"images_{n}"
        if not folder.exists():
            folder.mkdir()
            for p in sorted((work / f"images_{args.images}").iterdir())[:n]:
                os.link(p, folder / p.name)
        return folder

    write_images(work / f"images_{args.images}", args.images, args.size)
    bases: dict[int, Path] = {}

    def base_for(n: int) -> Path:
        """A folder whose pre-SAM steps are done (untimed) for the first n images."""
        if n not in bases:
            base = work / f"base_{n}"
            base.mkdir()
            write_config(base, dataset_of(n), 1)
            t = snakemake(base, "--until", "make_prompts", timeout=args.timeout)
            print(f"  pre-SAM steps of {n} images (untimed set-up): {t:.0f} s", flush=True)
            bases[n] = base
        return bases[n]

    results: list[dict] = []
    try:
        base = base_for(args.images)
        lp = loop(base, work / "loop_masks", threads=2)
        results.append(lp)
        reference = masks_of(work / "loop_masks")
        print(f"  (c) loop: model load {lp['load_s']:.1f} s + {len(reference)} crops {lp['segment_s']:.1f} s",
              flush=True)
        for per_job in args.per_job:
            modes = [("local", args.images)]
            if slurm:
                modes.append(("slurm", args.slurm_images if per_job == 1 and args.slurm_images else args.images))
            for mode, n in modes:
                folder = work / f"{mode}_{per_job}_{n}"
                folder.mkdir()
                copy_prepared(base_for(n), folder)
                write_config(folder, dataset_of(n), per_job)
                todo = planned(folder, "--until", "segment_crops")
                if set(todo) != SAM_RULES:  # the code changed since the set-up (other edits)
                    print(f"    pre-SAM jobs to redo first (untimed): {todo}", flush=True)
                    snakemake(folder, "--until", "make_prompts", timeout=args.timeout)
                    todo = planned(folder, "--until", "segment_crops")
                    assert set(todo) == SAM_RULES, f"more than SAM jobs left to do: {todo}"
                wall = snakemake(folder, "--until", "segment_crops", timeout=args.timeout, slurm=mode == "slurm")
                identical = same_masks(masks_of(folder / "results" / "_work" / DATASET / "sam"), reference)
                results.append({"mode": mode, "per_job": per_job, "images": n, "sam_jobs": todo["segment_crops"],
                                "wall_s": wall, "sam_job_s": sam_job_seconds(folder), "identical": identical})
                print(f"  ({'a' if mode == 'local' else 'b'}) {mode}, {per_job} image(s) per SAM job, {n} images: "
                      f"{wall:.0f} s, masks identical to the loop's: {identical}", flush=True)
        cpu = None
        if args.cpu_images:
            cpu = {"images": args.cpu_images}
            for mode in ("local", "slurm") if slurm else ("local",):
                folder = work / f"cpu_{mode}"
                folder.mkdir()
                write_config(folder, dataset_of(args.cpu_images), 1)
                cpu[f"{mode}_s"] = snakemake(folder, "--until", "make_prompts", timeout=args.timeout,
                                             slurm=mode == "slurm")
            print(f"  pre-SAM CPU steps of {args.cpu_images} images: " +
                  ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in cpu.items() if k.endswith("_s")), flush=True)
    finally:
        cancel_leftovers()

    per_crop_loop = lp["wall_s"] / args.images
    print(f"\nSAM stage, 1 crop per image, MobileSAM on CPU (2 threads); load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'run':<8} {'images/job':>10} {'images':>6} {'SAM jobs':>8} {'wall s':>8} {'s/crop':>7} "
          f"{'jobs sum s':>10} {'vs loop':>8}  masks = loop")
    print(f"{'loop':<8} {'all':>10} {args.images:>6} {'-':>8} {lp['wall_s']:>8.1f} {per_crop_loop:>7.2f} "
          f"{'-':>10} {'1.00x':>8}  (model load {lp['load_s']:.1f} s once)")
    for r in results[1:]:
        per_crop = r["wall_s"] / r["images"]
        print(f"{r['mode']:<8} {r['per_job']:>10} {r['images']:>6} {r['sam_jobs']:>8} {r['wall_s']:>8.1f} "
              f"{per_crop:>7.2f} {r['sam_job_s']:>10.1f} {per_crop / per_crop_loop:>7.2f}x  {r['identical']}")
    print("wall s: the whole `snakemake --until segment_crops` (DAG, job start-ups, Slurm polling); jobs sum s: "
          "the SAM jobs' own benchmark files; vs loop: per crop, pipeline / loop (goal <= 1.5x)")
    if cpu and "slurm_s" in cpu:
        extra = cpu["slurm_s"] - cpu["local_s"]
        print(f"pre-SAM CPU steps, {cpu['images']} images: local {cpu['local_s']:.0f} s, Slurm (grouped) "
              f"{cpu['slurm_s']:.0f} s: {extra / cpu['images']:.2f} s per image more")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"images": args.images, "crops": args.images, "loop": lp, "runs": results[1:],
                                     "cpu_stage": cpu, "load_average": os.getloadavg()[0]}, indent=1))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
