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

from matsam.imaging import blurred, colour_watershed_lines, grey8, otsu_dark

_FOREGROUNDS = ("dark", "bright")


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
    grey = blurred(grey8(rgb), 5)
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
    return otsu_dark(rgb)


def watershed_boundaries(rgb: np.ndarray) -> np.ndarray:
    """Grain boundaries as watershed lines of the colour gradient (`imaging.colour_watershed_lines`).

    Returns
    -------
    (H, W) bool array
        True on watershed-line pixels.
    """
    return colour_watershed_lines(rgb)


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
    grey = grey8(rgb)
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
    grey = blurred(grey8(rgb), 5)
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
