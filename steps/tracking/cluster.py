"""A step's work across a Dask cluster (`-P cluster=`): partitions written by the workers straight
into the tracking store, under the step's run, none lost or doubled when a worker dies.

- `cluster` is empty (the step's own process, as without Dask), `local:N` (a Dask LocalCluster of
  N worker processes on this machine, started and stopped by the step) or `tcp://host:port` (a
  running Dask scheduler: Kubernetes, HPC, ...). The dashboard's address is printed.
- The workers need the tracking store and the artifact store: with a remote cluster a SQLite
  file, a local path or a store URI that only this machine can reach is refused before any work.
- The step's work is cut into partitions of at most PARTITION_SIZE items; Dask retries a
  partition whose worker died (PARTITION_RETRIES). A partition first looks up what an earlier
  try already wrote (its runs are tagged with the step run and the partition): it keeps the
  FINISHED runs, ends any other KILLED and soft-deletes it, and writes only the missing ones,
  each tagged with the worker that wrote it.
- The project's `steps` package goes to the workers with `Client.upload_file`, so a cluster needs
  only the environment (conda.yaml / requirements.txt), not this checkout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import click

from steps.tracking.store_check import SERVER_SCHEMES, local_path, scheme_of

#: Most samples per partition: small enough that a dead worker costs little and the progress
#: moves, large enough that the scheduler's overhead per task stays small.
PARTITION_SIZE = 50
#: Most images per partition of a saliency step: a map costs far more than a sample run.
MAP_PARTITION_SIZE = 5
#: Tries of a partition after its worker died or it failed.
PARTITION_RETRIES = 3
#: How long a step waits for a remote scheduler to answer.
CONNECT_TIMEOUT_SECONDS = 30
#: How long an interrupted step waits for the partitions under way to stop writing.
CANCEL_WAIT_SECONDS = 30
#: How often the step looks at its partitions' futures.
POLL_SECONDS = 0.1
#: Each local worker is a whole Python process: a few per core keep the cores busy while others
#: wait on a tracking server; more only add memory and store contention.
LOCAL_WORKERS_PER_CORE = 4
CLUSTER_PATTERN = re.compile(r"^(local:(?P<workers>[1-9][0-9]*)|(?P<address>tcp://[^\s]+:[0-9]+))$")
PROJECT_PACKAGE = Path(__file__).resolve().parents[1]


class ClusterError(click.ClickException):
    """The cluster cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where a step's partitions run: `workers` local processes, or a scheduler's `address`."""

    workers: int | None = None
    address: str | None = None

    @classmethod
    def parse(cls, text: str) -> ClusterSpec | None:
        """None for an empty value (no cluster); raises ValueError for a malformed one."""
        text = (text or "").strip()
        if not text:
            return None
        match = CLUSTER_PATTERN.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a cluster: give local:N (N worker processes on "
                             "this machine) or tcp://host:port (a running Dask scheduler)")
        if match["workers"]:
            workers, most = int(match["workers"]), LOCAL_WORKERS_PER_CORE * (os.cpu_count() or 1)
            if workers > most:
                raise ValueError(f"{text} would start {workers} worker processes on this "
                                 f"machine's {os.cpu_count() or 1} CPU cores; use at most {most}")
            return cls(workers=workers)
        return cls(address=match["address"])

    @property
    def remote(self) -> bool:
        return self.address is not None

    def __str__(self) -> str:
        return self.address or f"local:{self.workers}"


def check_reachable_store(spec: ClusterSpec, tracking_uri: str) -> None:
    """A remote cluster's workers must reach the tracking store: not a file of this machine."""
    if not spec.remote:
        return
    scheme = scheme_of(tracking_uri)
    if scheme == "sqlite" or local_path(tracking_uri) is not None:
        raise ClusterError(
            f"the workers of the Dask cluster {spec} cannot write into the tracking store "
            f"{tracking_uri}, a file on this machine. Use a tracking server with proxied "
            "artifacts (mlflow server --artifacts-destination ...), e.g. "
            "MLFLOW_TRACKING_URI=http://host:5000, or use -P cluster=local:N")
    if scheme not in SERVER_SCHEMES:
        raise ClusterError(
            f"the workers of the Dask cluster {spec} would write artifacts to this store's "
            f"local artifact location; use a tracking server with proxied artifacts "
            f"(mlflow server --backend-store-uri {tracking_uri} --artifacts-destination ...) "
            "and MLFLOW_TRACKING_URI=http://host:5000")


