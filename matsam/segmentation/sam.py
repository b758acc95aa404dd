"""SAM inference on one crop: the only module that touches torch.

Where SAM's automatic mask generator spends its time is the decoder side: it upsamples all three
low-resolution masks of every point to full size before filtering. Here the best of the three
masks is picked by predicted IoU, the IoU and stability filters run on the 256x256 logits, and
only the survivors are upsampled. Masks leave this module bit-packed.

The two halves run in separate jobs: the `Encoder` (the image encoder, one pass per crop) writes
embeddings that the `Decoder` (prompt encoder + matsam's mask decoder) reads, so a change of
prompt, filter or merge settings reruns only the cheap half.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from matsam.config import ConfigError, ModelConfig, SamConfig
from matsam.segmentation.decoder import FastMaskDecoder
from matsam.segmentation.masks import CropMasks
from matsam.segmentation.nms import nms
from matsam.segmentation.weights import WeightsError, default_checkpoint, is_verified, verify

LOW_RES = 256  # SAM's mask decoder output size
IMAGE_SIZE = 1024  # SAM's input side, for every model family
MODEL_FAMILIES = {"mobile_sam": ("mobile_sam", "vit_t"), "vit_b": ("segment_anything", "vit_b"),
                  "vit_l": ("segment_anything", "vit_l"), "vit_h": ("segment_anything", "vit_h")}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device is 'cuda' but torch sees no CUDA device on this machine "
                          "(use device: auto to fall back to the CPU)")
    return torch.device(name)


def build_model(model: str, checkpoint: str | Path | None) -> torch.nn.Module:
    """Build the architecture and load its weights (no weights: random init, for tests).

    MobileSAM's builder switches to eval() before weights are loaded, and TinyViT caches its
    attention biases at that moment; eval() must run again after loading or the encoder keeps
    the random biases.
    """
    if model not in MODEL_FAMILIES:
        raise ValueError(f"unknown SAM model {model!r}; choose one of {', '.join(MODEL_FAMILIES)}")
    package, key = MODEL_FAMILIES[model]
    with warnings.catch_warnings():  # timm deprecation notices from mobile_sam's imports
        warnings.simplefilter("ignore")
        if package == "mobile_sam":
            from mobile_sam import sam_model_registry
        else:
            from segment_anything import sam_model_registry
    net = sam_model_registry[key](checkpoint=None)
    if checkpoint is not None:
        load_weights(net, checkpoint, load_checkpoint(checkpoint))
    return net.eval()


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict; a file torch cannot read is a one-line WeightsError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle, zip and torch errors for truncated or foreign files
        raise WeightsError(f"{path}: not a loadable SAM checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a SAM checkpoint (holds a {type(state).__name__}, not a state dict)")
    return state


def load_weights(net: torch.nn.Module, path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Load `state` into `net`; weights of another architecture are a one-line WeightsError."""
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: checkpoint does not fit the configured model.name "
                           f"({str(exc).splitlines()[0]})") from exc


def build_decoder_model(checkpoint: str | Path | None) -> torch.nn.Module:
    """SAM's prompt encoder and mask decoder alone, with the checkpoint's weights.

    Every model family (MobileSAM included) shares this architecture, so the decoder job builds it
    from `segment_anything`'s classes: no image encoder weights to hold, and no timm import
    (seconds of start-up per job).
    """
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    side = IMAGE_SIZE // 16
    net = torch.nn.Module()
    net.prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(side, side),
                                       input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16)
    net.mask_decoder = MaskDecoder(
        num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, mmap=True)
        load_weights(net, checkpoint,
                     {k: v for k, v in state.items() if k.startswith(("prompt_encoder.", "mask_decoder."))})
    return net.eval()


def checkpoint_for(cfg: ModelConfig) -> Path:
    """The checkpoint to load: the configured path, or the verified default MobileSAM weights."""
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: SAM checkpoint not found (model.checkpoint)")
        return path
    if cfg.name != "mobile_sam":
        raise ConfigError(f"model.name {cfg.name!r} needs model.checkpoint: a path to its weights")
    path = default_checkpoint()
    if not is_verified(path):
        verify(path)
    return path


def input_size(h: int, w: int) -> tuple[int, int]:
    """A crop's size once resized to SAM's longest side."""
    scale = IMAGE_SIZE / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class _Precision:
    """float32, or autocast to half precision on the model's device."""

    def __init__(self, device: torch.device, precision: str):
        self.device, self.dtype = device, getattr(torch, precision)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.dtype == torch.float32:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield


