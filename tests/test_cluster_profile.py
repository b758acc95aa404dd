"""With the one `device` setting at its default, `--profile profiles/slurm` sends both SAM rules to
the GPU partition asking for one GPU each, and a CPU-only cluster says so once
(MATSAM_SLURM_SAM_GPUS=0). Read from Snakemake's own dry run: no cluster needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
SAM_RULES = ("embed_crops", "segment_crops")


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Path:
    """A one-image run folder whose input checks have run (the SAM jobs are planned after them)."""
    folder = tmp_path_factory.mktemp("profile")
    (folder / "images").mkdir()
    cv2.imwrite(str(folder / "images" / "a.png"), np.full((64, 64), 90, np.uint8))
    write_config(folder, "auto")
    run = subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                          "--cores", "1", "results/_work/d/checks.json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return folder


def write_config(folder: Path, device: str) -> None:
    config = {"results": "results", "device": device, "datasets": {"d": {"images": "images", "mode": "grain"}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def planned_resources(folder: Path, **env: str) -> dict[str, dict[str, str]]:
    """rule -> its resources as the slurm profile's dry run prints them."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MATSAM_SLURM_")} | env
    run = subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                          "-n", "--profile", str(REPO / "profiles" / "slurm")],
                         capture_output=True, text=True, env=environ)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", run.stdout):
        name = re.match(r"(?:local)?rule (\w+):", block)
        line = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if name and line:
            out[name.group(1)] = dict(kv.split("=", 1) for kv in line.group(1).split(", "))
    return out


def test_device_auto_asks_one_gpu_per_sam_job_on_the_gpu_partition(checked):
    write_config(checked, "auto")
    resources = planned_resources(checked)
    for rule in SAM_RULES:
        assert resources[rule]["gpu"] == "1" and resources[rule]["slurm_partition"] == "gpu", resources[rule]
    cpu_rules = [r for r in resources if r not in SAM_RULES]
    assert cpu_rules and all(resources[r].get("gpu", "0") == "0" for r in cpu_rules)
    assert all(resources[r]["slurm_partition"] == "cpu" for r in cpu_rules)


def test_a_cpu_only_cluster_says_so_once(checked):
    write_config(checked, "auto")
    resources = planned_resources(checked, MATSAM_SLURM_SAM_GPUS="0")
    for rule in SAM_RULES:
        assert resources[rule]["gpu"] == "0" and resources[rule]["slurm_partition"] == "cpu", resources[rule]


def test_device_cpu_asks_for_no_gpu(checked):
    write_config(checked, "cpu")
    resources = planned_resources(checked)
    for rule in SAM_RULES:
        assert resources[rule].get("gpu", "0") == "0", resources[rule]
