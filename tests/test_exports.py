"""Exports for correction tools: COCO RLE round trip, ImageJ-calibrated labels.tif, corrected
instance label images accepted as reference labels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from matsam import io
from matsam.imaging import boundary_map
from matsam.measurement import coco, metrics, reference


def random_labels(seed: int, shape=(37, 53), n=12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, shape[0] * shape[1], n)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = (yy.ravel()[:, None] - seeds[None] // shape[1]) ** 2 + (xx.ravel()[:, None] - seeds[None] % shape[1]) ** 2
    labels = (d.argmin(1) + 1).reshape(shape).astype(np.uint32)
    labels[rng.random(shape) < 0.05] = 0  # holes and specks
    labels[labels == 3] = 0  # a missing id
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_document_decodes_to_the_labels(seed, tmp_path):
    labels = random_labels(seed)
    doc = coco.coco_document(labels, "img.png", "grain", pixel_size_um=0.5)
    path = tmp_path / "objects.coco.json"
    io.write_json(path, doc)
    back = coco.decode_labels(json.loads(path.read_text()))
    assert back.dtype == np.uint32 and np.array_equal(back, labels)
    ann = {a["label_id"]: a for a in doc["annotations"]}
    assert sorted(ann) == sorted(np.unique(labels[labels > 0]).tolist())
    ys, xs = np.nonzero(labels == 5)
    assert ann[5]["area"] == ys.size and ann[5]["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
    assert doc["categories"] == [{"id": 1, "name": "grain", "supercategory": "microstructure"}]


def test_rle_is_column_major_and_starts_with_zeros():
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0, 1, 1, 1
    assert coco.rle_counts(coco.encode_mask(mask)["counts"]) == [1, 3]
    full = np.ones((3, 3), bool)
    assert coco.rle_counts(coco.encode_mask(full)["counts"]) == [0, 9]
    counts = [0, 5, 70000, 3, 2, 1000000, 1, 4]  # large and negative differences
    assert coco.rle_counts(coco.rle_string(counts)) == counts


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (dev extra) not installed")
    labels = random_labels(4, (64, 48), 20)
    for ann in coco.coco_document(labels, "x.png", "grain")["annotations"]:
        mask = labels == ann["label_id"]
        theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert theirs["counts"].decode() == ann["segmentation"]["counts"]
        as_bytes = ann["segmentation"] | {"counts": ann["segmentation"]["counts"].encode()}
        assert np.array_equal(mask_api.decode(as_bytes), mask)
        assert list(mask_api.toBbox(theirs)) == ann["bbox"]


def test_phase_objects_get_their_class():
    labels = np.zeros((20, 20), np.uint32)
    classes = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6], classes[2:6, 2:6] = 1, 2
    labels[10:15, 10:15], classes[10:15, 10:15] = 2, 1
    doc = coco.coco_document(labels, "p.png", "phase", classes)
    assert [c["name"] for c in doc["categories"]] == ["phase_class_1", "phase_class_2"]
    assert {a["label_id"]: a["category_id"] for a in doc["annotations"]} == {1: 2, 2: 1}


def test_labels_tiff_carries_the_imagej_pixel_size(tmp_path):
    labels = random_labels(5)
    io.write_tiff(tmp_path / "labels.tif", labels, pixel_size_um=0.125)
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "micron"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.125)
        assert np.array_equal(tif.asarray(), labels) and tif.asarray().dtype == np.uint32
    assert io.tiff_pixel_size_um(tmp_path / "labels.tif") == pytest.approx(0.125)
    io.write_tiff(tmp_path / "plain.tif", labels)
    assert io.tiff_pixel_size_um(tmp_path / "plain.tif") is None


def test_corrected_instance_labels_score_like_a_boundary_map(tmp_path):
    labels = random_labels(6)
    labels[labels == 0] = 1  # a tessellation, as matsam's grain labels.tif
    tifffile.imwrite(tmp_path / "fixed.tif", labels.astype(np.uint16))
    cv2.imwrite(str(tmp_path / "fixed.png"), labels.astype(np.uint16))
    for name in ("fixed.tif", "fixed.png"):
        ref = reference.read_reference(tmp_path / name, "grain", labels.shape)
        assert ref.dtype == np.uint8 and np.array_equal(ref, boundary_map(labels))
        assert metrics.grain_scores(boundary_map(labels), ref)["ari"] == pytest.approx(1.0)
    phase = reference.read_reference(tmp_path / "fixed.tif", "phase", labels.shape)
    assert set(np.unique(phase)) == {1}
    binary = (labels % 2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "binary.png"), binary)  # a classic 0/1 map stays as it is
    assert np.array_equal(reference.read_reference(tmp_path / "binary.png", "grain", labels.shape), binary)
    with pytest.raises(io.InputError, match="fixed.tif: label is"):
        reference.read_reference(tmp_path / "fixed.tif", "grain", (10, 10))
