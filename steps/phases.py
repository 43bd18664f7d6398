"""Where a step's process spends its time, and a quick exit when it is done.

The process's start-up (interpreter, imports, the tracking-store check) lasts from its start
until the CLI body begins (`body_begins`, called by `options.run_cli`); the body then switches
between its phases (`enter`, or `with phase(...)`), and each phase's time adds up. The step run
logs them as `Duration_<phase>_s` metrics (`steps/tracking/runs.py`), so the MLflow UI shows
where a slow step spent its time. Standard library only: importable before anything else.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from steps.store_names import LOAD_PHASE, STARTUP_PHASE

#: When this module was first imported (`steps/__init__.py` imports it first): the process's
#: start where /proc does not say.
IMPORTED = time.perf_counter()


def process_age() -> float:
    """Seconds since this process started: from /proc (Linux; 10 ms ticks), else since this
    module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # Fields after the command name, which may hold spaces; start time is field 22.
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        age = -1.0
    return age if age >= 0 else time.perf_counter() - IMPORTED


class Phases:
    """Time spent in each phase of this process; one phase is current at any time."""

    def __init__(self) -> None:
        self._durations: dict[str, float] = {}
        self._current: str | None = None
        self._since = time.perf_counter()

    def enter(self, name: str | None) -> None:
        """End the current phase (its time adds up) and start `name` (None: none)."""
        now = time.perf_counter()
        if self._current is not None:
            self._durations[self._current] = (self._durations.get(self._current, 0.0)
                                              + now - self._since)
        self._current, self._since = name, now

    def begin_body(self) -> None:
        """Start-up ends now (it began with the process); loading begins."""
        self.enter(None)
        self._durations[STARTUP_PHASE] = process_age()
        self.enter(LOAD_PHASE)

    @contextlib.contextmanager
    def during(self, name: str) -> Iterator[None]:
        """Phase `name` for the block; the phase before it resumes after."""
        previous = self._current
        self.enter(name)
        try:
            yield
        finally:
            self.enter(previous)

    def durations(self) -> dict[str, float]:
        """Seconds per phase so far, the current one up to now."""
        self.enter(self._current)
        return dict(self._durations)


#: This process's phases.
PHASES = Phases()
body_begins = PHASES.begin_body
enter = PHASES.enter
phase = PHASES.during

Item = TypeVar("Item")


def produced_in(name: str, items: Iterable[Item]) -> Iterator[Item]:
    """`items` as they come, the time spent producing each (a generator's work) in phase
    `name` and the time the caller spends between them in its own."""
    iterator = iter(items)
    while True:
        with phase(name):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def quick_exit() -> None:
    """Make the interpreter's shutdown quick: flush the output, then freeze every object
    (`gc.freeze`) so the garbage collector's last pass, slow once MLflow is imported, skips them
    (figures: benchmarks/README.md, "Start-up and overhead"). Exit handlers still run and exit
    codes stay; what the last pass would have finalized is left to the operating system: an
    object in a reference cycle, e.g. a file never closed (the steps close theirs; their store
    writes are committed by then)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    gc.freeze()
