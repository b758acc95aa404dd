"""Scores that compare a predicted segmentation with a ground-truth label map.

Grain maps are compared as partitions (adjusted Rand index, variation of information) of the
regions enclosed by the boundaries, the way the official MatSAM code does; phase maps are compared
pixel-wise (IoU, F1, recall), with the official notebook's mean IoU as the headline number.
Multi-phase maps first have their class ids matched to the label's (:func:`match_classes`).
Every function takes an optional ``ignore`` / ``mask`` so that partially labelled images (label 255)
are scored on their labelled pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.measure import label as _label
from skimage.morphology import skeletonize


def split_ignore(
    label: np.ndarray, ignore_value: int = 255
) -> tuple[np.ndarray, np.ndarray | None]:
    """Separate the "unlabelled" value of a label image from its classes.

    Parameters
    ----------
    label : (H, W) int array
        Label map as read from a label PNG.
    ignore_value : int
        Value that marks unlabelled pixels (255 in the shared data).

    Returns
    -------
    label : (H, W) array, same dtype
        Copy with the ignored pixels set to 0 (the input itself when nothing is ignored).
    ignore : (H, W) bool array or None
        True where the pixel is unlabelled; None when no pixel is, so callers can skip masking.
    """
    ignore = label == ignore_value
    if not ignore.any():
        return label, None
    out = label.copy()
    out[ignore] = 0
    return out, ignore


def regions_from_boundaries(boundary: np.ndarray) -> np.ndarray:
    """Label the grains enclosed by a boundary map.

    Equivalent to the official MatSAM ``measure.label(boundary, background=1, connectivity=1)``:
    4-connectivity keeps grains that only touch diagonally through a 1-px boundary apart.

    Parameters
    ----------
    boundary : (H, W) bool or 0/1 array
        True (non-zero) on grain-boundary pixels.

    Returns
    -------
    (H, W) int32 array
        1..N for the 4-connected components of the non-boundary pixels, 0 on boundary pixels.
    """
    return _label(np.asarray(boundary) == 0, connectivity=1).astype(np.int32, copy=False)


def _ids(x: np.ndarray) -> np.ndarray:
    """Labels as int64 in [0, 2**31), so that two of them pack into one int64 key."""
    x = x.astype(np.int64, copy=False)
    if x.size and (x.min() < 0 or x.max() >= 2**31):
        x = np.unique(x, return_inverse=True)[1].ravel()
    return x


class _Table(NamedTuple):
    """Sparse contingency table of two label maps ``a`` (rows) and ``b`` (columns).

    ``n_ij`` holds the non-zero cell counts, ``row``/``col`` the index of each cell's row in
    ``n_a`` and column in ``n_b``, and ``n_a``/``n_b`` the cluster sizes; all int64.
    """

    n_ij: np.ndarray
    row: np.ndarray
    col: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray


def _contingency(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> _Table:
    """Contingency table over the pixels where ``mask`` is True.

    One sort of packed (a, b) keys does the work, so it scales to megapixel images with tens of
    thousands of labels.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in size: {a.size} vs {b.size}")
    if mask is not None:
        keep = np.asarray(mask, dtype=bool).ravel()
        a, b = a[keep], b[keep]
    a, b = _ids(a), _ids(b)
    nb = int(b.max()) + 1 if b.size else 1
    cells, n_ij = np.unique(a * nb + b, return_counts=True)
    rows, cols = np.divmod(cells, nb)
    _, row = np.unique(rows, return_inverse=True)
    _, col = np.unique(cols, return_inverse=True)
    n_a = np.bincount(row, weights=n_ij).astype(np.int64)
    n_b = np.bincount(col, weights=n_ij).astype(np.int64)
    return _Table(n_ij, row, col, n_a, n_b)


