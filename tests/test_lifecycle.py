"""Every run ends: the pieces of steps/tracking/lifecycle.py on a real SQLite store (the faults
themselves, signals and killed processes, are injected in tests/test_fail_safe.py)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys

import click
import mlflow
import pytest
import sqlalchemy
from mlflow.entities import Metric

from steps.tracking import lifecycle


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_process_is_told_apart_from_a_gone_one_and_from_a_reused_pid():
    me = lifecycle.process_tags()
    assert me["Process_host"] == socket.gethostname()
    assert me["Process_id"] == str(os.getpid())
    assert not lifecycle.process_gone(me)
    assert lifecycle.process_gone({**me, "Process_id": str(dead_pid())})
    # The same ID, started at another time: another process that reused the ID.
    assert lifecycle.process_gone({**me, "Process_start": "1"})
    assert not lifecycle.process_gone({})


def test_signals_are_named_through_click_s_wrapping_and_errors_by_their_first_line():
    try:
        try:
            raise lifecycle.Interrupted("SIGTERM")
        except KeyboardInterrupt as error:
            raise click.Abort() from error
    except click.Abort as abort:
        assert lifecycle.interruption(abort) == "SIGTERM"
        assert lifecycle.ended_status(abort) == "KILLED"
        assert lifecycle.end_reason(abort) == {"Interrupted_by": "SIGTERM"}
    error = ValueError("disk full\nmore detail")
    assert lifecycle.ended_status(error) == "FAILED"
    assert lifecycle.end_reason(error) == {"Error": "ValueError: disk full"}


def test_the_first_signal_raises_and_a_second_during_clean_up_does_not(monkeypatch):
    monkeypatch.setattr(lifecycle, "_received", [])
    previous = signal.getsignal(signal.SIGTERM)
    lifecycle.install_signal_handlers()
    try:
        with pytest.raises(lifecycle.Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
        assert raised.value.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGHUP)  # noted, not raised
        assert lifecycle._received == ["SIGTERM", "SIGHUP"]
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_a_signal_inside_a_store_write_ends_it_then_raises_and_leaves_no_lock(store, monkeypatch):
    """Raised inside the write's transaction, it could skip MLflow's rollback and leave the
    SQLite file locked for the process's own clean-up; it lands as the store call returns."""
    monkeypatch.setattr(lifecycle, "_received", [])
    client = store.client
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id

    def signal_mid_insert(_conn, _cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO METRICS"):
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", signal_mid_insert)
    lifecycle.install_signal_handlers()
    try:
        with pytest.raises(lifecycle.Interrupted):
            client.log_batch(run_id, metrics=[Metric(f"m{k}", k, 0, 0) for k in range(3)])
        assert sys.gettrace() is None
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute",
                                signal_mid_insert)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert client.get_run(run_id).data.metrics == {"m0": 0, "m1": 1, "m2": 2}
    other = sqlite3.connect(store.dir / "mlflow.db", timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if a write was left open
        other.rollback()
    finally:
        other.close()


def test_run_context_ends_killed_on_a_signal_and_failed_on_an_error(store):
    client = store.client
    # Explicit: another test in this worker may have left a fluent experiment set.
    default = client.get_experiment_by_name("Default").experiment_id
    with pytest.raises(lifecycle.Interrupted):
        with lifecycle.run_context(experiment_id=default) as run:
            raise lifecycle.Interrupted("SIGINT")
    killed = client.get_run(run.info.run_id)
    assert (killed.info.status, killed.data.tags["Interrupted_by"]) == ("KILLED", "SIGINT")
    with pytest.raises(RuntimeError):
        with lifecycle.run_context(experiment_id=default) as run:
            raise RuntimeError("no space left on device")
    failed = client.get_run(run.info.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["Error"] == "RuntimeError: no space left on device"


def step_with_children(client, status="RUNNING", tags=None, finished_children=3):
    experiment = client.get_experiment_by_name("Default").experiment_id
    step = client.create_run(experiment, tags=tags or {})
    children = []
    for index in range(finished_children + 1):
        child = client.create_run(experiment, tags={"mlflow.parentRunId": step.info.run_id})
        if index < finished_children:  # the last one was being written
            client.set_terminated(child.info.run_id)
        children.append(child.info.run_id)
    if status != "RUNNING":
        client.set_terminated(step.info.run_id, status)
    return step.info.run_id, children


def test_the_next_start_settles_runs_of_killed_processes_and_only_those(store, capsys):
    client = store.client
    here = {"Process_host": socket.gethostname(), "Process_start": ""}
    killed, killed_children = step_with_children(client, tags={**here,
                                                                "Process_id": str(dead_pid())})
    alive, alive_children = step_with_children(client, tags=lifecycle.process_tags())
    elsewhere, _ = step_with_children(client, tags={**here, "Process_host": "another-host",
                                                    "Process_id": str(dead_pid())})
    # Interrupted, ended KILLED, then marked FAILED by `mlflow run`.
    overridden, _ = step_with_children(client, "FAILED", {**here, "Process_id": str(dead_pid()),
                                                          "Interrupted_by": "SIGINT"}, 0)

    assert lifecycle.reconcile_dead_runs(client) == [killed]
    assert f"Marked KILLED 1 run of processes on this host killed before they could end them: " \
           f"{killed}" in capsys.readouterr().err
    run = client.get_run(killed)
    assert run.info.status == "KILLED" and run.data.tags["Unfinished_results_deleted"] == "4"
    for child in killed_children:
        child_run = client.get_run(child)
        assert child_run.info.lifecycle_stage == "deleted"
        assert child_run.info.status in ("FINISHED", "KILLED")
    assert client.get_run(alive).info.status == "RUNNING"
    assert all(client.get_run(c).info.lifecycle_stage == "active" for c in alive_children)
    assert client.get_run(elsewhere).info.status == "RUNNING"
    assert client.get_run(overridden).info.status == "KILLED"
    # Settled runs stay settled: a second start finds nothing.
    assert lifecycle.reconcile_dead_runs(client) == []


def test_settle_keeps_an_error_failed_and_a_finished_run_whole(store):
    client = store.client
    failed, children = step_with_children(client, "FAILED", {"Error": "ValueError: bad"})
    assert lifecycle.settle(failed, client).info.status == "FAILED"
    assert all(client.get_run(c).info.lifecycle_stage == "deleted" for c in children)
    finished, children = step_with_children(client, "FINISHED")
    assert lifecycle.settle(finished, client).info.status == "FINISHED"
    assert all(client.get_run(c).info.lifecycle_stage == "active" for c in children)
    mlflow.end_run()
