"""Grain stacks that hold together from slice to slice.

A 2D segmenter run slice by slice fuses neighbouring grains on some slices and cuts a grain in
two on others, differently on every slice; linked naively, every such slip cuts a true 3D grain
into short pieces. This module makes the slices agree, using the grey images as evidence:

1. `boundary_look`: are the grain boundaries dark lines, bright lines or only a change of grey
   level? Decided per stack from the top-hat response on the 2D boundaries against the grain
   interiors, so boundary refinement (`refine_boundaries: auto`) needs no setting.
2. `split_on_lines`: a 2D region is split where a boundary line runs along the border between
   its watershed pieces (the 2D segmenter took both grains and the line as one, or spilled
   over a line into a sliver of the neighbour).
3. after linking, `cut_grey_steps`: a grain is cut where its grey level jumps between slices
   (overlap linked a grain to the different grain below it).
4. after linking, `absorb_fragments`: short 3D fragments (few slices, small volume) join the
   neighbouring grain they share most surface with, unless a boundary line or a change of grey
   level separates them.
5. last, `cut_at_waists`: a grain whose cross-section narrows to a waist and widens again is
   two grains linked tip to tip (one ends where the next begins, with a similar grey level).

Arrays are (z, y, x); grey images uint8 or float, one channel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries, watershed

from matsam.config import LinkConfig
from matsam.imaging import blurred
from matsam.volumes.stack3d import LinkStats, apply_shifts, estimate_shifts, link_slices

LINE_CUT_LEVEL = 0.3  # lower than `Evidence.is_line`: pixels that may be part of a line
# Grains that differ in grey only: a gradient response this share of the way from interior to
# boundary level is a ridge (a faint grain-to-grain step); a grey ramp inside a grain stays below.
RIDGE_LEVEL = 0.1
# A split piece needs a centre this many px deeper than the saddle to the next centre: 1 px keeps
# a grain of a dozen px across its own centre and leaves noise to the joining test.
SPLIT_SEED_DYNAMIC = 1.0
# Two pieces of a region are two grains when a line (`Evidence.is_line`) runs along at least
# this share of the border between them: a watershed border through a noisy grain follows the
# noise's ridges, which pass for a line here and there but not along most of their length.
SPLIT_LINE_SHARE = 0.7
# Grains that differ in grey only: two pieces of a region are two grains when their mean grey
# differs by this share of the typical grain-to-grain step (and by 1.5 standard errors of the
# noise). Piece means are averages of hundreds of pixels, far less noisy than the single grains
# `Evidence.is_step` compares along z; on contrast-only stacks the step test alone left half the
# fused neighbours fused.
PIECE_STEP_SHARE = 0.1
# A grain whose sqrt(cross-section area) drops below 1/WAIST_RATIO of its largest value on both
# sides is two grains. For a convex grain sqrt(area) is concave along z (Brunn-Minkowski), so it
# has no waist at all; linked tips of the synthetic family show 1.66-4.2, its whole grains at most 1.47.
WAIST_RATIO = 1.6
# What `link_consistent` counts (summary.csv columns of a grain stack).
COUNTS = ("line_splits", "grey_cuts", "fragments_joined", "waist_cuts")


@dataclass(frozen=True)
class Evidence:
    """What the stack's images say a boundary looks like, measured on the 2D boundaries.

    look: "dark" / "bright" lines, or "none" (grains differ in grey level only).
    line_ratio: top-hat response on boundaries / in grain interiors for the chosen line colour
        (dark and bright both measured; the larger is reported).
    line_depth: mean top-hat response on boundaries (grey units); line_floor: in interiors.
    noise: robust sigma of the grey noise; step: median grey-level difference between
        neighbouring 2D regions (local means), the scale of a real grain-to-grain change.
    """

    look: str
    line_ratio: float
    line_depth: float
    line_floor: float
    noise: float
    step: float

    def is_line(self, response: float) -> bool:
        """A top-hat response that is at least half-way from interior to boundary level."""
        return response > self.line_floor + 0.5 * (self.line_depth - self.line_floor)

    def is_line_map(self, response: np.ndarray, level: float = 0.5) -> np.ndarray:
        """`is_line` per pixel of a top-hat image (`level`: the share of the way from interior
        to boundary response that counts as line)."""
        return response > self.line_floor + level * (self.line_depth - self.line_floor)

    def is_step(self, difference: float) -> bool:
        """A grey-level difference between two regions that marks two grains."""
        return abs(difference) > self.is_step_level()

    def is_step_level(self) -> float:
        """The grey-level difference above which `is_step` says two grains."""
        return max(0.35 * self.step, 3.0 * self.noise / 4.0)


def tophat(grey: np.ndarray, lines: str, width: int = 9) -> np.ndarray:
    """float32 response to thin lines (narrower than `width` px): black top-hat for dark lines,
    white top-hat for bright ones, of the lightly smoothed slice. A grey-level step gives ~0."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    smooth = blurred(np.asarray(grey, np.float32), 3)
    op = cv2.MORPH_BLACKHAT if lines == "dark" else cv2.MORPH_TOPHAT
    return cv2.morphologyEx(smooth, op, kernel)


