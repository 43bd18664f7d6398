"""Deep-learning models as users log them: an ONNX model that takes NCHW tensors of 0..255
pixels normalised by torchvision's mean and std and returns logits, with no signature; a pyfunc
with an NHWC tensor signature returning logits; grey images into an NCHW model.

Each ONNX model is built (tests/onnx_models.py) to equal a scikit-learn LogisticRegression
fitted here, so what the pipeline writes for it is checked against the regression's own
probabilities and maps, read back from a real store.
"""

from __future__ import annotations

import importlib.util
import json

import mlflow
import numpy as np
import onnx
import pytest
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from sklearn.linear_model import LogisticRegression

from steps.core.image_dataset import load_dataset, random_split
from steps.core.fast_saliency import engine_from_config
from steps.core.model_input import flags_of
from steps.core.image_models import ProbaModel, check_model_fits
from steps.core.xaitk_generators import ImageClassifier
from steps.tracking.inputs import load_model_inputs
from steps.tracking.model_loading import load_image_model, resolve_model_uri
from tests.conftest import Store
from tests.images import CLASSES, write_npz
from tests.onnx_models import MEAN, STD, linear_as_onnx

SMALL = {"n": "40", "max_images": "2", "query": "metrics.Predicted_class_conf < 1.01",
         "picture_mode": "combined"}
FLAGS = {"input_scale": "255", "input_mean": ",".join(map(str, MEAN)),
         "input_std": ",".join(map(str, STD))}
METADATA = {"image_input": {"layout": "nchw", "scale": 255, "mean": list(MEAN),
                            "std": list(STD), "output": "logits", "class_names": list(CLASSES)}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deep_models")
    store = Store(f"sqlite:///{directory / 'mlflow.db'}", directory)
    mlflow.set_tracking_uri(store.uri)
    mlflow.set_experiment("user models")
    yield store
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def npz(store):
    return write_npz(store.dir / "tinted.npz")


@pytest.fixture(scope="module")
def regression(npz):
    """The scikit-learn model the ONNX models equal, fitted on the pipeline's [0, 1] rows."""
    data = load_dataset(str(npz))
    rows = random_split(data, 0.25, 0).train_rows
    return LogisticRegression(max_iter=300).fit(data.images[rows].reshape(len(rows), -1),
                                                data.labels[rows])


def onnx_model(regression, image_shape, mean=MEAN, std=STD):
    return onnx.load_from_string(linear_as_onnx(regression.coef_, regression.intercept_,
                                                image_shape, mean, std))


@pytest.fixture(scope="module")
def registered(store, regression, npz):
    """`cnn`, logged with nothing but the graph, and `cnn-meta`@champion, carrying its
    convention and class names in its metadata; `flat`, the regression itself."""
    shape = load_dataset(str(npz)).image_shape
    with mlflow.start_run():
        mlflow.onnx.log_model(onnx_model(regression, shape), name="cnn",
                              registered_model_name="cnn")
        mlflow.onnx.log_model(onnx_model(regression, shape), name="cnn", metadata=METADATA,
                              registered_model_name="cnn-meta")
        mlflow.sklearn.log_model(regression, name="flat", registered_model_name="flat")
    MlflowClient().set_registered_model_alias("cnn-meta", "champion", "1")


def regression_confidences(regression, npz, image_ids):
    data = load_dataset(str(npz))
    rows = data.rows(image_ids)
    return regression.predict_proba(data.images[rows].reshape(len(rows), -1))


def sample_confidences(store, evaluation_id):
    samples = store.runs("Evaluation", f"tags.Evaluation_parent_run_id = '{evaluation_id}'")
    image_ids = [run.data.tags["Image_id"] for run in samples]
    found = np.array([[run.data.metrics[f"Class_{name}_conf"] for name in CLASSES]
                      for run in samples])
    return image_ids, found, samples


def test_metadata_alone_explains_an_onnx_cnn_like_its_sklearn_twin(store, npz, regression,
                                                                   registered):
    result = store.run({**SMALL, "dataset": str(npz), "model_uri": "models:/cnn-meta@champion"})
    assert result.returncode == 0, result.output
    (main,) = [r for r in store.runs("Default")
               if r.data.tags.get("mlflow.project.entryPoint") == "main"]
    evaluation = store.client.get_run(main.data.tags["Evaluation_run_id"])
    tags = evaluation.data.tags
    assert (tags["Input_layout"], tags["Input_scale"], tags["Model_output"]) == (
        "nchw", "255", "logits")
    assert tags["Input_mean"] == "123.675,116.28,103.53"
    assert tags["Input_convention_from"] == ("layout: metadata, scale: metadata, mean: "
                                             "metadata, std: metadata, output: metadata")
    image_ids, found, samples = sample_confidences(store, evaluation.info.run_id)
    assert len(image_ids) == 30
    expected = regression_confidences(regression, npz, image_ids)
    np.testing.assert_allclose(found, expected, atol=1e-5)
    assert [run.data.tags["Predicted_class"] for run in samples] == \
        [CLASSES[k] for k in expected.argmax(axis=1)]

    maps = [r for r in store.runs("Saliency Map Generation", "tags.Model_version = 'cnn-meta/1'")
            if "Image_id" in r.data.tags]
    assert len(maps) == 2
    data = load_dataset(str(npz))
    for run in maps:
        assert run.data.tags["Input_layout"] == "nchw"
        config = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/generator_config.json")
        assert config["model_input"]["output"] == "logits"
        stored = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))
        image = data.images[data.rows([run.data.tags["Image_id"]])[0]]
        twin = ImageClassifier(ProbaModel(regression),
                               int(run.data.params["predict_batch_size"]), len(CLASSES))
        np.testing.assert_allclose(stored, engine_from_config(config)(image, twin), atol=1e-5)

    report = mlflow.artifacts.load_text(f"runs:/{main.info.run_id}/report.html")
    assert "Model input" in report and "layout nchw, scale 255, mean 123.675" in report

    again = store.run({"reproduce_run_id": maps[0].info.run_id}, entry_point="saliency")
    assert again.returncode == 0, again.output
    assert "identical map" in again.output


