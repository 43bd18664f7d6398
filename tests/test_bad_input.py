"""Bad input ends in one clear line naming the parameter, a non-zero exit, and FAILED runs."""

from __future__ import annotations

import pytest

from tests.conftest import Store

ALGORITHM_CHOICES = "'mc_rise', 'random_grid', 'rise', 'sliding_radial', 'sliding_window'"
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad_input")
    store = Store(f"sqlite:///{directory / 'mlflow.db'}", directory)
    store.train(epochs="5")
    return store


@pytest.fixture(scope="module")
def train_id(store):
    return store.runs("Train")[0].info.run_id


@pytest.fixture(scope="module")
def model_uri(store, train_id):
    """The train run's model, as its `Model_uri` tag names it."""
    return store.client.get_run(train_id).data.tags["Model_uri"]


@pytest.fixture(scope="module")
def deleted_id(store):
    """A FINISHED run of the Train experiment, deleted."""
    client = store.client
    run = client.create_run(client.get_experiment_by_name("Train").experiment_id)
    client.set_terminated(run.info.run_id)
    client.delete_run(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def outer_id(store):
    """A run of the Default experiment: the one `mlflow run -e train` made."""
    return store.runs("Default")[-1].info.run_id


CASES = [
    # (entry point, params, parameter named, words of the message)
    ("train", {"epochs": "abc"}, "epochs", "not a valid integer"),
    ("train", {"epochs": "0"}, "epochs", "not in the range x>=1"),
    ("train", {"learning_rate": "-0.1"}, "learning_rate", "not in the range x>0"),
    ("train", {"test_fraction": "1.5"}, "test_fraction", "not in the range 0<x<1"),
    ("train", {"alpha": "lots"}, "alpha", "not a valid float"),
    ("train", {"hidden_layer_sizes": "64,x"}, "hidden_layer_sizes", "comma-separated integers >= 1"),
    ("train", {"hidden_layer_sizes": "64,0"}, "hidden_layer_sizes", "comma-separated integers >= 1"),
    ("train", {"solver": "rmsprop"}, "solver", "'adam', 'sgd', 'lbfgs'"),
    ("main", {"epochs": "1.5"}, "epochs", "not a valid integer"),
    ("main", {"algorithm": "gradcam"}, "algorithm", ALGORITHM_CHOICES),
    ("main", {"query": "metrics.Predicted_class_conf <<< 2"}, "query", "MLflow rejected query"),
    ("main", {"query": "tags.Correct = 'false' OR tags.GT_class = '1'"}, "query", "MLflow rejected"),
    ("main", {"p1": "nan"}, "p1", "'nan' is not a finite number"),
    ("main", {"n": "100000000"}, "n", "n 100000000 needs 23.8 GiB of masks for 8×8 images"),
    ("main", {"cluster": "local:1000"}, "cluster", "local:1000 would start 1000 worker processes"),
    ("evaluate", {"cluster": "tcp://host"}, "cluster", "'tcp://host' is not a cluster: give local:N"),
    ("main", {"compare": "rise,gradcam"}, "compare", "'gradcam' is not an algorithm; choose"),
    ("main", {"compare": "rise(s=0),sliding_window"}, "compare", "rise(s=...): 0 is not in"),
    ("compare", {"saliency_run_ids": "{train}"}, "saliency_run_ids", "at least two"),
    ("compare", {"saliency_run_ids": "{train},{train}"}, "saliency_run_ids",
     "belongs to experiment 'Train'"),
    ("main", {"train_run_id": "{deleted}"}, "train_run_id", "is deleted; restore it first"),
    ("main", {"model_uri": "{model}", "train_run_id": "{train}"}, "model_uri",
     "give model_uri or train_run_id, not both"),
    ("evaluate", {"model_uri": "not-a-model"}, "model_uri", "is not an MLflow model URI"),
    ("evaluate", {}, "model_uri", "give the model to evaluate"),
    ("evaluate", {"model_uri": f"runs:/{UNKNOWN_RUN}/model"}, "model_uri",
     f"model runs:/{UNKNOWN_RUN}/model: not found in"),
    ("evaluate", {"model_uri": "models:/m-0123456789abcdef"}, "model_uri",
     "model models:/m-0123456789abcdef: not found in"),
    ("evaluate", {"model_uri": "runs:/{outer}/model"}, "model_uri", "cannot be read"),
    ("evaluate", {"model_uri": "runs:/{deleted}/model"}, "model_uri",
     "is deleted; restore it with `mlflow runs restore"),
    ("evaluate", {"model_uri": "{model}", "num_samples": "-1"}, "num_samples", "x>=0"),
    ("evaluate", {"model_uri": "{model}", "test_fraction": "inf"}, "test_fraction",
     "'inf' is not a finite number"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "lime"},
     "algorithm", ALGORITHM_CHOICES),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "p1": "1.5"}, "p1", "0<x<1"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "p1": "0"}, "p1", "0<x<1"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "sliding_window",
                  "window_size": "9,2"}, "window_size", "9,2 is larger than the 8×8 images"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "sliding_radial",
                  "stride": "1,12"}, "stride", "1,12 is larger than the 8×8 images"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "random_grid",
                  "cell_size": "10,10"}, "cell_size", "10,10 is larger than the 8×8 images"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "n": "20000000"}, "n",
     "n 20000000 needs 4.8 GiB of masks for 8×8 images, over the 2 GiB budget"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "window_size": "2"},
     "window_size", "2 comma-separated integers >= 1"),
    ("saliency", {"image_ids": "5"}, "model_uri", "give the model to explain"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "mc_rise",
                  "fill_colors": "0;2"}, "fill_colors", "is not ';'-separated colours in [0, 1]"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "mc_rise",
                  "fill_colors": "1,0,0;0,0,1"}, "fill_colors", "do not fit 1-channel images"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5", "algorithm": "sliding_radial",
                  "radius": "0,2"}, "radius", "2 comma-separated numbers > 0"),
    ("saliency", {"model_uri": "{model}", "image_ids": "99999"}, "image_ids",
     "image IDs 99999 are not in the digits dataset (1797 images"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5",
                  "evaluation_run_ids": UNKNOWN_RUN}, "evaluation_run_ids", "no run"),
    ("saliency", {"model_uri": "{model}", "image_ids": "5,6",
                  "evaluation_run_ids": UNKNOWN_RUN}, "evaluation_run_ids",
     "1 run IDs given for 2 image IDs"),
]


@pytest.mark.parametrize("entry_point,params,param,words", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_line_and_a_failed_run(store, train_id, model_uri, outer_id,
                                                      deleted_id, entry_point, params, param,
                                                      words):
    params = {k: v.format(train=train_id, model=model_uri, outer=outer_id, deleted=deleted_id)
              for k, v in params.items()}
    before = {r.info.run_id for r in store.all_runs()}
    result = store.run(params, entry_point=entry_point)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert f"'--{param}'" in errors[0] and words in errors[0], errors[0]
    assert "Traceback" not in result.output
    new_runs = [r for r in store.all_runs() if r.info.run_id not in before]
    assert new_runs, "the run MLflow started should be kept, marked FAILED"
    assert {r.info.status for r in new_runs} == {"FAILED"}
    assert "RUNNING" not in {r.info.status for r in store.all_runs()}
    if entry_point == "main":  # named for what it was asked to do, not at random
        dataset = params.get("dataset", "digits").rstrip("/").rsplit("/", 1)[-1]
        (main,) = new_runs
        assert main.info.run_name == \
            f"pipeline · {dataset} · {params.get('compare') or params.get('algorithm', 'rise')}"
