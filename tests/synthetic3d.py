"""Synthetic 3D polycrystals with known grains, for testing the serial-section chain.

A Voronoi tessellation gives the true 3D labels; each z section then yields a grey "micrograph"
(per-grain contrast, dark boundaries, noise) and a perturbed 2D labelling that mimics what the
2D segmenter hands to the linker (ids renumbered per slice, boundaries moved, grains missed,
over- and under-segmentation). All arrays are (z, y, x); every function is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --- a family of serial-section looks -------------------------------------------------------


@dataclass(frozen=True)
class StackLook:
    """How one synthetic serial-section stack looks (all lengths in xy pixels).

    grain_px: mean grain diameter in xy; elongation: grains stretched along z by this factor
    (1: equiaxed); z_step: slice spacing; line_px: boundary line width (0: grains differ only
    in grey level); line: "dark" or "bright" (ignored with line_px 0); noise: Gaussian sigma
    (grey range 0..1); blur: Gaussian sigma, px; gradient: illumination change across the
    field (0.3: 30 % darker at one side); drift: largest per-slice step of the field of view.
    """

    name: str
    shape: tuple[int, int, int] = (16, 128, 128)
    grain_px: float = 30.0
    elongation: float = 1.0
    z_step: float = 2.0
    line_px: int = 2
    line: str = "dark"
    noise: float = 0.04
    blur: float = 0.0
    gradient: float = 0.0
    drift: int = 0
    seed: int = 0


def render_stack(look: StackLook) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, grey, origins) for a look: truth uint32 (z, y, x) labels in slice 0's frame
    (0 where drift moved the field out of view), grey uint8 (z, y, x) as the microscope records
    it (drifted), origins (z, 2) the drift (`apply_shifts(grey, origins)` registers it)."""
    nz, ny, nx = look.shape
    margin = look.drift * nz if look.drift else 0
    big = (nz, ny + 2 * margin, nx + 2 * margin)
    spacing = (look.z_step / look.elongation, 1.0, 1.0)
    n = max(4, round(np.prod(big) * spacing[0] / (np.pi / 6 * look.grain_px**3)))
    volume = voronoi_volume(big, n, seed=look.seed, spacing=spacing)
    grey = styled_grey(volume, look)
    origins = np.zeros((nz, 2), np.int64)
    if look.drift:
        crops, origins = shifted_crops(volume, (ny, nx), look.drift, seed=look.seed + 1)
        grey = np.stack([grey[z][c] for z, c in enumerate(crops)])
        truth = np.stack([volume[z][c] for z, c in enumerate(crops)])
        from matsam.volumes.stack3d import apply_shifts

        truth = apply_shifts(truth, origins)
    else:
        truth = volume
    if look.drift:  # 0 where the field of view left the volume
        truth = np.where(apply_shifts(np.ones(look.shape, np.uint8), origins) > 0, truth, 0)
    ids, truth = np.unique(truth, return_inverse=True)
    truth = (truth.reshape(look.shape) + (ids[0] > 0)).astype(np.uint32)  # ids 1..N, 0 kept
    return truth, grey, origins


def styled_grey(labels3d: np.ndarray, look: StackLook) -> np.ndarray:
    """uint8 (z, y, x) micrographs of a label volume in the look's style."""
    rng = np.random.default_rng(look.seed + 7)
    level = rng.uniform(0.3, 0.8, int(labels3d.max()) + 1).astype(np.float32)
    if not look.line_px:  # no lines: neighbours must differ in grey, or nothing shows them apart
        level = contrasting_levels(labels3d, rng)
    grey = level[labels3d]
    _, ny, nx = labels3d.shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    light = 1.0 - look.gradient * (0.5 + 0.5 * (np.cos(angle) * xx + np.sin(angle) * yy) / 1.42)
    value = 0.08 if look.line == "dark" else 0.95
    for z in range(labels3d.shape[0]):
        if look.line_px:
            grey[z][line_mask(labels3d[z], look.line_px)] = value
        if look.blur:
            grey[z] = ndi.gaussian_filter(grey[z], look.blur)
        grey[z] *= light.astype(np.float32)
    grey += rng.normal(0.0, look.noise, grey.shape).astype(np.float32)
    return (np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8)


