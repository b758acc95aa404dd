"""Accuracy regression: the default configuration on two small labelled sample micrographs.

The floors sit a little below what the defaults measured when they were set (noted beside each),
so a change that breaks accuracy fails CI while harmless jitter does not.
"""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow
SAMPLES = REPO / "data" / "samples"
CASES = [
    # (mode, image, label, metric, floor)   measured when set
    ("phase", "phase/images/spot6_0d_2.tif", "phase/labels/spot6_0d_2.png", "miou", 0.85),  # 0.88
    ("grain", "grain/images/11-0-256.png", "grain/labels/11-0-256.png", "ari", 0.30),  # 0.338
]


@pytest.mark.parametrize(("mode", "image", "label", "metric", "floor"), CASES, ids=["phase", "grain"])
def test_default_configuration_stays_above_its_floor(tmp_path, mobile_sam_weights, mode, image, label, metric,
                                                     floor):
    result = subprocess.run(
        [sys.executable, "-m", "matsam.cli", "segment", str(SAMPLES / image), "--mode", mode,
         "-o", str(tmp_path), "--label", str(SAMPLES / label), "--no-baselines"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    value = pd.read_csv(tmp_path / "metrics.csv").set_index("method").loc["matsam", metric]
    assert value >= floor, f"{image}: {metric} {value:.4f} fell below {floor}"
