"""Scale-out on Dask (`-P cluster=`): a real scheduler and three workers on 127.0.0.1, writing into
an `mlflow server` with a PostgreSQL backend, proxied artifacts and basic auth (the workers'
own environment has no credentials: the steps forward theirs). Two tests each kill a worker,
one mid-evaluation and one mid-saliency; the pipeline test runs first, on all three, and ships
the project's code to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.entities import ViewType

from tests.conftest import FAST_TRAIN, PROJECT_DIR, Store, project_env, start_mlflow_run
from tests.servers import (ADMIN_PASSWORD, ADMIN_USER, dask_cluster, mlflow_server,
                           postgres_database)
from tests.test_pipeline import model_uri_of

SAMPLES = 100  # two partitions
PIPELINE = {**FAST_TRAIN, "num_samples": str(SAMPLES), "n": "50", "max_images": "2",
            "picture_mode": "combined"}
WORKERS = 3
#: How long the scheduler of the paused-worker test waits for a silent worker.
PAUSED_WORKER_TTL_SECONDS = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cluster")
    with postgres_database() as database, \
            mlflow_server(directory / "server", database, basic_auth=True) as server, \
            dask_cluster(directory / "dask", WORKERS) as cluster, \
            pytest.MonkeyPatch.context() as environment:
        # This process's client and every `mlflow run` the tests start.
        environment.setenv("MLFLOW_TRACKING_USERNAME", ADMIN_USER)
        environment.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        environment.setenv("MLFLOW_TRACKING_URI", server.url)
        yield Store(server.url, directory), cluster


def samples_of(store: Store, evaluation_id: str) -> dict[str, object]:
    runs = store.runs("Evaluation", f"tags.Evaluation_parent_run_id = '{evaluation_id}'")
    by_image = {run.data.tags["Image_id"]: run for run in runs}
    assert len(by_image) == len(runs), "an image has two runs"
    return by_image


def maps_of(store: Store, saliency_id: str) -> dict[str, object]:
    runs = store.runs("Saliency Map Generation", f"tags.Saliency_parent_run_id = '{saliency_id}'")
    by_image = {run.data.tags["Image_id"]: run for run in runs}
    assert len(by_image) == len(runs), "an image has two map runs"
    return by_image


def test_the_pipeline_on_a_cluster_writes_what_one_process_writes(setup):
    store, cluster = setup
    on_cluster = store.run({**PIPELINE, "cluster": cluster.address})
    assert on_cluster.returncode == 0, on_cluster.output
    assert f"Dask cluster {cluster.address}: {WORKERS} workers, dashboard http://" in \
        on_cluster.output
    main = store.runs("Default", "tags.`mlflow.project.entryPoint` = 'main'")[0]
    evaluation_id = main.data.tags["Evaluation_run_id"]
    assert store.client.get_run(evaluation_id).data.tags["Dask_cluster"] == cluster.address
    spread = samples_of(store, evaluation_id)
    assert len(spread) == SAMPLES
    assert all(run.info.status == "FINISHED" for run in spread.values())
    assert len({run.data.tags["Dask_worker"] for run in spread.values()}) >= 2
    model_uri = model_uri_of(store.client, main.data.tags["Train_run_id"])

    alone = store.run({"model_uri": model_uri, "num_samples": str(SAMPLES)},
                      entry_point="evaluate")
    assert alone.returncode == 0, alone.output
    unspread = [run for run in store.runs("Evaluation", "tags.Num_samples != ''")
                if "Dask_cluster" not in run.data.tags]
    single = samples_of(store, unspread[0].info.run_id)
    assert sorted(single) == sorted(spread)
    for image_id, run in single.items():
        assert run.data.metrics == spread[image_id].data.metrics
        for tag in ("GT_class", "Predicted_class", "Correct", "Model_uri", "Split"):
            assert run.data.tags[tag] == spread[image_id].data.tags[tag]

    # The maps: one partition per image, each on a worker, as one process makes them.
    saliency_id = main.data.tags["Saliency_run_id"]
    assert store.client.get_run(saliency_id).data.tags["Dask_cluster"] == cluster.address
    explained = maps_of(store, saliency_id)
    assert len(explained) == 2
    assert all(run.info.status == "FINISHED" for run in explained.values())
    assert all(run.data.tags["Dask_worker"] for run in explained.values())
    image_ids = main.data.tags["Queried_image_ids"].split(",")
    here = store.run({"model_uri": model_uri, "image_ids": ",".join(image_ids), "n": "50",
                      "picture_mode": "combined", "evaluation_run_ids": ",".join(
                          explained[i].data.tags["Evaluation_run_id"] for i in image_ids)},
                     entry_point="saliency")
    assert here.returncode == 0, here.output
    (step,) = [run for run in store.runs("Saliency Map Generation", "tags.Algorithm = 'rise'")
               if "Dask_cluster" not in run.data.tags]
    for image_id, run in maps_of(store, step.info.run_id).items():
        other = explained[image_id]
        assert np.array_equal(np.load(store.client.download_artifacts(
            run.info.run_id, "saliency_map.npy", str(store.dir / "here"))), np.load(
            store.client.download_artifacts(other.info.run_id, "saliency_map.npy",
                                            str(store.dir / "spread"))))
        assert run.data.metrics == other.data.metrics
        assert run.data.params == other.data.params


def test_workers_import_the_step_s_code_and_no_plugin_is_left(setup):
    from distributed import Client

    from steps.core.code_version import code_version
    from steps.tracking import worker_code

    store, cluster = setup
    with Client(cluster.address, timeout=30) as client:
        versions = client.run(worker_code.imported_version)
        # The pipeline test's steps installed it: the workers had no code of this project.
        assert set(versions.values()) == {code_version()}
        assert all(f"/{worker_code.INSTALL_PREFIX}" in where for where in client.run(
            lambda: __import__("steps").__file__).values())
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(
            dask_scheduler.worker_plugins))
        assert not [name for name in plugins if name.startswith("saliency-flow")]


def test_each_worker_loads_the_model_once_and_predicts_its_partitions(setup):
    """The pipeline's evaluate and saliency steps: each worker loaded the model and the images
    once for each (the preflight), and its partitions found them in its cache."""
    from distributed import Client

    from steps.tracking.inputs import _cached_model_inputs

    _, cluster = setup
    with Client(cluster.address, timeout=30) as client:
        caches = client.run(lambda: _cached_model_inputs.cache_info()._asdict())
    assert {cache["misses"] for cache in caches.values()} == {2}, caches
    assert sum(cache["hits"] for cache in caches.values()) >= 2 + len(caches) * 2, caches


@pytest.mark.parametrize("where, why", [
    ("other", "it reads other images at digits (digest {theirs}, the step's 000000000000): "
              "give the workers the same files, on a shared path or in an object store"),
    ("missing", "no folder at {nowhere}"),
], ids=["other-images", "no-images"])
def test_a_worker_that_cannot_read_the_step_s_images_is_refused_in_one_line(setup, where, why):
    from distributed import Client

    from steps.tracking.cluster import ClusterError, TrackingSettings, prepare_workers
    from steps.tracking.evaluation import EvaluationRecipe
    from steps.tracking.inputs import dataset_digest

    store, cluster = setup
    model_uri = model_uri_of(store.client, store.runs("Train")[0].info.run_id)
    nowhere = store.dir / "nowhere" / "images"
    dataset = "digits" if where == "other" else str(nowhere)
    recipe = EvaluationRecipe(model_uri, dataset, (), {}, "0" * 64, "test")
    with Client(cluster.address, timeout=30) as client, pytest.raises(ClusterError) as refused:
        prepare_workers(client, recipe.inputs, TrackingSettings.current())
    message = refused.value.message
    assert "\n" not in message
    assert message.startswith("Dask worker tcp://127.0.0.1:")
    theirs = dataset_digest("digits", ())[:12]
    assert f" cannot load the model and the images: {why.format(theirs=theirs, nowhere=nowhere)}" in message


def test_a_worker_on_another_code_version_is_refused_in_one_line(setup, monkeypatch):
    from distributed import Client

    from steps.core.code_version import code_version
    from steps.tracking.cluster import SHIP_CODE_ENV, ClusterError, project_code

    store, cluster = setup
    monkeypatch.setenv(SHIP_CODE_ENV, "0")  # the workers' image is meant to hold the code
    with Client(cluster.address, timeout=30) as client:
        with pytest.raises(ClusterError) as refused, project_code(client, "0" * 40 + ":other"):
            pass
    message = refused.value.message
    assert "\n" not in message
    assert message.startswith("Dask worker tcp://127.0.0.1:")
    assert message.endswith(
        f"(and {WORKERS - 1} other workers) runs saliency-flow code version {code_version()}, "
        f"this step {'0' * 40}:other: install this checkout's code in the workers' image, "
        f"or unset {SHIP_CODE_ENV}")


def test_a_worker_without_credentials_is_refused_in_one_line(setup):
    from distributed import Client

    from steps.tracking.cluster import ClusterError, TrackingSettings, check_workers

    store, cluster = setup
    step = store.runs("Evaluation", "tags.Num_samples != ''")[0]
    settings = TrackingSettings.current()
    assert "saliency-flow-admin" not in repr(settings)  # a task's repr shows no secret
    with Client(cluster.address, timeout=30) as client:
        check_workers(client, step.info.run_id, settings)  # the pipeline's own: accepted
        with pytest.raises(ClusterError) as refused:
            check_workers(client, step.info.run_id, settings.without(
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"))
    assert refused.value.message.startswith("Dask worker tcp://127.0.0.1:")
    assert refused.value.message.endswith(
        f" cannot write into the tracking store {store.uri}: the tracking server {store.uri} "
        "asks for a user name and password (HTTP 401). Set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD.")


def test_a_partition_of_a_stale_attempt_writes_nothing(setup):
    """A partition checks the step run's attempt token before each batch: once a resumed step
    (or a newer attempt) replaced it, a partition still running writes no further run."""
    from steps.core.code_version import code_version
    from steps.tracking.cluster import TrackingSettings
    from steps.tracking.sample_runs import SampleRun, write_partition

    store, _ = setup
    (step,) = store.runs("Evaluation",
                         "tags.Dask_attempt != '' AND tags.Num_samples != ''")
    current = step.data.tags["Dask_attempt"]  # the pipeline's attempt on the cluster
    assert {run.data.tags["Dask_attempt"] for run in samples_of(
        store, step.info.run_id).values()} == {current}
    sample = SampleRun("fence", {"Predicted_class_conf": 0.5}, {
        "Image_id": "fence", "mlflow.parentRunId": step.info.run_id})
    written = {"settings": TrackingSettings.current(), "version": code_version(),
               "experiment_id": step.info.experiment_id, "parent_id": step.info.run_id}
    assert write_partition(99, [sample], attempt="0" * 32, **written) == []
    assert not store.runs("Evaluation", "tags.Image_id = 'fence'")
    (run_id,) = write_partition(99, [sample], attempt=current, **written)
    assert store.client.get_run(run_id).data.tags["Dask_attempt"] == current
    store.client.delete_run(run_id)


def step_on(store: Store, cluster, entry_point: str, params: dict[str, str], marker: str,
            at_marker) -> tuple[int, str]:
    """`mlflow run -e <entry point>` of the trained model on the cluster, in a process group of
    its own; `at_marker(process)` once a line holding `marker` appears."""
    model_uri = model_uri_of(store.client, store.runs("Train")[0].info.run_id)
    process = start_mlflow_run({"model_uri": model_uri, **params, "cluster": cluster.address},
                               entry_point=entry_point, tracking_uri=store.uri, cwd=store.dir)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            at_marker(process)
            break
    lines.append(process.stdout.read())
    return process.wait(timeout=300), "".join(lines)


def evaluate_on(store: Store, cluster, split_seed: int, at_first_progress) -> tuple[int, str]:
    """The evaluate step of 200 samples on the cluster; `at_first_progress(process)` once a
    quarter is written (others under way)."""
    return step_on(store, cluster, "evaluate",
                   {"num_samples": "200", "split_seed": str(split_seed)},
                   "Logging 200 evaluation runs:", at_first_progress)


def step_run(store: Store, split_seed: int):
    """The Evaluation run of the step run alone with this split seed (MLflow's own run of it,
    in Default, holds the parameters and names it)."""
    (launched,) = store.runs("Default", f"params.split_seed = '{split_seed}' AND "
                                        "tags.`mlflow.project.entryPoint` = 'evaluate'")
    return store.client.get_run(launched.data.tags["Step_run_id"])


def test_ctrl_c_stops_the_cluster_s_partitions_before_the_step_ends_its_runs(setup):
    store, cluster = setup
    code, output = evaluate_on(store, cluster, 1,
                               lambda process: os.killpg(process.pid, signal.SIGINT))
    assert code != 0
    assert "the evaluate step was interrupted by SIGINT" in output
    assert "Traceback" not in output, output
    step = step_run(store, 1)
    assert step.info.status == "KILLED"
    time.sleep(2)  # a partition still writing now would show below
    assert not store.runs("Evaluation",
                          f"tags.Evaluation_parent_run_id = '{step.info.run_id}'")
    assert not store.runs("Evaluation", "attributes.status = 'RUNNING'")


def test_a_paused_partition_released_after_its_retry_writes_no_image_twice(setup, tmp_path):
    """A worker paused (SIGSTOP, not killed) mid-partition past the scheduler's worker TTL: the
    scheduler gives up on it and its partition runs again on the other worker. Released
    (SIGCONT) once the step has finished, the paused try ends the batch it was writing, finds
    itself fenced out, drops what it doubled and stops; its worker then exits."""
    store, _ = setup
    with dask_cluster(tmp_path / "dask", 2, {
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": f"{PAUSED_WORKER_TTL_SECONDS}s"}) as cluster:
        paused = cluster.workers[0]
        code, output = evaluate_on(store, cluster, 3,
                                   lambda _: paused.send_signal(signal.SIGSTOP))
        paused.send_signal(signal.SIGCONT)
        assert code == 0, output
        paused.wait(timeout=180)
    evaluation = step_run(store, 3)
    assert evaluation.info.status == "FINISHED"
    samples = samples_of(store, evaluation.info.run_id)  # no image twice
    assert len(samples) == 200
    assert all(run.info.status == "FINISHED" for run in samples.values())
    assert not store.runs("Evaluation", "attributes.status = 'RUNNING'")
    # The race happened: the worker left running wrote (at least) the paused one's partition
    # too, 3 or 4 of the 4.
    partitions = {}
    for run in store.client.search_runs(
            [evaluation.info.experiment_id],
            f"tags.Evaluation_parent_run_id = '{evaluation.info.run_id}'", ViewType.ALL, 1000):
        partitions.setdefault(run.data.tags["Dask_worker"], set()).add(run.data.tags["Partition"])
    assert max(map(len, partitions.values())) >= 3, partitions


def test_a_step_resumed_while_its_dead_attempt_s_partitions_run_doubles_nothing(setup):
    """The evaluate step SIGKILLed mid-way, its partitions still running on the workers
    (Dask cannot stop a running task), and resumed at once: the resumed step fences the old
    attempt out, waits for its writes to stop and writes only what is missing."""
    store, cluster = setup
    code, _ = evaluate_on(store, cluster, 4, lambda process: os.killpg(process.pid,
                                                                      signal.SIGKILL))
    assert code != 0
    evaluation = step_run(store, 4)
    resumed = store.run({"resume_run_id": evaluation.info.run_id}, entry_point="evaluate")
    assert resumed.returncode == 0, resumed.output
    assert "Resuming evaluation run" in resumed.output
    time.sleep(2)  # a partition of the dead attempt still writing now would show below
    evaluation = store.client.get_run(evaluation.info.run_id)
    assert evaluation.info.status == "FINISHED"
    samples = samples_of(store, evaluation.info.run_id)  # no image twice
    assert len(samples) == 200
    assert all(run.info.status == "FINISHED" for run in samples.values())
    assert not store.runs("Evaluation", "attributes.status = 'RUNNING'")


def test_a_worker_killed_mid_evaluation_costs_no_run_and_doubles_none(setup):
    store, cluster = setup
    code, output = evaluate_on(store, cluster, 2,
                               lambda _: cluster.workers[0].send_signal(signal.SIGKILL))
    assert code == 0, output
    assert cluster.workers[0].poll() is not None
    evaluation = step_run(store, 2)
    assert evaluation.info.status == "FINISHED"
    samples = samples_of(store, evaluation.info.run_id)
    assert len(samples) == 200
    assert all(run.info.status == "FINISHED" for run in samples.values())
    assert not store.runs("Evaluation", "attributes.status = 'RUNNING'")


def test_a_worker_killed_mid_saliency_costs_no_map_and_doubles_none(setup):
    store, cluster = setup
    # At the first progress line a partition is done and others are under way.
    code, output = step_on(store, cluster, "saliency",
                           {"image_ids": "0,1,2,3,4,5", "n": "3000", "picture_mode": "combined"},
                           "Saliency maps (",
                           lambda _: cluster.workers[1].send_signal(signal.SIGKILL))
    assert code == 0, output
    assert cluster.workers[1].poll() is not None
    (launched,) = store.runs("Default", "params.n = '3000' AND "
                                       "tags.`mlflow.project.entryPoint` = 'saliency'")
    step = store.client.get_run(launched.data.tags["Step_run_id"])
    assert step.info.status == "FINISHED"
    made = maps_of(store, step.info.run_id)
    assert sorted(made) == ["0", "1", "2", "3", "4", "5"]
    for run in made.values():
        assert run.info.status == "FINISHED"
        assert {"saliency_map.npy", "pictures"} <= {
            a.path for a in store.client.list_artifacts(run.info.run_id)}
    assert not store.runs("Saliency Map Generation", "attributes.status = 'RUNNING'")


def test_a_remote_cluster_with_a_store_only_this_machine_has_is_one_line(tmp_path):
    env = {**project_env(f"sqlite:///{tmp_path / 'mlflow.db'}"),
           "PYTHONPATH": str(PROJECT_DIR)}
    env.pop("MLFLOW_RUN_ID", None)
    out = subprocess.run([sys.executable, "-m", "steps.evaluate", "--model_uri", "models:/m-0",
                          "--cluster", "tcp://127.0.0.1:1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert [line for line in out.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: the workers of the Dask cluster tcp://127.0.0.1:1 cannot write into the "
        f"tracking store sqlite:///{tmp_path / 'mlflow.db'}, a file on this machine. Use a "
        "tracking server with proxied artifacts (mlflow server --artifacts-destination ...), "
        "e.g. MLFLOW_TRACKING_URI=http://host:5000, or use -P cluster=local:N"]
