from __future__ import annotations

import cv2
import numpy as np
import pytest
from synthetic import disc_micrograph, voronoi_micrograph

from matsam.measurement.baselines import (
    GRAIN_BASELINES,
    PHASE_BASELINES,
    adaptive_phase,
    canny_boundaries,
    otsu_boundaries,
    otsu_phase,
    watershed_boundaries,
)
from matsam.measurement.metrics import grain_scores, phase_scores

# --- grain baselines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "min_ari"),
    # Otsu and watershed recover the grains almost exactly; Canny finds every boundary but
    # as a double edge (both sides of the dark line), so its boundary band is ~3x too thick.
    [(otsu_boundaries, 0.85), (watershed_boundaries, 0.75), (canny_boundaries, 0.45)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_grain_baselines_on_voronoi(baseline, min_ari, seed):
    image, boundary = voronoi_micrograph(seed)
    pred = baseline(image)
    assert pred.dtype == bool and pred.shape == boundary.shape
    assert grain_scores(pred, boundary)["ari"] > min_ari


def test_watershed_lines_are_thin_and_close_grains():
    image, boundary = voronoi_micrograph(2)
    pred = watershed_boundaries(image)
    # 1-px lines: far fewer pixels than the 3-px true boundaries, all near them.
    assert pred.sum() < 0.6 * boundary.sum()
    near = cv2.dilate(boundary.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (pred & near).sum() > 0.9 * pred.sum()


# --- phase baselines ------------------------------------------------------------------------


@pytest.mark.parametrize("dark", [True, False])
def test_phase_baselines_and_polarity(dark):
    image, mask = disc_micrograph(0, dark=dark)
    wanted, other = ("dark", "bright") if dark else ("bright", "dark")
    for baseline, min_iou in ((otsu_phase, 0.95), (adaptive_phase, 0.8)):
        pred = baseline(image, wanted)
        assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
        assert phase_scores(pred, mask)["iou"] > min_iou, baseline.__name__
        # The other polarity picks the background instead.
        assert phase_scores(baseline(image, other), mask)["iou"] < 0.1, baseline.__name__
    # Otsu's two sides partition the image.
    np.testing.assert_array_equal(otsu_phase(image, "dark") + otsu_phase(image, "bright"), 1)


@pytest.mark.parametrize("dark", [True, False])
def test_adaptive_copes_with_uneven_illumination(dark):
    # A +-100 grey-level ramp defeats one global threshold but not a local one.
    image, mask = disc_micrograph(1, dark=dark, ramp=100)
    foreground = "dark" if dark else "bright"
    assert phase_scores(adaptive_phase(image, foreground), mask)["iou"] > 0.8
    assert phase_scores(otsu_phase(image, foreground), mask)["iou"] < 0.6


def test_input_checks_and_registries():
    image, _ = disc_micrograph(0, dark=True)
    with pytest.raises(ValueError):
        otsu_phase(image, "black")
    with pytest.raises(ValueError):
        otsu_boundaries(image.astype(np.uint16))
    assert set(GRAIN_BASELINES) == {"canny", "otsu", "watershed"}
    assert set(PHASE_BASELINES) == {"otsu", "adaptive"}
    assert GRAIN_BASELINES["watershed"] is watershed_boundaries
    assert PHASE_BASELINES["adaptive"] is adaptive_phase
