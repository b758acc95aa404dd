"""Reference labels: the classic label maps, or an instance label image corrected by hand.

A person who corrected matsam's `labels.tif` in Fiji or napari (or painted instances from scratch)
saves one id per object as a 16/32-bit TIFF or PNG. Given as a dataset's `labels`, it is turned
into the map the metrics compare against: a one-pixel boundary map for grain images, a 0/1 phase
mask for phase images. Which kind a file is follows from its content (`is_instance_image`).
"""

from __future__ import annotations

import os

import numpy as np

from matsam import io
from matsam.imaging import boundary_map

MAX_PHASE_CLASSES = 16  # an 8-bit phase label with more values than this holds object ids


def is_instance_image(label: np.ndarray, mode: str) -> bool:
    """True for an instance label image: anything deeper than 8 bits, or an 8-bit grain label with
    more values than a 0/1 boundary map (255 = unlabelled), or an 8-bit phase label with more than
    MAX_PHASE_CLASSES values."""
    if label.dtype != np.uint8:
        return True
    values = np.unique(label)
    values = values[values != 255]
    return values.size > (2 if mode == "grain" else MAX_PHASE_CLASSES)


def read_reference(path: str | os.PathLike[str], mode: str, shape: tuple[int, int]) -> np.ndarray:
    """The uint8 label map of a reference file, in the convention of `io.read_label`
    (grain: 1 = boundary; phase: class ids; 255 = unlabelled)."""
    raw = io.read_image(path)
    if raw.ndim == 3 or not is_instance_image(raw, mode):
        return io.read_label(path, shape)
    io.check_label_shape(path, raw, shape)
    whole = np.issubdtype(raw.dtype, np.integer) or bool(np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)))
    if not whole or raw.min() < 0:
        raise io.InputError(f"{path}: label values must be class ids or non-negative whole object ids, "
                            f"got {raw.dtype} in {raw.min()}..{raw.max()}")
    labels = raw.astype(np.int64)
    if mode == "grain":
        return (boundary_map(labels).astype(bool) | (labels == 0)).astype(np.uint8)
    return (labels > 0).astype(np.uint8)
