"""The mini-configs of tests/cases, run as a user runs them: lint, dry run, then the whole
pipeline on their synthetic data (real MobileSAM on the CPU)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from synthetic import three_phase_micrograph, voronoi_micrograph
from synthetic3d import grey_stack, voronoi_volume

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "cases"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def write_grain(folder: Path) -> None:
    for d in ("images", "labels"):
        (folder / d).mkdir()
    for i in range(2):
        image, boundary = voronoi_micrograph(seed=i, size=128, n_grains=12)
        cv2.imwrite(str(folder / "images" / f"g{i}.png"), image)
        cv2.imwrite(str(folder / "labels" / f"g{i}.png"), boundary.astype(np.uint8))


def write_phase3(folder: Path) -> None:
    for d in ("images", "labels"):
        (folder / d).mkdir()
    grey, classes, _ = three_phase_micrograph(seed=0, size=128)
    cv2.imwrite(str(folder / "images" / "p0.png"), grey)
    cv2.imwrite(str(folder / "labels" / "p0.png"), classes)


def write_stack(folder: Path) -> None:
    truth = voronoi_volume((8, 96, 96), 12, seed=3, spacing=(2.0, 1.0, 1.0))
    tifffile.imwrite(folder / "sections.tif", (grey_stack(truth, seed=3) * 255).astype(np.uint8),
                     photometric="minisblack")


RECIPES = {"grain": write_grain, "phase3": write_phase3, "stack": write_stack}


def test_every_case_has_a_recipe():
    assert sorted(p.name for p in CASES.iterdir() if p.is_dir()) == sorted(RECIPES)


@pytest.fixture(params=sorted(RECIPES))
def case(request, tmp_path) -> tuple[str, Path]:
    folder = tmp_path / request.param
    shutil.copytree(CASES / request.param, folder)
    RECIPES[request.param](folder)
    return request.param, folder


def snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                           *args], capture_output=True, text=True)


def test_case_lints_and_plans(case):
    _, folder = case
    lint = snakemake(folder, "--lint")
    said = lint.stdout + lint.stderr
    assert lint.returncode == 0 and "Congratulations" in said, said[-3000:]
    dry = snakemake(folder, "-n", "--cores", "1")
    assert dry.returncode == 0, dry.stderr[-2000:]


@pytest.mark.slow
def test_case_runs_end_to_end(case):
    name, folder = case
    run = snakemake(folder, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    results = folder / "results"
    if name == "grain":
        metrics = pd.read_csv(results / "grains" / "metrics.csv")
        assert set(metrics.method) == {"matsam", "canny", "otsu", "watershed"} and len(metrics) == 8
        assert metrics[metrics.method == "matsam"].ari.min() > 0.5
        assert pd.read_csv(results / "grains" / "astm.csv").notna().any().any()
    elif name == "phase3":
        classes = cv2.imread(str(results / "discs" / "p0" / "phase.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(classes)) == {0, 1, 2}
        metrics = pd.read_csv(results / "discs" / "metrics.csv").set_index("method")
        assert metrics.loc["matsam", "miou"] > 0.8
    else:
        summary = pd.read_csv(results / "sections" / "summary.csv")
        assert summary.n_slices.iloc[0] == 8 and 6 <= summary.n_grains_3d.iloc[0] <= 24
    assert (results / "summary.csv").is_file()
