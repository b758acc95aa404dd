"""From per-crop masks to one image: cross-crop NMS, then a label image with no overlaps.

Grain images become a tessellation (every pixel in one grain) with a one-pixel boundary map;
phase images become the objects of the phase of interest, chosen mask by mask from which side
of the pre-segmentation threshold their pixels lie on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.measure import label as connected_label
from skimage.segmentation import relabel_sequential, watershed

from .baselines import watershed_boundaries
from .config import MergeConfig
from .crops import Crop
from .masks import CropMasks
from .nms import nms
from .prompts import to_gray8


@dataclass
class Candidate:
    """A mask placed in the image frame: its crop-frame bool mask plus the crop offset."""

    mask: np.ndarray  # (h, w) bool, cropped to the mask's own box
    x0: int
    y0: int
    crop_area: int
    score: float

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h


def touches_inner_edge(box: np.ndarray, crop: Crop, height: int, width: int, tolerance: int) -> bool:
    """True when a mask box (crop frame) reaches a crop edge that is not an image edge: the
    object continues outside the crop, so another crop holds the whole of it."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return bool(
        (crop.x0 > 0 and x0 <= tolerance)
        or (crop.y0 > 0 and y0 <= tolerance)
        or (crop.x1 < width and x1 >= crop.width - tolerance)
        or (crop.y1 < height and y1 >= crop.height - tolerance)
    )


def candidates(crops: list[Crop], crop_masks: list[CropMasks], height: int, width: int,
               cfg: MergeConfig) -> list[Candidate]:
    """Unpack every kept mask into the image frame, dropping crop-cut and tiny masks."""
    out: list[Candidate] = []
    for crop, masks in zip(crops, crop_masks):
        for i in range(len(masks)):
            area = int(masks.areas[i])
            if area < cfg.min_object_area:
                continue
            box = masks.boxes[i]
            if crop.layer > 0 and touches_inner_edge(box, crop, height, width, cfg.crop_edge_tolerance):
                continue
            x0, y0, x1, y1 = (int(v) for v in box)
            full = masks.mask(i)
            out.append(Candidate(full[y0:y1, x0:x1], crop.x0 + x0, crop.y0 + y0, crop.area,
                                 float(masks.scores[i])))
    return out


def cross_crop_nms(cands: list[Candidate], threshold: float) -> list[Candidate]:
    """Box NMS over all crops, preferring masks from smaller crops (they saw the object at a
    higher resolution), then higher predicted IoU."""
    if len(cands) <= 1:
        return cands
    boxes = np.array([c.box for c in cands])
    preference = sorted(range(len(cands)), key=lambda i: (cands[i].crop_area, -cands[i].score))
    scores = np.empty(len(cands))
    scores[preference] = np.linspace(1.0, 0.0, len(cands))
    keep = nms(boxes, scores, threshold)
    return [cands[int(i)] for i in keep]


def phase_fraction(cand: Candidate, phase_side: np.ndarray) -> float:
    x0, y0, x1, y1 = cand.box
    return float(phase_side[y0:y1, x0:x1][cand.mask].mean())


def paint(cands: list[Candidate], height: int, width: int) -> np.ndarray:
    """Label image where smaller masks are painted over larger ones.

    A mask that spans several objects is then cut back by the masks of those objects, and a mask
    of one object survives inside a coarser one. Labels are 1..N in painting order.
    """
    labels = np.zeros((height, width), np.int32)
    order = sorted(range(len(cands)), key=lambda i: -cands[i].area)
    for new_id, i in enumerate(order, start=1):
        c = cands[i]
        x0, y0, x1, y1 = c.box
        labels[y0:y1, x0:x1][c.mask] = new_id
    return labels