def _ari(t: _Table) -> float:
    n = int(t.n_ij.sum())
    if n == 0:
        return float("nan")
    # Pair-confusion counts over ordered pairs (as sklearn): exact in int64 up to ~3e9 pixels;
    # the final products can exceed int64, so they are taken in Python ints.
    sum_sq = int((t.n_ij * t.n_ij).sum())
    tp = sum_sq - n
    fp = int((t.n_b * t.n_b).sum()) - sum_sq
    fn = int((t.n_a * t.n_a).sum()) - sum_sq
    tn = n * n - n - tp - fp - fn
    if fp == 0 and fn == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _vi(t: _Table) -> tuple[float, float]:
    n = t.n_ij.sum()
    if n == 0:
        return 0.0, 0.0
    log_nij = np.log2(t.n_ij)
    # H(b|a) = -sum_ij p_ij log2(p_ij / p_i) with p = counts / n; likewise H(a|b) with p_j.
    h_b_given_a = -float((t.n_ij * (log_nij - np.log2(t.n_a[t.row]))).sum() / n)
    h_a_given_b = -float((t.n_ij * (log_nij - np.log2(t.n_b[t.col]))).sum() / n)
    return h_b_given_a + 0.0, h_a_given_b + 0.0  # + 0.0 turns -0.0 into 0.0


