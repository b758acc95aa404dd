"""Synthetic 2D micrographs with known answers, shared by the tests."""

from __future__ import annotations

import cv2
import numpy as np


def voronoi_micrograph(seed: int, size: int = 256, n_grains: int = 30):
    """Grey Voronoi grains (levels 150-220) with 3-px dark (50) boundaries and noise (sd 5).

    Returns the (H, W, 3) uint8 image and the true (H, W) bool boundary map.
    """
    rng = np.random.default_rng(seed)
    seeds = rng.random((n_grains, 2)) * size
    yy, xx = np.mgrid[:size, :size]
    grains = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(-1)
    change = np.zeros((size, size), np.uint8)
    change[:, 1:] |= grains[:, 1:] != grains[:, :-1]
    change[1:, :] |= grains[1:, :] != grains[:-1, :]
    boundary = cv2.dilate(change, np.ones((3, 3), np.uint8)) > 0
    grey = np.where(boundary, 50.0, rng.uniform(150, 220, n_grains)[grains])
    grey += rng.normal(0, 5, grey.shape)
    image = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2), boundary


def disc_micrograph(seed: int, dark: bool, ramp: float = 0.0, size: int = 256):
    """15 discs (r 8-20 px) at grey 60 on 190 (or the reverse), noise sd 8, plus an optional
    left-to-right illumination ramp of +-``ramp`` grey levels.

    Returns the (H, W, 3) uint8 image and the (H, W) uint8 0/1 disc mask.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(15):
        centre = tuple(int(v) for v in rng.integers(20, size - 20, 2))
        cv2.circle(mask, centre, int(rng.integers(8, 20)), 1, -1)
    inside, outside = (60.0, 190.0) if dark else (190.0, 60.0)
    grey = np.where(mask == 1, inside, outside) + rng.normal(0, 8, mask.shape)
    grey += np.linspace(-ramp, ramp, size)[None, :]
    image = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2), mask


def write_disc_dataset(folder, n_images: int = 2, size: int = 128, seed: int = 0) -> None:
    """A tiny labelled phase dataset: `images/disc_<i>.png` and `labels/disc_<i>.png` (0/1)."""
    from pathlib import Path

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        image, mask = few_discs(seed + i, size)
        cv2.imwrite(str(folder / "images" / f"disc_{i}.png"), image)
        cv2.imwrite(str(folder / "labels" / f"disc_{i}.png"), mask)


def few_discs(seed: int, size: int = 128, n: int = 4):
    """A few well separated dark discs (radius ~ size/10) on a bright background.

    Returns (H, W, 3) uint8 image and (H, W) uint8 0/1 mask. Small and simple enough that the
    real MobileSAM runs on it in seconds on a CPU.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    cells = [(x, y) for y in (0.3, 0.7) for x in (0.3, 0.7)][:n]
    for x, y in cells:
        jitter = rng.uniform(-0.05, 0.05, 2)
        centre = (int((x + jitter[0]) * size), int((y + jitter[1]) * size))
        cv2.circle(mask, centre, int(size * rng.uniform(0.08, 0.12)), 1, -1)
    grey = np.where(mask == 1, 70.0, 190.0) + rng.normal(0, 4, mask.shape)
    image = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2), mask


def three_phase_micrograph(seed: int, size: int = 160):
    """Grey matrix (128) with four dark (40) and four bright (220) discs (r 10-14 px) on a regular
    grid, noise sd 6.

    Returns the (H, W) uint8 image, the (H, W) uint8 class map (0 matrix, 1 dark, 2 bright) and
    the list of discs as (cx, cy, r, class).
    """
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    discs = []
    step = size // 4
    for i in range(4):
        for j in range(2):
            cls = 1 + (i + j) % 2
            cx, cy = step // 2 + i * step, size // 4 + j * size // 2
            r = int(rng.integers(10, 15))
            cv2.circle(classes, (cx, cy), r, cls, -1)
            discs.append((cx, cy, r, cls))
    grey = np.array([128.0, 40.0, 220.0])[classes] + rng.normal(0, 6, classes.shape)
    return np.clip(grey, 0, 255).astype(np.uint8), classes, discs


def _grey_rgb(classes: np.ndarray, levels: tuple[float, ...], noise: float, rng) -> np.ndarray:
    grey = np.asarray(levels, np.float64)[classes] + rng.normal(0, noise, classes.shape)
    image = np.clip(cv2.GaussianBlur(grey, (3, 3), 0), 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2)


def size_phase_micrograph(seed: int, size: int = 256, n_large: int = 8, n_small: int = 40):
    """Two classes of one grey level that differ in size, as secondary / tertiary gamma-prime:
    `n_large` discs (r 14-22 px, class 1) and `n_small` discs (r 2-4 px, class 2), all dark (80)
    on a bright matrix (170), noise sd 6, never touching.

    Returns the (H, W, 3) uint8 image and the (H, W) uint8 class map (0 = matrix).
    """
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    taken = np.zeros((size, size), np.uint8)
    for cls, count, (r_lo, r_hi) in ((1, n_large, (14, 23)), (2, n_small, (2, 5))):
        placed = 0
        while placed < count:
            r = int(rng.integers(r_lo, r_hi))
            cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
            ring = np.zeros_like(taken)
            cv2.circle(ring, (cx, cy), r + 3, 1, -1)
            if (ring & taken).any():
                continue
            taken |= ring
            cv2.circle(classes, (cx, cy), r, cls, -1)
            placed += 1
    return _grey_rgb(classes, (170.0, 80.0, 80.0), 6.0, rng), classes


def coating_micrograph(seed: int, size: int = 256, n_oxides: int = 12, n_cracks: int = 6):
    """Two classes of one grey level that differ in shape, as oxide particles and cracks in a
    coating: compact ellipses (semi-axes 6-12 px, class 1) and thin cracks (2-3 px wide, 50-110 px
    long, kinked once, class 2), all dark (70) in a bright coating (175), noise sd 6.

    Returns the (H, W, 3) uint8 image and the (H, W) uint8 class map (0 = coating).
    """
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    taken = np.zeros((size, size), np.uint8)

    def place(shape: np.ndarray, cls: int) -> bool:
        """Draw `shape` (0/1) as class `cls` unless it comes within 3 px of an earlier one."""
        if not shape.any() or (cv2.dilate(shape, np.ones((7, 7), np.uint8)) & taken).any():
            return False
        taken[:] |= shape
        classes[shape > 0] = cls
        return True

    placed = 0
    while placed < n_oxides:
        centre = tuple(int(v) for v in rng.integers(16, size - 16, 2))
        axes = tuple(int(v) for v in rng.integers(6, 13, 2))
        shape = cv2.ellipse(np.zeros_like(taken), centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        placed += place(shape, 1)
    placed = 0
    while placed < n_cracks:
        start = rng.integers(10, size - 10, 2)
        length, angle = rng.uniform(50, 110), rng.uniform(0, np.pi)
        kink = angle + rng.uniform(-0.6, 0.6)
        mid = start + 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
        end = mid + 0.5 * length * np.array([np.cos(kink), np.sin(kink)])
        points = np.array([start, mid, end]).round().astype(np.int32)
        if (points < 4).any() or (points > size - 5).any():
            continue
        width = int(rng.integers(2, 4))
        placed += place(cv2.polylines(np.zeros_like(taken), [points], False, 1, width), 2)
    return _grey_rgb(classes, (175.0, 70.0, 70.0), 6.0, rng), classes
