import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from synthetic import write_disc_dataset

MATSAM = [sys.executable, "-m", "matsam.cli"]


@pytest.mark.slow
def test_segment_writes_the_per_image_outputs_and_metrics(tmp_path, mobile_sam_weights):
    write_disc_dataset(tmp_path, n_images=1)
    out = tmp_path / "out"
    result = subprocess.run(
        [*MATSAM, "segment", str(tmp_path / "images" / "disc_0.png"), "--mode", "phase", "-o", str(out),
         "--label", str(tmp_path / "labels" / "disc_0.png"), "--pixel-size", "0.1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    for name in ("labels.tif", "phase.png", "overlay.png", "objects.csv", "summary.json", "metrics.csv"):
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv").set_index("method")
    assert metrics.loc["matsam", "miou"] > 0.9
    assert set(metrics.index) == {"matsam", "otsu", "adaptive"}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such file"),
        ("corrupt", "not a readable PNG"),
        ("tiny", "image too small"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path, setup, message):
    path = tmp_path / "bad.png"
    if setup == "corrupt":
        path.write_bytes(b"\x89PNG garbage")
    elif setup == "tiny":
        cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    previous = tmp_path / "out" / "labels.tif"
    previous.parent.mkdir()
    previous.write_bytes(b"earlier result")
    result = subprocess.run([*MATSAM, "segment", str(path), "--mode", "grain", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]
    assert previous.read_bytes() == b"earlier result"
