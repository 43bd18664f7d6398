"""BLAS threads for the model's work, chosen by the kind of work (threadpoolctl).

OpenBLAS starts a thread per core, and its threads wait for each other at every product: on
small products a second thread costs far more than it gains, above all while the other core is
busy (figures: benchmarks/README.md, "BLAS threads"; `benchmarks/blas_benchmark.py` measures
both kinds of work on 1 and 2 cores):

- `SMALL_BATCHES`: many `predict_proba` calls of one batch each (saliency maps, their metrics):
  one thread;
- `ONE_PREDICTION`: one `predict_proba` on a whole split (the evaluation): one thread per usable
  core from `MANY_VALUES` input values, one thread below (two threads were measured faster on
  large splits, slower on small ones).

    with blas_threads(ONE_PREDICTION, images.size):
        confidences = model.predict_proba(images)

`FastSaliency` and `ImageClassifier` limit themselves (`SMALL_BATCHES`). Set
`SALIENCY_FLOW_BLAS_THREADS` to a number to use that many threads for every kind instead.
Nothing here knows about MLflow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

from threadpoolctl import ThreadpoolController

SMALL_BATCHES = "small batches"
ONE_PREDICTION = "one prediction"
KINDS = (SMALL_BATCHES, ONE_PREDICTION)

BLAS_THREADS_ENV = "SALIENCY_FLOW_BLAS_THREADS"
#: Input values from which one prediction uses every usable core.
MANY_VALUES = 2**22

_controller: ThreadpoolController | None = None
_modules_seen = 0
#: The count the innermost `blas_threads` block of this thread set.
_current = threading.local()


def usable_cores() -> int:
    """The cores this process may run on (`taskset` counts)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_for(kind: str, values: int = 0) -> int:
    """BLAS threads for a kind of work on `values` input values: `SALIENCY_FLOW_BLAS_THREADS` if
    set, else one thread per usable core for one prediction of `MANY_VALUES` or more, one
    thread otherwise."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    forced = os.environ.get(BLAS_THREADS_ENV, "").strip()
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise ValueError(f"{BLAS_THREADS_ENV} must be a whole number of threads, at least 1, "
                             f"not {forced!r}")
        return int(forced)
    return usable_cores() if kind == ONE_PREDICTION and values >= MANY_VALUES else 1


def controller() -> ThreadpoolController:
    """The loaded BLAS libraries, found again only after modules were imported (finding them
    takes milliseconds; limiting them then takes microseconds)."""
    global _controller, _modules_seen
    if _controller is None or len(sys.modules) != _modules_seen:
        _controller = ThreadpoolController()
        _modules_seen = len(sys.modules)
    return _controller


def current_threads() -> int | None:
    """The thread count of the innermost `blas_threads` block of this thread, if any: what a
    runtime with its own thread pool (onnxruntime) should use too."""
    return getattr(_current, "threads", None)


@contextlib.contextmanager
def blas_threads(kind: str, values: int = 0) -> Iterator[int]:
    """Run the block with the BLAS thread count for `kind` of work on `values` input values
    (`threads_for`); yields it.

    Inside a block that already set that count (an engine's map, then its classifier's
    batches), nothing is done again."""
    threads = threads_for(kind, values)
    if getattr(_current, "threads", None) == threads:
        yield threads
        return
    outer = getattr(_current, "threads", None)
    _current.threads = threads
    try:
        with controller().limit(limits=threads, user_api="blas"):
            yield threads
    finally:
        _current.threads = outer