class Encoder:
    """SAM's image encoder: one (1, 256, 64, 64) embedding per crop, the expensive half."""

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str = "float32"):
        self.net = net.to(device)
        self.device = device
        self.precision = _Precision(device, precision)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "Encoder":
        return cls(build_model(cfg.name, checkpoint_for(cfg)), resolve_device(cfg.device), cfg.precision)

    @torch.inference_mode()
    def embed(self, rgb: np.ndarray) -> torch.Tensor:
        """Image embedding of an (H, W, 3) uint8 RGB crop, resized to SAM's 1024 longest side."""
        th, tw = input_size(*rgb.shape[:2])
        image = torch.as_tensor(rgb, device=self.device).permute(2, 0, 1)[None].float()
        image = F.interpolate(image, (th, tw), mode="bilinear", align_corners=False, antialias=True)
        with self.precision():
            return self.net.image_encoder(self.net.preprocess(image)).float()


class Decoder:
    """Point prompts -> a crop's masks, from the crop's image embedding (see `decode`)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str = "float32"):
        self.net = net.to(device)
        self.device = device
        self.precision = _Precision(device, precision)
        self.fast = FastMaskDecoder(self.net)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "Decoder":
        return cls(build_decoder_model(checkpoint_for(cfg)), resolve_device(cfg.device), cfg.precision)

    @torch.inference_mode()
    def decode(self, features: torch.Tensor | np.ndarray, shape: tuple[int, int], points: np.ndarray, cfg: SamConfig,
               n_seed: int | None = None) -> CropMasks:
        """Masks of a crop from its image embedding (1, C, 64, 64) and its point prompts.

        Prompts are decoded in two rounds, a batch at a time: first the `n_seed` seeds (one per
        pre-segmented object, largest first), then the grid points, in an order that spreads each
        batch over the whole crop (neighbouring grid points, which often fall in one object, go to
        different batches). A prompt inside a mask accepted by an earlier batch is skipped
        (`skip_covered_points`). n_seed: None = every point is a seed.
        """
        h, w = shape
        if len(points) == 0:
            return CropMasks.empty((h, w))
        th, tw = input_size(h, w)
        valid = (-(-th * LOW_RES // IMAGE_SIZE), -(-tw * LOW_RES // IMAGE_SIZE))
        scale = torch.tensor([tw / w, th / h], device=self.device)
        with self.precision():
            state = self.fast.prepare(torch.as_tensor(features, device=self.device))
        kept: list[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        covered = np.zeros((h, w), dtype=bool)
        cols = np.clip(points[:, 0].astype(int), 0, w - 1)
        rows = np.clip(points[:, 1].astype(int), 0, h - 1)
        n_seed = len(points) if n_seed is None else min(int(n_seed), len(points))
        decoded = 0

        def uncovered(index: np.ndarray) -> np.ndarray:
            return index[~covered[rows[index], cols[index]]] if cfg.skip_covered_points else index

        def decode_round(queue: np.ndarray) -> None:
            nonlocal covered, decoded
            while (queue := uncovered(queue)).size:
                index_np, queue = queue[: cfg.points_per_batch], queue[cfg.points_per_batch :]
                decoded += len(index_np)
                batch = torch.as_tensor(points[index_np], dtype=torch.float32, device=self.device)
                labels = torch.ones(len(batch), 1, dtype=torch.int, device=self.device)
                with self.precision():
                    sparse, _ = self.net.prompt_encoder(points=((batch * scale)[:, None, :], labels),
                                                        boxes=None, masks=None)
                    logits, iou = self.fast.decode(state, sparse, valid)
                chosen = choose_masks(logits.float(), iou.float(), cfg)
                if chosen is None:
                    continue
                logits, score, stability, ok = chosen
                masks = F.interpolate(logits[:, None], (h, w), mode="bilinear", align_corners=False)[:, 0] > 0
                index = torch.as_tensor(index_np, device=self.device)[ok]
                if cfg.skip_covered_points:
                    covered |= masks.any(dim=0).cpu().numpy()
                kept.append(pack(masks, score, stability, index, cfg.min_mask_area))

        decode_round(np.arange(n_seed))
        decode_round(n_seed + spread_order(len(points) - n_seed, cfg.points_per_batch))
        return nms_crop(kept, (h, w), cfg.box_nms_thresh, decoded)


class Segmenter:
    """Encoder and decoder in one process (the `matsam segment` CLI, tests, benchmarks): the
    full model is loaded once and both halves share its weights."""

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str = "float32"):
        self.encoder = Encoder(net, device, precision)
        self.decoder = Decoder(net, device, precision)
        self.net = self.encoder.net

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "Segmenter":
        return cls(build_model(cfg.name, checkpoint_for(cfg)), resolve_device(cfg.device), cfg.precision)

    def embed(self, rgb: np.ndarray) -> torch.Tensor:
        return self.encoder.embed(rgb)

    def segment(self, rgb: np.ndarray, points: np.ndarray, cfg: SamConfig,
                n_seed: int | None = None) -> CropMasks:
        """Best-of-three masks for every point prompt, filtered, with NMS inside the crop.

        rgb: (H, W, 3) uint8; points: (N, 2) float (x, y) in the crop's pixels; see `Decoder.decode`.
        """
        shape = rgb.shape[:2]
        if len(points) == 0:
            return CropMasks.empty(shape)
        return self.decoder.decode(self.embed(rgb), shape, points, cfg, n_seed)


def spread_order(n: int, batch: int) -> np.ndarray:
    """0..n-1 reordered so that each run of `batch` consecutive entries takes every k-th index
    (k = n / batch): batches of grid points spread over the crop instead of filling it row by row."""
    stride = max(-(-n // max(batch, 1)), 1)
    return np.concatenate([np.arange(start, n, stride) for start in range(stride)]) if n else np.arange(0)


def choose_masks(logits: torch.Tensor, iou: torch.Tensor, cfg: SamConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Per prompt, the one of SAM's three masks to keep, and whether it passes the filters.

    Among the masks small enough to be one object (for a point in a grain, "the whole micrograph"
    is often SAM's most confident answer), keep the best-scoring one, or the smallest one that
    passes the filters ("smallest": grains, not grain clusters). Returns the kept prompts' logits
    (K, h, w), predicted IoU, stability and the (B,) bool mask of kept prompts, or None.
    """
    fraction = (logits > 0).float().mean(dim=(-1, -2))
    stability = stability_score(logits, cfg.stability_score_offset)
    ok = (fraction <= cfg.max_mask_fraction) & (iou >= cfg.pred_iou_thresh) & (
        stability >= cfg.stability_score_thresh)
    if cfg.multimask_choice == "smallest":
        ranked = torch.where(ok, -fraction, -10.0 - fraction)
    else:
        ranked = torch.where(fraction <= cfg.max_mask_fraction, iou, iou - 10.0)
    best = ranked.argmax(dim=1)
    rows = torch.arange(len(best), device=logits.device)
    ok = ok[rows, best]
    if not ok.any():
        return None
    keep = best[ok]
    kept_rows = rows[ok]
    return logits[kept_rows, keep], iou[kept_rows, keep], stability[kept_rows, keep], ok


