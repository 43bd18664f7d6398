"""Explanations as a service: a saliency run on a colour folder logged as an explainer model,
registered, served by `mlflow models serve` from another directory, and its answers compared
with what the map runs of the same files store."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from steps.core.image_dataset import load_dataset, random_split
from steps.core.image_models import ModelParams, train_classifier
from steps.tracking.explainer_model import config_digest
from steps.train import sklearn_trusted_types
from tests.conftest import module_store, project_env
from tests.images import CLASSES, write_image_folder
from tests.servers import free_port, process_group, wait_until

store = module_store("serving")
SIZE = "16,16"
NAME = "shapes-explainer"
#: The model's output columns: the folder's class names, sorted.
COLUMNS = sorted(CLASSES)
SALIENCY = {"n": "100", "picture_mode": "combined", "random_maps": "2", "metric_steps": "5"}


@pytest.fixture(scope="module")
def source(store):
    """A colour folder, an MLP trained on its training split and registered, and a saliency
    step on two of its test images (one PNG, one JPEG) that registers its explainer (version
    1, alias `live`)."""
    folder = write_image_folder(store.dir / "shapes")
    data = load_dataset(str(folder), (16, 16))
    split = random_split(data, 0.25, 0)
    model = train_classifier(ModelParams(hidden_layer_sizes=(32,), epochs=60),
                             data.images[split.train_rows], data.labels[split.train_rows]).classifier
    mlflow.set_experiment("models")  # not whichever experiment an earlier test left active
    mlflow.sklearn.log_model(model, name="mlp", registered_model_name="shapes-mlp",
                             serialization_format="skops",
                             skops_trusted_types=sklearn_trusted_types(model),
                             pip_requirements=["scikit-learn", "numpy", "skops"])
    tested = [data.image_ids[row] for row in split.test_rows]
    image_ids = [next(i for i in tested if i.endswith(".png")),
                 next(i for i in tested if i.endswith(".jpg"))]
    result = store.process({"model_uri": "models:/shapes-mlp/1", "dataset": str(folder),
                            "image_size": SIZE, "image_ids": ",".join(image_ids),
                            "register_explainer": NAME, **SALIENCY}, entry_point="saliency")
    assert result.returncode == 0, result.output
    assert f"Registered its explainer model as {NAME}/1" in result.stdout
    store.client.set_registered_model_alias(NAME, "live", "1")
    step = next(r for r in store.runs("Saliency Map Generation") if "Image_id" not in r.data.tags)
    maps = {r.data.tags["Image_id"]: r for r in store.runs(
        "Saliency Map Generation", f"tags.Saliency_parent_run_id = '{step.info.run_id}'")}
    files = [(folder / image_id).read_bytes() for image_id in image_ids]
    return step, [maps[i] for i in image_ids], files


def stored_map(store, run) -> np.ndarray:
    return np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))


def check_answers(store, answers, map_runs, classes=None) -> None:
    """Each answer's prediction is its map run's, its maps the map run's arrays."""
    assert len(answers) == len(map_runs)
    for answer, run in zip(answers, map_runs):
        assert answer["predicted_class"] == run.data.tags["Predicted_class"]
        assert answer["confidence"] == pytest.approx(run.data.metrics["Predicted_class_conf"],
                                                     abs=1e-6)
        assert set(answer["probabilities"]) == set(CLASSES)
        assert sum(answer["probabilities"].values()) == pytest.approx(1)
        assert answer["image_size"] == [16, 16]
        stored = stored_map(store, run)
        wanted = classes or [run.data.tags["Predicted_class"]]
        assert list(answer["saliency_map"]) == wanted
        for name in wanted:
            served = np.asarray(answer["saliency_map"][name])
            assert served.shape == (16, 16)
            np.testing.assert_allclose(served, stored[COLUMNS.index(name)], rtol=0, atol=1e-6)


def test_both_versions_are_tagged_with_their_source_classifier_and_configuration(store, source,
                                                                                  served):
    step, map_runs, _ = source
    result = served[1]
    assert result.returncode == 0, result.output
    assert f"registered as {NAME}/2" in result.stdout
    config = mlflow.artifacts.load_dict(f"runs:/{map_runs[0].info.run_id}/generator_config.json")
    first, second = (store.client.get_model_version(NAME, v) for v in ("1", "2"))
    assert first.tags["Explainer_source_run_id"] == step.info.run_id
    assert second.tags["Explainer_source_run_id"] == map_runs[1].info.run_id
    for version in (first, second):
        assert version.tags["Model_version"] == "shapes-mlp/1"
        assert version.tags["Model_uri"] == "models:/shapes-mlp/1"
        assert version.tags["Config_digest"] == config_digest(config)
    assert store.client.get_run(step.info.run_id).data.tags["Explainer_version"] == f"{NAME}/1"


def post(url: str, frame: pd.DataFrame) -> tuple[int, dict]:
    body = {"dataframe_split": {"columns": list(frame.columns), "data": [
        [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in row]
        for row in frame.itertuples(index=False)]}}
    request = urllib.request.Request(f"{url}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(store, source, tmp_path_factory):
    """`mlflow models serve -m models:/<name>@live --env-manager local` on 127.0.0.1, started in
    a directory of its own without the project on its path; while it starts (seconds), the
    explainer entry point logs version 2 from the second image's map run. Yields the server's
    URL and the entry point's result."""
    where = tmp_path_factory.mktemp("elsewhere")
    port = free_port()
    env = project_env(store.uri)
    env.pop("PYTHONPATH", None)
    log = where / "serve.log"
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@live",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    with process_group(args, log, env=env, cwd=where) as proc:
        result = store.process({"saliency_run_id": source[1][1].info.run_id,
                                "register_as": NAME}, entry_point="explainer")
        wait_until(ready, proc, log, "mlflow models serve", 120)
        yield url, result


def test_served_maps_equal_the_map_runs_of_the_same_files(store, source, served):
    _, map_runs, files = source
    status, answer = post(served[0], pd.DataFrame({"image": files}))
    assert status == 200, answer
    check_answers(store, answer["predictions"], map_runs)
    status, answer = post(served[0], pd.DataFrame({"image": files[:1], "classes": ["one, zero"]}))
    assert status == 200, answer
    check_answers(store, answer["predictions"], map_runs[:1], ["one", "zero"])


def test_a_bad_row_gets_400_naming_it_and_the_server_keeps_serving(store, source, served):
    _, map_runs, files = source
    status, answer = post(served[0], pd.DataFrame({"image": [files[0], b"not an image"]}))
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "row 1: not a readable PNG or JPEG image" in answer["message"]
    status, answer = post(served[0], pd.DataFrame({"image": files[:1], "classes": ["seven"]}))
    assert status == 400 and "row 0: the model has no class 'seven'" in answer["message"]
    status, answer = post(served[0], pd.DataFrame({"image": files[1:]}))
    assert status == 200, answer
    check_answers(store, answer["predictions"], map_runs[1:])


def test_the_loaded_model_answers_the_same_in_python(store, source, served):
    _, map_runs, files = source
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/2")  # the explainer entry point's
    answers = model.predict(pd.DataFrame({"image": files}))
    check_answers(store, answers, map_runs)
