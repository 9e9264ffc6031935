"""A one-line progress bar on stderr (a redrawn line on a terminal, a line every 10% otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, *, already: int = 0, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.already = total, already
        self.done = self.errors = self.unscored = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def update(self, status: str) -> None:
        self.done += 1
        self.errors += status == "error"
        self.unscored += status == "unscored"
        if not self.enabled:
            return
        decile = self.done * 10 // self.total
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif decile != self._last_decile or self.done == self.total:
            self._last_decile = decile
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self, width: int = 28) -> str:
        filled = width * self.done // max(self.total, 1)
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        resumed = f" (+{self.already} from earlier runs)" if self.already else ""
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}{resumed} "
            f"errors={self.errors} unscored={self.unscored} {_clock(elapsed)} elapsed, ~{_clock(eta)} left "
        )

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"
