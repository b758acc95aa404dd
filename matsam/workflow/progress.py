"""Progress of long CLI work on stderr: done / total, elapsed time and an ETA.

The ETA is the mean time per finished item times the items left, which is what a batch of
micrographs of similar size needs; `quiet` silences everything but errors.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts finished items of `total` and prints one line per item."""

    def __init__(self, total: int, what: str = "image", quiet: bool = False, stream: TextIO | None = None,
                 clock=time.perf_counter) -> None:
        self.total, self.what, self.quiet = total, what, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start = clock()
        self.done = 0

    def eta(self) -> float | None:
        """Seconds left, or None before the first item is finished."""
        if not self.done:
            return None
        return (self.clock() - self.start) / self.done * (self.total - self.done)

    def step(self, message: str) -> None:
        self.done += 1
        if self.quiet:
            return
        elapsed = self.clock() - self.start
        eta = self.eta()
        left = f", ETA {format_seconds(eta)}" if eta is not None and self.done < self.total else ""
        print(f"[{self.done}/{self.total} {self.what}s, {format_seconds(elapsed)} elapsed{left}] {message}",
              file=self.stream, flush=True)
