"""One bad micrograph must not cost the rest of a run.

The pipeline reads each image (and its label) once in a cheap `check_input` job before any other
work. An unreadable file does not fail that job: its record in check.json says why, the image is
left out of its SAM shard and of the tables, and `<results>/failed.csv` lists it. The run then
ends with a non-zero exit and a one-line summary (see `failure_summary`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from matsam import io
from matsam.measurement import reference

FAILED_COLUMNS = ["dataset", "image", "file", "step", "error"]


def check_input(dataset: str, image: str, mode: str, raw: str | os.PathLike[str],
                label: str | os.PathLike[str] | None, dst: str | os.PathLike[str]) -> bool:
    """Read the image and its label as the later steps will (a label through the same reader as
    the scoring step, so a corrected instance label passes); write the verdict to `dst`."""
    record: dict[str, object] = {"dataset": dataset, "image": image, "ok": True}
    step, file = "read image", raw
    try:
        pixels = io.read_image(raw)
        if label is not None:
            step, file = "read label", label
            reference.read_reference(label, mode, pixels.shape[:2])
    except io.InputError as exc:
        record.update(ok=False, file=str(file), step=step, error=" ".join(str(exc).split()))
    io.write_json(dst, record)
    return bool(record["ok"])


def collect_checks(check_files: Sequence[str | os.PathLike[str]], dst: str | os.PathLike[str]) -> None:
    """A dataset's verdicts in one file: the DAG reads which images passed from it once."""
    io.write_json(dst, {"checks": [json.loads(Path(f).read_text()) for f in check_files]})


def passed_images(collected: str | os.PathLike[str]) -> set[str]:
    return {r["image"] for r in json.loads(Path(collected).read_text())["checks"] if r["ok"]}


def write_failed_table(collected: Sequence[str | os.PathLike[str]], dst: str | os.PathLike[str]) -> int:
    """failed.csv: one row per image whose check failed (a header only when none did)."""
    rows = [r for f in collected for r in json.loads(Path(f).read_text())["checks"] if not r["ok"]]
    io.write_csv(dst, pd.DataFrame(rows, columns=FAILED_COLUMNS))
    return len(rows)


def failure_summary(failed_csv: str | os.PathLike[str]) -> str | None:
    """The run's one-line summary when images failed, else None."""
    path = Path(failed_csv)
    if not path.is_file():
        return None
    n = len(pd.read_csv(path))
    if n == 0:
        return None
    return f"matsam: {n} image(s) could not be processed and were left out; see {path}"
