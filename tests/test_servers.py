"""The pipeline against a shared tracking server: `mlflow server` started here on 127.0.0.1, with
artifacts proxied into a temporary directory, a SQLite or a PostgreSQL backend store, with and
without the basic-auth app; and what happens when the server cannot be used.

`mlflow run` itself talks to the server before any of the project's code runs (to create the
main run), with MLflow's retries and, on failure, its traceback. The driver and every step then
check the server up front (steps/tracking/store_check.py): one request, no retries, one
`Error:` line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_DIR
from tests.servers import (ADMIN_PASSWORD, ADMIN_USER, SMALL, background_runs, finish_all,
                           free_port, mlflow_server, pipelines_in, postgres_database, run_env,
                           run_project, start_project)

pytestmark = pytest.mark.slow

# docs/running-anywhere.md's settings that make `mlflow run` itself give up at once on an unreachable server.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
DEFAULT_STILL_RETRYING_AFTER = 20.0


def assert_pipeline_on_server(server, user_dir: Path, count: int = 1, auth: dict | None = None):
    """`count` whole pipelines in the server's store, artifacts in its proxied destination and
    nothing written locally."""
    with mock.patch.dict(os.environ, auth or {}):
        client = MlflowClient(server.url)
        pipelines = pipelines_in(client)
    assert len(pipelines) == count
    for pipeline in pipelines:
        for run in pipeline.step_runs:
            assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        for run in [pipeline.train, pipeline.evaluation, *pipeline.maps]:
            experiment, run_id = run.info.experiment_id, run.info.run_id
            assert (server.artifacts / experiment / run_id / "artifacts").is_dir(), run_id
    assert list(server.artifacts.rglob("model.pkl"))
    assert not (user_dir / "mlflow.db").exists() and not (user_dir / "mlruns").exists()
    return pipelines


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sqlite-server")
    with mlflow_server(directory, f"sqlite:///{directory / 'server.db'}") as server:
        yield server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth-server")
    with mlflow_server(directory, f"sqlite:///{directory / 'server.db'}",
                       basic_auth=True) as server:
        yield server


ADMIN = {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
WRONG = {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
NONE = {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}


@pytest.fixture(scope="module")
def server_pipelines(sqlite_server, auth_server, tmp_path_factory):
    """Three pipelines started at the same moment: two users on the SQLite-backed server, and
    one with the admin's credentials on the basic-auth server."""
    base = tmp_path_factory.mktemp("server-pipelines")
    runs = {"sqlite0": (sqlite_server, 0, {}), "sqlite1": (sqlite_server, 1, {}),
            "auth": (auth_server, 0, ADMIN)}
    with background_runs() as started:
        for name, (server, seed, env) in runs.items():
            user_dir = base / name
            user_dir.mkdir()
            started[name] = start_project(PROJECT_DIR, {**SMALL, "random_state": str(seed)},
                                          cwd=user_dir, tracking_uri=server.url, env=env,
                                          log=base / f"{name}.log")
        return base, finish_all(started)


def test_two_pipelines_at_once_against_a_server_with_sqlite_backend(sqlite_server,
                                                                   server_pipelines):
    """Two users start the whole pipeline at the same moment against one server: both finish,
    with every per-sample run, and no `database is locked` reaches either."""
    base, results = server_pipelines
    for name in ("sqlite0", "sqlite1"):
        output = results[name].output
        assert results[name].returncode == 0, output
        assert "database is locked" not in output and "Traceback" not in output, output
        assert "Pipeline finished." in output and sqlite_server.url in output
        # Against a server MLflow prints a "View run" line for each run it ends: not for each
        # sample or map run (all named image-N), which show as progress lines instead.
        assert "View run image-" not in output, output
        assert "runs/s" in output and "maps/s" in output, output
        assert not (base / name / "mlflow.db").exists() and not (base / name / "mlruns").exists()
    assert_pipeline_on_server(sqlite_server, base / "sqlite0", count=2)
    assert "database is locked" not in sqlite_server.log.read_text()


def test_pipeline_with_basic_auth_credentials(auth_server, server_pipelines):
    base, results = server_pipelines
    assert results["auth"].returncode == 0, results["auth"].output
    assert_pipeline_on_server(auth_server, base / "auth", auth=ADMIN)


