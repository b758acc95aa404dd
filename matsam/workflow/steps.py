"""The pipeline's steps as file-to-file functions.

Each Snakemake rule calls exactly one of these (through a short script in `scripts/`), and the
`matsam segment` CLI calls them in sequence, so both run the same code. Every step reads its
inputs, calls the pure functions of the other modules, and writes its outputs atomically.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pandas as pd

from matsam import io
from matsam.config import MethodConfig
from matsam.measurement import astm, baselines, coco, metrics, quantify, reference, shape
from matsam.measurement.overlay import overlay
from matsam.segmentation import phases, prompts
from matsam.segmentation.crops import Crop, crop_boxes
from matsam.segmentation.masks import CropMasks
from matsam.segmentation.merge import candidates, cross_crop_nms, merge_grains, merge_phase

if TYPE_CHECKING:
    from matsam.segmentation.sam import Decoder, Encoder, Segmenter

log = logging.getLogger("matsam")

PathLike = str | Path
METRIC_COLUMNS = ["image", "method", "ari", "vi", "iou", "miou", "f1", "recall"]


def prepare_image(src: PathLike, dst: PathLike, cfg: MethodConfig) -> None:
    """Any supported micrograph -> 8-bit RGB PNG, the one image every later step reads."""
    raw = io.read_image(src)
    io.write_png(dst, io.to_rgb8(raw, cfg.read.scale16, cfg.read.percentiles))


def plan_crops(image: PathLike, dst: PathLike, cfg: MethodConfig) -> None:
    rgb = io.read_image(image)
    height, width = rgb.shape[:2]
    boxes = crop_boxes(height, width, cfg.crops.n_layers, cfg.crops.overlap_ratio)
    io.write_json(dst, {"height": height, "width": width, "crops": [c.as_dict() for c in boxes]})


def read_crops(path: PathLike) -> list[Crop]:
    return [Crop(**c) for c in io.read_json(path)["crops"]]


def make_prompts(image: PathLike, crops_file: PathLike, dst: PathLike, cfg: MethodConfig) -> None:
    """Pre-segment once on the whole image, then write each crop's prompts in its own frame."""
    rgb = io.read_image(image)
    pre = prompts.presegment(rgb, cfg.mode, cfg.prompts)
    arrays: dict[str, np.ndarray] = {"threshold": np.float64(pre.threshold), "foreground": np.str_(pre.foreground)}
    for crop in read_crops(crops_file):
        for key, value in prompts.crop_prompts(pre, crop, cfg.prompts).items():
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


def sam_windows(image: PathLike, crops_file: PathLike, cfg: MethodConfig) -> Iterator[tuple[Crop, np.ndarray]]:
    """Each crop of a prepared image as SAM sees it (contrast-stretched when `read.stretch`)."""
    rgb = io.read_image(image)
    if cfg.read.stretch:
        rgb = io.stretch_contrast(rgb, cfg.read.percentiles)
    for crop in read_crops(crops_file):
        yield crop, np.ascontiguousarray(rgb[crop.y0 : crop.y1, crop.x0 : crop.x1])


def embed_images(names: Sequence[str], images: Sequence[PathLike], crops_files: Sequence[PathLike],
                 embeddings_dir: PathLike, cfg: MethodConfig, encoder: "Encoder | None" = None) -> None:
    """One SAM encoder job: load the model once and write every crop's image embedding."""
    from matsam.segmentation.sam import Encoder

    encoder = encoder or Encoder.from_config(cfg.model)
    for name, image, crops_file in zip(names, images, crops_files, strict=True):
        start = time.perf_counter()
        crops = 0
        for crop, window in sam_windows(image, crops_file, cfg):
            io.write_npy(embedding_file(embeddings_dir, name, crop.index), encoder.embed(window).cpu().numpy())
            crops += 1
        log.info("%s: %d crop embedding(s) in %.1f s", name, crops, time.perf_counter() - start)


