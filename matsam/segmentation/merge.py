"""From per-crop masks to one image: cross-crop NMS, then a label image with no overlaps.

Grain images become a tessellation (every pixel in one grain) with a one-pixel boundary map;
phase images become the objects of the phase of interest, chosen mask by mask from which side
of the pre-segmentation threshold their pixels lie on (or, with more than two phases, from which
multi-level Otsu intensity class).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import combinations

import cv2
import numpy as np
from skimage.filters import threshold_multiotsu
from skimage.measure import label as connected_label
from skimage.segmentation import relabel_sequential, watershed

from matsam.config import MergeConfig, Mode
from matsam.imaging import blurred, boundary_map, colour_watershed_lines, grey8
from matsam.segmentation.crops import Crop
from matsam.segmentation.masks import CropMasks
from matsam.segmentation.nms import nms
from matsam.segmentation.phases import feature_classes

Box = tuple[int, int, int, int]


@dataclass
class Candidate:
    """A mask placed in the image frame: its crop-frame bool mask plus the crop offset."""

    mask: np.ndarray  # (h, w) bool, cropped to the mask's own box
    x0: int
    y0: int
    crop_area: int
    score: float
    crop_index: int = 0

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h


def merge_image(rgb: np.ndarray, crops: list[Crop], crop_masks: Iterable[CropMasks], mode: Mode,
                cfg: MergeConfig, blur: int, threshold: float = 0.0, foreground: str = "dark",
                tiled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One image's objects from its crops' masks: labels (H, W) uint32 and the map (H, W) uint8
    (grain: boundaries 0/1; phase: 0/1, or class ids 0..n_phases-1 with `n_phases` > 2).

    crop_masks: one per crop, taken one at a time (a generator keeps one tile's masks in memory).
    blur, threshold, foreground: the pre-segmentation's smoothing and Otsu split (phase mode).
    tiled: the crops are the tiles of a huge image (crops.tile_boxes).
    """
    height, width = rgb.shape[:2]
    cands = cross_crop_nms(candidates(crops, crop_masks, height, width, cfg, tiled), cfg.crop_nms_thresh)
    if mode == "grain":
        return merge_grains(cands, rgb, cfg, crops if tiled else None)
    gray = grey8(rgb)
    smooth = blurred(gray, blur)
    side, depth = phase_side(smooth, threshold, foreground)
    labels, mask = merge_phase(cands, side, cfg, depth)
    if cfg.n_phases > 2:
        labels, mask = multiphase_classes(cands, labels, gray, smooth, cfg)
    return labels, mask


