"""What the Snakefile needs from the config: the datasets, the stacks and their SAM shards.

Everything here runs when the DAG is built, before any job: an unknown key, a missing folder or
an image without its label is reported then, by name, instead of failing a job hours later.
Validation against the schema is `matsam.workflow.schema.validate`; the settings themselves are
the dataclasses of `matsam.config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from matsam.config import ConfigError, LinkConfig, MethodConfig, as_dict, build, merge_sections, method_config
from matsam.io import IMAGE_SUFFIXES, list_images
from matsam.segmentation.crops import n_crops
from matsam.volumes.stackio import export_if_changed

# Dataset, stack and image names: they become folder names and Snakemake wildcards.
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.+-]*"
NAME = re.compile(f"^{NAME_PATTERN}$")
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

    def section(self, name: str) -> dict[str, Any]:
        """One stage section as a plain dict (a rule's `params`: changing a value reruns just the
        rules that take the section)."""
        return as_dict(getattr(self.method, name))


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


def stage_defaults(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's `defaults:` sections with the run's one `device` in the model section."""
    return merge_sections(config.get("defaults") or {}, {"model": {"device": config.get("device", "auto")}})


def load_catalog(config: Mapping[str, Any], base: str | Path = ".") -> dict[str, Dataset]:
    """All datasets of a validated workflow config, checked against the file system."""
    base = Path(base)
    defaults = stage_defaults(config)
    method_config("grain", defaults, where="defaults")  # unknown keys fail even with no dataset
    per_job = int(config.get("sam_images_per_job", 16))
    return {
        name: replace(load_dataset(name, entry, defaults, base), images_per_job=per_job)
        for name, entry in (config.get("datasets") or {}).items()
    }


# --- serial-section stacks --------------------------------------------------------------------

@dataclass(frozen=True)
class Stack:
    """A serial-section stack: its slices form the dataset `<name>/slices` (one image per slice,
    run by the 2D rules), and `link_stack` turns their results into 3D objects."""

    name: str
    source: str  # the stack as configured (TIFF, folder or file.h5:/dataset)
    dataset: Dataset  # the exported slices, slice_0000 ... in z order
    voxel_size_um: tuple[float, float, float] | None = None
    align: bool = False
    link: LinkConfig = field(default_factory=LinkConfig)

    @property
    def mode(self) -> str:
        return self.dataset.mode

    @property
    def n_slices(self) -> int:
        return len(self.dataset.images)


def slices_dataset_name(stack: str) -> str:
    """The dataset that holds a stack's slices: results land in <results>/<stack>/slices/, next
    to (and never clashing with) the stack's own 3D outputs in <results>/<stack>/."""
    return f"{stack}/slices"


def export_stack(name: str, spec: str, out_dir: str | Path) -> list[Path]:
    """The stack's slice files, exported where its source changed (`stackio.export_if_changed`);
    a stack that cannot be read is a ConfigError naming it."""
    try:
        return export_if_changed(spec, out_dir)
    except (OSError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"stacks.{name}.path: {message}") from None


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
    link = build(LinkConfig, entry.get("link"), f"{where}.link")
    if link.refine_boundaries in ("dark", "bright") and mode != "grain":
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
    defaults = stage_defaults(config)
    stacks = {}
    for name, entry in (config.get("stacks") or {}).items():
        if name in datasets:
            raise ConfigError(f"stacks.{name}: {name!r} is also the name of a dataset; stacks and datasets "
                              "share the results folder, so their names must differ")
        stacks[name] = load_stack(name, entry, defaults, base, Path(export_root),
                                  int(config.get("sam_images_per_job", 16)))
    return stacks
