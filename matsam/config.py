"""One frozen dataclass per pipeline stage.

The workflow config (``config/config.yaml``) and the CLI both build these from plain dicts, so a
threshold means the same thing wherever it is set. Unknown keys are errors, not silent no-ops:
a typo in a config should never fall back to a default unnoticed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, TypeVar

Mode = Literal["grain", "phase"]
MODES: tuple[str, ...] = ("grain", "phase")


# Per-object features the multi-phase classes can be split on (described in matsam/segmentation/phases.py).
PHASE_FEATURES: tuple[str, ...] = ("log_area", "equivalent_diameter", "elongation", "solidity", "thinness",
                                   "mean_intensity", "intensity_spread")


class ConfigError(ValueError):
    """A configuration value is unknown or invalid."""


@dataclass(frozen=True)
class ReadConfig:
    """How a micrograph becomes the 8-bit RGB image that SAM sees."""

    # 16-bit (or float) images: "percentile" maps the [low, high] percentiles to 0..255,
    # "full" maps the dtype's full range (0..65535) to 0..255.
    scale16: Literal["percentile", "full"] = "percentile"
    # The [low, high] percentiles of the "percentile" mapping and of the contrast stretch.
    percentiles: tuple[float, float] = (0.5, 99.5)
    # Stretch each channel to 0..255 before encoding: many micrographs use a narrow grey range.
    stretch: bool = True


@dataclass(frozen=True)
class CropConfig:
    """SAM-style crop layers: layer i splits the image into 2**i x 2**i overlapping crops."""

    # Crop layers besides the whole image: layer i adds 4**i crops (0 = the whole image only).
    n_layers: int = 0
    # Overlap of neighbouring crops, as a fraction of the image's short side (SAM's rule).
    overlap_ratio: float = 512 / 1500
    # Smallest object (px across) that must stay a useful size in SAM's 1024-px input: an image
    # whose longer side exceeds 64 x this (2048 px by default, where a 32-px object still spans
    # 16 px of SAM's input) is cut into tiles of that side instead of the crop layers above.
    min_object_px: int = 32
    # Overlap of neighbouring tiles, as a fraction of the tile side (objects up to this wide lie
    # whole in one tile; larger ones are stitched from the tiles' pieces).
    tile_overlap: float = 0.125

    def __post_init__(self) -> None:
        if self.min_object_px < 1 or not 0 <= self.tile_overlap <= 0.5:
            raise ConfigError(f"min_object_px must be >= 1 and tile_overlap in 0..0.5, "
                              f"got {self.min_object_px!r} and {self.tile_overlap!r}")

    @property
    def tile_px(self) -> int:
        """Side of the tiles of a huge image (px)."""
        return 64 * self.min_object_px


@dataclass(frozen=True)
class PromptConfig:
    """Pre-segmentation and point prompts."""

    # "auto": Canny for grain images, OTSU for phase images.
    method: Literal["auto", "canny", "otsu"] = "auto"
    blur: int = 3  # Gaussian kernel size before pre-segmentation (odd, 0 = none)
    canny_low: float | None = None  # Canny's low threshold; None: 0.66 x median grey of the blurred image
    canny_high: float | None = None  # Canny's high threshold; None: 1.33 x median grey
    edge_dilate: int = 3  # close Canny edges with a square of this size
    # Phase images: which side of the Otsu threshold is the phase of interest.
    foreground: Literal["auto", "dark", "bright"] = "auto"
    # Pre-segmented regions smaller than this (in px of the crop) are outliers, not prompts.
    min_region_area: int = 12
    # ... and regions thinner than this (largest inscribed radius, px) are slivers along edges.
    min_region_radius: float = 2.0
    # Grid points per side = clip(grid_factor * sqrt(n_objects), grid_min, grid_max).
    grid_factor: float = 1.0
    # Fewest grid points per side.
    grid_min: int = 8
    # Most grid points per side.
    grid_max: int = 32
    # A band of this fraction of the crop size along each edge gets `edge_density` x more points.
    edge_band: float = 0.08
    # ... `edge_density` x the grid density inside that band.
    edge_density: float = 2.0
    # Cap on prompts per crop: the adaptive grid is kept whole and the seeds (largest regions first) fill the
    # room it leaves, so a crop with very many regions gets grid points only (more accurate there than seeds).
    max_points: int = 400


@dataclass(frozen=True)
class ModelConfig:
    """Which SAM runs, and where: all the image encoder's output depends on (with `read`), so
    changing anything else reruns the decoder, never the encoder."""

    # The SAM model: MobileSAM (weights verified at set-up) or SAM ViT-B/L/H (give `checkpoint`).
    name: Literal["mobile_sam", "vit_b", "vit_l", "vit_h"] = "mobile_sam"
    checkpoint: str | None = None  # Weights file; None: the verified MobileSAM weights (`matsam weights`)
    # Set from the workflow config's top-level `device` (the CLI: --device).
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "float16" / "bfloat16": autocast the encoder and decoder (for GPUs; on a CPU float32 is
    # both exact and the fastest measured).
    precision: Literal["float32", "float16", "bfloat16"] = "float32"


@dataclass(frozen=True)
class SamConfig:
    """SAM's prompt batching and its own mask filters."""

    # Prompts decoded together: 16 keeps a batch's per-prompt tensors in a CPU's cache
    # (benchmarks/results/bench_sam.md); GPUs gain from larger batches.
    points_per_batch: int = 16
    # Skip a prompt that falls inside a mask already kept: it would mostly return the same mask,
    # and on a CPU every prompt costs as much as a small image encoder pass.
    skip_covered_points: bool = True
    # Keep a mask only when SAM's own predicted IoU is at least this.
    pred_iou_thresh: float = 0.80
    # ... and its stability score (IoU of the mask thresholded at +/- `stability_score_offset`) this.
    stability_score_thresh: float = 0.85
    # Logit offset of the stability score.
    stability_score_offset: float = 1.0
    # Box IoU above which two masks of one crop are one (the lower-scoring is dropped).
    box_nms_thresh: float = 0.7
    # Masks smaller than this (px of the crop) are noise.
    min_mask_area: int = 8
    # Masks larger than this fraction of the crop are background or several objects merged.
    max_mask_fraction: float = 0.25
    # Which of SAM's three masks per point: "best" predicted IoU (SAM, MatSAM) or the "smallest"
    # one that passes the filters.
    multimask_choice: Literal["best", "smallest"] = "best"


