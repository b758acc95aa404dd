"""Bit-packed masks of one crop: what the SAM step writes and the merge step reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CropMasks:
    """Masks of one crop, in the crop's pixel frame.

    packed: (N, ceil(H*W/8)) uint8, np.packbits of each flattened (H, W) bool mask.
    boxes: (N, 4) int32 (x0, y0, x1, y1), inclusive-exclusive. point_index: prompt of each mask.
    """

    packed: np.ndarray
    shape: tuple[int, int]
    scores: np.ndarray
    stability: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    point_index: np.ndarray
    decoded: int = 0  # prompts the decoder ran for this crop (kept or not)

    def __len__(self) -> int:
        return len(self.scores)

    def mask(self, i: int) -> np.ndarray:
        """Unpack mask i to (H, W) bool."""
        h, w = self.shape
        return np.unpackbits(self.packed[i], count=h * w).reshape(h, w).astype(bool)

    def box_mask(self, i: int, box: np.ndarray) -> np.ndarray:
        """Mask i inside its box (x0, y0, x1, y1) as an (y1-y0, x1-x0) bool array of its own:
        only the box's rows are unpacked, and nothing keeps the crop-sized array alive."""
        x0, y0, x1, y1 = (int(v) for v in box)
        width = self.shape[1]
        start, stop = y0 * width, y1 * width
        bits = np.unpackbits(self.packed[i, start // 8 : (stop + 7) // 8])
        rows = bits[start % 8 : start % 8 + stop - start].reshape(y1 - y0, width)
        return rows[:, x0:x1].astype(bool)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"packed": self.packed, "shape": np.array(self.shape), "scores": self.scores,
                "stability": self.stability, "boxes": self.boxes, "areas": self.areas,
                "point_index": self.point_index, "decoded": np.int64(self.decoded)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "CropMasks":
        h, w = (int(v) for v in arrays["shape"])
        return cls(arrays["packed"], (h, w), arrays["scores"], arrays["stability"], arrays["boxes"],
                   arrays["areas"], arrays["point_index"], int(arrays.get("decoded", 0)))

    @classmethod
    def empty(cls, shape: tuple[int, int], decoded: int = 0) -> "CropMasks":
        nbytes = (shape[0] * shape[1] + 7) // 8
        return cls(np.zeros((0, nbytes), np.uint8), shape, np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 4), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), decoded)
