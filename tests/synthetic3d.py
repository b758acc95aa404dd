"""Synthetic 3D polycrystals with known grains, for testing the serial-section chain.

A Voronoi tessellation gives the true 3D labels; each z section then yields a grey "micrograph"
(per-grain contrast, dark boundaries, noise) and a perturbed 2D labelling that mimics what the
2D segmenter hands to the linker (ids renumbered per slice, boundaries moved, grains missed,
over- and under-segmentation). All arrays are (z, y, x); every function is seeded.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.segmentation import expand_labels, find_boundaries


def voronoi_volume(
    shape: tuple[int, int, int] = (16, 128, 128),
    n_grains: int = 40,
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Voronoi grains: uint32 (z, y, x) labels 1..N (N <= n_grains, cells missing every voxel
    centre are dropped), no background.

    Seeds are drawn uniformly in physical units (`spacing` = voxel size (z, y, x)), and slightly
    beyond the z faces, so that some grains start or end inside the stack.
    """
    rng = np.random.default_rng(seed)
    extent = np.asarray(shape, float) * spacing
    lo = np.array([-0.1 * extent[0], 0.0, 0.0])
    seeds = rng.uniform(lo, extent * [1.1, 1.0, 1.0], size=(n_grains, 3))
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1).T * np.asarray(spacing, np.float32)
    _, nearest = cKDTree(seeds).query(grid, workers=-1)
    _, labels = np.unique(nearest, return_inverse=True)
    return (labels.reshape(shape) + 1).astype(np.uint32)


def grey_stack(labels3d: np.ndarray, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """float32 (z, y, x) images in [0, 1]: a random grey level per 3D grain (channelling
    contrast), dark 2D boundaries where the label changes within the slice, Gaussian noise."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.4, 0.9, int(labels3d.max()) + 1).astype(np.float32)
    grey = level[labels3d]
    for z in range(labels3d.shape[0]):
        grey[z][find_boundaries(labels3d[z], mode="inner")] = 0.1
    grey += rng.normal(0.0, noise, grey.shape).astype(np.float32)
    return np.clip(grey, 0.0, 1.0)


def perturb_labels2d(
    labels3d: np.ndarray,
    seed: int = 0,
    p_drop: float = 0.05,
    small_quantile: float = 0.3,
    p_split: float = 0.0,
    p_merge: float = 0.0,
) -> np.ndarray:
    """Per-slice 2D labels that look like a 2D segmenter's output, uint32 (z, y, x).

    Per slice: 2D boundaries set to 0, all labels eroded or dilated by one pixel (random per
    slice), each grain smaller than the slice's `small_quantile` area missed with probability
    `p_drop`, each grain cut in two along a random line through its centroid with probability
    `p_split`, or fused with a touching neighbour with probability `p_merge`; finally ids are
    replaced by random, non-consecutive values (up to 2**31) so that no id carries over.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(labels3d.shape, np.uint32)
    for z, lab in enumerate(labels3d):
        lab = lab.astype(np.int64)
        if p_merge:
            lab = _merge_neighbours(lab, rng, p_merge)
        lab[find_boundaries(lab, mode="inner")] = 0
        ids, areas = np.unique(lab[lab > 0], return_counts=True)
        small = ids[areas < np.quantile(areas, small_quantile)]
        lab[np.isin(lab, small[rng.random(small.size) < p_drop])] = 0
        if p_split:
            lab = _split_regions(lab, rng, p_split)
        jitter = rng.integers(-1, 2)
        if jitter > 0:
            lab = expand_labels(lab, 1)
        elif jitter < 0:
            lab[ndi.minimum_filter(lab, 3) != ndi.maximum_filter(lab, 3)] = 0
        ids = np.unique(lab[lab > 0])
        new_ids = rng.choice(2**31 - 1, size=ids.size, replace=False) + 1
        lut = np.zeros(int(lab.max()) + 1, np.uint32)
        lut[ids] = new_ids
        out[z] = lut[lab]
    return out


def _merge_neighbours(lab: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Fuse randomly chosen grains of a boundary-free labelling into a horizontally adjacent
    neighbour."""
    left, right = lab[:, :-1].ravel(), lab[:, 1:].ravel()
    pairs = np.unique(np.stack([left, right], 1)[left != right], axis=0)
    lut = np.arange(int(lab.max()) + 1)
    for a, b in pairs[rng.random(len(pairs)) < p]:
        if lut[a] == a and lut[b] == b:
            lut[b] = a
    return lut[lab]


def _split_regions(lab: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Cut randomly chosen regions in two along a random line through their centroid, with a
    one-pixel-wide 0 line between the halves."""
    ids = np.unique(lab[lab > 0])
    chosen = ids[rng.random(ids.size) < p]
    out = lab.copy()
    next_id = int(lab.max()) + 1
    for i in chosen:
        yy, xx = np.nonzero(lab == i)
        theta = rng.uniform(0, np.pi)
        side = (yy - yy.mean()) * np.cos(theta) - (xx - xx.mean()) * np.sin(theta)
        out[yy[side > 0.5], xx[side > 0.5]] = next_id
        out[yy[np.abs(side) <= 0.5], xx[np.abs(side) <= 0.5]] = 0
        next_id += 1
    return out


def shifted_crops(
    volume: np.ndarray, shape_yx: tuple[int, int], max_step: int, seed: int = 0
) -> tuple[list[tuple[slice, slice]], np.ndarray]:
    """Windows of a drifting field of view: per slice a (y, x) crop of `shape_yx` whose origin
    moves by a random integer step in [-max_step, max_step] per axis between slices.

    Returns the crop slices and the (z, 2) int origins relative to slice 0; content at origin
    o appears moved by -o, so `apply_shifts(crops, origins)` registers the crops to slice 0.
    """
    rng = np.random.default_rng(seed)
    steps = rng.integers(-max_step, max_step + 1, size=(volume.shape[0], 2))
    steps[0] = 0
    origins = np.cumsum(steps, axis=0)
    start = -origins.min(axis=0)
    room = np.asarray(volume.shape[1:3]) - np.asarray(shape_yx) - (origins.max(0) - origins.min(0))
    if (room < 0).any():
        raise ValueError("volume too small for the drift")
    crops = [
        (
            slice(start[0] + oy, start[0] + oy + shape_yx[0]),
            slice(start[1] + ox, start[1] + ox + shape_yx[1]),
        )
        for oy, ox in origins
    ]
    return crops, origins
