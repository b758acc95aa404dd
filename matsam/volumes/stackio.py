"""Serial-section stack I/O: read a stack from any of the usual layouts, export it as one 2D
image per slice for the per-slice pipeline, and write 3D labels for viewers.

Stacks are (z, y, x) or (z, y, x, c) arrays in the file's own dtype; voxel sizes are
(z, y, x) micrometres.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import tifffile

from matsam import imaging
from matsam.io import atomic_path, read_image

_SLICE_EXTS = {
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
}
SLICE_SUFFIXES = tuple(_SLICE_EXTS)
H5_SPEC = re.compile(r"^(.*?\.(?:h5|hdf5|hdf|he5))(?::(.*))?$", re.IGNORECASE)
_SLICE_NAME = re.compile(r"^slice_\d+\.tif$")


def read_stack(spec: str | os.PathLike) -> np.ndarray:
    """Read a serial-section stack as a (z, y, x) or (z, y, x, c) array.

    spec: a (multi-page) TIFF file; a folder of slice images (.tif/.tiff/.png/.jpg/.bmp, one
    kind, in natural order: slice2 before slice10; hidden files ignored); or an HDF5 dataset
    as `file.h5:/path/in/file` (the dataset may be left out when the file holds only one).
    Raises FileNotFoundError / KeyError naming a missing file, folder or dataset, and
    ValueError naming the slice (file or page) whose shape or dtype differs from the first.
    """
    spec = os.fspath(spec)
    h5 = H5_SPEC.match(spec)
    if h5:
        return _read_h5(Path(h5.group(1)), h5.group(2))
    path = Path(spec)
    if path.is_dir():
        return _read_folder(path)
    if not path.exists():
        raise FileNotFoundError(f"stack not found: {spec}")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    raise ValueError(
        f"unsupported stack {spec}: expected a TIFF file, a folder of slice images or "
        "file.h5:/dataset"
    )


def export_slices(spec: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write each slice of the stack `spec` (see `read_stack`) to out_dir/slice_0000.tif, ...

    A slice file whose bytes would not change is left untouched (same mtime), so a workflow
    manager reruns only the slices that changed; others are written atomically (temporary file
    + os.replace). slice_*.tif files beyond the stack's depth are removed. Returns the paths in
    slice order.
    """
    stack = read_stack(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for z, image in enumerate(stack):
        path = out / f"slice_{z:04d}.tif"
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, image)
        data = buffer.getvalue()
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            _atomic_write_bytes(path, data)
        paths.append(path)
    keep = set(paths)
    for stale in out.iterdir():
        if _SLICE_NAME.match(stale.name) and stale not in keep:
            stale.unlink()
    return paths


EXPORT_STAMP_VERSION = 1


def source_identity(spec: str) -> dict[str, Any]:
    """Names, sizes and modification times of the files a stack is read from (stat only)."""
    h5 = H5_SPEC.match(spec)
    path = Path(h5.group(1)) if h5 else Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SLICE_EXTS and p.is_file()
                       and not p.name.startswith("."))
    else:
        files = [path] if path.is_file() else []
    return {"spec": spec, "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def export_if_changed(spec: str, out_dir: str | os.PathLike) -> list[Path]:
    """Export the stack's slices to out_dir/slice_0000.tif ... (`export_slices`) unless the stamp
    out_dir/source.json shows that its source files are unchanged since the last export; returns
    the slice files in z order.

    The stamp keeps the DAG build cheap: Snakemake parses the workflow again in every cluster
    job, and reading a stack of hundreds of micrographs each time would dominate. A changed
    source is read again in full, but only the slices whose bytes changed are rewritten, so only
    their jobs rerun. Raises ValueError for slices that are not 2D grey or RGB(A) images of at
    least 16 x 16 px.
    """
    out = Path(out_dir)
    stamp_file = out / "source.json"
    identity = {"version": EXPORT_STAMP_VERSION, **source_identity(spec)}
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamp = None
    if isinstance(stamp, dict) and {k: stamp.get(k) for k in identity} == identity:
        paths = [out / f"slice_{z:04d}.tif" for z in range(int(stamp["n_slices"]))]
        if paths and all(p.is_file() for p in paths):
            return paths
    paths = export_slices(spec, out)
    with tifffile.TiffFile(paths[0]) as tif:
        shape = tif.pages[0].shape
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (3, 4)) or min(shape[:2]) < 16:
        raise ValueError(f"slices must be 2D grey or RGB(A) images of at least 16x16 px, "
                         f"got slice shape {shape} from {spec}")
    with atomic_path(stamp_file) as tmp:
        tmp.write_text(json.dumps({**identity, "n_slices": len(paths), "slice_shape": list(shape)}, indent=1))
    return paths


