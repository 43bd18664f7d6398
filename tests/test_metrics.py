"""Faithfulness metrics of a map: deletion and insertion (RISE paper), Entropy, the random
baseline; against hand-computed curves and a straightforward implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression

from steps.core.image_dataset import load_dataset
from steps.core.metrics import (CAUSAL_STEPS, Deletion, Insertion, MapContext, average_maps,
                                blur_sigma, class_map, score_map)

WEIGHTS = np.array([[0.4, 0.3], [0.2, 0.1]])


def linear(images):
    """Two classes; class 1's probability is the weighted sum of the pixels (weights sum to 1)."""
    s = np.asarray(images).reshape(len(images), -1) @ WEIGHTS.ravel()
    return np.stack([1 - s, s], axis=1)


def test_deletion_and_insertion_by_hand():
    image = np.ones((2, 2), np.float32)
    context = MapContext(image, WEIGHTS, linear, column=1, steps=4)
    value, curve = Deletion().compute(context)
    # Removing the pixels of weight 0.4, 0.3, 0.2, 0.1 in turn.
    np.testing.assert_allclose(curve, [1.0, 0.6, 0.3, 0.1, 0.0], atol=1e-7)
    assert value == pytest.approx(0.25 * (0.5 * 1.0 + 0.6 + 0.3 + 0.1 + 0.5 * 0.0))
    context = MapContext(image, WEIGHTS, linear, column=1, steps=4,
                         _blurred=np.zeros_like(image))
    value, curve = Insertion().compute(context)
    np.testing.assert_allclose(curve, [0.0, 0.4, 0.7, 0.9, 1.0], atol=1e-7)
    assert value == pytest.approx(0.25 * (0.0 + 0.4 + 0.7 + 0.9 + 0.5 * 1.0))


def straightforward_curves(predict, image, saliency, column, steps=CAUSAL_STEPS):
    """One image at a time, the pixels changed in a Python loop."""
    height, width = image.shape[:2]
    order = sorted(range(height * width), key=lambda p: (-saliency.ravel()[p], p))
    sigma = blur_sigma(image)
    base = gaussian_filter(image, sigma=(sigma, sigma, 0)[:image.ndim])
    deletion, insertion = [], []
    for k in range(steps + 1):
        count = int(np.ceil(k * height * width / steps))
        removed, inserted = image.copy(), base.copy()
        for p in order[:count]:
            y, x = divmod(p, width)
            removed[y, x] = 0
            inserted[y, x] = image[y, x]
        deletion.append(predict(removed[np.newaxis])[0, column])
        insertion.append(predict(inserted[np.newaxis])[0, column])

    def area(curve):
        return sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / steps

    return area(deletion), area(insertion), np.array(deletion), np.array(insertion)


@pytest.fixture(scope="module")
def linear_digits():
    data = load_dataset("digits")
    model = LogisticRegression(max_iter=500).fit(data.images[:1200].reshape(1200, -1),
                                                 data.labels[:1200])
    return data, model


def predict_with(model):
    return lambda images: model.predict_proba(np.asarray(images).reshape(len(images), -1))


def test_batched_metrics_equal_a_straightforward_implementation(linear_digits):
    """Within float32 rounding: the model computes in float32, which rounds by batch shape."""
    data, model = linear_digits
    rng = np.random.default_rng(3)
    for row in (1300, 1400, 1500):
        image = data.images[row]
        maps = rng.uniform(-1, 1, size=(10, 8, 8))
        column = int(data.labels[row])
        scores = score_map(maps, image, predict_with(model), column, (column + 1) % 10)
        deletion, insertion, d_curve, i_curve = straightforward_curves(
            predict_with(model), image, maps[column], column)
        assert scores.metrics["Deletion_auc"] == pytest.approx(deletion, abs=1e-6)
        assert scores.metrics["Insertion_auc"] == pytest.approx(insertion, abs=1e-6)
        np.testing.assert_allclose(scores.curves["Deletion_auc"], d_curve, atol=1e-6)
        np.testing.assert_allclose(scores.curves["Insertion_auc"], i_curve, atol=1e-6)
        other = (column + 1) % 10
        deletion, insertion, _, _ = straightforward_curves(predict_with(model), image,
                                                           maps[other], other)
        assert scores.metrics["Deletion_auc_true_class"] == pytest.approx(deletion, abs=1e-6)
        assert scores.metrics["Insertion_auc_true_class"] == pytest.approx(insertion, abs=1e-6)
        assert 0 < scores.metrics["Entropy"] <= 6  # at most log2(64) bits


def test_the_models_own_weights_beat_a_random_map(linear_digits):
    """For a linear model, the class's weights times the pixels are the exact contribution of
    each pixel to its logit: that map must beat a random one on deletion and insertion."""
    data, model = linear_digits
    for row in range(1300, 1320):
        image = data.images[row]
        column = int(model.predict(image.reshape(1, -1))[0])
        maps = (model.coef_ * image.reshape(1, -1)).reshape(10, 8, 8)
        scores = score_map(maps, image, predict_with(model), column, None)
        assert scores.beats_random(), (row, scores.metrics)
        assert "Deletion_auc_true_class" not in scores.metrics


def test_maps_of_every_shape_give_one_class_map():
    maps = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(class_map(maps, 1), maps[:, 1].mean(axis=0))
    np.testing.assert_array_equal(class_map(maps[0], 2), maps[0, 2])
    np.testing.assert_array_equal(class_map(maps[0, 0], 2), maps[0, 0])


def test_metrics_benchmark_runs_on_tiny_sizes():
    import subprocess
    import sys

    from tests.conftest import PROJECT_DIR

    result = subprocess.run([sys.executable, "benchmarks/metrics_benchmark.py", "--images", "2",
                             "--n", "50", "--epochs", "3", "--rounds", "1"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ours / naive:" in result.stdout and "maps/s" in result.stdout


def test_mean_maps_by_class_and_confusion_cell_of_two_maps_or_more():
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(3, 4, 4)) for _ in range(4)]
    images = [rng.uniform(size=(4, 4)) for _ in range(4)]
    groups = average_maps(maps, images, ["cat", "cat", "cat", "dog"],
                          ["cat", "dog", "dog", "dog"])
    # cat: 3 maps; cat → dog: 2; cat → cat and dog (one map each) would only copy a map.
    assert set(groups) == {("cat", None), ("cat", "dog")}
    mean, mean_image, count = groups[("cat", "dog")]
    np.testing.assert_allclose(mean, (maps[1] + maps[2]) / 2)
    np.testing.assert_allclose(mean_image, (images[1] + images[2]) / 2)
    assert count == 2 and groups[("cat", None)][2] == 3
    assert set(average_maps(maps, images, ["a", "b", "c", "d"], ["a", "b", "c", "d"])) == set()
