"""Each entry point run alone with `mlflow run . -e ...`, and `-P` overrides arriving as params."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import FAST_TRAIN, METRIC_DEFAULTS, Store
from tests.test_pipeline import artifact_paths, model_uri_of


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("entry_points")
    return Store(f"sqlite:///{directory / 'mlflow.db'}", directory)


SPLIT_SEED = "3"


@pytest.fixture(scope="module")
def train_run(store):
    """`mlflow run . -e train` with overrides: the results land in the Train experiment."""
    result = store.run({**FAST_TRAIN, "hidden_layer_sizes": "16,8", "solver": "sgd",
                        "learning_rate": "0.05", "epochs": "12", "split_seed": SPLIT_SEED},
                       entry_point="train")
    assert result.returncode == 0, result.output
    (run,) = store.runs("Train")
    return run


@pytest.fixture(scope="module")
def model_uri(store, train_run):
    """The train run's model, as the later steps take it."""
    return model_uri_of(store.client, train_run.info.run_id)


def test_train_alone_logs_overrides_into_the_train_experiment(store, train_run):
    params = train_run.data.params
    assert params["hidden_layer_sizes"] == "16,8"
    assert params["solver"] == "sgd"
    assert params["learning_rate"] == "0.05"
    assert params["epochs"] == "12"
    assert params["split_seed"] == SPLIT_SEED
    assert int(train_run.data.tags["Epochs_run"]) <= 12
    assert train_run.info.status == "FINISHED"
    # The run `mlflow run -e train` made in the default experiment points to it.
    (outer,) = store.runs("Default")
    assert train_run.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert outer.data.tags["Step_run_id"] == train_run.info.run_id
    assert outer.info.status == "FINISHED"
    # Named as in a pipeline, and saying where its results are.
    assert outer.data.tags["mlflow.runName"] == train_run.data.tags["mlflow.runName"] == "train"
    assert train_run.info.run_id in outer.data.tags["mlflow.note.content"]
    assert "test accuracy" in train_run.data.tags["mlflow.note.content"]


def test_evaluate_alone(store, train_run, model_uri):
    train_id = train_run.info.run_id
    # The model's own test split: the split settings it was trained with.
    result = store.run({"model_uri": model_uri, "split_seed": SPLIT_SEED, "num_samples": "15"},
                       entry_point="evaluate")
    assert result.returncode == 0, result.output
    runs = store.runs("Evaluation", f"tags.Train_run_id = '{train_id}'")
    parents = [r for r in runs if "Evaluation_parent_run_id" not in r.data.tags]
    samples = [r for r in runs if "Evaluation_parent_run_id" in r.data.tags]
    assert len(parents) == 1 and len(samples) == 15
    assert parents[0].data.metrics["num_samples"] == 15
    # The run `mlflow run -e evaluate` made holds the -P values and points to the step's run.
    (outer,) = [r for r in store.runs("Default")
                if r.data.tags.get("Step_run_id") == parents[0].info.run_id]
    assert outer.data.params["model_uri"] == model_uri
    assert outer.data.params["split_seed"] == SPLIT_SEED
    assert {r.data.tags["Model_uri"] for r in runs} == {model_uri}
    assert {r.info.status for r in runs} == {"FINISHED"}


# benchmarks/README.md's figure for the whole split on SQLite is 21.1 s on an idle machine; CI shares
# the machine with another test worker, so this allows several times that.
WHOLE_SPLIT_SECONDS = 120


def test_evaluate_the_whole_test_split(store, train_run, model_uri):
    """`-e evaluate` with the default `num_samples=0`: every test image, one FINISHED run each,
    logged in the time the README states (with room for a busy machine)."""
    train_id = train_run.info.run_id
    started = time.monotonic()
    result = store.run({"model_uri": model_uri, "split_seed": SPLIT_SEED}, entry_point="evaluate")
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.output
    (parent,) = [r for r in store.runs("Evaluation", f"tags.Train_run_id = '{train_id}'")
                 if "Evaluation_parent_run_id" not in r.data.tags and
                 r.data.metrics.get("num_samples") == 450]
    samples = store.runs("Evaluation",
                         f"tags.Evaluation_parent_run_id = '{parent.info.run_id}'")
    assert len(samples) == 450 and {r.info.status for r in samples} == {"FINISHED"}
    assert len({r.data.tags["Image_id"] for r in samples}) == 450
    progress = [line for line in result.stderr.splitlines() if "runs/s" in line]
    assert progress[-1].startswith("Logging 450 evaluation runs: 450/450 runs"), progress
    assert seconds < WHOLE_SPLIT_SECONDS, seconds