def phase_side(smooth: np.ndarray, threshold: float, foreground: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the smoothed grey image on the phase side of the pre-segmentation threshold,
    (H, W) bool, and how far each pixel's grey lies into the phase, (H, W) float32: 0 at the
    threshold, 1 at the mean grey of the phase side, negative on the matrix side."""
    side = smooth <= threshold if foreground == "dark" else smooth > threshold
    offset = (threshold - smooth.astype(np.float32)) if foreground == "dark" else (smooth - np.float32(threshold))
    scale = float(offset[side].mean()) if side.any() else 1.0
    return side, offset / max(scale, 1e-6)


def multiphase_classes(cands: list[Candidate], labels: np.ndarray, gray: np.ndarray, smooth_gray: np.ndarray,
                       cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Objects (H, W) uint32 and class map (H, W) uint8 for `cfg.n_phases` > 2 classes.

    labels: the binary merge's phase objects (SAM objects, small ones trimmed to the threshold,
    missed regions). `phase_classes: features` classes them by their features
    (phases.feature_classes); `grey` replaces them by the multi-level Otsu split
    (`merge_multiphase`); `auto` takes the features when they split the objects cleanly into
    `n_phases - 1` classes and the grey split otherwise: then the phases differ in grey alone,
    possibly on both sides of the matrix, which one threshold against the matrix cannot find.
    """
    if cfg.phase_classes != "grey":
        classes = feature_classes(labels, gray, cfg)
        if cfg.phase_classes == "features" or int(classes.max()) == cfg.n_phases - 1:
            return labels.astype(np.uint32), classes
    return merge_multiphase(cands, smooth_gray, cfg)


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


def candidates(crops: list[Crop], crop_masks: Iterable[CropMasks], height: int, width: int,
               cfg: MergeConfig, tiled: bool = False) -> list[Candidate]:
    """Unpack every kept mask into the image frame, dropping crop-cut and tiny masks; of a tiled
    image, the pieces of an object cut in every tile that holds it are stitched (`stitch_pieces`)."""
    out: list[Candidate] = []
    pieces: list[Candidate] = []
    for crop, masks in zip(crops, crop_masks):
        for i in range(len(masks)):
            area = int(masks.areas[i])
            if area < cfg.min_object_area:
                continue
            box = masks.boxes[i]
            cut = crop.layer > 0 and touches_inner_edge(box, crop, height, width, cfg.crop_edge_tolerance)
            if cut and not tiled:
                continue
            cand = Candidate(masks.box_mask(i, box), crop.x0 + int(box[0]), crop.y0 + int(box[1]), crop.area,
                             float(masks.scores[i]), crop.index)
            (pieces if cut else out).append(cand)
    if not tiled:
        return out
    whole = [(t.x0, t.y0, t.x1, t.y1) for t in crops]
    stitched = [c for c in stitch_pieces(pieces, crops)
                if not any(holds_whole(t, c.box, height, width, cfg.crop_edge_tolerance) for t in whole)]
    return out + stitched


def holds_whole(tile: Box, box: Box, height: int, width: int, tolerance: int) -> bool:
    """True when `box` (image frame) lies inside `tile` clear of its inner edges: that tile holds
    the object whole, so its pieces from the other tiles are duplicates."""
    x0, y0, x1, y1 = tile
    inside = x0 <= box[0] and y0 <= box[1] and box[2] <= x1 and box[3] <= y1
    return inside and not touches_inner_edge(np.array([box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]),
                                             Crop(0, 1, *tile), height, width, tolerance)


def stitch_pieces(pieces: list[Candidate], tiles: list[Crop], min_iou: float = 0.5) -> list[Candidate]:
    """Objects larger than the tiles' overlap are cut in every tile that holds them: pieces of
    neighbouring tiles that cover the same pixels of the two tiles' overlap (IoU >= `min_iou`
    there, each the other's best match) are joined, transitively (union-find), into one
    candidate. A piece that matches none is dropped: its object lies whole in a neighbour (and
    so does a joined object that fits in one tile, `holds_whole`)."""
    parent: dict[int, int] = {}
    by_tile: dict[int, list[int]] = defaultdict(list)
    for k, piece in enumerate(pieces):
        by_tile[piece.crop_index].append(k)
    boxes = {t.index: (t.x0, t.y0, t.x1, t.y1) for t in tiles}
    for a, b in combinations(sorted(by_tile), 2):
        region = box_intersection(boxes[a], boxes[b])
        if region is not None:
            for i, j in mutual_best_matches(pieces, by_tile[a], by_tile[b], region, min_iou):
                parent[union_root(parent, i)] = union_root(parent, j)
    groups: dict[int, list[Candidate]] = defaultdict(list)
    for k, piece in enumerate(pieces):
        groups[union_root(parent, k)].append(piece)
    return [union_candidate(group) for group in groups.values() if len(group) > 1]


def union_root(parent: dict[int, int], k: int) -> int:
    """The root of `k` in a union-find forest kept as child -> parent (an absent key is a root)."""
    while parent.get(k, k) != k:
        k = parent[k]
    return k


def box_intersection(a: Box, b: Box) -> Box | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def pixels_in(cand: Candidate, box: Box) -> np.ndarray:
    """The candidate's mask over `box` (image frame, inside the candidate's box)."""
    return cand.mask[box[1] - cand.y0 : box[3] - cand.y0, box[0] - cand.x0 : box[2] - cand.x0]


def area_in(cand: Candidate, region: Box) -> int:
    inside = box_intersection(cand.box, region)
    return 0 if inside is None else int(np.count_nonzero(pixels_in(cand, inside)))


def mutual_best_matches(cands: list[Candidate], first: list[int], second: list[int], region: Box,
                        min_iou: float) -> list[tuple[int, int]]:
    """Pairs (i from `first`, j from `second`) whose masks inside `region` have IoU >= `min_iou`
    and are each other's best match there (pixels compared only where both boxes meet)."""
    left = [(i, n) for i in first if (n := area_in(cands[i], region))]
    right = [(j, n) for j in second if (n := area_in(cands[j], region))]
    if not left or not right:
        return []
    iou = np.zeros((len(left), len(right)))
    for r, (i, area_i) in enumerate(left):
        for c, (j, area_j) in enumerate(right):
            both = box_intersection(cands[i].box, cands[j].box)
            shared = box_intersection(both, region) if both else None
            if shared:
                overlap = np.count_nonzero(pixels_in(cands[i], shared) & pixels_in(cands[j], shared))
                iou[r, c] = overlap / (area_i + area_j - overlap)
    best_right, best_left = iou.argmax(axis=1), iou.argmax(axis=0)
    return [(left[r][0], right[c][0]) for r, c in enumerate(best_right)
            if best_left[c] == r and iou[r, c] >= min_iou]


def union_candidate(group: list[Candidate]) -> Candidate:
    """One candidate covering the union of the pieces' pixels."""
    x0, y0 = min(c.x0 for c in group), min(c.y0 for c in group)
    x1, y1 = max(c.box[2] for c in group), max(c.box[3] for c in group)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for c in group:
        h, w = c.mask.shape
        mask[c.y0 - y0 : c.y0 - y0 + h, c.x0 - x0 : c.x0 - x0 + w] |= c.mask
    return Candidate(mask, x0, y0, min(c.crop_area for c in group), max(c.score for c in group),
                     group[0].crop_index)


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


def is_phase_object(cand: Candidate, phase_side: np.ndarray, depth: np.ndarray | None, cfg: MergeConfig) -> bool:
    """Phase when most of the mask's pixels are past the threshold, or (with `depth`) when the
    mask is phase-coloured on average and stands out from its surroundings (`local_contrast`)."""
    if phase_fraction(cand, phase_side) >= cfg.phase_min_fraction:
        return True
    if depth is None or cfg.phase_min_contrast <= 0:
        return False
    inside, ring = local_contrast(cand, depth)
    return inside > 0 and inside - ring >= cfg.phase_min_contrast


def local_contrast(cand: Candidate, depth: np.ndarray) -> tuple[float, float]:
    """Mean depth inside the mask and in a ring around it (a tenth of the mask's size wide, at
    least 2 px; no ring when the mask covers its whole window)."""
    height, width = depth.shape
    r = max(2, int(round(np.sqrt(cand.area) / 10)))
    x0, y0, x1, y1 = cand.box
    wx0, wy0, wx1, wy1 = max(x0 - r, 0), max(y0 - r, 0), min(x1 + r, width), min(y1 + r, height)
    mask = np.zeros((wy1 - wy0, wx1 - wx0), np.uint8)
    mask[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = cand.mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    ring = (cv2.dilate(mask, disc) > 0) & (mask == 0)
    window = depth[wy0:wy1, wx0:wx1]
    inside = float(window[mask > 0].mean())
    return inside, float(window[ring].mean()) if ring.any() else inside


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
    pieces = connected_label(labels, background=0, connectivity=1)  # 1..N
    kept = np.bincount(pieces.ravel()) >= min_area
    kept[0] = False
    return (np.cumsum(kept) * kept).astype(np.int32)[pieces]  # kept pieces renumbered 1..K in order


def fill_gaps(labels: np.ndarray, rgb: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Give every unlabelled pixel to a grain.

    Wide unlabelled areas (no prompt gave a mask that passed SAM's filters there) become grains
    of their own: split into the grains of the classic colour-gradient watershed
    (`gap_grains: watershed`), or one grain per connected area (`whole`). On low-contrast
    tint-etched grains, where SAM's masks cover only a third of the image, the watershed split
    lifts the ARI above both SAM's masks alone and the watershed alone
    (benchmarks/README.md). Thin gaps (boundary lines, slivers between masks) go to the
    neighbour across the weaker image gradient, by a watershed flooding from the labels.
    """
    gray = grey8(rgb)
    unlabelled = (labels == 0).astype(np.uint8)
    radius = cfg.gap_grain_radius
    if radius > 0 and unlabelled.any():
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        wide = cv2.morphologyEx(unlabelled, cv2.MORPH_OPEN, kernel)
        if not wide.any():  # no wide gap: the colour watershed (most of the time here) is not needed
            n = 1
        elif cfg.gap_grains == "watershed":
            regions = connected_label(~colour_watershed_lines(rgb), background=0, connectivity=1)
            new = drop_thin_pieces(np.where(wide > 0, regions, 0), radius)
            n = int(new.max()) + 1
        else:
            n, new = cv2.connectedComponents(wide, connectivity=4)
        if n > 1:
            areas = np.bincount(new.ravel(), minlength=n)
            keep = (areas >= cfg.min_object_area) & (np.arange(n) > 0)
            ids = (np.cumsum(keep) * keep + labels.max()).astype(np.int32)  # int32 lookups: no int64 image
            labels = np.where(keep[new], ids[new], labels).astype(np.int32, copy=False)
    if not (labels == 0).any():
        return labels
    if labels.max() == 0:
        return np.ones_like(labels)
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (3, 3), 0)
    gradient = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    return watershed(gradient, markers=labels).astype(np.int32)


def drop_thin_pieces(pieces: np.ndarray, radius: int) -> np.ndarray:
    """Remove labelled pieces narrower than 2 x `radius` px (largest inscribed radius), relabelled 1..N.

    Cutting a wide gap along watershed lines leaves slivers where a watershed grain only grazes
    the gap; as grains of their own they would be spurious, as gap pixels they go to a neighbour.
    """
    pieces = relabel_sequential(pieces)[0]
    inner = (pieces > 0) & (boundary_map(pieces) == 0)
    depth = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)
    widest = np.zeros(int(pieces.max()) + 1, np.float32)
    np.maximum.at(widest, pieces.ravel(), depth.ravel())
    thin = widest < radius
    thin[0] = False
    pieces[thin[pieces]] = 0
    return relabel_sequential(pieces)[0]


def merge_grains(cands: list[Candidate], rgb: np.ndarray, cfg: MergeConfig,
                 tiles: list[Crop] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grain labels (H, W) uint32 covering every pixel, and their boundary map (H, W) uint8.

    tiles: the tiles of a huge image; gaps are then filled window by window (`fill_gaps_by_window`).
    """
    height, width = rgb.shape[:2]
    labels = drop_small_pieces(paint(cands, height, width), cfg.min_object_area)
    labels = fill_gaps_by_window(labels, rgb, cfg, tiles) if tiles else fill_gaps(labels, rgb, cfg)
    labels = connected_label(labels, background=-1, connectivity=1).astype(np.uint32)  # 1..N, raster order
    return labels, boundary_map(labels)


def own_parts(tiles: list[Crop]) -> list[tuple[Box, Box]]:
    """Each tile's own part of the image and the tile itself, (x0, y0, x1, y1) each: tiles of a
    row-major grid split their overlaps in the middle, so the parts tile the image exactly."""
    def cuts(spans: list[tuple[int, int]]) -> list[int]:
        return [0] + [(nxt[0] + cur[1]) // 2 for cur, nxt in zip(spans, spans[1:])] + [spans[-1][1]]

    xs = sorted({(t.x0, t.x1) for t in tiles})
    ys = sorted({(t.y0, t.y1) for t in tiles})
    cx, cy = cuts(xs), cuts(ys)
    return [((cx[i], cy[j], cx[i + 1], cy[j + 1]), (xs[i][0], ys[j][0], xs[i][1], ys[j][1]))
            for j in range(len(ys)) for i in range(len(xs))]


def fill_gaps_by_window(labels: np.ndarray, rgb: np.ndarray, cfg: MergeConfig, tiles: list[Crop],
                        min_iou: float = 0.5) -> np.ndarray:
    """`fill_gaps` of a huge image, one tile at a time, so that its whole-image temporaries (the
    colour gradient, two watersheds: ~150 bytes a pixel) stay the size of a tile.

    Each tile's own part (`own_parts`) is filled from the tile, which reaches half the tiles'
    overlap beyond it on every side. A gap grain that crosses into a finished part is found
    twice; where the two cover the same pixels of that margin (IoU > `min_iou`), they are one
    grain (union-find over the new ids)."""
    height, width = labels.shape
    out = labels.copy()
    done = np.zeros((height, width), bool)
    first_new = next_id = int(labels.max()) + 1
    parent: dict[int, int] = {}
    for (x0, y0, x1, y1), (wx0, wy0, wx1, wy1) in own_parts(tiles):
        window = np.s_[wy0:wy1, wx0:wx1]
        before = labels[window]
        top = before.max()
        filled = fill_gaps(before, rgb[window], cfg)
        new = filled > top  # gap grains, numbered after the tile's own labels
        filled[new] += next_id - 1 - top
        next_id = max(next_id, int(filled.max()) + 1)
        margin = done[window]
        for b, a in joined_ids(filled, out[window], new & margin & (out[window] >= first_new), margin, min_iou):
            parent[union_root(parent, int(b))] = union_root(parent, int(a))
        out[y0:y1, x0:x1] = filled[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
        done[y0:y1, x0:x1] = True
    if not parent:
        return out
    lut = np.arange(next_id, dtype=np.int32)
    lut[list(parent)] = [union_root(parent, k) for k in parent]
    return lut[out]


def joined_ids(mine: np.ndarray, theirs: np.ndarray, both: np.ndarray, region: np.ndarray,
               min_iou: float) -> list[tuple[int, int]]:
    """Pairs (my id, their id) whose pixels inside `region` have IoU > `min_iou` (so each id has at
    most one partner); `both`: the region's pixels where both sides hold a new id."""
    if not both.any():
        return []
    pairs, overlap = np.unique(np.stack([mine[both], theirs[both]]), axis=1, return_counts=True)
    mine_area = dict(zip(*np.unique(mine[region], return_counts=True)))
    theirs_area = dict(zip(*np.unique(theirs[region], return_counts=True)))
    return [(b, a) for (b, a), n in zip(pairs.T, overlap)
            if n > min_iou * (mine_area[b] + theirs_area[a] - n)]


def merge_phase(cands: list[Candidate], phase_side: np.ndarray, cfg: MergeConfig,
                depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Objects of the phase of interest (H, W) uint32 (0 = matrix) and the phase mask (H, W) uint8.

    `depth` (H, W): how far each pixel's grey lies into the phase, 0 at the threshold and 1 at
    the phase's mean grey; missed regions need a mean depth of `cfg.missed_min_depth`.
    """
    chosen = [c for c in cands if is_phase_object(c, phase_side, depth, cfg)]
    labels = phase_objects(chosen, [phase_side], cfg, depth)
    return labels.astype(np.uint32), (labels > 0).astype(np.uint8)


def phase_objects(chosen: list[Candidate], sides: list[np.ndarray], cfg: MergeConfig,
                  depth: np.ndarray | None = None) -> np.ndarray:
    """Trim small objects to the phase side, paint the chosen masks, drop small pieces, then
    (`keep_missed_regions`) add each side's regions that no object touched: the part shared by
    the two- and the multi-phase merge."""
    height, width = sides[0].shape
    chosen = trim_small_objects(chosen, np.logical_or.reduce(sides), cfg.small_object_cells)
    labels = drop_small_pieces(paint(chosen, height, width), cfg.min_object_area)
    if cfg.keep_missed_regions:
        for side in sides:
            labels = add_missed_regions(labels, side, cfg.missed_min_area, depth, cfg.missed_min_depth)
    return labels


def trim_small_objects(cands: list[Candidate], phase_side: np.ndarray, cells: float) -> list[Candidate]:
    """Objects less than `cells` low-resolution mask cells across keep only their phase-side pixels.

    SAM predicts masks on a 256 x 256 grid and upsamples them, so a particle a few cells wide
    gets a blobby outline; the threshold of the pre-segmentation follows its edge exactly.
    Larger objects keep SAM's outline, which is better than the threshold's where the phase is
    textured or its contrast varies.
    """
    if cells <= 0:
        return cands
    out = []
    for cand in cands:
        cell = np.sqrt(cand.crop_area) / 256
        if cand.area < (cells * cell) ** 2:
            x0, y0, x1, y1 = cand.box
            cand = replace(cand, mask=cand.mask & phase_side[y0:y1, x0:x1])
        out.append(cand)
    return out


def add_missed_regions(labels: np.ndarray, phase_side: np.ndarray, min_area: int,
                       depth: np.ndarray | None = None, min_depth: float = 0.0) -> np.ndarray:
    """Add the phase-side regions (8-connected) that no object overlaps, as new objects.

    With `depth`, only regions whose mean depth reaches `min_depth`: a region that barely crosses
    the threshold is noise or shading (specks along a crack, the halo of a scratch), while a
    particle that SAM missed is as dark (bright) as the phase.
    """
    n, regions = cv2.connectedComponents(phase_side.astype(np.uint8), connectivity=8)
    area = np.bincount(regions.ravel(), minlength=n)
    missed = area >= min_area
    if depth is not None:
        mean_depth = np.bincount(regions.ravel(), weights=depth.ravel(), minlength=n) / np.maximum(area, 1)
        missed &= mean_depth >= min_depth
    missed[0] = False
    missed[np.unique(regions[labels > 0])] = False
    ids = (np.cumsum(missed) * missed + labels.max()).astype(np.int32)  # int32 lookups: no int64 image
    return np.where(missed[regions], ids[regions], labels).astype(np.int32, copy=False)


def intensity_classes(smooth_gray: np.ndarray, n_classes: int) -> np.ndarray:
    """Multi-level Otsu classes of the smoothed grey image, (H, W) uint8, 0 = darkest; a pixel at
    a threshold goes to the darker class, as `<= threshold` does in the two-phase split."""
    thresholds = threshold_multiotsu(smooth_gray, classes=n_classes)
    return np.digitize(smooth_gray, bins=thresholds, right=True).astype(np.uint8)


def matrix_class(classes: np.ndarray, n_classes: int) -> int:
    """The class holding the largest single 8-connected region: the matrix is one connected
    network, while precipitates, however many, are separate islands (so total area would
    mistake a crowded precipitate class for the matrix)."""
    largest = []
    for k in range(n_classes):
        n, regions = cv2.connectedComponents((classes == k).astype(np.uint8), connectivity=8)
        largest.append(int(np.bincount(regions.ravel(), minlength=n)[1:].max(initial=0)))
    return int(np.argmax(largest))


def majority_class(cand: Candidate, classes: np.ndarray, n_classes: int) -> tuple[int, float]:
    """The intensity class most of a candidate's pixels lie in, and that class's share."""
    x0, y0, x1, y1 = cand.box
    counts = np.bincount(classes[y0:y1, x0:x1][cand.mask], minlength=n_classes)
    k = int(counts.argmax())
    return k, float(counts[k] / max(int(counts.sum()), 1))


def label_classes(labels: np.ndarray, classes: np.ndarray, smooth_gray: np.ndarray, matrix: int,
                  n_classes: int) -> np.ndarray:
    """Intensity class of each label (index = label id; 0 stays the matrix): the majority
    non-matrix class of its pixels. A label painted on matrix pixels only (a piece of a kept mask
    cut back to the matrix) takes the non-matrix class nearest to it in mean grey."""
    n_labels = int(labels.max()) + 1
    flat, cls = labels.ravel().astype(np.int64), classes.ravel().astype(np.int64)
    votes = np.bincount(flat * n_classes + cls, minlength=n_labels * n_classes).reshape(n_labels, n_classes)
    votes[:, matrix] = 0
    out = votes.argmax(axis=1)
    orphans = np.flatnonzero(votes.sum(axis=1) == 0)
    orphans = orphans[orphans > 0]
    if orphans.size:
        grey = smooth_gray.ravel().astype(np.float64)
        label_mean = np.bincount(flat, weights=grey, minlength=n_labels) / np.maximum(
            np.bincount(flat, minlength=n_labels), 1)
        class_mean = np.bincount(cls, weights=grey, minlength=n_classes) / np.maximum(
            np.bincount(cls, minlength=n_classes), 1)
        others = np.array([k for k in range(n_classes) if k != matrix])
        nearest = np.abs(label_mean[orphans, None] - class_mean[None, others]).argmin(axis=1)
        out[orphans] = others[nearest]
    out[0] = matrix
    return out


def merge_multiphase(cands: list[Candidate], smooth_gray: np.ndarray,
                     cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Objects (H, W) uint32 (0 = matrix) and a class map (H, W) uint8 for `cfg.n_phases` classes.

    The classes are those of a multi-level Otsu split of the smoothed grey image, decided by
    intensity only: two phases of the same grey level stay one class. The matrix is the class
    with the largest connected region. A SAM object is kept when most of its pixels lie in one
    non-matrix class (at least `phase_min_fraction` of them), missed regions are added class by
    class, and every object gets the majority non-matrix class of its pixels. Class map: 0 =
    matrix, 1..n_phases-1 = the other classes from dark to bright. The prompts still come from the
    binary pre-segmentation plus the grid: the prompts stage does not know `n_phases`, so changing
    it reruns only this merge, not SAM.
    """
    n = cfg.n_phases
    classes = intensity_classes(smooth_gray, n)
    matrix = matrix_class(classes, n)
    chosen = []
    for c in cands:
        k, share = majority_class(c, classes, n)
        if k != matrix and share >= cfg.phase_min_fraction:
            chosen.append(c)
    sides = [classes == k for k in range(n) if k != matrix]
    labels = phase_objects(chosen, sides, cfg)
    rank = np.zeros(n, np.uint8)  # intensity class -> output class id
    rank[[k for k in range(n) if k != matrix]] = np.arange(1, n, dtype=np.uint8)
    class_map = rank[label_classes(labels, classes, smooth_gray, matrix, n)][labels]
    return labels.astype(np.uint32), class_map.astype(np.uint8)
