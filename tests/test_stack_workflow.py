"""Serial-section stacks through the Snakemake workflow: config, per-slice 2D jobs, linking.

One synthetic grain stack (8 slices of 128 x 128 px, Voronoi grains with dark boundaries and
noise, known 3D labels) runs through the whole pipeline once (module fixture, real MobileSAM on
the CPU); the other tests use dry runs or call the link step in-process on synthetic 2D results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, parse_dry_run
from skimage.segmentation import find_boundaries
from sklearn.metrics import adjusted_rand_score
from synthetic3d import grey_stack, perturb_labels2d, shifted_crops, voronoi_volume

from matsam import io
from matsam.config import ConfigError, LinkConfig
from matsam.volumes import stackio
from matsam.volumes.stack3d import apply_shifts
from matsam.workflow.catalogue import export_stack, load_catalog, load_stacks
from matsam.workflow.steps import STACK_SUMMARY_COLUMNS, link_stack

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}}
SHAPE = (8, 128, 128)
VOXEL = [0.5, 0.1, 0.1]
OUTPUTS = ["labels3d.h5", "grains3d.csv", "neighbours3d.csv", "summary.csv", "shifts.json", "ortho_xy.png",
           "ortho_xz.png", "ortho_yz.png"]


def write_config(folder: Path, stacks: dict, datasets: dict | None = None, name: str = "config.yaml") -> Path:
    config = {"results": "results", "device": "cpu", "sam_threads": 1, "sam_images_per_job": 1, "defaults": FAST,
              "datasets": datasets or {}, "stacks": stacks}
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(folder: Path, *args: str, config: str = "config.yaml") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / config), *args],
        capture_output=True, text=True, timeout=1500,
    )


def planned_jobs(folder: Path, config: str = "config.yaml") -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(folder, "-n", "--cores", "1", config=config)
    assert out.returncode == 0, out.stderr[-2000:]
    return parse_dry_run(out.stdout)


def synthetic_stack(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """True uint32 (z, y, x) grain labels (about 25 grains, each on several slices) and the
    uint8 grey stack (per-grain grey level, 2-px dark boundary lines, noise)."""
    truth = voronoi_volume(SHAPE, 25, seed=seed, spacing=(2.0, 1.0, 1.0))
    return truth, (grey_stack(truth, seed=seed) * 255).astype(np.uint8)


def ari_3d(truth: np.ndarray, pred: np.ndarray, where: np.ndarray | None = None) -> float:
    keep = (truth > 0) & (pred > 0) if where is None else where & (truth > 0) & (pred > 0)
    return adjusted_rand_score(truth[keep], pred[keep])


def boundary_lines(truth: np.ndarray) -> np.ndarray:
    """The synthetic images' dark lines: 2D boundary pixels of the true labels."""
    return np.stack([find_boundaries(s, mode="inner") for s in truth])


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory, mobile_sam_weights):
    folder = tmp_path_factory.mktemp("stackflow")
    truth, grey = synthetic_stack()
    np.save(folder / "truth.npy", truth)
    tifffile.imwrite(folder / "sections.tif", grey, photometric="minisblack")
    write_config(folder, {"grains3d": {"path": "sections.tif", "mode": "grain", "voxel_size_um": VOXEL}})
    result = snakemake(folder, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


# --- the full pipeline -----------------------------------------------------------------------


@pytest.mark.slow
def test_stack_outputs(stack_run):
    results = stack_run / "results"
    out = results / "grains3d"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for z in range(SHAPE[0]):
        slice_dir = results / "grains3d" / "slices" / f"slice_{z:04d}"
        for name in ("labels.tif", "boundaries.png", "overlay.png", "objects.csv"):
            assert (slice_dir / name).is_file()
    with h5py.File(out / "labels3d.h5", "r") as f:
        ds = f["labels"]
        assert ds.dtype == np.uint32 and ds.shape == SHAPE
        assert ds.chunks is not None and ds.compression == "gzip"
        assert np.allclose(ds.attrs["voxel_size_um"], VOXEL) and np.allclose(ds.attrs["element_size_um"], VOXEL)
        labels3d = ds[()]
    table = pd.read_csv(out / "grains3d.csv")
    assert {"label", "volume_vox", "volume_um3", "equivalent_sphere_diameter_um", "centroid_z", "bbox_z0",
            "bbox_x1", "n_slices", "touches_boundary"} <= set(table.columns)
    assert len(table) == labels3d.max() and table.volume_vox.sum() == (labels3d > 0).sum()
    assert np.allclose(table.volume_um3, table.volume_vox * 0.005)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == STACK_SUMMARY_COLUMNS and len(summary) == 1
    row = summary.iloc[0]
    assert row.n_grains_3d == len(table) and row.n_slices == SHAPE[0] and row["mode"] == "grain"
    # grains cut by a face are left out of the size statistics: in 8 slices every grain is cut
    assert row.n_grains_sized == (~table.touches_boundary).sum() == 0 and pd.isna(row.mean_grain_volume_vox)
    assert {"n_neighbours", "boundary_area_um2", "ellipsoid_a", "aspect_c_a"} <= set(table.columns)
    pairs = pd.read_csv(out / "neighbours3d.csv")
    assert list(pairs.columns) == ["grain_a", "grain_b", "shared_faces", "shared_area_um2"]
    assert (pairs.grain_a < pairs.grain_b).all() and table.n_neighbours.sum() == 2 * len(pairs)
    assert row.boundary_look == "dark"
    assert row.links > 0 and not row.aligned and pd.isna(row.phase_volume_fraction)
    shifts = json.loads((out / "shifts.json").read_text())
    assert shifts["aligned"] is False and shifts["shifts_dy_dx"] == [[0, 0]] * SHAPE[0]
    shapes = {name: cv2.imread(str(out / f"ortho_{name}.png")).shape for name in ("xy", "xz", "yz")}
    assert shapes == {"xy": (128, 128, 3), "xz": (40, 128, 3), "yz": (40, 128, 3)}  # z stretched 5x
    per_slice = pd.read_csv(results / "grains3d" / "slices" / "summary.csv")
    assert sorted(per_slice.image) == [f"slice_{z:04d}" for z in range(SHAPE[0])]


@pytest.mark.slow
def test_3d_grains_match_the_truth(stack_run, tmp_path):
    truth = np.load(stack_run / "truth.npy")
    with h5py.File(stack_run / "results" / "grains3d" / "labels3d.h5", "r") as f:
        labels3d = f["labels"][()]
    lines = boundary_lines(truth)
    pipeline = ari_3d(truth, labels3d)
    print(f"\n3D ARI, full pipeline (default settings: boundary look detected): {pipeline:.4f} all voxels, "
          f"{ari_3d(truth, labels3d, ~lines):.4f} off the boundary lines; "
          f"{labels3d.max()} grains, {truth.max()} true")
    assert pipeline >= 0.85
    assert abs(int(labels3d.max()) - int(truth.max())) <= 5
    # the same 2D results linked without boundary refinement: SAM's masks swallow the dark lines
    # on one side or the other, which costs ARI on the line voxels (11% of all) only
    slices = stack_run / "results" / "grains3d" / "slices"
    work = stack_run / "results" / "_work" / "grains3d" / "slices"
    names = [f"slice_{z:04d}" for z in range(SHAPE[0])]
    outputs = outputs_in(tmp_path)
    link_stack([slices / n / "labels.tif" for n in names], [], [work / n / "image.png" for n in names], outputs,
               "plain", "grain", VOXEL, False, LinkConfig(refine_boundaries="none", consistent=False))
    with h5py.File(outputs["labels3d"], "r") as f:
        plain = f["labels"][()]
    print(f"3D ARI, no refinement: {ari_3d(truth, plain):.4f} all voxels, "
          f"{ari_3d(truth, plain, ~lines):.4f} off the boundary lines")
    assert ari_3d(truth, plain, ~lines) >= 0.95


@pytest.mark.slow
def test_tiff_folder_and_hdf5_stacks_give_the_same_jobs(stack_run):
    """The same sections as a PNG folder or an HDF5 dataset export to byte-identical slices, so
    after the TIFF run nothing is left to do but re-render the run report's page of the
    configuration (run_report records the config, and its data path did change)."""
    grey = tifffile.imread(stack_run / "sections.tif")
    folder = stack_run / "pngs"
    folder.mkdir()
    for z, image in enumerate(grey):  # s1 ... s8: natural order
        cv2.imwrite(str(folder / f"s{z + 1}.png"), image)
    with h5py.File(stack_run / "sections.h5", "w") as f:
        f.create_dataset("scan/grey", data=grey)
    exported = stack_run / "results" / "_work" / "_stacks" / "grains3d"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in exported.glob("slice_*.tif")}
    assert len(before) == SHAPE[0]
    for path in ("pngs", "sections.h5:/scan/grey"):
        write_config(stack_run, {"grains3d": {"path": path, "mode": "grain", "voxel_size_um": VOXEL}},
                     name="other.yaml")
        assert {rule for rule, _ in planned_jobs(stack_run, "other.yaml")} <= {"run_report", "all"}, path
        assert json.loads((exported / "source.json").read_text())["spec"] == path
        after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in exported.glob("slice_*.tif")}
        assert after == before, path


