"""Per-object shape descriptors beside `quantify.object_table`: convexity, Feret diameters and
neighbour counts, the columns that MIPAR's and DREAM.3D's grain tables give.

The convex hull is that of the object's pixels as unit squares (pixel corners), so a one-pixel
object has Feret diameters 1 and √2 and a rectangle a solidity of exactly 1.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from matsam.measurement import quantify

SHAPE_COLUMNS = ["circularity", "solidity", "feret_max_px", "feret_min_px", "n_neighbours"]
NEIGHBOUR_DISTANCE = 2  # px: grains separated by a one-pixel boundary line are neighbours
_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def _hull(mask: np.ndarray) -> np.ndarray:
    """Convex hull vertices (x, y) of the pixel squares of a (cropped) bool mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    centres = cv2.convexHull(np.concatenate(contours).astype(np.float32)).reshape(-1, 2)
    corners = (centres[:, None, :] + _CORNERS[None]).reshape(-1, 2).astype(np.float32)
    return cv2.convexHull(corners).reshape(-1, 2).astype(np.float64)


def _ferets(hull: np.ndarray) -> tuple[float, float]:
    """Maximum (largest vertex distance) and minimum (rotating calipers: the smallest of the
    widths perpendicular to each hull edge) Feret diameter of a convex polygon."""
    diff = hull[:, None, :] - hull[None, :, :]
    feret_max = float(np.sqrt((diff**2).sum(-1)).max())
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    normals = np.stack([-edges[keep, 1], edges[keep, 0]], axis=1) / lengths[keep, None]
    widths = hull @ normals.T  # (vertices, edges) projections
    feret_min = float((widths.max(0) - widths.min(0)).min())
    return feret_max, feret_min


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _neighbour_pairs(labels: np.ndarray, r0: int, r1: int, distance: int, base: int) -> list[np.ndarray]:
    """Codes lo * base + hi of the pairs of different objects within `distance` px (chessboard)
    of a pixel of rows r0..r1: each offset once, looking down and right only, so the band needs
    `distance` rows below it (zeros beyond the image)."""
    height, width = labels.shape
    stop = min(r1 + distance, height)
    pad = np.pad(labels[r0:stop], ((distance, distance + r1 - stop), (distance, distance)))
    band = labels[r0:r1]
    codes = []
    for dy in range(0, distance + 1):
        for dx in range(-distance, distance + 1):
            if dy == 0 and dx <= 0:
                continue  # each offset once: the pair is symmetric
            other = pad[distance + dy : distance + dy + r1 - r0, distance + dx : distance + dx + width]
            hit = (band != other) & (band > 0) & (other > 0)
            a, b = band[hit].astype(np.int64), other[hit].astype(np.int64)
            codes.append(np.unique(np.minimum(a, b) * base + np.maximum(a, b)))
    return codes


def neighbour_counts(labels: np.ndarray, ids: np.ndarray, distance: int = NEIGHBOUR_DISTANCE) -> np.ndarray:
    """How many other objects come within `distance` px (chessboard) of each object in `ids`.

    Band by band (`quantify.row_bands`), so the per-offset temporaries stay small on huge images.
    """
    labels = np.asarray(labels)
    base = int(labels.max()) + 1
    codes = [np.empty(0, np.int64)]
    for r0, r1 in quantify.row_bands(*labels.shape):
        codes += _neighbour_pairs(labels, r0, r1, distance, base)
    lo, hi = np.divmod(np.unique(np.concatenate(codes)), base)
    counts = np.bincount(np.concatenate([lo, hi]), minlength=base)
    return counts[ids]


def shape_table(labels: np.ndarray, perimeter_px: np.ndarray) -> pd.DataFrame:
    """SHAPE_COLUMNS for every label > 0 in increasing order (the rows of `object_table`).

    ``circularity`` is 4πA/P² with `object_table`'s perimeter (1 for a disc; the 4-connected
    perimeter estimate can put small objects slightly above 1); ``solidity`` is the area over the
    convex hull's area.
    """
    labels = np.asarray(labels)
    ids = quantify.object_ids(labels)
    slices = ndimage.find_objects(labels)
    rows = np.zeros((ids.size, 3))
    area = np.zeros(ids.size)
    for k, label in enumerate(ids):
        box = slices[label - 1]
        mask = labels[box] == label
        hull = _hull(mask)
        area[k] = np.count_nonzero(mask)
        rows[k] = (area[k] / _polygon_area(hull), *_ferets(hull))
    perimeter = np.asarray(perimeter_px, dtype=float)
    circularity = np.divide(4 * math.pi * area, perimeter**2, out=np.full(ids.size, np.nan), where=perimeter > 0)
    return pd.DataFrame({
        "circularity": circularity,
        "solidity": rows[:, 0],
        "feret_max_px": rows[:, 1],
        "feret_min_px": rows[:, 2],
        "n_neighbours": neighbour_counts(labels, ids).astype(np.int64),
    })
