"""Every run ends: signals, lost parents, and runs whose process was killed outright.

- SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread (once: a second signal
  during the clean-up is noted, not raised), so every `with` block unwinds and the runs it opened
  end KILLED (FAILED for an error): `run_context` does that for each run.
- A step launched by the driver ends itself when the driver is gone, and the driver when the
  `mlflow run` that launched it is gone (`watch_parent`): no orphan keeps writing.
- A step run that does not finish hides what it wrote: its sample or map runs end KILLED and are
  soft-deleted (`mlflow runs restore` brings them back), so a query across the store never shows
  an unfinished step's results beside a finished one's (`hide_partial_results`).
- A process killed outright (SIGKILL, a lost machine) cannot clean up, so each step and driver run
  records its host, process ID and the process's start time; the next start on that host marks
  the runs of processes that no longer exist KILLED and hides their results
  (`reconcile_dead_runs`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import click
import mlflow
from mlflow.entities import LifecycleStage, RunStatus, ViewType
from mlflow.tracking import MlflowClient

from steps.tracking.store_check import launcher_pid, stop_retrying, unreachable_server
from steps.store_names import (ATTEMPT_TAG, ERROR_TAG, IMAGE_ID_TAG, INTERRUPTED_TAG, PARENT_RUN_TAG,
                         PARTITION_TAG, PROCESS_HOST_TAG, RUN_NAME_TAG, PROCESS_ID_TAG, PROCESS_START_TAG,
                         RESULTS_DELETED_TAG)

#: Set by the driver for the steps it launches: its process ID.
DRIVER_PID_ENV = "SALIENCY_FLOW_DRIVER_PID"
HANDLED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
WATCH_SECONDS = 1.0
#: How long a run's settler waits for `mlflow run` to exit before giving up.
SETTLE_WAIT_SECONDS = 60.0
KILLED = RunStatus.to_string(RunStatus.KILLED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
RUNNING = RunStatus.to_string(RunStatus.RUNNING)
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
#: Runs per search call: MLflow's largest page.
SEARCH_PAGE = 50000


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop; `signal_name` says which."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


_received: list[str] = []
#: Code that must not be interrupted halfway.
#: - The tracking store's database work: an exception raised inside a transaction can skip
#:   MLflow's rollback (it catches `Exception` only) and leave a connection holding SQLite's
#:   write lock, which the process's own clean-up then waits on in vain ("database is locked").
#: - Dask's client calls: `distributed.utils.sync` interrupted before its coroutine started
#:   logs a NameError traceback from its event loop.
UNINTERRUPTIBLE_CODE = ("/sqlalchemy/", "/mlflow/store/db/", "sqlalchemy_store.py",
                        "/distributed/")


def _outermost_uninterruptible_frame(frame):
    outermost = None
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in UNINTERRUPTIBLE_CODE):
            outermost = frame
        frame = frame.f_back
    return outermost


def _raise_on_return(frame, signal_name: str) -> None:
    """Raise `Interrupted` the moment `frame` returns (or unwinds), through a trace function on
    that frame alone: the store call completes, its caller sees the interruption at once."""
    previous = sys.gettrace()

    def on_return(traced, event, _arg):
        if event == "return" and traced is frame:
            sys.settrace(previous)
            raise Interrupted(signal_name)
        return on_return

    frame.f_trace_lines = False
    frame.f_trace = on_return
    # Frame tracing needs a global trace function; this one traces no new frame.
    sys.settrace(previous or (lambda *_: None))


def _handle(signum, frame) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    if len(_received) > 1:
        return
    uninterruptible = _outermost_uninterruptible_frame(frame)
    if uninterruptible is None:
        raise Interrupted(name)
    _raise_on_return(uninterruptible, name)


def install_signal_handlers() -> None:
    """Turn the stop signals into `Interrupted`, raised once in the main thread; inside the
    tracking store's database work or a Dask client call, as soon as that call returns."""
    for name in HANDLED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handle)


def interruption(error: BaseException) -> str | None:
    """The signal behind an exception (also when click wrapped it in `Abort`), if any."""
    while error is not None:
        if isinstance(error, Interrupted):
            return error.signal_name
        if isinstance(error, KeyboardInterrupt):
            return "SIGINT"
        error = error.__cause__ or error.__context__
    return None


def ended_status(error: BaseException | None) -> str:
    if error is None:
        return FINISHED
    return KILLED if interruption(error) else FAILED


