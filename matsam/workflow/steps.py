"""The pipeline's steps as file-to-file functions, for 2D images and 3D stacks.

Each Snakemake rule calls exactly one of these (through its own short script `scripts/<rule>.py`),
and the `matsam segment` CLI calls them in sequence, so both run the same code. Every step takes
only the config sections it uses, reads its inputs, calls the algorithms of the other modules,
and writes its outputs atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matsam import imaging, io
from matsam.config import (
    CropConfig,
    LinkConfig,
    MergeConfig,
    MethodConfig,
    Mode,
    ModelConfig,
    PromptConfig,
    QuantifyConfig,
    ReadConfig,
    SamConfig,
)
from matsam.measurement import astm, baselines, coco, quantify, reference, shape
from matsam.measurement.metrics import METRIC_COLUMNS, metric_columns, score
from matsam.measurement.overlay import overlay
from matsam.segmentation import merge, prompts
from matsam.segmentation.crops import Crop, crop_boxes, tile_boxes
from matsam.segmentation.masks import CropMasks
from matsam.volumes import consistency, measure3d, stack3d, stackio

if TYPE_CHECKING:
    from matsam.segmentation.sam import Decoder, Encoder, Segmenter

log = logging.getLogger("matsam")

PathLike = str | Path


def prepare_image(src: PathLike, dst: PathLike, read: ReadConfig) -> None:
    """Any supported micrograph -> 8-bit RGB PNG, the one image every later step reads."""
    io.write_png(dst, io.read_rgb8(src, read.scale16, read.percentiles))


def plan_crops(image: PathLike, dst: PathLike, crops: CropConfig) -> None:
    """SAM's crop layers, or tiles of side `crops.tile_px` when the image's longer side exceeds it
    (then crops.json says `"tiled": true`)."""
    height, width = io.png_size(image)
    plan: dict[str, Any] = {"height": height, "width": width}
    if max(height, width) > crops.tile_px:
        boxes = tile_boxes(height, width, crops.tile_px, crops.tile_overlap)
        plan["tiled"] = True
    else:
        boxes = crop_boxes(height, width, crops.n_layers, crops.overlap_ratio)
    io.write_json(dst, {**plan, "crops": [c.as_dict() for c in boxes]})


def read_crops(path: PathLike) -> list[Crop]:
    return [Crop(**c) for c in io.read_json(path)["crops"]]


def is_tiled(crops_file: PathLike) -> bool:
    return bool(io.read_json(crops_file).get("tiled", False))


def make_prompts(image: PathLike, crops_file: PathLike, dst: PathLike, mode: Mode, cfg: PromptConfig) -> None:
    """Pre-segment once on the whole image, then write each crop's prompts in its own frame."""
    rgb = io.read_image(image)
    pre = prompts.presegment(rgb, mode, cfg)
    arrays: dict[str, np.ndarray] = {"threshold": np.float64(pre.threshold), "foreground": np.str_(pre.foreground)}
    for crop in read_crops(crops_file):
        for key, value in prompts.crop_prompts(pre, crop, cfg).items():
            arrays[f"{key}_{crop.index}"] = value
        log.info("crop %d: %d prompts (%d seeds)", crop.index, len(arrays[f"points_{crop.index}"]),
                 int(arrays[f"n_seed_{crop.index}"]))
    io.write_npz(dst, **arrays)


def mask_file(masks_dir: PathLike, name: str, crop_index: int) -> Path:
    """Where the SAM decoder step writes the masks of crop `crop_index` of image `name`."""
    return Path(masks_dir) / name / f"crop_{crop_index}.npz"


def embedding_file(embeddings_dir: PathLike, name: str, crop_index: int) -> Path:
    """Where the SAM encoder step writes the image embedding of crop `crop_index` of image `name`."""
    return Path(embeddings_dir) / name / f"crop_{crop_index}.npy"


def sam_windows(image: PathLike, crops_file: PathLike, read: ReadConfig) -> Iterator[tuple[Crop, np.ndarray]]:
    """Each crop of a prepared image as SAM sees it (contrast-stretched when `read.stretch`)."""
    rgb = io.read_image(image)
    if read.stretch:
        rgb = io.stretch_contrast(rgb, read.percentiles)
    for crop in read_crops(crops_file):
        yield crop, np.ascontiguousarray(rgb[crop.y0 : crop.y1, crop.x0 : crop.x1])


