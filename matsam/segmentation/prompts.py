"""Point prompts: pre-segmentation seeds plus an adaptive grid that is denser near the edges.

Coordinates are (x, y) = (column, row) floats in the pixel frame of the crop they belong to, the
convention of SAM's point prompts. (The official MatSAM code swapped x and y on non-square images
and used one set of full-image centroids for every crop; both are avoided here.)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from matsam.config import PromptConfig
from matsam.imaging import blurred, grey8
from matsam.segmentation.crops import Crop


@dataclass(frozen=True)
class Presegmentation:
    """Connected regions of a classic segmentation of the whole image.

    labels: (H, W) int32, 0 = edges / the side that is not of interest.
    threshold: Otsu grey threshold (phase images) or NaN.
    foreground: "dark" / "bright" (phase images) or "" (grain images).
    connectivity: 4 for regions between edges, 8 for threshold regions.
    """

    labels: np.ndarray
    threshold: float
    foreground: str
    connectivity: int


def otsu_threshold(gray: np.ndarray, clip: tuple[float, float] = (1.0, 99.0)) -> float:
    """Otsu's threshold of the grey levels between two percentiles.

    A few very dark or bright pixels (a dust particle, a scratch, charging) otherwise pull the
    threshold to separate them from everything else instead of the two phases.
    """
    lo, hi = np.percentile(gray, clip)
    if hi <= lo:
        return float(lo)
    clipped = ((np.clip(gray, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    threshold, _ = cv2.threshold(clipped, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(lo + threshold * (hi - lo) / 255.0)


def largest_component_fraction(mask: np.ndarray) -> float:
    """Fraction of the mask's pixels in its largest 8-connected component (0 when empty)."""
    total = int(mask.sum())
    if total == 0:
        return 0.0
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) / total


def phase_foreground(gray: np.ndarray, threshold: float) -> str:
    """Which side of the threshold holds the phase of interest: "dark" or "bright".

    The matrix is one connected network; precipitates, particles and pores are many separate
    pieces. So the phase of interest is the side whose largest connected piece holds the smaller
    share of its pixels.
    """
    dark = gray <= threshold
    return "dark" if largest_component_fraction(dark) <= largest_component_fraction(~dark) else "bright"


def canny_edges(gray: np.ndarray, cfg: PromptConfig) -> np.ndarray:
    """Canny edges with thresholds from the median grey unless given; bool (H, W)."""
    median = float(np.median(gray))
    low = cfg.canny_low if cfg.canny_low is not None else 0.66 * median
    high = cfg.canny_high if cfg.canny_high is not None else 1.33 * median
    return cv2.Canny(gray, low, max(high, low + 1)) > 0


def presegment(rgb: np.ndarray, mode: str, cfg: PromptConfig) -> Presegmentation:
    """Canny regions (grain) or the phase side of an Otsu threshold (phase) as labelled regions."""
    gray = blurred(grey8(rgb), cfg.blur)
    method = cfg.method if cfg.method != "auto" else ("canny" if mode == "grain" else "otsu")
    threshold = otsu_threshold(gray)
    foreground = ""
    if method == "canny":
        edges = canny_edges(gray, cfg)
        if cfg.edge_dilate > 1:
            kernel = np.ones((cfg.edge_dilate, cfg.edge_dilate), np.uint8)
            edges = cv2.dilate(edges.astype(np.uint8), kernel) > 0
        regions = ~edges
        connectivity = 4
    else:
        foreground = cfg.foreground if cfg.foreground != "auto" else phase_foreground(gray, threshold)
        regions = gray <= threshold if foreground == "dark" else gray > threshold
        connectivity = 8
    _, labels = cv2.connectedComponents(regions.astype(np.uint8), connectivity=connectivity)
    return Presegmentation(
        labels.astype(np.int32), threshold if method == "otsu" else float("nan"), foreground, connectivity
    )


def inner_points(labels: np.ndarray, min_area: int, min_radius: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One point per region, the pixel farthest from the region's border.

    Unlike the centroid, this point lies inside the region even when it is concave (an L-shaped
    grain, a dendrite arm). Regions smaller than `min_area` px, or thinner than `min_radius` px
    (the sliver between the two Canny edges of a dark boundary line), give no point.
    Returns (points (N, 2) float (x, y), areas (N,) int), largest region first.
    """
    areas = np.bincount(labels.ravel())
    keep = np.flatnonzero(areas >= max(min_area, 1))
    keep = keep[keep > 0]
    if keep.size == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    depth = cv2.distanceTransform((labels > 0).astype(np.uint8), cv2.DIST_L2, 3)
    positions = np.array(ndi.maximum_position(depth, labels, keep)).reshape(-1, 2)
    thick = depth[positions[:, 0], positions[:, 1]] >= min_radius
    positions, keep = positions[thick], keep[thick]
    points = positions[:, ::-1].astype(np.float32)
    order = np.argsort(-areas[keep], kind="stable")
    return points[order], areas[keep][order]


def grid_points(width: int, height: int, per_side: int) -> np.ndarray:
    """Cell centres of a per_side x per_side grid, (per_side**2, 2) float (x, y)."""
    ticks = (np.arange(per_side) + 0.5) / per_side
    xs, ys = np.meshgrid(ticks * width, ticks * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def adaptive_grid(width: int, height: int, n_objects: int, cfg: PromptConfig) -> np.ndarray:
    """A regular grid whose density follows the number of pre-segmented objects, plus a finer grid
    kept only in a band along the crop edges, where objects cut by the border are small and easy
    to miss."""
    per_side = int(np.clip(round(cfg.grid_factor * np.sqrt(max(n_objects, 1))), cfg.grid_min, cfg.grid_max))
    base = grid_points(width, height, per_side)
    fine_side = int(round(per_side * cfg.edge_density))
    if cfg.edge_band <= 0 or fine_side <= per_side:
        return base
    fine = grid_points(width, height, fine_side)
    band_x, band_y = cfg.edge_band * width, cfg.edge_band * height
    in_band = (
        (fine[:, 0] < band_x) | (fine[:, 0] > width - band_x) | (fine[:, 1] < band_y) | (fine[:, 1] > height - band_y)
    )
    return np.concatenate([base, fine[in_band]])


def crop_prompts(pre: Presegmentation, crop: Crop, cfg: PromptConfig) -> dict[str, np.ndarray]:
    """Prompts of one crop in its own coordinates.

    Regions are re-labelled inside the crop, so a region cut by the crop still gets a point inside
    the crop. The grid is kept whole and the seeds fill the room it leaves under `max_points`:
    where a crop has more regions than that room (fine carbides, hundreds per crop), grid points
    gave better masks than the seeds of the largest regions (UHCS, benchmarks/README.md).
    Returns {"points": (N, 2) float32 (x, y), "n_seed": seeds first, then grid}.
    """
    window = pre.labels[crop.y0 : crop.y1, crop.x0 : crop.x1] > 0
    _, local = cv2.connectedComponents(window.astype(np.uint8), connectivity=pre.connectivity)
    seeds, _ = inner_points(local, cfg.min_region_area, cfg.min_region_radius)
    grid = adaptive_grid(crop.width, crop.height, len(seeds), cfg)
    seeds = seeds[: max(cfg.max_points - len(grid), 0)]
    points = np.concatenate([seeds, grid]).astype(np.float32)
    return {"points": points, "n_seed": np.int64(len(seeds))}
