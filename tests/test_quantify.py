from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import regionprops_table
from skimage.segmentation import expand_labels

from matsam.measurement.quantify import PX_COLUMNS, UM_COLUMNS, astm_heyn, astm_planimetric, image_summary, object_table


def two_rectangles() -> np.ndarray:
    """20x30 image: label 3 = 5x10 block in the top-left corner, label 7 = 4x15 block inside."""
    labels = np.zeros((20, 30), np.int32)
    labels[0:5, 0:10] = 3
    labels[8:12, 10:25] = 7
    return labels


def grain_grid(size: int = 200, grain: int = 20, offset: int = 10) -> np.ndarray:
    """Square grains of ``grain`` px tiling a ``size`` px square, shifted by ``offset`` px."""
    yy, xx = np.mgrid[:size, :size]
    return ((yy + offset) // grain) * 1000 + (xx + offset) // grain + 1


# --- object_table ---------------------------------------------------------------------------


def test_object_table_rectangles():
    table = object_table(two_rectangles(), pixel_size_um=0.5)
    assert list(table.columns) == PX_COLUMNS + UM_COLUMNS
    assert table["label"].tolist() == [3, 7]
    assert table["area_px"].tolist() == [50, 60]
    np.testing.assert_allclose(
        table["equivalent_diameter_px"], np.sqrt(4 * np.array([50, 60]) / np.pi)
    )
    # skimage's perimeter of a w x h rectangle (h >= 3) counts its 2w + 2h - 4 border pixels.
    np.testing.assert_allclose(table["perimeter_px"], [2 * 10 + 2 * 5 - 4, 2 * 15 + 2 * 4 - 4])

    def axis(n: int) -> float:  # moment-ellipse axis = 4 * std of uniform 0..n-1
        return 4 * math.sqrt((n * n - 1) / 12)

    np.testing.assert_allclose(table["major_axis_px"], [axis(10), axis(15)])
    np.testing.assert_allclose(table["minor_axis_px"], [axis(5), axis(4)])
    np.testing.assert_allclose(table["aspect_ratio"], [axis(10) / axis(5), axis(15) / axis(4)])
    np.testing.assert_allclose(table["orientation_deg"], [0.0, 0.0], atol=1e-9)  # horizontal
    np.testing.assert_allclose(table["centroid_y"], [2.0, 9.5])
    np.testing.assert_allclose(table["centroid_x"], [4.5, 17.0])
    assert table["touches_border"].tolist() == [True, False]
    assert table["mean_intensity"].isna().all()
    np.testing.assert_allclose(table["area_um2"], [12.5, 15.0])
    np.testing.assert_allclose(table["perimeter_um"], [13.0, 17.0])
    np.testing.assert_allclose(table["equivalent_diameter_um"], table["equivalent_diameter_px"] / 2)
    np.testing.assert_allclose(table["major_axis_um"], table["major_axis_px"] / 2)
    np.testing.assert_allclose(table["minor_axis_um"], table["minor_axis_px"] / 2)


def test_object_table_intensity_in_original_units():
    labels = two_rectangles()
    intensity = (40000 + 250 * labels).astype(np.uint16)  # > 255: no 8-bit conversion allowed
    intensity[0, 0] = 40000 + 250 * 3 + 50 * 1  # one brighter pixel in label 3: mean + 1
    table = object_table(labels, intensity)
    np.testing.assert_allclose(table["mean_intensity"], [40751.0, 41750.0])
    assert list(table.columns) == PX_COLUMNS


def test_object_table_orientation_convention():
    # Angle of the major axis from the x axis, counter-clockwise with y pointing up.
    labels = np.zeros((60, 60), np.int32)
    labels[5:45, 2:6] = 1  # vertical bar
    for i in range(30):
        labels[10 + i, 10 + i : 12 + i] = 2  # going down-right on screen: -45 deg
        labels[40 - i, 25 + i : 27 + i] = 3  # going up-right on screen: +45 deg
    orientation = object_table(labels)["orientation_deg"].to_numpy()
    assert abs(orientation[0]) == pytest.approx(90.0)
    assert orientation[1] == pytest.approx(-45.0, abs=0.5)
    assert orientation[2] == pytest.approx(45.0, abs=0.5)


def test_object_table_matches_regionprops():
    rng = np.random.default_rng(0)
    seeds = np.zeros((120, 160), np.int32)
    points = rng.integers(0, [120, 160], (60, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, 61) * 3
    labels = expand_labels(seeds, 9)
    labels[rng.random(labels.shape) < 0.05] = 0  # holes and ragged edges
    intensity = rng.random(labels.shape) * 1000
    table = object_table(labels, intensity)
    ref = regionprops_table(
        labels,
        intensity,
        properties=[
            "label",
            "area",
            "equivalent_diameter_area",
            "perimeter",
            "axis_major_length",
            "axis_minor_length",
            "orientation",
            "centroid",
            "intensity_mean",
        ],
    )
    pairs = {
        "label": "label",
        "area_px": "area",
        "equivalent_diameter_px": "equivalent_diameter_area",
        "perimeter_px": "perimeter",
        "major_axis_px": "axis_major_length",
        "minor_axis_px": "axis_minor_length",
        "centroid_y": "centroid-0",
        "centroid_x": "centroid-1",
        "mean_intensity": "intensity_mean",
    }
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(table[ours], ref[theirs], atol=1e-9, err_msg=ours)
    # skimage: angle from the row axis; ours from the x axis (mod 180 deg).
    diff = (table["orientation_deg"] - (np.degrees(ref["orientation"]) - 90)) % 180
    np.testing.assert_allclose(np.minimum(diff, 180 - diff), 0, atol=1e-6)


def test_object_table_thin_and_empty():
    line = np.zeros((5, 8), np.int32)
    line[2, 1:7] = 1
    assert np.isnan(object_table(line)["aspect_ratio"].iloc[0])
    empty = object_table(np.zeros((4, 4), np.int32), pixel_size_um=1.0)
    assert len(empty) == 0
    assert list(empty.columns) == PX_COLUMNS + UM_COLUMNS


# --- ASTM E112 ------------------------------------------------------------------------------


def test_planimetric_shifted_grid():
    # 200x200 px at 1 um/px = 0.2 x 0.2 mm = 0.04 mm^2. 20 um grains shifted by half a grain:
    # 9x9 = 81 whole grains inside, 4 x 9 = 36 half grains on the edges (count 1/2),
    # 4 quarter grains in the corners (1/4 each) -> 81 + 18 + 1 = 100 grains = the true 0.04/0.0004.
    result = astm_planimetric(grain_grid(), pixel_size_um=1.0)
    assert (result["n_inside"], result["n_border"], result["n_corner"]) == (81, 36, 4)
    assert result["n_counted"] == 100.0
    assert result["N_A_per_mm2"] == pytest.approx(2500.0)
    assert result["G"] == pytest.approx(3.321928 * math.log10(2500) - 2.954)  # = 8.334
    assert result["mean_grain_area_um2"] == pytest.approx(400.0)  # 20 um x 20 um


def test_planimetric_aligned_grid_and_missing_scale():
    # 10x10 grains fitting the image exactly: 8x8 = 64 inside, 32 edge grains (1/2), 4 corner
    # grains (1/4): 64 + 16 + 1 = 81 (Jeffries undercounts a grid aligned with the frame).
    result = astm_planimetric(grain_grid(offset=0), pixel_size_um=None)
    assert (result["n_inside"], result["n_border"], result["n_corner"]) == (64, 32, 4)
    assert result["n_counted"] == 81.0
    assert math.isnan(result["N_A_per_mm2"]) and math.isnan(result["G"])
    # One grain covering the whole image counts 4 x 1/4 = 1.
    assert astm_planimetric(np.ones((10, 10), int), 1.0)["n_counted"] == 1.0
    no_grains = astm_planimetric(np.zeros((10, 10), int), 1.0)
    assert no_grains["n_counted"] == 0.0 and math.isnan(no_grains["G"])


def test_heyn_shifted_grid():
    # Each 200 um test line crosses the boundaries at 10, 30, ..., 190 um: 10 intersections.
    # 10 horizontal + 10 vertical lines: P = 200 over 4 mm -> L = 0.02 mm (the grain size).
    result = astm_heyn(grain_grid(), pixel_size_um=1.0, n_lines=10)
    assert result["n_intersections"] == 200
    assert result["line_length_mm"] == pytest.approx(4.0)
    assert result["mean_intercept_mm"] == pytest.approx(0.02)
    assert result["G"] == pytest.approx(-6.643856 * math.log10(0.02) - 3.288)  # = 8.000


def test_heyn_boundary_pixels():
    labels = grain_grid()
    # Boundary pixels (0) between grains: a 0-run between two grains is one intersection.
    changes = np.zeros(labels.shape, bool)
    changes[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    changes[1:, :] |= labels[1:, :] != labels[:-1, :]
    with_boundaries = np.where(changes, 0, labels)  # 0 on rows/columns 10, 30, ..., 190
    # 8 + 8 test lines at 12, 37, 62, ... px (off the boundaries), 10 crossings each.
    # A 0-run inside one grain (a speck on the test line at row 37) is no intersection.
    with_boundaries[37, 42:46] = 0
    assert astm_heyn(with_boundaries, 1.0, n_lines=8)["n_intersections"] == 160
    single = astm_heyn(np.ones((50, 50), int), 1.0)
    assert single["n_intersections"] == 0 and math.isnan(single["G"])
    assert math.isnan(astm_heyn(labels, None)["G"])


def test_image_summary():
    labels = grain_grid()  # 11 x 11 grains, some cut by the frame
    phase = np.zeros(labels.shape, np.uint8)
    phase[:100, :100] = 1
    grain = image_summary(labels, "grain", 1.0, phase=phase)
    assert grain["n_objects"] == 121
    assert grain["mean_area_px"] == pytest.approx(200 * 200 / 121)
    assert grain["mean_area_um2"] == pytest.approx(200 * 200 / 121)
    assert grain["astm_g_planimetric"] == pytest.approx(astm_planimetric(labels, 1.0)["G"])
    assert grain["astm_g_heyn"] == pytest.approx(astm_heyn(labels, 1.0)["G"])
    assert grain["phase_fraction"] == pytest.approx(0.25)
    particles = image_summary(labels, "phase", None)
    assert particles["n_objects"] == 121
    for key in ("mean_area_um2", "astm_g_planimetric", "astm_g_heyn", "phase_fraction"):
        assert math.isnan(particles[key]), key
    assert image_summary(np.zeros((5, 5), int), "grain", 1.0)["n_objects"] == 0


def test_image_summary_per_class_fractions():
    labels = np.zeros((10, 20), np.int32)
    classes = np.zeros((10, 20), np.uint8)
    labels[0:5, 0:4], classes[0:5, 0:4] = 1, 1  # 20 px of class 1
    labels[6:10, 10:20], classes[6:10, 10:20] = 2, 3  # 40 px of class 3; class 2 is absent
    row = image_summary(labels, "phase", None, phase=classes)
    assert row["phase_fraction"] == pytest.approx(60 / 200)
    assert row["fraction_class_1"] == pytest.approx(20 / 200)
    assert row["fraction_class_2"] == 0.0
    assert row["fraction_class_3"] == pytest.approx(40 / 200)
    # A 0/1 mask keeps today's columns only.
    binary = image_summary(labels, "phase", None, phase=(classes > 0).astype(np.uint8))
    assert binary["phase_fraction"] == pytest.approx(0.3)
    assert not [k for k in binary if k.startswith("fraction_class_")]
