"""Check the tracking store up front: one clear `Error: ...` line, in seconds, when it is unusable.

The driver and every step call `check_tracking_store()` (through `steps.options.run_cli`) before
anything else, so a store they cannot use ends them at once instead of after MLflow's own
retries (about four minutes against a server that does not answer) and a traceback:

- a tracking server (http/https) gets one request, with no retries and a short timeout; no
  answer, wrong or missing credentials (HTTP 401), a permission refused (403) or a run that is
  not there each give one line that says which;
- a database (postgresql, mysql, mssql) gets one connection with a short connect timeout;
- a SQLite store's file is put in WAL mode, for faster writes (steps/sqlite_journal.py);
- a local store given as a relative path (`sqlite:///mlflow.db`, `mlruns`) is made absolute.
  Under `mlflow run` the entry point runs in the project's directory, which for a Git URL is a
  temporary checkout; MLflow passes a relative MLFLOW_TRACKING_URI on unchanged, so the path
  would name a second, new store there. It is resolved against the directory `mlflow run` was
  started in (found through /proc on Linux), and set absolute for every later step. Where that
  directory cannot be found, the check stops with the fix rather than creating a store.

Under `mlflow run` the check also confirms that the run MLflow started (MLFLOW_RUN_ID) is in
the store. `python -m steps.tracking.store_check` runs the same check on its own and, for a local store,
creates its tables (do that once before starting several pipelines at once on a new SQLite
file: MLflow's `mlflow run` creates a new store's tables without a lock).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import time
import urllib.parse
from pathlib import Path

import click

from steps.tracking.sqlite_journal import use_wal

CHECK_TIMEOUT_SECONDS = 10
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
RUN_ID_ENV = "MLFLOW_RUN_ID"
#: Set to show the traceback of an unexpected error instead of its one line.
DEBUG_ENV = "SALIENCY_FLOW_DEBUG"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


class TrackingStoreError(click.ClickException):
    """The tracking store cannot be used; the message says why and what to do."""

    exit_code = 1


def check_tracking_store() -> str:
    """Check the current tracking store; returns its URI (made absolute if it was relative)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    run_id = os.environ.get(RUN_ID_ENV) or None
    absolute = absolute_local_uri(uri, run_id)
    if absolute != uri:
        mlflow.set_tracking_uri(absolute)  # also exported, for the steps this process starts
        uri = absolute
    scheme = scheme_of(uri)
    if scheme in SERVER_SCHEMES:
        check_server(uri, run_id)
    elif scheme.split("+")[0] in DATABASE_SCHEMES:
        check_database(uri)
    elif scheme == "sqlite" and local_path(uri) is not None:
        check_sqlite_file(local_path(uri)[0])
    if scheme not in SERVER_SCHEMES:
        quiet_store_error_logs()
    if run_id and scheme not in SERVER_SCHEMES:
        check_run_exists(uri, run_id)
    use_wal_if_sqlite(uri)
    return uri


def use_wal_if_sqlite(uri: str) -> None:
    """A SQLite store's file in WAL mode, for faster writes (steps/sqlite_journal.py)."""
    local = local_path(uri) if scheme_of(uri) == "sqlite" else None
    if local is not None:
        use_wal(local[0])


def scheme_of(uri: str) -> str:
    return urllib.parse.urlparse(uri).scheme.lower()


# --- local stores given as relative paths -----------------------------------------------------

def local_path(uri: str) -> tuple[str, str] | None:
    """(path, query) of a local store URI (`sqlite:///path`, `file:path`, a plain path)."""
    scheme = scheme_of(uri)
    if scheme == "sqlite":
        rest = uri[len("sqlite:"):]
        if not rest.startswith("///"):
            return None  # in-memory (`sqlite://`) or a host form: nothing on disk to place
        path, _, query = rest[3:].partition("?")
        return (urllib.parse.unquote(path), query) if path and path != ":memory:" else None
    if scheme == "file":
        parsed = urllib.parse.urlparse(uri)
        return urllib.parse.unquote(parsed.netloc + parsed.path), ""
    if scheme == "":
        return uri, ""
    return None


def absolute_local_uri(uri: str, run_id: str | None) -> str:
    """`uri` with a relative local path made absolute, as `mlflow run` meant it."""
    local = local_path(uri)
    if local is None or os.path.isabs(local[0]):
        return uri
    path, query = local
    base = launcher_dir(run_id) if run_id else Path.cwd()
    if base is None:
        raise TrackingStoreError(
            f"{TRACKING_URI_ENV}={uri} is a relative path. Under `mlflow run` this process runs "
            f"in the project's directory ({Path.cwd()}), not where `mlflow run` was started, "
            "and that directory cannot be found here, so the path would name a second, empty "
            "store. Give an absolute path, e.g. "
            f"{TRACKING_URI_ENV}={rebuild(uri, str(Path(path).resolve()), query)}")
    return rebuild(uri, str((base / path).resolve()), query)


