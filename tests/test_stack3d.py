"""Tests of the serial-section chain: slice linking, alignment, 3D measurements, stack I/O."""

from __future__ import annotations

import os

import cv2
import h5py
import numpy as np
import pytest
import tifffile
from sklearn.metrics import adjusted_rand_score
from synthetic3d import StackLook, grey_stack, perturb_labels2d, render_stack, shifted_crops, voronoi_volume

from matsam.config import LinkConfig
from matsam.volumes.stack3d import (
    apply_shifts,
    estimate_shifts,
    grain_table_3d,
    link_slices,
    orthogonal_views,
    stack_summary,
)
from matsam.volumes.stackio import export_slices, read_stack, write_labels_h5


def ari_3d(true: np.ndarray, pred: np.ndarray) -> float:
    """Adjusted Rand index over the voxels labelled in both volumes."""
    both = (true > 0) & (pred > 0)
    return adjusted_rand_score(true[both], pred[both])


# --- linking -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linking_perturbed_ground_truth(seed):
    truth = voronoi_volume(seed=seed)
    labels2d = perturb_labels2d(truth, seed=100 + seed)
    labels, stats = link_slices(labels2d, LinkConfig())
    assert labels.dtype == np.uint32 and labels.shape == truth.shape
    assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, stats.n_grains + 1))
    assert np.array_equal(labels == 0, labels2d == 0)
    assert ari_3d(truth, labels) >= 0.98
    assert stats.links == sum(len(np.unique(s[s > 0])) for s in labels2d) - stats.n_grains


def test_linking_accepts_a_list_of_slices():
    labels2d = perturb_labels2d(voronoi_volume(), seed=3)
    assert np.array_equal(link_slices(list(labels2d))[0], link_slices(labels2d)[0])


def _relabel(slices: list[np.ndarray], seed: int) -> np.ndarray:
    """Give every slice its own random ids, as a 2D segmenter would."""
    rng = np.random.default_rng(seed)
    out = []
    for s in slices:
        lut = np.r_[0, rng.choice(10**6, int(s.max()), replace=False) + 1].astype(np.uint32)
        out.append(lut[s])
    return np.stack(out)


def test_grain_appearing_mid_stack_is_a_start_and_an_end():
    slices = []
    for z in range(6):
        s = np.zeros((20, 20), np.uint32)
        s[:, :10], s[:, 10:] = 1, 2
        if z in (2, 3):
            s[7:13, 12:18] = 3  # a small grain inside grain 2, on slices 2-3 only
        slices.append(s)
    labels, stats = link_slices(_relabel(slices, 0), LinkConfig())
    assert (stats.n_grains, stats.starts, stats.ends, stats.links) == (3, 1, 1, 11)
    assert (stats.splits, stats.merges) == (0, 0)
    small = labels[2, 10, 15]
    assert labels[3, 10, 15] == small and small not in (labels[0, 0, 0], labels[0, 0, 15])


def test_split_and_merge_are_counted_and_best_piece_continues():
    whole = np.zeros((20, 20), np.uint32)
    whole[:, :] = 1
    split = np.zeros((20, 20), np.uint32)
    split[:, :11], split[:, 12:] = 1, 2  # 11-column and 8-column pieces
    labels, stats = link_slices(_relabel([whole, split, whole], 1), LinkConfig(max_gap=0))
    assert (stats.splits, stats.merges) == (1, 1)
    assert (stats.n_grains, stats.starts, stats.ends) == (2, 1, 1)
    grain = labels[0, 0, 0]
    assert labels[1, 0, 0] == grain and labels[1, 0, 15] != grain and labels[2, 0, 15] == grain


