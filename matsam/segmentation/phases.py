"""Multi-phase classes from what SAM's objects look like, not only from their grey level.

Phases that share a grey level often differ in size or shape: secondary and tertiary gamma-prime
in nickel superalloys are one phase at two sizes, cracks in a coating are thin and long where
oxide particles are compact. Each phase object (a SAM mask, a small particle kept in its
pre-segmented shape, or a missed pre-segmented region) is described by a few features and the
objects are split, without labels, into `n_phases - 1` classes: each split is the cleanest
two-component 1-D Gaussian mixture over any one of the configured features (the feature whose two
modes lie farthest apart for their spread), so an irrelevant feature never blurs a clean one.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.measure import regionprops

from matsam.config import MergeConfig
from matsam.imaging import boundary_map

# Two modes closer than this (Ashman's D) are one class seen twice, not two classes: a mixture
# is bimodal from D = 2, and two Gaussians fitted to a hundred values of one normal population
# reach D = 2.4 by chance.
MIN_SEPARATION = 2.5
# A class needs at least this many objects and this share of them: a handful of outliers (dust,
# a false detection, a scratch) is not a phase.
MIN_CLASS_OBJECTS = 3
MIN_CLASS_SHARE = 0.1


def object_features(labels: np.ndarray, gray: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(n_objects, len(names)) feature matrix for labels 1..labels.max() (absent ids: NaN rows).

    Names (config.PHASE_FEATURES): log_area; equivalent_diameter (of the disc of the same area);
    elongation (1 - minor / major axis of the moment ellipse: 0 round, 1 a line); solidity (area /
    convex hull area: low for branched or crooked objects); thinness (log of area / (pi x largest
    inscribed radius²): 0 for a disc, large for a crack); mean_intensity and intensity_spread
    (mean and standard deviation of the object's grey).
    """
    n = int(labels.max())
    flat = labels.ravel().astype(np.int64)
    grey = gray.ravel().astype(np.float64)
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    safe = np.maximum(area, 1)
    mean = np.bincount(flat, weights=grey, minlength=n + 1) / safe
    spread = np.sqrt(np.maximum(np.bincount(flat, weights=grey**2, minlength=n + 1) / safe - mean**2, 0))
    columns: dict[str, np.ndarray] = {
        "log_area": np.log(safe),
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
        "mean_intensity": mean,
        "intensity_spread": spread,
    }
    if {"elongation", "solidity"} & set(names):
        elongation, solidity = np.zeros(n + 1), np.ones(n + 1)
        for region in regionprops(labels.astype(np.int32)):
            major = region.axis_major_length
            elongation[region.label] = 1 - region.axis_minor_length / major if major > 0 else 0.0
            solidity[region.label] = region.solidity if region.area > 2 else 1.0
        columns["elongation"], columns["solidity"] = elongation, solidity
    if "thinness" in names:
        inner = (labels > 0) & (boundary_map(labels) == 0)
        inner[-1, :] = inner[:, -1] = False  # the image edge bounds an object too
        depth = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)
        radius = np.zeros(n + 1, np.float32)
        np.maximum.at(radius, flat, depth.ravel())
        columns["thinness"] = np.log(safe / (np.pi * np.maximum(radius.astype(np.float64), 0.5) ** 2))
    out = np.stack([columns[name] for name in names], axis=1)[1:]
    out[area[1:] == 0] = np.nan
    return out


