"""Models: URIs resolved against a real store, loaded by flavour, tied to the dataset's classes,
and checked against the images before anything runs."""

from __future__ import annotations

import click
import mlflow
import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from sklearn.linear_model import LogisticRegression

from steps.core.image_dataset import load_dataset
from steps.core.model_input import InputConvention
from steps.core.image_models import (ModelError, ProbabilityFunction, ProbaModel, check_model_fits,
                               class_mapping)
from steps.tracking.model_loading import load_image_model, resolve_model_uri


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fitted(digits):
    rows = digits.images[:400].reshape(400, -1)
    return LogisticRegression(max_iter=200).fit(rows, digits.labels[:400])


class ImageBatchModel(mlflow.pyfunc.PythonModel):
    """Takes the image batch itself `[N, 8, 8]`, as its tensor signature says."""

    def predict(self, context, model_input, params=None):
        assert model_input.ndim == 3, model_input.shape
        mass = model_input.reshape(len(model_input), -1).mean(axis=1)
        return np.stack([mass, 1 - mass], axis=1)


@pytest.fixture(scope="module")
def logged(tmp_path_factory, fitted):
    directory = tmp_path_factory.mktemp("models")
    mlflow.set_tracking_uri(f"sqlite:///{directory / 'mlflow.db'}")
    mlflow.set_experiment("models")
    with mlflow.start_run() as run:
        sklearn_info = mlflow.sklearn.log_model(fitted, name="logreg",
                                                registered_model_name="digits-logreg")
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 8, 8))]))
        images_info = mlflow.pyfunc.log_model(name="images", python_model=ImageBatchModel(),
                                              signature=signature)
    with mlflow.start_run() as deleted:
        mlflow.sklearn.log_model(fitted, name="gone")
    client = MlflowClient()
    client.set_registered_model_alias("digits-logreg", "champion", "1")
    client.delete_run(deleted.info.run_id)
    yield {"run": run.info.run_id, "sklearn": sklearn_info, "images": images_info,
           "deleted": deleted.info.run_id}
    mlflow.set_tracking_uri(None)


def test_every_uri_form_resolves_with_its_lineage(logged):
    run_id = logged["run"]
    by_alias = resolve_model_uri("models:/digits-logreg@champion")
    assert (by_alias.uri, by_alias.version, by_alias.alias, by_alias.source_run_id) == (
        "models:/digits-logreg/1", "digits-logreg/1", "champion", run_id)
    assert by_alias.lineage_tags() == {"Model_uri": "models:/digits-logreg/1",
                                       "Model_version": "digits-logreg/1",
                                       "Model_alias": "champion", "Train_run_id": run_id}
    by_version = resolve_model_uri("models:/digits-logreg/1")
    assert by_version.uri == "models:/digits-logreg/1" and by_version.alias is None
    by_id = resolve_model_uri(logged["sklearn"].model_uri)
    assert by_id.source_run_id == run_id and by_id.version is None
    by_run = resolve_model_uri(f"runs:/{run_id}/logreg")
    assert by_run.source_run_id == run_id


@pytest.mark.parametrize("uri,words", [
    ("models:/digits-logreg@nobody", "not found"),
    ("models:/no-such-model/1", "not found"),
    ("runs:/0123456789abcdef0123456789abcdef/model", "not found"),
])
def test_missing_models_are_one_line_naming_the_parameter(logged, uri, words):
    with pytest.raises(click.BadParameter, match=words) as caught:
        resolve_model_uri(uri)
    assert caught.value.param_hint == "'--model_uri'" and "\n" not in caught.value.format_message()


def test_a_deleted_run_is_refused_with_how_to_restore(logged):
    with pytest.raises(click.BadParameter, match="mlflow runs restore --run-id"):
        resolve_model_uri(f"runs:/{logged['deleted']}/gone")


