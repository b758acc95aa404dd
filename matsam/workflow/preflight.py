"""Checks at DAG time, before any job: a run that cannot succeed stops at once with one line
naming what and where, instead of after hours of pre-processing."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

from matsam.config import ConfigError, ModelConfig
from matsam.io import OutputError, make_temp_file
from matsam.segmentation.weights import WeightsError, default_checkpoint, is_verified, verify


def check_model(cfg: ModelConfig) -> None:
    """The checkpoint exists (the default MobileSAM weights: and match their pinned sha256)."""
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: SAM checkpoint not found (model.checkpoint)")
        return
    if cfg.name != "mobile_sam":
        raise ConfigError(f"model.name {cfg.name!r} needs model.checkpoint: a path to its weights")
    path = default_checkpoint()
    if not is_verified(path):  # no valid stamp: hash the file once (about 0.1 s)
        verify(path)


def cuda_visible() -> bool:
    """An NVIDIA driver on this machine, without importing torch (seconds at every DAG build)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or bool(os.environ.get("MATSAM_ASSUME_CUDA"))


def check_device(cfg: ModelConfig, local: bool) -> None:
    """`device: cuda` with no GPU here is an error for a local run; on a cluster the DAG is built
    on a login node without GPUs, so the SAM job checks it on its node (one line in its log)."""
    if local and cfg.device == "cuda" and not cuda_visible():
        raise ConfigError("device is 'cuda' but this machine has no NVIDIA GPU (/dev/nvidia*); "
                          "use device: auto to fall back to the CPU")


def check_writable(folder: str | os.PathLike[str]) -> None:
    try:
        make_temp_file(Path(folder) / ".matsam-write-test").unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: results folder is not writable ({exc.strerror or exc})") from exc


def preflight(models: Iterable[ModelConfig], results: str | os.PathLike[str], local: bool) -> None:
    for cfg in set(models):
        check_model(cfg)
        check_device(cfg, local)
    check_writable(results)