@pytest.mark.parametrize("flags,sources", [
    ({**FLAGS, "input_layout": "nchw", "model_output": "logits"},
     "layout: flag, scale: flag, mean: flag, std: flag, output: flag"),
    (FLAGS, "layout: graph, scale: flag, mean: flag, std: flag, output: measured"),
])
def test_flags_explain_an_onnx_model_logged_without_metadata(store, npz, regression, registered,
                                                             flags, sources):
    before = {r.info.run_id for r in store.runs("Evaluation")}
    result = store.run({"dataset": str(npz), "model_uri": "models:/cnn/1", "num_samples": "8",
                        **flags}, entry_point="evaluate")
    assert result.returncode == 0, result.output
    (evaluation,) = [r for r in store.runs("Evaluation") if r.info.run_id not in before
                     and "Evaluation_parent_run_id" not in r.data.tags]
    assert evaluation.data.tags["Input_convention_from"] == sources
    assert evaluation.data.tags["Input_layout"] == "nchw"
    assert evaluation.data.tags["Input_scale"] == "255"
    assert ("read as logits" in result.stderr) == sources.endswith("measured")
    image_ids, found, _ = sample_confidences(store, evaluation.info.run_id)
    np.testing.assert_allclose(found, regression_confidences(regression, npz, image_ids),
                               atol=1e-5)


def test_grey_images_into_an_nchw_model_of_one_channel(store, registered):
    digits = load_dataset("digits")
    regression = LogisticRegression(max_iter=200).fit(digits.images[:400].reshape(400, -1),
                                                      digits.labels[:400])
    with mlflow.start_run():
        info = mlflow.onnx.log_model(onnx_model(regression, (8, 8, 1), MEAN[:1], STD[:1]),
                                     name="grey")
    flags = flags_of({"input_scale": 255.0, "input_mean": MEAN[:1], "input_std": STD[:1]})
    model = load_image_model(resolve_model_uri(info.model_uri), flags)
    assert model.convention.layout == "nchw" and model.hint.shape == (None, 1, 8, 8)
    check_model_fits(model, digits.images, digits.class_names, "8×8 grey")
    np.testing.assert_allclose(model.predict_proba(digits.images[400:500]),
                               regression.predict_proba(digits.images[400:500].reshape(100, -1)),
                               atol=1e-5)