def boundary_response(grey: np.ndarray, look: str) -> np.ndarray:
    """What a boundary of this look lights up: the top-hat for lines, the grey-level gradient
    magnitude (of the lightly smoothed slice) for grains that differ in grey only."""
    if look != "none":
        return tophat(grey, look)
    smooth = blurred(np.asarray(grey, np.float32), 3)
    return np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))


def boundary_look(labels2d: np.ndarray, grey: np.ndarray, max_slices: int = 8, ratio: float = 2.0) -> Evidence:
    """Detect the stack's boundary look on up to `max_slices` evenly spaced slices.

    The top-hat response is averaged on a 2-px band around the 2D label changes (a 2D
    segmenter's boundary is a pixel or two off the line) and in the grain interiors (>= 4 px
    from any change). Lines give a boundary response `ratio` times the interior's or more; a
    grey-level step between grains does not.
    """
    picks = np.unique(np.linspace(0, len(labels2d) - 1, min(max_slices, len(labels2d))).round().astype(int))
    band_values: dict[str, list[np.ndarray]] = {look: [] for look in ("dark", "bright", "none")}
    inner_values: dict[str, list[np.ndarray]] = {look: [] for look in band_values}
    noise, steps = [], []
    for z in picks:
        lab, g = labels2d[z], np.asarray(grey[z], np.float32)
        edges = find_boundaries(lab, mode="thick") & (lab > 0)
        dist = ndi.distance_transform_edt(~edges)
        band, inner = (dist <= 2) & (lab > 0), (dist >= 4) & (lab > 0)
        if not band.any() or not inner.any():
            continue
        for lines in band_values:
            response = boundary_response(g, lines)
            band_values[lines].append(response[band])
            inner_values[lines].append(response[inner])
        residual = (g - ndi.median_filter(g, 3))[inner]
        noise.append(1.4826 * float(np.median(np.abs(residual - np.median(residual)))) * 1.2)
        steps.extend(_neighbour_steps(lab, g, inner))
    if not noise:
        return Evidence("none", 1.0, 0.0, 0.0, 0.0, 0.0)
    # the line itself: the upper quarter of the band (the band is wider than most lines)
    depth = {k: float(np.percentile(np.concatenate(v), 75)) for k, v in band_values.items()}
    floor = {k: float(np.mean(np.concatenate(v))) for k, v in inner_values.items()}
    ratios = {k: depth[k] / max(floor[k], 1e-6) for k in depth}
    best = "dark" if ratios["dark"] >= ratios["bright"] else "bright"
    look = best if ratios[best] >= ratio else "none"
    return Evidence(look, ratios[best], depth[look], floor[look], float(np.median(noise)),
                    float(np.median(steps)) if steps else 0.0)


