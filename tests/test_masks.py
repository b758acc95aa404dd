"""Tests of the bit-packed crop masks (matsam/segmentation/masks.py): what the SAM step writes
and the merge step reads must be the same masks, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from matsam import io
from matsam.segmentation.masks import CropMasks


def random_masks(shape: tuple[int, int], n: int, seed: int = 0) -> tuple[np.ndarray, CropMasks]:
    """n random bool masks of `shape` and their CropMasks (boxes and areas from the masks)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n, *shape)) < 0.4
    masks[:, -1, -1] = True  # never empty, and the last (padded) byte in use
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    packed = np.stack([np.packbits(m.ravel()) for m in masks])
    crop = CropMasks(packed, shape, rng.random(n).astype(np.float32), rng.random(n).astype(np.float32),
                     np.array(boxes, np.int32), masks.reshape(n, -1).sum(1).astype(np.int64),
                     np.arange(n, dtype=np.int64) * 3, decoded=n + 5)
    return masks, crop


def assert_same(a: CropMasks, b: CropMasks) -> None:
    assert a.shape == b.shape and isinstance(b.shape[0], int) and isinstance(b.shape[1], int)
    assert a.decoded == b.decoded and isinstance(b.decoded, int)
    for key in ("packed", "scores", "stability", "boxes", "areas", "point_index"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
        assert getattr(a, key).dtype == getattr(b, key).dtype, key


@pytest.mark.parametrize("shape", [(7, 13), (1, 1), (16, 16), (33, 5)])
def test_mask_unpacks_exactly_the_original_mask(shape):
    """H*W not a multiple of 8: the padding bits of the last byte must not leak into the mask."""
    masks, crop = random_masks(shape, 4, seed=sum(shape))
    assert crop.packed.shape == (4, (shape[0] * shape[1] + 7) // 8)
    for i, m in enumerate(masks):
        out = crop.mask(i)
        assert out.dtype == bool and out.shape == shape
        assert np.array_equal(out, m)


def test_mask_of_a_full_odd_sized_mask_has_no_extra_pixels():
    full = np.ones((7, 13), bool)
    crop = CropMasks(np.packbits(full.ravel())[None], (7, 13), np.ones(1, np.float32), np.ones(1, np.float32),
                     np.array([[0, 0, 13, 7]], np.int32), np.array([91]), np.zeros(1, np.int64))
    assert crop.packed.shape == (1, 12)  # 91 bits in 12 bytes, 5 of them padding
    assert crop.mask(0).sum() == 91 and crop.mask(0).all()


def test_to_arrays_from_arrays_round_trip():
    masks, crop = random_masks((7, 13), 3)
    arrays = crop.to_arrays()
    assert set(arrays) == {"packed", "shape", "scores", "stability", "boxes", "areas", "point_index", "decoded"}
    back = CropMasks.from_arrays(arrays)
    assert_same(crop, back)
    assert len(back) == 3
    assert all(np.array_equal(back.mask(i), masks[i]) for i in range(3))


def test_round_trip_through_npz_files(tmp_path):
    """The decoder job writes io.write_npz(**to_arrays()); the merge job reads it back."""
    masks, crop = random_masks((7, 13), 5, seed=4)
    io.write_npz(tmp_path / "crop_0.npz", **crop.to_arrays())
    back = CropMasks.from_arrays(io.read_npz(tmp_path / "crop_0.npz"))
    assert_same(crop, back)
    assert all(np.array_equal(back.mask(i), masks[i]) for i in range(5))


def test_from_arrays_without_decoded_counts_zero():
    """Files written before the decoded count existed still load."""
    _, crop = random_masks((9, 9), 2)
    arrays = crop.to_arrays()
    del arrays["decoded"]
    assert CropMasks.from_arrays(arrays).decoded == 0


@pytest.mark.parametrize("shape", [(7, 13), (8, 8), (100, 37)])
def test_empty_has_no_masks_and_the_packed_width_of_the_shape(shape):
    empty = CropMasks.empty(shape, decoded=12)
    assert len(empty) == 0 and empty.decoded == 12 and empty.shape == shape
    assert empty.packed.shape == (0, (shape[0] * shape[1] + 7) // 8) and empty.packed.dtype == np.uint8
    assert empty.boxes.shape == (0, 4)
    assert len(empty.stability) == len(empty.areas) == len(empty.point_index) == 0


def test_empty_round_trips_through_npz(tmp_path):
    """A crop where no prompt gave an acceptable mask is a file too, of the same layout."""
    io.write_npz(tmp_path / "crop_3.npz", **CropMasks.empty((7, 13), decoded=40).to_arrays())
    back = CropMasks.from_arrays(io.read_npz(tmp_path / "crop_3.npz"))
    assert_same(CropMasks.empty((7, 13), decoded=40), back)
    assert back.packed.shape == (0, 12)