def launch_directory() -> Path:
    """The directory `mlflow run` was started in (this process's own outside `mlflow run`), for
    relative paths the user gave, such as `-P dataset=images`."""
    run_id = os.environ.get(RUN_ID_ENV)
    return (launcher_dir(run_id) if run_id else None) or Path.cwd()


def rebuild(uri: str, path: str, query: str) -> str:
    if scheme_of(uri) == "sqlite":
        return f"sqlite:///{path}" + (f"?{query}" if query else "")
    return Path(path).as_uri() if scheme_of(uri) == "file" else path


def launcher_dir(run_id: str) -> Path | None:
    """The working directory of the process that started this run (`mlflow run`), or None."""
    pid = launcher_pid(run_id)
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) if pid else None
    except OSError:
        return None


def launcher_pid(run_id: str) -> int | None:
    """The process that started this run (`mlflow run`), or None.

    It is the nearest ancestor process whose environment does not carry this run's ID: the
    processes between it and this one (a shell, an environment's activation) inherit it.
    Linux only (/proc); elsewhere None.
    """
    marker = f"{RUN_ID_ENV}={run_id}".encode()
    pid = os.getppid()
    for _ in range(16):
        if pid <= 1:
            return None
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if marker not in environ:
                return pid
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


# --- tracking servers -------------------------------------------------------------------------

def check_server(uri: str, run_id: str | None) -> None:
    """One request to the server, no retries, a short timeout; raises TrackingStoreError."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    if run_id:
        endpoint, method, kwargs = "/api/2.0/mlflow/runs/get", "GET", {"params": {"run_id": run_id}}
    else:
        endpoint, method, kwargs = ("/api/2.0/mlflow/experiments/search", "POST",
                                    {"json": {"max_results": 1}})
    timeout = check_timeout()
    started = time.monotonic()
    try:
        response = http_request(creds, endpoint, method, max_retries=0, backoff_factor=0,
                                backoff_jitter=0, timeout=timeout,
                                raise_on_status=False, **kwargs)
    except MlflowException as error:
        cause = error.__cause__ or error.__context__
        raise TrackingStoreError(
            f"cannot reach the tracking server {uri}: "
            f"{describe_network_error(cause or error, timeout)} "
            f"(one try, {time.monotonic() - started:.1f} s). Is the server running, and is "
            f"{TRACKING_URI_ENV} right?") from None
    status = response.status_code
    if status == 200:
        return
    if status == 401:
        if creds.username:
            raise TrackingStoreError(
                f"the tracking server {uri} did not accept the user name "
                f"{creds.username!r} and its password (HTTP 401). Check MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD.")
        raise TrackingStoreError(
            f"the tracking server {uri} asks for a user name and password (HTTP 401). Set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.")
    if status == 403:
        who = f"user {creds.username!r}" if creds.username else "an anonymous user"
        what = f"run {run_id}" if run_id else "its experiments"
        raise TrackingStoreError(
            f"the tracking server {uri} refused {who} access to {what} (HTTP 403). Ask its "
            "administrator for permission.")
    if status == 404 and run_id and "RESOURCE_DOES_NOT_EXIST" in response.text:
        raise TrackingStoreError(run_not_in_store(uri, run_id))
    raise TrackingStoreError(
        f"the tracking server {uri} answered HTTP {status} to {endpoint}: "
        f"{first_line(response.text)[:300]}")


def check_server_if_any() -> None:
    """One quick request when the tracking store is a server: TrackingStoreError if it is
    gone."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if scheme_of(uri) in SERVER_SCHEMES:
        check_server(uri, None)


