import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from synthetic import three_phase_micrograph, write_disc_dataset

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


@pytest.mark.slow
def test_three_phase_image_gets_class_ids_and_per_class_scores(tmp_path, mobile_sam_weights):
    image, classes, _ = three_phase_micrograph(seed=0)
    cv2.imwrite(str(tmp_path / "three.png"), image)
    cv2.imwrite(str(tmp_path / "three_label.png"), classes)
    (tmp_path / "cfg.yaml").write_text("merge: {n_phases: 3}\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [*MATSAM, "segment", str(tmp_path / "three.png"), "--mode", "phase", "-o", str(out), "--config",
         str(tmp_path / "cfg.yaml"), "--label", str(tmp_path / "three_label.png")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    phase = cv2.imread(str(out / "phase.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(phase)) == {0, 1, 2}
    for k in (1, 2):  # class ids run dark to bright, as the label's do here
        assert (phase[classes == k] == k).mean() > 0.9
    metrics = pd.read_csv(out / "metrics.csv").set_index("method")
    assert metrics.loc["matsam", "iou_class_1"] > 0.8 and metrics.loc["matsam", "iou_class_2"] > 0.8
    assert metrics.loc["otsu", "miou"] < metrics.loc["matsam", "miou"]  # a binary mask has one class


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
