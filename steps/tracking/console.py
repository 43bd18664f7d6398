"""What a long step shows on the console: a progress bar with rate and ETA, and not MLflow's
"View run" lines for each of the many small runs it ends."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO, TypeVar

from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

T = TypeVar("T")


@contextlib.contextmanager
def quiet_run_links():
    """No "🏃 View run ... at: ..." and "🧪 View experiment at: ..." lines for each run ended.

    MLflow writes them straight to stdout, not through a logger, when `set_terminated` ends a
    run in a tracking server, after fetching the run back; its public switch is this environment
    variable, which also saves that request. It is set only inside this block, around the many
    small runs.
    """
    previous = MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get_raw()
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.set("true")
    try:
        yield
    finally:
        if previous is None:
            MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.unset()
        else:
            MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.set(previous)


class Progress:
    """Count, rate and ETA: a bar redrawn in place on a terminal, a few plain lines elsewhere.

    Elsewhere (a log file, CI, a pipe) a line is written at each quarter of the way, and at
    least every `log_seconds`, rather than one per item. `unit` names the items counted.
    """

    BAR_WIDTH = 30
    REDRAW_SECONDS = 0.1

    def __init__(self, total: int, label: str, file: TextIO | None = None,
                 log_seconds: float = 30.0, unit: str = "runs", done: int = 0) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.file = file or sys.stderr
        self.tty = self.file.isatty()
        self.log_seconds = log_seconds
        #: Items counted, `done` of them before this process (of a resumed step), which the rate
        #: leaves out.
        self.done = self.before = done
        self.started = self.shown_at = time.monotonic()
        self.shown_quarter = 4 * done // total if total else 0

    def __enter__(self) -> Progress:
        if self.tty and self.total:
            self._show()
        return self

    def __exit__(self, *exc) -> None:
        if self.tty and self.total:
            self.file.write("\n")
            self.file.flush()

    def advanced(self, item: T, count: int = 1) -> T:
        """Count `count` more items done (`item` returned as is), showing progress when due."""
        self.done += count
        now = time.monotonic()
        quarter = 4 * self.done // self.total
        if self.done == self.total or self._due(now, quarter):
            self.shown_at, self.shown_quarter = now, quarter
            self._show()
        return item

    def _due(self, now: float, quarter: int) -> bool:
        if self.tty:
            return now - self.shown_at >= self.REDRAW_SECONDS
        return quarter > self.shown_quarter or now - self.shown_at >= self.log_seconds

    def status(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.before) / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate else None
        eta = "done" if self.done == self.total else f"ETA {_duration(remaining)}"
        return (f"{self.done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  {eta}  "
                f"elapsed {_duration(elapsed)}")

    def _show(self) -> None:
        if self.tty:
            filled = self.BAR_WIDTH * self.done // self.total
            bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
            self.file.write(f"\r{self.label}  [{bar}]  {self.status()}\x1b[K")
        else:
            self.file.write(f"{self.label}: {self.status()}\n")
        self.file.flush()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
