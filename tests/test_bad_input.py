"""Bad input ends in one clear line naming the parameter, a non-zero exit, and FAILED runs."""

from __future__ import annotations

import pytest

from tests.conftest import Store

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
    ("main", {"algorithm": "gradcam"}, "algorithm", "'rise', 'sliding_window'"),
    ("main", {"query": "metrics.Predicted_class_conf <<< 2"}, "query", "MLflow rejected query"),
    ("main", {"query": "tags.Correct = 'false' OR tags.GT_class = '1'"}, "query", "MLflow rejected"),
    ("evaluate", {"train_run_id": "not-a-run"}, "train_run_id", "is not an MLflow run ID"),
    ("evaluate", {"train_run_id": UNKNOWN_RUN}, "train_run_id", "no run 0123456789abcdef"),
    ("evaluate", {"train_run_id": "{outer}"}, "train_run_id", "belongs to experiment 'Default'"),
    ("evaluate", {"train_run_id": "{train}", "num_samples": "-1"}, "num_samples", "x>=0"),
    ("saliency", {"train_run_id": "{train}", "image_ids": "5", "algorithm": "lime"},
     "algorithm", "'rise', 'sliding_window'"),
    ("saliency", {"train_run_id": "{train}", "image_ids": "5", "p1": "1.5"}, "p1", "0<=x<=1"),
    ("saliency", {"train_run_id": "{train}", "image_ids": "5", "window_size": "2"},
     "window_size", "2 comma-separated integers >= 1"),
    ("saliency", {"train_run_id": "{train}", "image_ids": "99999"}, "image_ids",
     "outside the digits dataset (IDs 0 to 1796)"),
    ("saliency", {"train_run_id": "{train}", "image_ids": "5",
                  "evaluation_run_ids": UNKNOWN_RUN}, "evaluation_run_ids", "no run"),
    ("saliency", {"train_run_id": "{train}", "image_ids": "5,6",
                  "evaluation_run_ids": UNKNOWN_RUN}, "evaluation_run_ids",
     "1 run IDs given for 2 image IDs"),
]


@pytest.mark.parametrize("entry_point,params,param,words", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_line_and_a_failed_run(store, train_id, outer_id, entry_point,
                                                      params, param, words):
    params = {k: v.format(train=train_id, outer=outer_id) for k, v in params.items()}
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
