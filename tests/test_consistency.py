"""Stacks that hold together: boundary look, line splits, grey-level cuts, fragments, 3D measures.

The stacks come from tests/synthetic3d.py's family of looks, shrunk; the 2D labels are the true
ones, perturbed the way a 2D segmenter errs (fused neighbours, cut grains), so every test knows
the answer. The full chain with MobileSAM runs in benchmarks/stack_accuracy.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from skimage.segmentation import expand_labels, find_boundaries
from sklearn.metrics import adjusted_rand_score
from synthetic3d import FAMILY, StackLook, grey_stack, perturb_labels2d, render_stack, voronoi_volume

from matsam.config import LinkConfig
from matsam.volumes.consistency import (
    absorb_fragments,
    boundary_look,
    cut_at_waists,
    cut_grey_steps,
    link_consistent,
    split_on_lines,
)
from matsam.volumes.measure3d import ellipsoids, neighbour_counts, neighbour_pairs, size_statistics
from matsam.volumes.stack3d import apply_shifts, link_slices

LOOKS = {look.name: look for look in FAMILY}


def small(name: str, slices: int = 8, size: int = 96) -> StackLook:
    return replace(LOOKS[name], shape=(slices, size, size))


def ari(truth: np.ndarray, pred: np.ndarray) -> float:
    keep = (truth > 0) & (pred > 0)
    return adjusted_rand_score(truth[keep], pred[keep])


def segmenter_like(truth: np.ndarray, seed: int, p_merge: float = 0.0, p_split: float = 0.0) -> np.ndarray:
    """Per-slice labels covering every pixel, with fused neighbours / cut grains."""
    labels = perturb_labels2d(truth, seed=seed, p_drop=0.0, p_merge=p_merge, p_split=p_split)
    return np.stack([expand_labels(s, 3) for s in labels.astype(np.int64)])


@pytest.mark.parametrize("name, look", [("dark2-base", "dark"), ("dark1-small", "dark"),
                                        ("bright3-noisy", "bright"), ("bright2-gradient", "bright"),
                                        ("contrast-only", "none")])
def test_boundary_look_is_read_from_the_images(name, look):
    truth, grey, _ = render_stack(small(name))
    evidence = boundary_look(segmenter_like(truth, seed=1), grey)
    assert evidence.look == look, evidence
    assert evidence.line_ratio >= 2.0 if look != "none" else evidence.line_ratio < 2.0


def test_split_on_lines_separates_fused_grains():
    truth, grey, _ = render_stack(small("dark2-base", slices=6, size=128))
    fused = segmenter_like(truth, seed=2, p_merge=0.3)
    evidence = boundary_look(segmenter_like(truth, seed=1), grey)
    split, n = split_on_lines(fused, grey, evidence)
    before = np.mean([ari(t, f) for t, f in zip(truth, fused)])  # 2D ARI per slice
    after = np.mean([ari(t, f) for t, f in zip(truth, split)])
    print(f"\n{n} splits, 2D ARI {before:.3f} -> {after:.3f}")
    assert n >= 5 and before < 0.8 and after >= 0.95
    assert all(abs(len(np.unique(s)) - len(np.unique(t))) <= 1 for s, t in zip(split, truth))


def test_a_region_that_spills_over_a_line_loses_the_spill():
    """A 2D region holding a grain and, past the line, a sliver of its neighbour (3 % of the
    region, as when a mask leaks across a boundary): the sliver becomes a region of its own.
    The same region without the line stays whole."""
    rng = np.random.default_rng(3)
    grey = np.full((2, 60, 90), 150.0) + rng.normal(0, 3, (2, 60, 90))
    grey[:, :, 80] = 60  # the boundary line, 1 px
    two = np.where(np.arange(90) < 80, 1, 2)[None, None].repeat(60, 1).repeat(2, 0)
    evidence = boundary_look(two, grey)
    assert evidence.look == "dark"
    spilled = np.ones((2, 60, 90), np.int64)
    spilled[:, :, 84:] = 2  # the neighbour, except the 3 columns the region took (180 px)
    split, n = split_on_lines(spilled, grey, evidence)
    assert n == 2
    for z in range(2):
        assert len(np.unique(split[z, :, :79])) == 1 and len(np.unique(split[z, :, 81:84])) == 1
        assert split[z, 0, 0] != split[z, 0, 82] and split[z, 0, 82] != split[z, 0, 89]
    whole = grey.copy()
    whole[:, :, 80] = whole[:, :, 78]
    same, n = split_on_lines(spilled, whole, evidence)
    assert n == 0 and np.array_equal(same, spilled)


def test_noise_ridges_in_whole_grains_split_nothing():
    """Correct regions of a noisy stack (noise half the line's depth): no border through a
    grain's noise is taken for a line along most of its length."""
    truth = voronoi_volume((16, 200, 200), 100, seed=1, spacing=(0.5, 1.0, 1.0))
    grey = (grey_stack(truth, seed=1) * 255).astype(np.uint8)[:, :128, :128]
    truth = truth[:, :128, :128]
    labels = perturb_labels2d(truth, seed=11).astype(np.int64)
    split, _ = split_on_lines(labels, grey, boundary_look(labels, grey))
    assert np.mean([ari(t, s) for t, s in zip(truth, split)]) >= 0.99  # a mean line response: 0.94


def test_fused_grains_of_close_grey_are_split_but_a_shaded_grain_is_not():
    """Contrast-only grains: two fused round grains a fifth of the stack's typical grain step
    apart (below `Evidence.is_step`, which compares single grains along z, and too faint for a
    line) are split; the same region shaded by as much from side to side, with no step, is not."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:60, :100]
    left, right = np.hypot(yy - 30, xx - 32) <= 22, np.hypot(yy - 30, xx - 68) <= 22
    region = np.where(left | right, 1, 0)[None].repeat(2, 0)
    truth = np.where(region > 0, np.where(xx < 50, 1, 2), 0)
    noise = rng.normal(0, 3, region.shape)
    typical = np.where(truth == 1, 100.0, 160.0) + noise  # the stack's grains, 60 apart
    evidence = boundary_look(truth, np.where(region > 0, typical, 200.0))
    assert evidence.look == "none" and not evidence.is_step(12.0)
    grey = np.where(region > 0, np.where(truth == 1, 120.0, 132.0), 200.0) + noise
    split, n = split_on_lines(region, grey, evidence)
    assert n == 2 and all(ari(t, s) > 0.95 for t, s in zip(truth, split))
    shaded = np.where(region > 0, 110.0 + 24.0 * xx / 100, 200.0) + noise  # 12 levels between the centres
    whole, n = split_on_lines(region, shaded, evidence)
    assert n == 0 and np.array_equal(whole, region)


def test_split_on_lines_leaves_whole_grains_alone():
    truth, grey, _ = render_stack(small("dark2-base", slices=4))
    labels = segmenter_like(truth, seed=1)
    split, n = split_on_lines(labels, grey, boundary_look(labels, grey))
    assert n == 0 and np.array_equal(split, labels)


def test_grey_step_cuts_two_grains_linked_along_z():
    grey = np.full((6, 40, 40), 100, np.uint8)
    grey[3:] = 160  # another grain below, same footprint
    grey += np.random.default_rng(0).integers(0, 6, grey.shape, dtype=np.uint8)
    labels2d = np.ones((6, 40, 40), np.int64)
    labels2d[:, :, 20:] = 2
    grey[:, :, 20:] = 60
    linked, _ = link_slices(labels2d, LinkConfig())
    assert linked.max() == 2
    evidence = boundary_look(labels2d, grey)
    cut, n = cut_grey_steps(linked, grey, evidence)
    assert n == 1 and len(np.unique(cut)) == 3
    assert len(np.unique(cut[:3, :, :20])) == 1 and len(np.unique(cut[3:, :, :20])) == 1
    assert cut[0, 0, 0] != cut[5, 0, 0] and len(np.unique(cut[:, :, 20:])) == 1


def test_fragments_join_their_grain_but_not_a_different_one():
    truth, grey, _ = render_stack(small("dark2-base", slices=10))
    labels = segmenter_like(truth, seed=1).astype(np.int64)
    linked, _ = link_slices(labels, LinkConfig())
    evidence = boundary_look(labels, grey)
    # cut a piece off one grain on two slices: a fragment with the grain's grey and no line
    grain = np.bincount(linked[4].ravel()).argmax()
    ys, xs = np.nonzero(linked[4] == grain)
    piece = (linked[4:6] == grain) & (np.arange(linked.shape[2])[None, None] < np.median(xs))
    broken = linked.copy()
    broken[4:6][piece] = broken.max() + 1
    joined, joins = absorb_fragments(broken, grey, evidence)
    assert joins >= 1
    assert len(np.unique(joined[4:6][piece])) == 1 and joined[4][piece[0]][0] == joined[4, ys[0], xs[0]]
    assert ari(truth, joined) > ari(truth, broken)
    # true grains keep their own ids: none is joined to a neighbour
    kept, _ = absorb_fragments(linked, grey, evidence)
    assert all(len(np.unique(kept[truth == t])) >= 1 for t in np.unique(truth))
    assert ari(truth, kept) >= ari(truth, linked) - 0.005


def tip_to_tip(offset: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two cones of the same grey in a matrix grain: one narrows to a tip on slice 5, the next
    starts on slice 6 from a tip `offset` px beside it and widens. Returns (truth, grey, 2D
    labels); the 2D labels are the true sections, ids changing per slice."""
    yy, xx = np.mgrid[:64, :64]
    truth = np.ones((13, 64, 64), np.int64)
    for z in range(13):
        upper = z <= 5
        radius = 14 - 2 * z if upper else 3 + 2 * (z - 6)
        cx = 30 if upper else 30 + offset
        truth[z][(yy - 32) ** 2 + (xx - cx) ** 2 <= radius**2] = 2 if upper else 3
    grey = np.where(truth == 1, 160, 100).astype(np.uint8)
    for z in range(13):
        grey[z][find_boundaries(truth[z], mode="inner")] = 40
    return truth, grey, truth * 10 + np.arange(13)[:, None, None]


def test_grains_linked_tip_to_tip_are_cut_at_the_waist():
    truth, grey, labels = tip_to_tip()
    linked, _ = link_slices(labels, LinkConfig())
    assert len(np.unique(linked[truth > 1])) == 1  # overlap linking chains the two cones
    cut, n = cut_at_waists(linked)
    assert n == 1 and ari(truth, cut) == 1.0
    assert cut_at_waists(truth)[1] == 0  # convex grains have no waist
    consistent, _, counts = link_consistent(labels, grey, LinkConfig(), boundary_look(labels, grey))
    assert counts["waist_cuts"] == 1 and ari(truth, consistent) == 1.0


def test_a_slice_cut_into_pieces_is_no_waist():
    """A grain the 2D segmenter cuts in three on one slice: the piece linked on is a third of the
    section, a waist for `cut_at_waists` alone; absorbing the other pieces first heals it."""
    truth, grey, _ = render_stack(small("dark2-base", slices=12))
    labels = segmenter_like(truth, seed=1).astype(np.int64)
    grain = np.bincount(truth[6].ravel()).argmax()
    xs = np.nonzero(truth[6] == grain)[1]
    thirds = np.digitize(np.arange(truth.shape[2]), np.percentile(xs, [33, 67]))
    piece = (labels[6] > 0) & (truth[6] == grain)
    labels[6][piece] = (labels.max() + 1 + thirds[None].repeat(truth.shape[1], 0))[piece]
    assert cut_at_waists(link_slices(labels, LinkConfig())[0])[1] >= 1
    whole = segmenter_like(truth, seed=1)
    evidence = boundary_look(whole, grey)
    reference, _, _ = link_consistent(whole, grey, LinkConfig(), evidence)
    linked, _, counts = link_consistent(labels, grey, LinkConfig(), evidence)
    assert counts["waist_cuts"] == 0 and linked.max() == reference.max()
    assert ari(truth, linked) >= ari(truth, reference) - 0.002


def test_a_grain_leaving_a_drifting_view_is_no_waist():
    truth, _, origins = render_stack(LOOKS["dark2-drift-align"])
    view = apply_shifts(np.ones(truth.shape, bool), origins).all(axis=0)
    assert cut_at_waists(truth)[1] >= 1  # sections clipped by the moving field of view
    assert cut_at_waists(truth, view)[1] == 0


@pytest.mark.parametrize("name", ["dark2-base", "bright2-gradient", "contrast-only"])
def test_consistent_linking_recovers_the_grains(name):
    """Fused neighbours and cut grains that differ from slice to slice (the issue's failure)."""
    truth, grey, _ = render_stack(small(name, slices=12))
    labels = segmenter_like(truth, seed=5, p_merge=0.05, p_split=0.05)
    evidence = boundary_look(labels, grey)
    plain, _ = link_slices(labels, LinkConfig())
    linked, stats, counts = link_consistent(labels, grey, LinkConfig(), evidence)
    n_true = len(np.unique(truth))
    print(f"\n{name}: {evidence.look}, plain ARI {ari(truth, plain):.3f} ({plain.max()} grains), "
          f"consistent {ari(truth, linked):.3f} ({linked.max()}), true {n_true}, {counts}")
    assert ari(truth, linked) >= max(0.9, ari(truth, plain))
    assert abs(int(linked.max()) - n_true) <= 3 < abs(int(plain.max()) - n_true) / 3
    assert stats.n_grains == linked.max()
    off, _, _ = link_consistent(labels, grey, LinkConfig(consistent=False), evidence)
    assert np.array_equal(off, plain)


# --- 3D measurements -----------------------------------------------------------------------


def test_neighbours_and_shared_area():
    labels = np.zeros((4, 5, 6), np.uint32)
    labels[:, :, :3], labels[:, :, 3:] = 1, 2
    labels[3] = 3  # a lid over both
    pairs = neighbour_pairs(labels, (2.0, 1.0, 0.5))
    got = {(a, b): (f, area) for a, b, f, area in pairs.itertuples(index=False)}
    assert got[(1, 2)] == (3 * 5, 3 * 5 * 2.0 * 1.0)  # x faces: z * y of them, area vz * vy
    assert got[(1, 3)] == (5 * 3, 15 * 1.0 * 0.5) and got[(2, 3)] == (15, 7.5)
    counts = neighbour_counts(pairs, pd.Series([1, 2, 3, 4]))
    assert counts.n_neighbours.tolist() == [2, 2, 2, 0]
    assert counts.boundary_area_um2.iloc[2] == 15.0
    assert neighbour_pairs(labels).shared_area_um2.isna().all()


def test_best_fit_ellipsoid_axes():
    zz, yy, xx = np.indices((30, 50, 70)) - np.array([15, 25, 35])[:, None, None, None]
    inside = (xx / 30.0) ** 2 + (yy / 16.0) ** 2 + (zz / 8.0) ** 2 <= 1
    table = ellipsoids(inside.astype(np.uint32))
    axes = table[["ellipsoid_a", "ellipsoid_b", "ellipsoid_c"]].iloc[0].to_numpy()
    assert axes == pytest.approx([30, 16, 8], rel=0.03)
    assert table.aspect_b_a.iloc[0] == pytest.approx(16 / 30, rel=0.03)
    # anisotropic voxels: the same grain sampled every 2 um along z
    coarse = ellipsoids(inside[::2].astype(np.uint32), (2.0, 1.0, 1.0))
    assert coarse.ellipsoid_c.iloc[0] == pytest.approx(8, rel=0.08)


def test_size_statistics_leave_out_face_grains():
    table = pd.DataFrame({"volume_vox": [10, 20, 1000], "equivalent_sphere_diameter_um": [1.0, 2.0, 9.0],
                          "touches_boundary": [False, False, True]})
    inner = size_statistics(table)
    assert inner["n_grains_sized"] == 2 and inner["mean_grain_volume_vox"] == 15
    assert inner["mean_equivalent_sphere_diameter_um"] == 1.5
    assert size_statistics(table, include_face_grains=True)["mean_grain_volume_vox"] == pytest.approx(343.33, abs=0.01)
