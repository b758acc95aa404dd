"""Huge images: peak memory and time of every pipeline step on a synthetic 10,000 x 8,000 px mosaic.

Builds a 16-bit uncompressed TIFF of Voronoi grains (dark 3-px boundaries, noise, a known label
image), then runs each step of `matsam.workflow.steps` (the functions the rules call) in its own
subprocess, as a Snakemake job would, with the default settings (grain mode, MobileSAM on the
CPU). A 10,000 x 8,000 image is longer than the tile side (64 x `crops.min_object_px` = 2048 px),
so it is cut into tiles. Each subprocess reports its own peak RSS (VmHWM); the
table gives it with the seconds per step, and the adjusted Rand index of matsam's grains against
the true grains (boundary pixels left out, every 4th pixel in each direction).

    .venv/bin/python benchmarks/huge_image.py                            # 10,000 x 8,000 (~12 min, 2 cores)
    .venv/bin/python benchmarks/huge_image.py --width 3000 --height 2400 --no-write   # a quick check
    .venv/bin/python benchmarks/huge_image.py --work-dir W --from-step merge_masks   # after a merge change
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile
from scipy.spatial import cKDTree

from matsam.config import CropConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "huge_image.md"
STEPS = ["prepare_image", "plan_crops", "make_prompts", "embed_images", "segment_images", "merge_masks",
         "draw_overlay", "quantify_objects"]
BAND = 500  # rows of the synthetic image generated at a time


def voronoi_mosaic(height: int, width: int, grain_px: float, seed: int = 0,
                   phase: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """16-bit grey Voronoi grains (levels 20,000-50,000, boundaries 8,000, noise sd 1,500) and the
    true grain ids, uint32, 0 on the 3-px boundaries. `phase`: no boundaries, a random 30 % of
    the cells dark (12,000: the phase, in clusters of touching cells) in a bright matrix (40,000);
    the truth is then the phase mask, 0/1."""
    rng = np.random.default_rng(seed)
    n_grains = max(4, round(height * width / grain_px**2))
    tree = cKDTree(rng.random((n_grains, 2)) * (height, width))
    grains = np.empty((height, width), np.uint32)
    cols = np.arange(width)
    for r0 in range(0, height, BAND):
        rows = np.arange(r0, min(r0 + BAND, height))
        yy, xx = np.meshgrid(rows, cols, indexing="ij")
        grains[r0 : r0 + len(rows)] = tree.query(np.column_stack([yy.ravel(), xx.ravel()]))[1].reshape(yy.shape) + 1
    change = np.zeros((height, width), np.uint8)
    change[:, 1:] |= grains[:, 1:] != grains[:, :-1]
    change[1:, :] |= grains[1:, :] != grains[:-1, :]
    boundary = cv2.dilate(change, np.ones((3, 3), np.uint8)) > 0
    del change
    levels = np.concatenate([[8000.0], rng.uniform(20000, 50000, n_grains)])
    if phase:
        dark = np.concatenate([[False], rng.random(n_grains) < 0.3])
        levels = np.where(dark, 12000.0, 40000.0)
        truth = dark[grains].astype(np.uint32)
        boundary = np.zeros_like(boundary)
    grains[boundary] = 0
    grey = np.empty((height, width), np.uint16)
    for r0 in range(0, height, BAND):
        band = levels[grains[r0 : r0 + BAND]] + rng.normal(0, 1500, grains[r0 : r0 + BAND].shape)
        grey[r0 : r0 + BAND] = np.clip(band, 0, 65535)
    return grey, truth if phase else grains


def run_step(step: str, work: Path, mode: str = "grain") -> dict:
    """One step in the calling process (the subprocess), with its peak RSS."""
    from matsam.config import method_config
    from matsam.workflow import steps

    if step in ("embed_images", "segment_images"):  # torch alone takes ~0.5 GB: only where it runs
        import torch

        torch.set_num_threads(2)
    cfg = method_config(mode, {"model": {"device": "cpu"}})
    img, crops, prompts_file = work / "image.png", work / "crops.json", work / "prompts.npz"
    labels, boundaries = work / "labels.tif", work / ("boundaries.png" if mode == "grain" else "phase.png")
    calls = {
        "prepare_image": lambda: steps.prepare_image(work / "raw.tif", img, cfg.read),
        "plan_crops": lambda: steps.plan_crops(img, crops, cfg.crops),
        "make_prompts": lambda: steps.make_prompts(img, crops, prompts_file, mode, cfg.prompts),
        "embed_images": lambda: steps.embed_images(["huge"], [img], [crops], work / "embeddings", cfg.read,
                                                   cfg.model),
        "segment_images": lambda: steps.segment_images(["huge"], [crops], [prompts_file], work / "embeddings",
                                                       work / "masks", cfg.model, cfg.sam),
        "merge_masks": lambda: steps.merge_masks(img, crops, prompts_file, work / "masks", "huge", labels,
                                                 boundaries, mode, cfg.merge, cfg.prompts.blur, None),
        "draw_overlay": lambda: steps.draw_overlay(img, labels, boundaries, work / "overlay.png", mode),
        "quantify_objects": lambda: steps.quantify_objects(work / "raw.tif", labels, boundaries,
                                                           work / "objects.csv", work / "summary.json", mode,
                                                           cfg.quantify, "huge"),
    }
    start = time.perf_counter()
    calls[step]()
    seconds = time.perf_counter() - start
    return {"step": step, "seconds": seconds, "peak_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM): unlike getrusage's ru_maxrss, which keeps the RSS of the
    parent it was forked from, it counts only what the step itself used."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ari(truth: np.ndarray, labels: np.ndarray, stride: int = 4) -> float:
    """ARI over every `stride`-th pixel in each direction, truth boundaries (0) left out."""
    from sklearn.metrics import adjusted_rand_score

    t, p = truth[::stride, ::stride].ravel(), labels[::stride, ::stride].ravel()
    keep = t > 0
    return float(adjusted_rand_score(t[keep], p[keep]))


def phase_iou(truth: np.ndarray, phase: np.ndarray, stride: int = 4) -> float:
    """IoU of the phase mask against the true one, every `stride`-th pixel in each direction."""
    t, p = truth[::stride, ::stride] > 0, phase[::stride, ::stride] > 0
    return float((t & p).sum() / max(int((t | p).sum()), 1))


def table(rows: list[dict], shape: tuple[int, int], n_tiles: int, mode: str, n_objects: int, score: float,
          build_s: float) -> str:
    what = "Voronoi grains" if mode == "grain" else "a two-phase Voronoi mosaic"
    result = (f"{n_objects} grains found; ARI against the true grains {score:.3f} "
              "(every 4th pixel in each direction, boundary pixels left out)." if mode == "grain" else
              f"{n_objects} phase objects found; IoU of the phase mask against the true one {score:.3f} "
              "(every 4th pixel in each direction).")
    lines = [
        f"Synthetic {shape[1]:,} x {shape[0]:,} px 16-bit TIFF of {what} (built in {build_s:.0f} s), "
        f"default settings ({mode} mode, MobileSAM, CPU, 2 torch threads): {n_tiles} tiles of "
        f"{CropConfig().tile_px} px. Each step in its own process; peak RSS = its VmHWM "
        "(imports included: ~160 MB, torch ~0.5 GB more).",
        "",
        "| step | peak RSS (MB) | seconds |",
        "|---|---|---|",
        *[f"| {r['step']} | {r['peak_mb']:,.0f} | {r['seconds']:.1f} |" for r in rows],
        f"| **all** | **{max(r['peak_mb'] for r in rows):,.0f}** (max) | **{sum(r['seconds'] for r in rows):.0f}** |",
        "",
        result,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=10000)
    ap.add_argument("--height", type=int, default=8000)
    ap.add_argument("--mode", choices=["grain", "phase"], default="grain",
                    help="phase: a two-phase mosaic, results in huge_image_phase.md")
    ap.add_argument("--grain-px", type=float, default=300.0, help="mean grain (cell) size, px (sqrt of the area)")
    ap.add_argument("--no-write", action="store_true", help=f"print only, do not write {RESULTS.name}")
    ap.add_argument("--work-dir", type=Path, help="keep the step files here (default: a temporary folder)")
    ap.add_argument("--from-step", choices=STEPS, default=STEPS[0],
                    help="rerun from this step on, in --work-dir of an earlier run of the same size")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:  # the subprocess of one step
        print(json.dumps(run_step(args.step, args.work, args.mode)))
        return

    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        run_all(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run_all(args, Path(tmp))


def run_all(args: argparse.Namespace, work: Path) -> None:
    """Every step from `--from-step` on; the rows of earlier steps come from the last run's steps.json."""
    start = time.perf_counter()
    grey, truth = voronoi_mosaic(args.height, args.width, args.grain_px, phase=args.mode == "phase")
    build_s = time.perf_counter() - start
    first = STEPS.index(args.from_step)
    rows = json.loads((work / "steps.json").read_text())[:first] if first else []
    if not first:
        tifffile.imwrite(work / "raw.tif", grey)  # uncompressed, contiguous: memory-mappable
    del grey
    for step in STEPS[first:]:
        done = subprocess.run([sys.executable, __file__, "--step", step, "--work", str(work),
                               "--mode", args.mode],
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{step} failed:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{step}: {rows[-1]['peak_mb']:.0f} MB, {rows[-1]['seconds']:.1f} s", flush=True)
        (work / "steps.json").write_text(json.dumps(rows))
    labels = tifffile.imread(work / "labels.tif")
    n_tiles = len(json.loads((work / "crops.json").read_text())["crops"])
    score = ari(truth, labels) if args.mode == "grain" else phase_iou(truth, labels)
    text = table(rows, truth.shape, n_tiles, args.mode, int(labels.max()), score, build_s)
    print("\n" + text)
    if not args.no_write:
        results = RESULTS if args.mode == "grain" else RESULTS.with_name("huge_image_phase.md")
        results.write_text(f"# Huge image, {args.mode} mode (`benchmarks/huge_image.py --mode {args.mode}`)\n\n"
                           + text + "\n")

if __name__ == "__main__":
    main()
