"""The bad-input corpus (tests/badinputs.py) through `matsam segment`: valid formats give correct
results, broken files one line naming the file and the problem, exit 2, earlier results intact."""

from __future__ import annotations

import errno
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from badinputs import broken_images, valid_images
from synthetic import few_discs

from matsam import cli
from matsam import io as mio
from matsam.segmentation import weights

MATSAM = [sys.executable, "-m", "matsam.cli"]


def segment(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MATSAM, "segment", *map(str, args)], capture_output=True, text=True, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def earlier(tmp_path):
    """An output folder holding a previous result that a failed run must leave alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels.tif").write_bytes(b"earlier result")
    return out


@pytest.mark.slow
def test_valid_unusual_formats_are_segmented_correctly(tmp_path, mobile_sam_weights):
    files = valid_images(tmp_path / "in")
    out = tmp_path / "out"
    result = segment(*files.values(), "--mode", "phase", "-o", out)
    assert result.returncode == 0, result.stderr
    _, truth = few_discs(seed=3, size=96)
    for name, path in files.items():
        labels = tifffile.imread(out / path.stem / "labels.tif")
        phase = cv2.imread(str(out / path.stem / "phase.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == phase.shape == (96, 96), name
        objects = pd.read_csv(out / path.stem / "objects.csv")
        if name == "constant":  # nothing to find: no objects, one phase, still a complete result
            assert len(objects) == 0 and len(np.unique(phase)) == 1
            continue
        found = phase == phase[truth == 1].max()  # the discs' class
        iou = (found & (truth == 1)).sum() / (found | (truth == 1)).sum()
        assert iou > 0.85, (name, iou)
        assert len(objects) == 4, name


@pytest.mark.parametrize("case", ["zero_bytes", "truncated_tiff", "text_as_tif", "html_as_png", "tiny_1",
                                  "tiny_8", "missing"])
def test_broken_image_is_one_line_naming_it(tmp_path, earlier, case):
    path, phrase = broken_images(tmp_path / "in")[case]
    line = assert_one_line_error(segment(path, "--mode", "grain", "-o", earlier), str(path), phrase)
    assert line.startswith("matsam: error: ")
    assert (earlier / "labels.tif").read_bytes() == b"earlier result"


@pytest.fixture
def good_image(tmp_path):
    image, _ = few_discs(seed=3, size=96)
    path = tmp_path / "good.png"
    cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize(
    ("case", "phrase"),
    [("other_size", "label is 64x48 px, image is 96x96 px"), ("negative", "label values must be class ids")],
)
def test_bad_label_is_one_line_naming_it(tmp_path, earlier, good_image, case, phrase, mobile_sam_weights):
    label = tmp_path / ("label.tif" if case == "negative" else "label.png")
    if case == "other_size":
        cv2.imwrite(str(label), np.zeros((48, 64), np.uint8))
    else:
        tifffile.imwrite(label, np.full((96, 96), -1, np.int16))
    result = segment(good_image, "--mode", "phase", "-o", earlier, "--label", label)
    assert_one_line_error(result, str(label), phrase)


@pytest.mark.parametrize(
    ("yaml_text", "phrase"),
    [("sam: {points_per_sid: 8}\n", "unknown key(s) points_per_sid"),
     ("samm: {}\n", "unknown section(s) samm"),
     ("sam: [unclosed\n", "")],
)
def test_bad_config_is_one_line(tmp_path, earlier, good_image, yaml_text, phrase):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml_text)
    assert_one_line_error(segment(good_image, "--mode", "grain", "-o", earlier, "--config", config), phrase)


def test_missing_config_file_is_named(tmp_path, earlier, good_image):
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(segment(good_image, "--mode", "grain", "-o", earlier, "--config", missing), str(missing))


@pytest.mark.parametrize("case", ["missing", "corrupt", "foreign"])
def test_bad_configured_checkpoint_is_one_line(tmp_path, earlier, good_image, case):
    checkpoint = tmp_path / "sam_vit_b.pth"
    if case == "corrupt":
        checkpoint.write_bytes(b"PK\x03\x04 half a download")
    elif case == "foreign":  # a real torch file, but not SAM's weights
        import torch

        torch.save({"layer.weight": torch.zeros(2)}, checkpoint)
    phrase = {"missing": "SAM checkpoint not found", "corrupt": "not a loadable SAM checkpoint",
              "foreign": "does not fit the configured model.name"}[case]
    result = segment(good_image, "--mode", "grain", "-o", earlier, "--model", "vit_b", "--checkpoint", checkpoint)
    assert_one_line_error(result, str(checkpoint), phrase)
    assert (earlier / "labels.tif").read_bytes() == b"earlier result"


def test_default_weights_with_the_wrong_hash_are_refused(tmp_path, earlier, good_image):
    fake = tmp_path / "weights" / "mobile_sam.pt"
    fake.parent.mkdir()
    with open(fake, "wb") as fh:
        fh.truncate(weights.SIZE)  # the right size, the wrong bytes
    env = {**__import__("os").environ, "MATSAM_WEIGHTS_DIR": str(fake.parent)}
    result = segment(good_image, "--mode", "grain", "-o", earlier, env=env)
    assert_one_line_error(result, str(fake), "does not match the pinned")


def test_unwritable_results_folder_is_one_line(tmp_path, good_image, mobile_sam_weights):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    out = blocker / "run1"
    assert_one_line_error(segment(good_image, "--mode", "grain", "-o", out), str(out))
    assert blocker.read_text() == "a file where the results folder should be"


def test_disk_full_is_one_line_and_leaves_no_partial_file(tmp_path, earlier, good_image, monkeypatch, capsys,
                                                          mobile_sam_weights):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mio.os, "replace", full)
    assert cli.main(["segment", str(good_image), "--mode", "grain", "-o", str(earlier)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(earlier) in lines[0]
    assert (earlier / "labels.tif").read_bytes() == b"earlier result"
    leftovers = [p for p in earlier.rglob(".*") if p.is_file()]
    assert leftovers == []  # temporary files are removed
