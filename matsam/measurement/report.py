"""Figures and tables of the Snakemake report (`snakemake --report report.html`).

Per dataset: the object size histogram, the per-field ASTM E112 G or phase fraction with the
dataset's confidence interval, the ASTM table with the per-image flags, and the metrics table
against the baselines. Per run: the configuration and the versions of everything that shaped the
numbers. Tables are small self-contained HTML files (the report embeds them as they are).
"""

from __future__ import annotations

import html
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from matsam import __version__, io
from matsam.measurement import astm

PathLike = str | Path
_STYLE = ("<style>body{font-family:sans-serif;font-size:13px;margin:12px}table{border-collapse:collapse;"
          "margin-bottom:16px}td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}"
          "th{background:#eee}td.flag{color:#b00;text-align:left}h2{font-size:15px}p.warn{color:#b00}</style>")


def html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}"
            f"</head><body><h1 style='font-size:17px'>{html.escape(title)}</h1>{body}</body></html>\n")


def html_table(frame: pd.DataFrame, caption: str) -> str:
    return f"<h2>{html.escape(caption)}</h2>" + frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                                             border=0, escape=True)


def write_html(path: PathLike, title: str, body: str) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text(html_page(title, body))


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: PathLike) -> None:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)


def size_histogram(objects: Sequence[pd.DataFrame], mode: str, dst: PathLike) -> None:
    """Histogram of the equivalent circle diameter (µm when known), log-spaced bins, log x axis;
    objects cut by the image edge are left out (their size is underestimated)."""
    plt = _figure()
    frame = pd.concat(list(objects), ignore_index=True) if objects else pd.DataFrame()
    column = "equivalent_diameter_um" if "equivalent_diameter_um" in frame else "equivalent_diameter_px"
    unit = "µm" if column.endswith("_um") else "px"
    inside = frame[~frame["touches_border"].astype(bool)] if len(frame) else frame
    values = inside[column].to_numpy(float) if len(inside) else np.empty(0)
    values = values[values > 0]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    what = "grain" if mode == "grain" else "particle"
    if values.size:
        bins = np.geomspace(values.min(), values.max() * 1.0001, min(40, max(5, values.size // 5)) + 1)
        ax.hist(values, bins=bins, color="#4477aa", edgecolor="white")
        ax.axvline(float(np.median(values)), color="#cc3311", label=f"median {np.median(values):.3g} {unit}")
        ax.legend(frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel(f"{what} equivalent circle diameter ({unit})")
    ax.set_ylabel(f"{what}s")
    ax.set_title(f"{values.size} {what}s not touching the image edge")
    save_figure(fig, dst)


def field_plot(summary: pd.DataFrame, stats: Sequence[Mapping[str, Any]], mode: str, dst: PathLike) -> None:
    """Per image: ASTM G (planimetric and intercept) or the phase fraction, with the dataset mean
    and its 95 % confidence interval as a band."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = np.arange(len(summary))
    if mode == "grain":
        columns = [("astm_g_planimetric", "planimetric (Jeffries)"), ("astm_g_heyn", "lineal intercept (Heyn)")]
        ylabel = "ASTM E112 G"
    else:
        columns = [("phase_fraction", "phase area fraction")]
        ylabel = "phase area fraction"
    for k, (column, name) in enumerate(columns):
        values = summary[column].to_numpy(float) if column in summary else np.full(len(summary), np.nan)
        ax.plot(x, values, "o", label=name, color=("#4477aa", "#ee7733")[k])
        if mode == "grain":
            mean, ci = stats[k]["G_mean"], stats[k]["G_ci95"]
        else:
            mean, ci = stats[0]["mean"], stats[0]["ci95"]
        if np.isfinite(mean):
            ax.axhline(mean, color=("#4477aa", "#ee7733")[k], lw=1)
            if np.isfinite(ci):
                ax.axhspan(mean - ci, mean + ci, color=("#4477aa", "#ee7733")[k], alpha=0.15)
    if mode == "grain" and not np.isfinite(summary.get("astm_g_planimetric", pd.Series([np.nan]))).any():
        ax.text(0.5, 0.5, "no pixel size: set pixel_size_um for G", ha="center", transform=ax.transAxes)
    ax.set_xticks(x, summary["image"].astype(str), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, dst)


def flag_column(summary: pd.DataFrame, mode: str) -> list[str]:
    rows = summary.replace({np.nan: None}).to_dict("records")
    return ["; ".join(astm.image_flags(row, mode)) for row in rows]


def dataset_report(dataset: str, mode: str, summary_file: PathLike, metrics_file: PathLike,
                   objects_files: Sequence[PathLike], astm_out: PathLike, sizes_out: PathLike,
                   fields_out: PathLike, tables_out: PathLike) -> None:
    """The dataset's ASTM table (CSV), its two figures and its tables page (HTML)."""
    summary = pd.read_csv(summary_file)
    stats = astm.dataset_statistics(summary.replace({np.nan: None}).to_dict("records"), mode)
    io.write_csv(astm_out, pd.DataFrame(stats))
    size_histogram([pd.read_csv(f) for f in objects_files], mode, sizes_out)
    field_plot(summary, stats, mode, fields_out)
    summary = summary.assign(flags=flag_column(summary, mode))
    keep = ["image", "n_objects", "mean_area_px", "mean_area_um2", "astm_n_counted", "astm_g_planimetric",
            "astm_n_intersections", "astm_g_heyn", "phase_fraction", "flags"]
    body = [html_table(pd.DataFrame(stats), "ASTM E112 §15 / E562 field statistics"
                       if mode == "grain" else "Phase fraction field statistics (ASTM E562 style)")]
    body += [f"<p class='warn'>{html.escape(s['quantity'])}: {html.escape(s['warning'])}</p>"
             for s in stats if s.get("warning")]
    flagged = int((summary["flags"] != "").sum())
    body.append(f"<p class='warn'>{flagged} image(s) flagged for checking</p>" if flagged
                else "<p>No image flagged.</p>")
    per_image = summary.reindex(columns=[c for c in keep if c in summary.columns])
    body.append(html_table(per_image, "Per image"))
    metrics = pd.read_csv(metrics_file)
    if len(metrics):
        means = metrics.groupby("method", sort=False).mean(numeric_only=True).reset_index()
        means.insert(1, "n_images", metrics.groupby("method", sort=False).size().to_numpy())
        body.append(html_table(means.dropna(axis=1, how="all"), "Metrics against the reference labels: "
                               "matsam and the classic baselines (mean over images)"))
        body.append(html_table(metrics.dropna(axis=1, how="all"), "Metrics per image"))
    else:
        body.append("<h2>Metrics</h2><p>No reference labels for this dataset.</p>")
    write_html(tables_out, f"{dataset}: grain size, fractions and metrics", "".join(body))


def versions(checkpoints: Sequence[tuple[str, str | None]]) -> dict[str, str]:
    """Versions of everything that shaped the numbers, with each SAM checkpoint's sha256."""
    from importlib import metadata

    from matsam.segmentation import weights

    out = {"matsam": __version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "snakemake", "numpy", "opencv-python-headless", "scikit-image",
                    "segment-anything", "mobilesam-mirror"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    for model, checkpoint in sorted(set(checkpoints), key=str):
        path = Path(checkpoint) if checkpoint else weights.default_checkpoint()
        digest = weights.sha256sum(path) if path.is_file() else "file not found"
        out[f"SAM {model} weights ({path.name}) sha256"] = digest
    return out


def run_report(config: Mapping[str, Any], checkpoints: Sequence[tuple[str, str | None]], dst: PathLike) -> None:
    """The run's configuration (as Snakemake saw it, defaults filled in) and versions, as HTML."""
    import yaml

    table = pd.DataFrame(list(versions(checkpoints).items()), columns=["component", "version"])
    text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    config_block = f"<h2>Configuration</h2><pre style='text-align:left'>{html.escape(text)}</pre>"
    body = html_table(table, "Versions") + config_block
    write_html(dst, "matsam run: configuration and versions", body)