def test_sklearn_and_image_tensor_pyfunc_models_load_and_fit(logged, digits):
    sklearn_model = load_image_model(resolve_model_uri("models:/digits-logreg/1"))
    assert isinstance(sklearn_model, ProbaModel) and sklearn_model.labels == tuple(range(10))
    mapping = check_model_fits(sklearn_model, digits.images, digits.class_names, "8×8 grey")
    assert mapping.names == digits.class_names
    images_model = load_image_model(resolve_model_uri(logged["images"].model_uri))
    assert isinstance(images_model, ProbabilityFunction)
    # Its tensor signature [-1, 8, 8] says it takes the grey images themselves.
    assert images_model.convention.layout == "nhwc" and images_model.convention.rank == 3
    assert images_model.convention.sources["layout"] == "signature"
    two_classes = ("bright", "dark")
    mapping = check_model_fits(images_model, digits.images, two_classes, "8×8 grey")
    assert mapping.names == two_classes
    assert images_model.predict_proba(digits.images[:3]).shape == (3, 2)


def test_class_mapping_by_index_by_name_and_by_position():
    names = ("cat", "dog", "owl")
    assert class_mapping(ProbaModel(_Labels([2, 0])), names, 2).names == ("owl", "cat")
    assert class_mapping(ProbaModel(_Labels(["owl", "dog"])), names, 2).names == ("owl", "dog")
    assert class_mapping(ProbabilityFunction(lambda x: x), names, 3).names == names
    with pytest.raises(ModelError, match=r"classes \['emu'\] are not classes of the dataset"):
        class_mapping(ProbaModel(_Labels(["emu", "dog"])), names, 2)
    with pytest.raises(ModelError, match=r"gives 4 probabilities per image but the dataset has 3"):
        class_mapping(ProbabilityFunction(lambda x: x), names, 4)
    with pytest.raises(ModelError, match=r"classes \[7\] are not class indices"):
        class_mapping(ProbaModel(_Labels([0, 7])), names, 2)


class _Labels:
    def __init__(self, classes):
        self.classes_ = np.array(classes)


def test_outputs_that_are_not_probabilities_are_refused_or_read_as_logits(digits):
    images = digits.images
    with pytest.raises(ModelError, match=r"returns shape \(2,\).*not one value per class"):
        check_model_fits(ProbabilityFunction(lambda x: np.zeros(len(x))), images, ("a", "b"), "")
    declared = InputConvention(output="probabilities", sources={"output": "flag"})
    with pytest.raises(ModelError, match=r"-P model_output=probabilities, but its rows .* are "
                                         r"not \(values from 3 to 3, rows summing to 6.*use -P "
                                         r"model_output=logits") as refused:
        check_model_fits(ProbabilityFunction(lambda x: np.full((len(x), 2), 3.0), declared),
                         images, ("a", "b"), "")
    assert refused.value.param == "model_output"
    found = ProbabilityFunction(lambda x: np.full((len(x), 2), 3.0))
    check_model_fits(found, images, ("a", "b"), "")
    assert (found.convention.output, found.convention.sources["output"]) == ("logits", "measured")
    np.testing.assert_allclose(found.predict_proba(images[:3]), 0.5)

    def wrong_width(batch):
        raise ValueError(f"X has {batch.shape[1]} features, but expects 784")

    with pytest.raises(ModelError, match=r"pipeline gives \[2, 64\].*expects 784"):
        check_model_fits(ProbabilityFunction(wrong_width), images, ("a", "b"), "8×8 grey")


class RowsModel(mlflow.pyfunc.PythonModel):
    """Takes a DataFrame of one named column per pixel, as its column signature says."""

    def predict(self, context, model_input, params=None):
        mass = model_input.to_numpy().mean(axis=1)
        return np.stack([mass, 1 - mass], axis=1)


def test_a_column_signature_pyfunc_gets_named_pixel_columns(logged, digits):
    from mlflow.models import infer_signature
    import pandas as pd

    frame = pd.DataFrame(digits.images[:4].reshape(4, -1),
                         columns=[f"pixel_{i}" for i in range(64)])
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="rows", python_model=RowsModel(),
                                       signature=infer_signature(frame))
    model = load_image_model(resolve_model_uri(info.model_uri))
    assert model.expected_input() == "[N, 64]"
    check_model_fits(model, digits.images, ("bright", "dark"), "8×8 grey")
    with pytest.raises(ModelError, match=r"expects \[N, 64\].*gives \[2, 256\]"):
        check_model_fits(model, np.zeros((2, 16, 16)), ("bright", "dark"), "16×16 grey")