def segment_images(names: Sequence[str], crops_files: Sequence[PathLike], prompts_files: Sequence[PathLike],
                   embeddings_dir: PathLike, masks_dir: PathLike, cfg: MethodConfig,
                   decoder: "Decoder | None" = None) -> None:
    """One SAM decoder job: decode every crop's prompts from its stored embedding and write the
    crop's masks (bit-packed, with scores and boxes) to its own file (`mask_file`)."""
    from matsam.segmentation.sam import Decoder

    decoder = decoder or Decoder.from_config(cfg.model)
    for name, crops_file, prompts_file in zip(names, crops_files, prompts_files, strict=True):
        start = time.perf_counter()
        points = io.read_npz(prompts_file)
        prompted = decoded = kept = 0
        for crop in read_crops(crops_file):
            features = io.read_npy(embedding_file(embeddings_dir, name, crop.index))
            crop_points = points[f"points_{crop.index}"]
            masks = decoder.decode(features, (crop.height, crop.width), crop_points, cfg.sam,
                                   points[f"n_seed_{crop.index}"])
            io.write_npz(mask_file(masks_dir, name, crop.index), **masks.to_arrays())
            prompted, decoded, kept = prompted + len(crop_points), decoded + masks.decoded, kept + len(masks)
        log.info("%s: %d prompts, %d decoded, %d masks kept in %.1f s", name, prompted, decoded, kept,
                 time.perf_counter() - start)


def embed_and_segment(names: Sequence[str], images: Sequence[PathLike], crops_files: Sequence[PathLike],
                      prompts_files: Sequence[PathLike], embeddings_dir: PathLike, masks_dir: PathLike,
                      cfg: MethodConfig, segmenter: "Segmenter") -> None:
    """Both SAM steps in one process with one loaded model (the CLI, benchmarks)."""
    embed_images(names, images, crops_files, embeddings_dir, cfg, segmenter.encoder)
    segment_images(names, crops_files, prompts_files, embeddings_dir, masks_dir, cfg, segmenter.decoder)


def merge_masks(image: PathLike, crops_file: PathLike, prompts_file: PathLike, masks_dir: PathLike, name: str,
                labels_out: PathLike, map_out: PathLike, cfg: MethodConfig) -> None:
    """Cross-crop NMS and post-processing into labels.tif plus boundaries.png or phase.png (0/1,
    or class ids 0..n_phases-1 with `merge.n_phases` > 2: from the objects' features or the grey
    levels, `merge.phase_classes`)."""
    rgb = io.read_image(image)
    gray = prompts.to_gray8(rgb)
    height, width = gray.shape
    crops = read_crops(crops_file)
    crop_masks = [CropMasks.from_arrays(io.read_npz(mask_file(masks_dir, name, c.index))) for c in crops]
    cands = cross_crop_nms(candidates(crops, crop_masks, height, width, cfg.merge), cfg.merge.crop_nms_thresh)
    if cfg.mode == "grain":
        labels, mask = merge_grains(cands, rgb, cfg.merge)
    else:
        pre = io.read_npz(prompts_file)
        threshold, foreground = float(pre["threshold"]), str(pre["foreground"])
        side, depth = phase_side(gray, threshold, foreground, cfg)
        labels, mask = merge_phase(cands, side, cfg.merge, depth)
        if cfg.merge.n_phases > 2:
            smooth = prompts.blurred(gray, cfg.prompts.blur)
            labels, mask = phases.multiphase_classes(cands, labels, gray, smooth, cfg.merge)
    n_objects = int(np.unique(labels[labels > 0]).size)
    log.info("%d candidate masks after cross-crop NMS -> %d objects", len(cands), n_objects)
    io.write_tiff(labels_out, labels, cfg.quantify.pixel_size_um)
    io.write_png(map_out, mask)