def check_timeout() -> int:
    """Seconds to wait for the store: CHECK_TIMEOUT_SECONDS, or MLflow's own request timeout
    (MLFLOW_HTTP_REQUEST_TIMEOUT) when that is shorter."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    return max(1, min(CHECK_TIMEOUT_SECONDS, MLFLOW_HTTP_REQUEST_TIMEOUT.get()))


def describe_network_error(error: BaseException, timeout: int) -> str:
    import requests

    text = str(error)
    if isinstance(error, requests.exceptions.Timeout) or "timed out" in text.lower():
        return f"no answer within {timeout} s"
    for marker, meaning in (("Connection refused", "connection refused"),
                            ("Name or service not known", "unknown host name"),
                            ("nodename nor servname", "unknown host name"),
                            ("Temporary failure in name resolution", "unknown host name"),
                            ("Network is unreachable", "network unreachable"),
                            ("No route to host", "no route to host"),
                            ("SSLError", "TLS handshake failed"),
                            ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if marker in text:
            return meaning
    return first_line(text)[:300]


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


# --- a store's disk ------------------------------------------------------------------------

SQLITE_HEADER = b"SQLite format 3\x00"
#: The errors of a disk that cannot take a write, as users know them.
DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}
#: SQLite's own words for the same faults.
SQLITE_DISK_ERRORS = {"database or disk is full": "no space left on the device",
                      "attempt to write a readonly database": "the file is read-only",
                      "disk I/O error": "a disk I/O error"}


def why_not_writable(path: Path) -> str | None:
    """Why this process cannot write `path` (a file or directory), or None if it can."""
    if os.access(path, os.W_OK):
        return None
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        pass
    return "this user may not write it"


def check_sqlite_file(path: str) -> None:
    """A SQLite store's file is a SQLite database this process can write, or can be created:
    one line naming what is wrong, instead of MLflow's retries and traceback."""
    file = Path(path)
    shown = f"the tracking store {file}"
    if file.is_dir():
        raise TrackingStoreError(f"{shown} is a directory, not a SQLite file. Name a file, e.g. "
                                 f"{TRACKING_URI_ENV}=sqlite:///{file / 'mlflow.db'}")
    if file.exists():
        with open(file, "rb") as head:
            start = head.read(len(SQLITE_HEADER))
        if start and start != SQLITE_HEADER:
            raise TrackingStoreError(f"{shown} is not a SQLite database (it is a file of another "
                                     "kind). Point MLFLOW_TRACKING_URI at an MLflow SQLite file "
                                     "or at a new path.")
        # SQLite writes a journal (or WAL) file beside it, so its directory must be writable too.
        for place in (file, file.parent):
            reason = why_not_writable(place)
            if reason:
                raise TrackingStoreError(f"cannot write {shown}: {reason} ({place}). Use a "
                                         "store on a writable disk.")
        return
    if not file.parent.is_dir():
        raise TrackingStoreError(f"cannot create {shown}: the directory {file.parent} does not "
                                 "exist. Create it, or give another path.")
    reason = why_not_writable(file.parent)
    if reason:
        raise TrackingStoreError(f"cannot create {shown} in {file.parent}: {reason}. Use a "
                                 "directory on a writable disk.")


def disk_error_message(error: BaseException, artifact_uri: str | None) -> str | None:
    """One line for a write that a full, read-only or forbidden disk refused (an artifact, or
    the SQLite store), naming where; None for any other error."""
    import mlflow

    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            where = error.filename or artifact_uri or "a run's artifacts"
            return (f"cannot write {where}: {DISK_ERRORS[error.errno]}. Free space there, or "
                    "make it writable, and run the same command again: finished steps are "
                    "reused.")
        for words, meaning in SQLITE_DISK_ERRORS.items():
            if words in str(error):
                return (f"cannot write the tracking store {mlflow.get_tracking_uri()}: "
                        f"{meaning}. Free space there, or make it writable, and run the same "
                        "command again.")
        error = error.__cause__ or error.__context__
    return None


# --- a server lost mid-step -----------------------------------------------------------------

#: How long MLflow's requests to a tracking server keep retrying before the step gives up.
SERVER_RETRY_SECONDS = 120
SERVER_RETRY_ENV = "SALIENCY_FLOW_SERVER_RETRY_SECONDS"
#: Per request: a server that takes the connection and never answers counts against the budget.
SERVER_REQUEST_TIMEOUT_SECONDS = 30
_RETRY_SETTINGS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT")


def bound_server_retries() -> None:
    """Make MLflow's retries against a tracking server last about SERVER_RETRY_SECONDS (or
    SALIENCY_FLOW_SERVER_RETRY_SECONDS) in all, instead of its default four minutes or more per
    request. MLflow's own variables, when set, are kept unless SALIENCY_FLOW_SERVER_RETRY_SECONDS
    is set too. Child processes (the steps) inherit the same settings."""
    budget = float(os.environ.get(SERVER_RETRY_ENV, SERVER_RETRY_SECONDS))
    # urllib3 waits 0, 2, 4, ... 2^(n-1) s between n retries (backoff factor 1, MLflow takes
    # whole numbers only): 2^n - 2 s in all.
    retries = max(1, round(math.log2(budget + 2)))
    values = (retries, 1, max(1, min(SERVER_REQUEST_TIMEOUT_SECONDS, int(budget))))
    for name, value in zip(_RETRY_SETTINGS, values):
        if SERVER_RETRY_ENV in os.environ or name not in os.environ:
            os.environ[name] = str(value)


#: What database drivers say when the tracking database went away, as users know it.
LOST_DATABASE_WORDS = {
    "server closed the connection unexpectedly": "the server closed the connection",
    "Connection refused": "connection refused",
    "could not connect to server": "cannot connect",
    "terminating connection": "the server ended the connection",
    "the database system is shutting down": "the server is shutting down",
    "the database system is starting up": "the server is starting up",
    "connection already closed": "the connection was closed",
    "Lost connection to MySQL server": "the server closed the connection",
    "Can't connect to MySQL server": "cannot connect",
}


