"""The pure processing code: data, model and saliency, with no tracking store."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from steps.core import plots
from steps.core.algorithm import make_algorithm
from steps.core.image_dataset import flatten, load_dataset, random_split
from steps.core.image_models import (
    ModelParams,
    ProbaModel,
    accuracy,
    predict_confidences,
    train_classifier,
)
from steps.core.xaitk_generators import (
    ImageClassifier,
    compute_saliency,
    generator_config,
    generator_from_config,
)

plt = plots.plt


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def model(digits):
    split = random_split(digits, 0.25, 0)
    params = ModelParams(hidden_layer_sizes=(32,), epochs=30)
    return train_classifier(params, digits.images[split.train_rows],
                            digits.labels[split.train_rows])


def test_digits_dataset_shape_range_and_ids(digits):
    assert digits.images.shape == (1797, 8, 8)
    assert digits.images.min() == 0 and digits.images.max() == 1
    assert digits.class_names == tuple(str(k) for k in range(10))
    assert len(digits) == 1797
    # An image's ID is its index in the dataset, as a string.
    assert digits.image_ids == tuple(str(k) for k in range(1797))
    np.testing.assert_array_equal(digits.rows(["0", "808", "1796"]), [0, 808, 1796])


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="'mnist' is not a dataset this pipeline reads. "
                                         "It takes: `digits`"):
        load_dataset("mnist")


def test_split_is_deterministic_disjoint_and_complete(digits):
    a, b = random_split(digits, 0.25, 7), random_split(digits, 0.25, 7)
    other = random_split(digits, 0.25, 8)
    np.testing.assert_array_equal(a.test_rows, b.test_rows)
    assert not np.array_equal(a.test_rows, other.test_rows)
    assert set(a.train_rows).isdisjoint(a.test_rows)
    assert sorted([*a.train_rows, *a.test_rows]) == list(range(1797))
    assert len(a.test_rows) == 450


def test_training_reports_loss_per_epoch_and_learns(digits, model):
    assert len(model.loss_curve) == model.classifier.n_iter_ <= 30
    assert model.loss_curve[-1] < model.loss_curve[0]
    split = random_split(digits, 0.25, 0)
    assert accuracy(model.classifier, digits.images[split.test_rows],
                    digits.labels[split.test_rows]) > 0.9


def test_lbfgs_has_a_single_final_loss(digits):
    trained = train_classifier(ModelParams(solver="lbfgs", epochs=5, hidden_layer_sizes=(8,)),
                               digits.images[:200], digits.labels[:200])
    assert len(trained.loss_curve) == 1
    assert trained.converged is False


def test_confidences_are_probabilities(digits, model):
    conf = predict_confidences(model.classifier, digits.images[:20])
    assert conf.shape == (20, 10)
    np.testing.assert_allclose(conf.sum(axis=1), 1, atol=1e-6)


class CountingModel:
    """A fitted model that counts its `predict_proba` calls and batch sizes."""

    def __init__(self, model):
        self._model = model
        self.classes_ = model.classes_
        self.batches = []

    def predict_proba(self, rows):
        self.batches.append(len(rows))
        return self._model.predict_proba(rows)


def test_classifier_wrapper_classifies_in_batches(digits, model):
    counting = CountingModel(model.classifier)
    wrapper = ImageClassifier(ProbaModel(counting), batch_size=64)
    results = list(wrapper.classify_images(iter(digits.images[:150])))
    assert counting.batches == [64, 64, 22]
    assert len(results) == 150 and set(results[0]) == set(range(10))
    # The same batches through predict_proba (float32 products round by batch shape).
    rows = flatten(digits.images[:150])
    expected = np.concatenate([model.classifier.predict_proba(rows[start:start + 64])
                               for start in (0, 64, 128)])
    np.testing.assert_array_equal([[r[k] for k in range(10)] for r in results], expected)


@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=200, s=4, p1=0.5, seed=3),
    make_algorithm("rise", n=150, s=2, p1=0.3, seed=1, debiased=False),
    make_algorithm("sliding_window", window_size=(2, 2), stride=(1, 1)),
    make_algorithm("sliding_window", window_size=(3, 2), stride=(2, 1), fill=0.5),
])
def test_maps_shape_range_and_equal_xaitk_high_level_stacks(digits, model, params):
    """Our composition of xaitk's components gives exactly xaitk's own stack's maps."""
    stack = params.xaitk_stack()
    classifier = ImageClassifier(ProbaModel(model.classifier))
    for image in digits.images[[0, 11, 42]]:
        ours = compute_saliency(params.generator(), image, classifier)
        assert ours.shape == (10, 8, 8)
        assert ours.min() >= -1 and ours.max() <= 1
        np.testing.assert_allclose(ours, stack(image, classifier), atol=1e-5)


