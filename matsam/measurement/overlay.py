"""Pictures for a person to check a result at a glance."""

from __future__ import annotations

import numpy as np

from matsam.imaging import boundary_map


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n + 1, 3) uint8 random bright colours; colour 0 is black (background)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(60, 256, size=(n + 1, 3), dtype=np.uint8)
    colors[0] = 0
    return colors


# Multi-phase class colours (class 1, 2, ...): distinct hues, so that the classes read at a glance.
CLASS_COLORS = np.array([(40, 120, 255), (255, 200, 0), (0, 220, 120), (220, 0, 220), (0, 220, 255),
                         (255, 120, 0)], np.uint8)


def overlay(rgb: np.ndarray, labels: np.ndarray, boundaries: np.ndarray | None = None,
            alpha: float = 0.35, classes: np.ndarray | None = None) -> np.ndarray:
    """Objects tinted in random colours (or by phase class) over the micrograph, boundaries in red.

    rgb: (H, W, 3) uint8; labels: (H, W) int, 0 = not an object; boundaries: (H, W) 0/1 or None,
    where None draws the outline of every object; classes: (H, W) multi-phase class ids or None.
    """
    if classes is None:
        tint = label_colors(int(labels.max()))[labels]
    else:
        tint = CLASS_COLORS[(np.asarray(classes).astype(np.int64) - 1) % len(CLASS_COLORS)]
    inside = labels > 0
    out = rgb.astype(np.float32)
    out[inside] = (1 - alpha) * out[inside] + alpha * tint[inside]
    if boundaries is None:
        boundaries = boundary_map(labels)
    out[boundaries.astype(bool)] = (255, 40, 40)
    return out.astype(np.uint8)