@dataclass(frozen=True)
class MergeConfig:
    """Cross-crop NMS and post-processing into labels."""

    # Box IoU above which two masks of different crops are one object.
    crop_nms_thresh: float = 0.7
    # Masks whose box lies within this many px of an inner crop edge are cut off: drop them.
    crop_edge_tolerance: int = 2
    # Objects (and pieces of objects) smaller than this many px are dropped.
    min_object_area: int = 16
    # Grain mode: unlabelled regions wider than this (px radius) become grains of their own
    # instead of being split among their neighbours.
    gap_grain_radius: int = 3
    # Grain mode: unlabelled areas (no prompt gave an acceptable mask there) are split into the
    # grains of the classic colour-gradient watershed ("watershed"), or each stays one grain
    # ("whole").
    gap_grains: Literal["watershed", "whole"] = "watershed"
    # Phase mode: an object belongs to the phase when at least this fraction of its pixels lies
    # on the phase side of the pre-segmentation threshold.
    phase_min_fraction: float = 0.5
    # ... or when its mean grey is on the phase side and it is clearly more phase-like than a ring
    # around it: its mean depth (0 at the threshold, 1 at the phase's mean grey) exceeds the ring's
    # by at least this much. Shading or a threshold that cuts through the phase's grey leaves a
    # large particle with fewer than half its pixels past the threshold; its contrast with the
    # matrix around it still says what it is. 0 = the pixel fraction alone.
    phase_min_contrast: float = 1.0
    # Phase mode: keep phase regions of the pre-segmentation that no SAM object touches (no
    # prompt reached them, or SAM's mask was rejected) as objects of their own.
    keep_missed_regions: bool = True
    # ... when they have at least this many px (tiny particles count; single-pixel noise does not).
    missed_min_area: int = 4
    # ... and when their mean grey lies at least this fraction of the way from the threshold to
    # the phase's mean grey (0 = any region past the threshold).
    missed_min_depth: float = 0.4
    # Phase mode: objects less than this many cells of SAM's 256 x 256 low-resolution mask
    # across (a cell is about crop side / 256 px) keep only their pixels on the phase side of
    # the threshold: at that scale the upsampled mask is a pixel or two off the particle's edge,
    # the threshold is not. 0 = keep SAM's masks as they are.
    small_object_cells: float = 8.0
    # Phase mode: intensity classes including the matrix. 2 = one phase of interest (a 0/1
    # phase.png); more splits the image by multi-level Otsu and phase.png holds class ids.
    n_phases: int = 2
    # With n_phases > 2, how the phase objects get their classes: "features" clusters them by
    # `phase_features` (matsam/segmentation/phases.py: classes of one grey level that differ in size or
    # shape), "grey" splits the image by multi-level Otsu, "auto" takes the features when they
    # split the objects cleanly into n_phases - 1 classes and the grey split otherwise.
    phase_classes: Literal["auto", "features", "grey"] = "auto"
    # ... the object features the classes are split on (names: matsam.segmentation.phases.FEATURES); each split
    # uses the one feature that separates the objects most cleanly.
    phase_features: tuple[str, ...] = ("log_area", "elongation", "solidity", "thinness", "mean_intensity")

    def __post_init__(self) -> None:
        if isinstance(self.n_phases, bool) or not isinstance(self.n_phases, int) or self.n_phases < 2:
            raise ConfigError(f"n_phases must be an integer >= 2 (the matrix and at least one phase), "
                              f"got {self.n_phases!r}")
        if self.phase_classes not in ("auto", "features", "grey"):
            raise ConfigError(f"phase_classes must be auto, features or grey, got {self.phase_classes!r}")
        unknown = [f for f in self.phase_features if f not in PHASE_FEATURES]
        if unknown or not self.phase_features:
            raise ConfigError(f"phase_features must be a non-empty list of {', '.join(PHASE_FEATURES)}; "
                              f"got {list(self.phase_features)!r}")