def test_gap_bridges_a_merge_without_swapping_identities():
    """Slices 0-1: grains A (left) and B (right); slice 2: segmenter fuses them, B wins the
    fused region; slice 3: A and B again, B now narrower than A, so the fused region overlaps
    A more: linking consecutive slices only would hand B's id to A."""
    a_b = np.zeros((20, 20), np.uint32)
    a_b[:, :8], a_b[:, 9:] = 1, 2
    fused = np.ones((20, 20), np.uint32)
    b_narrow = np.zeros((20, 20), np.uint32)
    b_narrow[:, :11], b_narrow[:, 12:] = 1, 2
    slices = _relabel([a_b, a_b, fused, b_narrow], 2)
    labels, stats = link_slices(slices, LinkConfig(max_gap=1))
    assert labels[3, 0, 0] == labels[0, 0, 0] and labels[3, 0, 19] == labels[0, 0, 19]
    assert (stats.n_grains, stats.gap_links, stats.merges, stats.splits) == (2, 1, 1, 1)
    no_gap, _ = link_slices(slices, LinkConfig(max_gap=0))
    assert no_gap[3, 0, 0] == no_gap[0, 0, 19]  # A took B's id


# --- alignment -----------------------------------------------------------------------------


def _drifting_stack(spacing, n_grains, seed):
    truth = voronoi_volume((16, 200, 200), n_grains, seed=seed, spacing=spacing)
    grey = grey_stack(truth, seed=seed)
    crops, origins = shifted_crops(truth, (128, 128), max_step=6, seed=seed)
    return (
        np.stack([truth[z][c] for z, c in enumerate(crops)]),
        np.stack([grey[z][c] for z, c in enumerate(crops)]),
        origins,
    )


def test_estimate_shifts_recovers_known_translations():
    # slices thin relative to grains (as in FIB-SEM), so the structure barely changes
    _, grey, origins = _drifting_stack((0.25, 1.0, 1.0), 20, seed=0)
    shifts = estimate_shifts(grey)
    assert shifts.shape == (16, 2) and shifts.dtype == np.int64
    assert np.abs(shifts - origins).max() <= 1
    colour = np.repeat(grey[..., None], 3, axis=-1)
    assert np.array_equal(estimate_shifts(colour), shifts)
    assert np.array_equal(apply_shifts(colour, shifts)[..., 1], apply_shifts(grey, shifts))


def test_registration_follows_the_drift_not_the_inclined_boundaries():
    """Thick sections: between slices the inclined boundaries move sideways, each its own way,
    and phase correlation takes their average for drift; the flow refinement errs less."""
    errors = {True: [], False: []}
    for seed in range(3):
        look = StackLook("drift", shape=(12, 192, 192), drift=2, gradient=0.2, seed=300 + seed)
        _, grey, origins = render_stack(look)
        for refine in errors:
            errors[refine].append(np.abs(estimate_shifts(grey, refine=refine) - origins).mean())
    print(f"\nmean registration error, px: phase correlation {np.mean(errors[False]):.2f}, "
          f"refined {np.mean(errors[True]):.2f}")
    assert np.mean(errors[True]) < 0.7 * np.mean(errors[False])


def test_a_blank_slice_does_not_move_the_stack():
    """A black frame (a failed acquisition) has no correlation peak, where cv2 reports half a
    frame: it keeps the shift before it, and the slices after it still register."""
    _, grey, origins = _drifting_stack((0.25, 1.0, 1.0), 20, seed=0)
    blank = grey.astype(np.float32).copy()
    blank[5] = 0
    shifts = estimate_shifts(blank)
    keep = np.arange(len(grey)) != 5
    assert np.abs(shifts[keep] - origins[keep]).max() <= 1
    assert np.array_equal(shifts[5], shifts[4])
    assert np.array_equal(estimate_shifts(np.zeros((3, 40, 40), np.float32)), np.zeros((3, 2), np.int64))


def test_apply_shifts_moves_content_and_fills():
    volume = np.arange(2 * 4 * 5).reshape(2, 4, 5) + 1
    out = apply_shifts(volume, np.array([[0, 0], [1, -2]]), fill=-1)
    assert np.array_equal(out[0], volume[0])
    assert np.array_equal(out[1, 1:, :3], volume[1, :3, 2:])
    assert (out[1, 0] == -1).all() and (out[1, :, 3:] == -1).all()


