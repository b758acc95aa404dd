import numpy as np
from synthetic import voronoi_micrograph

from matsam.config import MergeConfig
from matsam.crops import Crop
from matsam.merge import (
    Candidate,
    add_watershed_grains,
    boundary_map,
    cross_crop_nms,
    fill_gaps,
    merge_grains,
    merge_phase,
    paint,
    touches_inner_edge,
)
from matsam.metrics import adjusted_rand_index, regions_from_boundaries


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
    filled = add_watershed_grains(labels, image)
    assert (filled[labels == 1] == 1).all()
    gap = (labels == 0) & (truth > 0)
    assert len(np.unique(filled[gap & (filled > 0)])) >= 8
    whole = labels.copy()
    whole[gap] = 2  # what "gap_grains: whole" starts from
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


def test_phase_regions_no_mask_touched_are_kept():
    side = np.zeros((60, 60), bool)
    side[0:20, 0:20] = True  # found by SAM
    side[40:50, 40:50] = True  # missed by SAM
    side[30:32, 5:7] = True  # missed but below the size floor
    labels, phase = merge_phase([square(0, 0, 20)], side, MergeConfig(min_object_area=16))
    assert labels.max() == 2 and phase[40:50, 40:50].all() and not phase[30:32, 5:7].any()
    off, _ = merge_phase([square(0, 0, 20)], side, MergeConfig(min_object_area=16, keep_missed_regions=False))
    assert off.max() == 1
