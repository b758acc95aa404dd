import cv2
import numpy as np
import pytest
from synthetic import few_discs, three_phase_micrograph, voronoi_micrograph

from matsam import io
from matsam.config import ConfigError, MergeConfig, method_config
from matsam.measurement.metrics import adjusted_rand_index, regions_from_boundaries
from matsam.segmentation.crops import Crop
from matsam.segmentation.masks import CropMasks
from matsam.segmentation.merge import (
    Candidate,
    boundary_map,
    cross_crop_nms,
    fill_gaps,
    intensity_classes,
    matrix_class,
    merge_grains,
    merge_multiphase,
    merge_phase,
    paint,
    phase_fraction,
    phase_side,
    touches_inner_edge,
)
from matsam.segmentation.prompts import blurred
from matsam.workflow import steps


def square(x0, y0, size, crop_area=100 * 100, score=0.9):
    return Candidate(np.ones((size, size), bool), x0, y0, crop_area, score)


def test_nms_prefers_the_smaller_crop_for_the_same_object():
    full, small = square(10, 10, 20, crop_area=10000), square(10, 10, 20, crop_area=2500)
    kept = cross_crop_nms([full, small], 0.7)
    assert kept == [small]


def test_nms_keeps_masks_below_the_overlap_threshold():
    a, b = square(0, 0, 20), square(10, 0, 20)  # box IoU = 200 / 600 = 1/3
    assert len(cross_crop_nms([a, b], 0.7)) == 2
    assert len(cross_crop_nms([a, b], 0.3)) == 1


def test_nms_breaks_ties_within_a_crop_by_score():
    low, high = square(5, 5, 10, score=0.8), square(5, 5, 10, score=0.95)
    assert cross_crop_nms([low, high], 0.7) == [high]


def test_masks_cut_by_an_inner_crop_edge_are_recognised():
    crop = Crop(1, 1, 50, 0, 150, 100)  # inner edges: left (x0=50) and right (x1=150 < 200)
    assert touches_inner_edge(np.array([0, 30, 20, 50]), crop, 100, 200, 2)
    assert touches_inner_edge(np.array([70, 30, 100, 50]), crop, 100, 200, 2)
    assert not touches_inner_edge(np.array([30, 0, 60, 20]), crop, 100, 200, 2)  # top = image edge


def test_paint_puts_small_masks_over_large_ones_without_overlap():
    big, small = square(0, 0, 40), square(10, 10, 10)
    labels = paint([small, big], 50, 50)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels[10:20, 10:20] == labels[15, 15]).all() and labels[15, 15] != labels[0, 0]
    assert (labels[0:40, 0:40] > 0).all() and (labels[40:, :] == 0).all()


def test_grain_merge_tiles_the_image_and_boundaries_reproduce_the_grains():
    image, _ = voronoi_micrograph(seed=2, size=96, n_grains=8)
    gray = image[..., 0]
    cands = [square(0, 0, 40), square(50, 0, 40), square(0, 50, 40), square(60, 60, 3)]
    labels, boundaries = merge_grains(cands, gray, MergeConfig(min_object_area=16, gap_grain_radius=3,
                                                               gap_grains="whole"))
    assert labels.dtype == np.uint32 and (labels > 0).all()
    assert labels[80, 80] not in (labels[5, 5], labels[5, 60], labels[60, 5])  # the wide gap is a grain
    regions = regions_from_boundaries(boundaries.astype(bool))
    assert regions.max() == labels.max()
    for region in range(1, regions.max() + 1):
        assert len(np.unique(labels[regions == region])) == 1


def test_watershed_grains_split_the_area_sam_left_unlabelled():
    image, boundary = voronoi_micrograph(seed=3, size=128, n_grains=12)
    truth = regions_from_boundaries(boundary)
    labels = np.zeros(truth.shape, np.int32)
    labels[truth == truth[64, 64]] = 1  # SAM found one grain
    filled = fill_gaps(labels, image, MergeConfig(min_object_area=16))
    assert (filled[labels == 1] == 1).all() and (filled > 0).all()
    gap = (labels == 0) & (truth > 0)
    assert len(np.unique(filled[gap])) >= 8
    whole = labels.copy()
    whole[gap] = 2  # the whole gap as one grain
    inside = truth > 0
    assert adjusted_rand_index(truth, filled, inside) > 0.9 > adjusted_rand_index(truth, whole, inside)


def test_merge_with_watershed_gap_grains_tiles_the_image():
    image, _ = voronoi_micrograph(seed=2, size=96, n_grains=8)
    labels, boundaries = merge_grains([square(0, 0, 40)], image, MergeConfig(min_object_area=16))
    assert (labels > 0).all() and labels.max() >= 6
    assert regions_from_boundaries(boundaries.astype(bool)).max() == labels.max()


