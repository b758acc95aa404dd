"""Band-by-band measurements (`quantify.BAND_PIXELS`): bands of a few rows give the one-band values,
and the per-pixel temporaries stay band-sized."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from skimage.measure import regionprops_table
from skimage.segmentation import expand_labels

from matsam.measurement import astm, coco, quantify, shape

EXACT = ["label", "area_px", "touches_border"]


def grains(seed: int, shape_=(90, 110), n=40, holes=0.0) -> np.ndarray:
    """uint32 grains grown from random seeds over the whole image; with ``holes``, a fraction of
    pixels and every 7th id set to 0 (phase objects on a background)."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape_, np.int32)
    points = rng.integers(0, shape_, (n, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, n + 1) * 3  # gaps in the ids
    labels = expand_labels(seeds, max(shape_)).astype(np.uint32)
    if holes:
        labels[rng.random(shape_) < holes] = 0
        labels[labels % 7 == 0] = 0
    return labels


def banded(monkeypatch, rows: int, width: int) -> None:
    monkeypatch.setattr(quantify, "BAND_PIXELS", rows * width)


def test_row_bands_cover_the_image(monkeypatch):
    assert quantify.row_bands(2048, 2048) == [(0, 2048)]  # normal images: one band
    banded(monkeypatch, 7, 10)
    assert quantify.row_bands(20, 10) == [(0, 7), (7, 14), (14, 20)]
    monkeypatch.setattr(quantify, "BAND_PIXELS", 3)  # less than a row: one row a band
    assert quantify.row_bands(2, 10) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("holes", [0.0, 0.1])
def test_label_counts_and_ids(monkeypatch, holes):
    labels = grains(0, holes=holes)
    banded(monkeypatch, 4, labels.shape[1])
    assert np.array_equal(quantify.label_counts(labels), np.bincount(labels.ravel()))
    assert np.array_equal(quantify.object_ids(labels), np.unique(labels[labels > 0]))


@pytest.mark.parametrize(("seed", "holes", "rows"), [(0, 0.0, 1), (1, 0.1, 2), (2, 0.1, 7), (3, 0.0, 13)])
def test_banded_object_table_equals_one_band(monkeypatch, seed, holes, rows):
    labels = grains(seed, holes=holes)
    intensity = np.random.default_rng(seed).integers(0, 65535, labels.shape).astype(np.uint16)
    whole = quantify.object_table(labels, intensity, pixel_size_um=0.5)
    banded(monkeypatch, rows, labels.shape[1])
    bands = quantify.object_table(labels, intensity, pixel_size_um=0.5)
    assert list(bands.columns) == list(whole.columns)
    for column in whole:
        if column in EXACT:
            assert np.array_equal(bands[column], whole[column]), column
        else:
            np.testing.assert_allclose(bands[column], whole[column], rtol=1e-12, atol=1e-9, err_msg=column)


def test_banded_object_table_matches_regionprops(monkeypatch):
    labels = grains(4, holes=0.05)
    banded(monkeypatch, 3, labels.shape[1])
    table = quantify.object_table(labels)
    ref = regionprops_table(labels.astype(np.int32), properties=["label", "area", "perimeter", "centroid",
                                                                 "axis_major_length", "axis_minor_length"])
    pairs = {"label": "label", "area_px": "area", "perimeter_px": "perimeter", "centroid_y": "centroid-0",
             "centroid_x": "centroid-1", "major_axis_px": "axis_major_length",
             "minor_axis_px": "axis_minor_length"}
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(table[ours], ref[theirs], atol=1e-9, err_msg=ours)


def brute_force_neighbours(labels: np.ndarray, ids: np.ndarray, distance: int) -> list[int]:
    """Other ids within `distance` px (chessboard) of each object, by a square dilation."""
    from scipy import ndimage

    out = []
    for label in ids:
        near = ndimage.binary_dilation(labels == label, np.ones((2 * distance + 1,) * 2, bool))
        others = np.unique(labels[near])
        out.append(int(np.count_nonzero((others != label) & (others > 0))))
    return out


@pytest.mark.parametrize(("holes", "rows"), [(0.0, 1), (0.1, 2), (0.1, 5)])
def test_banded_shape_table_and_neighbours(monkeypatch, holes, rows):
    labels = grains(5, (60, 70), n=25, holes=holes)
    perimeter = quantify.object_table(labels)["perimeter_px"].to_numpy()
    whole = shape.shape_table(labels, perimeter)
    banded(monkeypatch, rows, labels.shape[1])
    assert shape.shape_table(labels, perimeter).equals(whole)
    ids = quantify.object_ids(labels)
    for distance in (1, 2, 3):
        assert shape.neighbour_counts(labels, ids, distance).tolist() == brute_force_neighbours(labels, ids, distance)


@pytest.mark.parametrize("holes", [0.0, 0.1])
def test_banded_summary_astm_classes_and_coco(monkeypatch, holes):
    labels = grains(6, holes=holes)
    classes = (labels % 3 + (labels > 0)).astype(np.uint8)  # 0 background, classes 1..3

    def everything() -> str:
        return json.dumps([
            quantify.image_summary(labels, "grain", 0.5),
            quantify.image_summary(labels, "phase", 0.5, classes),
            astm.field_counts(labels, 0.5),
            quantify.object_classes(labels, classes)[1].tolist(),
            coco.coco_document(labels, "img.png", "phase", classes, 0.5),
        ])

    whole = everything()
    banded(monkeypatch, 3, labels.shape[1])
    assert everything() == whole


def test_uint32_labels_give_the_int64_results():
    """quantify_objects now passes labels.tif as read (uint32), no longer as an int64 copy."""
    labels = grains(7, holes=0.1)
    wide = labels.astype(np.int64)
    table = quantify.object_table(labels)
    assert table.equals(quantify.object_table(wide))
    perimeter = table["perimeter_px"].to_numpy()
    assert shape.shape_table(labels, perimeter).equals(shape.shape_table(wide, perimeter))
    documents = [json.dumps(coco.coco_document(image, "a.png", "grain")) for image in (labels, wide)]
    assert documents[0] == documents[1]


def test_band_temporaries_stay_band_sized(monkeypatch):
    """With bands of 1/40 of the image, object_table and neighbour_counts never hold a whole-image
    int64/float64 array (8 bytes a pixel): numpy reports its allocations to tracemalloc."""
    labels = grains(8, (480, 800), n=60)
    intensity = np.ones(labels.shape, np.float32)
    banded(monkeypatch, 12, labels.shape[1])
    tracemalloc.start()
    try:
        quantify.object_table(labels, intensity)
        shape.neighbour_counts(labels, quantify.object_ids(labels))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A band's temporaries take ~75 bytes a band pixel: < 2 bytes an image pixel here.
    assert peak < 4 * labels.size
