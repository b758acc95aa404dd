"""What the Snakefile needs from the config: the dataset catalogue and per-stage settings.

Everything here runs when the DAG is built, before any job: an unknown key, a missing folder or
an image without its label is reported then, by name, instead of failing a job hours later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from matsam.config import ConfigError, MethodConfig, as_dict, merge_sections, method_config
from matsam.io import IMAGE_SUFFIXES, list_images
from matsam.segmentation.crops import n_crops

SCHEMA = Path(__file__).parents[1] / "schemas" / "config.schema.yaml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
MAP_NAME = {"grain": "boundaries", "phase": "phase"}


@dataclass(frozen=True)
class Dataset:
    name: str
    mode: str
    images: dict[str, Path]  # stem -> image file
    labels: dict[str, Path] = field(default_factory=dict)  # stem -> label file ({} when unlabelled)
    method: MethodConfig = field(default_factory=MethodConfig)
    images_per_job: int = 16  # images one SAM job takes (one model load)

    @property
    def map_name(self) -> str:
        return MAP_NAME[self.mode]

    @property
    def n_crops(self) -> int:
        return n_crops(self.method.crops.n_layers)

    @cached_property
    def shards(self) -> dict[str, list[str]]:
        """SAM jobs: consecutive images (sorted by name), `images_per_job` per job. A shard of one
        image is named after it, so a changed image reruns exactly its own SAM job."""
        names = sorted(self.images)
        if self.images_per_job <= 1:
            return {name: [name] for name in names}
        size = self.images_per_job
        return {f"shard{k // size:05d}": names[k : k + size] for k in range(0, len(names), size)}

    @cached_property
    def _shard_of(self) -> dict[str, str]:
        return {image: shard for shard, images in self.shards.items() for image in images}

    def shard_of(self, image: str) -> str:
        return self._shard_of[image]

    def stage(self, *sections: str) -> dict[str, Any]:
        """The settings of some stages as a plain dict (Snakemake `params`: changing one of them
        reruns just the rules that use it)."""
        full = as_dict(self.method)
        return {"mode": self.mode, **{s: full[s] for s in sections}}


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError with one line (where, what) for the first schema violation."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(dict(config)))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        raise ConfigError(f"{where}: {error.message}")


def find_label(folder: Path, stem: str) -> Path | None:
    for suffix in (".png", *IMAGE_SUFFIXES):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_dataset(name: str, entry: Mapping[str, Any], defaults: Mapping[str, Any], base: Path) -> Dataset:
    where = f"datasets.{name}"
    if not NAME.match(name):
        raise ConfigError(f"{where}: a dataset name may hold only letters, digits and _.+- (got {name!r})")
    mode = entry["mode"]
    images_spec = str(entry["images"])
    images_path = base / images_spec
    if not any(ch in images_spec for ch in "*?[") and not images_path.is_dir():
        raise ConfigError(f"{where}.images: folder {images_path} does not exist")
    files = list_images(images_path)
    if not files:
        raise ConfigError(f"{where}.images: no images ({', '.join(IMAGE_SUFFIXES)}) in {images_path}")
    images: dict[str, Path] = {}
    for f in files:
        if f.stem in images:
            raise ConfigError(f"{where}: two images share the name {f.stem!r}: {images[f.stem]} and {f}")
        if not NAME.match(f.stem):
            raise ConfigError(f"{where}: image name {f.name!r} has characters other than letters, digits and _.+-")
        images[f.stem] = f
    labels: dict[str, Path] = {}
    if entry.get("labels"):
        folder = base / str(entry["labels"])
        if not folder.is_dir():
            raise ConfigError(f"{where}.labels: folder {folder} does not exist")
        for stem, image in images.items():
            label = find_label(folder, stem)
            if label is None:
                raise ConfigError(f"{where}.labels: no label for image {image} (expected {folder}/{stem}.png)")
            labels[stem] = label
    overrides = merge_sections(defaults, entry.get("overrides"))
    if entry.get("pixel_size_um") is not None:
        overrides = merge_sections(overrides, {"quantify": {"pixel_size_um": float(entry["pixel_size_um"])}})
    method = method_config(mode, overrides, where=where)
    return Dataset(name, mode, images, labels, method)


def load_catalog(config: Mapping[str, Any], base: str | Path = ".") -> dict[str, Dataset]:
    """All datasets of a validated workflow config, checked against the file system."""
    base = Path(base)
    defaults = merge_sections(config.get("defaults") or {}, {"model": {"device": config.get("device", "auto")}})
    method_config("grain", defaults, where="defaults")  # unknown keys fail even with no dataset
    per_job = int(config.get("sam_images_per_job", 16))
    return {
        name: replace(load_dataset(name, entry, defaults, base), images_per_job=per_job)
        for name, entry in (config.get("datasets") or {}).items()
    }


def method_from_params(params: Mapping[str, Any]) -> MethodConfig:
    """Rebuild a stage's MethodConfig from the dict produced by `Dataset.stage`."""
    sections = {k: v for k, v in params.items() if k != "mode"}
    return method_config(params["mode"], sections, where="params")


# --- serial-section stacks --------------------------------------------------------------------

STACK_STAMP_VERSION = 1
LINK_DEFAULTS = {"min_overlap": 0.3, "max_gap": 1, "gap_min_overlap": 0.5, "refine_boundaries": "auto",
                 "consistent": True, "fragment_slices": 2, "fragment_volume": 0.25, "include_face_grains": False}
