"""The model-randomisation sanity check's core: models with their weights redrawn, and how alike
a map and the randomised model's map are. Pure core, no MLflow."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from steps.core.algorithm import make_algorithm
from steps.core.errors import ModelError, NotRandomisable
from steps.core.fast_saliency import engine_from_config
from steps.core.image_dataset import flatten, load_dataset, random_split
from steps.core.image_models import (ModelParams, OnnxModel, ProbabilityFunction, ProbaModel,
                                     train_classifier)
from steps.core.model_input import InputConvention
from steps.core.sanity import (MEASURES, SANITY_THRESHOLD, SPEARMAN, SPEARMAN_SIGNED, SSIM,
                               fails_sanity, map_similarity,
                               sanity_config)
from steps.core.xaitk_generators import ImageClassifier, generator_config
from tests.onnx_models import checked_model

#: The images the maps are measured on: the first of the default split's test images.
MEASURED = 5


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    split = random_split(data, 0.25, 0)  # the train step's defaults
    return (data.images[split.train_rows], data.labels[split.train_rows],
            data.images[split.test_rows], data.labels[split.test_rows])


def fitted(model, images, labels):
    # One BLAS thread: with two, lbfgs on these 64 features took 10 s here instead of 0.2 s.
    with threadpool_limits(1):
        return model.fit(flatten(images), labels)


@pytest.fixture(scope="module")
def mlp(digits):
    train_images, train_labels, _, _ = digits
    with threadpool_limits(1):
        return ProbaModel(train_classifier(ModelParams(), train_images, train_labels).classifier)


@pytest.fixture(scope="module")
def regression(digits):
    return fitted(LogisticRegression(max_iter=500), *digits[:2])


@pytest.fixture(scope="module")
def constant(regression):
    """The logistic regression made independent of the image: no weights, only its fitted
    intercepts."""
    regression = copy.deepcopy(regression)
    regression.coef_[:] = 0
    return ProbaModel(regression)


def maps_of(model, images, algorithm=None):
    engine = engine_from_config(generator_config((algorithm or make_algorithm("rise"))
                                                 .generator()))
    return [maps for maps, _ in engine.maps_and_raw(list(images), ImageClassifier(model,
                                                                                  classes=10))]


def test_randomising_an_mlp_redraws_every_layer_and_leaves_the_model(mlp, digits):
    _, _, images, labels = digits
    before = mlp.predict_proba(images)
    weights = copy.deepcopy(mlp.model.coefs_ + mlp.model.intercepts_)
    randomised = mlp.randomised(seed=0)
    new = randomised.model.coefs_ + randomised.model.intercepts_
    assert type(randomised) is ProbaModel and randomised.model is not mlp.model
    for old, drawn in zip(weights, new):
        assert drawn.shape == old.shape and drawn.dtype == old.dtype
        assert not np.allclose(drawn, old)
        # Each layer keeps its scale: the normal of its own mean and standard deviation.
        assert drawn.std() == pytest.approx(old.std(), rel=0.5)
    np.testing.assert_array_equal(mlp.predict_proba(images), before)
    for old, kept in zip(weights, mlp.model.coefs_ + mlp.model.intercepts_):
        np.testing.assert_array_equal(kept, old)
    predicted = randomised.predict_proba(images)
    assert (predicted.argmax(axis=1) != before.argmax(axis=1)).mean() > 0.5
    assert (predicted.argmax(axis=1) == labels).mean() < 0.3  # it learned nothing it keeps
    assert (randomised.labels, randomised.hint, randomised.convention) == (
        mlp.labels, mlp.hint, mlp.convention)
    np.testing.assert_array_equal(mlp.randomised(seed=0).predict_proba(images), predicted)
    assert not np.allclose(mlp.randomised(seed=1).predict_proba(images), predicted)


def test_a_pipelines_linear_step_is_redrawn_and_zero_weights_stay_zero(digits):
    train_images, train_labels, images, _ = digits
    pipeline = fitted(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
                      train_images, train_labels)
    regression = pipeline[-1]
    regression.intercept_[:] = 0
    scaler_mean = pipeline[0].mean_.copy()
    randomised = ProbaModel(pipeline).randomised(seed=3)
    drawn = randomised.model[-1]
    assert drawn.coef_.shape == regression.coef_.shape
    assert not np.allclose(drawn.coef_, regression.coef_)
    np.testing.assert_array_equal(drawn.intercept_, 0)
    # A scaler's statistics are not weights the model learned to classify.
    np.testing.assert_array_equal(randomised.model[0].mean_, scaler_mean)
    assert not np.allclose(randomised.predict_proba(images), ProbaModel(pipeline)
                           .predict_proba(images))


def test_models_without_reachable_weights_are_not_randomisable(digits):
    train_images, train_labels, _, _ = digits
    with pytest.raises(NotRandomisable, match="pyfunc model's weights are not reachable"):
        ProbabilityFunction(lambda batch: batch).randomised()
    neighbours = fitted(KNeighborsClassifier(), train_images[:100], train_labels[:100])
    with pytest.raises(NotRandomisable, match="KNeighborsClassifier has none of") as caught:
        ProbaModel(neighbours).randomised()
    assert isinstance(caught.value, ModelError) and "\n" not in str(caught.value)


def onnx_linear(coef: np.ndarray, intercept: np.ndarray) -> bytes:
    """`[N, 1, 8, 8]` images, flattened, times the weights plus the bias, softmax."""
    initializers = [numpy_helper.from_array(np.asarray(coef.T, np.float32), "weights"),
                    numpy_helper.from_array(np.asarray(intercept, np.float32), "bias")]
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
             helper.make_node("Add", ["scores", "bias"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    return checked_model(
        nodes, "linear_digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializers).SerializeToString()


def test_an_onnx_models_initializers_are_redrawn(digits, regression):
    images = digits[2]
    serialised = onnx_linear(regression.coef_, regression.intercept_)
    model = OnnxModel(serialised, InputConvention(layout="nchw"), labels=range(10))
    model.image_size, model.size_source = (8, 8), "graph"
    before = model.predict_proba(images)
    np.testing.assert_allclose(before, regression.predict_proba(flatten(images)), atol=1e-5)
    randomised = model.randomised(seed=0)
    assert type(randomised) is OnnxModel
    assert (randomised.labels, randomised.hint, randomised.convention, randomised.image_size,
            randomised.size_source) == (model.labels, model.hint, model.convention, (8, 8),
                                        "graph")
    old = {i.name: numpy_helper.to_array(i)
           for i in onnx.load_model_from_string(serialised).graph.initializer}
    new = {i.name: numpy_helper.to_array(i)
           for i in onnx.load_model_from_string(randomised._model).graph.initializer}
    for name in ("weights", "bias"):
        assert new[name].shape == old[name].shape and new[name].dtype == np.float32
        assert not np.allclose(new[name], old[name])
    assert model._model == serialised
    np.testing.assert_array_equal(model.predict_proba(images), before)
    assert (randomised.predict_proba(images).argmax(axis=1) != before.argmax(axis=1)).mean() > 0.5


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@pytest.mark.parametrize("algorithm, made", [
    (make_algorithm("rise"), "the masks' own pattern"),
    (make_algorithm("sliding_window", window_size=(2, 2), stride=(1, 1)), "zeros"),
    (make_algorithm("random_grid", n=60, cell_size=(2, 2), scoring="squared_difference"), "NaN"),
], ids=["rise", "occlusion", "squared"])
def test_a_constant_models_maps_fail_the_check(constant, digits, algorithm, made):
    """Its output does not change under any occlusion, nor when its intercepts are redrawn (its
    zero weights stay zero): RISE then weights the masks by a constant, which leaves the masks'
    own pattern once scaled, whatever the constant; occlusion scoring gives zeros; squared
    difference divides 0 by 0. Either way the randomised model's map is the same map."""
    images = digits[2][:MEASURED]
    randomised = constant.randomised()
    assert not np.allclose(randomised.predict_proba(images), constant.predict_proba(images))
    column = constant.predict_proba(images[:1]).argmax()
    for real, other in zip(maps_of(constant, images, algorithm),
                           maps_of(randomised, images, algorithm)):
        real, other = (real, other) if real.ndim == 2 else (real[column], other[column])
        assert {"the masks' own pattern": np.isfinite(real).all() and real.std() > 0.1,
                "zeros": not real.any(), "NaN": np.isnan(real).all()}[made]
        similarity = map_similarity(real, other)
        assert similarity == dict.fromkeys(MEASURES, 1.0)
        assert fails_sanity(similarity)


