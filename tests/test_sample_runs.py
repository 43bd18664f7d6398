"""`SampleRunWriter` against real stores, read back with `MlflowClient`; its benchmark script.

Each writer test runs twice: into a SQLite file this process opens (one writer thread) and
through an `mlflow server` the tests start on 127.0.0.1 (a pool of threads).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import urllib.request
import uuid

import pytest
from mlflow.entities import ViewType
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmarks.sample_runs_benchmark import realistic_samples, tracking_server
from steps.tracking import sample_runs
from steps.tracking.console import Progress
from steps.tracking.sample_runs import SERVER_WORKERS, SampleRunWriter, retry_locked
from tests.conftest import PROJECT_DIR

BENCHMARK = PROJECT_DIR / "benchmarks" / "sample_runs_benchmark.py"
REJECTED_METRIC = "bad#name"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("server")
    with tracking_server(f"sqlite:///{directory / 'server.db'}", directory, workers=2) as url:
        yield url


@pytest.fixture(params=["sqlite", "server"])
def client(request, tmp_path) -> MlflowClient:
    if request.param == "server":
        return MlflowClient(request.getfixturevalue("server"))
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def experiment_id(client) -> str:
    return client.create_experiment(f"samples-{uuid.uuid4().hex[:8]}")


def samples_under_parent(client, experiment_id, count):
    parent = client.create_run(experiment_id, run_name="parent")
    return realistic_samples(count, parent.info.run_id)


def sample_runs_in(client, experiment_id) -> list:
    """Every run of the experiment but the parent, deleted ones included."""
    runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    return [run for run in runs if run.info.run_name != "parent"]


def test_writes_every_run_with_tags_metrics_finished_ids_in_input_order(
        client, experiment_id, capfd):
    samples = samples_under_parent(client, experiment_id, 24)
    # Threads only against a server, whatever is asked for a SQLite file.
    through_server = client.tracking_uri.startswith("http")
    writer = SampleRunWriter(experiment_id, client=client, workers=None if through_server else 4)
    assert writer.workers == (SERVER_WORKERS if through_server else 1)

    run_ids = writer.write_all(samples, label="Logging samples")

    by_id = {run.info.run_id: run for run in sample_runs_in(client, experiment_id)}
    assert sorted(by_id) == sorted(run_ids) and len(run_ids) == len(samples)
    for run_id, sample in zip(run_ids, samples):
        run = by_id[run_id]
        assert run.info.status == "FINISHED" and run.info.end_time
        assert run.info.run_name == sample.name
        assert sample.tags.items() <= run.data.tags.items()
        assert run.data.metrics == pytest.approx(sample.metrics)
        assert len(run.data.metrics) == 11
    out, err = capfd.readouterr()
    assert "View run" not in out and "View experiment" not in out
    progress = [line for line in err.splitlines() if "runs/s" in line]
    assert 1 <= len(progress) <= 5, err
    assert progress[-1].startswith("Logging samples: 24/24 runs") and "done" in progress[-1]
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get_raw() is None


def test_write_one_run(client, experiment_id, capfd):
    (sample,) = samples_under_parent(client, experiment_id, 1)
    run = client.get_run(SampleRunWriter(experiment_id, client=client).write(sample))
    assert run.info.status == "FINISHED"
    assert run.data.tags["Image_id"] == "0"
    assert "View run" not in capfd.readouterr().out


def test_rejected_metric_fails_its_run_stops_the_rest_and_raises(client, experiment_id):
    samples = samples_under_parent(client, experiment_id, 40)
    samples[3].metrics[REJECTED_METRIC] = 1.0
    writer = SampleRunWriter(experiment_id, client=client, workers=2)

    with pytest.raises(MlflowException, match=re.escape(REJECTED_METRIC)):
        writer.write_all(samples, label="Logging samples")

    runs = sample_runs_in(client, experiment_id)
    statuses = {run.info.run_name: run.info.status for run in runs}
    assert statuses.pop(samples[3].name) == "FAILED"
    assert set(statuses.values()) <= {"FINISHED"}, statuses
    # The runs not yet started when the failure came were never written.
    assert len(runs) < len(samples)


def test_retries_a_locked_store_and_nothing_else(monkeypatch):
    monkeypatch.setattr(sample_runs, "LOCKED_PAUSES_SECONDS", (0, 0, 0))
    calls = []

    def locked_twice():
        calls.append(1)
        if len(calls) <= 2:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "written"

    assert retry_locked(locked_twice) == "written" and len(calls) == 3

    def rejected():
        calls.append(1)
        raise MlflowException("Invalid value")

    calls.clear()
    with pytest.raises(MlflowException, match="Invalid value"):
        retry_locked(rejected)
    assert len(calls) == 1


def test_progress_without_a_terminal_writes_a_line_per_quarter():
    out = io.StringIO()
    with Progress(100, "Logging", file=out) as progress:
        for item in range(100):
            assert progress.advanced(item) == item
    lines = out.getvalue().splitlines()
    assert [line.split(" runs")[0] for line in lines] == [
        "Logging: 25/100", "Logging: 50/100", "Logging: 75/100", "Logging: 100/100"]
    assert all("runs/s" in line for line in lines)
    assert "ETA" in lines[0] and "done" in lines[-1]


def test_progress_on_a_terminal_redraws_one_line():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    with Progress(10, "Logging", file=out) as progress:
        for item in range(10):
            progress.advanced(item)
    text = out.getvalue()
    assert text.startswith("\rLogging  [") and text.endswith("\n")
    assert text.count("\n") == 1
    assert "10/10 runs" in text and "runs/s" in text


def test_benchmark_script_at_tiny_sizes_prints_ratios_then_stops_server_and_drops_database():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1: {error}")
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--runs", "3", "--rounds", "1", "--workers", "2"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    rows = re.findall(r"^(sqlite file, .+?|server \(postgresql backend\)) +[\d.]+ +[\d.]+ +[\d.]+x$",
                      out, re.MULTILINE)
    assert rows == ["sqlite file, WAL (as the steps leave it)",
                    "sqlite file, rollback journal (SQLite's default)",
                    "server (postgresql backend)"], out
    assert re.search(r"^naive loop on a SQLite file in its default mode -> the writer on the "
                     r"file as the steps leave it: [\d.]+ -> [\d.]+ runs/s, [\d.]+x", out,
                     re.MULTILINE), out
    (url,) = re.findall(r"^server \(postgresql backend\): (http://\S+)$", out, re.MULTILINE)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)
    (database,) = re.findall(r"^server backend store: postgresql\S*/(\w+)$", out, re.MULTILINE)
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (database,))
            assert cursor.fetchone() == (0,)
    finally:
        admin.close()


def test_benchmark_server_is_stopped_when_the_benchmark_fails(tmp_path):
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with tracking_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path, workers=1) as url:
            urllib.request.urlopen(f"{url}/health", timeout=5).close()
            raise RuntimeError("benchmark failed")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)
