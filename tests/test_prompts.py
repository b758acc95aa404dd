import numpy as np
import pytest
from synthetic import disc_micrograph, voronoi_micrograph

from matsam.config import PromptConfig
from matsam.segmentation.crops import Crop
from matsam.segmentation.prompts import adaptive_grid, crop_prompts, inner_points, phase_foreground, presegment


def test_inner_point_lies_inside_a_concave_region():
    labels = np.zeros((60, 60), np.int32)
    labels[5:55, 5:15] = 1  # an L: its centroid falls outside it
    labels[45:55, 5:55] = 1
    points, areas = inner_points(labels, min_area=1)
    x, y = points[0].astype(int)
    assert labels[y, x] == 1 and areas[0] == labels.sum()
    rows, cols = np.nonzero(labels)
    assert labels[int(rows.mean()), int(cols.mean())] == 0  # the centroid would have missed it


def test_small_regions_give_no_prompt():
    labels = np.zeros((40, 40), np.int32)
    labels[2:4, 2:4] = 1  # 4 px
    labels[10:30, 10:30] = 2
    points, _ = inner_points(labels, min_area=12)
    assert len(points) == 1 and labels[int(points[0, 1]), int(points[0, 0])] == 2


@pytest.mark.parametrize("dark", [True, False])
def test_phase_seeds_fall_inside_the_discs_whichever_their_polarity(dark):
    image, mask = disc_micrograph(seed=3, dark=dark)
    cfg = PromptConfig()
    pre = presegment(image, "phase", cfg)
    assert pre.foreground == ("dark" if dark else "bright")
    prompts = crop_prompts(pre, Crop(0, 0, 0, 0, 256, 256), cfg)
    seeds = prompts["points"][: int(prompts["n_seed"])].astype(int)
    assert len(seeds) >= 10
    assert mask[seeds[:, 1], seeds[:, 0]].all()


def test_grain_seeds_fall_inside_grains_one_per_grain():
    image, boundary = voronoi_micrograph(seed=1, n_grains=20)
    cfg = PromptConfig()
    pre = presegment(image, "grain", cfg)
    prompts = crop_prompts(pre, Crop(0, 0, 0, 0, 256, 256), cfg)
    seeds = prompts["points"][: int(prompts["n_seed"])].astype(int)
    assert not boundary[seeds[:, 1], seeds[:, 0]].any()
    from matsam.measurement.metrics import regions_from_boundaries

    grains = regions_from_boundaries(boundary)
    hit = set(grains[seeds[:, 1], seeds[:, 0]].tolist())
    assert len(hit) >= 0.9 * 20


def test_prompts_of_a_crop_are_in_crop_coordinates():
    image, mask = disc_micrograph(seed=4, dark=True)
    cfg = PromptConfig()
    pre = presegment(image, "phase", cfg)
    crop = Crop(1, 1, 100, 60, 220, 200)
    prompts = crop_prompts(pre, crop, cfg)
    points = prompts["points"]
    assert (points[:, 0] >= 0).all() and (points[:, 0] < crop.width).all()
    assert (points[:, 1] >= 0).all() and (points[:, 1] < crop.height).all()
    seeds = points[: int(prompts["n_seed"])].astype(int)
    assert mask[seeds[:, 1] + crop.y0, seeds[:, 0] + crop.x0].all()


def test_grid_adapts_to_object_count_and_is_denser_in_the_edge_band():
    cfg = PromptConfig(grid_min=4, grid_max=40, edge_band=0.1, edge_density=2.0)
    few = adaptive_grid(200, 200, 16, cfg)
    many = adaptive_grid(200, 200, 900, cfg)
    assert len(many) > 4 * len(few)
    x, y = many[:, 0], many[:, 1]
    band = (x < 20) | (x > 180) | (y < 20) | (y > 180)
    band_area = 200 * 200 - 160 * 160
    interior_area = 160 * 160
    assert band.sum() / band_area > 1.5 * (~band).sum() / interior_area


def test_matrix_is_the_connected_side():
    image, _ = disc_micrograph(seed=0, dark=False)
    grey = image[..., 0]
    assert phase_foreground(grey, 125) == "bright"
    assert phase_foreground(255 - grey, 125) == "dark"