def test_an_mlps_maps_pass_the_check(mlp, digits):
    """RISE maps of the predicted class on the first test images. Measured (seed 0): Spearman
    of absolute values 0.23, 0.04, 0.35, 0.52, 0.43 and SSIM 0.05, -0.10, -0.26, 0.66, -0.19.
    Over the first 50 test images the absolute values would flag 21 (median 0.43): any model's
    map ranks the digit's strokes above the background by magnitude (occluding black with black
    changes nothing); the signed correlation, which the check flags on, flags 5 (median
    -0.11)."""
    images = digits[2][:MEASURED]
    randomised = mlp.randomised()
    predicted = mlp.predict_proba(images).argmax(axis=1)
    similarities = [map_similarity(real[c], other[c]) for real, other, c in zip(
        maps_of(mlp, images), maps_of(randomised, images), predicted)]
    assert np.median([s[SPEARMAN] for s in similarities]) < SANITY_THRESHOLD
    assert np.median([s[SPEARMAN_SIGNED] for s in similarities]) < 0.2
    assert sum(map(fails_sanity, similarities)) <= 1
    assert np.median([s[SSIM] for s in similarities]) < 0.5


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values.ravel())).astype(np.float64)


def straightforward_ssim(first: np.ndarray, second: np.ndarray, window: int) -> float:
    """skimage's SSIM: mean over every window inside the maps, sample (co)variances, its
    constants for a data range of 2."""
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    values = []
    for y in range(first.shape[0] - window + 1):
        for x in range(first.shape[1] - window + 1):
            a = first[y:y + window, x:x + window].ravel()
            b = second[y:y + window, x:x + window].ravel()
            covariance = np.cov(a, b)
            values.append((2 * a.mean() * b.mean() + c1) * (2 * covariance[0, 1] + c2)
                          / ((a.mean() ** 2 + b.mean() ** 2 + c1)
                             * (covariance[0, 0] + covariance[1, 1] + c2)))
    return float(np.mean(values))


