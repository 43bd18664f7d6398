"""Faults injected for real: signals to the pipeline mid-step, processes killed outright.

After each: the exit code, exactly one `Error:` line, no traceback, no run RUNNING after the
next start, docs/re-running.md's query returning each image of each finished evaluation once, and every
FINISHED map run holding all its artifacts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType

from steps.tracking import lifecycle
from tests import disks
from tests.conftest import Completed, Store, project_env, start_mlflow_run
from tests.servers import free_port, mlflow_server, postgres_instance, server_env, stop_group

# Evaluation long enough to be caught mid-way, the rest quick; training reused after the first.
PARAMS = {"epochs": "20", "num_samples": "200", "picture_mode": "combined", "n": "200",
          "max_images": "2"}
# Saliency long enough to be caught mid-way.
SLOW_SALIENCY = {"query": "tags.Correct = 'true'", "max_images": "5", "n": "2000",
                 "picture_mode": "both"}
EVALUATION_LINE = "Logging 200 evaluation runs:"
SALIENCY_LINE = "Saliency maps ("
STORE_GONE_LINE = "The evaluate step stopped: the tracking store is gone (above)."
MAP_ARTIFACTS = {"saliency_map.npy", "generator_config.json", "metrics", "pictures"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fail_safe")
    return Store(f"sqlite:///{directory / 'mlflow.db'}", directory)


def pipeline(store: Store, params: dict[str, str] | None = None,
             env: dict[str, str] | None = None) -> subprocess.Popen:
    return start_mlflow_run({**PARAMS, **(params or {})}, tracking_uri=store.uri, cwd=store.dir,
                            env=env)


def interrupt(store: Store, marker: str, send, params=None, env=None) -> Completed:
    """Run the pipeline; once a line holding `marker` appears, call `send(process)`."""
    process = pipeline(store, params, env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            send(process)
            break
    else:
        pytest.fail("the pipeline ended before the line to interrupt at:\n" + "".join(lines))
    lines.append(process.stdout.read())
    process.wait(timeout=300)
    output = "".join(lines)
    return Completed(process.returncode, output, "")


def to_group(signum):
    return lambda process: os.killpg(process.pid, signum)


def descendants(pid: int) -> dict[int, str]:
    """The processes under `pid` (the steps run in sessions of their own, so not its group),
    with their command lines."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True,
                           text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in table.splitlines():
        child, parent, args = line.split(None, 2)
        children.setdefault(int(parent), []).append((int(child), args))
    found, todo = {}, [pid]
    while todo:
        for child, args in children.get(todo.pop(), []):
            found[child] = args
            todo.append(child)
    return found


def python_running(process: subprocess.Popen, text: str) -> int:
    """The newest Python process under the pipeline whose command line holds `text`."""
    matches = [pid for pid, args in descendants(process.pid).items()
               if text in args and args.split()[0].endswith(("python", "python3"))]
    assert matches, f"no process under the pipeline runs {text!r}"
    return max(matches)


def to_process(text: str, signum):
    return lambda process: os.kill(python_running(process, text), signum)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def complete_run(store: Store, params: dict[str, str] | None = None) -> Completed:
    process = pipeline(store, params)
    output, _ = process.communicate(timeout=600)
    return Completed(process.returncode, output, "")


def statuses(store: Store, view=ViewType.ACTIVE_ONLY) -> dict[str, int]:
    ids = [e.experiment_id for e in store.client.search_experiments()]
    counts: dict[str, int] = {}
    for run in store.client.search_runs(ids, run_view_type=view, max_results=50000):
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