@pytest.mark.slow
def test_a_changed_slice_reruns_only_its_chain_and_the_linking(stack_run):
    assert planned_jobs(stack_run) == []
    grey = tifffile.imread(stack_run / "sections.tif")
    grey[3] = np.clip(grey[3].astype(int) + 3, 0, 255).astype(np.uint8)
    tifffile.imwrite(stack_run / "sections.tif", grey, photometric="minisblack")
    jobs = planned_jobs(stack_run)
    # with sam_images_per_job: 1 a SAM job's shard is named after its one image
    per_slice = [(rule, wc.get("image", wc.get("shard"))) for rule, wc in jobs if {"image", "shard"} & set(wc)]
    assert {image for _, image in per_slice} == {"slice_0003"}
    assert {"prepare_image", "embed_crops", "segment_crops", "merge_grain_masks"} <= {rule for rule, _ in per_slice}
    others = {rule for rule, wc in jobs if not {"image", "shard"} & set(wc)}
    tables = {"collect_checks", "failed_table", "aggregate_dataset", "aggregate_all", "dataset_report", "all"}
    assert "link_stack" in others and others <= {"link_stack", *tables}


# --- configuration -----------------------------------------------------------------------------


def test_wrong_slice_size_is_a_configuration_error(tmp_path):
    _, grey = synthetic_stack()
    (tmp_path / "sections").mkdir()
    for z, image in enumerate(grey):
        cv2.imwrite(str(tmp_path / "sections" / f"s{z + 1}.png"), image[:-1] if z == 5 else image)
    write_config(tmp_path, {"st": {"path": "sections", "mode": "grain"}})
    result = snakemake(tmp_path, "-n", "--cores", "1")
    assert result.returncode != 0
    said = result.stdout + result.stderr  # Snakemake prints parse-time errors to stdout
    assert "invalid configuration: stacks.st.path: slice sections/s6.png has shape (127, 128)" in said, said[-2000:]


