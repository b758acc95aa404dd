"""The Snakemake workflow end to end on tiny images, with the real MobileSAM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, parse_dry_run
from synthetic import voronoi_micrograph, write_disc_dataset

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}}


def write_config(folder: Path, datasets: dict, **extra) -> Path:
    config = {"results": "results", "device": "cpu", "defaults": FAST, "datasets": datasets, **extra}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"), *args],
        capture_output=True, text=True, timeout=1500,
    )


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, mobile_sam_weights):
    folder = tmp_path_factory.mktemp("workflow")
    write_disc_dataset(folder / "discs", n_images=2)
    grain, boundary = voronoi_micrograph(seed=5, size=96, n_grains=6)
    (folder / "grains" / "images").mkdir(parents=True)
    (folder / "grains" / "labels").mkdir(parents=True)
    cv2.imwrite(str(folder / "grains" / "images" / "vor.png"), grain)
    cv2.imwrite(str(folder / "grains" / "labels" / "vor.png"), boundary.astype(np.uint8))
    write_config(folder, {
        "discs": {"images": "discs/images", "labels": "discs/labels", "mode": "phase", "pixel_size_um": 0.5},
        "grains": {"images": "grains/images", "labels": "grains/labels", "mode": "grain"},
    }, sam_images_per_job=1)
    result = snakemake(folder, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_every_file_of_the_output_contract_is_written(pipeline_run):
    results = pipeline_run / "results"
    for dataset, image, map_name in [("discs", "disc_0", "phase"), ("discs", "disc_1", "phase"),
                                     ("grains", "vor", "boundaries")]:
        folder = results / dataset / image
        labels = tifffile.imread(folder / "labels.tif")
        assert labels.dtype == np.uint32 and labels.shape == ((128, 128) if dataset == "discs" else (96, 96))
        mask = cv2.imread(str(folder / f"{map_name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == labels.shape and set(np.unique(mask)) <= {0, 1}
        overlay = cv2.imread(str(folder / "overlay.png"))
        assert overlay.shape == (*labels.shape, 3)
        objects = pd.read_csv(folder / "objects.csv")
        assert len(objects) == labels.max()
        assert {"area_px", "equivalent_diameter_px", "perimeter_px", "major_axis_px", "minor_axis_px",
                "aspect_ratio", "orientation_deg", "mean_intensity", "touches_border"} <= set(objects.columns)
        if dataset == "discs":
            assert "area_um2" in objects.columns
            assert np.allclose(objects["area_um2"], objects["area_px"] * 0.25)


def test_metrics_have_a_row_per_image_and_method(pipeline_run):
    results = pipeline_run / "results"
    discs = pd.read_csv(results / "discs" / "metrics.csv")
    assert list(discs.columns) == ["image", "method", "ari", "vi", "iou", "miou", "f1", "recall"]
    assert sorted(zip(discs.image, discs.method)) == sorted(
        (f"disc_{i}", m) for i in range(2) for m in ("matsam", "otsu", "adaptive"))
    matsam = discs[discs.method == "matsam"]
    assert (matsam.miou > 0.9).all(), matsam
    assert discs[["ari", "vi"]].isna().all().all()
    grains = pd.read_csv(results / "grains" / "metrics.csv")
    assert sorted(grains.method) == ["canny", "matsam", "otsu", "watershed"]
    assert grains[["ari", "vi"]].notna().all().all() and grains[["iou", "miou"]].isna().all().all()
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == 3 + 4 and set(summary.dataset) == {"discs", "grains"}
    assert (summary[summary.dataset == "discs"].n_images == 2).all()
    per_image = pd.read_csv(results / "discs" / "summary.csv")
    assert sorted(per_image.image) == ["disc_0", "disc_1"]
    assert (per_image.phase_fraction > 0.05).all() and (per_image.phase_fraction < 0.3).all()


def planned_jobs(folder: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(folder, "-n", "--cores", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    return parse_dry_run(out.stdout)


def test_a_sam_filter_reruns_the_decoder_not_the_encoder(pipeline_run):
    config_file = pipeline_run / "config.yaml"
    original = config_file.read_text()
    config = yaml.safe_load(original)
    config["defaults"]["sam"] = {"pred_iou_thresh": 0.9}
    config_file.write_text(yaml.safe_dump(config))
    try:
        rules = {rule for rule, _ in planned_jobs(pipeline_run)}
    finally:
        config_file.write_text(original)
    assert "segment_crops" in rules and "embed_crops" not in rules
    assert "prepare_image" not in rules and "make_prompts" not in rules
    embeddings = sorted((pipeline_run / "results" / "_work" / "discs" / "embeddings").rglob("*.npy"))
    assert [p.relative_to(p.parents[2]).as_posix() for p in embeddings] == [
        "disc_0/disc_0/crop_0.npy", "disc_1/disc_1/crop_0.npy"]
    assert np.load(embeddings[0]).shape == (1, 256, 64, 64)


def test_a_changed_image_reruns_only_its_own_chain(pipeline_run):
    assert planned_jobs(pipeline_run) == []
    image_path = pipeline_run / "discs" / "images" / "disc_1.png"
    image = cv2.imread(str(image_path))
    cv2.imwrite(str(image_path), np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8))
    # The image is checked again first, so a dry run cannot list the jobs after that check:
    # count the jobs a real run executes.
    rerun = snakemake(pipeline_run, "--cores", "1")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    jobs = parse_dry_run(rerun.stderr)
    per_image = [(rule, wc) for rule, wc in jobs if "image" in wc]
    assert {wc["image"] for _, wc in per_image} == {"disc_1"}
    assert {"check_input", "prepare_image", "make_prompts", "merge_phase_masks", "evaluate_image"} <= {
        r for r, _ in per_image}
    for sam_rule in ("embed_crops", "segment_crops"):
        assert [wc for rule, wc in jobs if rule == sam_rule] == [{"dataset": "discs", "shard": "disc_1"}]
    others = {rule for rule, wc in jobs if "image" not in wc and rule not in ("embed_crops", "segment_crops")}
    assert others <= {"collect_checks", "failed_table", "aggregate_dataset", "aggregate_all", "dataset_report", "all"}


def test_configuration_errors_stop_before_any_job(tmp_path):
    write_disc_dataset(tmp_path / "d", n_images=1)
    (tmp_path / "d" / "labels" / "disc_0.png").unlink()
    cases = [
        ({"x": {"images": "d/images", "mode": "phase", "colour": 1}}, "'colour' was unexpected"),
        ({"x": {"images": "nowhere", "mode": "phase"}}, "folder nowhere does not exist"),
        ({"x": {"images": "d/images", "labels": "d/labels", "mode": "phase"}},
         "no label for image d/images/disc_0.png"),
        ({"x": {"images": "d/images", "mode": "phase", "overrides": {"sam": {"iou": 1}}}}, "'iou' was unexpected"),
        ({"x": {"images": "d/images", "mode": "grains"}}, "'grains' is not one of"),
    ]
    for datasets, message in cases:
        write_config(tmp_path, datasets)
        result = snakemake(tmp_path, "-n", "--cores", "1")
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert message in output, output[-2000:]
    assert not (tmp_path / "results").exists()