def test_saliency_alone_with_sliding_window_and_per_class_pictures(store, train_run, model_uri):
    train_id = train_run.info.run_id
    result = store.run({"model_uri": model_uri, "image_ids": "3,1000",
                        "algorithm": "sliding_window", "window_size": "3,3", "stride": "2,2",
                        "fill": "0.5", "picture_mode": "per_class"}, entry_point="saliency")
    assert result.returncode == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "training split" in line]
    assert warnings == ["Warning: images 3, 1000 are in the training split (test_fraction 0.25, "
                        "split_seed 0): the model has seen them"], result.stderr
    maps = [r for r in store.runs("Saliency Map Generation") if "Image_id" in r.data.tags]
    assert sorted(r.data.tags["Image_id"] for r in maps) == ["1000", "3"]
    for run in maps:
        assert run.data.params == {"algorithm": "sliding_window", "window_size": "3,3",
                                   "stride": "2,2", "scoring": "occlusion", "fill": "0.5",
                                   **METRIC_DEFAULTS, "predict_batch_size": "256",
                                   "dataset": "digits", "image_size": "",
                                   "test_fraction": "0.25", "split_seed": "0", "eval_split": "test"}
        assert run.data.tags["Evaluation_run_id"] == ""
        assert run.data.tags["Split"] == "train"
        assert {"Deletion_auc", "Insertion_auc", "Entropy"} <= set(run.data.metrics)
        assert run.data.tags["Model_uri"] == model_uri
        assert run.data.tags["Train_run_id"] == train_id
        assert run.data.tags["Dataset"] == "digits"
        assert run.data.tags["Dataset_digest"] == train_run.data.tags["Dataset_digest"]
        paths = artifact_paths(store.client, run.info.run_id)
        assert {f"pictures/class_{k}.png" for k in range(10)} <= paths
        assert "pictures/all_classes.png" not in paths
    # A progress line with rate and ETA (plain lines off a terminal), not a line per map run.
    progress = [line for line in result.stderr.splitlines() if "maps/s" in line]
    assert 1 <= len(progress) <= 3, result.stderr
    assert progress[-1].startswith(
        "Saliency maps (sliding_window(window_size=3,3 stride=2,2 fill=0.5)): 2/2 maps"), progress
    assert "done" in progress[-1] and "elapsed" in progress[-1]


def test_query_that_matches_nothing_is_a_message_not_a_crash(store):
    result = store.run({**FAST_TRAIN, "num_samples": "10",
                        "query": "metrics.Predicted_class_conf < 0"})
    assert result.returncode == 0, result.output
    assert "matched no evaluation sample" in result.stdout
    (main,) = [r for r in store.runs("Default")
               if r.data.tags.get("mlflow.project.entryPoint") == "main"]
    assert main.info.status == "FINISHED"
    assert main.data.tags["Query_matches"] == "0"
    assert "Saliency_run_id" not in main.data.tags
    assert not store.runs("Saliency Map Generation",
                          f"tags.mlflow.parentRunId = '{main.info.run_id}'")


@pytest.mark.parametrize("algorithm,settings,shape", [
    ("mc_rise", {"n": "50", "s": "3"}, (2, 10, 8, 8)),
    ("random_grid", {"n": "50", "cell_size": "3,3"}, (10, 8, 8)),
    ("sliding_radial", {"radius": "2,2", "stride": "2,2", "scoring": "squared_difference"},
     (8, 8)),
])
def test_each_algorithm_alone_on_digits(store, model_uri, algorithm, settings, shape):
    import mlflow

    result = store.run({"model_uri": model_uri, "image_ids": "1003", "algorithm": algorithm,
                        "picture_mode": "combined", **settings}, entry_point="saliency")
    assert result.returncode == 0, result.output
    (run,) = store.runs("Saliency Map Generation",
                        f"params.algorithm = '{algorithm}' AND tags.Image_id = '1003'")
    stored = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))
    assert stored.shape == shape and np.isfinite(stored).all()
    raw = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map_raw.npy"))
    assert raw.shape == shape and np.isfinite(raw).all()
    metrics = run.data.metrics
    assert {"Deletion_auc", "Insertion_auc", "Entropy", "Random_deletion_auc"} <= set(metrics)
    mlflow.set_tracking_uri(store.uri)
    try:
        found = mlflow.search_runs(experiment_names=["Saliency Map Generation"], filter_string=(
            f"params.algorithm = '{algorithm}' AND metrics.Entropy = {metrics['Entropy']}"))
    finally:
        mlflow.set_tracking_uri(None)
    assert found["run_id"].tolist() == [run.info.run_id]


def test_training_that_does_not_converge_says_so_in_one_line(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    result = store.run({"epochs": "2", "hidden_layer_sizes": "8"}, entry_point="train")
    assert result.returncode == 0, result.output
    (run,) = store.runs("Train")
    assert run.data.tags["Converged"] == "false"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == ["Warning: training stopped after 2 epochs without converging; raise "
                        "-P epochs (or the learning rate) for a better model"], result.stderr