def assert_store_is_sound(store: Store) -> None:
    """Nothing RUNNING; docs/re-running.md's query gives each image of a finished evaluation once;
    every FINISHED map run is complete."""
    assert "RUNNING" not in statuses(store)
    client = store.client
    finished = {r.info.run_id for r in store.runs("Evaluation", "tags.Num_samples != ''")
                if r.info.status == "FINISHED"}
    wrong = store.runs("Evaluation", "tags.Correct = 'false'")
    assert {r.data.tags["Evaluation_parent_run_id"] for r in wrong} <= finished
    per_evaluation = {}
    for run in wrong:
        per_evaluation.setdefault(run.data.tags["Evaluation_parent_run_id"], []).append(
            run.data.tags["Image_id"])
    for images in per_evaluation.values():
        assert len(images) == len(set(images)), "an image appears twice in one evaluation"
    for run in store.runs("Saliency Map Generation", "tags.Image_id != ''"):
        assert run.info.status == "FINISHED"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert MAP_ARTIFACTS <= artifacts, (run.info.run_id, artifacts)


def test_sigterm_mid_evaluation_ends_every_run_killed_and_hides_its_samples(store):
    result = interrupt(store, EVALUATION_LINE, to_group(signal.SIGTERM))
    assert result.returncode != 0
    (error,) = error_lines(result.output)
    assert "the pipeline was interrupted by SIGTERM" in error
    assert "Run the same command again to continue" in error
    assert "Traceback" not in result.output
    assert "RUNNING" not in statuses(store)
    (evaluation,) = [r for r in store.runs("Evaluation", "tags.Num_samples != ''")]
    assert evaluation.info.status == "KILLED"
    assert evaluation.data.tags["Interrupted_by"] == "SIGTERM"
    deleted = int(evaluation.data.tags["Unfinished_results_deleted"])
    assert 0 < deleted < 200
    assert not store.runs("Evaluation", f"tags.Evaluation_parent_run_id = "
                                        f"'{evaluation.info.run_id}'")
    main = store.runs("Default")[0]
    assert main.info.status == "KILLED"

    # The command the line gives finishes the evaluation: the samples written before the
    # signal come back, the rest are written, each image once, in the same run.
    resumed = run_printed(store, resume_command(error, "evaluate", evaluation.info.run_id))
    assert resumed.returncode == 0, resumed.output
    kept = re.search(r"Resuming evaluation run \w+: (\d+) of 200 sample runs already written",
                     resumed.output)
    assert kept and 0 < int(kept[1]) <= deleted, resumed.output
    evaluation = store.client.get_run(evaluation.info.run_id)
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["Resumed"] == "1"
    assert not {"Interrupted_by", "Unfinished_results_deleted"} & set(evaluation.data.tags)
    samples = store.runs("Evaluation", f"tags.Evaluation_parent_run_id = "
                                       f"'{evaluation.info.run_id}'")
    assert len(samples) == 200
    assert len({run.data.tags["Image_id"] for run in samples}) == 200
    assert {run.info.status for run in samples} == {"FINISHED"}
    table = json.loads(Path(store.client.download_artifacts(
        evaluation.info.run_id, "results.json", str(store.dir))).read_text())
    column = table["columns"].index("run_id")
    assert sorted(row[column] for row in table["data"]) == sorted(r.info.run_id for r in samples)

    # Then the same command again: training and the resumed evaluation are reused.
    again = complete_run(store)
    assert again.returncode == 0, again.output
    assert "train: reusing FINISHED run" in again.output
    assert f"evaluate: reusing FINISHED run {evaluation.info.run_id}" in again.output
    assert_store_is_sound(store)


def resume_command(line: str, entry_point: str, run_id: str) -> list[str]:
    """The resume command an `Error:` line prints, as arguments."""
    match = re.search(r"without redoing what it wrote: (mlflow run .*?resume_run_id=[0-9a-f]{32})",
                      line)
    assert match, line
    command = shlex.split(match[1])
    assert command[command.index("-e") + 1] == entry_point
    assert command[-1] == f"resume_run_id={run_id}"
    return command


def run_printed(store: Store, command: list[str]) -> Completed:
    """A printed `mlflow run ...` command, run as a user would (with this interpreter's MLflow)."""
    assert command[:2] == ["mlflow", "run"]
    out = subprocess.run([sys.executable, "-m", *command], cwd=store.dir,
                         env=project_env(store.uri), capture_output=True, text=True, timeout=600)
    return Completed(out.returncode, out.stdout, out.stderr)


