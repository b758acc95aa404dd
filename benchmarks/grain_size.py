"""Is the grain size right? ASTM E112 G from matsam's grains against G from the reference labels.

On every labelled grain set of ../shared/data (config/shared-data.yaml), per field: the
planimetric (Jeffries, ISO 643 corners) and the lineal intercept (Heyn) G of matsam's labels.tif
and of the reference's grains (the 4-connected regions of its boundary map), and the same for
the classic baselines; ΔG = G(method) - G(reference). The pixel size cancels in ΔG (1 µm is used).
A field is the whole image, or, where the label is partial (grain/tbm_full: 255 = unlabelled),
each labelled block. Per set: the mean |ΔG| over fields, ΔG of the set (G from the mean N_A, E112
§15.6) and the two-sample Kolmogorov-Smirnov statistic between the equivalent diameters of the
grains that do not touch a field edge. Goal (issue 11): mean |ΔG| <= 0.25, |set ΔG| <= 0.15.

    .venv/bin/python benchmarks/grain_size.py [--cores 2] [--skip-run]

Writes benchmarks/results/grain_size.md (tables) and prints it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import ndimage, stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from matsam import io  # noqa: E402
from matsam.measurement import astm, baselines, metrics  # noqa: E402
from matsam.workflow.catalogue import load_catalog  # noqa: E402

CONFIG = REPO / "config" / "shared-data.yaml"
OUT = REPO / "benchmarks" / "results" / "grain_size.md"
PIXEL_UM = 1.0
GOAL_IMAGE, GOAL_SET = 0.25, 0.15


def grain_datasets() -> dict:
    config = yaml.safe_load(CONFIG.read_text())
    return {name: d for name, d in load_catalog(config, REPO).items() if d.mode == "grain" and d.labels}


def run_pipeline(results: str, datasets: dict, cores: int) -> float:
    targets = [f"{results}/{name}/{image}/labels.tif" for name, d in datasets.items() for image in d.images]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(CONFIG),
                    "--rerun-incomplete", *targets], cwd=REPO, check=True)
    return time.perf_counter() - start


def fields(label: np.ndarray) -> list[tuple[slice, slice]]:
    """The whole image, or the bounding box of each labelled block of a partial label."""
    if not (label == 255).any():
        return [(slice(0, label.shape[0]), slice(0, label.shape[1]))]
    blocks, _ = ndimage.label(label != 255)
    return [box for box in ndimage.find_objects(blocks) if box is not None
            and min(box[0].stop - box[0].start, box[1].stop - box[1].start) >= 32]


def grain_sizes(labels: np.ndarray) -> np.ndarray:
    """Equivalent circle diameters (px) of the grains that do not touch the field edge."""
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    ids, area = np.unique(labels[labels > 0], return_counts=True)
    return np.sqrt(4 * area[~np.isin(ids, edge)] / np.pi)


def measure(dataset, results: Path) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """Per field and method: G (planimetric, Heyn) and grain counts; the grain sizes per method."""
    rows, sizes = [], {}
    for image, label_file in sorted(dataset.labels.items()):
        if not (REPO / f"{results}/{dataset.name}/{image}/labels.tif").is_file():
            print(f"{dataset.name}/{image}: no labels.tif (not segmented yet), left out", file=sys.stderr)
            continue
        rgb = io.read_image(REPO / f"{results}/_work/{dataset.name}/{image}/image.png")
        label = io.read_label(label_file, rgb.shape[:2])
        truth, _ = metrics.split_ignore(label)
        methods = {"reference": metrics.regions_from_boundaries(truth != 0),
                   "matsam": io.read_image(REPO / f"{results}/{dataset.name}/{image}/labels.tif").astype(np.int64)}
        for name, baseline in baselines.GRAIN_BASELINES.items():
            methods[name] = metrics.regions_from_boundaries(baseline(rgb) != 0)
        for k, box in enumerate(fields(label)):
            field = f"{image}" + (f"#{k}" if (label == 255).any() else "")
            for method, labels in methods.items():
                crop = labels[box]
                counts = astm.field_counts(crop, PIXEL_UM)
                rows.append({"field": field, "method": method, **counts})
                sizes.setdefault(method, []).append(grain_sizes(crop))
    return pd.DataFrame(rows), sizes


def tables(name: str, table: pd.DataFrame, sizes: dict[str, list[np.ndarray]]) -> list[str]:
    ref = table[table.method == "reference"].set_index("field")
    ref_stats = {s["quantity"]: s for s in astm.dataset_statistics(ref.to_dict("records"), "grain")}
    lines = [f"### {name}: per field (ΔG = G(method) - G(reference))", "",
             "| field | grains ref | G ref (plan.) | G ref (Heyn) | " + " | ".join(
                 f"{m} grains | {m} ΔG plan. | {m} ΔG Heyn" for m in ("matsam", *baselines.GRAIN_BASELINES)) + " |",
             "|---|---|---|---|" + "---|---|---|" * (1 + len(baselines.GRAIN_BASELINES))]
    delta = {}
    for method in ("matsam", *baselines.GRAIN_BASELINES):
        mine = table[table.method == method].set_index("field")
        delta[method] = pd.DataFrame({
            "n": mine["astm_n_counted"],
            "plan": mine["astm_g_planimetric"] - ref["astm_g_planimetric"],
            "heyn": mine["astm_g_heyn"] - ref["astm_g_heyn"]})
    for field in ref.index:
        cells = [f"{ref.loc[field, 'astm_n_counted']:.1f}", f"{ref.loc[field, 'astm_g_planimetric']:.2f}",
                 f"{ref.loc[field, 'astm_g_heyn']:.2f}"]
        for d in delta.values():
            cells += [f"{d.loc[field, 'n']:.1f}", f"{d.loc[field, 'plan']:+.2f}", f"{d.loc[field, 'heyn']:+.2f}"]
        lines.append(f"| {field} | " + " | ".join(cells) + " |")
    lines += ["", f"### {name}: per set ({len(ref)} fields; goal: mean |ΔG| ≤ {GOAL_IMAGE}, |set ΔG| ≤ {GOAL_SET})", "",
              "| method | mean abs ΔG plan. | mean abs ΔG Heyn | set ΔG plan. | set ΔG Heyn | KS statistic (diameters) "
              "| grains / field (ref " + f"{ref['astm_n_counted'].mean():.1f}) |", "|---|---|---|---|---|---|---|"]
    ref_sizes = np.concatenate(sizes["reference"])
    for method, d in delta.items():
        mine = table[table.method == method]
        st = {s["quantity"]: s for s in astm.dataset_statistics(mine.to_dict("records"), "grain")}
        set_plan = st["planimetric"]["G"] - ref_stats["planimetric"]["G"]
        set_heyn = st["heyn_intercept"]["G"] - ref_stats["heyn_intercept"]["G"]
        mine_sizes = np.concatenate(sizes[method])
        ks = stats.ks_2samp(mine_sizes, ref_sizes).statistic if mine_sizes.size and ref_sizes.size else np.nan
        lines.append(f"| {method} | {d['plan'].abs().mean():.3f} | {d['heyn'].abs().mean():.3f} | {set_plan:+.3f} "
                     f"| {set_heyn:+.3f} | {ks:.3f} | {d['n'].mean():.1f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="use the labels of an earlier run")
    args = parser.parse_args()
    datasets = grain_datasets()
    if not datasets:
        sys.exit(f"no labelled grain dataset in {CONFIG} (is ../shared/data there?)")
    results = yaml.safe_load(CONFIG.read_text())["results"]
    seconds = None if args.skip_run else run_pipeline(results, datasets, args.cores)
    lines = ["# Grain size: ASTM E112 G of matsam against the reference labels", "",
             "benchmarks/grain_size.py; default configuration (zero-shot), MobileSAM on a CPU"
             + (f", pipeline {seconds / 60:.1f} min" if seconds else "") + ".", ""]
    for name, dataset in datasets.items():
        table, sizes = measure(dataset, Path(results))
        lines += tables(name, table, sizes) if len(table) else [f"### {name}: no segmented image yet", ""]
    text = "\n".join(lines)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
