"""A corpus of awkward and broken inputs, generated on the fly (no binary fixtures in git).

`valid_images` are formats a microscope really writes; matsam must segment each of them.
`broken_images` must each be refused with one line naming the file and the problem.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import tifffile
from synthetic import few_discs


def _discs(size: int = 96) -> np.ndarray:
    """A grey uint8 micrograph with a few discs (something for SAM to find)."""
    image, _ = few_discs(seed=3, size=size)
    return image if image.ndim == 2 else image[..., 0]


def valid_images(folder: Path) -> dict[str, Path]:
    """name -> file of each valid but unusual format."""
    folder.mkdir(parents=True, exist_ok=True)
    grey = _discs()
    files: dict[str, Path] = {}

    def tif(name: str, data: np.ndarray, **kw) -> None:
        files[name] = folder / f"{name}.tif"
        tifffile.imwrite(files[name], data, **kw)

    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    files["rgba_png"] = folder / "rgba_png.png"
    cv2.imwrite(str(files["rgba_png"]), rgba)
    tif("grey16", grey.astype(np.uint16) * 257)
    tif("grey12_in_16", grey.astype(np.uint16) * 16)  # a 12-bit camera: values 0..4095
    tif("float32", grey.astype(np.float32) / 255.0)
    tif("channel_first", np.stack([grey] * 3), photometric="rgb", planarconfig="separate")
    files["constant"] = folder / "constant.png"  # no edges, no threshold between phases
    cv2.imwrite(str(files["constant"]), np.full((96, 96), 128, np.uint8))
    return files


def broken_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the one-line error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _discs(128))
    whole = buffer.getvalue()
    cases = {
        "zero_bytes": ("zero_bytes.tif", b"", "cannot read image"),
        "truncated_tiff": ("truncated_tiff.tif", whole[: len(whole) // 2], "cannot read image"),
        "text_as_tif": ("text_as_tif.tif", b"sample 17, polished, etched 10 s\n", "cannot read image"),
        "html_as_png": ("html_as_png.png", b"<!DOCTYPE html><html><body>Login</body></html>", "not a readable PNG"),
    }
    out = {}
    for name, (file, data, phrase) in cases.items():
        (folder / file).write_bytes(data)
        out[name] = (folder / file, phrase)
    for side in (1, 8):
        path = folder / f"tiny_{side}x{side}.png"
        cv2.imwrite(str(path), np.full((side, side), 100, np.uint8))
        out[f"tiny_{side}"] = (path, "image too small")
    out["missing"] = (folder / "not_there.tif", "no such file")
    return out
