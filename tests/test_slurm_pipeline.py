"""The whole pipeline through a real Slurm with `--profile profiles/slurm-ci`.

Needs the one-node cluster of scripts/local-slurm.sh (`sudo scripts/local-slurm.sh start`); skipped
when `sbatch` is missing or `scripts/local-slurm.sh status` does not say the cluster is UP. Run with
``pytest -m slurm tests/test_slurm_pipeline.py`` (about 5 minutes on 2 CPUs).

Three small disc images (one crop each, fast prompts) run once through Slurm and once locally
(`--cores 2`, at the same time); then one image's content changes and the Slurm run is repeated.
Checked:

* every job except the local rules ran inside a Slurm job: the (rule, wildcards) that the
  Slurm jobs' own logs show executed cover every job the main process scheduled remotely;
* the SAM jobs (embed_crops, segment_crops) got the GPU gres on the gpu partition, every other
  job none. The model still runs on the CPU: the config says `device: cpu`, and profiles/slurm-ci
  makes the SAM rules ask for a GPU anyway (set-resources `gpu`, MATSAM_SLURM_SAM_GPUS, default 1; the cluster's
  GPU is a fake gres device);
* the CPU rules are grouped: one sbatch for the three images' pre-SAM jobs, one for the post-SAM
  jobs, one per SAM job (two per image: encoder, decoder);
* labels.tif / phase.png / objects.csv / metrics.csv equal those of the local run;
* after changing one image, only that image's jobs are submitted again (4 sbatch), and the
  other images' results are left alone.

Every snakemake call runs under `timeout -s KILL` (the slurm plugin waits forever on a job that
was scancelled); the jobs get a job-name prefix unique to this test session, and whatever of
them is still queued at teardown is scancelled (only those).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO
from synthetic import write_disc_dataset

LOCAL_SLURM = REPO / "scripts" / "local-slurm.sh"
PROFILE = REPO / "profiles" / "slurm-ci"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FAST = {"prompts": {"grid_min": 4, "grid_max": 6, "edge_density": 1.0}, "crops": {"n_layers": 0}}
IMAGES = ["disc_0", "disc_1", "disc_2"]
LOCAL_RULES = {"collect_checks", "failed_table", "aggregate_dataset", "aggregate_all", "dataset_report", "run_report",
               "all"}
CPU_PARTITION = os.environ.get("MATSAM_SLURM_PARTITION", "cpu")
GPU_PARTITION = os.environ.get("MATSAM_SLURM_GPU_PARTITION", "gpu")
RUN_TIMEOUT_S = 900  # one snakemake call: ~7 min on 2 idle CPUs (5 sbatch, then the reports)
# job names: <prefix>_<run uuid>; unique per session so that teardown cancels only our jobs
PREFIX = f"matsam_test_{uuid.uuid4().hex[:8]}"


def _cluster_state() -> str | None:
    """None when the cluster is usable, else why not."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH: no Slurm here (start one with `sudo scripts/local-slurm.sh start`)"
    try:
        status = subprocess.run([str(LOCAL_SLURM), "status"], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`scripts/local-slurm.sh status` failed: {exc}"
    if status.returncode != 0 or "cluster: UP" not in status.stdout:
        lines = (status.stdout + status.stderr).strip().splitlines()
        return f"`scripts/local-slurm.sh status` says the cluster is down: {' | '.join(lines[-3:])}"
    return None


_WHY_NOT = _cluster_state()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or ""),
]