def adjusted_rand_index(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Adjusted Rand index of two partitions (same value as ``sklearn.metrics.adjusted_rand_score``).

    Parameters
    ----------
    a, b : (H, W) int arrays
        Label maps; every distinct value, 0 included, is one cluster.
    mask : (H, W) bool array, optional
        Pixels to compare (all when None).

    Returns
    -------
    float
        1 for identical partitions, ~0 for chance agreement; NaN when no pixel is compared.
    """
    return _ari(_contingency(a, b, mask))


def variation_of_information(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """Split variation of information, as ``skimage.metrics.variation_of_information(a, b)``.

    Same order and unit as scikit-image (>= 0.24) and gala, which the official MatSAM code used:
    conditional entropies in bits, (H(b|a), H(a|b)).

    Parameters
    ----------
    a, b : (H, W) int arrays
        Label maps; every distinct value, 0 included, is one cluster.
    mask : (H, W) bool array, optional
        Pixels to compare (all when None).

    Returns
    -------
    (H(b|a), H(a|b)) : tuple of float, bits
        With ``a`` the truth and ``b`` the prediction: false splits (over-segmentation) and false
        merges (under-segmentation); their sum is the VI distance. (0, 0) when no pixel is compared.
    """
    return _vi(_contingency(a, b, mask))


def line_width(boundary: np.ndarray) -> int:
    """Typical width in px of the lines of a boundary map: line area / skeleton length."""
    boundary = np.asarray(boundary) != 0
    length = int(skeletonize(boundary).sum())
    return max(1, int(round(boundary.sum() / length))) if length else 1


def redraw_lines(boundary: np.ndarray, width: int) -> np.ndarray:
    """The map's skeleton drawn `width` px wide, (H, W) bool.

    Region metrics count boundary pixels as one more region, so the score of a perfect
    segmentation depends on how wide its lines are drawn. Redrawing every method's lines at the
    reference's width compares where the boundaries are, not how thick they are drawn.
    """
    lines = skeletonize(np.asarray(boundary) != 0)
    if width <= 1:
        return lines
    return ndi.binary_dilation(lines, structure=np.ones((width, width), dtype=bool))


def grain_scores(
    pred_boundary: np.ndarray,
    true_boundary: np.ndarray,
    ignore: np.ndarray | None = None,
    match_width: bool = False,
) -> dict[str, float]:
    """Compare two grain-boundary maps as partitions into grains.

    Both maps are turned into regions with :func:`regions_from_boundaries` on the full image,
    boundary pixels staying one extra region 0 as in the official MatSAM evaluation; the
    regions are then compared on the pixels that are not ignored. Ignored pixels act as boundary
    when labelling the truth, so grains of separately labelled blocks (``grain/tbm_full``) are not
    merged into one region through the unlabelled area around them.

    Parameters
    ----------
    pred_boundary, true_boundary : (H, W) bool or 0/1 arrays
        True on boundary pixels.
    ignore : (H, W) bool array, optional
        True on unlabelled pixels (see :func:`split_ignore`).
    match_width : bool
        Redraw the predicted lines at the reference's line width first (:func:`redraw_lines`).

    Returns
    -------
    dict
        ``ari`` (adjusted Rand index, higher is better) and ``vi`` (variation of information in
        bits, H(pred|true) + H(true|pred), lower is better).
    """
    true_boundary = np.asarray(true_boundary) != 0
    if match_width:
        pred_boundary = redraw_lines(pred_boundary, line_width(true_boundary))
    valid = None
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        true_boundary = true_boundary | ignore
        valid = ~ignore
    table = _contingency(
        regions_from_boundaries(true_boundary), regions_from_boundaries(pred_boundary), valid
    )
    return {"ari": _ari(table), "vi": sum(_vi(table))}


def per_class_iou(
    pred: np.ndarray, true: np.ndarray, n_classes: int, ignore: np.ndarray | None = None
) -> np.ndarray:
    """IoU of each class of a multi-class label map.

    Parameters
    ----------
    pred, true : (H, W) non-negative int arrays
        Class ids 0..n_classes-1; other ids in ``pred`` count as wrong for every class.
    n_classes : int
        Number of classes K.
    ignore : (H, W) bool array, optional
        Pixels left out of every count.

    Returns
    -------
    (K,) float64 array
        ``|pred==c & true==c| / |pred==c | true==c|``; 1.0 for a class absent from both maps
        (nothing to get wrong), so absent classes do not turn means into NaN.
    """
    pred = np.asarray(pred).ravel()
    true = np.asarray(true).ravel()
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool).ravel()
        pred, true = pred[keep], true[keep]
    inter = np.bincount(true[pred == true], minlength=n_classes)[:n_classes]
    area_true = np.bincount(true, minlength=n_classes)[:n_classes]
    area_pred = np.bincount(pred, minlength=n_classes)[:n_classes]
    union = area_true + area_pred - inter
    return np.divide(inter, union, out=np.ones(n_classes), where=union > 0)


def multiclass_miou(pred: np.ndarray, true: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Mean IoU as in the official MatSAM notebook (``Metric.get_iou``).

    The mean runs over the class ids ``0..max(true)`` (max over the non-ignored pixels), so a
    binary image whose truth has no foreground is scored on its background IoU alone.

    Parameters
    ----------
    pred, true : (H, W) non-negative int arrays
        Class-id maps (0/1 for binary phases, never 0/255).
    ignore : (H, W) bool array, optional
        Pixels left out.

    Returns
    -------
    float
        Mean of :func:`per_class_iou`; NaN when every pixel is ignored.
    """
    true = np.asarray(true)
    valid = true if ignore is None else true[~np.asarray(ignore, dtype=bool)]
    if valid.size == 0:
        return float("nan")
    return float(per_class_iou(pred, true, int(valid.max()) + 1, ignore).mean())


def phase_scores(
    pred: np.ndarray, true: np.ndarray, ignore: np.ndarray | None = None
) -> dict[str, float]:
    """Pixel scores of a binary phase map.

    Parameters
    ----------
    pred, true : (H, W) 0/1 or bool arrays
        1 (True) on the phase of interest.
    ignore : (H, W) bool array, optional
        Pixels left out.

    Returns
    -------
    dict
        ``iou`` foreground IoU, ``miou`` notebook mean IoU (:func:`multiclass_miou`), ``f1``
        foreground F1 (= Dice) and ``recall`` foreground recall. When a denominator is empty
        (no foreground in either map, or none in the truth for recall) the score is 1.0: nothing
        was missed or falsely added.
    """
    pred = np.asarray(pred) != 0
    true = np.asarray(true) != 0
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        pred, true = pred[keep], true[keep]
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(true)) - tp
    return {
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "miou": multiclass_miou(pred.astype(np.uint8), true.astype(np.uint8)),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }


CLASS_IOU_PREFIX = "iou_class_"  # per-class IoU keys (metrics.csv columns) of multi-phase scores