def _neighbour_steps(lab: np.ndarray, grey: np.ndarray, inner: np.ndarray) -> list[float]:
    """|mean grey difference| of 4-adjacent region pairs, from their interior pixels within
    8 px of each other (local, so an illumination gradient cuts out)."""
    ids, areas = np.unique(lab, return_counts=True)
    a = np.r_[lab[:, :-1].ravel(), lab[:-1].ravel()]
    b = np.r_[lab[:, 1:].ravel(), lab[1:].ravel()]
    pairs = np.unique(np.sort(np.stack([a, b], 1)[(a != b) & (a > 0) & (b > 0)], axis=1), axis=0)
    out = []
    for i, j in pairs[:200]:
        mi, mj = lab == i, lab == j
        near_i = ndi.binary_dilation(mi, iterations=8)
        near_j = ndi.binary_dilation(mj, iterations=8)
        si, sj = grey[mi & inner & near_j], grey[mj & inner & near_i]
        if si.size >= 5 and sj.size >= 5:
            out.append(abs(float(si.mean() - sj.mean())))
    return out


def elevation(grey: np.ndarray, look: str) -> np.ndarray:
    """The relief a watershed splits along: dark lines are ridges of -grey, bright lines of
    grey, a grey-level step a ridge of the gradient magnitude."""
    smooth = blurred(np.asarray(grey, np.float32), 3)
    if look == "dark":
        return -smooth
    if look == "bright":
        return smooth
    return np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))


def split_on_lines(labels2d: np.ndarray, grey: np.ndarray, evidence: Evidence,
                   min_area: int = 30) -> tuple[np.ndarray, int]:
    """Split 2D regions along the boundaries that the image shows inside them.

    A 2D segmenter sometimes takes two grains and the boundary between them as one region, on
    every slice alike, so the neighbouring slices cannot tell. Each region is cut into pieces
    (`_pieces`: a watershed of `elevation` from the centres of its boundary-free parts), and
    neighbouring pieces of one region join again unless the border between them looks like a
    boundary: a line (`Evidence.is_line` on `boundary_response`) along `SPLIT_LINE_SHARE` of it
    or, for grains that differ in grey only (look "none"), a difference of the two pieces' mean
    grey (`_grey_apart`: a tenth of a grain-to-grain step, well above the noise) across a border
    that is a ridge of the grey-level gradient along half of it or more (`RIDGE_LEVEL`: a
    grey-level ramp inside one grain is no ridge). A region that spills over a line into a
    small part of its neighbour loses that part, however small against the region (down to
    `min_area` px); pieces under `min_area` px join the piece they share most border with.
    Returns int64 labels and the number of regions split.
    """
    labels = np.asarray(labels2d).astype(np.int64)
    next_id = int(labels.max(initial=0)) + 1
    n_split = 0
    for z in range(len(labels)):
        lab = labels[z]
        response = boundary_response(grey[z], evidence.look)
        pieces, owner = _pieces(lab, response, elevation(grey[z], evidence.look), evidence)
        maps = [evidence.is_line_map(response)]
        if evidence.look == "none":  # and where the gradient is a ridge
            maps.append(evidence.is_line_map(response, RIDGE_LEVEL))
        a, b, shares, length = _adjacent_pairs(pieces, *(m.astype(np.float32) for m in maps))
        same = owner[a] == owner[b]
        a, b, length, shares = a[same], b[same], length[same], [share[same] for share in shares]
        apart = shares[0] >= SPLIT_LINE_SHARE
        if evidence.look == "none":
            apart |= _grey_apart(pieces, grey[z], a, b, evidence) & (shares[1] >= 0.5)
        joined = _components(owner.size, a[~apart], b[~apart])
        joined = _join_small(joined, pieces, a, b, length, min_area)
        final = joined[pieces]
        # the first piece of a region keeps the region's id, the others get new ones
        ids = np.unique(final[lab > 0])
        region = np.zeros(int(final.max()) + 1, np.int64)
        region[final.ravel()] = lab.ravel()
        first = np.unique(region[ids], return_index=True)[1]
        extra = np.setdiff1d(ids, ids[first])
        if extra.size == 0:
            continue
        lut = region.copy()
        lut[extra] = np.arange(next_id, next_id + extra.size)
        next_id += extra.size
        n_split += int(np.unique(region[extra]).size)
        labels[z] = np.where(lab > 0, lut[final], lab)
    return labels, n_split