def embed_images(names: Sequence[str], images: Sequence[PathLike], crops_files: Sequence[PathLike],
                 embeddings_dir: PathLike, read: ReadConfig, model: ModelConfig,
                 encoder: "Encoder | None" = None) -> None:
    """One SAM encoder job: load the model once and write every crop's image embedding."""
    from matsam.segmentation.sam import Encoder

    encoder = encoder or Encoder.from_config(model)
    for name, image, crops_file in zip(names, images, crops_files, strict=True):
        start = time.perf_counter()
        crops = 0
        for crop, window in sam_windows(image, crops_file, read):
            io.write_npy(embedding_file(embeddings_dir, name, crop.index), encoder.embed(window).cpu().numpy())
            crops += 1
        log.info("%s: %d crop embedding(s) in %.1f s", name, crops, time.perf_counter() - start)


def segment_images(names: Sequence[str], crops_files: Sequence[PathLike], prompts_files: Sequence[PathLike],
                   embeddings_dir: PathLike, masks_dir: PathLike, model: ModelConfig, sam: SamConfig,
                   decoder: "Decoder | None" = None) -> None:
    """One SAM decoder job: decode every crop's prompts from its stored embedding and write the
    crop's masks (bit-packed, with scores and boxes) to its own file (`mask_file`)."""
    from matsam.segmentation.sam import Decoder

    decoder = decoder or Decoder.from_config(model)
    for name, crops_file, prompts_file in zip(names, crops_files, prompts_files, strict=True):
        start = time.perf_counter()
        points = io.read_npz(prompts_file)
        prompted = decoded = kept = 0
        for crop in read_crops(crops_file):
            features = io.read_npy(embedding_file(embeddings_dir, name, crop.index))
            crop_points = points[f"points_{crop.index}"]
            masks = decoder.decode(features, (crop.height, crop.width), crop_points, sam,
                                   points[f"n_seed_{crop.index}"])
            io.write_npz(mask_file(masks_dir, name, crop.index), **masks.to_arrays())
            prompted, decoded, kept = prompted + len(crop_points), decoded + masks.decoded, kept + len(masks)
        log.info("%s: %d prompts, %d decoded, %d masks kept in %.1f s", name, prompted, decoded, kept,
                 time.perf_counter() - start)


def embed_and_segment(names: Sequence[str], images: Sequence[PathLike], crops_files: Sequence[PathLike],
                      prompts_files: Sequence[PathLike], embeddings_dir: PathLike, masks_dir: PathLike,
                      cfg: MethodConfig, segmenter: "Segmenter") -> None:
    """Both SAM steps in one process with one loaded model (the CLI, benchmarks)."""
    embed_images(names, images, crops_files, embeddings_dir, cfg.read, cfg.model, segmenter.encoder)
    segment_images(names, crops_files, prompts_files, embeddings_dir, masks_dir, cfg.model, cfg.sam,
                   segmenter.decoder)


def merge_masks(image: PathLike, crops_file: PathLike, prompts_file: PathLike, masks_dir: PathLike, name: str,
                labels_out: PathLike, map_out: PathLike, mode: Mode, cfg: MergeConfig, blur: int,
                pixel_size_um: float | None) -> None:
    """Cross-crop NMS and post-processing (`merge.merge_image`) into labels.tif plus
    boundaries.png or phase.png; `blur` is the pre-segmentation's (prompts.blur)."""
    rgb = io.read_image(image)
    crops = read_crops(crops_file)
    crop_masks = (CropMasks.from_arrays(io.read_npz(mask_file(masks_dir, name, c.index))) for c in crops)
    pre = io.read_npz(prompts_file)
    labels, mask = merge.merge_image(rgb, crops, crop_masks, mode, cfg, blur, float(pre["threshold"]),
                                     str(pre["foreground"]), is_tiled(crops_file))
    log.info("%s: %d objects", name, int(np.unique(labels[labels > 0]).size))
    io.write_tiff(labels_out, labels, pixel_size_um)
    io.write_png(map_out, mask)


def draw_overlay(image: PathLike, labels_file: PathLike, map_file: PathLike, dst: PathLike, mode: Mode) -> None:
    rgb = io.read_image(image)
    labels = io.read_image(labels_file)
    boundaries = io.read_image(map_file) if mode == "grain" else None
    classes = io.read_image(map_file) if mode == "phase" else None
    if classes is not None and classes.max(initial=0) <= 1:
        classes = None  # a 0/1 phase mask: random colours per object, as always
    io.write_png(dst, overlay(rgb, labels, boundaries, classes=classes))