def test_pipeline_against_a_server_with_postgresql_backend(tmp_path):
    with postgres_database() as backend:
        with mlflow_server(tmp_path / "server", backend) as server:
            result = run_project(PROJECT_DIR, SMALL, cwd=tmp_path, tracking_uri=server.url)
            assert result.returncode == 0, result.output
            (pipeline,) = assert_pipeline_on_server(server, tmp_path)
            # The report's page in the server's UI.
            main = pipeline.main
            assert (f"Report:           {server.url}/#/experiments/{main.info.experiment_id}/"
                    f"runs/{main.info.run_id}/artifactPath/report.html") in result.stdout


def our_process(args: list[str], tracking_uri: str, env: dict, cwd: Path):
    """The driver or a step started directly (as `mlflow run` starts them), timed."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=run_env(tracking_uri, env), timeout=120)
    return proc, time.monotonic() - started


def assert_one_error_line(proc, expected: str):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], lines


@pytest.mark.parametrize("entry, creds, expected", [
    (["main.py"], WRONG,
     f"did not accept the user name {ADMIN_USER!r} and its password (HTTP 401)"),
    (["-m", "steps.train"], NONE, "asks for a user name and password (HTTP 401). Set "
                                  "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."),
    (["-m", "steps.tracking.store_check"], WRONG, "(HTTP 401). Check MLFLOW_TRACKING_USERNAME"),
], ids=["driver-wrong", "step-none", "store_check-wrong"])
def test_our_processes_refuse_wrong_credentials_in_one_line(auth_server, entry, creds, expected):
    proc, seconds = our_process(entry, auth_server.url, creds, PROJECT_DIR)
    assert_one_error_line(proc, expected)
    assert seconds < 30, seconds


def test_mlflow_run_with_wrong_credentials_fails_at_once_with_mlflows_message(auth_server,
                                                                             tmp_path):
    """MLflow's own behaviour: `mlflow run` creates the main run before any project code runs;
    refused, it prints MLflow's traceback ending in the server's 401 message and exits 1. No
    run is made."""
    started = time.monotonic()
    result = run_project(PROJECT_DIR, SMALL, cwd=tmp_path, tracking_uri=auth_server.url,
                         env=WRONG, timeout=120)
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "401" in last and "You are not authenticated" in last, last
    assert seconds < 60, seconds


def test_unreachable_server_fails_fast(tmp_path):
    """Nothing listens on the port. Our processes give one line in seconds. `mlflow run` gives up
    at once with docs/running-anywhere.md's settings (with MLflow's traceback); with MLflow's defaults it is
    still retrying long after (about four minutes in all), which we cannot change."""
    url = f"http://127.0.0.1:{free_port()}"
    default_started = time.monotonic()
    default = start_project(PROJECT_DIR, SMALL, cwd=tmp_path, tracking_uri=url,
                            log=tmp_path / "default.log")
    try:
        for entry in (["main.py"], ["-m", "steps.evaluate"],
                      ["-m", "steps.tracking.store_check"]):
            proc, seconds = our_process(entry, url, {}, PROJECT_DIR)
            assert_one_error_line(proc, f"cannot reach the tracking server {url}: "
                                        "connection refused")
            assert seconds < 15, seconds

        started = time.monotonic()
        result = run_project(PROJECT_DIR, SMALL, cwd=tmp_path, tracking_uri=url, env=FAIL_FAST,
                             timeout=120)
        seconds = time.monotonic() - started
        assert result.returncode == 1, result.output
        assert "Connection refused" in result.stderr.strip().splitlines()[-1]
        assert seconds < 30, seconds

        # MLflow's defaults: 7 retries with growing pauses; still at it well past that.
        time.sleep(max(0.0, DEFAULT_STILL_RETRYING_AFTER - (time.monotonic() - default_started)))
        assert default.proc.poll() is None, default.log.read_text()
    finally:
        default.stop()


def test_server_that_never_answers_is_reported_within_the_request_timeout(tmp_path):
    """A port that accepts connections but never answers: our check waits
    MLFLOW_HTTP_REQUEST_TIMEOUT (capped at 10 s), once."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proc, seconds = our_process(["-m", "steps.tracking.store_check"], url,
                                    {"MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}, PROJECT_DIR)
    assert_one_error_line(proc, "no answer within 2 s")
    assert seconds < 15, seconds