# --- the process's identity, recorded on its runs -------------------------------------------

def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), `"alive"` where /proc is
    missing and the process exists, None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Fields after the command name, which may hold spaces; start time is field 22.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def process_tags() -> dict[str, str]:
    """This process's host, ID and start time: enough to tell later that it is gone."""
    pid = os.getpid()
    return {PROCESS_HOST_TAG: socket.gethostname(), PROCESS_ID_TAG: str(pid),
            PROCESS_START_TAG: process_start(pid) or ""}


def process_gone(tags: dict[str, str]) -> bool:
    """Whether the process recorded in a run's tags (on this host) no longer exists."""
    try:
        pid = int(tags[PROCESS_ID_TAG])
    except (KeyError, ValueError):
        return False
    started = process_start(pid)
    recorded = tags.get(PROCESS_START_TAG, "")
    return started is None or ("alive" not in (started, recorded) and started != recorded)


# --- runs --------------------------------------------------------------------------------------

@contextlib.contextmanager
def run_context(**start_run_kwargs) -> Iterator:
    """`mlflow.start_run(...)` that ends the run KILLED on a signal and FAILED on an error
    (MLflow's own context ends it FAILED either way), recording which on the run
    (`Interrupted_by` or `Error`). When the store is what failed, the error that stopped the
    work is raised, not the clean-up's; the next start settles the run."""
    failure = None
    try:
        with mlflow.start_run(**start_run_kwargs) as run:
            try:
                yield run
            except BaseException as error:
                failure = error
                note_failure(error)
                _failed_artifact_uris.append(run.info.artifact_uri)
                active = mlflow.active_run()
                if active is not None and active.info.run_id == run.info.run_id:
                    mlflow.set_tags(end_reason(error))
                    mlflow.end_run(ended_status(error))
                raise
    except Exception as cleanup_error:
        if failure is not None and cleanup_error is not failure:
            raise failure from None
        raise


_failed_artifact_uris: list[str] = []
#: How to resume the step run this process stopped, once there is one to resume.
_resume_hints: list[str] = []


def note_resume_hint(sentence: str) -> None:
    _resume_hints[:] = [sentence]


def resume_hint() -> str:
    """` <sentence>` giving the command that resumes the step run this process stopped, or ''
    when there is none."""
    return f" {_resume_hints[0]}" if _resume_hints else ""


def failed_artifact_uri() -> str | None:
    """Where the innermost run that failed in this process keeps its artifacts, if any failed."""
    return _failed_artifact_uris[0] if _failed_artifact_uris else None