def test_fill_gaps_gives_thin_gaps_to_neighbours():
    labels = np.zeros((20, 40), np.int32)
    labels[:, :19] = 1
    labels[:, 21:] = 2
    filled = fill_gaps(labels, np.full((20, 40), 100, np.uint8), MergeConfig(gap_grain_radius=3))
    assert set(np.unique(filled)) == {1, 2}


def test_boundary_map_is_one_pixel_wide():
    labels = np.zeros((10, 10), np.int32)
    labels[:, 5:] = 1
    b = boundary_map(labels)
    assert b.sum() == 10 and b[:, 4].all()


def test_phase_merge_keeps_only_objects_on_the_phase_side():
    side = np.zeros((60, 60), bool)
    side[0:20, 0:20] = True
    dark, bright = square(0, 0, 20), square(30, 30, 20)
    labels, phase = merge_phase([dark, bright], side, MergeConfig(phase_min_fraction=0.5))
    assert phase[0:20, 0:20].all() and not phase[30:, 30:].any()
    assert labels.max() == 1


def shaded_particle_scene():
    """A dark 30 px particle in a bright matrix with only its core (36 %) past the threshold, as
    when the threshold cuts through the phase's grey, and a slightly darker patch of matrix."""
    smooth = np.full((80, 120), 200.0, np.float32)
    smooth[10:40, 10:40] = 115.0  # threshold 110: just on the matrix side
    smooth[16:34, 16:34] = 40.0
    smooth[50:70, 80:100] = 170.0  # darker than the matrix around it, still matrix-coloured
    side, depth = phase_side(smooth, 110.0, "dark")
    return side, depth, square(10, 10, 30), square(80, 50, 20)


def test_a_shaded_particle_with_matrix_around_it_is_phase():
    side, depth, particle, patch = shaded_particle_scene()
    assert phase_fraction(particle, side) < 0.5
    labels, phase = merge_phase([particle, patch], side, MergeConfig(), depth)
    assert phase[10:40, 10:40].all() and not phase[50:70, 80:100].any()
    assert labels[10:40, 10:40].min() == labels[10:40, 10:40].max() > 0  # one object: SAM's mask


def test_without_contrast_the_pixel_fraction_alone_decides():
    side, depth, particle, patch = shaded_particle_scene()
    _, phase = merge_phase([particle, patch], side, MergeConfig(phase_min_contrast=0), depth)
    assert 0 < phase[10:40, 10:40].mean() < 0.5  # only the missed region past the threshold
    _, phase = merge_phase([particle, patch], side, MergeConfig(), None)  # no depth: no contrast test
    assert phase[10:40, 10:40].mean() < 0.5


def test_phase_regions_no_mask_touched_are_kept():
    side = np.zeros((60, 60), bool)
    side[0:20, 0:20] = True  # found by SAM
    side[40:50, 40:50] = True  # missed by SAM
    side[30:32, 5:7] = True  # a tiny particle, missed: kept (missed_min_area 4 px)
    side[35, 35] = True  # one pixel: noise
    labels, phase = merge_phase([square(0, 0, 20)], side, MergeConfig(min_object_area=16))
    assert labels.max() == 3 and phase[40:50, 40:50].all() and phase[30:32, 5:7].all() and not phase[35, 35]
    labels, phase = merge_phase([square(0, 0, 20)], side, MergeConfig(min_object_area=16, missed_min_area=16))
    assert labels.max() == 2 and not phase[30:32, 5:7].any()
    off, _ = merge_phase([square(0, 0, 20)], side, MergeConfig(min_object_area=16, keep_missed_regions=False))
    assert off.max() == 1


def test_missed_regions_that_barely_cross_the_threshold_are_noise():
    side = np.zeros((40, 40), bool)
    side[5:10, 5:10] = side[25:30, 25:30] = True
    depth = np.full((40, 40), -1.0)
    depth[5:10, 5:10] = 1.1  # as dark as the phase: a particle SAM missed
    depth[25:30, 25:30] = 0.1  # just past the threshold: shading
    labels, phase = merge_phase([], side, MergeConfig(), depth)
    assert labels.max() == 1 and phase[5:10, 5:10].all() and not phase[25:30, 25:30].any()
    _, everything = merge_phase([], side, MergeConfig(missed_min_depth=0.0), depth)
    assert everything[25:30, 25:30].all()