@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=120, s=3, p1=0.4, seed=9, fill=0.25),
    make_algorithm("sliding_window", window_size=(4, 4), stride=(2, 2), fill=1.0),
])
def test_generator_rebuilt_from_its_json_config_gives_the_same_map(digits, model, params):
    generator = params.generator()
    config = json.loads(json.dumps(generator_config(generator)))
    rebuilt = generator_from_config(config)
    assert rebuilt.fill == params.fill
    assert generator_config(rebuilt) == config
    classifier = ImageClassifier(ProbaModel(model.classifier))
    image = digits.images[5]
    np.testing.assert_array_equal(compute_saliency(rebuilt, image, classifier),
                                  compute_saliency(generator, image, classifier))


def test_unknown_algorithm_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown saliency algorithm 'gradcam'; known: mc_rise, "
                                         "random_grid, rise, sliding_radial, sliding_window"):
        make_algorithm("gradcam")


@pytest.mark.parametrize("registry_name, package", [
    ("steps.core.image_dataset:DATASET_SOURCES", "steps.core.datasets"),
    ("steps.core.algorithm:ALGORITHMS", "steps.core.algorithms"),
])
def test_registries_name_every_implementation_module(registry_name, package):
    """Each registry (what replaced steps/catalog.py's lists) holds one class from every module
    of its package, so the CLIs offer every dataset source and algorithm there is."""
    import importlib
    import pkgutil

    module, attribute = registry_name.split(":")
    registry = getattr(importlib.import_module(module), attribute)
    modules = sorted(f"{package}.{info.name}"
                     for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
                     if not info.name.startswith("_"))
    assert sorted(cls.__module__ for cls in registry) == modules
    assert len(set(registry.names())) == len(modules)


def test_clis_list_algorithms_and_datasets_without_heavy_imports():
    """As steps/catalog.py did: the names the CLIs check come without scikit-learn or xaitk."""
    import subprocess
    import sys

    from steps import options
    from steps.core.algorithm import ALGORITHMS
    from tests.conftest import PROJECT_DIR

    (algorithm,) = [d for d in options.ENTRY_POINTS["saliency"] if d.name == "algorithm"]
    assert tuple(algorithm.type.choices) == ALGORITHMS.names() == (
        "mc_rise", "random_grid", "rise", "sliding_radial", "sliding_window")
    code = ("import sys; from steps import options; "
            "from steps.core.image_dataset import DATASET_SOURCES; "
            "from steps.core.algorithm import ALGORITHMS; "
            "print(DATASET_SOURCES.names(), ALGORITHMS.names()); "
            "print(sorted(m for m in ('sklearn', 'xaitk_saliency', 'smqtk_core', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out == ["('digits', 'image_folder', 'npz') ('mc_rise', 'random_grid', 'rise', "
                   "'sliding_radial', 'sliding_window')", "[]"], out


def test_per_class_pictures_are_one_figure_redrawn_and_equal_new_figures(digits):
    """Each class's picture from the redrawn figure is the picture a new figure gives, in
    order of confidence."""
    image = digits.images[5]
    maps = np.random.default_rng(0).uniform(-1, 1, size=(3, *image.shape))
    names = ["a", "b", "c"]
    answer = plots.Answer(np.array([0.2, 0.7, 0.1]), 1, 0)

    def png(fig) -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()

    open_before = plt.get_fignums()
    redrawn = [(column, png(fig)) for column, fig in
               plots.class_overlay_figures(image, maps, names, "image 5", answer)]
    assert plt.get_fignums() == open_before  # closed once all are drawn
    assert [column for column, _ in redrawn] == [1, 0, 2]
    assert len({picture for _, picture in redrawn}) == 3
    for column, picture in redrawn:
        fig = plots.class_overlay_figure(image, maps, names, "image 5", column, answer)
        assert png(fig) == picture
        plt.close(fig)
