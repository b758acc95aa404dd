"""Serial-section stacks: what a 100-slice stack costs, per slice (2D chain) and for the linking.

Builds a synthetic stack (tests/synthetic3d.py: Voronoi grains, dark boundaries, noise, known 3D
labels), then

1. runs the 2D chain in-process (matsam.workflow.steps, the functions the rules call) on a few slices
   spread through the stack, timing every stage; the model is loaded once, as in a SAM job with
   `sam_images_per_job` > 1 (a job with one image also pays the load, reported separately);
2. times the linking of all slices: stack3d.link_slices alone on 2D labels derived from the
   truth (perturbed like a segmenter's output: ids renumbered, boundaries moved, small grains
   missed), and the whole `link_stack` step (read the slice files, link, 3D table, HDF5,
   orthogonal views), with and without boundary refinement;
3. prints a table. The 2D time of the whole stack is extrapolated from the measured slices
   (per-slice cost x slices / parallel jobs), and the table says so.

    .venv/bin/python benchmarks/stack_linking.py                 # 100 x 256 x 256, 3 SAM slices
    .venv/bin/python benchmarks/stack_linking.py --sam-slices 0  # linking only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synthetic3d import grey_stack, perturb_labels2d, voronoi_volume  # noqa: E402

from matsam import io  # noqa: E402
from matsam.config import LinkConfig, method_config  # noqa: E402
from matsam.volumes.stack3d import link_slices  # noqa: E402
from matsam.workflow import steps  # noqa: E402


def ari(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    keep = (truth > 0) & (pred > 0)
    return adjusted_rand_score(truth[keep], pred[keep])


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def chain_2d(grey: np.ndarray, picks: list[int], folder: Path, cfg, threads: int) -> tuple[dict, float]:
    """Seconds per stage for each picked slice (in-process), and the model load time."""
    import torch

    from matsam.segmentation.sam import Segmenter

    torch.set_num_threads(threads)
    segmenter, load_s = timed(Segmenter.from_config, cfg.model)
    rows = {}
    for z in picks:
        d = folder / f"slice_{z:04d}"
        d.mkdir(parents=True, exist_ok=True)
        io.write_tiff(d / "raw.tif", grey[z])
        t = {}
        _, t["prepare"] = timed(steps.prepare_image, d / "raw.tif", d / "image.png", cfg)
        _, t["crops"] = timed(steps.plan_crops, d / "image.png", d / "crops.json", cfg)
        _, t["prompts"] = timed(steps.make_prompts, d / "image.png", d / "crops.json", d / "prompts.npz", cfg)
        n_points = sum(v.shape[0] for k, v in io.read_npz(d / "prompts.npz").items() if k.startswith("points_"))
        _, t["sam"] = timed(steps.embed_and_segment, [d.name], [d / "image.png"], [d / "crops.json"],
                            [d / "prompts.npz"], folder / "embeddings", folder / "sam", cfg, segmenter)
        _, t["merge"] = timed(steps.merge_masks, d / "image.png", d / "crops.json", d / "prompts.npz",
                              folder / "sam", d.name, d / "labels.tif", d / "boundaries.png", cfg)
        _, t["overlay"] = timed(steps.draw_overlay, d / "image.png", d / "labels.tif", d / "boundaries.png",
                                d / "overlay.png", cfg.mode)
        _, t["quantify"] = timed(steps.quantify_objects, d / "raw.tif", d / "labels.tif", d / "boundaries.png",
                                 d / "objects.csv", d / "summary.json", cfg, d.name)
        t["points"] = n_points
        rows[z] = t
    return rows, load_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=256, help="slice height and width, px")
    ap.add_argument("--grain-px", type=float, default=40.0, help="mean grain diameter in xy, px")
    ap.add_argument("--z-step", type=float, default=2.0, help="slice spacing in xy pixels")
    ap.add_argument("--sam-slices", type=int, default=3, help="slices timed through the 2D chain (0: none)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the in-process SAM")
    ap.add_argument("--fast", action="store_true",
                    help="the tests' small prompt grid (grid 4-6) instead of the default settings")
    ap.add_argument("--parallel", type=int, default=16, help="parallel SAM jobs for the extrapolation")
    args = ap.parse_args()

    shape = (args.slices, args.size, args.size)
    spacing = (args.z_step, 1.0, 1.0)  # a grain spans about grain_px / z_step slices
    n_grains = max(4, round(np.prod(shape) * spacing[0] / (np.pi / 6 * args.grain_px**3)))
    (truth, build_s) = timed(voronoi_volume, shape, n_grains, seed=0, spacing=spacing)
    grey = (grey_stack(truth, seed=0) * 255).astype(np.uint8)
    labels2d = perturb_labels2d(truth, seed=1)
    print(f"stack {shape[0]} x {shape[1]} x {shape[2]} px, z step {args.z_step:g} px, {truth.max()} true grains "
          f"(built in {build_s:.1f} s)\n")

    rows: dict = {}
    if args.sam_slices > 0:
        overrides = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}} if args.fast else {}
        cfg = method_config("grain", {**overrides, "model": {"device": "cpu"}})
        picks = [int(z) for z in np.linspace(0, args.slices - 1, args.sam_slices).round()]
        with tempfile.TemporaryDirectory() as tmp:
            rows, load_s = chain_2d(grey, picks, Path(tmp), cfg, args.threads)
        stages_ = ["prepare", "crops", "prompts", "sam", "merge", "overlay", "quantify"]
        print(f"2D chain per slice, in-process, {args.threads} torch threads, "
              f"{'test grid (--fast)' if args.fast else 'default settings'} (seconds):")
        print(f"{'slice':>7} {'points':>7} " + " ".join(f"{s:>8}" for s in stages_) + f" {'total':>8}")
        totals = []
        for z, t in rows.items():
            total = sum(t[s] for s in stages_)
            totals.append(total)
            print(f"{z:>7} {t['points']:>7} " + " ".join(f"{t[s]:8.2f}" for s in stages_) + f" {total:8.2f}")
        per_slice = float(np.mean(totals))
        print(f"{'mean':>15} " + " ".join(f"{np.mean([t[s] for t in rows.values()]):8.2f}" for s in stages_)
              + f" {per_slice:8.2f}")
        print(f"model load (once per SAM job): {load_s:.2f} s\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (labels3d, stats), link_s = timed(link_slices, labels2d, LinkConfig())
        files: tuple[list, list, list] = ([], [], [])
        for z in range(args.slices):
            d = tmp / f"slice_{z:04d}"
            io.write_tiff(d / "labels.tif", labels2d[z])
            io.write_png(d / "image.png", np.repeat(grey[z][..., None], 3, axis=2))
            files[0].append(d / "labels.tif")
            files[2].append(d / "image.png")
        outputs = {"labels3d": tmp / "labels3d.h5", "grains3d": tmp / "grains3d.csv",
                   "neighbours3d": tmp / "neighbours3d.csv",
                   "summary": tmp / "summary.csv", "shifts": tmp / "shifts.json",
                   **{f"ortho_{v}": tmp / f"ortho_{v}.png" for v in ("xy", "xz", "yz")}}
        voxel = [0.2, 0.1, 0.1]
        _, step_s = timed(steps.link_stack, *files, outputs, "bench", "grain", voxel, False, LinkConfig())
        _, refine_s = timed(steps.link_stack, *files, outputs, "bench", "grain", voxel, False,
                            LinkConfig(refine_boundaries="dark"))
        _, align_s = timed(steps.link_stack, *files, outputs, "bench", "grain", voxel, True, LinkConfig())

    print(f"linking {args.slices} slices:")
    print(f"  stack3d.link_slices alone        {link_s:8.2f} s  ({1e3 * link_s / args.slices:.1f} ms/slice), "
          f"{stats.n_grains} 3D grains, ARI vs truth {ari(truth, labels3d):.4f}")
    n_slices = np.bincount(np.unique(np.nonzero(labels3d)[0] * (labels3d.max() + 1) + labels3d[labels3d > 0])
                           % (labels3d.max() + 1))
    print(f"    ({int((n_slices[1:] <= 2).sum())} of them on 1-2 slices only: grain tips whose cross-sections "
          "overlap too little)")
    print(f"  link_stack step (files -> outputs) {step_s:6.2f} s")
    print(f"    + refine_boundaries: dark       {refine_s:6.2f} s")
    print(f"    + align                         {align_s:6.2f} s")
    if rows:
        print(f"\nwhole stack, EXTRAPOLATED from the {len(rows)} timed slices: 2D chain "
              f"{per_slice * args.slices / 60:.1f} CPU-job minutes for {args.slices} slices "
              f"({per_slice * args.slices / args.parallel / 60:.1f} min on {args.parallel} parallel jobs, "
              f"plus {load_s:.0f} s model load per SAM job), linking {step_s:.0f} s once at the end")


if __name__ == "__main__":
    main()
