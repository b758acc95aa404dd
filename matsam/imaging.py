"""Pixel helpers that every floor uses: grey conversion, smoothing, boundary maps and the
colour-gradient watershed.

They live here, below the algorithms, so that no algorithm imports a sibling (or a baseline)
for a helper; each exists once.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.morphology import h_maxima
from skimage.segmentation import watershed


def grey8(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luminance of an 8-bit RGB(A) image; an (H, W) image passes through."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got {rgb.dtype}")
    if rgb.ndim == 2:
        return rgb
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)


def grey_intensity(image: np.ndarray) -> np.ndarray:
    """Grey intensities in the image's own units (for measurements, not for display), (H, W) float32."""
    if image.ndim == 3:
        return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return image.astype(np.float32)


def blurred(image: np.ndarray, ksize: int) -> np.ndarray:
    """Gaussian smoothing with an odd kernel of `ksize` px (0 or 1: the image as it is)."""
    return cv2.GaussianBlur(image, (ksize, ksize), 0) if ksize > 1 else image


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """One-pixel boundaries: a pixel is marked when its right or lower neighbour has another label.

    Two unmarked 4-neighbours therefore always share a label, so the 4-connected regions of the
    unmarked pixels reproduce the grains (what the evaluation relies on). (H, W) uint8 0/1.
    """
    b = np.zeros(labels.shape, dtype=bool)
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return b.astype(np.uint8)


def otsu_dark(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the dark side of Otsu's threshold of the 5x5-blurred grey image (etched
    grain boundaries image dark)."""
    grey = blurred(grey8(rgb), 5)
    threshold, _ = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return grey <= threshold


def colour_watershed_lines(rgb: np.ndarray) -> np.ndarray:
    """Watershed lines of the colour gradient, (H, W) bool.

    One marker per grain: the regional maxima (with dynamic >= 2 px) of the distance to the
    Otsu-dark pixels, i.e. the grain centres. Flooding the gradient from them puts the 1-px
    watershed lines on the strongest edges between neighbouring centres. The gradient is the
    per-pixel maximum of the channels' Sobel magnitudes, so that tint-etched grains that differ
    in hue more than in brightness are separated too (for grey images it is the grey gradient).
    """
    distance = ndi.distance_transform_edt(~otsu_dark(rgb))  # also validates rgb
    smooth = np.atleast_3d(blurred(np.asarray(rgb), 5)).astype(np.float64)
    gradient = np.max([sobel(smooth[..., c]) for c in range(smooth.shape[2])], axis=0)
    markers, _ = ndi.label(h_maxima(distance, 2))
    return watershed(gradient, markers, watershed_line=True) == 0
