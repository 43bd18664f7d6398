"""Faithfulness metrics of a map: deletion and insertion (RISE paper), Entropy, the random
baseline; against hand-computed curves and a straightforward implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression

from steps.core.image_dataset import load_dataset
from steps.core.road import FRACTIONS, noisy_linear_imputation
from steps.core.metrics import (CAUSAL_STEPS, Deletion, Insertion, MapContext, MetricSettings,
                                average_maps, beats_random, blur_sigma, blurred, causal_images,
                                class_map, random_maps, random_percentile, score_map)

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
                         insertion_base=np.zeros_like(image))
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


def test_the_models_own_weights_beat_random_maps(linear_digits):
    """For a linear model, the class's weights times the pixels are the exact contribution of
    each pixel to its logit: deleting them (to zero) in that order must beat every random map,
    and the map must beat 90% of them on both metrics for nearly every image."""
    data, model = linear_digits
    beating = []
    for row in range(1300, 1320):
        image = data.images[row]
        column = int(model.predict(image.reshape(1, -1))[0])
        maps = (model.coef_ * image.reshape(1, -1)).reshape(10, 8, 8)
        scores = score_map(maps, image, predict_with(model), column, None, image_id=str(row))
        assert scores.metrics["Deletion_random_percentile"] == 100, (row, scores.metrics)
        assert scores.metrics["Deletion_auc"] < scores.metrics["Random_deletion_auc"]
        beating.append(scores.beats_random())
        assert "Deletion_auc_true_class" not in scores.metrics
    assert sum(beating) >= 16, beating


def test_a_maps_percentile_among_random_maps_is_the_share_it_does_better_than():
    assert random_percentile(0.2, [0.1, 0.3, 0.4, 0.5], lower_is_better=True) == 75
    assert random_percentile(0.2, [0.1, 0.3, 0.4, 0.5], lower_is_better=False) == 25
    assert random_percentile(0.3, [0.1, 0.3, 0.4, 0.5], lower_is_better=True) == 62.5  # tie: half
    assert random_percentile(0.0, [0.1] * 10, lower_is_better=True) == 100
    assert beats_random({"Deletion_random_percentile": 90, "Insertion_random_percentile": 95})
    assert not beats_random({"Deletion_random_percentile": 100,
                             "Insertion_random_percentile": 85})


def test_random_maps_are_seeded_by_the_image_id_and_their_mean_is_the_baseline(linear_digits):
    data, model = linear_digits
    image, column = data.images[1300], int(data.labels[1300])
    maps = np.random.default_rng(8).uniform(-1, 1, size=(10, 8, 8))
    np.testing.assert_array_equal(random_maps("a.png", (8, 8), 3), random_maps("a.png", (8, 8), 3))
    assert not np.array_equal(random_maps("a.png", (8, 8), 3), random_maps("b.png", (8, 8), 3))
    settings = MetricSettings(metric_baseline="zero", random_maps=4)
    scores = score_map(maps, image, predict_with(model), column, None, settings, "1300")
    noise = random_maps("1300", (8, 8), 4)
    deletions = [straightforward_curves(predict_with(model), image, n, column)[0] for n in noise]
    assert scores.metrics["Random_deletion_auc"] == pytest.approx(np.mean(deletions), abs=1e-6)
    better = sum(d > scores.metrics["Deletion_auc"] for d in deletions)
    assert scores.metrics["Deletion_random_percentile"] == pytest.approx(100 * better / 4)
    again = score_map(maps, image, predict_with(model), column, None, settings, "1300")
    assert again.metrics == scores.metrics


def test_each_baseline_is_what_deleted_pixels_become():
    image = np.random.default_rng(9).random((6, 6, 3)).astype(np.float32)
    others = np.random.default_rng(10).random((5, 6, 6, 3))
    settings = MetricSettings(metric_steps=4).resolve(others, "the training split", [(0.5,)])
    np.testing.assert_allclose(settings.mean_colour, others.mean(axis=(0, 1, 2)))
    assert settings.mean_source == "the training split"
    blur = blurred(image)
    expected = {"zero": np.zeros_like(image), "blur": blur, "fill": np.full_like(image, 0.5),
                "mean": np.broadcast_to(others.mean(axis=(0, 1, 2)), image.shape)}
    saliency = np.arange(36.0).reshape(6, 6)
    for kind, base in expected.items():
        context = MapContext(image, saliency, lambda x: x.reshape(len(x), -1)[:, :2], 0, 4,
                             deletion_base=settings.base(kind, image, blur),
                             insertion_base=settings.base(kind, image, blur))
        deleted = causal_images(image, saliency, image, context.deletion_base, 4)
        np.testing.assert_allclose(deleted[-1], base, atol=1e-6, err_msg=kind)
        inserted = causal_images(image, saliency, context.insertion_base, image, 4)
        np.testing.assert_allclose(inserted[0], base, atol=1e-6, err_msg=kind)
    # The model's own input_mean, on 0..255: the colour that normalises to zero.
    declared = MetricSettings().resolve(others, "x", [], model_mean=(127.5, 51, 255),
                                        model_scale=255)
    assert declared.mean_colour == pytest.approx((0.5, 0.2, 1.0))
    assert declared.mean_source == "the model's input_mean"
    stored = MetricSettings.from_dict(settings.as_dict())
    assert stored == settings and stored.resolve(image[None], "y", []) is stored


def test_metric_steps_set_the_curves_resolution(linear_digits):
    data, model = linear_digits
    image, column = data.images[1301], int(data.labels[1301])
    maps = np.random.default_rng(11).uniform(-1, 1, size=(10, 8, 8))
    settings = MetricSettings(metric_baseline="blur", insertion_start="zero", metric_steps=8)
    scores = score_map(maps, image, predict_with(model), column, None, settings, "x")
    assert scores.curves["Deletion_auc"].shape == (9,)
    context = MapContext(image, maps[column], predict_with(model), column, 8,
                         deletion_base=blurred(image), insertion_base=np.zeros_like(image))
    assert scores.metrics["Deletion_auc"] == pytest.approx(Deletion().compute(context)[0])
    assert scores.metrics["Insertion_auc"] == pytest.approx(Insertion().compute(context)[0])


def test_mc_rise_maps_are_scored_per_fill_colour(linear_digits):
    """Each colour's map with its own colour as the `fill` baseline; the most faithful colour
    is the one whose insertion minus deletion is highest."""
    data, model = linear_digits
    image, column = data.images[1302], int(data.labels[1302])
    contributions = (model.coef_ * image.reshape(1, -1)).reshape(10, 8, 8)
    maps = np.stack([-contributions, contributions])  # colour 1's map is the faithful one
    settings = MetricSettings(metric_baseline="fill").resolve(data.images[:10], "t",
                                                               [(0.0,), (1.0,)])
    scores = score_map(maps, image, predict_with(model), column, None, settings, "x")
    assert scores.most_faithful_fill == 1
    for colour, fill in ((0, 0.0), (1, 1.0)):
        context = MapContext(image, maps[colour, column], predict_with(model), column,
                             deletion_base=np.full_like(image, fill))
        assert scores.metrics[f"Deletion_auc_fill_{colour}"] == pytest.approx(
            Deletion().compute(context)[0])
    assert scores.metrics["Deletion_auc_fill_1"] < scores.metrics["Deletion_auc_fill_0"]


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


# --- ROAD: removal by noisy linear imputation (steps/core/road.py) ---------------------------

NEIGHBOUR_WEIGHT = {(dy, dx): (1 / 12 if dy and dx else 1 / 6)
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx}


def test_a_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    image = np.random.default_rng(5).random((4, 5, 3))
    for y, x in ((1, 2), (0, 0), (3, 4), (0, 2)):  # inside, corners, an edge
        removed = np.zeros((4, 5), bool)
        removed[y, x] = True
        filled = noisy_linear_imputation(image, removed, noise=0)
        inside = {(dy, dx): w for (dy, dx), w in NEIGHBOUR_WEIGHT.items()
                  if 0 <= y + dy < 4 and 0 <= x + dx < 5}
        expected = sum(w * image[y + dy, x + dx] for (dy, dx), w in inside.items()) / sum(
            inside.values())
        np.testing.assert_allclose(filled[y, x], expected, atol=1e-12)
        np.testing.assert_array_equal(filled[~removed], image[~removed])


def straightforward_imputation(image, removed):
    """The same equations, one per removed pixel, built in a loop and solved densely."""
    height, width = removed.shape
    unknown = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    number = {p: i for i, p in enumerate(unknown)}
    system = np.zeros((len(unknown), len(unknown)))
    right = np.zeros((len(unknown), image.shape[2]))
    for i, (y, x) in enumerate(unknown):
        for (dy, dx), w in NEIGHBOUR_WEIGHT.items():
            ny, nx = y + dy, x + dx
            if not (0 <= ny < height and 0 <= nx < width):
                continue
            system[i, i] += w
            if removed[ny, nx]:
                system[i, number[(ny, nx)]] -= w
            else:
                right[i] += w * image[ny, nx]
    filled = image.copy()
    for (y, x), value in zip(unknown, np.linalg.solve(system, right)):
        filled[y, x] = value
    return filled


def test_imputation_of_regions_equals_a_dense_solve_and_keeps_a_linear_ramp():
    rng = np.random.default_rng(6)
    image = rng.random((9, 7, 3))
    removed = rng.random((9, 7)) < 0.6
    np.testing.assert_allclose(noisy_linear_imputation(image, removed, noise=0),
                               straightforward_imputation(image, removed), atol=1e-10)
    ramp = np.tile(np.arange(7.0), (9, 1))[..., np.newaxis]
    block = np.zeros((9, 7), bool)
    block[2:7, 2:5] = True
    np.testing.assert_allclose(noisy_linear_imputation(ramp, block, noise=0), ramp, atol=1e-10)
    noisy = noisy_linear_imputation(image, removed, rng=np.random.default_rng(0))
    assert 0.002 < np.std(noisy[removed] - straightforward_imputation(image, removed)[removed]) \
        < 0.05  # NOISE is 0.01


def test_road_metrics_equal_a_straightforward_loop(linear_digits):
    data, model = linear_digits
    predict = predict_with(model)
    image = data.images[1300]
    column = int(data.labels[1300])
    maps = np.random.default_rng(7).uniform(-1, 1, size=(10, 8, 8))
    scores = score_map(maps, image, predict, column, None)
    for name, most_first in (("Road_morf_auc", True), ("Road_lerf_auc", False)):
        ranking = sorted(range(64), key=lambda p: (-maps[column].ravel()[p] if most_first
                                                   else maps[column].ravel()[p], p))
        rng, curve = np.random.default_rng(0), []
        for fraction in FRACTIONS:
            removed = np.zeros(64, bool)
            removed[ranking[:round(fraction * 64)]] = True
            changed = noisy_linear_imputation(image, removed.reshape(8, 8), rng=rng)
            curve.append(predict(changed[np.newaxis])[0, column])
        np.testing.assert_allclose(scores.curves[name], curve, atol=1e-6)
        assert scores.metrics[name] == pytest.approx(np.mean(curve), abs=1e-6)
    assert scores.metrics["Road_lerf_minus_morf"] == pytest.approx(
        scores.metrics["Road_lerf_auc"] - scores.metrics["Road_morf_auc"])


def test_road_ranks_the_models_own_weights_above_a_random_map(linear_digits):
    """The exact per-pixel contributions of a linear model: removing them first must hurt more
    than removing them last, and more than removing a random map's first."""
    data, model = linear_digits
    gaps, random_gaps = [], []
    for row in range(1300, 1310):
        image = data.images[row]
        column = int(model.predict(image.reshape(1, -1))[0])
        maps = (model.coef_ * image.reshape(1, -1)).reshape(10, 8, 8)
        gaps.append(score_map(maps, image, predict_with(model), column, None)
                    .metrics["Road_lerf_minus_morf"])
        noise = np.random.default_rng(row).random((10, 8, 8))
        random_gaps.append(score_map(noise, image, predict_with(model), column, None)
                           .metrics["Road_lerf_minus_morf"])
    assert np.mean(gaps) > 0.2 and np.mean(gaps) > np.mean(random_gaps) + 0.2, (gaps,
                                                                                   random_gaps)