def drop_small_pieces(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Split labels into connected pieces and remove pieces smaller than `min_area`."""
    pieces = connected_label(labels, background=0, connectivity=1)
    areas = np.bincount(pieces.ravel())
    small = areas < min_area
    small[0] = False
    pieces[small[pieces]] = 0
    return relabel_sequential(pieces)[0].astype(np.int32)


def fill_gaps(labels: np.ndarray, gray: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Give every unlabelled pixel to a grain.

    Wide unlabelled regions (no prompt found that grain) become grains of their own; thin gaps
    (boundary lines, slivers between masks) go to the neighbour across the weaker image gradient,
    by a watershed flooding from the existing labels.
    """
    unlabelled = (labels == 0).astype(np.uint8)
    radius = cfg.gap_grain_radius
    if radius > 0 and unlabelled.any():
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        wide = cv2.morphologyEx(unlabelled, cv2.MORPH_OPEN, kernel)
        n, new = cv2.connectedComponents(wide, connectivity=4)
        if n > 1:
            areas = np.bincount(new.ravel(), minlength=n)
            keep = (areas >= cfg.min_object_area) & (np.arange(n) > 0)
            ids = np.cumsum(keep) * keep + labels.max()
            labels = np.where(keep[new], ids[new], labels).astype(np.int32)
    if not (labels == 0).any():
        return labels
    if labels.max() == 0:
        return np.ones_like(labels)
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (3, 3), 0)
    gradient = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    return watershed(gradient, markers=labels).astype(np.int32)


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """One-pixel boundaries: a pixel is marked when its right or lower neighbour has another label.

    Two unmarked 4-neighbours therefore always share a label, so the 4-connected regions of the
    unmarked pixels reproduce the grains (what the evaluation relies on). (H, W) uint8 0/1.
    """
    b = np.zeros(labels.shape, dtype=bool)
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return b.astype(np.uint8)


def add_watershed_grains(labels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Unlabelled pixels take the grains of the classic colour-gradient watershed.

    Where no prompt gave a mask that passed SAM's filters, SAM says nothing; the watershed still
    finds grain-sized regions there. On low-contrast tint-etched grains, where SAM's filters
    accept masks for only a third of the image, this lifts the ARI above both SAM's masks alone
    and the watershed alone (benchmarks/results/accuracy.md).
    """
    lines = watershed_boundaries(rgb)
    regions = connected_label(~lines, background=0, connectivity=1)
    gap = (labels == 0) & (regions > 0)
    out = labels.copy()
    out[gap] = regions[gap] + labels.max()
    return out


def merge_grains(cands: list[Candidate], rgb: np.ndarray, cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Grain labels (H, W) uint32 covering every pixel, and their boundary map (H, W) uint8."""
    gray = to_gray8(rgb)
    height, width = gray.shape
    labels = drop_small_pieces(paint(cands, height, width), cfg.min_object_area)
    if cfg.gap_grains == "watershed":
        labels = drop_small_pieces(add_watershed_grains(labels, rgb), cfg.min_object_area)
    labels = fill_gaps(labels, gray, cfg)
    labels = relabel_sequential(connected_label(labels, background=-1, connectivity=1))[0]
    return labels.astype(np.uint32), boundary_map(labels)


def merge_phase(cands: list[Candidate], phase_side: np.ndarray, cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Objects of the phase of interest (H, W) uint32 (0 = matrix) and the phase mask (H, W) uint8."""
    height, width = phase_side.shape
    chosen = [c for c in cands if phase_fraction(c, phase_side) >= cfg.phase_min_fraction]
    labels = drop_small_pieces(paint(chosen, height, width), cfg.min_object_area)
    if cfg.keep_missed_regions:
        labels = add_missed_regions(labels, phase_side, cfg.min_object_area)
    return labels.astype(np.uint32), (labels > 0).astype(np.uint8)


def add_missed_regions(labels: np.ndarray, phase_side: np.ndarray, min_area: int) -> np.ndarray:
    """Add the phase-side regions (8-connected) that no object overlaps, as new objects."""
    n, regions = cv2.connectedComponents(phase_side.astype(np.uint8), connectivity=8)
    missed = np.bincount(regions.ravel(), minlength=n) >= min_area
    missed[0] = False
    missed[np.unique(regions[labels > 0])] = False
    ids = np.cumsum(missed) * missed + labels.max()
    return np.where(missed[regions], ids[regions], labels).astype(np.int32)