def two_gaussians(x: np.ndarray, iterations: int = 200) -> tuple[np.ndarray, float]:
    """Fit a two-component 1-D Gaussian mixture by EM; returns (in the upper mode, separation).

    Started from the split of least within-class variance (exact on sorted values), so the result
    does not depend on a random start. Separation is Ashman's D of the fitted components,
    |m1 - m2| / sqrt((s1² + s2²) / 2): a mixture with D <= 2 has one mode, above 2 the modes are
    apart. Values go to the component of higher posterior. No split (all False, 0.0) when either
    side would hold fewer than MIN_CLASS_OBJECTS or MIN_CLASS_SHARE of the values.
    """
    none = (np.zeros(x.shape, bool), 0.0)
    order = np.sort(x)
    m = order.size
    if m < 2 * MIN_CLASS_OBJECTS or order[0] == order[-1]:
        return none
    csum, csq = np.cumsum(order), np.cumsum(order**2)
    k = np.arange(1, m)
    within = (csq[:-1] - csum[:-1] ** 2 / k) + (csq[-1] - csq[:-1] - (csum[-1] - csum[:-1]) ** 2 / (m - k))
    resp = (x > order[int(np.argmin(within))]).astype(np.float64)  # P(upper) per value
    floor = 1e-3 * (order[-1] - order[0])
    previous = -np.inf
    for _ in range(iterations):
        r = np.stack([1 - resp, resp], axis=1)
        weight = r.sum(axis=0)
        if weight.min() < 1e-9:
            return none
        means = (r * x[:, None]).sum(axis=0) / weight
        sds = np.maximum(np.sqrt((r * (x[:, None] - means) ** 2).sum(axis=0) / weight), floor)
        log_p = np.log(weight / m) - np.log(sds) - 0.5 * ((x[:, None] - means) / sds) ** 2
        top = log_p.max(axis=1, keepdims=True)
        likelihood = float((top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))).sum())
        resp = 1 / (1 + np.exp(np.clip(log_p[:, 0] - log_p[:, 1], -50, 50)))
        if likelihood - previous < 1e-9 * abs(likelihood):
            break
        previous = likelihood
    upper = resp > 0.5
    if means[0] > means[1]:
        upper = ~upper
    if min(int(upper.sum()), int((~upper).sum())) < max(MIN_CLASS_OBJECTS, MIN_CLASS_SHARE * m):
        return none
    return upper, float(abs(means[1] - means[0]) / np.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2))


def best_split(features: np.ndarray) -> tuple[np.ndarray, float]:
    """The cleanest two-mode split of the rows over any single feature column."""
    best = (np.zeros(len(features), bool), 0.0)
    for column in features.T:
        upper, separation = two_gaussians(column)
        if separation > best[1]:
            best = (upper, separation)
    return best


def cluster_objects(features: np.ndarray, n_classes: int) -> np.ndarray:
    """Cluster ids 0..n_classes-1 for the feature rows: the cleanest split of any cluster,
    repeated until there are `n_classes` clusters or no split is cleaner than MIN_SEPARATION."""
    cluster = np.zeros(len(features), np.int64)
    for new_id in range(1, n_classes):
        splits = [best_split(features[cluster == c]) for c in range(new_id)]
        c = int(np.argmax([s for _, s in splits]))
        upper, separation = splits[c]
        if separation < MIN_SEPARATION:
            break
        members = np.flatnonzero(cluster == c)
        cluster[members[upper]] = new_id
    return cluster


def feature_classes(labels: np.ndarray, gray: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Class map (H, W) uint8 of the phase objects: 0 = matrix, 1..n_phases-1 = the clusters of
    their features (`cfg.phase_features`), class 1 the one covering the most pixels, then fewer.
    Fewer classes are used when the objects do not split cleanly."""
    n_objects = int(labels.max())
    if n_objects == 0:
        return np.zeros(labels.shape, np.uint8)
    features = object_features(labels, gray, tuple(cfg.phase_features))
    present = ~np.isnan(features).any(axis=1)
    cluster = np.zeros(n_objects, np.int64)
    cluster[present] = cluster_objects(features[present], cfg.n_phases - 1)
    area = np.bincount(labels.ravel(), minlength=n_objects + 1)[1:]
    totals = np.bincount(cluster, weights=area, minlength=cfg.n_phases - 1)
    rank = np.empty_like(totals, dtype=np.int64)
    rank[np.argsort(-totals, kind="stable")] = np.arange(1, totals.size + 1)
    lookup = np.concatenate([[0], rank[cluster]]).astype(np.uint8)
    return lookup[labels]
