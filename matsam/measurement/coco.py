"""COCO instance export of a label image, for annotation tools (CVAT, Label Studio, ...).

One annotation per object with COCO's run-length encoding: runs over the image in column-major
(Fortran) order, starting with a run of zeros, written as COCO's compressed string (each count as
5-bit groups offset by 48, counts from the third on as differences to the count two before).
Encoder and decoder are written here from that format description, so no compiled pycocotools is
needed; `objects.coco.json` decodes back exactly to `labels.tif` (`decode_labels`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage


def rle_string(counts: Sequence[int]) -> str:
    """COCO compressed RLE string of run lengths."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


def rle_counts(text: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (inverse of `rle_string`)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_runs(rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> list[int]:
    """Run lengths (zeros first) of the pixels (rows, cols) of one object, column-major."""
    pos = np.sort(cols.astype(np.int64) * height + rows)
    breaks = np.flatnonzero(np.diff(pos) != 1)
    starts = np.concatenate([pos[:1], pos[breaks + 1]])
    ends = np.concatenate([pos[breaks], pos[-1:]]) + 1
    gaps = starts - np.concatenate([[0], ends[:-1]])
    counts = np.empty(2 * starts.size, dtype=np.int64)
    counts[0::2], counts[1::2] = gaps, ends - starts
    tail = height * width - int(ends[-1])
    return counts.tolist() + ([tail] if tail else [])


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE ``{"size": [h, w], "counts": str}`` of a (H, W) bool mask."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    counts = mask_runs(rows, cols, height, width) if rows.size else [height * width]
    return {"size": [height, width], "counts": rle_string(counts)}


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """(H, W) bool mask of a COCO RLE (compressed string or uncompressed list of counts)."""
    height, width = rle["size"]
    counts = rle["counts"] if isinstance(rle["counts"], list) else rle_counts(rle["counts"])
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, size says {height}x{width}")
    return flat.reshape(width, height).T


def categories(mode: str, class_map: np.ndarray | None) -> list[dict[str, Any]]:
    """COCO categories: one ``grain`` or ``phase`` category, or one per phase class id."""
    if mode == "grain":
        return [{"id": 1, "name": "grain", "supercategory": "microstructure"}]
    top = int(class_map.max(initial=0)) if class_map is not None else 1
    if top <= 1:
        return [{"id": 1, "name": "phase", "supercategory": "microstructure"}]
    return [{"id": k, "name": f"phase_class_{k}", "supercategory": "microstructure"} for k in range(1, top + 1)]


def coco_document(labels: np.ndarray, file_name: str, mode: str, class_map: np.ndarray | None = None,
                  pixel_size_um: float | None = None) -> dict[str, Any]:
    """A COCO instances document for one image: annotation `id` and `label_id` = the object's
    value in labels.tif; phase objects of a class map get the class most of their pixels have."""
    labels = np.asarray(labels)
    height, width = labels.shape
    multi = class_map is not None and int(class_map.max(initial=0)) > 1
    annotations = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        rows, cols = np.nonzero(labels[box] == label)
        rows, cols = rows + box[0].start, cols + box[1].start
        category = 1
        if multi and class_map is not None:
            category = max(1, int(np.bincount(class_map[rows, cols].astype(np.int64)).argmax()))
        x0, y0 = int(cols.min()), int(rows.min())
        annotations.append({
            "id": label, "label_id": label, "image_id": 1, "category_id": category, "iscrowd": 0,
            "area": int(rows.size),
            "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1],
            "segmentation": {"size": [height, width],
                             "counts": rle_string(mask_runs(rows, cols, height, width))},
        })
    image = {"id": 1, "file_name": file_name, "height": height, "width": width}
    if pixel_size_um is not None:
        image["pixel_size_um"] = pixel_size_um
    return {"info": {"description": "matsam segmentation", "version": "1.0"}, "licenses": [],
            "images": [image], "categories": categories(mode, class_map), "annotations": annotations}


def decode_labels(document: dict[str, Any]) -> np.ndarray:
    """The uint32 label image of a COCO document from `coco_document` (annotation label_id or id)."""
    image = document["images"][0]
    labels = np.zeros((image["height"], image["width"]), dtype=np.uint32)
    for ann in document["annotations"]:
        labels[decode_mask(ann["segmentation"])] = ann.get("label_id", ann["id"])
    return labels