def test_sigint_mid_saliency_ends_the_step_and_the_main_run_killed(store):
    result = interrupt(store, SALIENCY_LINE, to_group(signal.SIGINT), SLOW_SALIENCY)
    assert result.returncode != 0
    (error,) = error_lines(result.output)
    assert "the pipeline was interrupted by SIGINT" in error
    assert "Traceback" not in result.output
    step = store.runs("Saliency Map Generation", "tags.Algorithm != ''")[0]
    assert step.info.status == "KILLED"
    assert not store.runs("Saliency Map Generation",
                          f"tags.Saliency_parent_run_id = '{step.info.run_id}'")
    main = store.runs("Default")[0]
    assert main.data.tags["Interrupted_by"] == "SIGINT"
    # `mlflow run` marks its run FAILED after the driver ended it KILLED; the driver's settler
    # puts KILLED back once `mlflow run` has exited, with no need of a next start.
    deadline = time.monotonic() + 30
    while store.client.get_run(main.info.run_id).info.status != "KILLED":
        assert time.monotonic() < deadline, "the main run was not put back to KILLED"
        time.sleep(0.2)
    again = complete_run(store)
    assert again.returncode == 0, again.output
    assert store.client.get_run(main.info.run_id).info.status == "KILLED"
    assert_store_is_sound(store)


def test_sigkill_of_the_pipeline_is_settled_by_the_next_start(store):
    result = interrupt(store, EVALUATION_LINE, to_group(signal.SIGKILL),
                       {"split_seed": "1"})
    assert result.returncode != 0
    again = complete_run(store, {"split_seed": "1"})
    assert again.returncode == 0, again.output
    assert "Marked KILLED" in again.output
    assert_store_is_sound(store)
    evaluations = store.runs("Evaluation", "tags.Num_samples != '' AND params.split_seed = '1'")
    assert sorted(r.info.status for r in evaluations) == ["FINISHED", "KILLED"]


def test_a_step_killed_alone_is_named_by_the_driver_in_one_line(store):
    result = interrupt(store, EVALUATION_LINE, to_process("steps.evaluate", signal.SIGKILL),
                       {"split_seed": "2"})
    assert result.returncode != 0
    (error,) = error_lines(result.output)
    assert "the evaluate step" in error and "was killed before it could end its runs" in error
    assert "Traceback" not in result.output
    assert "RUNNING" not in statuses(store)
    (evaluation,) = store.runs("Evaluation", "tags.Num_samples != '' AND params.split_seed = '2'")
    assert evaluation.info.status == "KILLED"
    assert_store_is_sound(store)


def test_the_steps_end_with_their_driver(store):
    steps = {}

    def kill_driver(process):
        steps.update(descendants(process.pid))
        to_process("main.py", signal.SIGKILL)(process)

    result = interrupt(store, EVALUATION_LINE, kill_driver, {"split_seed": "3"})
    assert result.returncode != 0
    (step,) = [pid for pid, args in steps.items() if "steps.evaluate" in args
               and args.split()[0].endswith(("python", "python3"))]
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{step}") and "zombie" not in open(f"/proc/{step}/status").read():
        assert time.monotonic() < deadline, "the evaluate step outlived its driver"
        time.sleep(0.5)
    (evaluation,) = store.runs("Evaluation", "tags.Num_samples != '' AND params.split_seed = '3'")
    if evaluation.info.status == "RUNNING":
        # Seen once under CI load: the step ended without ending its run; the next start
        # settles it, as for any process killed outright.
        assert lifecycle.reconcile_dead_runs(store.client) == [evaluation.info.run_id]
    else:
        assert evaluation.data.tags["Interrupted_by"] == "SIGHUP"
    assert store.client.get_run(evaluation.info.run_id).info.status == "KILLED"


