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
            alpha: float = 0.35, classes: np.ndarray | None = None, rows_per_band: int = 1024) -> np.ndarray:
    """Objects tinted in random colours (or by phase class) over the micrograph, boundaries in red.

    rgb: (H, W, 3) uint8; labels: (H, W) int, 0 = not an object; boundaries: (H, W) 0/1 or None,
    where None draws the outline of every object; classes: (H, W) multi-phase class ids or None.
    Drawn `rows_per_band` rows at a time: the float temporaries (~40 bytes a pixel) stay small on
    a huge image, and every pixel is computed as it would be in one piece.
    """
    colors = label_colors(int(labels.max())) if classes is None else None
    if boundaries is None:
        boundaries = boundary_map(labels)
    out = np.empty(rgb.shape, np.uint8)
    for r0 in range(0, labels.shape[0], rows_per_band):
        band = np.s_[r0 : r0 + rows_per_band]
        if colors is not None:
            tint = colors[labels[band]]
        else:
            tint = CLASS_COLORS[(np.asarray(classes[band]).astype(np.int64) - 1) % len(CLASS_COLORS)]
        inside = labels[band] > 0
        part = rgb[band].astype(np.float32)
        part[inside] = (1 - alpha) * part[inside] + alpha * tint[inside]
        part[boundaries[band].astype(bool)] = (255, 40, 40)
        out[band] = part.astype(np.uint8)
    return out
