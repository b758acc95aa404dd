"""Accuracy of the default configuration on every labelled dataset of ../shared/data.

Runs the pipeline with config/shared-data.yaml (one default configuration per mode, no
per-dataset tuning: zero-shot), then writes benchmarks/results/accuracy.md: per dataset, matsam
and each baseline, beside the MatSAM paper's SAM ViT-H and OTSU numbers (mean IoU over
{background, foreground}, the official notebook's metric); the multi-phase datasets (3-class
labels, `n_phases: 3`) in a table of their own, with matsam's grey-level split beside.

    .venv/bin/python benchmarks/accuracy.py [--cores 2] [--skip-run] [--multiphase-only]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "shared-data.yaml"
OUT = REPO / "benchmarks" / "results" / "accuracy.md"
OUT_MULTIPHASE = REPO / "benchmarks" / "results" / "accuracy_multiphase.md"
# MatSAM paper (Li et al. 2024), mean IoU: SAM ViT-H with per-dataset settings, and its OTSU.
# `<dataset>_grey`: the same images and labels merged with the grey-level split (phase_classes: grey).
GREY_SUFFIX = "_grey"
PAPER = {"nbs2": (0.9116, 0.7516), "nbs3": (0.8167, 0.6678), "aza": (0.9578, 0.8853), "uhcs": (0.7584, 0.5370)}


def run_pipeline(cores: int, config: Path = CONFIG) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(config),
           "--keep-going", "--rerun-incomplete"]
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - start


def report(results: Path, seconds: float | None, datasets: list[str] | None = None) -> str:
    """The tables of `datasets` (all of the results' datasets when None)."""
    summary = pd.read_csv(results / "summary.csv")
    if datasets is not None:
        summary = summary[summary.dataset.isin(datasets)]
    lines = ["# Accuracy on ../shared/data (default configuration, zero-shot)", "",
             f"Machine: {platform.processor() or platform.machine()}, CPU, MobileSAM. "
             + (f"Pipeline wall time: {seconds / 60:.1f} min." if seconds else ""), ""]
    multi = summary.filter(like="iou_class_2").notna().any(axis=1) if "iou_class_2" in summary else False
    lines += multiphase_section(summary[multi])
    summary = summary[~multi]
    phase = summary[summary.miou.notna()]
    if len(phase):
        lines += ["## Phase datasets: mean IoU (bg, fg) | fg IoU | F1 | recall", "",
                  "| dataset | images | method | mIoU | IoU | F1 | recall | paper SAM ViT-H | paper OTSU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        best = phase[phase.method != "matsam"].groupby("dataset").miou.max()
        lines[-2] = lines[-2].replace("| paper SAM", "| best baseline | paper SAM")
        lines[-1] += "---|"
        for _, row in phase.iterrows():
            sam, otsu = PAPER.get(row.dataset, (None, None))
            paper = (f"{sam:.4f}", f"{otsu:.4f}") if row.method == "matsam" and sam else ("", "")
            margin = f"{row.miou - best[row.dataset]:+.4f}" if row.method == "matsam" else ""
            lines.append(f"| {row.dataset} | {row.n_images} | {row.method} | {row.miou:.4f} | {row.iou:.4f} "
                         f"| {row.f1:.4f} | {row.recall:.4f} | {margin} | {paper[0]} | {paper[1]} |")
    grain = summary[summary.ari.notna()]
    if len(grain):
        lines += ["", "## Grain datasets: adjusted Rand index | variation of information (bits)", "",
                  "Regions of the boundary maps, predicted lines redrawn at the label's line width.", "",
                  "| dataset | images | method | ARI | VI | vs best baseline |", "|---|---|---|---|---|---|"]
        best = grain[grain.method != "matsam"].groupby("dataset").ari.max()
        for _, row in grain.iterrows():
            margin = f"{row.ari - best[row.dataset]:+.4f}" if row.method == "matsam" else ""
            lines.append(f"| {row.dataset} | {row.n_images} | {row.method} | {row.ari:.4f} | {row.vi:.3f} | {margin} |")
    worst = []
    for dataset in summary.dataset.unique():
        metrics = pd.read_csv(results / dataset / "metrics.csv")
        ours = metrics[metrics.method == "matsam"]
        key = "miou" if ours.miou.notna().any() else "ari"
        worst.append(ours.sort_values(key).head(2).assign(metric=key))
    if worst:
        lines += ["", "## Weakest images (matsam)", "", "| image | metric | value |", "|---|---|---|"]
    for frame in worst:
        for _, row in frame.iterrows():
            lines.append(f"| {row.image} | {row.metric} | {row[row.metric]:.4f} |")
    return "\n".join(lines) + "\n"


def multiphase_section(multi: pd.DataFrame) -> list[str]:
    """Rows of the multi-class datasets: matsam's default (object features), its grey-level split
    (the `<dataset>_grey` datasets) and the binary baselines, all scored over the label's classes."""
    if not len(multi):
        return []
    multi = multi.copy()
    grey = multi.dataset.str.endswith(GREY_SUFFIX)
    multi.loc[grey & (multi.method == "matsam"), "method"] = "matsam grey split"
    multi = multi[~grey | (multi.method == "matsam grey split")]
    multi["dataset"] = multi.dataset.str.removesuffix(GREY_SUFFIX)
    lines = ["## Multi-phase datasets: mean IoU over the label's classes | per-class IoU", "",
             "`n_phases: 3`, everything else default; class ids matched to the label's by overlap; binary "
             "baselines scored the same way (they find one class).", "",
             "| dataset | images | method | mIoU | IoU class 1 | IoU class 2 | vs best baseline |",
             "|---|---|---|---|---|---|---|"]
    baseline = ~multi.method.str.startswith("matsam")
    best = multi[baseline].groupby("dataset").miou.max()
    for _, row in multi.sort_values("dataset", kind="stable").iterrows():
        margin = f"{row.miou - best[row.dataset]:+.4f}" if row.method.startswith("matsam") else ""
        lines.append(f"| {row.dataset} | {row.n_images} | {row.method} | {row.miou:.4f} | {row.iou_class_1:.4f} "
                     f"| {row.iou_class_2:.4f} | {margin} |")
    pooled = multi.groupby("method", sort=False).apply(
        lambda g: pd.Series({"n": g.n_images.sum(), **{c: (g[c] * g.n_images).sum() / g.n_images.sum()
                                                        for c in ("miou", "iou_class_1", "iou_class_2")}}),
        include_groups=False)
    lines += ["", "All multi-phase images together (image-weighted):", "",
              "| method | images | mIoU | IoU class 1 | IoU class 2 |", "|---|---|---|---|---|"]
    for method, row in pooled.iterrows():
        lines.append(f"| {method} | {int(row.n)} | {row.miou:.4f} | {row.iou_class_1:.4f} | {row.iou_class_2:.4f} |")
    return lines + [""]


def multiphase_config(config: dict) -> dict:
    """The configuration with only its multi-phase datasets (`merge.n_phases` > 2)."""
    datasets = {name: d for name, d in config["datasets"].items()
                if d.get("overrides", {}).get("merge", {}).get("n_phases", 2) > 2}
    return {**config, "datasets": datasets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="only tabulate existing results")
    parser.add_argument("--multiphase-only", action="store_true",
                        help=f"only the multi-phase datasets (minutes, not an hour) -> {OUT_MULTIPHASE.name}")
    args = parser.parse_args()
    config, out = yaml.safe_load(CONFIG.read_text()), OUT
    path = CONFIG
    if args.multiphase_only:
        config, out = multiphase_config(config), OUT_MULTIPHASE
        path = REPO / "benchmarks" / "work" / "shared-data-multiphase.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    seconds = None if args.skip_run else run_pipeline(args.cores, path)
    text = report(REPO / config["results"], seconds, list(config["datasets"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
