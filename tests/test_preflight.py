"""Pre-flight at DAG time: a run that cannot succeed stops before any job, naming what and where."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO

from matsam.config import ConfigError, ModelConfig
from matsam.io import OutputError
from matsam.segmentation.weights import SIZE, WeightsError
from matsam.workflow import preflight

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def dry_run(folder: Path, env: dict | None = None, **config) -> subprocess.CompletedProcess:
    (folder / "images").mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "images" / "a.png"), np.full((32, 32), 90, np.uint8))
    base = {"results": "results", "device": "cpu", "datasets": {"d": {"images": "images", "mode": "grain"}}}
    (folder / "config.yaml").write_text(yaml.safe_dump({**base, **config}))
    return subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                           "-n", "--cores", "1"], capture_output=True, text=True, env=env)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("pre-flight: ")]
    assert len(lines) == 1, output[-2000:]
    assert "rule " not in result.stdout + result.stderr  # stopped before any job was planned
    return lines[0]


def test_missing_configured_checkpoint_stops_the_run(tmp_path):
    line = error_line(dry_run(tmp_path, defaults={"model": {"name": "vit_b", "checkpoint": "/nowhere/vit_b.pth"}}))
    assert line == "pre-flight: /nowhere/vit_b.pth: SAM checkpoint not found (model.checkpoint)"


def test_default_weights_with_a_wrong_hash_stop_the_run(tmp_path):
    fake = tmp_path / "w" / "mobile_sam.pt"
    fake.parent.mkdir()
    with open(fake, "wb") as fh:
        fh.truncate(SIZE)
    line = error_line(dry_run(tmp_path, env={**os.environ, "MATSAM_WEIGHTS_DIR": str(fake.parent)}))
    assert str(fake) in line and "does not match the pinned" in line


def test_unwritable_results_folder_stops_the_run(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    line = error_line(dry_run(tmp_path, results="blocker/results"))
    assert line.startswith("pre-flight: blocker/results: results folder is not writable")


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*")), reason="this machine has an NVIDIA GPU")
def test_cuda_without_a_gpu_stops_a_local_run(tmp_path):
    line = error_line(dry_run(tmp_path, device="cuda"))
    assert "device is 'cuda' but this machine has no NVIDIA GPU" in line


def test_checks_in_process(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="needs model.checkpoint"):
        preflight.check_model(ModelConfig(name="vit_h"))
    monkeypatch.setattr(preflight, "cuda_visible", lambda: False)
    preflight.check_device(ModelConfig(device="cuda"), local=False)  # a cluster node decides
    with pytest.raises(ConfigError):
        preflight.check_device(ModelConfig(device="cuda"), local=True)
    preflight.check_writable(tmp_path / "new" / "results")
    assert list((tmp_path / "new" / "results").iterdir()) == []  # the probe file is gone
    with pytest.raises(OutputError, match="not writable"):
        (tmp_path / "f").write_text("")
        preflight.check_writable(tmp_path / "f" / "results")
    with pytest.raises(WeightsError, match="not found"):
        preflight.check_model(ModelConfig(name="vit_b", checkpoint=str(tmp_path / "none.pth")))
