from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from matsam.segmentation.weights import default_checkpoint, is_verified

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MATSAM_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(scope="session")
def mobile_sam_weights() -> Path:
    """The verified MobileSAM checkpoint (installed by scripts/setup-env.sh; never downloaded here)."""
    path = default_checkpoint()
    if not is_verified(path):
        pytest.skip(f"MobileSAM weights not installed at {path}: run scripts/setup-env.sh")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the shared labelled micrographs are read from there")
    return SHARED_DATA


def parse_dry_run(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in the output of `snakemake -n` (or of a run's log)."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in stdout.splitlines():
        if m := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line):
            jobs.append((m.group(1), {}))
        elif m := re.match(r"^\s+wildcards: (.*)", line):
            jobs[-1] = (jobs[-1][0], dict(kv.split("=", 1) for kv in m.group(1).split(", ")))
    return jobs