def start(folder: Path, *args: str, slurm: bool) -> tuple[subprocess.Popen, Path]:
    """A snakemake run in the background (output to a log file in `folder`), under timeout -s KILL."""
    extra = ["--profile", str(PROFILE), "--slurm-jobname-prefix", PREFIX] if slurm else ["--cores", "2"]
    cmd = ["timeout", "-s", "KILL", str(RUN_TIMEOUT_S), *SNAKEMAKE, "--directory", str(folder),
           "--configfile", str(folder / "config.yaml"), *extra, *args]
    log = folder / f"snakemake_{'slurm' if slurm else 'local'}_{time.time_ns()}.log"
    with log.open("w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), log


def finish(run: tuple[subprocess.Popen, Path]) -> str:
    proc, log = run
    rc = proc.wait(timeout=RUN_TIMEOUT_S + 30)
    text = log.read_text()
    assert rc == 0, f"snakemake failed ({rc}{', killed by timeout' if rc in (124, 137) else ''}):\n{text[-4000:]}"
    return text


def scheduled_jobs(log: str) -> list[tuple[str, str, bool]]:
    """(rule, wildcards, local) of every job a snakemake log shows (group members included)."""
    jobs: list[tuple[str, str, bool]] = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", log):
        m = re.match(r"\s*(local)?rule (\w+):", block)
        if not m:
            continue
        wc = re.search(r"^\s*wildcards: (.*)$", block, re.MULTILINE)
        jobs.append((m.group(2), wc.group(1).strip() if wc else "", bool(m.group(1))))
    return jobs


def submissions(log: str) -> dict[str, Path]:
    """Slurm job id -> its log file, from the main process' output."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", log, re.MULTILINE)
    return {jobid: Path(path) for jobid, path in found}


def sacct(jobids: list[str], timeout: float = 90) -> dict[str, dict[str, str]]:
    """Allocation records (-X) of finished jobs; waits for slurmdbd to have the whole record."""
    fields = ["JobID", "JobName", "State", "Partition", "AllocTRES", "ReqTRES"]
    deadline = time.monotonic() + timeout
    records: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(jobids), "-o", ",".join(fields)],
                             capture_output=True, text=True, check=False, timeout=60).stdout
        records = {r["JobID"]: r for r in (dict(zip(fields, line.split("|"))) for line in out.splitlines())}
        if all(j in records and records[j]["State"] and records[j]["Partition"] and records[j]["AllocTRES"]
               for j in jobids):
            return records
        time.sleep(2)
    pytest.fail(f"sacct has no complete record of jobs {jobids} after {timeout} s: {records}")


def cancel_leftovers() -> None:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=False,
                         timeout=60).stdout
    ours = [f[0] for f in (line.split() for line in out.splitlines()) if len(f) == 2 and f[1].startswith(PREFIX)]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True, check=False, timeout=60)


def write_case(folder: Path) -> None:
    write_disc_dataset(folder / "discs", n_images=len(IMAGES), size=96)
    config = {"results": "results", "device": "cpu", "sam_images_per_job": 1, "defaults": FAST,
              "datasets": {"discs": {"images": "discs/images", "labels": "discs/labels", "mode": "phase"}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mobile_sam_weights):
    """First Slurm run (and the local reference run beside it), then the rerun after one image
    changed. Returns the folders and both Slurm runs' logs."""
    slurm_dir = tmp_path_factory.mktemp("slurm_run")
    local_dir = tmp_path_factory.mktemp("local_run")
    write_case(slurm_dir)
    write_case(local_dir)
    try:
        local = start(local_dir, slurm=False)
        first = finish(start(slurm_dir, slurm=True))
        finish(local)
        shutil.copytree(slurm_dir / "results", slurm_dir / "results_first", ignore=shutil.ignore_patterns("_*"))
        before = {p: p.stat().st_mtime_ns for p in (slurm_dir / "results").rglob("*") if p.is_file()}
        changed = slurm_dir / "discs" / "images" / "disc_1.png"
        image = cv2.imread(str(changed))
        cv2.imwrite(str(changed), np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8))
        second = finish(start(slurm_dir, slurm=True))
    finally:
        cancel_leftovers()
    return {"slurm": slurm_dir, "local": local_dir, "first": first, "second": second, "before": before}


def executed_in_slurm(log_files) -> set[tuple[str, str]]:
    """(rule, wildcards) of the jobs that Slurm jobs' own logs show as run."""
    done = set()
    for path in log_files:
        assert path.is_file(), f"Slurm log {path} is missing (slurm-keep-successful-logs?)"
        done |= {(rule, wc) for rule, wc, _ in scheduled_jobs(path.read_text())}
    return done


