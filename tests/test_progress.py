"""CLI progress lines: counts, elapsed time and the ETA from the mean time per item."""

from __future__ import annotations

import io

from matsam.workflow.progress import Progress, format_seconds


def test_progress_counts_and_estimates_the_time_left():
    now = [0.0]
    out = io.StringIO()
    progress = Progress(4, stream=out, clock=lambda: now[0])
    assert progress.eta() is None
    now[0] = 10.0
    progress.step("a.tif")
    now[0] = 20.0
    progress.step("b.tif")
    assert progress.eta() == 20.0
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/4 images, 0:10 elapsed, ETA 0:30] a.tif"
    assert lines[1] == "[2/4 images, 0:20 elapsed, ETA 0:20] b.tif"
    progress.step("c.tif")
    progress.step("d.tif")
    assert out.getvalue().splitlines()[-1] == "[4/4 images, 0:20 elapsed] d.tif"
    assert format_seconds(3725) == "1:02:05"


def test_quiet_prints_nothing():
    out = io.StringIO()
    progress = Progress(2, quiet=True, stream=out)
    progress.step("a")
    assert out.getvalue() == "" and progress.done == 1
