"""Real servers for the tests: `git daemon`, `mlflow server` (plain or basic-auth), PostgreSQL.

Each server is started on 127.0.0.1 on a free port, as its own process group, and stopped
(that group only) when its context ends. Their logs go to files beside them, and a server that
does not come up in time fails the test with the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import (PROJECT_DIR, Completed, mlflow_run_command, project_env,
                            unavailable)

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
REQUIRE_POSTGRES_ENV = "SALIENCY_FLOW_REQUIRE_POSTGRES"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "saliency-flow-admin-pw-1"
GIT_USER = ["-c", "user.name=saliency-flow tests", "-c", "user.email=tests@saliency-flow.invalid"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def process_group(args: list[str], log: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """A process started as the leader of a new process group; that group is ended afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the group led by `proc` (ours), SIGKILL if it lingers."""
    if proc.poll() is None or _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_until(ready, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with code {proc.returncode}:\n{_log_tail(log)}")
        if ready():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} did not come up within {timeout:.0f} s:\n{_log_tail(log)}")


# Small enough to keep a whole pipeline quick, while every step and the query still run.
SMALL = {"epochs": "10", "num_samples": "20", "n": "50", "max_images": "1",
         "query": "metrics.Predicted_class_conf < 1.01", "picture_mode": "combined"}
STEP_EXPERIMENTS = ("Train", "Evaluation", "Saliency Map Generation")


def run_env(tracking_uri: str | None, env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment `mlflow run` gets; `env` adds (or, with None, removes) variables."""
    full_env = project_env(tracking_uri)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return full_env


