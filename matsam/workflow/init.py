"""`matsam init FOLDER`: look at a folder of micrographs and write a configuration that runs.

The folder may hold the images itself, an `images/` (+ `labels/`) pair, or sub-folders of either
(one dataset each). Per dataset it reports formats, sizes, bit depth and multi-page stacks, and
guesses grain or phase mode from what it sees, saying why:

* reference labels beside the images decide it: a 0/1 map whose foreground is thin lines is a
  grain-boundary map, one with solid regions is a phase mask;
* otherwise colour contrast between neighbouring regions (tint etching, orientation maps) means
  grains, and so does a grey image whose darker (or brighter) Otsu side is a thin connected
  network of lines; solid particles or regions on either side mean phases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import yaml
from scipy import ndimage

from matsam import io
from matsam.workflow.catalogue import NAME, find_label

COLOUR_MIN = 12.0  # mean channel spread (grey levels) of a colour micrograph
THIN_LINE_PX = 2.5  # median half-width of a boundary network, px


@dataclass
class ImageInfo:
    path: Path
    shape: tuple[int, ...]
    dtype: str
    pages: int = 1


@dataclass
class DatasetGuess:
    name: str
    images: Path
    mode: str
    reason: str
    infos: list[ImageInfo]
    labels: Path | None = None
    notes: list[str] = field(default_factory=list)
    pixel_size_um: float | None = None


def image_info(path: Path) -> ImageInfo:
    """Shape, dtype and page count without decoding more than the first page."""
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            pages = len(tif.pages) if len(series.shape) > 2 and series.shape[-1] not in (3, 4) else 1
            page = tif.pages[0]
            return ImageInfo(path, tuple(page.shape), str(page.dtype), pages)
    img = io.read_image(path)
    return ImageInfo(path, img.shape, str(img.dtype))


def line_width(mask: np.ndarray) -> float:
    """Median distance (px) from a pixel of `mask` to the nearest pixel outside it."""
    if not mask.any():
        return 0.0
    return float(np.median(ndimage.distance_transform_edt(mask)[mask]))


def is_network(mask: np.ndarray) -> bool:
    """Thin lines whose connected pieces mostly span a quarter of the image or more (a grain
    boundary network, possibly cut into blocks by unlabelled areas), not separate particles."""
    if not mask.any() or line_width(mask) > THIN_LINE_PX:
        return False
    components, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(components.ravel())[1:]
    span = 0.25 * min(mask.shape)
    long = [k for k, box in enumerate(ndimage.find_objects(components))
            if max(box[0].stop - box[0].start, box[1].stop - box[1].start) >= span]
    return sizes[long].sum() >= 0.5 * sizes.sum()


def guess_from_label(label: np.ndarray) -> tuple[str, str]:
    values = np.unique(label[label != 255])
    if values.size > 2:
        return "phase", f"the labels have {values.size} classes (a multi-phase map)"
    fg = label == values.max() if values.size else np.zeros(label.shape, bool)
    if is_network(fg):
        return "grain", f"the labels are thin lines (median half-width {line_width(fg):.1f} px): grain boundaries"
    return "phase", f"the labels are solid regions ({100 * fg.mean():.0f} % of the pixels): a phase mask"


def guess_from_image(img: np.ndarray) -> tuple[str, str]:
    import cv2

    rgb = io.to_rgb8(img)
    spread = float(np.mean(rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)))
    if spread >= COLOUR_MIN:
        return "grain", f"colour contrast (mean channel spread {spread:.0f} grey levels), as in tint-etched grains"
    gray = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    threshold, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for side, name in ((gray <= threshold, "dark"), (gray > threshold, "bright")):
        if side.mean() < 0.5 and is_network(side):
            return "grain", f"the {name} Otsu side is a thin connected network (grain boundaries)"
    dark = gray <= threshold
    minority = dark if dark.mean() < 0.5 else ~dark
    return "phase", (f"grey image whose Otsu classes are solid regions (minority side {100 * minority.mean():.0f} %"
                     f", median half-width {line_width(minority):.1f} px)")


def labels_folder(images: Path) -> Path | None:
    for candidate in (images.parent / "labels", images / "labels") if images.name == "images" else (images / "labels",):
        if candidate.is_dir():
            return candidate
    return None


def guess_dataset(name: str, images: Path) -> DatasetGuess:
    files = io.list_images(images)
    infos = [image_info(f) for f in files]
    notes = []
    stacks = [i for i in infos if i.pages > 1]
    if stacks:
        notes.append(f"{len(stacks)} multi-page file(s) ({', '.join(i.path.name for i in stacks[:3])}): "
                     "serial sections belong under `stacks:` (see README), not `datasets:`")
    labels = labels_folder(images)
    if labels is not None:
        missing = [f.name for f in files if find_label(labels, f.stem) is None]
        if missing:
            notes.append(f"labels folder {labels} lacks {len(missing)} label(s) (e.g. {missing[0]}): not used")
            labels = None
    flat = [f for f, i in zip(files, infos) if i.pages == 1]
    if not flat:
        raise io.InputError(f"{images}: only multi-page stacks, no 2D micrographs")
    first_label = find_label(labels, flat[0].stem) if labels is not None else None
    if first_label is not None:
        mode, reason = guess_from_label(io.read_label(first_label))
    else:
        votes = [guess_from_image(io.read_image(f)) for f in flat[:3]]
        mode = max(("grain", "phase"), key=lambda m: sum(v[0] == m for v in votes))
        reason = next(r for m, r in votes if m == mode)
    for extra in sorted(p for p in images.parent.glob("labels_*") if p.is_dir()) if images.name == "images" else []:
        notes.append(f"{extra.name}/ found too: use it as `labels` with `overrides: {{merge: {{n_phases: K}}}}`")
    pixel = None
    if flat[0].suffix.lower() in (".tif", ".tiff"):
        pixel = io.tiff_pixel_size_um(flat[0])
    return DatasetGuess(name, images, mode, reason, infos, labels, notes, pixel)


def scan(folder: str | Path) -> list[DatasetGuess]:
    """One guess per dataset found in `folder` (itself, or its sub-folders two levels deep)."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise io.InputError(f"{folder}: no such folder")

    def visit(path: Path, depth: int) -> list[DatasetGuess]:
        if (path / "images").is_dir() and io.list_images(path / "images"):
            return [guess_dataset(path.name, path / "images")]
        if io.list_images(path):
            return [guess_dataset(path.parent.name if path.name == "images" else path.name, path)]
        if depth == 0:
            return []
        return [g for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name != "labels")
                for g in visit(sub, depth - 1)]

    found = visit(root, 2)
    if not found:
        raise io.InputError(f"{folder}: no micrographs ({', '.join(io.IMAGE_SUFFIXES)}) here or in its sub-folders")
    seen: dict[str, int] = {}
    for guess in found:  # unique, valid dataset names
        base = "".join(c if c.isalnum() or c in "_.+-" else "_" for c in guess.name).lstrip("_.+-") or "dataset"
        seen[base] = seen.get(base, 0) + 1
        guess.name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        assert NAME.match(guess.name)
    return found


