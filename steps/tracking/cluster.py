"""A step's work across a Dask cluster (`-P cluster=`): partitions written by the workers straight
into the tracking store, under the step's run, none lost or doubled when a worker dies.

- `cluster` is empty (the step's own process, as without Dask), `local:N` (a Dask LocalCluster of
  N worker processes on this machine, started and stopped by the step) or `tcp://host:port` (a
  running Dask scheduler: Kubernetes, HPC, ...). The dashboard's address is printed.
- The workers need the tracking store and the artifact store: with a remote cluster a SQLite
  file, a local path or a store URI that only this machine can reach is refused before any work.
- The step's work is cut into partitions of at most PARTITION_SIZE items. Dask tries a
  partition again in two ways: after an exception in it, up to PARTITION_RETRIES times (the
  task's `retries`), and after its worker died, until the scheduler's `allowed-failures`
  (WORKER_DEATHS for the LocalCluster the step starts; a remote scheduler's own setting). A partition first looks up what an earlier
  try already wrote (its runs are tagged with the step run and the partition): it keeps the
  FINISHED runs, ends any other KILLED and soft-deletes it, and writes only the missing ones,
  each tagged with the worker that wrote it.
- The right code on every worker: before any partition, a task on each worker reports the code
  version it imports (`worker_code.imported_version`). Where one differs, the step installs the
  project's wheel, built from this checkout with the code version in its version
  (`steps/core/wheel.py`), on every worker (`worker_code.InstallProject`, a worker plugin the
  step unregisters when it ends) and asks again; a worker still on another version stops the
  step with one line naming both. With SALIENCY_FLOW_SHIP_CODE=0 nothing is installed: the
  workers' image must hold this very version. `local:N` workers import this checkout.
- Tracking settings travel in memory: the tracking URI, credentials and the HTTP retry settings
  this process uses go to each task as a `TrackingSettings` argument (its repr names no value),
  which the task sets in its worker's environment while it runs. Before any partition a task on
  each worker reads the step run and writes a file into its artifacts, which the step reads
  back: a worker that cannot reach the tracking server or the artifact store stops the
  step with one line naming the worker and the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import click

from steps.core.code_version import code_version, running_code_version
from steps.store_names import ATTEMPT_TAG, WORKERS_DIR
from steps.tracking.store_check import (_RETRY_SETTINGS, SERVER_SCHEMES, first_line,
                                        local_path, scheme_of)

#: Most samples per partition: small enough that a dead worker costs little and the progress
#: moves, large enough that the scheduler's overhead per task stays small.
PARTITION_SIZE = 50
#: Most images per partition of a saliency step: a map costs far more than a sample run.
MAP_PARTITION_SIZE = 5
#: Tries of a partition after its worker died or it failed.
PARTITION_RETRIES = 3
#: Worker deaths a partition survives before the step fails (`allowed-failures`, Dask's
#: default): a partition that kills its worker again and again, by memory say, stops the step.
WORKER_DEATHS = 3
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
#: `0` when the workers' image holds the project's code: the step installs nothing on them.
SHIP_CODE_ENV = "SALIENCY_FLOW_SHIP_CODE"
#: What a step's tasks need of its environment to write where it writes, as it writes.
FORWARDED_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                      "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                      "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                      "MLFLOW_TRACKING_CLIENT_CERT_PATH", *_RETRY_SETTINGS,
                      "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")


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


class TrackingSettings:
    """The tracking settings of the step's process, handed to its tasks in memory. Its repr
    names the settings, never their values: a Dask log of a failed task shows no secret."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    @classmethod
    def current(cls) -> TrackingSettings:
        import mlflow

        values = {name: os.environ[name] for name in FORWARDED_SETTINGS if name in os.environ}
        return cls({**values, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()})

    @property
    def uri(self) -> str:
        return self._values["MLFLOW_TRACKING_URI"]

    def without(self, *names: str) -> TrackingSettings:
        return TrackingSettings({k: v for k, v in self._values.items() if k not in names})

    def __repr__(self) -> str:
        return f"TrackingSettings({', '.join(sorted(self._values))})"

    __str__ = __repr__

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """These settings in this process's environment (where MLflow reads them) while the
        block runs, the ones they replace put back once no task of a step uses them (a worker
        with several threads runs several partitions of one step at once)."""
        import mlflow

        with _APPLIED_LOCK:
            if not _APPLIED:
                _APPLIED.append({name: os.environ.get(name) for name in FORWARDED_SETTINGS})
            _APPLIED.append(None)
            for name in FORWARDED_SETTINGS:
                if name in self._values:
                    os.environ[name] = self._values[name]
                else:
                    os.environ.pop(name, None)
            mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            with _APPLIED_LOCK:
                _APPLIED.pop()
                if len(_APPLIED) == 1:
                    for name, value in _APPLIED.pop().items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value