def unreachable_server(error: BaseException) -> str | None:
    """What went wrong, when an exception (or its cause) says the tracking store could not be
    reached: a tracking server after MLflow's retries, or a tracking database's connection
    lost; None for any other error."""
    while error is not None:
        text = str(error)
        if "API request to" in text and any(words in text for words in (
                "Max retries exceeded", "timeout exception", "too many", "Connection aborted")):
            cause = error.__cause__ or error.__context__
            return describe_network_error(cause or error, int(float(
                os.environ.get(_RETRY_SETTINGS[2], SERVER_REQUEST_TIMEOUT_SECONDS))))
        if "OperationalError" in text:
            for words, meaning in LOST_DATABASE_WORDS.items():
                if words in text:
                    return meaning
        error = error.__cause__ or error.__context__
    return None


def stop_retrying() -> None:
    """The server is gone: the requests that try to clean up fail at once instead of waiting
    out another budget each; the next start settles what they could not."""
    os.environ[_RETRY_SETTINGS[0]] = "0"
    os.environ[_RETRY_SETTINGS[2]] = "5"


def server_lost_message(reason: str) -> str:
    import mlflow

    uri = mlflow.get_tracking_uri()
    if scheme_of(uri) in SERVER_SCHEMES:
        budget = os.environ.get(SERVER_RETRY_ENV, SERVER_RETRY_SECONDS)
        lost = (f"the tracking server {uri} ({reason}; retried for about {budget} s, "
                f"{SERVER_RETRY_ENV} to change)")
    else:
        lost = f"the tracking database {shown_database(uri)} ({reason})"
    return (f"lost {lost}. Run the same command again once it is back: finished steps are "
            "reused and runs left RUNNING are settled.")


def shown_database(uri: str) -> str:
    """A database URI with its password hidden."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(uri).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: nothing to hide
        return uri


class _WithoutStoreTracebacks(logging.Filter):
    """Drops the errors MLflow's database layer logs, each with its traceback, before raising
    them: the step's one `Error:` line says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def quiet_store_error_logs() -> None:
    """Keep MLflow's logged database tracebacks off the screen (not with SALIENCY_FLOW_DEBUG)."""
    if not os.environ.get(DEBUG_ENV):
        logging.getLogger("mlflow.store.db.utils").addFilter(_WithoutStoreTracebacks())


# --- databases --------------------------------------------------------------------------------

def check_database(uri: str) -> None:
    """One connection with a short connect timeout; raises TrackingStoreError."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = sqlalchemy.engine.make_url(uri)
    shown = shown_database(uri)
    connect_args = ({"connect_timeout": check_timeout()}
                    if url.get_backend_name() in ("postgresql", "mysql") else {})
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except Exception as error:  # a missing driver, a malformed URI
        raise TrackingStoreError(f"cannot use the tracking database {shown}: {error}") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = first_line(getattr(error, "orig", None) or error)
        raise TrackingStoreError(
            f"cannot connect to the tracking database {shown}: {reason}") from None
    finally:
        engine.dispose()


# --- the run `mlflow run` started ---------------------------------------------------------------

def check_run_exists(uri: str, run_id: str) -> None:
    """The run `mlflow run` made for this process is in the store (else it looks elsewhere)."""
    local = local_path(uri)
    if local is not None and not Path(local[0]).exists():
        raise TrackingStoreError(
            f"the tracking store {uri} does not exist, yet `mlflow run` started run {run_id} "
            "in a store; this process would create a second, empty one. Set "
            f"{TRACKING_URI_ENV} to the store `mlflow run` used, as an absolute path.")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingStoreError(run_not_in_store(uri, run_id)) from None
        raise


def run_not_in_store(uri: str, run_id: str) -> str:
    return (f"run {run_id}, which `mlflow run` started for this process, is not in the tracking "
            f"store {uri}: this process is looking at a different store than `mlflow run` did. "
            f"Set {TRACKING_URI_ENV} to one absolute path or URL for both.")


def prepare_store() -> str:
    """Check the store and, for a local one, create its tables and Default experiment now."""
    uri = check_tracking_store()
    if scheme_of(uri) not in SERVER_SCHEMES:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        use_wal_if_sqlite(uri)
    return uri


@click.command(help="Check the tracking store (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                    "here) and create a new local store's tables.")
def main() -> None:
    uri = prepare_store()
    click.echo(f"Tracking store ready: {uri}")


if __name__ == "__main__":
    try:
        main.main(standalone_mode=False)
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:
        disk = disk_error_message(error, None)
        if disk is None:
            raise
        click.echo(f"Error: {disk}", err=True)
        sys.exit(1)
