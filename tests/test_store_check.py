"""The up-front tracking-store check (steps/tracking/store_check.py), piece by piece, without
servers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from steps.tracking import sqlite_journal, store_check
from steps.tracking.sqlite_journal import WAL_ENV, journal_mode
from steps.tracking.store_check import TrackingStoreError, absolute_local_uri, local_path
from tests.conftest import PROJECT_DIR
from tests import disks, servers


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:///mlflow.db", ("mlflow.db", "")),
    ("sqlite:////abs/mlflow.db", ("/abs/mlflow.db", "")),
    ("sqlite:///sub/my%20store.db?timeout=30", ("sub/my store.db", "timeout=30")),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("file:///abs/mlruns", ("/abs/mlruns", "")),
    ("mlruns", ("mlruns", "")),
    ("http://127.0.0.1:5000", None),
    ("postgresql+psycopg2://u@h/db", None),
])
def test_local_path(uri, expected):
    assert local_path(uri) == expected


def test_relative_paths_resolve_against_the_launcher(tmp_path, monkeypatch):
    monkeypatch.setattr(store_check, "launcher_dir", lambda run_id: tmp_path)
    assert absolute_local_uri("sqlite:///mlflow.db", "r" * 32) == f"sqlite:///{tmp_path}/mlflow.db"
    assert (absolute_local_uri("sqlite:///a/b.db?timeout=30", "r" * 32)
            == f"sqlite:///{tmp_path}/a/b.db?timeout=30")
    assert absolute_local_uri("mlruns", "r" * 32) == str(tmp_path / "mlruns")
    assert absolute_local_uri("sqlite:////abs/x.db", "r" * 32) == "sqlite:////abs/x.db"
    assert absolute_local_uri("http://h:5000", "r" * 32) == "http://h:5000"


def test_without_mlflow_run_relative_paths_mean_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_local_uri("sqlite:///mlflow.db", None) == f"sqlite:///{tmp_path}/mlflow.db"


def test_an_unknown_launcher_is_an_error_not_a_second_store(tmp_path, monkeypatch):
    monkeypatch.setattr(store_check, "launcher_dir", lambda run_id: None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingStoreError, match="relative path.*absolute path"):
        absolute_local_uri("sqlite:///mlflow.db", "r" * 32)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_launcher_dir_is_the_nearest_ancestor_without_the_run_id(tmp_path):
    """A child given MLFLOW_RUN_ID (as `mlflow run` gives its entry point) in another directory
    finds this process's directory."""
    code = ("from steps.tracking.store_check import launcher_dir; import os; "
            "print(launcher_dir(os.environ['MLFLOW_RUN_ID']))")
    env = {**os.environ, "MLFLOW_RUN_ID": "f" * 32, "PYTHONPATH": str(PROJECT_DIR)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == str(Path.cwd())


def test_a_missing_store_under_mlflow_run_is_an_error_and_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'missing.db'}"
    with pytest.raises(TrackingStoreError, match="does not exist"):
        store_check.check_run_exists(uri, "f" * 32)
    assert not (tmp_path / "missing.db").exists()


def test_a_run_missing_from_the_store_is_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient
    MlflowClient(uri).search_experiments()
    with pytest.raises(TrackingStoreError, match=f"run {'f' * 32}, which `mlflow run` started"):
        store_check.check_run_exists(uri, "f" * 32)


def test_unreachable_database_is_one_line():
    port = servers.free_port()
    expected = ("cannot connect to the tracking database "
                rf"postgresql\+psycopg2://u:\*\*\*@127.0.0.1:{port}/db: ")
    with pytest.raises(TrackingStoreError, match=expected):
        store_check.check_database(f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/db")


def test_postgres_skip_becomes_a_failure_when_required(monkeypatch):
    monkeypatch.setattr(servers, "POSTGRES_PORT", servers.free_port())
    monkeypatch.delenv(servers.REQUIRE_POSTGRES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server reachable"):
        servers.postgres_or_skip()
    monkeypatch.setenv(servers.REQUIRE_POSTGRES_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="SALIENCY_FLOW_REQUIRE_POSTGRES=1 requires"):
        servers.postgres_or_skip()


# --- SQLite stores in WAL mode (steps/tracking/sqlite_journal.py) -------------------------------

def prepare_store(uri: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    """`python -m steps.tracking.store_check`, as docs/running-anywhere.md has users prepare a new SQLite
    store."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(PROJECT_DIR), **env}
    full_env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run([sys.executable, "-m", "steps.tracking.store_check"], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("setting, expected", [(None, "wal"), ("1", "wal"), ("0", "delete"),
                                                ("false", "delete")])
def test_a_new_sqlite_store_is_put_in_wal_mode_unless_turned_off(tmp_path, setting, expected):
    env = {} if setting is None else {WAL_ENV: setting}
    proc = prepare_store("sqlite:///mlflow.db", tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert journal_mode(tmp_path / "mlflow.db") == expected
    # MLflow reads and writes the file as before.
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("after"))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_locked_sqlite_file_is_left_as_it_is_with_a_warning(tmp_path, monkeypatch, caplog):
    path = tmp_path / "mlflow.db"
    assert prepare_store(f"sqlite:///{path}", tmp_path, **{WAL_ENV: "0"}).returncode == 0
    monkeypatch.setattr(sqlite_journal, "LOCK_WAIT_SECONDS", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        assert sqlite_journal.use_wal(path) is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "left in its journal mode (database is locked)" in caplog.text
    assert journal_mode(path) == "delete"


def test_no_sqlite_file_is_created_by_the_switch(tmp_path):
    assert sqlite_journal.use_wal(tmp_path / "missing.db") is None
    assert not (tmp_path / "missing.db").exists()


# --- a SQLite store that cannot be used ---------------------------------------------------------

def pipeline_on(uri: str, cwd: Path) -> subprocess.CompletedProcess:
    """The driver on its own (`mlflow run` opens the store itself first, and its own errors are
    MLflow's), with the store `uri`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(PROJECT_DIR)}
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run([sys.executable, str(PROJECT_DIR / "main.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line(out: subprocess.CompletedProcess, expected: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], out.stderr


@pytest.mark.parametrize("make, expected", [
    (lambda d: (d / "notes.txt").write_text("not a database\n") and d / "notes.txt",
     "is not a SQLite database"),
    (lambda d: d, "is a directory, not a SQLite file"),
    (lambda d: d / "missing" / "mlflow.db", "the directory {d}/missing does not exist"),
])
def test_an_unusable_sqlite_store_is_one_line_before_any_work(tmp_path, make, expected):
    path = make(tmp_path)
    out = pipeline_on(f"sqlite:///{path}", tmp_path)
    assert_one_line(out, expected.format(d=tmp_path))
    assert not (tmp_path / "missing").exists()


def test_a_store_on_a_read_only_disk_is_one_line(tmp_path):
    """A good store whose disk became read-only, and a new store there."""
    with disks.small_disk(tmp_path / "disk", 16384) as disk:
        ready = prepare_store(f"sqlite:///{disk / 'mlflow.db'}", tmp_path)
        assert ready.returncode == 0, ready.stderr
        disks.make_read_only(disk)
        assert_one_line(pipeline_on(f"sqlite:///{disk / 'mlflow.db'}", tmp_path),
                        f"cannot write the tracking store {disk / 'mlflow.db'}: it is on a "
                        "read-only file system")
        assert_one_line(pipeline_on(f"sqlite:///{disk / 'new.db'}", tmp_path),
                        "it is on a read-only file system")