_APPLIED_LOCK = threading.Lock()
#: The environment before the first task applied its settings, then one entry per task.
_APPLIED: list = []


def require_code_version(version: str) -> None:
    """In a partition: stop, in one line, when this worker imports another code version than
    the step's (a worker that joined after the preflight and could not install it)."""
    here = running_code_version()
    if here != version:
        raise ClusterError(f"Dask worker {worker_name()} runs saliency-flow code version "
                           f"{here}, the step {version}")


@contextlib.contextmanager
def partition_client(settings: TrackingSettings, version: str) -> Iterator:
    """In a partition's task: this worker checked to import the step's code `version`
    (`require_code_version`), then the step's tracking `settings` applied while the block
    runs; yields an `MlflowClient` of its tracking URI."""
    from mlflow.tracking import MlflowClient

    require_code_version(version)
    with settings.applied():
        yield MlflowClient(settings.uri)


def _version_mismatch(versions: Mapping[str, str], version: str, remedy: str) -> ClusterError:
    address, theirs = sorted(versions.items())[0]
    others = f" (and {len(versions) - 1} other workers)" if len(versions) > 1 else ""
    return ClusterError(f"Dask worker {address}{others} runs saliency-flow code version "
                        f"{theirs}, this step {version}: {remedy}")


def _stale_workers(client, version: str) -> dict[str, str]:
    from steps.tracking import worker_code

    return {address: theirs for address, theirs
            in client.run(worker_code.imported_version).items() if theirs != version}


@contextlib.contextmanager
def project_code(client, version: str) -> Iterator[None]:
    """Every worker imports code version `version`, installed from the project's wheel where
    it did not (`worker_code.InstallProject`, unregistered when the block ends), or
    ClusterError naming a worker that does not."""
    import cloudpickle

    from steps.core.wheel import build_wheel, wheel_name
    from steps.tracking import worker_code

    # Sent whole: a worker without this project's code (or with another version) runs it.
    cloudpickle.register_pickle_by_value(worker_code)
    stale = _stale_workers(client, version)
    if not stale:
        yield
        return
    if os.environ.get(SHIP_CODE_ENV, "1") == "0":
        raise _version_mismatch(stale, version, f"install this checkout's code in the "
                                                f"workers' image, or unset {SHIP_CODE_ENV}")
    name = f"saliency-flow-code-{uuid.uuid4().hex}"
    try:
        client.register_plugin(worker_code.InstallProject(
            wheel_name(version), build_wheel(version), version), name=name)
    except Exception as error:
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)
        raise ClusterError(f"could not install this project's code ({wheel_name(version)}) "
                           f"on the Dask workers: {first_line(str(error))}") from None
    try:
        stale = _stale_workers(client, version)
        if stale:
            raise _version_mismatch(stale, version, "its own `steps` package comes first")
        click.echo(f"Installed {wheel_name(version)} on {len(client.scheduler_info()['workers'])}"
                   " Dask workers", err=True)
        yield
    finally:
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)


