"""Multi-phase classes on synthetic micrographs with known classes: size- and shape-separated.

Two kinds of 256 x 256 images whose two phases share one grey level (tests/synthetic.py, seeds
the tests do not use): large and small discs (secondary / tertiary gamma-prime), and compact
oxides and thin cracks in a coating. Each image runs the real chain once (MobileSAM, one model
load), its masks are merged with `n_phases: 3` and the default object features, and with the
multi-level Otsu grey split (`phase_classes: grey`); the binary baselines are scored the same
way (class ids matched by overlap, mean IoU over the three classes). Writes
benchmarks/results/multiphase_synthetic.md.

    .venv/bin/python benchmarks/multiphase_synthetic.py [--images 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synthetic import coating_micrograph, size_phase_micrograph  # noqa: E402

from matsam import io  # noqa: E402
from matsam.config import method_config  # noqa: E402
from matsam.measurement import baselines, metrics  # noqa: E402
from matsam.segmentation.sam import Segmenter  # noqa: E402
from matsam.workflow import steps  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "multiphase_synthetic.md"
KINDS = {"size (large / small discs)": size_phase_micrograph, "shape (oxides / thin cracks)": coating_micrograph}
FIRST_SEED = 100  # the tests use seeds 0-2


def run_image(work: Path, image: np.ndarray, truth: np.ndarray, segmenter: Segmenter) -> list[dict]:
    """The chain up to SAM once, then one merge per class method; rows of scores."""
    io.write_png(work / "raw.png", image)
    cfg = method_config("phase", {"merge": {"n_phases": 3}})
    prepared, crops, points = work / "image.png", work / "crops.json", work / "prompts.npz"
    steps.prepare_image(work / "raw.png", prepared, cfg.read)
    steps.plan_crops(prepared, crops, cfg.crops)
    steps.make_prompts(prepared, crops, points, cfg.mode, cfg.prompts)
    steps.embed_and_segment(["img"], [prepared], [crops], [points], work / "embeddings", work / "masks", cfg,
                             segmenter)
    rows = []
    for method, classes in (("matsam features", "auto"), ("matsam grey split", "grey")):
        cfg = method_config("phase", {"merge": {"n_phases": 3, "phase_classes": classes}})
        steps.merge_masks(prepared, crops, points, work / "masks", "img", work / "labels.tif", work / "phase.png",
                          "phase", cfg.merge, cfg.prompts.blur, None)
        rows.append({"method": method, **metrics.score("phase", io.read_image(work / "phase.png"), truth)})
    rgb = io.read_image(prepared)
    foreground = str(io.read_npz(points)["foreground"])
    for name, method in baselines.PHASE_BASELINES.items():
        rows.append({"method": name, **metrics.score("phase", method(rgb, foreground), truth)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per kind")
    args = parser.parse_args()
    segmenter = Segmenter.from_config(method_config("phase").model)
    rows = []
    start = time.perf_counter()
    for kind, make in KINDS.items():
        for seed in range(FIRST_SEED, FIRST_SEED + args.images):
            image, truth = make(seed)
            with tempfile.TemporaryDirectory() as work:
                for row in run_image(Path(work), image, truth, segmenter):
                    rows.append({"kind": kind, "seed": seed, **row})
    seconds = time.perf_counter() - start
    table = pd.DataFrame(rows)
    means = table.groupby(["kind", "method"], sort=False)[["miou", "iou_class_1", "iou_class_2", "iou"]].mean()
    lines = ["# Multi-phase classes on synthetic micrographs (`n_phases: 3`)", "",
             f"{args.images} images per kind (seeds {FIRST_SEED}-{FIRST_SEED + args.images - 1}), 256 x 256, "
             f"MobileSAM on CPU, {seconds:.0f} s in all. Mean IoU over the three classes (matrix, class 1, "
             "class 2; predicted ids matched to the label's by overlap), per-class IoU, and the foreground IoU "
             "(both classes as one phase).", "",
             "| kind | method | mIoU (3 classes) | IoU class 1 | IoU class 2 | foreground IoU |",
             "|---|---|---|---|---|---|"]
    for (kind, method), row in means.iterrows():
        lines.append(f"| {kind} | {method} | {row.miou:.3f} | {row.iou_class_1:.3f} | {row.iou_class_2:.3f} "
                     f"| {row.iou:.3f} |")
    lines += ["", "Per image (matsam features):", "",
              "| kind | seed | mIoU | class 1 | class 2 |", "|---|---|---|---|---|"]
    for _, row in table[table.method == "matsam features"].iterrows():
        lines.append(f"| {row.kind} | {row.seed} | {row.miou:.3f} | {row.iou_class_1:.3f} | {row.iou_class_2:.3f} |")
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