def describe(guess: DatasetGuess) -> list[str]:
    """Comment lines about a dataset: what is there and why the mode."""
    sizes = sorted({f"{i.shape[1]}x{i.shape[0]}" for i in guess.infos})
    kinds = sorted({f"{i.path.suffix.lower()[1:]} {i.dtype}{' RGB' if len(i.shape) == 3 else ''}" for i in guess.infos})
    lines = [f"{len(guess.infos)} image(s): {', '.join(kinds)}; sizes {', '.join(sizes[:4])}"
             + (" ..." if len(sizes) > 4 else ""),
             f"mode {guess.mode}: {guess.reason}"]
    lines.append(f"labels: {guess.labels}" if guess.labels else "no reference labels: no metrics")
    return lines + guess.notes


def config_text(guesses: list[DatasetGuess]) -> str:
    """A commented workflow configuration for the guessed datasets."""

    def value(v: object) -> str:
        return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()

    out = ["# matsam configuration written by `matsam init`; check the guesses below, then run",
           "#   snakemake --cores 4 --configfile THIS_FILE",
           "# Every key: README 'Configuration'; stage settings and defaults: matsam/config.py.",
           "", "results: results", "device: auto  # auto | cpu | cuda", "sam_threads: 2", "",
           "datasets:"]
    for g in guesses:
        out.append(f"  {g.name}:")
        out += [f"    # {line}" for line in describe(g)]
        out.append(f"    images: {value(str(g.images))}")
        if g.labels:
            out.append(f"    labels: {value(str(g.labels))}")
        out.append(f"    mode: {g.mode}  # grain | phase")
        if g.pixel_size_um is not None:
            out.append(f"    pixel_size_um: {g.pixel_size_um:.6g}  # from the TIFF's calibration")
        else:
            use = "µm columns and ASTM grain size G" if g.mode == "grain" else "µm columns"
            out.append(f"    # pixel_size_um: 0.1  # µm per pixel: {use}")
    return "\n".join(out) + "\n"


def run(folder: str | Path, output: str | Path | None) -> str:
    """Scan `folder`, write the configuration to `output` (atomically) or return it for stdout."""
    text = config_text(scan(folder))
    if output is not None:
        with io.atomic_path(output) as tmp:
            tmp.write_text(text)
    return text