@dataclass(frozen=True)
class QuantifyConfig:
    """Measurements in micrometres (set per dataset by its `pixel_size_um`)."""

    # Micrometres per pixel; None: sizes in px only, and no ASTM grain size number.
    pixel_size_um: float | None = None


@dataclass(frozen=True)
class LinkConfig:
    """How a stack's 2D objects of consecutive slices become 3D objects (a stack's `link:`)."""

    # Two regions on consecutive slices may be linked when their IoU (in pixels) is at least this.
    min_overlap: float = 0.3
    # A region may also continue a grain last seen up to this many slices earlier, bridging
    # slices where the 2D segmenter missed the grain or fused it with a neighbour (0: consecutive
    # slices only).
    max_gap: int = 1
    # IoU needed for a link across skipped slices.
    gap_min_overlap: float = 0.5
    # Grain stacks: before linking, move each slice's grain boundaries (within 2 px) onto the
    # darkest ("dark") or brightest ("bright") line of the grey slice; "none" keeps the 2D
    # labels; "auto" takes the boundary look detected from the stack's images (summary.csv
    # boundary_look).
    refine_boundaries: Literal["auto", "none", "dark", "bright"] = "auto"
    # Grain stacks: make the slices agree (split regions cut by a boundary line, cut grains at
    # grey-level jumps between slices, let short fragments join a neighbour, cut grains linked tip
    # to tip at the waist between them; matsam/volumes/consistency.py).
    consistent: bool = True
    # A 3D grain on at most this many slices ...
    fragment_slices: int = 2
    # ... holding at most this fraction of the median grain volume is a fragment.
    fragment_volume: float = 0.25
    # Count grains touching the stack's faces in the size statistics (their sizes are truncated).
    include_face_grains: bool = False


@dataclass(frozen=True)
class MethodConfig:
    """Everything one micrograph's chain needs, for one mode."""

    mode: Mode = "grain"
    read: ReadConfig = field(default_factory=ReadConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    quantify: QuantifyConfig = field(default_factory=QuantifyConfig)


STAGES: dict[str, type] = {
    "read": ReadConfig,
    "crops": CropConfig,
    "prompts": PromptConfig,
    "model": ModelConfig,
    "sam": SamConfig,
    "merge": MergeConfig,
    "quantify": QuantifyConfig,
}

T = TypeVar("T")


def build(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
    """Build a stage dataclass from a dict, rejecting unknown keys by name."""
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    try:
        return cls(**values)
    except ConfigError as exc:  # a dataclass's own value check: say where the value came from
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def method_config(
    mode: str, overrides: Mapping[str, Mapping[str, Any]] | None = None, where: str = ""
) -> MethodConfig:
    """Merge per-stage overrides into the defaults for `mode`."""
    if mode not in MODES:
        raise ConfigError(f"{where + ': ' if where else ''}mode must be one of {MODES}, got {mode!r}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(STAGES))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}")
    stages = {
        name: build(cls, overrides.get(name), f"{where}.{name}" if where else name)
        for name, cls in STAGES.items()
    }
    return MethodConfig(mode=mode, **stages)  # type: ignore[arg-type]


def section_from_params(name: str, values: Mapping[str, Any] | None, where: str = "params") -> Any:
    """A stage section rebuilt inside a job from the plain dict a rule passed as `params`
    (the catalogue's validated settings): each step gets exactly the sections its rule names."""
    if name != "link" and name not in STAGES:
        raise ConfigError(f"{where}: unknown section {name!r}; sections: link, {', '.join(STAGES)}")
    cls = LinkConfig if name == "link" else STAGES[name]
    return build(cls, values, f"{where}.{name}")


def merge_sections(*layers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Later layers override earlier ones, key by key inside each stage section."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            out.setdefault(section, {}).update(values or {})
    return out


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