def test_small_objects_are_trimmed_to_the_phase_side_and_large_ones_are_not():
    side = np.zeros((400, 400), bool)
    side[10:16, 10:16] = True  # a 6-px particle; SAM's mask below is 7 px wide
    side[100:300, 100:300] = True
    side[150:160, 150:160] = False  # a hole in the big object's side, inside SAM's mask
    crop = 256 * 256  # one low-res cell = 1 px: "small" = under 8 x 8 px
    small = Candidate(np.ones((7, 7), bool), 9, 9, crop, 0.9)
    big = Candidate(np.ones((200, 200), bool), 100, 100, crop, 0.9)
    labels, phase = merge_phase([small, big], side, MergeConfig(min_object_area=16))
    assert phase[10:16, 10:16].all() and phase[8:18, 8:18].sum() == 36
    assert phase[150:160, 150:160].all()  # the big object keeps SAM's outline
    _, untrimmed = merge_phase([small, big], side, MergeConfig(min_object_area=16, small_object_cells=0))
    assert untrimmed[8:18, 8:18].sum() == 49


# --- multi-phase ----------------------------------------------------------------------------


def disc(cx, cy, r, shape):
    """(H, W) bool disc."""
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, (cx, cy), r, 1, -1)
    return mask.astype(bool)


def candidate(mask, score=0.9):
    """A Candidate for a full-image bool mask, cropped to its box."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Candidate(mask[y0:y1, x0:x1], int(x0), int(y0), mask.size, score)


def test_config_n_phases_is_checked():
    assert method_config("phase", {"merge": {"n_phases": 3}}).merge.n_phases == 3
    assert method_config("phase").merge.n_phases == 2
    with pytest.raises(ConfigError, match=r"data\.merge: n_phases must be an integer >= 2.*got 1"):
        method_config("phase", {"merge": {"n_phases": 1}}, where="data")
    with pytest.raises(ConfigError, match="n_phases"):
        MergeConfig(n_phases=2.5)


def test_multiotsu_classes_and_matrix_by_largest_region():
    gray, truth, _ = three_phase_micrograph(seed=0)
    classes = intensity_classes(blurred(gray, 3), 3)  # 0 = darkest: dark discs, matrix, bright discs
    assert (classes == np.array([1, 0, 2])[truth]).mean() > 0.97
    assert matrix_class(classes, 3) == 1
    # A crowded bright class with more pixels than the matrix in total is still not the matrix:
    # the matrix is the one connected network.
    board = np.full((90, 90), 128, np.uint8)
    for y in range(3, 90, 10):
        for x in range(3, 90, 10):
            board[y : y + 8, x : x + 8] = 220  # 81 islands, 2-px matrix lines between them
    board[40:50, 40:50] = 30
    labels = intensity_classes(board, 3)
    areas = np.bincount(labels.ravel())
    assert areas[2] > 1.5 * areas[1]
    assert matrix_class(labels, 3) == 1


def three_phase_case(seed=0, missed=1):
    """The synthetic three-phase image with candidates for every disc but `missed` bright ones,
    plus two candidates lying on the matrix."""
    gray, truth, discs = three_phase_micrograph(seed)
    bright = [d for d in discs if d[3] == 2]
    left_out = bright[:missed]
    cands = [candidate(disc(cx, cy, r, gray.shape)) for cx, cy, r, cls in discs if (cx, cy, r, cls) not in left_out]
    on_matrix = [np.zeros(gray.shape, bool) for _ in range(2)]
    on_matrix[0][70:84, 30:50] = True
    on_matrix[1][68:90, 100:118] = True
    return gray, truth, discs, left_out, cands + [candidate(m) for m in on_matrix], on_matrix


def test_multiphase_merge_gives_each_disc_its_class():
    gray, truth, discs, left_out, cands, on_matrix = three_phase_case()
    labels, classes = merge_multiphase(cands, blurred(gray, 3), MergeConfig(n_phases=3))
    assert labels.dtype == np.uint32 and classes.dtype == np.uint8
    assert labels.max() == len(discs)  # 7 SAM discs + the missed one; no matrix object
    for m in on_matrix:
        assert not labels[m].any() and not classes[m].any()
    for cx, cy, r, cls in discs:
        inside = disc(cx, cy, r, gray.shape)
        if (cx, cy, r, cls) in left_out:
            # Found as a missed class-2 region of the multi-level Otsu split, not by SAM.
            found = classes == 2
            found &= labels == labels[cy, cx]
            assert (found & inside).sum() / (found | inside).sum() > 0.9
        else:
            assert (classes[inside] == cls).all()
            assert len(np.unique(labels[inside])) == 1
    assert ((classes > 0) == (labels > 0)).all()
    assert set(np.unique(classes)) == {0, 1, 2}
    # Dark discs are 1 and bright ones 2 wherever the truth has them.
    assert (classes[(truth == 0) & (labels == 0)] == 0).all()
    assert ((classes == truth) | (labels == 0) & (truth > 0)).mean() > 0.99


def test_multiphase_without_missed_regions_keeps_only_sam_objects():
    gray, _, discs, left_out, cands, _ = three_phase_case()
    labels, classes = merge_multiphase(cands, blurred(gray, 3), MergeConfig(n_phases=3, keep_missed_regions=False))
    assert labels.max() == len(discs) - len(left_out)
    cx, cy, r, _ = left_out[0]
    assert not classes[disc(cx, cy, r, gray.shape)].any()


def test_multiphase_class_ids_follow_intensity_whatever_the_matrix():
    # Bright matrix: the classes then are dark (1) and mid grey (2).
    gray, truth, discs = three_phase_micrograph(seed=1)
    remap = np.array([220.0, 40.0, 128.0])  # matrix 220, class-1 discs 40, class-2 discs 128
    rng = np.random.default_rng(1)
    gray = np.clip(remap[truth] + rng.normal(0, 6, truth.shape), 0, 255).astype(np.uint8)
    cands = [candidate(disc(cx, cy, r, gray.shape)) for cx, cy, r, _ in discs]
    labels, classes = merge_multiphase(cands, blurred(gray, 3), MergeConfig(n_phases=3))
    for cx, cy, r, cls in discs:
        assert (classes[disc(cx, cy, r, gray.shape)] == cls).all()


def test_two_phase_multiphase_equals_merge_phase():
    image, truth = few_discs(seed=4, size=128)
    smooth = blurred(image[..., 0], 3)
    n, regions = cv2.connectedComponents(truth, connectivity=8)
    cands = [candidate(regions == i) for i in range(1, n, 2)]  # every other disc: the rest is missed
    cands.append(candidate(np.pad(np.ones((10, 10), bool), ((0, 118), (0, 118)))))  # a matrix corner
    side = intensity_classes(smooth, 2) != matrix_class(intensity_classes(smooth, 2), 2)
    cfg = MergeConfig(n_phases=2)
    labels, mask = merge_phase(cands, side, cfg)
    multi_labels, multi_mask = merge_multiphase(cands, smooth, cfg)
    assert labels.max() == 4 and not labels[:10, :10].any()  # 2 SAM discs + 2 missed ones, no corner
    np.testing.assert_array_equal(multi_labels, labels)
    np.testing.assert_array_equal(multi_mask, mask)


def write_merge_inputs(tmp_path, gray, cands):
    """The files steps.merge_masks reads: image, one crop, prompts (binary threshold) and masks."""
    height, width = gray.shape
    io.write_png(tmp_path / "image.png", np.repeat(gray[..., None], 3, axis=2))
    cfg = method_config("phase")
    steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", cfg.crops)
    io.write_npz(tmp_path / "prompts.npz", threshold=np.float64(84.0), foreground=np.str_("dark"))
    full = []
    for c in cands:
        m = np.zeros((height, width), bool)
        x0, y0, x1, y1 = c.box
        m[y0:y1, x0:x1] = c.mask
        full.append(m)
    ys = [np.nonzero(m)[0] for m in full]
    xs = [np.nonzero(m)[1] for m in full]
    masks = CropMasks(
        np.stack([np.packbits(m.ravel()) for m in full]), (height, width),
        np.full(len(full), 0.9, np.float32), np.full(len(full), 0.95, np.float32),
        np.array([[x.min(), y.min(), x.max() + 1, y.max() + 1] for x, y in zip(xs, ys)], np.int32),
        np.array([m.sum() for m in full], np.int64), np.arange(len(full)),
    )
    io.write_npz(steps.mask_file(tmp_path / "masks", "img", 0), **masks.to_arrays())


@pytest.mark.parametrize("n_phases", [2, 3])
def test_merge_masks_dispatches_on_n_phases(tmp_path, n_phases):
    gray, truth, _, _, cands, _ = three_phase_case()
    write_merge_inputs(tmp_path, gray, cands)
    cfg = method_config("phase", {"merge": {"n_phases": n_phases}})
    steps.merge_masks(tmp_path / "image.png", tmp_path / "crops.json", tmp_path / "prompts.npz",
                      tmp_path / "masks", "img", tmp_path / "labels.tif", tmp_path / "phase.png", "phase", cfg.merge,
                      cfg.prompts.blur, None)
    phase = io.read_image(tmp_path / "phase.png")
    if n_phases == 2:  # the binary split at the prompts' threshold: dark discs only, 0/1
        assert set(np.unique(phase)) == {0, 1}
        assert phase[truth == 1].mean() > 0.99 and not phase[truth == 2].any()
    else:
        assert set(np.unique(phase)) == {0, 1, 2}
        assert (phase[truth == 1] == 1).mean() > 0.99 and (phase[truth == 2] == 2).mean() > 0.9
