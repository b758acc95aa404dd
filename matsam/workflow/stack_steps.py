"""The serial-section step of the pipeline: per-slice 2D results -> 3D objects.

`link_stack` is what the `link_stack` rule runs (through scripts/run_stage.py): it reads every
slice's 2D result and grey image, links the slices (grain stacks: stack3d.link_slices; phase
stacks: 3D connected components of the phase masks) and writes the stack's outputs atomically:

    labels3d.h5   dataset `labels`, uint32 (z, y, x), chunked + gzip, voxel size attributes;
                  multi-phase stacks also `classes`, uint8 (z, y, x), each voxel's class
    grains3d.csv  one row per 3D object (stack3d.grain_table_3d; multi-phase: its `class`)
    summary.csv   one row: object count, mean volume, phase volume fraction (and per class),
                  link statistics
    shifts.json   the (dy, dx) shift applied to every slice (all zero unless `align`)
    ortho_xy.png, ortho_xz.png, ortho_yz.png   middle sections, objects tinted over the grey
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from matsam import io
from matsam.measurement.quantify import object_classes
from matsam.volumes.consistency import ConsistencyConfig, boundary_look, link_consistent
from matsam.volumes.measure3d import ellipsoids, neighbour_counts, neighbour_pairs, size_statistics
from matsam.volumes.stack3d import (
    LinkConfig,
    apply_shifts,
    estimate_shifts,
    grain_table_3d,
    orthogonal_views,
    stack_summary,
)

log = logging.getLogger("matsam")
PathLike = str | Path
LINK_STATS = ["links", "gap_links", "starts", "ends", "splits", "merges"]
SUMMARY_COLUMNS = [
    "stack", "mode", "n_slices", "height", "width", "voxel_z_um", "voxel_y_um", "voxel_x_um",
    "n_grains_3d", "n_grains_sized", "mean_grain_volume_vox", "median_grain_volume_vox",
    "p10_grain_volume_vox", "p90_grain_volume_vox", "mean_grain_volume_um3",
    "mean_equivalent_sphere_diameter_um", "phase_volume_fraction", "aligned", "max_shift_px",
    *LINK_STATS, "refine_boundaries", "boundary_look", "boundary_line_ratio", "line_splits", "grey_cuts",
    "fragments_joined",
]


def read_slices(files: Sequence[PathLike], kind: str) -> np.ndarray:
    """Stack per-slice images into one (z, y, x) array; a slice of another size is an error
    naming it. kind: "labels" (uint32 TIFF), "mask" (0/1 or class-id PNG -> uint8) or "grey"
    (RGB PNG -> uint8 grey)."""
    first = None
    out = None
    for z, f in enumerate(files):
        image = io.read_image(f)
        if kind == "grey":
            image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
            image = image.astype(np.uint8, copy=False)
        elif kind == "mask":  # 0/1 masks as bool, multi-phase class maps as uint8 class ids
            image = image.astype(np.uint8, copy=False)
        else:
            image = image.astype(np.uint32, copy=False)
        if out is None:
            first = f
            out = np.empty((len(files), *image.shape), image.dtype)
        elif image.shape != out.shape[1:]:
            raise ValueError(f"{f}: slice is {image.shape}, but {first} is {out.shape[1:]}")
        out[z] = image
    if out is None:
        raise ValueError("a stack needs at least one slice")
    return out


def refine_boundaries(labels: np.ndarray, grey: np.ndarray, lines: str, width: int = 1) -> np.ndarray:
    """Move a slice's grain boundaries onto the grey image's boundary lines.

    labels: (y, x) grain labels covering every pixel; grey: (y, x) image; lines: "dark" or
    "bright" (the colour of the boundary lines). Pixels within `width` + 1 px of a label change
    are unassigned and flooded back from the grains' interiors by a watershed on the (lightly
    smoothed) intensity, so that neighbours meet on the line's darkest (brightest) pixels: a
    2D segmenter's masks tend to swallow the whole line on one side. Grains lying entirely in
    that band keep their pixels.
    """
    from skimage.segmentation import find_boundaries, watershed

    band = find_boundaries(labels, mode="thick").astype(np.uint8)
    if width > 0:
        band = cv2.dilate(band, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    markers = labels.astype(np.int64)
    markers[band > 0] = 0
    lost = np.setdiff1d(np.unique(labels), np.unique(markers))
    if lost.size:
        keep = np.isin(labels, lost)
        markers[keep] = labels[keep]
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (3, 3), 0)
    return watershed(-smooth if lines == "dark" else smooth, markers=markers).astype(labels.dtype)


def grain_measurements(labels3d: np.ndarray, voxel: tuple[float, float, float] | None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """grains3d table (sizes, n_neighbours, boundary area, best-fit ellipsoid) and the
    neighbour pairs (neighbours3d.csv) of a 3D label volume."""
    table = grain_table_3d(labels3d, voxel)
    pairs = neighbour_pairs(labels3d, voxel)
    extra = pd.concat([neighbour_counts(pairs, table["label"]),
                       ellipsoids(labels3d, voxel).drop(columns="label")], axis=1)
    return pd.concat([table.reset_index(drop=True), extra], axis=1), pairs


def link_stack(label_files: Sequence[PathLike], map_files: Sequence[PathLike],
               grey_files: Sequence[PathLike], outputs: Mapping[str, PathLike],
               params: Mapping[str, Any]) -> dict[str, Any]:
    """Link a stack's per-slice 2D results into 3D objects and write the stack's outputs.

    label_files / map_files / grey_files: per slice, in z order, the 2D rules' labels.tif,
    boundaries.png or phase.png, and the 8-bit image.png.
    outputs: paths for keys labels3d, grains3d, neighbours3d, summary, shifts, ortho_xy, ortho_xz, ortho_yz.
    params: `workflow.Stack.params()` (stack, mode, voxel_size_um, align, min_overlap, max_gap,
    gap_min_overlap, refine_boundaries). Returns the summary row.
    """
    mode = params["mode"]
    voxel = tuple(params["voxel_size_um"]) if params.get("voxel_size_um") else None
    align = bool(params.get("align"))
    grey = read_slices(grey_files, "grey")
    stats = evidence = None
    counts: dict[str, int] = {}
    if mode == "grain":
        labels2d = read_slices(label_files, "labels")
        if labels2d.shape != grey.shape:
            raise ValueError(f"labels {labels2d.shape} and grey slices {grey.shape} differ in shape")
        evidence = boundary_look(labels2d, grey)
        refine = params.get("refine_boundaries", "auto")
        lines = evidence.look if refine == "auto" else refine
        if lines != "none":
            labels2d = np.stack([refine_boundaries(lab, g, lines) for lab, g in zip(labels2d, grey)])
        cfg = LinkConfig(min_overlap=float(params.get("min_overlap", 0.3)),
                         max_gap=int(params.get("max_gap", 1)),
                         gap_min_overlap=float(params.get("gap_min_overlap", 0.5)), align=align)
        consistency = ConsistencyConfig(bool(params.get("consistent", True)),
                                        int(params.get("fragment_slices", 2)),
                                        float(params.get("fragment_volume", 0.25)))
        labels3d, stats, counts = link_consistent(labels2d, grey, cfg, evidence, consistency)
        shifts = stats.shifts
        phase = classes = None
        del labels2d
    else:
        masks = read_slices(map_files, "mask")
        if masks.shape != grey.shape:
            raise ValueError(f"phase masks {masks.shape} and grey slices {grey.shape} differ in shape")
        phase = masks  # the fraction is taken over every slice's full field, before any shift
        shifts = estimate_shifts(grey) if align else np.zeros((len(masks), 2), np.int64)
        from skimage.measure import label as connected

        moved = apply_shifts(masks, shifts) if align else masks
        # Components of equal class ids: a multi-phase stack's 3D objects keep their classes.
        labels3d = connected(moved, background=0, connectivity=1).astype(np.uint32)
        classes = moved if masks.max(initial=0) > 1 else None
    if align:
        grey = apply_shifts(grey, shifts)

    from matsam.volumes.stackio import write_labels_h5

    write_labels_h5(outputs["labels3d"], labels3d, voxel, classes)
    table, pairs = grain_measurements(labels3d, voxel)
    if classes is not None:
        table.insert(1, "class", object_classes(labels3d, classes)[1])
    io.write_csv(outputs["grains3d"], table)
    io.write_csv(outputs["neighbours3d"], pairs)
    numbers = stack_summary(labels3d, voxel, phase)
    sizes = size_statistics(table, bool(params.get("include_face_grains", False)))
    mean_vox = sizes["mean_grain_volume_vox"]
    numbers |= {**sizes, "mean_grain_volume_um3": mean_vox * float(np.prod(voxel)) if voxel and mean_vox else None}
    nz, ny, nx = labels3d.shape
    row = {
        "stack": params.get("stack", ""), "mode": mode, "n_slices": nz, "height": ny, "width": nx,
        **dict(zip(("voxel_z_um", "voxel_y_um", "voxel_x_um"), voxel or (None,) * 3)),
        **numbers,
        "aligned": align,
        "max_shift_px": int(np.abs(shifts).max(initial=0)),
        **{k: (getattr(stats, k) if stats is not None else None) for k in LINK_STATS},
        "refine_boundaries": params.get("refine_boundaries", "auto") if mode == "grain" else None,
        "boundary_look": evidence.look if evidence else None,
        "boundary_line_ratio": round(evidence.line_ratio, 3) if evidence else None,
        **{k: counts.get(k) for k in ("line_splits", "grey_cuts", "fragments_joined")},
    }
    per_class = [c for c in row if c.startswith("volume_fraction_class_")]
    io.write_csv(outputs["summary"], pd.DataFrame([row]).reindex(columns=SUMMARY_COLUMNS + per_class))
    io.write_json(outputs["shifts"], {
        "aligned": align,
        "reference_slice": 0,
        "description": "(dy, dx) pixels by which slice z was moved before linking; labels3d.h5 is in "
                       "this registered frame",
        "slices": [Path(f).parent.name for f in grey_files],
        "shifts_dy_dx": np.asarray(shifts).tolist(),
    })
    views = orthogonal_views(labels3d, grey, voxel)
    for name in ("xy", "xz", "yz"):
        io.write_png(outputs[f"ortho_{name}"], views[name])
    log.info("%s: %d slices -> %d 3D %s", params.get("stack"), nz, numbers["n_grains_3d"],
             "grains" if mode == "grain" else "phase objects")
    return row


def link_stack_rule(smk: Any) -> None:
    """`link_stack` rule -> link_stack (called from matsam.workflow.job.STEPS)."""
    link_stack(smk.input.labels, smk.input.maps, smk.input.grey, dict(smk.output.items()),
               smk.params.settings)