@pytest.mark.parametrize("use_grey", [True, False])
def test_alignment_improves_linking(use_grey):
    truth, grey, _ = _drifting_stack((1.0, 1.0, 1.0), 80, seed=1)
    labels2d = perturb_labels2d(truth, seed=7)
    plain, _ = link_slices(labels2d, LinkConfig())
    aligned, stats = link_slices(labels2d, LinkConfig(), grey=grey if use_grey else None, align=True)
    assert ari_3d(apply_shifts(truth, stats.shifts), aligned) > ari_3d(truth, plain) + 0.01


# --- measurements --------------------------------------------------------------------------


def _two_grain_volume() -> np.ndarray:
    labels = np.zeros((4, 10, 12), np.uint32)
    labels[1:3, 2:6, 3:7] = 1  # interior 2x4x4 box
    labels[:, 7:, :] = 2  # slab along the y = 9 face
    labels[0, 7:, :] = 0  # ...that skips slice 0
    return labels


def test_grain_table_3d():
    labels = _two_grain_volume()
    table = grain_table_3d(labels, voxel_size_um=(0.5, 0.1, 0.1)).set_index("label")
    box = table.loc[1]
    assert box.volume_vox == 32 and box.volume_um3 == pytest.approx(32 * 0.005)
    assert box.equivalent_sphere_diameter_vox == pytest.approx((6 * 32 / np.pi) ** (1 / 3))
    assert box.equivalent_sphere_diameter_um == pytest.approx((6 * 0.16 / np.pi) ** (1 / 3))
    assert (box.centroid_z, box.centroid_y, box.centroid_x) == (1.5, 3.5, 4.5)
    assert tuple(box[["bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1"]]) == (
        1,
        2,
        3,
        3,
        6,
        7,
    )
    assert box.n_slices == 2 and not box.touches_boundary
    assert table.loc[2].n_slices == 3 and table.loc[2].touches_boundary
    assert grain_table_3d(labels, None)["volume_um3"].isna().all()


def test_stack_summary():
    labels = _two_grain_volume()
    phase = labels == 2
    s = stack_summary(labels, (0.5, 0.1, 0.1), phase)
    assert s["n_grains_3d"] == 2
    assert s["mean_grain_volume_vox"] == (32 + 3 * 36) / 2
    assert s["mean_grain_volume_um3"] == pytest.approx(70 * 0.005)
    assert s["phase_volume_fraction"] == pytest.approx(108 / labels.size)
    assert stack_summary(labels)["mean_grain_volume_um3"] is None


def test_orthogonal_views():
    labels = _two_grain_volume()
    grey = np.random.default_rng(0).random(labels.shape)
    views = orthogonal_views(labels, grey, voxel_size_um=(0.5, 0.1, 0.1))
    assert views["xy"].shape == (10, 12, 3) and views["xz"].shape == (20, 12, 3)
    assert views["yz"].shape == (20, 10, 3)
    assert all(v.dtype == np.uint8 for v in views.values())
    plain = orthogonal_views(labels)
    assert plain["xz"].shape == (4, 12, 3)
    # the same grain has the same colour in every view, background is black
    assert np.array_equal(plain["xy"][8, 0], plain["yz"][2, 8]) and not plain["xy"][0, 0].any()


# --- stack I/O -----------------------------------------------------------------------------


@pytest.fixture()
def grey_u16() -> np.ndarray:
    grey = grey_stack(voronoi_volume((12, 48, 40), 10, seed=4), seed=4)
    return (grey * 60000).astype(np.uint16)


def _png_folder(stack: np.ndarray, folder) -> None:
    folder.mkdir()
    for z, image in enumerate(stack):  # slice1 ... slice12: needs natural sort
        cv2.imwrite(str(folder / f"slice{z + 1}.png"), image)


