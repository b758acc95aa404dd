"""What the Snakefile needs from the config: the dataset catalogue and per-stage settings.

Everything here runs when the DAG is built, before any job: an unknown key, a missing folder or
an image without its label is reported then, by name, instead of failing a job hours later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .config import ConfigError, MethodConfig, as_dict, merge_sections, method_config
from .crops import n_crops
from .io import IMAGE_SUFFIXES, list_images

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
MAP_NAME = {"grain": "boundaries", "phase": "phase"}


@dataclass(frozen=True)
class Dataset:
    name: str
    mode: str
    images: dict[str, Path]  # stem -> image file
    labels: dict[str, Path] = field(default_factory=dict)  # stem -> label file ({} when unlabelled)
    method: MethodConfig = field(default_factory=MethodConfig)

    @property
    def map_name(self) -> str:
        return MAP_NAME[self.mode]

    @property
    def n_crops(self) -> int:
        return n_crops(self.method.crops.n_layers)

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
    defaults = merge_sections(config.get("defaults") or {}, {"sam": {"device": config.get("device", "auto")}})
    method_config("grain", defaults, where="defaults")  # unknown keys fail even with no dataset
    return {
        name: load_dataset(name, entry, defaults, base)
        for name, entry in (config.get("datasets") or {}).items()
    }


def method_from_params(params: Mapping[str, Any]) -> MethodConfig:
    """Rebuild a stage's MethodConfig from the dict produced by `Dataset.stage`."""
    sections = {k: v for k, v in params.items() if k != "mode"}
    return method_config(params["mode"], sections, where="params")
