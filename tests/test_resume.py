"""A run killed with SIGKILL in the middle of the SAM stage is resumed by running the same command
again (with --rerun-incomplete, after `--unlock`): nothing that had finished is computed again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml
from conftest import REPO, parse_dry_run
from synthetic import write_disc_dataset

pytestmark = pytest.mark.slow
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}}


def test_sigkill_during_sam_then_rerun_recomputes_nothing_finished(tmp_path, mobile_sam_weights):
    write_disc_dataset(tmp_path / "discs", n_images=2)
    config = {"results": "results", "device": "cpu", "defaults": FAST, "sam_images_per_job": 1,
              "datasets": {"discs": {"images": "discs/images", "labels": "discs/labels", "mode": "phase"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "--rerun-incomplete"]
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sam_logs = tmp_path / "results" / "_logs" / "segment_crops" / "discs"
    deadline = time.monotonic() + 900
    while not (sam_logs.is_dir() and any(sam_logs.glob("*.log"))):  # the first decoder job has started
        assert first.poll() is None, first_log.read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # snakemake and its running job, as a scheduler would
    first.wait()
    started = parse_dry_run(first_log.read_text())
    killed = [job for job in started if job[0] == "segment_crops"][-1]
    finished = [job for job in started if job != killed]
    assert {"check_input", "prepare_image", "make_prompts", "embed_crops"} <= {rule for rule, _ in finished}

    # A killed snakemake leaves its lock (it records no process id to tell it is stale).
    unlock = subprocess.run([*command, "--unlock"], capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    second = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert second.returncode == 0, second.stderr[-3000:]
    rerun = parse_dry_run(second.stderr)
    assert killed in rerun
    assert [job for job in rerun if job in finished] == []  # nothing finished is computed again
    assert Counter(rule for rule, _ in rerun + finished)["segment_crops"] == 2
    assert (tmp_path / "results" / "summary.csv").is_file()


def test_a_retried_decoder_job_uses_smaller_prompt_batches():
    from dataclasses import asdict, replace
    from types import SimpleNamespace

    from matsam.config import SamConfig
    from matsam.workflow.job import retry_batch, sam_section

    assert [retry_batch(16, attempt) for attempt in (1, 2, 3, 5, 9)] == [16, 8, 4, 1, 1]
    params = {"sam": asdict(SamConfig())}
    for attempt, batch in ((1, 16), (2, 8), (3, 4)):
        smk = SimpleNamespace(rule="segment_crops", params=params,
                              resources=SimpleNamespace(points_per_batch=retry_batch(16, attempt)))
        cfg = sam_section(smk)
        assert cfg.points_per_batch == batch
        assert replace(cfg, points_per_batch=16) == SamConfig()
    unset = sam_section(SimpleNamespace(rule="segment_crops", params=params, resources=SimpleNamespace()))
    assert unset == SamConfig()