def run_project(project: str | Path, params: dict[str, str], *, cwd: Path,
                tracking_uri: str | None, env: dict[str, str | None] | None = None,
                timeout: float = 900, **command) -> Completed:
    """`mlflow run <project>` as a user types it, waited for."""
    proc = subprocess.run(mlflow_run_command(project, params, **command), cwd=cwd,
                          env=run_env(tracking_uri, env), capture_output=True, text=True,
                          timeout=timeout)
    return Completed(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Started:
    """An `mlflow run` going on in the background, as its own process group, its output
    (stdout and stderr) in `log`."""

    proc: subprocess.Popen
    log: Path

    def finish(self, timeout: float = 900) -> Completed:
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return Completed(returncode, self.log.read_text(errors="replace"), "")

    def stop(self) -> None:
        """End it and whatever it started (the driver, the steps)."""
        stop_group(self.proc, grace=5)


def start_project(project: str | Path, params: dict[str, str], *, cwd: Path,
                  tracking_uri: str | None, log: Path, env: dict[str, str | None] | None = None,
                  **command) -> Started:
    """`mlflow run <project>` started in the background (finish() waits for it)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(mlflow_run_command(project, params, **command), cwd=cwd,
                                env=run_env(tracking_uri, env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Started(proc, log)


@contextlib.contextmanager
def background_runs() -> Iterator[dict[str, Started]]:
    """A dict for runs started together; any still going when the block ends is stopped."""
    started: dict[str, Started] = {}
    try:
        yield started
    finally:
        for run in started.values():
            run.stop()


def finish_all(started: dict[str, Started]) -> dict[str, Completed]:
    """Wait for every run started together; returns their results by key."""
    return {key: run.finish() for key, run in started.items()}


@dataclass
class Pipeline:
    """One finished pipeline as the store holds it: the main run and its step runs."""

    main: object
    train: object
    evaluation: object
    samples: list
    saliency: object
    maps: list

    @property
    def step_runs(self) -> list:
        return [self.train, self.evaluation, self.saliency]


def pipelines_in(client, num_samples: int = int(SMALL["num_samples"]),
                 max_images: int = int(SMALL["max_images"])) -> list[Pipeline]:
    """Every main run in the store, checked whole: all runs FINISHED, steps nested under it,
    one run per evaluated sample and per map."""
    def runs(experiment: str, filter_string: str = "") -> list:
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} in {client.tracking_uri}"
        return client.search_runs([found.experiment_id], filter_string, max_results=10000)

    found = []
    for main in runs("Default", "tags.`mlflow.project.entryPoint` = 'main'"):
        assert main.info.status == "FINISHED", main.info
        tags = main.data.tags
        steps = [client.get_run(tags[key])
                 for key in ("Train_run_id", "Evaluation_run_id", "Saliency_run_id")]
        for step, experiment in zip(steps, STEP_EXPERIMENTS):
            assert step.info.status == "FINISHED"
            assert step.data.tags["mlflow.parentRunId"] == main.info.run_id
            assert client.get_experiment(step.info.experiment_id).name == experiment
        train, evaluation, saliency = steps
        samples = runs("Evaluation",
                       f"tags.Evaluation_parent_run_id = '{evaluation.info.run_id}'")
        assert len(samples) == num_samples
        assert {r.info.status for r in samples} == {"FINISHED"}
        maps = runs("Saliency Map Generation",
                    f"tags.`mlflow.parentRunId` = '{saliency.info.run_id}'")
        assert len(maps) == max_images and {r.info.status for r in maps} == {"FINISHED"}
        # Every run of the pipeline used the model its own train step logged.
        model_uri = train.data.tags["Model_uri"]
        assert tags["Model_uri"] == model_uri
        for run in [evaluation, saliency, *samples, *maps]:
            assert run.data.tags["Model_uri"] == model_uri, run.info.run_id
            assert run.data.tags["Train_run_id"] == train.info.run_id, run.info.run_id
        found.append(Pipeline(main, train, evaluation, samples, saliency, maps))
    return found


# --- git ---------------------------------------------------------------------------------------

def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *GIT_USER, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"git {' '.join(args)} failed:\n{out.stdout}{out.stderr}"
    return out.stdout.strip()


def project_head() -> str:
    """The project's committed HEAD, the version a served clone holds (not uncommitted edits)."""
    if not (PROJECT_DIR / ".git").exists():
        pytest.skip(f"{PROJECT_DIR} is not a git checkout: nothing to serve over git")
    return git("rev-parse", "HEAD", cwd=PROJECT_DIR)


@dataclass
class GitDaemon:
    base: Path
    port: int

    def url(self, repo: str) -> str:
        return f"git://127.0.0.1:{self.port}/{repo}"


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[GitDaemon]:
    """`git daemon` serving every repository under `base` read-only on 127.0.0.1."""
    port = free_port()
    args = ["git", "daemon", "--export-all", f"--base-path={base}", "--reuseaddr",
            "--listen=127.0.0.1", f"--port={port}", "--informative-errors", str(base)]
    log = base.parent / f"git-daemon-{port}.log"
    with process_group(args, log) as proc:
        wait_until(lambda: _accepts(port), proc, log, "git daemon", 30)
        yield GitDaemon(base, port)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- mlflow server -----------------------------------------------------------------------------

@dataclass
class MlflowServer:
    url: str
    backend_store_uri: str
    artifacts: Path
    log: Path
    proc: subprocess.Popen

    def kill(self) -> None:
        """Stop the server at once (SIGKILL to its group), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def write_auth_config(directory: Path) -> Path:
    """An auth config for `mlflow server --app-name basic-auth`: its own user database and a
    known admin; users without a permission may read, not write."""
    config = directory / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{directory / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN_USER}\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request's password check is a deliberately slow hash; remember a good one a while.
        "auth_cache_ttl_seconds = 300\n"
    )
    return config


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def mlflow_server(directory: Path, backend_store_uri: str, *, basic_auth: bool = False,
                  workers: int = 2, port: int | None = None) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 (a free port unless given), artifacts proxied into
    `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    artifacts = directory / "artifacts"
    args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts),
            "--workers", str(workers)]
    env = server_env()
    # No background job runner (MLflow's GenAI jobs): a dozen processes the pipeline never uses.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if basic_auth:
        args += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(directory))
        # The auth app's CSRF protection needs one secret shared by the server's workers.
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = uuid.uuid4().hex
    log = directory / f"mlflow-server-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with process_group(args, log, env=env, cwd=directory) as proc:
        wait_until(lambda: _healthy(url), proc, log, "mlflow server", 180)
        yield MlflowServer(url, backend_store_uri, artifacts, log, proc)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    return env


# --- PostgreSQL --------------------------------------------------------------------------------

def postgres_or_skip():
    """psycopg2, connected to the server's `postgres` database; skips (or fails, where CI
    requires PostgreSQL) when no server is reachable."""
    import psycopg2

    try:
        connection = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER,
                                      dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:
        reason = (f"no PostgreSQL server reachable at {POSTGRES_USER}@{POSTGRES_HOST}:"
                  f"{POSTGRES_PORT} ({str(error).strip().splitlines()[0]})")
        unavailable(reason, REQUIRE_POSTGRES_ENV)
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards. Yields its URI."""
    admin = postgres_or_skip()
    name = f"saliency_flow_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        # SQLAlchemy 2.1 reads plain `postgresql://` as psycopg 3; the pinned driver is psycopg2.
        yield f"postgresql+psycopg2://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def which(tool: str) -> str | None:
    """`tool` on the PATH the projects run with (this interpreter's directory first)."""
    path = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    return shutil.which(tool, path=path)


