"""Classic (training-free, non-SAM) segmentations that the MatSAM paper compares against.

Every function takes an 8-bit RGB micrograph (H, W, 3) uint8 and works on its luminance (the
watershed gradient also uses the colour channels). Grain
baselines return a bool boundary map (H, W), True on boundaries, to be scored with
:func:`matsam.measurement.metrics.grain_scores`; phase baselines return a uint8 0/1 mask (1 = phase of
interest), to be scored with :func:`matsam.measurement.metrics.phase_scores`. Parameters are fixed, image-size
relative rules, as a baseline must not be tuned per image.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

_FOREGROUNDS = ("dark", "bright")


def _grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luminance of an (H, W, 3) uint8 RGB image (an (H, W) image passes through)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got {rgb.dtype}")
    if rgb.ndim == 2:
        return rgb
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _blur(image: np.ndarray) -> np.ndarray:
    """Light 5x5 Gaussian smoothing against pixel noise before thresholds and edges."""
    return cv2.GaussianBlur(image, (5, 5), 0)


def _check_foreground(foreground: str) -> None:
    if foreground not in _FOREGROUNDS:
        raise ValueError(f"foreground must be one of {_FOREGROUNDS}, got {foreground!r}")


def canny_boundaries(rgb: np.ndarray, sigma: float = 0.33) -> np.ndarray:
    """Grain boundaries as Canny edges.

    The hysteresis thresholds are ``(1 -/+ sigma) * median`` of the blurred grey image (the
    usual automatic rule); a 3x3 dilation closes the small gaps that would merge grains.

    Returns
    -------
    (H, W) bool array
        True on (dilated) edge pixels.
    """
    grey = _blur(_grey(rgb))
    median = float(np.median(grey))
    low, high = max(0.0, (1 - sigma) * median), min(255.0, (1 + sigma) * median)
    edges = cv2.Canny(grey, low, high)
    return cv2.dilate(edges, np.ones((3, 3), np.uint8)) > 0


def otsu_boundaries(rgb: np.ndarray) -> np.ndarray:
    """Grain boundaries as the dark side of an Otsu threshold (etched boundaries image dark).

    Returns
    -------
    (H, W) bool array
        True where the blurred grey value is at or below Otsu's threshold.
    """
    grey = _blur(_grey(rgb))
    threshold, _ = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return grey <= threshold


def watershed_boundaries(rgb: np.ndarray) -> np.ndarray:
    """Grain boundaries as watershed lines of the colour gradient.

    One marker per grain: the regional maxima (with dynamic >= 2 px) of the distance to the
    Otsu-dark pixels, i.e. the grain centres. Flooding the gradient from them puts the 1-px
    watershed lines on the strongest edges between neighbouring centres. The gradient is the
    per-pixel maximum of the channels' Sobel magnitudes, so that tint-etched grains that differ
    in hue more than in brightness are separated too (for grey images it is the grey gradient).

    Returns
    -------
    (H, W) bool array
        True on watershed-line pixels.
    """
    distance = ndi.distance_transform_edt(~otsu_boundaries(rgb))  # also validates rgb
    smooth = np.atleast_3d(_blur(np.asarray(rgb))).astype(np.float64)
    gradient = np.max([sobel(smooth[..., c]) for c in range(smooth.shape[2])], axis=0)
    markers, _ = ndi.label(h_maxima(distance, 2))
    return watershed(gradient, markers, watershed_line=True) == 0


def otsu_phase(rgb: np.ndarray, foreground: str) -> np.ndarray:
    """Phase mask from a global Otsu threshold on the grey image.

    Parameters
    ----------
    rgb : (H, W, 3) uint8
    foreground : {"dark", "bright"}
        Which side of the threshold is the phase of interest.

    Returns
    -------
    (H, W) uint8 array
        1 on the phase (``grey <= t`` for dark, ``grey > t`` for bright, as cv2.threshold).
    """
    _check_foreground(foreground)
    grey = _grey(rgb)
    mode = cv2.THRESH_BINARY_INV if foreground == "dark" else cv2.THRESH_BINARY
    _, mask = cv2.threshold(grey, 0, 1, mode + cv2.THRESH_OTSU)
    return mask


def adaptive_phase(rgb: np.ndarray, foreground: str) -> np.ndarray:
    """Phase mask from a local mean threshold, robust to uneven illumination.

    Each pixel is compared with the mean of a square block around it; the block is 1/4 of the
    smaller image side (odd, at least 3), large enough to hold both phases around any pixel. A
    pixel belongs to the phase only if it is darker (brighter) than its local mean by 0.2 x the
    image's grey standard deviation, so that flat, noisy background is not split in half.

    Parameters
    ----------
    rgb : (H, W, 3) uint8
    foreground : {"dark", "bright"}
        Which side of the local threshold is the phase of interest.

    Returns
    -------
    (H, W) uint8 array
        1 on the phase.
    """
    _check_foreground(foreground)
    grey = _blur(_grey(rgb))
    block = max(3, min(grey.shape) // 4 | 1)
    offset = 0.2 * float(grey.std())
    if foreground == "dark":  # grey <= mean - offset
        return cv2.adaptiveThreshold(
            grey, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, offset
        )
    return cv2.adaptiveThreshold(  # grey > mean + offset
        grey, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -offset
    )


GRAIN_BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "canny": canny_boundaries,
    "otsu": otsu_boundaries,
    "watershed": watershed_boundaries,
}
PHASE_BASELINES: dict[str, Callable[[np.ndarray, str], np.ndarray]] = {
    "otsu": otsu_phase,
    "adaptive": adaptive_phase,
}
