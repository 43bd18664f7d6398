"""How far a map can be trusted, through the saliency step: the chosen baselines and random
maps recorded, and the model-randomisation sanity check flagging a model whose maps do not
depend on it while passing the MLP, read back from the store."""

from __future__ import annotations

import copy

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from steps.core.image_dataset import load_dataset, random_split
from steps.core.image_models import ModelParams, train_classifier
from steps.train import sklearn_trusted_types
from tests.conftest import module_store

store = module_store("map_trust")
SETTINGS = {"algorithm": "rise", "n": "300", "picture_mode": "combined", "random_maps": "5",
            "metric_steps": "20", "sanity_check": "true"}


class Brightness(mlflow.pyfunc.PythonModel):
    """A pyfunc model whose weights nothing can reach: ten classes by mean brightness."""

    def predict(self, context, model_input, params=None):
        mass = np.asarray(model_input, dtype=float).reshape(len(model_input), -1).mean(axis=1)
        logits = mass[:, None] * np.arange(10)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def models(store):
    """An MLP and a "constant" model (a logistic regression without weights: its answer does
    not depend on the image), fitted on the default split's training images and registered."""
    data = load_dataset("digits")
    split = random_split(data, 0.25, 0)
    images, labels = data.images[split.train_rows], data.labels[split.train_rows]
    with threadpool_limits(1):
        mlp = train_classifier(ModelParams(), images, labels).classifier
        constant = LogisticRegression(max_iter=300).fit(images.reshape(len(images), -1), labels)
    constant = copy.deepcopy(constant)
    constant.coef_[:] = 0
    mlflow.set_experiment("models")  # not whichever experiment an earlier test left active
    requirements = ["scikit-learn", "numpy"]  # given: inferring them takes seconds a model
    mlflow.pyfunc.log_model(name="brightness", python_model=Brightness(),
                            registered_model_name="brightness", pip_requirements=requirements)
    for name, model in (("mlp", mlp), ("constant", constant)):
        mlflow.sklearn.log_model(model, name=name, registered_model_name=name,
                                 pip_requirements=requirements, serialization_format="skops",
                                 skops_trusted_types=sklearn_trusted_types(model))
    return [data.image_ids[row] for row in split.test_rows[:3]]


def step_and_maps(store, model: str, image_ids, **params):
    result = store.process({"model_uri": f"models:/{model}/1", "image_ids": ",".join(image_ids),
                            **SETTINGS, **params}, entry_point="saliency")
    assert result.returncode == 0, result.output
    step = next(r for r in store.runs("Saliency Map Generation")  # newest first
                if "Image_id" not in r.data.tags)
    maps = store.runs("Saliency Map Generation",
                      f"tags.mlflow.parentRunId = '{step.info.run_id}'")
    return result, step, maps


def test_the_chosen_baselines_and_random_maps_are_recorded_and_the_mlp_passes(store, models):
    result, step, maps = step_and_maps(store, "mlp", models, metric_baseline="fill", fill="0.3",
                                       insertion_start="zero")
    assert len(maps) == 3
    for run in maps:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert {k: params[k] for k in ("metric_baseline", "insertion_start", "metric_steps",
                                       "random_maps", "sanity_check")} == {
            "metric_baseline": "fill", "insertion_start": "zero", "metric_steps": "20",
            "random_maps": "5", "sanity_check": "true"}
        config = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/generator_config.json")
        assert config["map_metrics"]["fills"] == [[0.3]]
        assert config["map_metrics"]["sanity"]["threshold"] == 0.5
        curves = np.load(store.client.download_artifacts(run.info.run_id,
                                                         "metrics/causal_curves.npz"))
        assert curves["Deletion_auc"].shape == (21,)
        assert metrics["Deletion_random_percentile"] in {0, 10, 20, 30, 40, 50, 60, 70, 80, 90,
                                                         100}  # one of five, ties halved
        assert tags["Sanity_check"] == "passed", metrics
        assert metrics["Sanity_spearman_signed"] <= 0.5
        assert {"Sanity_spearman", "Sanity_ssim"} <= metrics.keys()
        assert "It passed the sanity check" in tags["mlflow.note.content"]
    assert step.data.tags["Sanity_check"] == "passed"
    assert step.data.metrics["Maps_failing_sanity"] == 0
    assert "barely depends" not in result.stderr
    assert "0 failing the sanity check" in result.stdout


def test_a_model_whose_maps_do_not_depend_on_it_is_flagged(store, models):
    result, step, maps = step_and_maps(store, "constant", models[:2])
    for run in maps:
        assert run.data.tags["Sanity_check"] == "failed"
        assert run.data.metrics["Sanity_spearman_signed"] == 1.0
        assert "**This map barely depends on the model**" in run.data.tags["mlflow.note.content"]
    warnings = [line for line in result.stderr.splitlines() if "barely depends" in line]
    assert len(warnings) == 2 and warnings[0].startswith("Warning: the rise(n=300) map of image")
    assert step.data.tags["Sanity_check"] == "failed"
    assert step.data.metrics["Maps_failing_sanity"] == 1
    assert "Sanity check failed: 2 of 2 maps barely depend on the model" in \
        step.data.tags["mlflow.note.content"]


def test_a_model_that_cannot_be_randomised_is_said_once(store, models):
    result, step, maps = step_and_maps(store, "brightness", models[:2])
    lines = [line for line in result.stderr.splitlines() if "sanity check" in line]
    assert lines == ["Warning: no sanity check: a pyfunc model's weights are not reachable from "
                     "its predict function; the sanity check needs a scikit-learn or ONNX "
                     "model"], result.stderr
    assert step.data.tags["Sanity_check"] == "unavailable"
    assert all("Sanity_check" not in run.data.tags for run in maps) and len(maps) == 2
    assert "Maps_failing_sanity" not in step.data.metrics
