"""3D grain measurements users expect from serial sections (DREAM.3D's anchors).

Neighbours and shared boundary area (voxel faces between two grains), best-fit ellipsoid
semi-axes and aspect ratios (from second moments), and size statistics that leave out the
grains cut by the stack's faces (their sizes are truncated). Arrays are (z, y, x); voxel sizes
(z, y, x) micrometres.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from matsam.volumes.stack3d import grain_table_3d

NEIGHBOUR_COLUMNS = ["grain_a", "grain_b", "shared_faces", "shared_area_um2"]


def neighbour_pairs(labels3d: np.ndarray, voxel_size_um: tuple[float, float, float] | None = None) -> pd.DataFrame:
    """One row per pair of touching grains (grain_a < grain_b): shared_faces (voxel faces
    between them, 6-connectivity) and shared_area_um2 (those faces' area; NaN without a voxel
    size). 0 (no grain) neighbours nobody."""
    labels = np.asarray(labels3d)
    voxel = voxel_size_um or (np.nan,) * 3
    face_area = (voxel[1] * voxel[2], voxel[0] * voxel[2], voxel[0] * voxel[1])  # normal z, y, x
    keys, faces, area = [], [], []
    top = int(labels.max(initial=0)) + 1
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel().astype(np.int64)
        b = np.moveaxis(labels, axis, 0)[1:].ravel().astype(np.int64)
        touch = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        key, count = np.unique(lo * top + hi, return_counts=True)
        keys.append(key)
        faces.append(count)
        area.append(count * face_area[axis])
    key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    table = pd.DataFrame({
        "grain_a": key // top, "grain_b": key % top,
        "shared_faces": np.bincount(inverse, np.concatenate(faces)).astype(np.int64),
        "shared_area_um2": np.bincount(inverse, np.concatenate(area)) if voxel_size_um else np.nan,
    })
    return table.reindex(columns=NEIGHBOUR_COLUMNS)


def neighbour_counts(pairs: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per grain of `labels`: n_neighbours and boundary_area_um2 (summed over its pairs)."""
    both = pd.concat([pairs.rename(columns={"grain_a": "label"}), pairs.rename(columns={"grain_b": "label"})])
    grouped = both.groupby("label").agg(n_neighbours=("shared_faces", "size"),
                                        boundary_area_um2=("shared_area_um2", "sum"))
    out = grouped.reindex(np.asarray(labels)).fillna({"n_neighbours": 0})
    out["n_neighbours"] = out["n_neighbours"].astype(np.int64)
    if pairs["shared_area_um2"].isna().all():
        out["boundary_area_um2"] = np.nan
    return out.reset_index(drop=True)


def ellipsoids(labels3d: np.ndarray, voxel_size_um: tuple[float, float, float] | None = None) -> pd.DataFrame:
    """Best-fit ellipsoid of every grain id 1..max present: semi-axes a >= b >= c (µm with a
    voxel size, else voxels taken as cubes) from the eigenvalues of the grain's covariance
    (a solid ellipsoid has variance axis**2 / 5 along each axis), and the aspect ratios b/a,
    c/a. A grain on one slice is flat: its c is 0 up to the slice's own thickness."""
    labels = np.asarray(labels3d)
    flat = labels.ravel().astype(np.int64)
    n = int(flat.max(initial=0)) + 1
    scale = np.asarray(voxel_size_um if voxel_size_um else (1.0, 1.0, 1.0), float)
    coords = [np.broadcast_to(np.arange(s).reshape([-1 if i == k else 1 for i in range(3)]), labels.shape).ravel()
              * scale[k] for k, s in enumerate(labels.shape)]
    count = np.bincount(flat, minlength=n).astype(float)
    present = np.flatnonzero(count)
    present = present[present > 0]
    mean = [np.bincount(flat, c, n)[present] / count[present] for c in coords]
    cov = np.empty((present.size, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            m = np.bincount(flat, coords[i] * coords[j], n)[present] / count[present] - mean[i] * mean[j]
            cov[:, i, j] = cov[:, j, i] = m
    cov += np.diag(scale**2 / 12.0)  # a voxel is a cube, not a point
    eig = np.sort(np.clip(np.linalg.eigvalsh(cov), 0.0, None), axis=1)[:, ::-1]
    axes = np.sqrt(5.0 * eig)
    return pd.DataFrame({
        "label": present,
        "ellipsoid_a": axes[:, 0], "ellipsoid_b": axes[:, 1], "ellipsoid_c": axes[:, 2],
        "aspect_b_a": axes[:, 1] / axes[:, 0], "aspect_c_a": axes[:, 2] / axes[:, 0],
    })


def size_statistics(table: pd.DataFrame, include_face_grains: bool = False) -> dict[str, float | int | None]:
    """Grain size numbers of a grains3d table, over the grains that do not touch a face of
    the stack unless `include_face_grains` (a grain cut by a face is measured too small):
    n_grains_sized, mean / median / p10 / p90 volume (voxels), mean equivalent sphere
    diameter (µm; None without a voxel size)."""
    sized = table if include_face_grains else table[~table["touches_boundary"].astype(bool)]
    volume = sized["volume_vox"].to_numpy(float)
    esd = sized["equivalent_sphere_diameter_um"].to_numpy(float)
    if not volume.size:
        return {"n_grains_sized": 0, "mean_grain_volume_vox": None, "median_grain_volume_vox": None,
                "p10_grain_volume_vox": None, "p90_grain_volume_vox": None,
                "mean_equivalent_sphere_diameter_um": None}
    return {
        "n_grains_sized": int(volume.size),
        "mean_grain_volume_vox": float(volume.mean()),
        "median_grain_volume_vox": float(np.median(volume)),
        "p10_grain_volume_vox": float(np.percentile(volume, 10)),
        "p90_grain_volume_vox": float(np.percentile(volume, 90)),
        "mean_equivalent_sphere_diameter_um": float(esd.mean()) if np.isfinite(esd).all() else None,
    }


def grain_measurements(labels3d: np.ndarray, voxel: tuple[float, float, float] | None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """grains3d table (sizes, n_neighbours, boundary area, best-fit ellipsoid) and the
    neighbour pairs (neighbours3d.csv) of a 3D label volume."""
    table = grain_table_3d(labels3d, voxel)
    pairs = neighbour_pairs(labels3d, voxel)
    extra = pd.concat([neighbour_counts(pairs, table["label"]),
                       ellipsoids(labels3d, voxel).drop(columns="label")], axis=1)
    return pd.concat([table.reset_index(drop=True), extra], axis=1), pairs