def _grey_apart(pieces: np.ndarray, grey: np.ndarray, a: np.ndarray, b: np.ndarray,
                evidence: Evidence) -> np.ndarray:
    """Whether adjacent pieces a and b differ in mean grey (of the lightly smoothed slice) by
    `PIECE_STEP_SHARE` of a grain step and by 1.5 standard errors of the difference of means."""
    smooth = blurred(np.asarray(grey, np.float32), 3)
    area = np.maximum(np.bincount(pieces.ravel(), minlength=int(pieces.max()) + 1), 1)
    mean_grey = np.bincount(pieces.ravel(), smooth.ravel(), area.size) / area
    error = 1.5 * evidence.noise * np.sqrt(1.0 / area[a] + 1.0 / area[b])
    return np.abs(mean_grey[a] - mean_grey[b]) > np.maximum(PIECE_STEP_SHARE * evidence.step, error)


def _pieces(lab: np.ndarray, response: np.ndarray, relief: np.ndarray,
            evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pieces of every region (ids 1..P, each inside one region) and the region of
    each piece id (index 0: background). Seeds: the maxima (dynamic >= `SPLIT_SEED_DYNAMIC`
    px) of the distance to the region's edge and to its boundary-looking pixels (lines above
    `LINE_CUT_LEVEL`; for grains that differ in grey only, gradient ridges above `RIDGE_LEVEL`)."""
    cut_level = RIDGE_LEVEL if evidence.look == "none" else LINE_CUT_LEVEL  # faint steps must part seeds too
    free = (lab > 0) & ~find_boundaries(lab, mode="inner") & ~evidence.is_line_map(response, cut_level)
    distance = ndi.distance_transform_edt(free)
    seeds, _ = ndi.label(h_maxima(distance, SPLIT_SEED_DYNAMIC) & free)
    flooded = watershed(relief, markers=seeds, mask=lab > 0)
    # a piece flooded across two regions is two pieces; a region no seed reached is one piece
    combined = np.where(lab > 0, flooded.astype(np.int64) * (int(lab.max()) + 1) + lab, 0)
    keys, pieces = np.unique(combined, return_inverse=True)
    pieces = pieces.reshape(lab.shape)
    if keys[0] != 0:  # no background: ids from 1
        pieces += 1
        keys = np.r_[0, keys]
    return pieces, keys % (int(lab.max()) + 1)


def _adjacent_pairs(pieces: np.ndarray,
                    *maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """4-adjacent piece pairs (a < b), per map the mean of its values along their border (the
    larger of the two pixels of each 4-adjacent pair), and the border's length."""
    pa = np.r_[pieces[:, :-1].ravel(), pieces[:-1].ravel()]
    pb = np.r_[pieces[:, 1:].ravel(), pieces[1:].ravel()]
    on = (pa != pb) & (pa > 0) & (pb > 0)
    lo, hi = np.minimum(pa[on], pb[on]), np.maximum(pa[on], pb[on])
    n = int(pieces.max(initial=0)) + 1
    keys, inverse, length = np.unique(lo * n + hi, return_inverse=True, return_counts=True)
    means = []
    for values in maps:
        ra = np.r_[values[:, :-1].ravel(), values[:-1].ravel()]
        rb = np.r_[values[:, 1:].ravel(), values[1:].ravel()]
        means.append(np.bincount(inverse, np.maximum(ra[on], rb[on]), keys.size) / length)
    return keys // n, keys % n, means, length


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id (>= 1) of each of n nodes joined by the edges (a, b) (a, b > 0); node 0: 0."""
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    component = connected_components(graph, directed=False)[1] + 1
    component[0] = 0
    return component


def _join_small(joined: np.ndarray, pieces: np.ndarray, a: np.ndarray, b: np.ndarray,
                length: np.ndarray, min_area: int) -> np.ndarray:
    """Piece ids after pieces (once joined) under `min_area` px join the neighbour they share
    most border with; a and b: adjacent pieces of one region, length: their border."""
    n = int(joined.max()) + 1
    area = np.bincount(joined[pieces].ravel(), minlength=n)
    ja, jb = joined[a], joined[b]
    edge = ja != jb
    if not edge.any():
        return joined
    keys, inverse = np.unique(np.minimum(ja, jb)[edge] * n + np.maximum(ja, jb)[edge], return_inverse=True)
    shared = np.bincount(inverse, length[edge], keys.size)
    x, y, border = np.r_[keys // n, keys % n], np.r_[keys % n, keys // n], np.r_[shared, shared]
    order = np.lexsort((-border, x))  # per piece, its longest border first
    first = np.r_[True, x[order][1:] != x[order][:-1]]
    best = np.zeros(n, np.int64)
    best[x[order][first]] = y[order][first]
    small = np.flatnonzero((area < min_area) & (best > 0))
    return _components(n, small, best[small])[joined]


def cut_grey_steps(labels3d: np.ndarray, grey: np.ndarray, evidence: Evidence,
                   min_pixels: int = 20) -> tuple[np.ndarray, int]:
    """Cut 3D grains where their grey level jumps from one slice to the next.

    Linking by overlap joins a grain that ends on slice z - 1 to a different grain that starts
    right below it; the two differ in grey level (channelling, tint), the same grain does not.
    For every grain on slices z - 1 and z, the mean grey change over the pixels where it is on
    both (off its 2D boundaries, so that lines and a 1-px boundary shift cancel) is compared,
    after removing the slice pair's median change (a brightness drift between slices; with 5
    grains or more), with
    `Evidence.is_step`; a jump starts a new grain from slice z on.
    Returns int64 labels and the number of cuts.
    """
    labels = np.asarray(labels3d).astype(np.int64)
    grey = np.asarray(grey, np.float32)
    next_id = int(labels.max(initial=0)) + 1
    cuts = 0
    for z in range(1, len(labels)):
        a, b = labels[z - 1], labels[z]
        keep = (a == b) & (a > 0) & ~find_boundaries(a, mode="thick") & ~find_boundaries(b, mode="thick")
        if not keep.any():
            continue
        ids, inverse, count = np.unique(a[keep], return_inverse=True, return_counts=True)
        change = np.bincount(inverse, (grey[z] - grey[z - 1])[keep]) / count
        if (count >= min_pixels).sum() >= 5:
            change -= np.median(change[count >= min_pixels])
        jump = ids[(count >= min_pixels) & np.array([evidence.is_step(c) for c in change])]
        if jump.size:
            tail = np.isin(labels[z:], jump)
            lut = dict(zip(jump.tolist(), range(next_id, next_id + jump.size)))
            labels[z:][tail] = np.vectorize(lut.get)(labels[z:][tail])
            next_id += jump.size
            cuts += int(jump.size)
    return labels, cuts


def absorb_fragments(labels3d: np.ndarray, grey: np.ndarray, evidence: Evidence, max_slices: int = 2,
                     max_volume: float = 0.25, speck: float = 0.05) -> tuple[np.ndarray, int]:
    """Join short 3D fragments to the neighbour they share most surface with.

    A fragment lies on at most `max_slices` slices and holds at most `max_volume` times the
    median volume of the stack's longer grains (those on more slices). Its neighbours are the
    grains it touches (6-connected, a 1-px gap of 0 allowed); the one with the largest contact
    joins it unless the image separates them: a line along their in-plane contact
    (`Evidence.is_line`) or a grey-level change between their voxels near the contact, off the
    lines (`Evidence.is_step`). Specks (at most `speck` times that median volume, on any number
    of slices) and slivers (fragment-sized grains, on any number of slices, whose mean boundary
    response is a line's: made of boundary line) are no grains: they are dissolved into the
    grains around them, slice by slice, whatever the image says. Smallest first; returns
    the relabelled uint32 volume (ids 1..N in order of first appearance) and the joins made.
    """
    labels = np.asarray(labels3d).astype(np.int64)
    volumes = np.bincount(labels.ravel())
    volumes[0] = 0
    present = np.flatnonzero(volumes)
    if present.size < 2:
        return _renumber(labels), 0
    n_slices = np.zeros(volumes.size, np.int64)
    for s in labels:
        n_slices[np.unique(s)] += 1
    long = present[n_slices[present] > max_slices]
    typical = float(np.median(volumes[long if long.size else present]))
    small = present[(n_slices[present] <= max_slices) & (volumes[present] <= max_volume * typical)]
    grey = np.asarray(grey, np.float32)
    response = np.stack([boundary_response(g, evidence.look) for g in grey])
    lut = np.arange(volumes.size)
    specks = present[volumes[present] <= speck * typical]
    on_line = np.bincount(labels.ravel(), response.ravel(), volumes.size)[present] / volumes[present]
    thin = evidence.is_line_map(on_line) & (volumes[present] <= max_volume * typical)
    specks = np.union1d(specks, present[thin])  # slivers: grains made of boundary line
    labels = _dissolve(labels, specks)
    slices = ndi.find_objects(labels)
    small = np.setdiff1d(small, specks)
    joins = int(specks.size)
    for frag in small[np.argsort(volumes[small], kind="stable")]:
        where = slices[frag - 1]
        if where is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s, pad in zip(where, (1, 4, 4)))
        crop = lut[labels[box]]
        mask = crop == frag
        if not mask.any():
            continue
        target, contact_yx = _best_neighbour(crop, mask)
        if target == 0:
            continue
        other = crop == target
        if contact_yx.sum() >= 6 and evidence.is_line(float(response[box][contact_yx].mean())):
            continue
        off_line = ~evidence.is_line_map(response[box], LINE_CUT_LEVEL)  # grain pixels only
        near_f = ndi.binary_dilation(mask, iterations=3) & other & off_line
        near_t = ndi.binary_dilation(other, iterations=3) & mask & off_line
        if near_f.sum() >= 5 and near_t.sum() >= 5 and evidence.is_step(
                float(grey[box][near_t].mean() - grey[box][near_f].mean())):
            continue
        lut[lut == frag] = target
        joins += 1
    return _renumber(lut[labels]), joins


def cut_at_waists(labels3d: np.ndarray, view: np.ndarray | None = None, ratio: float = WAIST_RATIO,
                  min_slices: int = 2, rounds: int = 4) -> tuple[np.ndarray, int]:
    """Cut 3D grains in two where their cross-section narrows to a waist and widens again.

    When one grain ends and another begins right below it with a similar grey level (so that
    `cut_grey_steps` cannot tell), linking by overlap passes from the first grain's shrinking
    tip to the second's growing one. Grains are close to convex, and the square root of a convex
    body's cross-section area is concave along z: it never dips between two larger values. A
    grain is cut at the slice where sqrt(area) is smallest against the smaller of its largest
    values before and after, when that ratio is `ratio` or more and `min_slices` slices or more
    lie on either side. The waist slice stays with the side it overlaps more (a tip lies inside
    the previous or next section of its own grain). Run after `absorb_fragments`, which
    has healed a slice where the 2D segmenter cut the grain into pieces. Repeated up to `rounds`
    times, for chains of three grains or more. `view`: (y, x) bool, the pixels that every slice
    shows (aligned slices of a drifting stack show different parts of the field, and a grain
    leaving the view and coming back would look like a waist); areas are counted inside it.
    Returns uint32 labels (`_renumber`) and the cuts.
    """
    labels = np.asarray(labels3d).astype(np.int64)
    cuts = 0
    for _ in range(rounds):
        n = int(labels.max(initial=0)) + 1
        seen = labels if view is None else labels[:, view]
        radius = np.sqrt(np.stack([np.bincount(s.ravel(), minlength=n) for s in seen]).astype(float))
        radius[:, 0] = 0
        before = np.maximum.accumulate(radius, axis=0)  # largest section up to each slice
        after = np.maximum.accumulate(radius[::-1], axis=0)[::-1]
        starts = np.full(n, len(labels))  # per grain, the first slice of its lower part
        for grain in np.flatnonzero((radius > 0).sum(axis=0) > 2 * min_slices):
            zs = np.flatnonzero(radius[:, grain] > 0)[min_slices:-min_slices]
            depth = np.minimum(before[zs - 1, grain], after[zs + 1, grain]) / np.maximum(radius[zs, grain], 1.0)
            if depth.max() < ratio:
                continue
            z = int(zs[np.argmax(depth)])
            waist = labels[z] == grain
            upper = np.count_nonzero(waist & (labels[z - 1] == grain))
            lower = np.count_nonzero(waist & (labels[z + 1] == grain))
            starts[grain] = z + 1 if upper >= lower else z
        cut = np.flatnonzero(starts < len(labels))
        if not cut.size:
            break
        lut, new_id = np.arange(n), n + np.arange(cut.size)
        for z in range(len(labels)):  # from its start on, a cut grain's voxels get a new id
            begins = starts[cut] == z
            lut[cut[begins]] = new_id[begins]
            labels[z] = lut[labels[z]]
        cuts += int(cut.size)
    return _renumber(labels), cuts


def _dissolve(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Give the voxels of grains `ids` to the nearest other grain of the same slice."""
    if not ids.size:
        return labels
    out = labels.copy()
    gone = np.isin(labels, ids)
    for z in np.flatnonzero(gone.any(axis=(1, 2))):
        keep = np.where(gone[z], 0, labels[z])
        if not keep.any():
            continue
        _, (iy, ix) = ndi.distance_transform_edt(keep == 0, return_indices=True)
        out[z] = np.where(gone[z], keep[iy, ix], labels[z])
    return out


def _best_neighbour(crop: np.ndarray, mask: np.ndarray) -> tuple[int, np.ndarray]:
    """The label sharing most contact with `mask` (6-neighbours, across a 1-px 0 gap too) and
    the in-plane contact band (pixels within 2 px of both, the line between them included)."""
    shell = ndi.binary_dilation(mask, ndi.generate_binary_structure(3, 1), iterations=2) & ~mask
    values = crop[shell]
    values = values[values > 0]
    if not values.size:
        return 0, np.zeros(mask.shape, bool)
    ids, counts = np.unique(values, return_counts=True)
    target = int(ids[np.argmax(counts)])
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndi.generate_binary_structure(2, 1)
    other = crop == target
    contact = ndi.binary_dilation(mask, plane, iterations=2) & ndi.binary_dilation(other, plane, iterations=2)
    return target, contact


def _renumber(labels: np.ndarray) -> np.ndarray:
    """uint32 ids 1..N in order of first appearance (z, then y, x), 0 kept."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = ids[np.argsort(first)]
    order = order[order > 0]
    lut = np.zeros(int(ids.max(initial=0)) + 1, np.uint32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.uint32)
    return lut[labels]


def link_consistent(labels2d: np.ndarray, grey: np.ndarray, cfg: LinkConfig, evidence: Evidence,
                    align: bool = False) -> tuple[np.ndarray, LinkStats, dict[str, int]]:
    """Align (when `align`), split regions cut by lines, link, cut grains at grey-level
    jumps, absorb fragments, cut grains at waists.

    labels2d: (z, y, x) per-slice grain labels; grey: (z, y, x) grey slices. Returns uint32 3D
    grain ids, the link statistics (shifts included; n_grains after absorbing) and the counts
    (`COUNTS`: line_splits, grey_cuts, fragments_joined, waist_cuts).
    """
    shifts = estimate_shifts(grey) if align else np.zeros((len(grey), 2), np.int64)
    if align:
        labels2d, grey = apply_shifts(labels2d, shifts), apply_shifts(grey, shifts)
    counts = dict.fromkeys(COUNTS, 0)
    if cfg.consistent:
        labels2d, counts["line_splits"] = split_on_lines(labels2d, grey, evidence)
    labels3d, stats = link_slices(labels2d, cfg)
    if cfg.consistent:
        labels3d, counts["grey_cuts"] = cut_grey_steps(labels3d, grey, evidence)
        labels3d, counts["fragments_joined"] = absorb_fragments(
            labels3d, grey, evidence, cfg.fragment_slices, cfg.fragment_volume)
        view = apply_shifts(np.ones(labels3d.shape, bool), shifts).all(axis=0) if align else None
        labels3d, counts["waist_cuts"] = cut_at_waists(labels3d, view)
    return labels3d, replace(stats, shifts=shifts, n_grains=int(labels3d.max(initial=0))), counts