def quantify_objects(raw_image: PathLike, labels_file: PathLike, map_file: PathLike, objects_out: PathLike,
                     summary_out: PathLike, mode: Mode, cfg: QuantifyConfig, image_name: str,
                     coco_out: PathLike | None = None) -> None:
    """Per-object table in the image's own intensity units (with the shape columns), the image's
    summary row (with the ASTM counts in grain mode), and the COCO export of its objects."""
    intensity = imaging.grey_intensity(io.read_image(raw_image))
    labels = io.read_image(labels_file)  # its own dtype (uint32): the measurements work by bands
    pixel = cfg.pixel_size_um
    table = quantify.object_table(labels, intensity, pixel)
    table = pd.concat([table, shape.shape_table(labels, table["perimeter_px"].to_numpy())], axis=1)
    if pixel is not None:
        table["feret_max_um"], table["feret_min_um"] = table["feret_max_px"] * pixel, table["feret_min_px"] * pixel
    phase = io.read_image(map_file) if mode == "phase" else None
    if phase is not None and phase.max(initial=0) > 1:  # multi-phase: each object's class
        table.insert(1, "class", quantify.object_classes(labels, phase)[1])
    io.write_csv(objects_out, table)
    row = {"image": image_name, "mode": mode, **quantify.image_summary(labels, mode, pixel, phase)}
    if mode == "grain":
        row.update(astm.field_counts(labels, pixel), unlabelled_fraction=float(np.mean(labels == 0)))
    io.write_json(summary_out, row)
    if coco_out is not None:
        io.write_json(coco_out, coco.coco_document(labels, Path(raw_image).name, mode, phase, pixel))
    log.info("%s: %d objects measured", image_name, len(table))


def evaluate_image(image: PathLike, map_file: PathLike, label_file: PathLike, prompts_file: PathLike,
                   dst: PathLike, mode: Mode, image_name: str, methods: Sequence[str]) -> None:
    """Score matsam and the classic baselines on one labelled image; one row per method."""
    rgb = io.read_image(image)
    label = reference.read_reference(label_file, mode, rgb.shape[:2])
    rows = [{"image": image_name, "method": "matsam", **score(mode, io.read_image(map_file), label)}]
    if mode == "grain":
        for name in methods:
            predicted = baselines.GRAIN_BASELINES[name](rgb)
            rows.append({"image": image_name, "method": name, **score("grain", predicted, label)})
    else:
        foreground = str(io.read_npz(prompts_file)["foreground"])
        for name in methods:
            predicted = baselines.PHASE_BASELINES[name](rgb, foreground)
            rows.append({"image": image_name, "method": name, **score("phase", predicted, label)})
    table = pd.DataFrame(rows)
    io.write_csv(dst, table.reindex(columns=metric_columns(table.columns)))


def aggregate_dataset(metric_files: Sequence[PathLike], summary_files: Sequence[PathLike],
                      metrics_out: PathLike, summary_out: PathLike) -> None:
    frames = [pd.read_csv(f) for f in metric_files]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)
    io.write_csv(metrics_out, table.reindex(columns=metric_columns(table.columns)))
    rows = [json.loads(Path(f).read_text()) for f in summary_files]
    io.write_csv(summary_out, pd.DataFrame(rows))


def aggregate_all(datasets: Sequence[str], metric_files: Sequence[PathLike], dst: PathLike) -> None:
    """One row per dataset x method: the number of scored images and the mean of each metric."""
    rows = []
    seen: list[str] = []
    for dataset, path in zip(datasets, metric_files, strict=True):
        table = pd.read_csv(path)
        columns = metric_columns(table.columns)[2:]
        seen += columns
        for method, group in table.groupby("method", sort=False):
            means = group.reindex(columns=columns).mean(numeric_only=True)
            rows.append({"dataset": dataset, "method": method, "n_images": len(group), **means.to_dict()})
    columns = ["dataset", "method", "n_images", *metric_columns(seen)[2:]]
    io.write_csv(dst, pd.DataFrame(rows).reindex(columns=columns))


# --- serial-section stacks --------------------------------------------------------------------

LINK_STATS = ["links", "gap_links", "starts", "ends", "splits", "merges"]
STACK_SUMMARY_COLUMNS = [
    "stack", "mode", "n_slices", "height", "width", "voxel_z_um", "voxel_y_um", "voxel_x_um",
    "n_grains_3d", "n_grains_sized", "mean_grain_volume_vox", "median_grain_volume_vox",
    "p10_grain_volume_vox", "p90_grain_volume_vox", "mean_grain_volume_um3",
    "mean_equivalent_sphere_diameter_um", "phase_volume_fraction", "aligned", "max_shift_px",
    *LINK_STATS, "refine_boundaries", "boundary_look", "boundary_line_ratio", *consistency.COUNTS,
]