@dataclass
class PostgresInstance:
    """A PostgreSQL server of the test's own, so that it can be stopped mid-step without
    touching the machine's shared one."""

    bin_dir: Path
    data: Path
    port: int

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{POSTGRES_USER}@{POSTGRES_HOST}:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        done = subprocess.run(["runuser", "-u", POSTGRES_USER, "--", str(self.bin_dir / "pg_ctl"),
                               "-D", str(self.data), "-w", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        self._pg_ctl("-l", str(self.data.parent / "server.log"), "-o",
                     f"-p {self.port} -k {self.data.parent} -c listen_addresses={POSTGRES_HOST}",
                     "start")

    def stop(self) -> None:
        """As a crash or a lost machine would: no clean shutdown."""
        self._pg_ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    """A new PostgreSQL cluster on 127.0.0.1 (a free port), run as the `postgres` user (so the
    tests need root and Debian's PostgreSQL server), removed afterwards."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found or os.geteuid() != 0 or not shutil.which("runuser"):
        unavailable("no PostgreSQL server binaries to run as root (Debian: postgresql)",
                    REQUIRE_POSTGRES_ENV)
    bin_dir = found[-1].parent
    home = Path(tempfile.mkdtemp(prefix="saliency-flow-pg-"))
    shutil.chown(home, POSTGRES_USER)
    instance = PostgresInstance(bin_dir, home / "data", free_port())
    try:
        made = subprocess.run(["runuser", "-u", POSTGRES_USER, "--", str(bin_dir / "initdb"),
                               "-D", str(instance.data), "-A", "trust", "-U", POSTGRES_USER],
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
        instance.start()
        yield instance
    finally:
        subprocess.run(["runuser", "-u", POSTGRES_USER, "--", str(bin_dir / "pg_ctl"), "-D",
                        str(instance.data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(home, ignore_errors=True)


# --- Dask ---------------------------------------------------------------------------------------

@dataclass
class DaskCluster:
    address: str
    workers: list[subprocess.Popen]


def _scheduler_up(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((POSTGRES_HOST, port)) == 0


@contextlib.contextmanager
def dask_cluster(directory: Path, workers: int = 2,
                 settings: dict[str, str] | None = None) -> Iterator[DaskCluster]:
    """`dask scheduler` and `workers` single-threaded `dask worker` processes (no nanny, so a
    killed worker stays dead) on 127.0.0.1, each in a directory of its own: the project's code
    reaches them only as the step ships it. `settings`: Dask configuration as environment
    variables (`DASK_DISTRIBUTED__...`)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**server_env(), **(settings or {})}
    env.pop("PYTHONPATH", None)
    scheduler_args = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                      "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"]
    with contextlib.ExitStack() as stack:
        scheduler = stack.enter_context(process_group(
            scheduler_args, directory / "scheduler.log", env=env, cwd=directory))
        wait_until(lambda: _scheduler_up(port), scheduler, directory / "scheduler.log",
                   "dask scheduler", 60)
        procs = []
        for index in range(workers):
            place = directory / f"worker-{index}"
            place.mkdir(exist_ok=True)
            procs.append(stack.enter_context(process_group(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--no-nanny", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                 "--local-directory", str(place), "--name", f"worker-{index}"],
                place / "worker.log", env=env, cwd=place)))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield DaskCluster(address, procs)
