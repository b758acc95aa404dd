"""The one-node cluster of scripts/local-slurm.sh really runs jobs, GPU gres and accounting included.

Needs a running cluster (``sudo scripts/local-slurm.sh start``); skipped when ``sbatch`` is not on
PATH. Run with ``pytest -m slurm tests/test_local_slurm_script.py``. The partitions can be renamed
for another cluster with MATSAM_SLURM_PARTITION / MATSAM_SLURM_GPU_PARTITION (defaults: cpu, gpu);
the job outputs are written under pytest's tmp_path, so the submit host and the node must share it
(true on the local one-node cluster).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        shutil.which("sbatch") is None,
        reason="sbatch is not on PATH: no Slurm here (start one with "
        "`sudo scripts/local-slurm.sh start`)",
    ),
]

CPU_PARTITION = os.environ.get("MATSAM_SLURM_PARTITION", "cpu")
GPU_PARTITION = os.environ.get("MATSAM_SLURM_GPU_PARTITION", "gpu")
TIMEOUT_S = 180
# sacct states after which a job will not change any more
TERMINAL = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def _sbatch(out: Path, *args: str) -> str:
    jobid = _run(
        "sbatch",
        "--parsable",
        "--job-name=matsam-slurm-test",
        "--time=5",
        "--mem=100",
        f"--output={out}",
        *args,
    ).strip()
    return jobid.split(";")[0]  # "<id>;<cluster>" on multi-cluster setups


def _sacct(jobid: str) -> dict[str, str]:
    """The allocation's record (-X: no steps), or {} while slurmdbd has not seen the job yet."""
    fields = ["JobID", "State", "ExitCode", "AllocTRES", "Partition"]
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", jobid, "-o", ",".join(fields)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        rec = dict(zip(fields, line.split("|")))
        if rec.get("JobID") == jobid:
            return rec
    return {}


def _wait(jobids: list[str]) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + TIMEOUT_S
    recs: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        recs = {j: _sacct(j) for j in jobids}
        # "CANCELLED by 0" -> first word. slurmdbd may get the end of a short job before the rest
        # of its record (seen: State=COMPLETED with an empty Partition): wait for the whole record.
        if all(
            r and r["State"].split()[0] in TERMINAL and r["Partition"] and r["AllocTRES"]
            for r in recs.values()
        ):
            return recs
        time.sleep(1)
    subprocess.run(["scancel", *jobids], check=False)
    squeue = subprocess.run(
        ["squeue", "-a", "-o", "%i %P %T %r"], check=False, capture_output=True, text=True
    )
    pytest.fail(f"jobs not finished after {TIMEOUT_S}s: {recs}\nsqueue:\n{squeue.stdout}")


@pytest.fixture(scope="module")
def cluster_up() -> None:
    ping = subprocess.run(
        ["scontrol", "ping"], check=False, capture_output=True, text=True, timeout=30
    )
    if "UP" not in ping.stdout:
        pytest.fail(
            "sbatch is installed but slurmctld does not answer "
            f"({ping.stdout.strip() or ping.stderr.strip()}); "
            "run `sudo scripts/local-slurm.sh start` (or `... status`)"
        )


def test_cpu_and_gpu_jobs_complete_with_accounting(cluster_up: None, tmp_path: Path) -> None:
    cpu_out = tmp_path / "cpu.out"
    gpu_out = tmp_path / "gpu.out"
    cpu_job = _sbatch(cpu_out, f"--partition={CPU_PARTITION}", "--wrap=echo cpu-job-ok")
    gpu_job = _sbatch(
        gpu_out,
        f"--partition={GPU_PARTITION}",
        "--gres=gpu:1",
        "--wrap=echo CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}",
    )

    recs = _wait([cpu_job, gpu_job])
    cpu, gpu = recs[cpu_job], recs[gpu_job]

    assert cpu["State"] == "COMPLETED" and cpu["ExitCode"] == "0:0", cpu
    assert cpu["Partition"] == CPU_PARTITION, cpu
    assert cpu_out.read_text().strip() == "cpu-job-ok"

    assert gpu["State"] == "COMPLETED" and gpu["ExitCode"] == "0:0", gpu
    assert gpu["Partition"] == GPU_PARTITION, gpu
    tres = dict(kv.split("=", 1) for kv in gpu["AllocTRES"].split(",") if "=" in kv)
    assert tres.get("gres/gpu") == "1", f"no gres/gpu=1 in AllocTRES: {gpu['AllocTRES']}"
    line = gpu_out.read_text().strip()
    assert line.startswith("CUDA_VISIBLE_DEVICES="), line
    visible = line.split("=", 1)[1]
    assert visible not in ("", "unset"), f"CUDA_VISIBLE_DEVICES not set in the GPU job: {line}"