def match_classes(
    pred: np.ndarray, true: np.ndarray, ignore: np.ndarray | None = None
) -> np.ndarray:
    """Renumber the predicted phase classes to the label classes they overlap most.

    A prediction's class ids (intensity classes, dark to bright) say nothing about a label's
    ids, so each predicted class >= 1 is paired with one label class >= 1 by a maximum-overlap
    assignment (Hungarian, on the confusion matrix of the non-ignored pixels); 0 stays 0 (matrix /
    background on both sides).

    Parameters
    ----------
    pred, true : (H, W) non-negative int arrays
        Class-id maps; 0 = matrix.
    ignore : (H, W) bool array, optional
        Pixels left out of the overlap counts.

    Returns
    -------
    (H, W) int64 array
        ``pred`` in the label's ids. A predicted class left without a partner (more predicted
        than label classes) gets ``max(true) + 1``, an id that is wrong for every label class.
    """
    pred = np.asarray(pred).astype(np.int64)
    true = np.asarray(true).astype(np.int64)
    keep = slice(None) if ignore is None else ~np.asarray(ignore, dtype=bool)
    p, t = pred[keep].ravel(), true[keep].ravel()
    n_true = int(true.max(initial=0)) + 1
    spare = n_true  # first id outside the label's classes
    pred_ids = np.unique(pred[pred > 0])
    lookup = np.zeros(int(pred.max(initial=0)) + 1, np.int64)
    lookup[pred_ids] = spare
    if pred_ids.size and n_true > 1:
        both = (p > 0) & (t > 0)
        overlap = np.zeros((pred_ids.size, n_true - 1), np.int64)  # predicted x label classes >= 1
        np.add.at(overlap, (np.searchsorted(pred_ids, p[both]), t[both] - 1), 1)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        lookup[pred_ids[rows]] = cols + 1
    return lookup[pred]


def multiclass_scores(
    pred: np.ndarray, true: np.ndarray, ignore: np.ndarray | None = None
) -> dict[str, float]:
    """Pixel scores of a multi-phase class map (0 = matrix) against a multi-class label.

    ``iou``, ``f1`` and ``recall`` are those of :func:`phase_scores` on the foreground (any class
    >= 1), so they compare with binary methods. After :func:`match_classes`, ``miou`` is the
    notebook mean IoU (:func:`multiclass_miou`, classes 0..max(true)) and ``iou_class_<k>`` the IoU
    of label class k for k = 1..max(true); a binary mask scored this way shows that it cannot
    separate the classes. For 0/1 maps the numbers equal :func:`phase_scores`'.
    """
    matched = match_classes(pred, true, ignore)
    true = np.asarray(true)
    scores = phase_scores(matched, true, ignore)
    scores["miou"] = multiclass_miou(matched, true, ignore)
    valid = true if ignore is None else true[~np.asarray(ignore, dtype=bool)]
    n_classes = int(valid.max(initial=0)) + 1
    per_class = per_class_iou(matched, true, n_classes, ignore)
    scores.update({f"{CLASS_IOU_PREFIX}{k}": float(per_class[k]) for k in range(1, n_classes)})
    return scores


METRIC_COLUMNS = ["image", "method", "ari", "vi", "iou", "miou", "f1", "recall"]


def score(mode: str, predicted_map: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Metrics of one prediction against a label map (255 = unlabelled).

    Phase maps are scored multi-class (classes matched by overlap, `iou_class_<k>` columns) when
    the label or the prediction has a class id above 1; binary ones exactly as before.
    """
    truth, ignore = split_ignore(label)
    if mode == "grain":
        return grain_scores(predicted_map.astype(bool), truth.astype(bool), ignore, match_width=True)
    if max(int(truth.max(initial=0)), int(predicted_map.max(initial=0))) > 1:
        return multiclass_scores(predicted_map, truth, ignore)
    return phase_scores((predicted_map > 0).astype(np.uint8), (truth > 0).astype(np.uint8), ignore)


def metric_columns(columns: Sequence[str]) -> list[str]:
    """METRIC_COLUMNS, then the per-class IoU columns among `columns` in class order."""
    per_class = [c for c in columns if str(c).startswith(CLASS_IOU_PREFIX)
                 and str(c)[len(CLASS_IOU_PREFIX):].isdigit()]
    return METRIC_COLUMNS + sorted(set(per_class), key=lambda c: int(c[len(CLASS_IOU_PREFIX):]))
