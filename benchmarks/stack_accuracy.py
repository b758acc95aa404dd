"""Serial-section stacks with the default settings: 3D accuracy over a family of synthetic looks.

Every stack of `tests/synthetic3d.FAMILY` (grains 18-55 px across, dark / bright boundary lines
1-4 px wide, contrast-only grains, noise, blur, illumination gradients, drift with `align`,
grains elongated along z, 16 and 100 slices) is rendered, every slice runs through the 2D chain
in-process (matsam.workflow.steps, the functions the rules call; MobileSAM, CPU, model loaded once),
and the slices are linked by `stack_stages.link_stack` with the stack's default `link:`
settings (only `align: true` for the drifting stack, as a user would set it). Per stack it
prints the 3D adjusted Rand index against the true grains, predicted vs true 3D grain count,
the share of true grains recovered as one 3D grain (one predicted grain holds >= 80 % of the
true grain's voxels and the true grain holds >= 80 % of that predicted grain's), the boundary
look detected, and seconds per slice (2D chain, linking). `ari_off_lines` scores the same
labels without the voxels of the drawn boundary lines: the true labels give a line's pixels to
the grain on one side (a 1-px line all to the grain of higher id), a convention that no
segmenter can guess; the goal is judged on `ari_3d`.

The slices' 2D labels are cached (--cache, keyed by the look), so a second run re-links only;
clear the cache after changing the 2D chain.
`--baseline` also links without the consistency step (the pre-issue-12 linking, refinement as
detected) for the same 2D labels, to show what the step adds.

    .venv/bin/python benchmarks/stack_accuracy.py --out benchmarks/results/stack_accuracy.md
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synthetic3d import FAMILY, FRESH, StackLook, line_mask, render_stack  # noqa: E402

from matsam import io  # noqa: E402
from matsam.config import LinkConfig, method_config  # noqa: E402
from matsam.workflow import steps  # noqa: E402


def ari(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    keep = (truth > 0) & (pred > 0)
    return float(adjusted_rand_score(truth[keep], pred[keep]))


def recovered_share(truth: np.ndarray, pred: np.ndarray, share: float = 0.8) -> float:
    """Share of true grains that one predicted grain recovers: it holds >= `share` of the
    true grain's voxels and the true grain holds >= `share` of its voxels."""
    keep = (truth > 0) & (pred > 0)
    t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
    key, count = np.unique(t * (int(p.max()) + 1) + p, return_counts=True)
    ti, pi = np.divmod(key, int(p.max()) + 1)
    t_size = np.bincount(t)
    p_size = np.bincount(p)
    good = (count >= share * t_size[ti]) & (count >= share * p_size[pi])
    return float(np.unique(ti[good]).size / np.unique(t).size)


def segment_2d(grey: np.ndarray, folder: Path, segmenter, cfg) -> tuple[list[Path], list[Path], float]:
    """Run the 2D chain on every slice; returns labels.tif and image.png per slice, seconds."""
    labels, images = [], []
    start = time.perf_counter()
    for z, image in enumerate(grey):
        d = folder / f"slice_{z:04d}"
        d.mkdir(parents=True, exist_ok=True)
        io.write_tiff(d / "raw.tif", image)
        steps.prepare_image(d / "raw.tif", d / "image.png", cfg.read)
        steps.plan_crops(d / "image.png", d / "crops.json", cfg.crops)
        steps.make_prompts(d / "image.png", d / "crops.json", d / "prompts.npz", cfg.mode, cfg.prompts)
        steps.embed_and_segment([d.name], [d / "image.png"], [d / "crops.json"], [d / "prompts.npz"],
                                 folder / "embeddings", folder / "sam", cfg, segmenter)
        steps.merge_masks(d / "image.png", d / "crops.json", d / "prompts.npz", folder / "sam", d.name,
                          d / "labels.tif", d / "boundaries.png", cfg.mode, cfg.merge, cfg.prompts.blur, None)
        labels.append(d / "labels.tif")
        images.append(d / "image.png")
    return labels, images, time.perf_counter() - start


def cached_2d(look: StackLook, grey: np.ndarray, cache: Path, get_segmenter, cfg) -> tuple[np.ndarray, float]:
    """(z, y, x) 2D labels of every slice and the 2D seconds, from the cache when present."""
    key = hashlib.sha1(repr(asdict(look)).encode()).hexdigest()[:12]  # clear the cache when the 2D chain changes
    path = cache / f"{look.name}-{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["labels"], float(f["seconds"])
    with tempfile.TemporaryDirectory() as tmp:
        files, _, seconds = segment_2d(grey, Path(tmp), get_segmenter(), cfg)
        labels = np.stack([io.read_image(f) for f in files]).astype(np.uint32)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, labels=labels, seconds=seconds)
    return labels, seconds


