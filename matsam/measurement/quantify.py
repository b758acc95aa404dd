"""Measurements of segmented objects: per-object shape table, ASTM E112 grain size, image summary.

All functions take a label image (H, W) of non-negative ints, 0 = background / boundary, one id per
object (grain or particle). Pixel lengths become micrometres when ``pixel_size_um`` (µm per pixel,
square pixels) is known; without it the physical values are NaN rather than errors, so a pipeline
can still tabulate images of unknown scale. Huge images are measured in bands of rows
(`BAND_PIXELS`), so memory stays bounded; an image of up to 2048 x 2048 px is a single band.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

PX_COLUMNS = [
    "label",
    "area_px",
    "equivalent_diameter_px",
    "perimeter_px",
    "major_axis_px",
    "minor_axis_px",
    "aspect_ratio",
    "orientation_deg",
    "centroid_y",
    "centroid_x",
    "mean_intensity",
    "touches_border",
]
UM_COLUMNS = [
    "area_um2",
    "equivalent_diameter_um",
    "perimeter_um",
    "major_axis_um",
    "minor_axis_um",
]
_LENGTHS = ["equivalent_diameter", "perimeter", "major_axis", "minor_axis"]

# skimage.measure.perimeter: weight of a border pixel by its code
# 1 + 2 * (4-neighbours on the border) + 10 * (diagonal neighbours on the border).
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2


# Pixels per band of rows: large images are measured band by band, so that the per-pixel
# temporaries (int64 / float64, 8 bytes a pixel each) stay bounded; an image of up to
# 2048 x 2048 px is one band, computed exactly as one whole-image pass.
BAND_PIXELS = 2048 * 2048


def row_bands(height: int, width: int) -> list[tuple[int, int]]:
    """(start, stop) rows of the bands of at most BAND_PIXELS pixels (at least a row) covering an image."""
    step = max(1, BAND_PIXELS // max(width, 1))
    return [(r0, min(r0 + step, height)) for r0 in range(0, height, step)]


def label_counts(labels: np.ndarray) -> np.ndarray:
    """``np.bincount(labels.ravel())`` by bands, without a whole-image int64 copy.

    Its length is the largest label + 1, so the ids should be about consecutive (matsam's are).
    """
    counts = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    for r0, r1 in row_bands(*labels.shape):
        counts += np.bincount(labels[r0:r1].ravel(), minlength=counts.size)
    return counts


def present_ids(counts: np.ndarray) -> np.ndarray:
    """The ids > 0 with a non-zero count (index = id), increasing."""
    ids = np.flatnonzero(counts)
    return ids[ids > 0]


def object_ids(labels: np.ndarray) -> np.ndarray:
    """The labels > 0 present, increasing: ``np.unique(labels[labels > 0])`` in less memory."""
    return present_ids(label_counts(labels))


def _perimeter_weights(window: np.ndarray) -> np.ndarray:
    """Per pixel of ``window``, what it adds to ``skimage.measure.perimeter(labels == l, 4)`` of
    its object l (0 off the object's border), for all objects at once.

    Outside the window counts as background, so its first and last two rows are exact only at
    the image's own edges: a band needs a halo of 2 rows (whether a halo pixel is a border pixel
    decides the codes of the band's first row, and that needs the row beyond).
    """
    height, width = window.shape
    pad = np.pad(window, 1)

    def shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
        return img[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    same4 = [shifted(pad, dy, dx) == window for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    border = (window > 0) & ~np.logical_and.reduce(same4)
    del same4, pad
    # Border pixels keep their label, others 0, so "neighbour is a border pixel of my object"
    # is one comparison.
    bpad = np.pad(np.where(border, window, 0), 1)
    code = np.ones(window.shape, dtype=np.int64)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        code += 2 * (shifted(bpad, dy, dx) == window)
    for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        code += 10 * (shifted(bpad, dy, dx) == window)
    return np.where(border, _PERIMETER_WEIGHTS[code], 0.0)


class _Band:
    """The foreground pixels of one band of rows: raster positions, rows, columns, object rows.

    ``index`` maps each foreground pixel (raster order) to its object's row 0..n-1 through
    ``lut`` (label -> row), as ``np.unique(..., return_inverse=True)`` would.
    """

    def __init__(self, labels: np.ndarray, r0: int, r1: int, lut: np.ndarray, n: int):
        self.r0, self.r1, self.n = r0, r1, n
        flat = labels[r0:r1].ravel()
        self.fg = np.flatnonzero(flat)
        self.index = lut[flat[self.fg]]
        self.rows, self.cols = np.divmod(self.fg, labels.shape[1])
        self.rows += r0

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-object sums of ``values`` (one per foreground pixel of the band)."""
        return np.bincount(self.index, weights=values, minlength=self.n)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """The band's foreground pixels of a full-size image, in raster order."""
        return image[self.r0 : self.r1].ravel()[self.fg]

    def perimeter_sums(self, labels: np.ndarray) -> np.ndarray:
        """Per-object perimeters of the band's pixels (`_perimeter_weights` with a 2-row halo)."""
        a0, a1 = max(self.r0 - 2, 0), min(self.r1 + 2, labels.shape[0])
        weights = _perimeter_weights(labels[a0:a1])[self.r0 - a0 : self.r1 - a0]
        return self.sums(weights.ravel()[self.fg])


def _band_totals(labels: np.ndarray, lut: np.ndarray, n: int,
                 per_band: Callable[[_Band], list[np.ndarray]]) -> list[np.ndarray]:
    """Sums over the bands of ``per_band(band)``, a list of per-object arrays."""
    total: list[np.ndarray] = []
    for r0, r1 in row_bands(*labels.shape):
        part = per_band(_Band(labels, r0, r1, lut, n))
        total = [t + p for t, p in zip(total, part, strict=True)] if total else part
    return total


def object_table(
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    pixel_size_um: float | None = None,
) -> pd.DataFrame:
    """One row of shape measurements per object.

    The values are those of ``skimage.measure.regionprops_table`` (area,
    equivalent_diameter_area, perimeter, axis_major/minor_length, orientation, centroid,
    intensity_mean), computed for all objects at once with ``np.bincount``: regionprops loops over
    objects in Python and needs ~1 ms per object, too slow for tens of thousands of grains.

    Parameters
    ----------
    labels : (H, W) non-negative int array
        Object ids; 0 is background.
    intensity : (H, W) array, optional
        Grey image in its original units (uint8, uint16 or float), for ``mean_intensity``.
    pixel_size_um : float, optional
        µm per pixel; adds the ``*_um`` / ``*_um2`` columns.

    Returns
    -------
    pandas.DataFrame
        Columns ``label, area_px, equivalent_diameter_px, perimeter_px, major_axis_px,
        minor_axis_px, aspect_ratio, orientation_deg, centroid_y, centroid_x, mean_intensity,
        touches_border`` (+ ``area_um2, equivalent_diameter_um, perimeter_um, major_axis_um,
        minor_axis_um``), one row per label > 0 in increasing label order; no rows when there is
        no object. Axes are those of the moment ellipse and the perimeter is skimage's
        4-connected estimate; ``aspect_ratio`` = major / minor axis (NaN for 1-px-thin objects,
        whose minor axis is 0); ``orientation_deg`` is the major axis' angle to the image x axis,
        counter-clockwise as displayed (y up), in [-90, 90), and 0 for isotropic objects;
        centroids are in pixels, (row, column) order; ``mean_intensity`` is NaN without
        ``intensity``; ``touches_border`` marks objects cut by the image edge, whose size is
        underestimated.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if intensity is not None and np.shape(intensity) != labels.shape:
        raise ValueError(f"intensity shape {np.shape(intensity)} != labels shape {labels.shape}")
    intensity = None if intensity is None else np.asarray(intensity)
    columns = PX_COLUMNS + (UM_COLUMNS if pixel_size_um is not None else [])
    dtypes = {"label": np.int64, "area_px": np.int64, "touches_border": bool}
    if not labels.any():
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, float)) for c in columns})

    counts = label_counts(labels)
    ids = present_ids(counts)
    n = ids.size
    area = counts[ids]
    lut = np.zeros(counts.size, np.int32)
    lut[ids] = np.arange(n, dtype=np.int32)
    del counts

    # Two passes over the bands, as one whole-image pass would do: the centroids first, then the
    # central second moments about them (more accurate than raw moments minus the centroid²).
    sum_y, sum_x = _band_totals(labels, lut, n, lambda b: [b.sums(b.rows), b.sums(b.cols)])
    cy, cx = sum_y / area, sum_x / area

    def second_pass(b: _Band) -> list[np.ndarray]:
        dy, dx = b.rows - cy[b.index], b.cols - cx[b.index]
        sums = [b.sums(dy * dy), b.sums(dx * dx), b.sums(dy * dx), b.perimeter_sums(labels)]
        return sums + ([b.sums(b.pixels(intensity).astype(np.float64))] if intensity is not None else [])

    s_yy, s_xx, s_xy, perimeter, *s_intensity = _band_totals(labels, lut, n, second_pass)
    # Central second moments / area (skimage's inertia tensor is [[m_xx, -m_xy], [-m_xy, m_yy]]).
    m_yy, m_xx, m_xy = s_yy / area, s_xx / area, s_xy / area
    half_trace = (m_yy + m_xx) / 2
    root = np.hypot((m_yy - m_xx) / 2, m_xy)
    major = 4 * np.sqrt(half_trace + root)
    minor = 4 * np.sqrt(np.clip(half_trace - root, 0, None))
    # skimage's orientation (angle from the row axis) is 0.5 * atan2(2 m_xy, m_yy - m_xx);
    # mod 180 - 90 turns it into the angle from the x axis with y up.
    orientation = np.degrees(0.5 * np.arctan2(2 * m_xy, m_yy - m_xx)) % 180.0 - 90.0
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])

    df = pd.DataFrame(
        {
            "label": ids,
            "area_px": area,
            "equivalent_diameter_px": np.sqrt(4 * area / np.pi),
            "perimeter_px": perimeter,
            "major_axis_px": major,
            "minor_axis_px": minor,
            "aspect_ratio": np.divide(major, minor, out=np.full(n, np.nan), where=minor > 0),
            "orientation_deg": np.where(root > 1e-9 * half_trace, orientation, 0.0),
            "centroid_y": cy,
            "centroid_x": cx,
            "mean_intensity": s_intensity[0] / area if s_intensity else np.full(n, np.nan),
            "touches_border": np.isin(ids, edge),
        }
    )
    if pixel_size_um is not None:
        df["area_um2"] = df["area_px"] * pixel_size_um**2
        for name in _LENGTHS:
            df[f"{name}_um"] = df[f"{name}_px"] * pixel_size_um
    return df[columns].astype(dtypes)


def astm_planimetric(labels: np.ndarray, pixel_size_um: float | None) -> dict[str, float]:
    """ASTM E112 / ISO 643 planimetric (Jeffries) grain count over the whole image.

    The image is the test area. Grains entirely inside count 1, grains cut by an edge 1/2, and the
    grain under each of the four corner pixels 1/4 per corner it covers (so 4 corner grains add
    up to 1, and a grain covering the whole image counts 1), as ISO 643 prescribes for a
    rectangular test area.

    Parameters
    ----------
    labels : (H, W) non-negative int array
        Grain ids, 0 = boundary pixels.
    pixel_size_um : float or None
        µm per pixel (at the magnification of the image, i.e. 1x for a calibrated micrograph).

    Returns
    -------
    dict
        ``n_inside``, ``n_border`` (edge grains without a corner), ``n_corner``, ``n_counted``
        (the weighted count), ``N_A_per_mm2`` (grains per mm^2), ``G`` (ASTM grain size number,
        3.321928 log10(N_A) - 2.954) and ``mean_grain_area_um2`` (1 / N_A). The last three are
        NaN without a pixel size, and G and the mean area also without grains.
    """
    labels = np.asarray(labels)
    ids = object_ids(labels)
    corners = labels[[0, 0, -1, -1], [0, -1, 0, -1]]
    corners = corners[corners > 0]
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    n_corner = np.unique(corners).size
    n_border = edge.size - n_corner
    n_inside = ids.size - edge.size
    n_counted = n_inside + 0.5 * n_border + 0.25 * corners.size
    n_a = g = area = math.nan
    if pixel_size_um is not None:
        area_mm2 = labels.size * (pixel_size_um * 1e-3) ** 2
        n_a = n_counted / area_mm2
        if n_counted > 0:
            g = 3.321928 * math.log10(n_a) - 2.954
            area = 1e6 / n_a
    return {
        "n_inside": int(n_inside),
        "n_border": int(n_border),
        "n_corner": int(n_corner),
        "n_counted": float(n_counted),
        "N_A_per_mm2": n_a,
        "G": g,
        "mean_grain_area_um2": area,
    }


def _intersections(lines: np.ndarray) -> int:
    """Grain-boundary crossings along the rows of ``lines`` (n_lines, length).

    Boundary pixels (0) are skipped, so a run of them between two different grains is one
    crossing, and a 0-run inside one grain is none.
    """
    line_id, _ = np.nonzero(lines)
    values = lines[lines > 0]
    return int(np.count_nonzero((values[1:] != values[:-1]) & (line_id[1:] == line_id[:-1])))


def astm_heyn(
    labels: np.ndarray, pixel_size_um: float | None, n_lines: int = 10
) -> dict[str, float]:
    """ASTM E112 lineal intercept (Heyn) grain size on a grid of test lines.

    ``n_lines`` horizontal and ``n_lines`` vertical full-length lines, evenly spaced at the
    centres of equal bands of the image, so that both directions of elongated grains are sampled.
    Each change of grain id along a line is one boundary intersection (P); the line ends are not
    counted.

    Parameters
    ----------
    labels : (H, W) non-negative int array
        Grain ids, 0 = boundary pixels.
    pixel_size_um : float or None
        µm per pixel.
    n_lines : int
        Test lines per direction.

    Returns
    -------
    dict
        ``n_intersections``, ``line_length_mm`` (total), ``mean_intercept_mm`` (line length / P)
        and ``G`` (-6.643856 log10(L_mm) - 3.288); the lengths and G are NaN without a pixel size,
        and the intercept and G without intersections.
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    rows = ((np.arange(n_lines) + 0.5) * height / n_lines).astype(int)
    cols = ((np.arange(n_lines) + 0.5) * width / n_lines).astype(int)
    p = _intersections(labels[rows, :]) + _intersections(labels[:, cols].T)
    length = mean = g = math.nan
    if pixel_size_um is not None:
        length = n_lines * (width + height) * pixel_size_um * 1e-3
        if p > 0:
            mean = length / p
            g = -6.643856 * math.log10(mean) - 3.288
    return {
        "n_intersections": p,
        "line_length_mm": length,
        "mean_intercept_mm": mean,
        "G": g,
    }


def image_summary(
    labels: np.ndarray,
    mode: str,
    pixel_size_um: float | None,
    phase: np.ndarray | None = None,
) -> dict[str, float]:
    """One row of per-image numbers for the results table.

    Parameters
    ----------
    labels : (H, W) non-negative int array
        Object ids (grains or particles), 0 = background / boundary.
    mode : str
        ``"grain"`` adds the ASTM grain size numbers; any other mode (``"phase"``) leaves them NaN,
        since grain size is meaningless for particles.
    pixel_size_um : float or None
        µm per pixel.
    phase : (H, W) array, optional
        Phase mask (non-zero = phase of interest) for the area fraction, or a multi-phase class
        map (0 = matrix, 1..K-1 = phase classes).

    Returns
    -------
    dict
        ``n_objects``, ``mean_area_px``, ``mean_area_um2``, ``astm_g_planimetric``,
        ``astm_g_heyn``, ``phase_fraction`` (fraction of pixels in any phase); NaN where undefined.
        A class map with ids above 1 adds ``fraction_class_<k>``, ``n_objects_class_<k>`` and
        ``mean_area_px_class_<k>`` for k = 1..max id.
    """
    labels = np.asarray(labels)
    areas = label_counts(labels)
    n = present_ids(areas).size
    mean_px = float(areas[1:].sum()) / n if n else math.nan
    grain = mode == "grain"
    row = {
        "n_objects": int(n),
        "mean_area_px": mean_px,
        "mean_area_um2": mean_px * pixel_size_um**2 if pixel_size_um is not None else math.nan,
        "astm_g_planimetric": astm_planimetric(labels, pixel_size_um)["G"] if grain else math.nan,
        "astm_g_heyn": astm_heyn(labels, pixel_size_um)["G"] if grain else math.nan,
        "phase_fraction": float(np.mean(np.asarray(phase) > 0)) if phase is not None else math.nan,
    }
    if phase is not None and np.asarray(phase).max(initial=0) > 1:
        phase = np.asarray(phase)
        class_counts = label_counts(phase)
        row.update({f"fraction_class_{k}": float(class_counts[k] / phase.size) for k in range(1, class_counts.size)})
        ids, classes = object_classes(labels, phase)
        for k in range(1, class_counts.size):
            of_k = areas[ids][classes == k]
            row[f"n_objects_class_{k}"] = int(of_k.size)
            row[f"mean_area_px_class_{k}"] = float(of_k.mean()) if of_k.size else math.nan
    return row


def object_classes(labels: np.ndarray, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object ids (increasing, as in `object_table`) and each one's class in a multi-phase class
    map: the class most of its pixels have. Any number of dimensions (a 3D stack is counted as
    its rows)."""
    labels, phase = np.asarray(labels), np.asarray(phase)
    labels, phase = labels.reshape(-1, labels.shape[-1]), phase.reshape(-1, phase.shape[-1])
    n_classes = int(phase.max(initial=0)) + 1
    pair_counts = np.zeros((int(labels.max(initial=0)) + 1) * n_classes, np.int64)
    for r0, r1 in row_bands(*labels.shape):  # (label, class) pairs, band by band
        pairs = labels[r0:r1].ravel().astype(np.int64) * n_classes + phase[r0:r1].ravel()
        pair_counts += np.bincount(pairs, minlength=pair_counts.size)
    votes = pair_counts.reshape(-1, n_classes)
    ids = present_ids(votes.sum(axis=1))
    return ids, votes[ids].argmax(axis=1)
