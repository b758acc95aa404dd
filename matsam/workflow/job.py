"""The Snakemake side of one job: every `scripts/<rule>.py` is

    with job.run(snakemake) as smk:
        steps.<step>(smk.input..., smk.output..., job.section(smk, "<section>"))

so the rule file names its script and the script names its step. `run` logs to the rule's log
file (and stderr), caps the threads, and turns any error into one line naming the rule and the
file; outputs are only ever written atomically, so a failed job leaves nothing half-done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matsam.config import SamConfig, section_from_params

log = logging.getLogger("matsam")


@contextmanager
def run(smk: Any, torch_threads: bool = False) -> Iterator[Any]:
    """Run a job's step inside this block; `torch_threads`: also cap torch's threads (SAM rules)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(smk.log[0]), logging.StreamHandler(sys.stderr)] if smk.log else None,
    )
    if smk.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(smk.threads))
        if torch_threads:
            import torch

            torch.set_num_threads(int(smk.threads))
    start = time.perf_counter()
    try:
        yield smk
    except Exception as exc:
        log.error("%s: %s", smk.rule, exc)
        raise SystemExit(f"matsam {smk.rule} failed: {exc}") from None
    log.info("%s %s done in %.1f s", smk.rule, dict(smk.wildcards), time.perf_counter() - start)


def section(smk: Any, name: str) -> Any:
    """The config section `name` (a stage dataclass) that the rule passed as `params.<name>`."""
    return section_from_params(name, smk.params[name], where=f"rule {smk.rule} params")


def retry_batch(batch: int, attempt: int) -> int:
    """The prompt batch of a decoder job's `attempt` (1, 2, ...): halved per retry, at least 1."""
    return max(1, batch >> (attempt - 1))


def sam_section(smk: Any) -> SamConfig:
    """The decoder's settings with the prompt batch of this attempt (smaller after an OOM)."""
    cfg: SamConfig = section(smk, "sam")
    batch = int(getattr(smk.resources, "points_per_batch", cfg.points_per_batch))
    if batch == cfg.points_per_batch:
        return cfg
    log.info("attempt with points_per_batch=%d (configured %d)", batch, cfg.points_per_batch)
    return dataclasses.replace(cfg, points_per_batch=batch)


def shard_names(files: Sequence[str]) -> list[str]:
    """Image names of a SAM shard's work files (<work>/<dataset>/<image>/<file>)."""
    return [Path(f).parent.name for f in files]
