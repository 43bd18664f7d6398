"""Writing many small runs (one per image sample) quickly, with the fewest tracking calls.

Each run is one `create_run` (with its name and all its tags), one `log_batch` (all its metrics
and params) and one `set_terminated`. The naive `with mlflow.start_run(): log_metrics(...);
set_tags(...)` makes more calls per run, and against a tracking server also fetches every run
back to print a link to it. Against a server the runs are written from a bounded pool of
threads, as each call mostly waits on the network and the server's workers; a store this
process opens itself (SQLite) takes one writer at a time, so there they are written one after
the other, retrying while another process holds the database lock.

A run whose writing fails is marked FAILED, never left RUNNING; the first failure stops the
writing (runs already being written are finished) and is raised to the caller.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.tracking.console import Progress, quiet_run_links
from steps.tracking.store_check import unreachable_server

_logger = logging.getLogger(__name__)

SERVER_SCHEMES = ("http", "https")
# Enough requests in flight to keep a server's workers busy, few enough not to swamp it.
SERVER_WORKERS = 8
# Pauses before trying a call again while a SQLite store is locked (past its own 20 s wait).
LOCKED_PAUSES_SECONDS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Errors a second try can mend: SQLite's lock, and a server's answer cut off by its restart.
TRANSIENT_ERRORS = ("database is locked", "Connection broken", "IncompleteRead",
                    "RemoteDisconnected")

T = TypeVar("T")


class FencedOut(Exception):
    """A partition's try found, about to write a run, that a newer try had taken it over."""


@dataclass
class SampleRun:
    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def writer_threads(tracking_uri: str, workers: int | None = None) -> int:
    """Threads to write with: a bounded pool against a server (`workers`, 8 by default); one
    into a store this process opens, as SQLite takes a single writer at a time."""
    if urllib.parse.urlparse(tracking_uri).scheme not in SERVER_SCHEMES:
        return 1
    return max(1, workers or SERVER_WORKERS)


class SampleRunWriter:
    """Writes sample runs into one experiment, through `client` (the current tracking URI's)."""

    def __init__(self, experiment_id: str, client: MlflowClient | None = None,
                 workers: int | None = None,
                 may_write: Callable[[], bool] | None = None) -> None:
        self.experiment_id = experiment_id
        self.client = client or MlflowClient()
        self.workers = writer_threads(self.client.tracking_uri, workers)
        #: Asked right before each run is created, on a cluster: False once a newer try of
        #: the partition took it over (FencedOut raised, the run not written).
        self.may_write = may_write

    def write(self, sample: SampleRun) -> str:
        """Write one run; returns its ID."""
        with quiet_run_links():
            return self._write(sample)

    def write_all(self, samples: list[SampleRun], label: str) -> list[str]:
        """Write every run; returns their IDs in the order of `samples`. Progress goes to stderr."""
        with Progress(len(samples), label) as progress:
            return self.write_batch(samples, progress.advanced)

    def write_batch(self, samples: list[SampleRun],
                    on_written: Callable[[str], object] = lambda run_id: run_id) -> list[str]:
        """Write the runs (from the pool of threads against a server); returns their IDs in the
        order of `samples`, calling `on_written(run_id)` as each is written."""
        with quiet_run_links():
            if self.workers == 1:
                return [self._written(self._write(sample), on_written) for sample in samples]
            return self._write_pooled(samples, on_written)

    @staticmethod
    def _written(run_id: str, on_written: Callable[[str], object]) -> str:
        on_written(run_id)
        return run_id

    def _write_pooled(self, samples: list[SampleRun],
                      on_written: Callable[[str], object]) -> list[str]:
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sample-runs")
        try:
            futures = [pool.submit(self._write, sample) for sample in samples]
            for future in as_completed(futures):
                on_written(future.result())
        finally:
            # On the first failure: drop the runs not started, let the others end, then raise.
            pool.shutdown(wait=True, cancel_futures=True)
        return [future.result() for future in futures]

    def _write(self, sample: SampleRun) -> str:
        if self.may_write is not None and not self.may_write():
            raise FencedOut(sample.name)
        now = int(time.time() * 1000)
        run = retry_locked(self.client.create_run, self.experiment_id, start_time=now,
                           tags=sample.tags, run_name=sample.name)
        run_id = run.info.run_id
        try:
            retry_locked(self.client.log_batch, run_id,
                         metrics=[Metric(k, v, now, 0) for k, v in sample.metrics.items()],
                         params=[Param(k, str(v)) for k, v in sample.params.items()])
            retry_locked(self.client.set_terminated, run_id)
        except BaseException as error:
            if not unreachable_server(error):  # else the next start settles it
                self._mark_failed(run_id)
            raise
        return run_id

    def _mark_failed(self, run_id: str) -> None:
        """End the run FAILED; a failure to do so is one logged line, the write's own error
        raised."""
        try:
            retry_locked(self.client.set_terminated, run_id, RunStatus.to_string(RunStatus.FAILED))
        except Exception as error:
            _logger.warning("Could not mark run %s FAILED: %s", run_id,
                            str(error).strip().splitlines()[0][:200])