def _project_zip() -> bytes:
    """The `steps` package as a zip, for `Client.upload_file`."""
    buffer = io.BytesIO()
    sources = sorted(PROJECT_PACKAGE.rglob("*.py"))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sources:
            archive.write(path, path.relative_to(PROJECT_PACKAGE.parent).as_posix())
        # Python 3.11 imports no namespace package from a zip: each directory gets an
        # `__init__.py`.
        for directory in sorted({path.parent for path in sources}):
            if not (directory / "__init__.py").exists():
                archive.writestr(
                    (directory / "__init__.py").relative_to(PROJECT_PACKAGE.parent).as_posix(), "")
    return buffer.getvalue()


@contextlib.contextmanager
def dask_client(spec: ClusterSpec, scratch: Path) -> Iterator:
    """A `distributed.Client` on the cluster (a LocalCluster started and stopped here for
    `local:N`), with this project's code on its workers."""
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if spec.remote:
            try:
                client = stack.enter_context(Client(spec.address,
                                                    timeout=CONNECT_TIMEOUT_SECONDS))
            except OSError as error:
                raise ClusterError(f"cannot reach the Dask scheduler {spec.address}: "
                                   f"{str(error).splitlines()[0]}") from None
            package = scratch / "saliency_flow_steps.zip"
            package.write_bytes(_project_zip())
            client.upload_file(str(package))  # onto sys.path of the scheduler and workers
        else:
            # Its worker processes share the step's process group, so Ctrl-C at a terminal
            # reaches them too: they ignore it (the disposition is inherited) and are stopped
            # by the step, which ends its runs first.
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=spec.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR))
            finally:
                signal.signal(signal.SIGINT, handler)
            client = stack.enter_context(Client(cluster))
        click.echo(f"Dask cluster {spec}: {len(client.scheduler_info()['workers'])} workers, "
                   f"dashboard {client.dashboard_link}", err=True)
        yield client


def partitions(items: Sequence, size: int = PARTITION_SIZE) -> list[tuple[int, list]]:
    """(index, items) of consecutive slices of at most `size` items."""
    return [(start // size, list(items[start:start + size]))
            for start in range(0, len(items), size)]


def run_partitions(client, task: Callable, items: Sequence, on_done: Callable,
                   most: int = PARTITION_SIZE, **arguments) -> list:
    """`task(index, part, stop_event=<name>, **arguments)` for every partition of `items` on
    the cluster; `on_done(result)` as each finishes. Returns the results in partition order.

    A partition holds at most `most` items, and fewer when there are few: every worker gets
    at least two partitions to work on where the items allow.

    On any error or interruption the step sets the stop event, which each partition checks
    before each write (`stop_check`), and waits for the partitions to end, so that nothing
    writes after the step has ended its runs. (Cancelling a Dask future does not stop a task
    already running.)"""
    from distributed import Event

    workers = max(1, len(client.scheduler_info()["workers"]))
    size = max(1, min(most, -(-len(items) // (2 * workers))))
    stop = Event(f"saliency-flow-stop-{uuid.uuid4().hex}", client=client)
    futures = [client.submit(task, index, part, stop_event=stop.name, **arguments,
                             retries=PARTITION_RETRIES, pure=False)
               for index, part in partitions(items, size)]
    try:
        _each_as_done(futures, on_done)
    except BaseException:
        with contextlib.suppress(Exception):
            stop.set()
            _wait_while_workers(client, futures)
        raise
    return [future.result() for future in futures]


def _each_as_done(futures: list, on_done: Callable) -> None:
    """`on_done(result)` for each future as it finishes. It waits in this module, not inside a
    Dask call, so that a signal interrupts the wait at once (see lifecycle's
    UNINTERRUPTIBLE_CODE)."""
    pending = list(futures)
    while pending:
        finished = [future for future in pending if future.done()]
        for future in finished:
            pending.remove(future)
            on_done(future.result())
        if not finished:
            time.sleep(POLL_SECONDS)


def _wait_while_workers(client, futures: list) -> None:
    """Wait for the partitions to end, while the cluster still has workers to end them (a
    signal to the whole process group may have stopped a LocalCluster's), at most
    CANCEL_WAIT_SECONDS."""
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while (not all(future.done() for future in futures) and time.monotonic() < deadline
           and client.scheduler_info().get("workers")):
        time.sleep(POLL_SECONDS)


def stop_check(event_name: str | None) -> Callable[[], bool]:
    """On a worker: a test of whether the step that submitted this partition has stopped."""
    if not event_name:
        return lambda: False
    from distributed import Event

    return Event(event_name).is_set


def worker_name() -> str:
    """The Dask worker this code runs on (its address), or '' outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return ""