class NhwcLogits(mlflow.pyfunc.PythonModel):
    """Takes `[N, H, W, C]` pixels in [0, 1], as its tensor signature says; returns logits."""

    def __init__(self, coef, intercept):
        self.coef, self.intercept = coef, intercept

    def predict(self, context, model_input, params=None):
        assert model_input.ndim == 4, model_input.shape
        return model_input.reshape(len(model_input), -1) @ self.coef.T + self.intercept


def test_a_pyfunc_with_an_nhwc_signature_returning_logits(store, npz, regression, registered):
    data = load_dataset(str(npz))
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"),
                                                         (-1, *data.image_shape))]))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="nhwc", python_model=NhwcLogits(regression.coef_, regression.intercept_),
            signature=signature)
    inputs = load_model_inputs(info.model_uri, str(npz), ())
    convention = inputs.model.convention
    assert (convention.layout, convention.output) == ("nhwc", "logits")
    assert convention.sources == {"layout": "signature", "scale": "default", "mean": "default",
                                  "std": "default", "output": "measured"}
    np.testing.assert_allclose(inputs.model.predict_proba(data.images),
                               regression.predict_proba(data.images.reshape(len(data), -1)),
                               atol=1e-5)


def test_a_model_of_fixed_size_gets_the_images_resized(store, npz, regression, registered,
                                                       capsys):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(len(CLASSES), 12 * 12 * 3))
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onnx.load_from_string(linear_as_onnx(weights, np.zeros(len(CLASSES)), (12, 12, 3))),
            name="twelve", metadata=METADATA)
    inputs = load_model_inputs(info.model_uri, str(npz), ())
    assert inputs.dataset.image_shape == (12, 12, 3)
    assert "Resizing the 10×10 3-channel colour images" in capsys.readouterr().err


def torch_model_without_torch(store) -> str:
    """A model as `mlflow.pytorch.log_model` writes it (its MLmodel and requirements), where
    torch is not installed: what a user who has only the model's URI meets."""
    from mlflow.models import Model

    directory = store.dir / "torch_model"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    model = Model()
    model.add_flavor("pytorch", pytorch_version="2.13.0", model_data="data")
    mlflow.pyfunc.add_to_model(model, loader_module="mlflow.pytorch", data="data")
    model.save(str(directory / "MLmodel"))
    (directory / "requirements.txt").write_text("mlflow==3.17.2\ntorch==2.13.0\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(directory), "torch_model")
    return f"runs:/{run.info.run_id}/torch_model"


@pytest.mark.parametrize("case", ["probabilities", "channels", "layout", "framework"])
def test_bad_conventions_are_one_line_before_any_run(store, npz, registered, case):
    if case == "framework" and importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: the model would load")
    torch_uri = torch_model_without_torch(store) if case == "framework" else ""
    params, hint, words = {
        "probabilities": ({"model_uri": "models:/cnn/1", **FLAGS,
                           "model_output": "probabilities"}, "model_output", "look like logits"),
        "channels": ({"model_uri": "models:/cnn/1", **FLAGS, "input_mean": "1,2"},
                     "input_mean", "input_mean has 2 values"),
        "layout": ({"model_uri": "models:/flat/1", "input_layout": "nchw"}, "input_layout",
                   "takes flat feature rows [N, 300]"),
        "framework": ({"model_uri": torch_uri}, "model_uri", "pip install 'torch==2.13.0'"),
    }[case]
    before = {r.info.run_id for r in store.all_runs()}
    result = store.run({"dataset": str(npz), **params}, entry_point="evaluate")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"'--{hint}'" in errors[0] and words in errors[0], errors[0]
    new = [r for r in store.all_runs() if r.info.run_id not in before]
    assert not [r for r in new if r.data.tags.get("mlflow.project.entryPoint") != "evaluate"
                or r.info.status == "RUNNING"], [json.dumps(r.data.tags) for r in new]