def read_slices(files: Sequence[str | os.PathLike], kind: str) -> np.ndarray:
    """Stack per-slice images of the 2D pipeline into one (z, y, x) array; a slice of another
    size is an error naming it. kind: "labels" (uint32 TIFF), "mask" (0/1 or class-id PNG ->
    uint8) or "grey" (RGB PNG -> uint8 grey)."""
    first = None
    out = None
    for z, f in enumerate(files):
        image = read_image(f)
        if kind == "grey":
            image = imaging.grey8(image.astype(np.uint8, copy=False))
        elif kind == "mask":  # 0/1 masks, and multi-phase class maps as uint8 class ids
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


def write_labels_h5(
    path: str | os.PathLike,
    labels3d: np.ndarray,
    voxel_size_um: tuple[float, float, float] | None,
    classes: np.ndarray | None = None,
) -> None:
    """Write a (z, y, x) label volume as dataset `labels` (uint32, chunked, gzip) of an HDF5
    file, atomically (temporary file + os.replace).

    The dataset carries the voxel size (z, y, x) in micrometres twice: as `voxel_size_um` and as
    `element_size_um`, the attribute ImageJ/Fiji's HDF5 reader and napari plugins look for; both
    are left out when `voxel_size_um` is None. `classes` (z, y, x), multi-phase stacks: each
    voxel's phase class (0 = matrix), as dataset `classes` (uint8) beside `labels`.
    """
    labels = np.asarray(labels3d)
    if labels.ndim != 3:
        raise ValueError(f"labels3d must be (z, y, x), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint32).max):
        raise ValueError("labels3d does not fit uint32")
    chunks = tuple(max(1, min(n, c)) for n, c in zip(labels.shape, (8, 128, 128)))

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset(
                "labels",
                data=labels.astype(np.uint32, copy=False),
                chunks=chunks,
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
            if classes is not None:
                f.create_dataset("classes", data=np.asarray(classes).astype(np.uint8), chunks=chunks,
                                 compression="gzip", compression_opts=4, shuffle=True)
            if voxel_size_um is not None:
                size = np.asarray(voxel_size_um, np.float64)
                if size.shape != (3,):
                    raise ValueError(f"voxel_size_um must be (z, y, x), got {voxel_size_um}")
                ds.attrs["voxel_size_um"] = size
                ds.attrs["element_size_um"] = size

    _atomic_write(Path(path), write)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) on a temporary file next to `path`, then move it into place; the
    temporary file is removed if writing fails."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def _read_h5(file: Path, dataset: str | None) -> np.ndarray:
    if not file.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {file}")
    with h5py.File(file, "r") as f:
        names: list[str] = []
        f.visititems(
            lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None
        )
        if not dataset:
            if len(names) != 1:
                raise ValueError(
                    f"{file} holds {len(names)} datasets {names}; name one as {file}:/path"
                )
            dataset = names[0]
        if not isinstance(f.get(dataset), h5py.Dataset):
            raise KeyError(f"no dataset {dataset} in {file}; datasets: {names}")
        data = f[dataset][()]
    return data[None] if data.ndim == 2 else data


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        if len(tif.series) == 1:
            series = tif.series[0]
            data, axes = series.asarray(), series.axes
        else:  # pages of different shapes or types end up in separate series
            first = tif.pages[0]
            for i, page in enumerate(tif.pages):
                if page.shape != first.shape or page.dtype != first.dtype:
                    raise ValueError(
                        f"{path}: page {i} has shape {page.shape} ({page.dtype}), but page 0 "
                        f"has {first.shape} ({first.dtype})"
                    )
            data = np.stack([page.asarray() for page in tif.pages])
            axes = "I" + first.axes
    if "S" in axes:  # colour samples last
        data = np.moveaxis(data, axes.index("S"), -1)
    colour = "S" in axes
    if data.ndim == 2 + colour:
        data = data[None]
    if data.ndim != 3 + colour:
        raise ValueError(
            f"{path}: expected (z, y, x[, c]) TIFF, got axes {axes} shape {data.shape}"
        )
    return data


def _read_folder(folder: Path) -> np.ndarray:
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in _SLICE_EXTS and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise FileNotFoundError(f"no slice images ({', '.join(sorted(_SLICE_EXTS))}) in {folder}")
    kinds = {_SLICE_EXTS[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        raise ValueError(f"{folder} mixes slice formats {sorted(kinds)}; keep one kind per stack")
    files.sort(key=_natural_key)
    first = _read_image(files[0])
    stack = np.empty((len(files), *first.shape), first.dtype)
    stack[0] = first
    for z, p in enumerate(files[1:], start=1):
        image = _read_image(p)
        if image.shape != first.shape or image.dtype != first.dtype:
            raise ValueError(
                f"slice {p} has shape {image.shape} ({image.dtype}), but the first slice "
                f"{files[0].name} has {first.shape} ({first.dtype})"
            )
        stack[z] = image
    return stack


def _read_image(path: Path) -> np.ndarray:
    """One slice image; colour as RGB(A), (y, x, c)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode slice image {path}")
    if image.ndim == 3:
        image = cv2.cvtColor(
            image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        )
    return image


def _natural_key(path: Path) -> list:
    """Sort key that orders embedded numbers numerically: slice2 < slice10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]