def link_stack(label_files: Sequence[PathLike], map_files: Sequence[PathLike], grey_files: Sequence[PathLike],
               outputs: Mapping[str, PathLike], stack: str, mode: Mode,
               voxel_size_um: Sequence[float] | None, align: bool, cfg: LinkConfig) -> dict[str, Any]:
    """Link a stack's per-slice 2D results into 3D objects and write the stack's outputs.

    label_files / map_files / grey_files: per slice, in z order, the 2D rules' labels.tif,
    boundaries.png or phase.png, and the 8-bit image.png. outputs: paths for keys labels3d,
    grains3d, neighbours3d, summary, shifts, ortho_xy, ortho_xz, ortho_yz:

        labels3d.h5   dataset `labels`, uint32 (z, y, x), chunked + gzip, voxel size attributes;
                      multi-phase stacks also `classes`, uint8 (z, y, x), each voxel's class
        grains3d.csv  one row per 3D object (sizes, neighbours, ellipsoid; multi-phase: `class`)
        summary.csv   one row: object count, volumes, phase volume fraction, link statistics
        shifts.json   the (dy, dx) shift applied to every slice (all zero unless `align`)
        ortho_*.png   middle sections, objects tinted over the grey

    Grain stacks are linked by `consistency.link_consistent` (after `stack3d.refine_boundaries`
    when the boundaries are lines), phase stacks by 3D connected components. Returns the summary row.
    """
    voxel = tuple(float(v) for v in voxel_size_um) if voxel_size_um else None
    grey = stackio.read_slices(grey_files, "grey")
    stats = evidence = None
    counts: dict[str, int] = {}
    if mode == "grain":
        labels2d = stackio.read_slices(label_files, "labels")
        if labels2d.shape != grey.shape:
            raise ValueError(f"labels {labels2d.shape} and grey slices {grey.shape} differ in shape")
        evidence = consistency.boundary_look(labels2d, grey)
        lines = evidence.look if cfg.refine_boundaries == "auto" else cfg.refine_boundaries
        if lines != "none":
            labels2d = np.stack([stack3d.refine_boundaries(lab, g, lines) for lab, g in zip(labels2d, grey)])
        labels3d, stats, counts = consistency.link_consistent(labels2d, grey, cfg, evidence, align)
        shifts = stats.shifts
        phase = classes = None
        del labels2d
    else:
        masks = stackio.read_slices(map_files, "mask")
        if masks.shape != grey.shape:
            raise ValueError(f"phase masks {masks.shape} and grey slices {grey.shape} differ in shape")
        phase = masks  # the fraction is taken over every slice's full field, before any shift
        shifts = stack3d.estimate_shifts(grey) if align else np.zeros((len(masks), 2), np.int64)
        labels3d, classes = stack3d.phase_objects_3d(masks, shifts if align else None)
    if align:
        grey = stack3d.apply_shifts(grey, shifts)

    stackio.write_labels_h5(outputs["labels3d"], labels3d, voxel, classes)
    table, pairs = measure3d.grain_measurements(labels3d, voxel)
    if classes is not None:
        table.insert(1, "class", quantify.object_classes(labels3d, classes)[1])
    io.write_csv(outputs["grains3d"], table)
    io.write_csv(outputs["neighbours3d"], pairs)
    numbers = stack3d.stack_summary(labels3d, voxel, phase)
    sizes = measure3d.size_statistics(table, cfg.include_face_grains)
    mean_vox = sizes["mean_grain_volume_vox"]
    numbers |= {**sizes, "mean_grain_volume_um3": mean_vox * float(np.prod(voxel)) if voxel and mean_vox else None}
    nz, ny, nx = labels3d.shape
    row = {
        "stack": stack, "mode": mode, "n_slices": nz, "height": ny, "width": nx,
        **dict(zip(("voxel_z_um", "voxel_y_um", "voxel_x_um"), voxel or (None,) * 3)),
        **numbers,
        "aligned": align,
        "max_shift_px": int(np.abs(shifts).max(initial=0)),
        **{k: (getattr(stats, k) if stats is not None else None) for k in LINK_STATS},
        "refine_boundaries": cfg.refine_boundaries if mode == "grain" else None,
        "boundary_look": evidence.look if evidence else None,
        "boundary_line_ratio": round(evidence.line_ratio, 3) if evidence else None,
        **{k: counts.get(k) for k in consistency.COUNTS},
    }
    per_class = [c for c in row if c.startswith("volume_fraction_class_")]
    io.write_csv(outputs["summary"], pd.DataFrame([row]).reindex(columns=STACK_SUMMARY_COLUMNS + per_class))
    io.write_json(outputs["shifts"], {
        "aligned": align,
        "reference_slice": 0,
        "description": "(dy, dx) pixels by which slice z was moved before linking; labels3d.h5 is in "
                       "this registered frame",
        "slices": [Path(f).parent.name for f in grey_files],
        "shifts_dy_dx": np.asarray(shifts).tolist(),
    })
    views = stack3d.orthogonal_views(labels3d, grey, voxel)
    for name in ("xy", "xz", "yz"):
        io.write_png(outputs[f"ortho_{name}"], views[name])
    log.info("%s: %d slices -> %d 3D %s", stack, nz, numbers["n_grains_3d"],
             "grains" if mode == "grain" else "phase objects")
    return row