def link(labels2d: np.ndarray, grey: np.ndarray, look: StackLook, extra: dict) -> tuple[np.ndarray, dict, float]:
    """link_stack on slice files written from arrays; returns labels3d, summary row, seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        label_files, grey_files = [], []
        for z in range(grey.shape[0]):
            d = tmp / f"slice_{z:04d}"
            io.write_tiff(d / "labels.tif", labels2d[z])
            io.write_png(d / "image.png", np.repeat(grey[z][..., None], 3, axis=2))
            label_files.append(d / "labels.tif")
            grey_files.append(d / "image.png")
        outputs = {k: tmp / f"{k}.out" for k in ("grains3d", "neighbours3d", "summary", "shifts")}
        outputs |= {"labels3d": tmp / "labels3d.h5",
                    **{f"ortho_{v}": tmp / f"ortho_{v}.png" for v in ("xy", "xz", "yz")}}
        start = time.perf_counter()
        row = steps.link_stack(label_files, [], grey_files, outputs, look.name, "grain", None, look.drift > 0,
                               LinkConfig(**extra))
        seconds = time.perf_counter() - start
        with h5py.File(outputs["labels3d"], "r") as f:
            labels3d = f["labels"][()]
    return labels3d, row, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="names of family members to run (default: all)")
    ap.add_argument("--family", choices=("main", "fresh"), default="main",
                    help="the benchmark's looks (FAMILY) or fresh looks and seeds no default was tuned on (FRESH)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process SAM")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "matsam-stack-accuracy")
    ap.add_argument("--baseline", action="store_true", help="also link without the consistency step")
    ap.add_argument("--out", type=Path, help="write the table (markdown) here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cfg = method_config("grain", {"model": {"device": "cpu"}})
    segmenter = []

    def get_segmenter():
        if not segmenter:
            from matsam.segmentation.sam import Segmenter

            segmenter.append(Segmenter.from_config(cfg.model))
        return segmenter[0]

    rows = []
    variants = {"default": {}}
    if args.baseline:  # the linking before issue 12
        variants["before (no refinement, no consistency)"] = {"refine_boundaries": "none", "consistent": False}
    for look in FAMILY if args.family == "main" else FRESH:
        if args.only and look.name not in args.only:
            continue
        truth, grey, _ = render_stack(look)
        labels2d, seconds_2d = cached_2d(look, grey, args.cache, get_segmenter, cfg)
        for variant, extra in variants.items():
            labels3d, row, seconds_link = link(labels2d, grey, look, extra)
            if look.drift:  # labels3d is in the registered frame, like truth; drop what left the view
                labels3d = np.where(truth > 0, labels3d, 0)
            n_true, n_pred = int(np.unique(truth[truth > 0]).size), int(np.unique(labels3d[labels3d > 0]).size)
            off_lines = np.stack([np.where(line_mask(t, look.line_px), 0, t) for t in truth]) if look.line_px else truth
            rows.append({
                "stack": look.name, "variant": variant, "slices": look.shape[0],
                "size": f"{look.shape[1]}x{look.shape[2]}", "look": row.get("boundary_look"),
                "ari_3d": round(ari(truth, labels3d), 3), "ari_off_lines": round(ari(off_lines, labels3d), 3),
                "true": n_true, "pred": n_pred,
                "count_err_%": round(100 * (n_pred - n_true) / n_true, 1),
                "recovered": round(recovered_share(truth, labels3d), 3),
                "s_per_slice_2d": round(seconds_2d / look.shape[0], 2),
                "s_per_slice_link": round(seconds_link / look.shape[0], 3),
            })
            print(pd.DataFrame([rows[-1]]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    ok = (table.ari_3d >= 0.9) & (table["count_err_%"].abs() <= 10)
    table["goal"] = np.where(ok, "met", "missed")
    print("\n" + table.to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Stack accuracy (benchmarks/stack_accuracy.py)\n\n"
            "Default settings, MobileSAM on the CPU "
            f"({args.threads} torch thread(s)); goal: 3D ARI >= 0.90 and grain count within +-10 %.\n"
            "s_per_slice_2d: the 2D chain per slice (from the cache's first run); s_per_slice_link: link_stack.\n\n"
            + table.to_markdown(index=False) + "\n")


if __name__ == "__main__":
    main()
