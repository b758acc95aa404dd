"""Pictures for a person to check a result at a glance."""

from __future__ import annotations

import numpy as np

from .merge import boundary_map


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n + 1, 3) uint8 random bright colours; colour 0 is black (background)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(60, 256, size=(n + 1, 3), dtype=np.uint8)
    colors[0] = 0
    return colors


def overlay(rgb: np.ndarray, labels: np.ndarray, boundaries: np.ndarray | None = None,
            alpha: float = 0.35) -> np.ndarray:
    """Objects tinted in random colours over the micrograph, boundaries in red.

    rgb: (H, W, 3) uint8; labels: (H, W) int, 0 = not an object; boundaries: (H, W) 0/1 or None,
    where None draws the outline of every object.
    """
    colors = label_colors(int(labels.max()))
    tint = colors[labels]
    inside = labels > 0
    out = rgb.astype(np.float32)
    out[inside] = (1 - alpha) * out[inside] + alpha * tint[inside]
    if boundaries is None:
        boundaries = boundary_map(labels)
    out[boundaries.astype(bool)] = (255, 40, 40)
    return out.astype(np.uint8)