def _artifact_name(address: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", address.removeprefix("tcp://"))


def check_worker_store(settings: TrackingSettings, run_id: str, nonce: str,
                       dask_worker=None) -> str | None:
    """On a worker (`Client.run` passes it as `dask_worker`): None once it has read the step
    run and written a file into its artifacts; else why it could not, in one line."""
    from mlflow.tracking import MlflowClient

    from steps.tracking.store_check import TrackingStoreError, check_server

    with settings.applied():
        try:
            if scheme_of(settings.uri) in SERVER_SCHEMES:
                check_server(settings.uri, run_id)  # one request, no retries
            MlflowClient(settings.uri).log_text(run_id, nonce,
                            f"{WORKERS_DIR}/{_artifact_name(dask_worker.address)}.txt")
        except TrackingStoreError as error:
            return error.message
        except Exception as error:  # noqa: BLE001 - reported, one line
            return first_line(str(error))[:300]
    return None


def check_workers(client, run_id: str, settings: TrackingSettings) -> None:
    """ClusterError naming the first worker that cannot write into the step run, or whose
    artifact file the step cannot read back (it wrote somewhere only it sees)."""
    import mlflow

    nonce = uuid.uuid4().hex
    answers = client.run(check_worker_store, settings, run_id, nonce, on_error="return")
    for address, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            answer = first_line(str(answer))[:300]
        if answer is None:
            path = f"{WORKERS_DIR}/{_artifact_name(address)}.txt"
            try:
                seen = mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
            except Exception:  # noqa: BLE001 - the reason follows
                seen = ""
            if seen != nonce:
                answer = (f"the file it wrote into the step run's artifacts ({path}) is not in "
                          "the artifact store this step reads: use a tracking server with "
                          "proxied artifacts (mlflow server --artifacts-destination ...)")
        if answer is not None:
            raise ClusterError(f"Dask worker {address} cannot write into the tracking store "
                               f"{settings.uri}: {answer}")


@contextlib.contextmanager
def dask_client(spec: ClusterSpec, run_id: str, settings: TrackingSettings,
                prepare: Callable[[], object] | None = None) -> Iterator:
    """A `distributed.Client` on the cluster (a LocalCluster started and stopped here for
    `local:N`), every worker checked to run this project's code version (installed where it
    did not), to write into the step run `run_id` with `settings` and, with `prepare`, to
    load the step's model and images (`prepare_workers`)."""
    import dask
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if spec.remote:
            try:
                client = stack.enter_context(Client(spec.address,
                                                    timeout=CONNECT_TIMEOUT_SECONDS))
            except OSError as error:
                raise ClusterError(f"cannot reach the Dask scheduler {spec.address}: "
                                   f"{str(error).splitlines()[0]}") from None
        else:
            # Its worker processes share the step's process group, so Ctrl-C at a terminal
            # reaches them too: they ignore it (the disposition is inherited) and are stopped
            # by the step, which ends its runs first.
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
            stack.enter_context(dask.config.set(
                {"distributed.scheduler.allowed-failures": WORKER_DEATHS}))
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
        stack.enter_context(project_code(client, code_version()))
        check_workers(client, run_id, settings)
        if prepare is not None:
            prepare_workers(client, prepare, settings)
        yield client


def submit_pickled(client, function: Callable, args: tuple, kwargs: dict, **options):
    """`client.submit` of `function(*args, **kwargs)`, pickled for the worker only
    (`worker_code.partition_runner`)."""
    import cloudpickle

    from steps.tracking.worker_code import partition_runner

    return client.submit(partition_runner(), cloudpickle.dumps((function, args, kwargs)),
                         pure=False, **options)


def _prepared(prepare: Callable[[], object], settings: TrackingSettings) -> None:
    with settings.applied():
        prepare()


def prepare_workers(client, prepare: Callable[[], object], settings: TrackingSettings) -> None:
    """Before any partition: `prepare()` once on each worker, a task placed on it, which loads
    the step's model and reads its images into the worker's cache
    (`inputs.worker_model_inputs`), so that its partitions find them there; ClusterError
    naming the first worker that cannot (the images are not at the dataset's path there, or
    differ from the step's) and why."""
    futures = {address: submit_pickled(client, _prepared, (prepare, settings), {},
                                       workers=[address], allow_other_workers=True)
               for address in sorted(client.scheduler_info()["workers"])}
    _each_as_done(list(futures.values()), lambda _: None, raising=False)
    for address, future in futures.items():
        if future.status == "error":
            raise ClusterError(f"Dask worker {address} cannot load the model and the images: "
                               f"{first_line(str(future.exception()))}")


def partitions(items: Sequence, size: int = PARTITION_SIZE) -> list[tuple[int, list]]:
    """(index, items) of consecutive slices of at most `size` items."""
    return [(start // size, list(items[start:start + size]))
            for start in range(0, len(items), size)]


def start_attempt(run_id: str) -> tuple[str, int]:
    """A new attempt token on the step run `run_id`, which makes any earlier attempt's stale;
    the token and when it was set (ms)."""
    from mlflow.tracking import MlflowClient

    token, started = uuid.uuid4().hex, int(time.time() * 1000)
    MlflowClient().set_tag(run_id, ATTEMPT_TAG, token)
    return token, started


@dataclass
class PartitionGuard:
    """In a partition: whether this try may still write. `stopped()`, asked before each batch:
    the step stopped (its Dask event), a newer attempt of the step began (the step run's
    token is no longer this one's), or a newer try of this partition claimed it (a retry Dask
    started while this one, on a worker it gave up on, still ran). `claimed()`, asked right
    before each run is created: this try still holds the claim. A claim is a Dask Variable,
    set by each try as it starts: cheap to ask, and gone with the scheduler, when the check
    fails and the try stops. The token is a tag on the step run: it outlives a scheduler and
    is what a resumed step, maybe on another cluster, replaces."""

    client: object
    parent_id: str
    attempt: str
    event_stopped: Callable[[], bool]
    claim: object = None
    mine: str = ""

    def claimed(self) -> bool:
        if self.claim is None:
            return True
        try:
            return self.claim.get(timeout=CONNECT_TIMEOUT_SECONDS) == self.mine
        except Exception:  # noqa: BLE001 - no scheduler to ask: write nothing more
            return False

    def stopped(self) -> bool:
        if self.event_stopped() or not self.claimed():
            return True
        return self.client.get_run(self.parent_id).data.tags.get(ATTEMPT_TAG) != self.attempt


def partition_guard(client, stop_event: str | None, parent_id: str, attempt: str,
                    index: int) -> PartitionGuard:
    """This try's guard (`PartitionGuard`), its claim on partition `index` set."""
    from distributed import Variable

    guard = PartitionGuard(client, parent_id, attempt, stop_check(stop_event))
    if stop_event:
        guard.claim, guard.mine = Variable(f"{stop_event}-partition-{index}"), uuid.uuid4().hex
        guard.claim.set(guard.mine)
    return guard


def run_partitions(client, task: Callable, items: Sequence, on_done: Callable,
                   most: int = PARTITION_SIZE, *, parent_id: str, **arguments) -> list:
    """`task(index, part, stop_event=<name>, version=<code version>, parent_id=parent_id,
    attempt=<token>, **arguments)` for every partition of `items` on the cluster, under a new
    attempt of the step run `parent_id` (`start_attempt`); `on_done(result)` as each
    finishes. Returns the results (lists of run IDs, or of what has a `run_id`) in partition
    order, once any run a fenced-out try wrote anyway is dropped (`drop_stale_writes`).

    A partition holds at most `most` items, and fewer when there are few: every worker gets
    at least two partitions to work on where the items allow.

    On any error or interruption the step sets the stop event, which each partition checks
    before each write (`stop_check`), and waits for the partitions to end, so that nothing
    writes after the step has ended its runs. (Cancelling a Dask future does not stop a task
    already running.)"""
    from distributed import Event, Variable

    workers = max(1, len(client.scheduler_info()["workers"]))
    size = max(1, min(most, -(-len(items) // (2 * workers))))
    stop = Event(f"saliency-flow-stop-{uuid.uuid4().hex}", client=client)
    version = code_version()
    attempt, started = start_attempt(parent_id)
    parts = partitions(items, size)
    futures = [submit_pickled(client, task, (index, part), {
        "stop_event": stop.name, "version": version, "parent_id": parent_id,
        "attempt": attempt, **arguments}, retries=PARTITION_RETRIES) for index, part in parts]
    try:
        _each_as_done(futures, on_done)
    except BaseException:
        with contextlib.suppress(Exception):
            stop.set()
            _wait_while_workers(client, futures)
        raise
    finally:
        for index, _ in parts:
            with contextlib.suppress(Exception):
                Variable(f"{stop.name}-partition-{index}", client=client).delete()
    results = [future.result() for future in futures]
    from mlflow.tracking import MlflowClient

    from steps.tracking.lifecycle import drop_stale_writes

    tracking = MlflowClient()
    drop_stale_writes(tracking, tracking.get_run(parent_id).info.experiment_id, parent_id,
                      attempt, started, {getattr(one, "run_id", one)
                                         for result in results for one in result})
    return results


def _each_as_done(futures: list, on_done: Callable, raising: bool = True) -> None:
    """`on_done(result)` for each future as it finishes (`raising`: its error raised; else
    only waited for). It waits in this module, not inside a Dask call, so that a signal
    interrupts the wait at once (see lifecycle's UNINTERRUPTIBLE_CODE)."""
    pending = list(futures)
    while pending:
        finished = [future for future in pending if future.done()]
        for future in finished:
            pending.remove(future)
            if raising or future.status != "error":
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