def test_stack_and_dataset_names_must_differ(tmp_path):
    (tmp_path / "d").mkdir()
    cv2.imwrite(str(tmp_path / "d" / "a.png"), np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "s.tif", synthetic_stack()[1], photometric="minisblack")
    write_config(tmp_path, {"x": {"path": "s.tif", "mode": "grain"}}, {"x": {"images": "d", "mode": "grain"}})
    result = snakemake(tmp_path, "-n", "--cores", "1")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "stacks.x: 'x' is also the name of a dataset" in said, said[-2000:]


def config_of(stacks: dict, datasets: dict | None = None) -> dict:
    return {"results": "results", "device": "cpu", "defaults": {}, "datasets": datasets or {}, "stacks": stacks}


def test_stack_config_errors_name_the_key(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", synthetic_stack()[1], photometric="minisblack")
    cases = [
        ({"x": {"path": "nothere.tif", "mode": "grain"}}, "stacks.x.path: stack not found"),
        ({"x": {"path": "s.h5:/grey", "mode": "grain"}}, "stacks.x.path: HDF5 file not found"),
        ({"x": {"path": "s.tif", "mode": "phase", "link": {"refine_boundaries": "dark"}}},
         "stacks.x.link.refine_boundaries: only for grain stacks"),
        ({"x": {"path": "s.tif", "mode": "grain", "overrides": {"sam": {"iou": 1}}}}, "unknown key(s) iou"),
        ({"x/y": {"path": "s.tif", "mode": "grain"}}, "a stack name may hold only"),
    ]
    for stacks, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_stacks(config_of(stacks), {}, tmp_path / "export", base=tmp_path)


def test_stack_becomes_a_dataset_of_slices(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", synthetic_stack()[1], photometric="minisblack")
    config = config_of({"st": {"path": "s.tif", "mode": "phase", "voxel_size_um": [1, 0.2, 0.2],
                               "overrides": {"merge": {"min_object_area": 30}}}})
    stacks = load_stacks(config, load_catalog(config, tmp_path), tmp_path / "export", base=tmp_path)
    stack = stacks["st"]
    assert stack.dataset.name == "st/slices" and stack.mode == "phase" and stack.n_slices == SHAPE[0]
    assert list(stack.dataset.images) == [f"slice_{z:04d}" for z in range(SHAPE[0])]
    assert stack.dataset.method.merge.min_object_area == 30
    assert stack.dataset.method.quantify.pixel_size_um == 0.2
    assert stack.voxel_size_um == (1.0, 0.2, 0.2) and not stack.align and stack.link == LinkConfig()


def test_export_is_skipped_while_the_source_is_unchanged(tmp_path, monkeypatch):
    grey = synthetic_stack()[1]
    tifffile.imwrite(tmp_path / "s.tif", grey, photometric="minisblack")
    paths = export_stack("st", str(tmp_path / "s.tif"), tmp_path / "out")
    assert [p.name for p in paths] == [f"slice_{z:04d}.tif" for z in range(SHAPE[0])]
    calls = []
    real = stackio.export_slices
    monkeypatch.setattr(stackio, "export_slices", lambda *a: calls.append(a) or real(*a))
    assert export_stack("st", str(tmp_path / "s.tif"), tmp_path / "out") == paths and calls == []
    grey[2] += 1
    tifffile.imwrite(tmp_path / "s.tif", grey, photometric="minisblack")
    for p in paths:  # backdate, so that a rewrite would show
        os.utime(p, ns=(10**18, 10**18))
    export_stack("st", str(tmp_path / "s.tif"), tmp_path / "out")
    assert len(calls) == 1
    assert [p.name for p in paths if p.stat().st_mtime_ns != 10**18] == ["slice_0002.tif"]


def test_phase_stack_dry_run(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", synthetic_stack()[1], photometric="minisblack")
    write_config(tmp_path, {"ph": {"path": "s.tif", "mode": "phase", "align": True}})
    jobs = planned_jobs(tmp_path)
    rules = [rule for rule, _ in jobs]
    assert rules.count("merge_phase_masks") == SHAPE[0] and rules.count("link_stack") == 1
    assert "merge_grain_masks" not in rules
    assert {wc["dataset"] for _, wc in jobs if "dataset" in wc} == {"ph/slices"}


# --- the link step on synthetic 2D results (no SAM) --------------------------------------------------


def write_slices(folder: Path, grey: np.ndarray, labels: np.ndarray | None = None,
                 masks: np.ndarray | None = None) -> tuple[list, list, list]:
    label_files, map_files, grey_files = [], [], []
    for z in range(grey.shape[0]):
        d = folder / f"slice_{z:04d}"
        io.write_png(d / "image.png", np.repeat(grey[z][..., None], 3, axis=2))
        grey_files.append(d / "image.png")
        if labels is not None:
            io.write_tiff(d / "labels.tif", labels[z].astype(np.uint32))
            label_files.append(d / "labels.tif")
        if masks is not None:
            io.write_png(d / "phase.png", masks[z].astype(np.uint8))
            map_files.append(d / "phase.png")
    return label_files, map_files, grey_files


def outputs_in(folder: Path) -> dict[str, Path]:
    return {"labels3d": folder / "labels3d.h5", "grains3d": folder / "grains3d.csv",
            "neighbours3d": folder / "neighbours3d.csv",
            "summary": folder / "summary.csv", "shifts": folder / "shifts.json",
            **{f"ortho_{v}": folder / f"ortho_{v}.png" for v in ("xy", "xz", "yz")}}


def test_link_step_aligns_a_drifting_stack(tmp_path):
    # small grains (a drift of a few px matters), slices thin enough for phase correlation
    truth = voronoi_volume((16, 200, 200), 100, seed=1, spacing=(0.5, 1.0, 1.0))
    grey = (grey_stack(truth, seed=1) * 255).astype(np.uint8)
    crops, origins = shifted_crops(truth, (128, 128), max_step=6, seed=1)
    truth = np.stack([truth[z][c] for z, c in enumerate(crops)])
    grey = np.stack([grey[z][c] for z, c in enumerate(crops)])
    labels2d = perturb_labels2d(truth, seed=11)
    files = write_slices(tmp_path / "in", grey, labels=labels2d)
    out = outputs_in(tmp_path / "out")
    cfg = LinkConfig(min_overlap=0.3, max_gap=1, gap_min_overlap=0.5, refine_boundaries="none")
    row = link_stack(*files, out, "drift", "grain", None, True, cfg)
    shifts = np.array(json.loads(out["shifts"].read_text())["shifts_dy_dx"])
    assert np.abs(shifts - origins).max() <= 1 and row["aligned"] and row["max_shift_px"] == np.abs(shifts).max()
    with h5py.File(out["labels3d"], "r") as f:
        aligned = f["labels"][()]
        assert "voxel_size_um" not in f["labels"].attrs
    plain_out = outputs_in(tmp_path / "plain")
    link_stack(*files, plain_out, "drift", "grain", None, False, cfg)
    with h5py.File(plain_out["labels3d"], "r") as f:
        plain = f["labels"][()]
    registered = apply_shifts(truth, shifts)
    assert ari_3d(registered, aligned) >= max(0.95, ari_3d(truth, plain) + 0.03)
    n_true = len(np.unique(registered[registered > 0]))
    assert abs(int(aligned.max()) - n_true) <= 0.1 * n_true < plain.max() - n_true  # unaligned, grains break up
    assert pd.read_csv(out["grains3d"])["volume_um3"].isna().all()


def test_link_step_phase_stack(tmp_path):
    zz, yy, xx = np.indices((10, 64, 64))
    masks = np.zeros((10, 64, 64), bool)
    for cz, cy, cx, r in [(4, 16, 16, 6), (5, 40, 44, 9), (1, 50, 12, 4)]:
        masks |= (zz - cz) ** 2 * 4 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    grey = np.where(masks, 60, 190).astype(np.uint8)
    out = outputs_in(tmp_path / "out")
    row = link_stack(*write_slices(tmp_path / "in", grey, masks=masks), out, "ph", "phase", [0.2, 0.1, 0.1], False,
                     LinkConfig())
    assert row["n_grains_3d"] == 3 and row["links"] is None
    assert row["phase_volume_fraction"] == pytest.approx(masks.mean())
    with h5py.File(out["labels3d"], "r") as f:
        labels3d = f["labels"][()]
    assert np.array_equal(labels3d > 0, masks)
    summary = pd.read_csv(out["summary"])
    assert summary.phase_volume_fraction.iloc[0] == pytest.approx(masks.mean(), abs=1e-5)
    assert len(pd.read_csv(out["grains3d"])) == 3


def test_link_step_rejects_slices_of_different_sizes(tmp_path):
    grey = np.full((3, 40, 40), 128, np.uint8)
    files = write_slices(tmp_path, grey, labels=np.ones((3, 40, 40), np.uint32))
    io.write_tiff(files[0][1], np.ones((40, 39), np.uint32))
    with pytest.raises(ValueError, match=r"slice_0001/labels.tif: slice is \(40, 39\)"):
        link_stack(*files, outputs_in(tmp_path / "out"), "s", "grain", None, False, LinkConfig())


def test_link_step_writes_3d_measurements(tmp_path):
    truth = voronoi_volume((24, 96, 96), 60, seed=4)  # thick enough for grains inside the stack
    grey = (grey_stack(truth, seed=4) * 255).astype(np.uint8)
    files = write_slices(tmp_path / "in", grey, labels=perturb_labels2d(truth, seed=4))
    out = outputs_in(tmp_path / "out")
    row = link_stack(*files, out, "m", "grain", VOXEL, False, LinkConfig())
    assert row["boundary_look"] == "dark" and row["refine_boundaries"] == "auto"
    assert list(pd.read_csv(out["summary"]).columns) == STACK_SUMMARY_COLUMNS
    table = pd.read_csv(out["grains3d"])
    pairs = pd.read_csv(out["neighbours3d"])
    assert (pairs.grain_a < pairs.grain_b).all() and table.n_neighbours.sum() == 2 * len(pairs)
    assert np.allclose(table.boundary_area_um2.sum(), 2 * pairs.shared_area_um2.sum())
    assert (table.ellipsoid_a >= table.ellipsoid_b).all() and (table.aspect_c_a <= 1).all()
    inner = table[~table.touches_boundary]
    assert 0 < row["n_grains_sized"] == len(inner) < len(table)
    assert row["mean_grain_volume_vox"] == pytest.approx(inner.volume_vox.mean())
    assert row["mean_grain_volume_um3"] == pytest.approx(inner.volume_um3.mean())
    assert abs(row["n_grains_3d"] - int(truth.max())) <= 0.1 * int(truth.max())
