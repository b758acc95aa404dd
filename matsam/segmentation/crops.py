"""Crop boxes: the full image plus SAM-style layers of overlapping crops.

Layer 0 is the whole image; layer i (1..n_layers) tiles it with 2**i x 2**i crops that overlap by
`overlap_ratio` of the short side (the rule of SAM's automatic mask generator). The number of
crops depends only on `n_layers`, never on the image size.

A huge image (longer side above the tile side, `CropConfig.tile_px`) is cut into overlapping
tiles instead (`tile_boxes`), so that its objects keep a useful size in SAM's 1024-px input; its
number of crops depends on its size (embeddings and masks are per-image folders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Crop:
    """A crop box in image pixels, half-open: columns x0..x1-1, rows y0..y1-1."""

    index: int
    layer: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_dict(self) -> dict[str, int]:
        return {"index": self.index, "layer": self.layer, "x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1}


def n_crops(n_layers: int) -> int:
    """Crops produced by `crop_boxes` for `n_layers` layers (1 + 4 + 16 + ...)."""
    return sum(4**i for i in range(n_layers + 1))


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[Crop]:
    """All crops of an image, layer by layer, row-major within a layer."""
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}")
    crops = [Crop(0, 0, 0, 0, width, height)]
    short_side = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        for row in range(per_side):
            y0 = int((crop_h - overlap) * row)
            for col in range(per_side):
                x0 = int((crop_w - overlap) * col)
                crops.append(
                    Crop(len(crops), layer, x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height))
                )
    return crops


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of tiles of side `tile` covering 0..length with at least `overlap`."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_boxes(height: int, width: int, tile: int, overlap_fraction: float) -> list[Crop]:
    """Overlapping tiles of a huge image, row-major. Every tile is layer 1: a mask reaching a
    tile edge inside the image is cut, and the merge takes the object from a neighbour that holds
    it whole, or stitches its pieces (merge.stitch_pieces)."""
    overlap = int(tile * overlap_fraction)
    crops: list[Crop] = []
    for y0 in tile_starts(height, tile, overlap):
        for x0 in tile_starts(width, tile, overlap):
            crops.append(Crop(len(crops), 1, x0, y0, min(x0 + tile, width), min(y0 + tile, height)))
    return crops
