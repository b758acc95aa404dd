"""`snakemake --report` after a small run, opened in headless Chromium; the pipeline's new files
(COCO export, calibrated labels.tif, shape and ASTM columns, job logs) on the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO
from report_browser import chromium, inspect_report
from synthetic import voronoi_micrograph, write_disc_dataset

from matsam import io
from matsam.measurement import coco

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}}


def snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                           *args], capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def run(tmp_path_factory, mobile_sam_weights):
    folder = tmp_path_factory.mktemp("report")
    write_disc_dataset(folder / "discs", n_images=2)
    for sub in ("images", "labels"):
        (folder / "grains" / sub).mkdir(parents=True)
    for seed in (5, 6):
        image, boundary = voronoi_micrograph(seed=seed, size=128, n_grains=20)
        cv2.imwrite(str(folder / "grains" / "images" / f"vor{seed}.png"), image)
        cv2.imwrite(str(folder / "grains" / "labels" / f"vor{seed}.png"), boundary.astype(np.uint8))
    config = {"results": "results", "device": "cpu", "defaults": FAST, "datasets": {
        "discs": {"images": "discs/images", "labels": "discs/labels", "mode": "phase", "pixel_size_um": 0.5},
        "grains": {"images": "grains/images", "labels": "grains/labels", "mode": "grain", "pixel_size_um": 0.2}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(folder, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_coco_export_decodes_to_labels_tif_and_tiff_is_calibrated(run):
    for dataset, image, pixel in (("discs", "disc_0", 0.5), ("grains", "vor5", 0.2)):
        folder = run / "results" / dataset / image
        labels = tifffile.imread(folder / "labels.tif")
        document = json.loads((folder / "objects.coco.json").read_text())
        assert np.array_equal(coco.decode_labels(document), labels)
        assert document["images"][0]["file_name"] == f"{image}.png"
        assert len(document["annotations"]) == len(np.unique(labels[labels > 0]))
        assert io.tiff_pixel_size_um(folder / "labels.tif") == pytest.approx(pixel)


def test_tables_have_shape_and_astm_columns(run):
    objects = pd.read_csv(run / "results" / "grains" / "vor5" / "objects.csv")
    assert {"circularity", "solidity", "feret_max_px", "feret_min_px", "n_neighbours", "feret_max_um"} <= set(objects)
    assert (objects["feret_max_px"] >= objects["feret_min_px"]).all() and (objects["n_neighbours"] > 0).all()
    summary = pd.read_csv(run / "results" / "grains" / "summary.csv")
    assert {"astm_n_counted", "astm_n_intersections", "astm_g_planimetric", "astm_g_heyn"} <= set(summary)
    table = pd.read_csv(run / "results" / "grains" / "astm.csv").set_index("quantity")
    assert table.loc["planimetric", "n_fields"] == 2
    assert table.loc["planimetric", "G_mean"] == pytest.approx(summary["astm_g_planimetric"].mean(), abs=1e-3)
    assert "E112 asks for at least 5" in table.loc["planimetric", "warning"]


def test_every_job_logs_what_it_did(run):
    logs = run / "results" / "_logs"
    assert "prompts (" in (logs / "make_prompts" / "grains" / "vor5.log").read_text()
    sam = "".join(f.read_text() for f in (logs / "segment_crops" / "grains").glob("*.log"))
    assert "vor5: " in sam and "masks kept" in sam and "decoded" in sam and " done in " in sam
    assert "objects" in (logs / "merge_masks" / "grains" / "vor5.log").read_text()
    assert "objects measured" in (logs / "quantify_objects" / "discs" / "disc_0.log").read_text()


def test_report_opens_in_chromium_with_every_section(run, tmp_path):
    if chromium() is None:
        pytest.skip("chromium is not installed (scripts/run-tests.sh installs Debian's package)")
    result = snakemake(run, "--report", str(run / "report.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    found = inspect_report(run / "report.html", tmp_path)
    assert "error" not in found, found["error"]
    assert "matsam segments material micrographs" in found["start"]
    assert set(found["categories"]) == {"discs", "grains", "run"}
    for dataset in ("discs", "grains"):
        shown = found["categories"][dataset]
        assert set(shown["subcategories"]) == {"overlays", "figures", "tables"}
        assert all(s in shown["text"] for s in ("overlays", "figures", "tables"))
    results = {r["path"]: r for r in found["results"]}
    images = [p for p, r in results.items() if r["mime"] == "image/png"]
    assert len(images) == 4 + 4  # 4 overlays, 2 figures per dataset
    for path in images:  # decoded by the browser at their real size
        expected = cv2.imread(str(run / path)).shape
        assert (results[path]["height"], results[path]["width"]) == expected[:2], path
    tables = results["results/grains/report/tables.html"]
    assert tables["tables"] == 4 and "ASTM E112" in tables["text"] and "flagged" in tables["text"]
    assert {"G", "ci95", "ra_pct", "astm_g_heyn", "flags", "ari", "vi"} <= set(tables["headers"])
    assert {"matsam", "canny", "watershed"} <= set(tables["text"].split())
    assert "miou" in results["results/discs/report/tables.html"]["headers"]
    run_page = results["results/report/run.html"]
    assert "torch" in run_page["text"] and "sha256" in run_page["text"] and "pixel_size_um" in run_page["text"]
    assert "vor5" in results["results/grains/vor5/overlay.png"]["caption"]