def retry_locked(call: Callable[..., T], *args, **kwargs) -> T:
    """`call`, tried again after a growing pause while another writer locks a SQLite store, or
    when a tracking server went away in the middle of its answer (a restart; MLflow's own
    retries then cover the time it is down).

    A locked store rolls the call's transaction back, so trying again writes nothing twice; a
    `create_run` whose answer was lost leaves its first run RUNNING, which the step deletes
    when it finishes (`runs.step_run`).
    """
    for pause in LOCKED_PAUSES_SECONDS:
        try:
            return call(*args, **kwargs)
        except MlflowException as error:
            if not any(words in str(error) for words in TRANSIENT_ERRORS):
                raise
            _logger.warning("Tracking store busy or restarting (%s); trying again in %.2f s",
                            str(error).strip().splitlines()[0][:120], pause)
            time.sleep(pause)
    return call(*args, **kwargs)


def write_partition(index: int, samples: list[SampleRun], *, settings, version: str,
                    experiment_id: str, parent_id: str, attempt: str,
                    stop_event: str | None = None) -> list[str]:
    """On a Dask worker: write one partition of a step's sample runs, under `parent_id`; returns
    their run IDs in the order of `samples`.

    Safe to run again after a try that died part-way: its FINISHED runs are kept, any other run
    of the partition (left RUNNING by a dead worker, or FAILED) is ended KILLED and
    soft-deleted, and only the missing samples are written. `settings`: the step's
    `TrackingSettings`, applied while it runs; `version`: the step's code version; `attempt`:
    the step's attempt token, checked before each batch (`cluster.partition_guard`).
    """
    from steps.tracking.cluster import partition_client

    with partition_client(settings, version) as client:
        return write_partition_runs(index, samples, client, experiment_id, parent_id, attempt,
                                    stop_event)


def write_partition_runs(index: int, samples: list[SampleRun], client: MlflowClient,
                         experiment_id: str, parent_id: str, attempt: str,
                         stop_event: str | None) -> list[str]:
    from steps.store_names import ATTEMPT_TAG, IMAGE_ID_TAG, PARTITION_TAG, WORKER_TAG
    from steps.tracking.cluster import partition_guard, worker_name
    from steps.tracking.lifecycle import settle_earlier_runs

    kept = {image_id: run.info.run_id for image_id, run
            in settle_earlier_runs(client, experiment_id, parent_id, index).items()}
    # As many runs at a time as the writer has threads (a pool against a server, as the step's
    # own process writes), checking between batches whether the step has stopped.
    guard = partition_guard(client, stop_event, parent_id, attempt, index)
    writer = SampleRunWriter(experiment_id, client, may_write=guard.claimed)
    extra = {PARTITION_TAG: str(index), WORKER_TAG: worker_name(), ATTEMPT_TAG: attempt}
    missing = [SampleRun(s.name, s.metrics, {**s.tags, **extra}, s.params) for s in samples
               if s.tags[IMAGE_ID_TAG] not in kept]
    for start in range(0, len(missing), writer.workers):
        if guard.stopped():
            return []  # the step is failing, or this try is fenced out: a quiet end
        batch = missing[start:start + writer.workers]
        try:
            written = writer.write_batch(batch)
        except FencedOut:
            return []
        for sample, run_id in zip(batch, written):
            kept[sample.tags[IMAGE_ID_TAG]] = run_id
    return [kept[sample.tags[IMAGE_ID_TAG]] for sample in samples]