_H5_FILE = re.compile(r"^(.*?\.(?:h5|hdf5|hdf|he5))(?::(.*))?$", re.IGNORECASE)
_SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Stack:
    """A serial-section stack: its slices form the dataset `<name>/slices` (one image per slice,
    run by the 2D rules), and `link_stack` turns their results into 3D objects."""

    name: str
    source: str  # the stack as configured (TIFF, folder or file.h5:/dataset)
    dataset: Dataset  # the exported slices, slice_0000 ... in z order
    voxel_size_um: tuple[float, float, float] | None = None
    align: bool = False
    link: dict[str, Any] = field(default_factory=lambda: dict(LINK_DEFAULTS))

    @property
    def mode(self) -> str:
        return self.dataset.mode

    @property
    def n_slices(self) -> int:
        return len(self.dataset.images)

    def params(self) -> dict[str, Any]:
        """What link_stack needs besides its input files (Snakemake `params`: editing one of
        them reruns only link_stack)."""
        return {
            "stack": self.name,
            "mode": self.mode,
            "voxel_size_um": list(self.voxel_size_um) if self.voxel_size_um else None,
            "align": self.align,
            **self.link,
        }


def slices_dataset_name(stack: str) -> str:
    """The dataset that holds a stack's slices: results land in <results>/<stack>/slices/, next
    to (and never clashing with) the stack's own 3D outputs in <results>/<stack>/."""
    return f"{stack}/slices"


def _source_identity(spec: str) -> dict[str, Any]:
    """Sizes and modification times of the files a stack is read from (cheap: stat only)."""
    h5 = _H5_FILE.match(spec)
    path = Path(h5.group(1)) if h5 else Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SLICE_SUFFIXES and p.is_file()
                       and not p.name.startswith("."))
    else:
        files = [path] if path.is_file() else []
    return {"spec": spec, "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def export_stack(name: str, spec: str, out_dir: str | Path) -> list[Path]:
    """Export the stack's slices to out_dir/slice_0000.tif ... (see `stackio.export_slices`)
    unless the stamp out_dir/source.json shows that the source files are unchanged since the
    last export; returns the slice files in z order.

    The stamp keeps the DAG build cheap: Snakemake parses the workflow again in every cluster
    job, and reading a stack of hundreds of micrographs each time would dominate. A changed
    source is read again in full, but only the slices whose bytes changed are rewritten, so only
    their jobs rerun.
    """
    import json

    import tifffile

    from matsam.io import atomic_path
    from matsam.volumes import stackio

    where = f"stacks.{name}.path"
    out = Path(out_dir)
    stamp_file = out / "source.json"
    identity = {"version": STACK_STAMP_VERSION, **_source_identity(spec)}
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamp = None
    if isinstance(stamp, dict) and {k: stamp.get(k) for k in identity} == identity:
        paths = [out / f"slice_{z:04d}.tif" for z in range(int(stamp["n_slices"]))]
        if paths and all(p.is_file() for p in paths):
            return paths
    try:
        paths = stackio.export_slices(spec, out)
    except (OSError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"{where}: {message}") from None
    with tifffile.TiffFile(paths[0]) as tif:
        shape = tif.pages[0].shape
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (3, 4)) or min(shape[:2]) < 16:
        raise ConfigError(f"{where}: slices must be 2D grey or RGB(A) images of at least 16x16 px, "
                          f"got slice shape {shape} from {spec}")
    with atomic_path(stamp_file) as tmp:
        tmp.write_text(json.dumps({**identity, "n_slices": len(paths), "slice_shape": list(shape)}, indent=1))
    return paths


def load_stack(name: str, entry: Mapping[str, Any], defaults: Mapping[str, Any], base: Path,
               export_root: Path, images_per_job: int = 1) -> Stack:
    where = f"stacks.{name}"
    if not NAME.match(name):
        raise ConfigError(f"{where}: a stack name may hold only letters, digits and _.+- (got {name!r})")
    mode = entry["mode"]
    voxel = entry.get("voxel_size_um")
    voxel = tuple(float(v) for v in voxel) if voxel is not None else None
    overrides = merge_sections(defaults, entry.get("overrides"))
    if voxel is not None and voxel[1] == voxel[2]:  # square pixels: the slices' 2D µm columns too
        overrides = merge_sections(overrides, {"quantify": {"pixel_size_um": voxel[1]}})
    method = method_config(mode, overrides, where=where)
    link = {**LINK_DEFAULTS, **(entry.get("link") or {})}
    if link["refine_boundaries"] in ("dark", "bright") and mode != "grain":
        raise ConfigError(f"{where}.link.refine_boundaries: only for grain stacks (this one is {mode})")
    spec = str(entry["path"])
    source = spec if Path(spec).is_absolute() else str(base / spec)
    paths = export_stack(name, source, export_root / name)
    images = {p.stem: p for p in paths}
    dataset = Dataset(slices_dataset_name(name), mode, images, {}, method, images_per_job)
    return Stack(name, spec, dataset, voxel, bool(entry.get("align", False)), link)


def load_stacks(config: Mapping[str, Any], datasets: Mapping[str, Dataset], export_root: str | Path,
                base: str | Path = ".") -> dict[str, Stack]:
    """All stacks of a validated workflow config; each one's slices are exported (where changed)
    to export_root/<stack>/slice_<z>.tif. Add `stack.dataset` of each to the dataset catalogue
    to run the 2D rules on the slices."""
    base = Path(base)
    defaults = merge_sections(config.get("defaults") or {}, {"model": {"device": config.get("device", "auto")}})
    stacks = {}
    for name, entry in (config.get("stacks") or {}).items():
        if name in datasets:
            raise ConfigError(f"stacks.{name}: {name!r} is also the name of a dataset; stacks and datasets "
                              "share the results folder, so their names must differ")
        stacks[name] = load_stack(name, entry, defaults, base, Path(export_root),
                                  int(config.get("sam_images_per_job", 16)))
    return stacks
