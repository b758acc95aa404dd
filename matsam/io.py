"""Reading micrographs and writing results, atomically.

Every writer goes through :func:`atomic_path`: the file appears under its final name only once it
is complete, so an interrupted job never leaves a half-written result that looks valid, and a
failure leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import tifffile

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class InputError(ValueError):
    """An input file is missing, unreadable or has an unusable shape; the message names it."""


class OutputError(OSError):
    """A result cannot be written (folder not writable, disk full); the message names the file."""


MAX_LABEL_CLASSES = 64  # more distinct ids than this: a grey image given as a label, not class ids


def current_umask() -> int:
    """The process umask, read from /proc where possible (setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode `open()` gives a new file (0666 less the umask); mkstemp's 0600 would hide results
    from the user's group on a shared project directory."""
    return 0o666 & ~current_umask()


def make_temp_file(path: Path) -> Path:
    """An empty temporary file beside `path` (same folder, hence same file system) with the mode
    a new file gets; the caller renames it over `path` or removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only on success."""
    path = Path(path)
    tmp: Path | None = None
    try:
        tmp = make_temp_file(path)
        yield tmp
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def unreadable(path: Path, exc: Exception) -> InputError:
    """The one-line error of a file whose pixels cannot be decoded."""
    return InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a micrograph as stored: (H, W) or (H, W, C) in its own dtype.

    TIFF goes through tifffile (8/16-bit, float, RGB(A)); PNG/JPEG/BMP through OpenCV with
    IMREAD_UNCHANGED so 16-bit PNGs keep their depth. Colour images come back as RGB(A).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported image type {suffix!r} (use {', '.join(IMAGE_SUFFIXES)})")
    try:
        if suffix in (".tif", ".tiff"):
            img = tifffile.imread(path)
        else:
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise InputError(f"{path}: not a readable {suffix[1:].upper()} image")
            if img.ndim == 3:
                code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
                img = cv2.cvtColor(img, code, dst=img)  # in place: no second full-size copy
    except InputError:
        raise
    except Exception as exc:  # tifffile/OpenCV raise many types for corrupt files
        raise unreadable(path, exc) from exc
    return checked_image(path, np.asarray(img))


def checked_image(path: Path, img: np.ndarray) -> np.ndarray:
    """A read image as (H, W) or (H, W, 3|4) of a numeric dtype (planar TIFFs moved), or InputError."""
    if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[2] not in (3, 4):
        img = np.moveaxis(img, 0, -1)  # planar (C, H, W) TIFF
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise InputError(
            f"{path}: expected a 2D grey or RGB(A) image, got an array of shape {img.shape} "
            "(stacks belong under `stacks:`)"
        )
    if min(img.shape[:2]) < 16:
        raise InputError(f"{path}: image too small ({img.shape[1]}x{img.shape[0]} px)")
    if img.dtype == bool or not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise InputError(f"{path}: unsupported pixel type {img.dtype}")
    return img


def to_uint8(img: np.ndarray, scale16: str = "percentile",
             percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map any integer/float image to uint8; 8-bit input is returned unchanged."""
    if img.dtype == np.uint8:
        return img
    data = img.astype(np.float64)
    if scale16 == "full" and np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        lo, hi = float(info.min), float(info.max)
    else:
        lo, hi = np.percentile(data, percentiles)
        if hi <= lo:
            lo, hi = float(data.min()), float(data.max())
    return scale_to_uint8(data, lo, hi)


def scale_to_uint8(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[lo, hi] -> 0..255, rounded and clipped (the one formula of the whole and the banded read)."""
    scaled = (data.astype(np.float64, copy=False) - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb8(img: np.ndarray, scale16: str = "percentile", percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """(H, W, 3) uint8 RGB for SAM: grey is replicated, alpha dropped, deep images rescaled."""
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    img8 = to_uint8(img, scale16, percentiles)
    if img8.ndim == 2:
        img8 = np.repeat(img8[..., None], 3, axis=2)
    return np.ascontiguousarray(img8)


BANDED_MIN_PIXELS = 4096 * 4096  # smaller images are read whole: below ~1 GB of temporaries
BAND_ROWS = 512


def read_rgb8(path: str | os.PathLike[str], scale16: str = "percentile",
              percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """`to_rgb8(read_image(path))`, but a huge TIFF of unsigned integers is converted band by
    band, with its percentiles from a histogram: memory-mapped when uncompressed, decoded strip
    by strip (or tile row by tile row) when compressed, so the whole image is never decoded into
    float64 (10,000 x 8,000 px: 0.3 GB instead of 2.75 GB)."""
    raw = memmap_tiff(Path(path))
    if raw is None:
        raw = CompressedTiffRows.open(Path(path))
    if raw is None or raw.shape[0] * raw.shape[1] < BANDED_MIN_PIXELS:
        return to_rgb8(read_image(path), scale16, percentiles)
    return banded_rgb8(raw, scale16, percentiles, getattr(raw, "band_rows", BAND_ROWS))


def banded_tiff_ok(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Pixels the banded reader takes: unsigned 8/16-bit, (H, W) or (H, W, 3|4), at least 16 px
    a side; anything else (planar, float, tiny: errors included) goes to the whole-image reader."""
    return (dtype.kind == "u" and dtype.itemsize <= 2 and len(shape) in (2, 3) and min(shape[:2]) >= 16
            and (len(shape) == 2 or shape[2] in (3, 4)))


def memmap_tiff(path: Path) -> np.ndarray | None:
    """The TIFF's pixels memory-mapped, when it is uncompressed, contiguous and of an unsigned
    integer type (what a histogram can rank); None otherwise."""
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    try:
        raw = tifffile.memmap(path, mode="r")
    except Exception:  # compressed, tiled, not a TIFF: the whole-image reader decides
        return None
    return raw if banded_tiff_ok(raw.shape, raw.dtype) else None


class CompressedTiffRows:
    """Rows of a compressed TIFF's first page, decoded on demand, strip by strip or tile row by
    tile row: `rows[r0:r1]` decodes only the segments that hold those rows. Bands of
    `band_rows` (a multiple of the segments' height) decode every segment once."""

    def __init__(self, path: Path, page: Any) -> None:
        self.path, self.shape, self.dtype, self.ndim = path, tuple(page.shape), page.dtype, len(page.shape)
        self.segment_rows = int(page.tilelength if page.is_tiled else page.rowsperstrip)
        self.band_rows = max(1, BAND_ROWS // self.segment_rows) * self.segment_rows
        per_row = -(-self.shape[1] // int(page.tilewidth)) if page.is_tiled else 1
        self._segments = [list(range(k * per_row, (k + 1) * per_row)) for k in range(len(page.dataoffsets) // per_row)]
        self._offsets, self._counts, self._decode = page.dataoffsets, page.databytecounts, page.decode

    @classmethod
    def open(cls, path: Path) -> CompressedTiffRows | None:
        """The reader, for a compressed, chunked, pixel-interleaved first page whose segments
        are at most BAND_ROWS tall (a one-strip file is read whole anyway); None otherwise."""
        if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
            return None
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                rows = page.tilelength if page.is_tiled else page.rowsperstrip
                if (page.compression == 1 or not 0 < rows <= BAND_ROWS or page.tiledepth > 1
                        or (page.samplesperpixel > 1 and page.planarconfig != 1)
                        or not banded_tiff_ok(tuple(page.shape), page.dtype)):
                    return None
                return cls(path, page)
        except Exception:  # not a TIFF, or one tifffile cannot parse: the whole-image reader decides
            return None

    def __getitem__(self, rows: slice) -> np.ndarray:
        r0, r1, _ = rows.indices(self.shape[0])
        out = np.empty((r1 - r0, *self.shape[1:]), self.dtype)
        with open(self.path, "rb") as fh:
            for k in range(r0 // self.segment_rows, -(-r1 // self.segment_rows)):
                for index in self._segments[k]:
                    fh.seek(self._offsets[index])
                    try:
                        data, (_, _, y, x, _), _ = self._decode(fh.read(self._counts[index]), index)
                    except Exception as exc:  # a corrupt or truncated segment
                        raise unreadable(self.path, exc) from exc
                    if data is None:
                        continue  # an empty segment
                    part = data[0].reshape(data.shape[1], data.shape[2], -1)
                    top, bottom = max(y, r0), min(y + part.shape[0], r1)
                    width = min(part.shape[1], self.shape[1] - x)
                    block = part[top - y : bottom - y, :width]
                    out[top - r0 : bottom - r0, x : x + width] = block if self.ndim == 3 else block[..., 0]
        return out


def banded_rgb8(raw: Any, scale16: str, percentiles: tuple[float, float], rows: int = BAND_ROWS) -> np.ndarray:
    """`to_rgb8(raw)` computed `rows` rows at a time (raw: uint8 / uint16, (H, W) or (H, W, 3|4),
    anything whose `raw[r0:r1]` gives those rows)."""
    def bands() -> Iterator[tuple[int, np.ndarray]]:
        for r0 in range(0, raw.shape[0], rows):
            band = np.asarray(raw[r0 : r0 + rows])
            yield r0, band[..., :3] if band.ndim == 3 else band

    lo = hi = 0.0
    if raw.dtype != np.uint8:
        if scale16 == "full":
            lo, hi = 0.0, float(np.iinfo(raw.dtype).max)
        else:
            lo, hi = histogram_percentiles((band for _, band in bands()), raw.dtype, percentiles)
    out = np.empty((raw.shape[0], raw.shape[1], 3), np.uint8)
    for r0, band in bands():
        band8 = band if band.dtype == np.uint8 else scale_to_uint8(band, lo, hi)
        out[r0 : r0 + band.shape[0]] = band8 if band8.ndim == 3 else band8[..., None]
    return out


def histogram_percentiles(bands: Iterator[np.ndarray], dtype: np.dtype,
                          percentiles: tuple[float, float]) -> tuple[float, float]:
    """np.percentile's (linear) values of an unsigned integer image from its histogram, read in
    bands; the [min, max] when the percentiles coincide, as `to_uint8` does."""
    counts = np.zeros(np.iinfo(dtype).max + 1, np.int64)
    for band in bands:
        counts += np.bincount(band.ravel(), minlength=counts.size)
    cum = np.cumsum(counts)
    n = int(cum[-1])

    def ranked(k: int) -> float:  # the k-th smallest value (0-based)
        return float(np.searchsorted(cum, k, side="right"))

    values = []
    for q in np.asarray(percentiles, np.float64) / 100:
        index = (n - 1) * q  # numpy's virtual index of the linear method
        below = int(np.floor(index))
        t = index - below
        a, b = ranked(max(below, 0)), ranked(min(below + 1, n - 1))
        values.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    lo, hi = values
    if hi <= lo:
        nonzero = np.flatnonzero(counts)
        lo, hi = float(nonzero[0]), float(nonzero[-1])
    return lo, hi


def png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of a PNG from its header, without decoding the pixels."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise InputError(f"{path}: not a readable PNG image")
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def stretch_contrast(rgb: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Stretch each channel's [low, high] percentiles to 0..255.

    Micrographs often span a narrow grey range (NBS-2: 72..162); SAM's encoder sees much more
    structure after stretching.
    """
    out = np.empty_like(rgb)
    for c in range(rgb.shape[2]):
        channel = rgb[..., c]
        lo, hi = np.percentile(channel, percentiles)
        if hi <= lo:
            out[..., c] = channel
            continue
        lut = np.clip((np.arange(256) - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)
        out[..., c] = lut[channel]
    return out


def to_gray(img: np.ndarray) -> np.ndarray:
    """Grey intensities in the image's own units (for measurements), (H, W) float32."""
    if img.ndim == 3:
        rgb = img[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return img.astype(np.float32)


def check_label_shape(path: str | os.PathLike[str], label: np.ndarray, shape: tuple[int, int] | None) -> None:
    """A label must cover its image pixel for pixel."""
    if shape is not None and label.shape[:2] != tuple(shape):
        raise InputError(f"{path}: label is {label.shape[1]}x{label.shape[0]} px, image is {shape[1]}x{shape[0]} px")


def read_label(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """A single-channel uint8 label map; checks it matches the image's (H, W)."""
    label = read_image(path)
    if label.ndim == 3:
        if not (np.all(label[..., 0] == label[..., 1]) and np.all(label[..., 0] == label[..., 2])):
            raise InputError(f"{path}: label must be single-channel (got colour)")
        label = label[..., 0]
    check_label_shape(path, label, shape)
    if not np.issubdtype(label.dtype, np.integer) or label.min() < 0 or label.max() > 255:
        raise InputError(f"{path}: label values must be class ids 0..254 (255 = unlabelled), "
                         f"got {label.dtype} in {label.min()}..{label.max()}")
    classes = np.unique(label)
    if np.count_nonzero(classes != 255) > MAX_LABEL_CLASSES:
        raise InputError(f"{path}: label has {len(classes)} distinct values, more than {MAX_LABEL_CLASSES} "
                         "class ids (a grey image rather than a label map?)")
    return label.astype(np.uint8, copy=False)


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Lossless PNG; RGB arrays are written as RGB (OpenCV expects BGR)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{path}: could not write PNG")


def write_tiff(path: str | os.PathLike[str], img: np.ndarray, pixel_size_um: float | None = None) -> None:
    """zlib TIFF; with a pixel size also ImageJ's calibration (description ``unit=micron``,
    X/YResolution in pixels per µm), so Fiji and napari open it at scale. ImageJ's own TIFF
    flavour has no uint32, so the description is written by hand and the data keep their type."""
    extra: dict[str, Any] = {}
    if pixel_size_um is not None:
        extra = {"description": "ImageJ=1.11a\nunit=micron\n", "metadata": None,
                 "resolution": (1.0 / pixel_size_um, 1.0 / pixel_size_um), "resolutionunit": 1}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, img, compression="zlib", **extra)


def tiff_pixel_size_um(path: str | os.PathLike[str]) -> float | None:
    """µm per pixel of a TIFF with ImageJ calibration in µm (what `write_tiff` writes), else None."""
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata or {}
        tag = tif.pages.first.tags.get("XResolution")
    if tag is None or meta.get("unit") not in ("micron", "um", "µm"):
        return None
    num, den = tag.value
    return den / num if num else None


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """JSON with NaN written as null (NaN is not JSON)."""
    if isinstance(data, dict):
        data = {k: (None if isinstance(v, float) and v != v else v) for k, v in data.items()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def read_npy(path: str | os.PathLike[str]) -> np.ndarray:
    return np.load(path)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files in a folder (or matching a glob), sorted by name."""
    pattern = str(folder)
    if any(ch in pattern for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(pattern))
    else:
        files = sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []
    return [f for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