def stability_score(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at +offset and -offset: how little the mask moves."""
    high = (logits > offset).sum(dim=(-1, -2)).float()
    low = (logits > -offset).sum(dim=(-1, -2)).float()
    return torch.where(low > 0, high / low.clamp(min=1), torch.zeros_like(low))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) (x0, y0, x1, y1) half-open boxes; empty masks give zeros."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    xr = torch.arange(w, device=masks.device)
    yr = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xr, w).min(dim=1).values
    x1 = torch.where(cols, xr, -1).max(dim=1).values + 1
    y0 = torch.where(rows, yr, h).min(dim=1).values
    y1 = torch.where(rows, yr, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(cols.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def pack(masks: torch.Tensor, score: torch.Tensor, stability: torch.Tensor, index: torch.Tensor,
         min_area: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    areas = masks.sum(dim=(1, 2))
    big = areas >= max(min_area, 1)
    masks, areas = masks[big], areas[big]
    boxes = mask_boxes(masks)
    packed = np.packbits(masks.flatten(1).cpu().numpy(), axis=1)
    return packed, score[big], stability[big], index[big], torch.cat([boxes, areas[:, None]], dim=1)


def nms_crop(kept: list, shape: tuple[int, int], threshold: float, decoded: int = 0) -> CropMasks:
    if not kept:
        return CropMasks.empty(shape, decoded)
    packed = np.concatenate([k[0] for k in kept])
    score = torch.cat([k[1] for k in kept]).float()
    stability = torch.cat([k[2] for k in kept]).float()
    index = torch.cat([k[3] for k in kept])
    box_area = torch.cat([k[4] for k in kept])
    box_area = box_area.cpu().numpy()
    order = nms(box_area[:, :4], score.cpu().numpy(), threshold)
    box_area = box_area[order]
    return CropMasks(
        packed=packed[order], shape=shape, scores=score.cpu().numpy()[order].astype(np.float32),
        stability=stability.cpu().numpy()[order].astype(np.float32),
        boxes=box_area[:, :4].astype(np.int32), areas=box_area[:, 4].astype(np.int64),
        point_index=index.cpu().numpy()[order].astype(np.int64), decoded=decoded,
    )