def phase_side(gray: np.ndarray, threshold: float, foreground: str,
               cfg: MethodConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixels on the phase side of the pre-segmentation threshold, (H, W) bool, and how far each
    pixel's grey lies into the phase, (H, W) float32: 0 at the threshold, 1 at the mean grey of
    the phase side, negative on the matrix side."""
    smooth = prompts.blurred(gray, cfg.prompts.blur)
    side = smooth <= threshold if foreground == "dark" else smooth > threshold
    offset = (threshold - smooth.astype(np.float32)) if foreground == "dark" else (smooth - np.float32(threshold))
    scale = float(offset[side].mean()) if side.any() else 1.0
    return side, offset / max(scale, 1e-6)


def draw_overlay(image: PathLike, labels_file: PathLike, map_file: PathLike, dst: PathLike, mode: str) -> None:
    rgb = io.read_image(image)
    labels = io.read_image(labels_file).astype(np.int64)
    boundaries = io.read_image(map_file) if mode == "grain" else None
    classes = io.read_image(map_file) if mode == "phase" else None
    if classes is not None and classes.max(initial=0) <= 1:
        classes = None  # a 0/1 phase mask: random colours per object, as always
    io.write_png(dst, overlay(rgb, labels, boundaries, classes=classes))


def quantify_objects(raw_image: PathLike, labels_file: PathLike, map_file: PathLike, objects_out: PathLike,
                     summary_out: PathLike, cfg: MethodConfig, image_name: str,
                     coco_out: PathLike | None = None) -> None:
    """Per-object table in the image's own intensity units (with the shape columns), the image's
    summary row (with the ASTM counts in grain mode), and the COCO export of its objects."""
    intensity = io.to_gray(io.read_image(raw_image))
    labels = io.read_image(labels_file).astype(np.int64)
    pixel = cfg.quantify.pixel_size_um
    table = quantify.object_table(labels, intensity, pixel)
    table = pd.concat([table, shape.shape_table(labels, table["perimeter_px"].to_numpy())], axis=1)
    if pixel is not None:
        table["feret_max_um"], table["feret_min_um"] = table["feret_max_px"] * pixel, table["feret_min_px"] * pixel
    phase = io.read_image(map_file) if cfg.mode == "phase" else None
    if phase is not None and phase.max(initial=0) > 1:  # multi-phase: each object's class
        table.insert(1, "class", quantify.object_classes(labels, phase)[1])
    io.write_csv(objects_out, table)
    row = {"image": image_name, "mode": cfg.mode, **quantify.image_summary(labels, cfg.mode, pixel, phase)}
    if cfg.mode == "grain":
        row.update(astm.field_counts(labels, pixel), unlabelled_fraction=float(np.mean(labels == 0)))
    io.write_json(summary_out, row)
    if coco_out is not None:
        io.write_json(coco_out, coco.coco_document(labels, Path(raw_image).name, cfg.mode, phase, pixel))
    log.info("%s: %d objects measured", image_name, len(table))


def score(mode: str, predicted_map: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Metrics of one prediction against a label map (255 = unlabelled).

    Phase maps are scored multi-class (classes matched by overlap, `iou_class_<k>` columns) when
    the label or the prediction has a class id above 1; binary ones exactly as before.
    """
    truth, ignore = metrics.split_ignore(label)
    if mode == "grain":
        return metrics.grain_scores(predicted_map.astype(bool), truth.astype(bool), ignore, match_width=True)
    if max(int(truth.max(initial=0)), int(predicted_map.max(initial=0))) > 1:
        return metrics.multiclass_scores(predicted_map, truth, ignore)
    return metrics.phase_scores((predicted_map > 0).astype(np.uint8), (truth > 0).astype(np.uint8), ignore)


def metric_columns(columns: Sequence[str]) -> list[str]:
    """METRIC_COLUMNS, then the per-class IoU columns among `columns` in class order."""
    per_class = [c for c in columns if str(c).startswith(metrics.CLASS_IOU_PREFIX)
                 and str(c)[len(metrics.CLASS_IOU_PREFIX):].isdigit()]
    return METRIC_COLUMNS + sorted(set(per_class), key=lambda c: int(c[len(metrics.CLASS_IOU_PREFIX):]))


def evaluate_image(image: PathLike, map_file: PathLike, label_file: PathLike, prompts_file: PathLike,
                   dst: PathLike, cfg: MethodConfig, image_name: str, methods: Sequence[str]) -> None:
    """Score matsam and the classic baselines on one labelled image; one row per method."""
    rgb = io.read_image(image)
    label = reference.read_reference(label_file, cfg.mode, rgb.shape[:2])
    rows = [{"image": image_name, "method": "matsam", **score(cfg.mode, io.read_image(map_file), label)}]
    if cfg.mode == "grain":
        for name in methods:
            rows.append({"image": image_name, "method": name, **score("grain", baselines.GRAIN_BASELINES[name](rgb), label)})
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
    for dataset, path in zip(datasets, metric_files):
        table = pd.read_csv(path)
        columns = metric_columns(table.columns)[2:]
        seen += columns
        for method, group in table.groupby("method", sort=False):
            means = group.reindex(columns=columns).mean(numeric_only=True)
            rows.append({"dataset": dataset, "method": method, "n_images": len(group), **means.to_dict()})
    columns = ["dataset", "method", "n_images", *metric_columns(seen)[2:]]
    io.write_csv(dst, pd.DataFrame(rows).reindex(columns=columns))
