"""`matsam init`: folder inspection, mode guesses with reasons, and a configuration that runs."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile
import yaml
from conftest import REPO
from synthetic import voronoi_micrograph, write_disc_dataset

from matsam.workflow import init
from matsam.workflow.catalogue import load_catalog
from matsam.workflow.schema import validate

MATSAM = [sys.executable, "-m", "matsam.cli"]


@pytest.fixture()
def folder(tmp_path):
    """Two datasets side by side: labelled grains (boundary map), unlabelled grey discs, and a stack."""
    root = tmp_path / "micrographs"
    (root / "grains" / "images").mkdir(parents=True)
    (root / "grains" / "labels").mkdir(parents=True)
    for seed in (1, 2):
        image, boundary = voronoi_micrograph(seed=seed, size=96, n_grains=8)
        cv2.imwrite(str(root / "grains" / "images" / f"g{seed}.png"), image)
        cv2.imwrite(str(root / "grains" / "labels" / f"g{seed}.png"), boundary.astype(np.uint8))
    write_disc_dataset(root / "discs", n_images=2)
    for f in (root / "discs" / "labels").iterdir():
        f.unlink()
    (root / "discs" / "labels").rmdir()
    stack = np.zeros((3, 32, 32), np.uint16)
    tifffile.imwrite(root / "discs" / "images" / "stack.tif", stack, photometric="minisblack")
    return root


def test_guesses_modes_from_labels_and_images(folder):
    guesses = {g.name: g for g in init.scan(folder)}
    assert sorted(guesses) == ["discs", "grains"]
    assert guesses["grains"].mode == "grain" and "thin lines" in guesses["grains"].reason
    assert guesses["grains"].labels == folder / "grains" / "labels"
    discs = guesses["discs"]
    assert discs.mode == "phase" and discs.labels is None and "solid regions" in discs.reason
    assert any("multi-page" in note and "stack.tif" in note for note in discs.notes)
    assert {(i.path.name, i.pages, i.dtype) for i in discs.infos} >= {("stack.tif", 3, "uint16")}


def test_written_config_is_valid_and_commented(folder, tmp_path):
    out = tmp_path / "cfg.yaml"
    result = subprocess.run([*MATSAM, "init", str(folder), "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "# mode grain: the labels are thin lines" in text and "# pixel_size_um:" in text
    config = yaml.safe_load(text)
    validate(config)
    catalog = load_catalog(config)
    assert catalog["grains"].mode == "grain" and sorted(catalog["grains"].labels) == ["g1", "g2"]
    assert catalog["discs"].mode == "phase" and not catalog["discs"].labels


def test_a_missing_folder_is_a_one_line_error(tmp_path):
    result = subprocess.run([*MATSAM, "init", str(tmp_path / "nope")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().endswith("nope: no such folder")
    (tmp_path / "empty").mkdir()
    result = subprocess.run([*MATSAM, "init", str(tmp_path / "empty")], capture_output=True, text=True)
    assert result.returncode == 2 and "no micrographs" in result.stderr


@pytest.mark.slow
def test_init_on_nbs2_then_the_pipeline_runs(shared_data, mobile_sam_weights, tmp_path):
    """The written config runs as is: one image's full chain (labels, COCO, metrics); one image per
    SAM job (a scheduling setting, not a method one) so that only that image is segmented."""
    config = tmp_path / "nbs2.yaml"
    subprocess.run([*MATSAM, "init", str(shared_data / "phase" / "nbs2"), "-o", str(config)], check=True)
    settings = yaml.safe_load(config.read_text())
    assert settings["datasets"]["nbs2"]["mode"] == "phase"
    target = "results/nbs2/spot2_0d_0"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(config), "--config", "sam_images_per_job=1", "--cores", "2",
         f"{target}/metrics.csv", f"{target}/objects.coco.json"],
        capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = __import__("pandas").read_csv(tmp_path / target / "metrics.csv").set_index("method")
    assert metrics.loc["matsam", "miou"] > 0.8