def test_every_remote_job_ran_through_sbatch(runs):
    log = runs["first"]
    jobs = scheduled_jobs(log)
    remote = {(rule, wc) for rule, wc, local in jobs if rule not in LOCAL_RULES}
    per_image = {"check_input", "prepare_image", "plan_crops", "make_prompts", "embed_crops", "segment_crops",
                 "merge_phase_masks", "draw_overlay", "quantify_objects", "evaluate_image"}
    assert {rule for rule, _ in remote} == per_image and len(remote) == len(per_image) * len(IMAGES), remote
    assert not [(r, wc) for r, wc, local in jobs if local and r not in LOCAL_RULES], "remote rules run locally"
    submitted = submissions(log)
    assert submitted, log[-3000:]
    assert executed_in_slurm(submitted.values()) >= remote
    records = sacct(list(submitted))
    assert {r["State"] for r in records.values()} == {"COMPLETED"}, records
    names = {r["JobName"] for r in records.values()}  # <prefix>_<run uuid>: one run, ours
    assert len(names) == 1 and names.pop().startswith(f"{PREFIX}_"), records


def test_only_sam_jobs_get_the_gpu_and_cpu_jobs_are_grouped(runs):
    submitted = submissions(runs["first"])
    records = sacct(list(submitted))
    kinds = {jobid: path.parent.name if path.parent.name.startswith("group_") else path.parent.parent.name
             for jobid, path in submitted.items()}
    sam = [j for j, kind in kinds.items() if kind in ("rule_embed_crops", "rule_segment_crops")]
    group_names = ("checks", "pre_sam", "post_sam")  # log folders: group_<name>_<its rules>
    groups = sorted(name for kind in kinds.values() for name in group_names if kind.startswith(f"group_{name}_"))
    assert len(sam) == 2 * len(IMAGES) and groups == sorted(group_names), kinds
    assert len(submitted) == 2 * len(IMAGES) + 3  # 33 jobs, 9 sbatch
    for jobid, rec in records.items():
        tres = dict(kv.split("=", 1) for kv in rec["AllocTRES"].split(",") if "=" in kv)
        if jobid in sam:
            assert tres.get("gres/gpu") == "1" and rec["Partition"] == GPU_PARTITION, rec
        else:
            assert "gres/gpu" not in tres and rec["Partition"] == CPU_PARTITION, rec


def test_outputs_equal_a_local_run(runs):
    slurm, local = runs["slurm"] / "results_first", runs["local"] / "results"  # before disc_1 changed
    for image in IMAGES:
        a, b = slurm / "discs" / image, local / "discs" / image
        assert np.array_equal(tifffile.imread(a / "labels.tif"), tifffile.imread(b / "labels.tif")), image
        assert np.array_equal(cv2.imread(str(a / "phase.png"), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(b / "phase.png"), cv2.IMREAD_UNCHANGED)), image
        pd.testing.assert_frame_equal(pd.read_csv(a / "objects.csv"), pd.read_csv(b / "objects.csv"), rtol=1e-9)
    for table in ("discs/metrics.csv", "discs/summary.csv", "summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(slurm / table), pd.read_csv(local / table), rtol=1e-9)


def test_a_changed_image_resubmits_only_its_own_jobs(runs):
    log = runs["second"]
    jobs = [(rule, wc) for rule, wc, _ in scheduled_jobs(log) if rule not in LOCAL_RULES]
    assert jobs
    assert {wc for _, wc in jobs} <= {"dataset=discs, image=disc_1", "dataset=discs, shard=disc_1"}, jobs
    assert {"prepare_image", "make_prompts", "embed_crops", "segment_crops", "merge_phase_masks", "evaluate_image"} <= {
        rule for rule, _ in jobs}
    submitted = submissions(log)
    assert len(submitted) == 5, submitted  # check group, pre-SAM group, SAM encoder and decoder jobs, post-SAM group
    assert executed_in_slurm(submitted.values()) >= set(jobs)
    assert {r["State"] for r in sacct(list(submitted)).values()} == {"COMPLETED"}
    results = runs["slurm"] / "results" / "discs"
    for image in ("disc_0", "disc_2"):
        for path in (results / image).iterdir():
            assert path.stat().st_mtime_ns == runs["before"][path], f"{path} was written again"