def test_read_stack_same_from_tiff_png_folder_and_hdf5(tmp_path, grey_u16):
    tifffile.imwrite(tmp_path / "stack.tif", grey_u16)
    _png_folder(grey_u16, tmp_path / "pngs")
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("scan/grey", data=grey_u16)
    for spec in (
        tmp_path / "stack.tif",
        tmp_path / "pngs",
        f"{tmp_path / 'stack.h5'}:/scan/grey",
        f"{tmp_path / 'stack.h5'}",
    ):
        stack = read_stack(spec)
        assert stack.dtype == np.uint16 and np.array_equal(stack, grey_u16), spec


def test_read_stack_colour_tiff_and_single_page(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (3, 8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert np.array_equal(read_stack(tmp_path / "rgb.tif"), rgb)
    tifffile.imwrite(tmp_path / "one.tif", rgb[0, ..., 0])
    assert read_stack(tmp_path / "one.tif").shape == (1, 8, 9)


def test_read_stack_wrong_slice_size_names_the_slice(tmp_path, grey_u16):
    _png_folder(grey_u16, tmp_path / "pngs")
    cv2.imwrite(str(tmp_path / "pngs" / "slice7.png"), grey_u16[6, :-1])
    with pytest.raises(ValueError, match=r"slice7\.png.*\(47, 40\).*\(48, 40\)"):
        read_stack(tmp_path / "pngs")


def test_read_stack_tiff_written_page_by_page(tmp_path, grey_u16):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for image in grey_u16:
            tif.write(image)
    assert np.array_equal(read_stack(tmp_path / "pages.tif"), grey_u16)
    with tifffile.TiffWriter(tmp_path / "bad.tif") as tif:
        for z, image in enumerate(grey_u16):
            tif.write(image[:, :-2] if z == 2 else image)
    with pytest.raises(ValueError, match=r"page 2 has shape \(48, 38\)"):
        read_stack(tmp_path / "bad.tif")


def test_read_stack_missing_inputs_are_named(tmp_path, grey_u16):
    with pytest.raises(FileNotFoundError, match="nothere.tif"):
        read_stack(tmp_path / "nothere.tif")
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        read_stack(f"{tmp_path / 'nothere.h5'}:/x")
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["grey"] = grey_u16
    with pytest.raises(KeyError, match="/labels"):
        read_stack(f"{tmp_path / 's.h5'}:/labels")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        read_stack(tmp_path / "empty")


def test_write_labels_h5_round_trip(tmp_path):
    labels = voronoi_volume((6, 40, 50), 8, seed=5)
    path = tmp_path / "out" / "labels.h5"
    write_labels_h5(path, labels, (0.05, 0.01, 0.01))
    with h5py.File(path, "r") as f:
        ds = f["labels"]
        assert ds.dtype == np.uint32 and ds.compression == "gzip" and ds.chunks is not None
        assert np.array_equal(ds[()], labels)
        for attr in ("voxel_size_um", "element_size_um"):
            assert np.allclose(ds.attrs[attr], (0.05, 0.01, 0.01))
    assert [p.name for p in path.parent.iterdir()] == ["labels.h5"]  # no temporary left
    assert np.array_equal(read_stack(f"{path}:/labels"), labels)


def test_export_slices_leaves_unchanged_slices_alone(tmp_path, grey_u16):
    tifffile.imwrite(tmp_path / "stack.tif", grey_u16)
    out = tmp_path / "slices"
    paths = export_slices(tmp_path / "stack.tif", out)
    assert [p.name for p in paths] == [f"slice_{z:04d}.tif" for z in range(12)]
    assert all(np.array_equal(tifffile.imread(p), grey_u16[z]) for z, p in enumerate(paths))
    for p in paths:  # backdate, so that any rewrite would show in the mtime
        os.utime(p, ns=(10**18, 10**18))
    changed = grey_u16[:10].copy()
    changed[3] += 1
    tifffile.imwrite(tmp_path / "stack.tif", changed)
    paths = export_slices(tmp_path / "stack.tif", out)
    rewritten = [p.name for p in paths if p.stat().st_mtime_ns != 10**18]
    assert rewritten == ["slice_0003.tif"]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in paths]  # stale 10, 11 gone
