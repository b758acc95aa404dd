"""Shape columns: convexity, Feret diameters and neighbour counts of labelled objects."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import regionprops

from matsam.measurement.quantify import object_table
from matsam.measurement.shape import neighbour_counts, shape_table


def table(labels):
    return shape_table(labels, object_table(labels)["perimeter_px"].to_numpy())


def test_rectangle_has_exact_ferets_and_full_solidity():
    labels = np.zeros((30, 40), int)
    labels[5:11, 3:23] = 1  # 6 x 20 px
    row = table(labels).iloc[0]
    assert row.solidity == pytest.approx(1.0)
    assert row.feret_max_px == pytest.approx(math.hypot(6, 20)) and row.feret_min_px == pytest.approx(6)


def test_disc_is_round_and_l_shape_is_not_convex():
    yy, xx = np.mgrid[:80, :80]
    labels = (((yy - 30) ** 2 + (xx - 30) ** 2) < 20**2).astype(int)
    labels[60:78, 50:54] = 2
    labels[74:78, 54:72] = 2  # an L
    disc, ell = table(labels).itertuples(index=False)
    reference = regionprops(labels)
    assert disc.circularity == pytest.approx(1.0, abs=0.1) and disc.solidity > 0.97
    assert disc.feret_max_px == pytest.approx(reference[0].feret_diameter_max, abs=1.5)
    assert disc.feret_min_px == pytest.approx(39, abs=1.5)
    assert ell.solidity == pytest.approx(144 / 270) and ell.circularity < 0.4  # hull: 22 x 22 minus a corner


def test_grains_across_a_one_pixel_boundary_are_neighbours():
    labels = np.zeros((20, 31), int)
    labels[:, :10], labels[:, 11:20], labels[:, 21:] = 1, 2, 3  # boundary columns 10 and 20
    labels[15:, 11:20] = 4  # 4 is below 2, touching 2 and across a line from 1 and 3
    labels[14, 11:20] = 0
    assert neighbour_counts(labels, np.array([1, 2, 3, 4])).tolist() == [2, 3, 2, 3]
    far = np.zeros((20, 30), int)
    far[:, :10], far[:, 15:] = 1, 2  # 5 px apart: not neighbours
    assert neighbour_counts(far, np.array([1, 2])).tolist() == [0, 0]