def contrasting_levels(labels3d: np.ndarray, rng: np.random.Generator, low: float = 0.3, high: float = 0.8,
                       min_step: float = 0.08) -> np.ndarray:
    """float32 grey level per label, touching grains (3D) at least `min_step` apart where the
    range allows (greedy: a random level among those far enough from the neighbours' levels; where
    none is, the level farthest from them, so that no two neighbours share a grey level)."""
    from matsam.volumes.measure3d import neighbour_pairs

    pairs = neighbour_pairs(labels3d)[["grain_a", "grain_b"]].to_numpy()
    level = np.full(int(labels3d.max()) + 1, np.nan, np.float32)
    choices = np.linspace(low, high, 64)
    for grain in rng.permutation(np.arange(1, level.size)):
        near = level[np.r_[pairs[pairs[:, 0] == grain, 1], pairs[pairs[:, 1] == grain, 0]]]
        near = near[np.isfinite(near)]
        gap = np.abs(choices[:, None] - near[None]).min(axis=1) if near.size else np.full(choices.size, np.inf)
        free = choices[gap >= min_step]
        level[grain] = rng.choice(free) if free.size else choices[np.argmax(gap)]
    level[0] = 0.0
    return level


def line_mask(lab: np.ndarray, width: int) -> np.ndarray:
    """Boundary lines of a 2D labelling, `width` px wide (1 px: one side of every change)."""
    one_side = np.zeros(lab.shape, bool)
    one_side[:, 1:] |= lab[:, 1:] > lab[:, :-1]
    one_side[:, :-1] |= lab[:, :-1] > lab[:, 1:]
    one_side[1:] |= lab[1:] > lab[:-1]
    one_side[:-1] |= lab[:-1] > lab[1:]
    base = one_side if width % 2 else find_boundaries(lab, mode="inner")
    grow = (width - 1) // 2 if width % 2 else (width - 2) // 2
    return ndi.binary_dilation(base, iterations=grow) if grow else base


FAMILY = [
    StackLook("dark2-base", seed=1),
    StackLook("dark1-small", grain_px=18.0, line_px=1, seed=2),
    StackLook("dark4-large-blur", grain_px=55.0, line_px=4, blur=1.0, seed=3),
    StackLook("bright2-gradient", line="bright", gradient=0.35, seed=4),
    StackLook("bright3-noisy", line="bright", line_px=3, noise=0.08, blur=0.7, seed=5),
    StackLook("contrast-only", line_px=0, noise=0.03, blur=0.8, seed=6),
    StackLook("dark2-drift-align", drift=2, gradient=0.2, seed=7),
    StackLook("dark2-columnar-z", elongation=3.0, seed=8),
    StackLook("dark2-100-slices", shape=(100, 96, 96), grain_px=25.0, seed=9),
]
"""The benchmark's stacks (benchmarks/stack_accuracy.py); tests use a few of them, shrunk."""

FRESH = [
    StackLook("fresh-dark2", seed=31),
    StackLook("fresh-dark3-40px", grain_px=40.0, line_px=3, seed=32),
    StackLook("fresh-bright2-noisy", line="bright", noise=0.06, seed=33),
    StackLook("fresh-dark2-60-slices", shape=(60, 96, 96), grain_px=22.0, seed=34),
    StackLook("fresh-dark2-columnar", elongation=2.0, grain_px=25.0, seed=35),
    StackLook("fresh-none-gradient", line_px=0, noise=0.03, blur=0.8, gradient=0.35, seed=21),
    StackLook("fresh-none-large-noisy", line_px=0, grain_px=45.0, noise=0.05, blur=0.8, seed=22),
    StackLook("fresh-none-small", line_px=0, grain_px=22.0, noise=0.03, blur=0.5, seed=23),
    StackLook("fresh-dark2-drift", drift=2, gradient=0.2, seed=101),
    StackLook("fresh-bright2-drift", line="bright", drift=2, seed=102),
    StackLook("fresh-dark3-drift-large", grain_px=40.0, line_px=3, drift=2, seed=103),
    StackLook("fresh-dark2-drift-256", shape=(16, 256, 256), drift=2, gradient=0.2, seed=104),
]
"""Looks and seeds the defaults were not tuned on (`stack_accuracy.py --family fresh`), to check
that a change that helps `FAMILY` holds on stacks it has not seen."""