def record_early_failure(error: BaseException, name: str | None = None) -> None:
    """Tag the run `mlflow run` started for this process with why it ended, when the process
    failed before taking the run over (e.g. on a bad parameter), so the driver can tell an error
    from a kill; `name` it unless the process named it already. Best effort: the store may be
    what failed."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    note_failure(error)
    try:
        client = MlflowClient()
        for key, value in end_reason(error).items():
            client.set_tag(run_id, key, value)
        if name and not client.get_run(run_id).data.tags.get(RUN_NAME_TAG, "").startswith(
                name.split(" ", 1)[0]):
            client.set_tag(run_id, RUN_NAME_TAG, name)
    except Exception:
        pass


def note_failure(error: BaseException) -> None:
    """After losing the tracking server, clean-up requests fail at once rather than each
    waiting out the retry budget again."""
    if unreachable_server(error):
        stop_retrying()


def end_reason(error: BaseException) -> dict[str, str]:
    signal_name = interruption(error)
    if signal_name:
        return {INTERRUPTED_TAG: signal_name}
    lines = str(error).strip().splitlines()
    return {ERROR_TAG: f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]}


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str,
               view: int = ViewType.ACTIVE_ONLY) -> list:
    """Every run the filter matches, page by page (a store answers at most SEARCH_PAGE a call)."""
    found, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, run_view_type=view,
                                  max_results=SEARCH_PAGE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def settle_earlier_runs(client: MlflowClient, experiment_id: str, parent_id: str,
                  partition: int | None = None, restore: bool = False) -> dict[str, object]:
    """Of the runs an earlier try wrote under the step run `parent_id` (of one `partition` of
    it, if given), one FINISHED run per `Image_id` (a soft-deleted one restored when
    `restore`); every other run is ended KILLED where still running and soft-deleted. Returns
    the kept runs by image ID."""
    scope = f"tags.`{PARENT_RUN_TAG}` = '{parent_id}'" + (
        f" AND tags.`{PARTITION_TAG}` = '{partition}'" if partition is not None else "")
    if partition is None:  # a resumed step
        fence_earlier_attempt(client, experiment_id, parent_id)
    kept: dict[str, object] = {}
    for run in search_all(client, [experiment_id], scope, ViewType.ALL):
        image_id = run.data.tags.get(IMAGE_ID_TAG, "")
        active = run.info.lifecycle_stage == LifecycleStage.ACTIVE
        if run.info.status == FINISHED and image_id not in kept and (active or restore):
            if not active:
                client.restore_run(run.info.run_id)
            kept[image_id] = run
            continue
        if run.info.status == RUNNING:
            client.set_terminated(run.info.run_id, KILLED)
        if active:
            client.delete_run(run.info.run_id)
    return kept


#: A resumed step waits until the runs of its earlier attempt have stayed unchanged this long...
STALE_ATTEMPT_QUIET_SECONDS = 5.0
#: ... or at most this long (a partition on a worker that hangs still stops at its next check).
STALE_ATTEMPT_WAIT_SECONDS = 60.0


def fence_earlier_attempt(client: MlflowClient, experiment_id: str, parent_id: str) -> None:
    """Before a resumed step settles what an earlier attempt wrote: make that attempt's token
    (on the step run) stale, so that its partitions still running on a cluster (Dask cannot
    stop a running task) write no further batch, then wait until its runs have stayed
    unchanged for STALE_ATTEMPT_QUIET_SECONDS (the batch under way ends), at most
    STALE_ATTEMPT_WAIT_SECONDS."""
    old = client.get_run(parent_id).data.tags.get(ATTEMPT_TAG)
    if old is None:
        return  # never on a cluster
    client.set_tag(parent_id, ATTEMPT_TAG, uuid.uuid4().hex)
    scope = f"tags.`{PARENT_RUN_TAG}` = '{parent_id}' AND tags.`{ATTEMPT_TAG}` = '{old}'"

    def state() -> set:
        return {(run.info.run_id, run.info.status, run.info.lifecycle_stage)
                for run in search_all(client, [experiment_id], scope, ViewType.ALL)}

    deadline = time.monotonic() + STALE_ATTEMPT_WAIT_SECONDS
    seen, quiet_since = state(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < \
            STALE_ATTEMPT_QUIET_SECONDS:
        time.sleep(0.5)
        now = state()
        if now != seen:
            seen, quiet_since = now, time.monotonic()


def drop_stale_writes(client: MlflowClient, experiment_id: str, parent_id: str, attempt: str,
                      started_ms: int, keep: set[str]) -> int:
    """After a step's partitions on a cluster: end KILLED and soft-delete what a fenced-out
    writer wrote anyway (a try Dask gave up on that still ran its last batch): runs of this
    `attempt` that are not in `keep`, and runs of another attempt made since this one
    started at `started_ms`. Returns how many."""
    dropped = 0
    for run in search_all(client, [experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_id}'"):
        written_by = run.data.tags.get(ATTEMPT_TAG)
        if written_by is None or run.info.run_id in keep or (
                written_by != attempt and run.info.start_time < started_ms):
            continue
        if run.info.status == RUNNING:
            client.set_terminated(run.info.run_id, KILLED)
        client.delete_run(run.info.run_id)
        dropped += 1
    return dropped


def hide_partial_results(run_id: str, client: MlflowClient | None = None,
                         running_only: bool = False) -> int:
    """End the child runs of an unfinished step run KILLED where still running, soft-delete
    them, and record how many on the step run; returns that count. `running_only`: only the
    children still RUNNING (of a step that finished: a write retried after a server lost its
    answer leaves the first try's run RUNNING). A resumed step brings the FINISHED ones back
    (`settle_earlier_runs`)."""
    client = client or MlflowClient()
    run = client.get_run(run_id)
    running = f" AND attributes.status = '{RUNNING}'" if running_only else ""
    children = search_all(client, [run.info.experiment_id],
                          f"tags.`{PARENT_RUN_TAG}` = '{run_id}'{running}")
    for child in children:
        if child.info.status == RUNNING:
            client.set_terminated(child.info.run_id, KILLED)
        client.delete_run(child.info.run_id)
    if children:
        deleted = int(run.data.tags.get(RESULTS_DELETED_TAG, "0")) + len(children)
        client.set_tag(run_id, RESULTS_DELETED_TAG, str(deleted))
    return len(children)


def settle(run_id: str, client: MlflowClient | None = None):
    """After the process of a run ended: its final status from what the process recorded,
    set if needed, and its results hidden unless it FINISHED. Returns the run as settled.

    KILLED when a signal stopped it, or when it recorded neither an interruption nor an error
    (its process was killed outright); FAILED on an error. `mlflow run` sets FAILED on a
    non-zero exit whatever the run's status, so KILLED is set again here.
    """
    client = client or MlflowClient()
    run = client.get_run(run_id)
    if run.info.status == FINISHED:
        return run
    status = FAILED if ERROR_TAG in run.data.tags else KILLED
    if run.info.status != status:
        client.set_terminated(run_id, status)
    hide_partial_results(run_id, client)
    return client.get_run(run_id)


def keep_killed_after_launcher(run_id: str | None) -> None:
    """Put KILLED back on the run `mlflow run` started for this process once `mlflow run` has
    exited: on a non-zero exit or its own Ctrl-C it marks its run FAILED whatever the run's
    status (it hands `RunStatus.is_terminated` a status name where a number is expected), after
    this process has ended the run KILLED. A detached settler waits for it, then sets KILLED
    again where the run records an interruption (`python -m steps.tracking.lifecycle`)."""
    launcher = launcher_pid(run_id) if run_id else None
    started = process_start(launcher) if launcher else None
    if not started:
        return
    subprocess.Popen([sys.executable, "-m", "steps.tracking.lifecycle", run_id, str(launcher),
                      started], cwd=Path(__file__).resolve().parents[2],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def _settle_after(run_id: str, launcher: int, started: str) -> None:
    deadline = time.monotonic() + SETTLE_WAIT_SECONDS
    while process_start(launcher) == started and time.monotonic() < deadline:
        time.sleep(0.05)
    client = MlflowClient()
    run = client.get_run(run_id)
    if run.info.status == FAILED and INTERRUPTED_TAG in run.data.tags:
        client.set_terminated(run_id, KILLED)


def reconcile_dead_runs(client: MlflowClient | None = None) -> list[str]:
    """Settle the unfinished runs of this host's processes that ended without a word: left
    RUNNING, or marked FAILED by `mlflow run` with no error recorded (KILLED, results hidden;
    one line names them). Put back KILLED on interrupted runs `mlflow run` marked FAILED after
    their process ended. Returns the IDs of the first."""
    client = client or MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    host = socket.gethostname().replace("'", "")
    candidates = client.search_runs(
        experiments, f"attributes.status != '{FINISHED}' AND attributes.status != '{KILLED}' "
        f"AND tags.`{PROCESS_HOST_TAG}` = '{host}'", max_results=1000)
    stale = []
    for run in candidates:
        tags, status = run.data.tags, run.info.status
        if status == FAILED and INTERRUPTED_TAG in tags:
            client.set_terminated(run.info.run_id, KILLED)
        elif ERROR_TAG not in tags and INTERRUPTED_TAG not in tags and process_gone(tags):
            settle(run.info.run_id, client)
            stale.append(run.info.run_id)
    if stale:
        click.echo(f"Marked KILLED {len(stale)} run{'s' if len(stale) > 1 else ''} of processes "
                   f"on this host killed before they could end them: {', '.join(stale)}; "
                   "their sample and map runs are deleted (restorable with `mlflow runs "
                   "restore`).", err=True)
    return stale


# --- lost parents ------------------------------------------------------------------------------

def under_driver() -> bool:
    """Whether this process is a step the pipeline's driver (main.py) launched."""
    return os.environ.get(DRIVER_PID_ENV) not in (None, str(os.getpid()))


def watch_parent() -> None:
    """End this process (as SIGHUP would) when the process that launched it is gone: the
    driver, for a step it launched; the `mlflow run` process, for the driver."""
    driver = os.environ.get(DRIVER_PID_ENV)
    if driver and driver != str(os.getpid()):
        owner, owner_start = int(driver), process_start(int(driver))
    else:
        owner, owner_start = os.getppid(), process_start(os.getppid())
    if owner <= 1 or owner_start is None:
        return

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if process_start(owner) != owner_start:
                os.kill(os.getpid(), signal.SIGHUP)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()



if __name__ == "__main__":  # the settler of keep_killed_after_launcher
    with contextlib.suppress(Exception):  # best effort: the next start settles the run anyway
        _settle_after(sys.argv[1], int(sys.argv[2]), sys.argv[3])
