"""A plain `snakemake --cores N` over a dataset with bad files finishes the good images and the
tables, lists the bad ones in failed.csv and exits non-zero; fixing a file reruns only its chain."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from synthetic import write_disc_dataset

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}}


def snakemake(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                           "--cores", "2"], capture_output=True, text=True, timeout=1500)


def jobs_run(result: subprocess.CompletedProcess) -> Counter:
    return Counter(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", result.stderr + result.stdout, re.M))


def test_bad_files_are_listed_and_the_rest_finishes(tmp_path, mobile_sam_weights):
    write_disc_dataset(tmp_path / "discs", n_images=3)
    images, labels = tmp_path / "discs" / "images", tmp_path / "discs" / "labels"
    good_copy = tmp_path / "disc_1_good.png"
    shutil.copy(images / "disc_1.png", good_copy)
    (images / "disc_1.png").write_bytes(b"")  # 0-byte image
    cv2.imwrite(str(labels / "disc_2.png"), np.zeros((40, 50), np.uint8))  # label of another size
    config = {"results": "results", "device": "cpu", "defaults": FAST,
              "datasets": {"discs": {"images": "discs/images", "labels": "discs/labels", "mode": "phase"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))  # one SAM shard for all three

    first = snakemake(tmp_path)
    assert first.returncode != 0
    summary = first.stderr.strip().splitlines()[-1]
    assert summary == "matsam: 2 image(s) could not be processed and were left out; see results/failed.csv"
    results = tmp_path / "results"
    failed = pd.read_csv(results / "failed.csv").set_index("image")
    assert sorted(failed.index) == ["disc_1", "disc_2"]
    assert failed.loc["disc_1", "step"] == "read image" and "not a readable PNG" in failed.loc["disc_1", "error"]
    assert failed.loc["disc_2", "file"] == "discs/labels/disc_2.png"
    assert "label is 50x40 px, image is 128x128 px" in failed.loc["disc_2", "error"]
    assert (results / "discs" / "disc_0" / "labels.tif").is_file()
    assert not (results / "discs" / "disc_1").exists()
    assert list(pd.read_csv(results / "discs" / "metrics.csv").image.unique()) == ["disc_0"]
    assert set(pd.read_csv(results / "summary.csv").n_images) == {1}

    shutil.copy(good_copy, images / "disc_1.png")  # fix one file
    second = snakemake(tmp_path)
    assert second.returncode != 0  # disc_2's label is still wrong
    assert second.stderr.strip().splitlines()[-1].startswith("matsam: 1 image(s)")
    runs = jobs_run(second)
    assert runs["check_input"] == 1 and runs["prepare_image"] == 1 and runs["make_prompts"] == 1, runs
    assert list(pd.read_csv(results / "failed.csv").image) == ["disc_2"]
    assert sorted(pd.read_csv(results / "discs" / "metrics.csv").image.unique()) == ["disc_0", "disc_1"]