@pytest.mark.parametrize("shape, window", [((8, 8), 7), ((5, 6), 5), ((16, 12), 7)])
def test_map_similarity_equals_a_straightforward_computation(shape, window):
    rng = np.random.default_rng(7)
    real, randomised = rng.uniform(-1, 1, size=(2, *shape))
    randomised = 0.5 * real + 0.5 * randomised  # somewhat alike
    similarity = map_similarity(real, randomised)
    expected = np.corrcoef(ranks(np.abs(real)), ranks(np.abs(randomised)))[0, 1]
    assert similarity[SPEARMAN] == pytest.approx(expected, abs=1e-12)
    signed = np.corrcoef(ranks(real), ranks(randomised))[0, 1]
    assert similarity[SPEARMAN_SIGNED] == pytest.approx(signed, abs=1e-12)
    assert similarity[SSIM] == pytest.approx(straightforward_ssim(real, randomised, window),
                                             abs=1e-12)
    assert 0 < similarity[SPEARMAN] < 1


def test_identical_constant_and_nan_maps():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, size=(8, 8))
    nan = np.full((8, 8), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings from measures that are undefined
        same = dict.fromkeys(MEASURES, 1.0)
        assert map_similarity(real, real.copy()) == same
        assert map_similarity(np.zeros((8, 8)), np.zeros((8, 8))) == same
        assert map_similarity(nan, nan.copy()) == same
        assert all(np.isnan(v) for v in map_similarity(nan, real).values())
        constant = map_similarity(np.zeros((8, 8)), real)
    assert np.isnan(constant[SPEARMAN]) and -1 <= constant[SSIM] <= 1
    assert not fails_sanity(constant)
    assert fails_sanity({SPEARMAN: 0.0, SPEARMAN_SIGNED: 0.51, SSIM: 0.0})
    assert not fails_sanity({SPEARMAN: 1.0, SPEARMAN_SIGNED: 0.5, SSIM: 1.0})
    tiny = map_similarity(real[:2, :2], real[:2, :2] + real[:2, :2] ** 2)
    assert np.isnan(tiny[SSIM]) and tiny[SPEARMAN_SIGNED] == 1.0  # no 3×3 window for SSIM
    with pytest.raises(ValueError, match="one shape"):
        map_similarity(real, real[:4])


def test_the_checks_configuration():
    config = sanity_config()
    assert {k: config[k] for k in ("randomisation", "redraw", "seed", "threshold")} == {
        "randomisation": "all layers at once", "redraw": "normal, each array's mean and std",
        "seed": 0, "threshold": SANITY_THRESHOLD}
    assert [m["name"] for m in config["measures"]] == [SPEARMAN, SPEARMAN_SIGNED, SSIM]
    assert sanity_config(seed=4)["seed"] == 4