def test_a_lost_server_is_one_line_in_bounded_time_and_a_restart_is_ridden_out(tmp_path):
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    port = free_port()
    # Our retry budget, short for the test; `mlflow run`'s own process gives up at once.
    env = {"SALIENCY_FLOW_SERVER_RETRY_SECONDS": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    # Both servers keep artifacts in one place, as a restarted server would.
    with mlflow_server(tmp_path / "server", backend, port=port) as server:
        store = Store(server.url, tmp_path)
        killed_at = []

        def kill_server(process):
            server.kill()
            killed_at.append(time.monotonic())

        result = interrupt(store, EVALUATION_LINE, kill_server, env=env)
        elapsed = time.monotonic() - killed_at[0]
    assert result.returncode != 0
    (error,) = error_lines(result.output)
    assert f"lost the tracking server {server.url} (connection refused" in error
    ours, _, theirs = result.output.partition(STORE_GONE_LINE)
    assert "Traceback" not in ours, ours
    # What follows is `mlflow run`'s own report that it could not record the end of its run.
    assert not theirs.strip() or "_maybe_set_run_terminated" in theirs, theirs
    assert elapsed < 150, elapsed

    # Back on the same address: the next start settles what was left RUNNING, and a restart of
    # a few seconds mid-step is ridden out.
    env["SALIENCY_FLOW_SERVER_RETRY_SECONDS"] = "60"
    restarted: list[subprocess.Popen] = []
    with mlflow_server(tmp_path / "server", backend, port=port) as server:
        def restart_server(process):
            server.kill()
            time.sleep(3)
            restarted.append(subprocess.Popen(server.proc.args, cwd=tmp_path / "server",
                                              env={**server_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                              start_new_session=True,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))

        try:
            result = interrupt(store, EVALUATION_LINE, restart_server, env=env)
            assert result.returncode == 0, result.output
            assert "Pipeline finished." in result.output
            assert "Marked KILLED" in result.output
            assert_store_is_sound(store)
        finally:
            for process in restarted:
                stop_group(process)


def test_a_lost_database_is_one_line_and_the_next_start_settles_its_runs(tmp_path):
    """The tracking store a PostgreSQL server of the test's own, stopped mid-evaluation as a
    crash would, then started again."""
    with postgres_instance() as database:
        store = Store(database.uri, tmp_path)
        result = interrupt(store, EVALUATION_LINE, lambda process: database.stop())
        assert result.returncode != 0
        (error,) = error_lines(result.output)
        assert "lost the tracking database postgresql+psycopg2://postgres@127.0.0.1:" in error, error
        ours, _, theirs = result.output.partition(STORE_GONE_LINE)
        assert "Traceback" not in ours, ours
        # What follows is `mlflow run`'s own report that it could not record the end of its run.
        assert not theirs.strip() or "_maybe_set_run_terminated" in theirs, theirs
        database.start()
        again = complete_run(store)
        assert again.returncode == 0, again.output
        assert "Marked KILLED" in again.output
        assert_store_is_sound(store)


def test_a_full_artifact_disk_is_one_line_and_no_run_is_left_running_or_half_written(tmp_path):
    """`mlflow run` started in a directory on a small disk: the store's artifacts go there."""
    with disks.small_disk(tmp_path / "disk", 300) as disk:
        store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", disk)
        done = complete_run(store, {"num_samples": "30", "picture_mode": "both"})
        assert done.returncode == 1, done.stdout
        assert "Traceback" not in done.stdout
        errors = error_lines(done.stdout)
        assert len(errors) == 1 and f"cannot write {disk}" in errors[0], done.stdout
        assert "no space left on the device" in errors[0]
        failed = [run for run in store.client.search_runs(
            [e.experiment_id for e in store.client.search_experiments()],
            "attributes.status = 'FAILED'")]
        assert any(run.data.tags.get("Error", "").startswith("OSError") for run in failed)
        assert_store_is_sound(store)
