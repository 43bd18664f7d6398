"""The fast saliency engine: the same maps as xaitk's own stacks, its mask cache, its BLAS threads,
its benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from sklearn.preprocessing import maxabs_scale
from smqtk_classifier.interfaces.classify_image import ClassifyImage
from threadpoolctl import threadpool_info
from xaitk_saliency.impls.gen_classifier_conf_sal.occlusion_scoring import OcclusionScoring
from xaitk_saliency.impls.perturb_image.rise import RISEGrid
from xaitk_saliency.impls.perturb_image.sliding_window import SlidingWindow
from xaitk_saliency.utils.masking import occlude_image_streaming, weight_regions_by_scalar

from steps.core.errors import ParameterError
from steps.core import blas, fast_saliency
from steps.core.algorithm import ALGORITHMS, SaliencyAlgorithm, make_algorithm
from steps.core.image_dataset import resize
from steps.core.fast_saliency import (
    CHUNK_BYTES,
    engine_from_config,
    FastSaliency,
    MaskCache,
    classify_array,
    depends_only_on_shape,
    occlude,
    scale_by_max_abs,
)
from steps.core.image_models import ProbaModel
from steps.core.xaitk_generators import ImageClassifier, generator_config
from tests.conftest import PROJECT_DIR
from tests.test_processing import CountingModel, digits, model  # noqa: F401 (fixtures)

ATOL = 1e-5


@pytest.fixture(scope="module")
def images(digits):
    """Three digits and a blank image, where occluding to 0 changes nothing: a class's map there
    is only the classifier's rounding (not zero on every CPU), which ours must round alike."""
    return [*digits.images[[0, 11, 42]], np.zeros_like(digits.images[0])]


def stored_config(params: SaliencyAlgorithm) -> dict:
    """The configuration as the saliency step stores it and reads it back (through JSON)."""
    return json.loads(json.dumps(generator_config(params.generator())))


def image_classifier(model, batch_size: int = 256) -> ImageClassifier:
    """A fitted scikit-learn model as the saliency step sees it."""
    return ImageClassifier(ProbaModel(model), batch_size=batch_size)


class DictOnlyClassifier(ClassifyImage):
    """An smqtk classifier with no array call: the engine must use `classify_images`."""

    def __init__(self, inner: ClassifyImage):
        self._inner = inner

    def get_labels(self):
        return self._inner.get_labels()

    def classify_images(self, img_iter):
        return self._inner.classify_images(img_iter)

    def get_config(self):
        return {}


@pytest.mark.parametrize("params, chunk_size", [
    (make_algorithm("rise", n=200, s=4, p1=0.5, seed=3), 64),
    (make_algorithm("rise", n=150, s=2, p1=0.3, seed=1, debiased=False), 1024),
    (make_algorithm("rise", n=257, s=5, p1=0.7, seed=11, fill=0.25), 100),
    (make_algorithm("rise", n=90, s=8, p1=0.1, seed=0, debiased=False, fill=1.0), 7),
    (make_algorithm("sliding_window", window_size=(2, 2), stride=(1, 1)), 10),
    (make_algorithm("sliding_window", window_size=(3, 2), stride=(2, 1), fill=0.5), 5),
    (make_algorithm("sliding_window", window_size=(4, 4), stride=(2, 2), fill=1.0), 1024),
    # No high-level stack in xaitk: the reference is xaitk's PerturbationOcclusion of them.
    (make_algorithm("random_grid", n=150, cell_size=(2, 3), p1=0.4, seed=2), 64),
    (make_algorithm("random_grid", n=80, cell_size=(3, 3), p1=0.6, seed=5, fill=0.5), 1024),
    (make_algorithm("sliding_radial", radius=(2, 2), stride=(1, 1)), 10),
    (make_algorithm("sliding_radial", radius=(1.5, 3), stride=(2, 1), sigma=(1, 0.5),
                    fill=1.0), 1024),
])
def test_maps_equal_xaitk_high_level_stacks(model, images, params, chunk_size):
    engine = FastSaliency.from_config(stored_config(params), chunk_size=chunk_size)
    stack = params.xaitk_stack()
    classifier = image_classifier(model.classifier)
    for image in images:
        ours = engine(image, classifier)
        assert ours.shape == (10, 8, 8)
        assert ours.min() >= -1 and ours.max() <= 1
        np.testing.assert_allclose(ours, stack(image, classifier), atol=ATOL)


def test_float32_confidences_are_scored_in_float64_like_xaitk(model, images):
    """The model answers in float32; xaitk reads Python floats. Same batches: same maps."""
    params = make_algorithm("rise", n=1000)
    classifier = image_classifier(model.classifier, batch_size=256)
    assert classifier.classify_array(images[:1]).dtype == np.float32
    engine = FastSaliency.from_config(stored_config(params), chunk_size=1024)
    np.testing.assert_allclose(engine(images[0], classifier),
                               params.xaitk_stack()(images[0], classifier), atol=1e-12)


class ChunkRecordingClassifier(ImageClassifier):
    """Records how many perturbed images each array call gets: the engine's chunks."""

    def __init__(self, model, batch_size):
        super().__init__(ProbaModel(model), batch_size=batch_size)
        self.chunks = []

    def classify_array(self, images):
        self.chunks.append(len(images))
        return super().classify_array(images)


@pytest.mark.parametrize("chunk_size, batch_size, chunks", [
    (64, 64, [64, 64, 64, 8]),
    (100, 32, [96, 96, 8]),     # whole batches: 100 rounds down to 3 x 32
    (10, 32, [32] * 6 + [8]),   # at least one batch
])
def test_perturbed_images_are_made_and_classified_in_chunks_of_whole_batches(
        model, images, chunk_size, batch_size, chunks):
    counting = CountingModel(model.classifier)
    classifier = ChunkRecordingClassifier(counting, batch_size)
    engine = FastSaliency.from_config(stored_config(make_algorithm("rise", n=200)),
                                      chunk_size=chunk_size)
    engine(images[0], classifier)
    assert classifier.chunks == chunks
    assert max(counting.batches) <= batch_size


@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=300, s=4, p1=0.5, seed=2),
    make_algorithm("sliding_window", window_size=(2, 2), stride=(1, 1)),
])
def test_chunk_size_never_changes_a_map(model, images, params):
    """Memory, not results: any chunk size gives the same maps. The classifier sees the same
    batches whatever the chunks, so only the float64 sums over chunks round apart (1e-16 here)."""
    classifier = image_classifier(model.classifier, batch_size=16)
    config = stored_config(params)
    for image in images:
        maps = [FastSaliency.from_config(config, chunk_size=size)(image, classifier)
                for size in (1, 16, 50, 4096)]
        for other in maps[1:]:
            np.testing.assert_allclose(other, maps[0], rtol=0, atol=1e-12)


def test_a_classifier_without_an_array_call_gives_the_same_maps(model, images):
    params = make_algorithm("sliding_window", window_size=(3, 3), stride=(2, 2))
    engine = FastSaliency.from_config(stored_config(params), chunk_size=8)
    classifier = image_classifier(model.classifier)
    np.testing.assert_allclose(engine(images[1], DictOnlyClassifier(classifier)),
                               params.xaitk_stack()(images[1], classifier), atol=ATOL)


def test_engine_uses_the_stored_configuration_not_defaults():
    params = make_algorithm("rise", n=37, s=3, p1=0.2, seed=5, debiased=False, fill=0.75)
    engine = FastSaliency.from_config(stored_config(params), chunk_size=16)
    assert isinstance(engine.perturber, RISEGrid)
    assert (engine.perturber.n, engine.perturber.s, engine.perturber.p1, engine.perturber.seed) \
        == (37, 3, 0.2, 5)
    assert engine.scorer.p1 == 0.0
    assert engine.fill == 0.75 and engine.chunk_size == 16
    assert engine.masks(np.zeros((8, 8))).shape == (37, 8, 8)


def test_configurations_it_cannot_rebuild_are_clear_errors():
    stack_config = {"generator": {"type": "xaitk_saliency.RISEStack"}, "fill": 0.0}
    with pytest.raises(ValueError, match="built from a .*PerturbationOcclusion configuration"):
        FastSaliency.from_config(stack_config)
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        FastSaliency.from_config(stored_config(make_algorithm("rise")), chunk_size=0)
    with pytest.raises(ValueError, match="expected an image"):
        FastSaliency.from_config(stored_config(make_algorithm("rise")))(np.zeros(64), None)


def test_mask_cache_reuses_masks_for_the_same_configuration_and_shape_only():
    cache = MaskCache()
    config = stored_config(make_algorithm("rise", n=50, seed=2))
    engine = FastSaliency.from_config(config, mask_cache=cache)
    first = engine.masks(np.zeros((8, 8)))
    assert engine.masks(np.ones((8, 8))) is first
    assert (cache.misses, cache.hits) == (1, 1)
    assert not first.flags.writeable
    # Another engine from the same stored configuration shares them.
    assert FastSaliency.from_config(config, mask_cache=cache).masks(np.zeros((8, 8))) is first
    assert (cache.misses, cache.hits) == (1, 2)
    # A different image shape, or a different configuration, does not.
    other_shape = engine.masks(np.zeros((6, 10)))
    assert other_shape.shape == (50, 6, 10)
    other_config = FastSaliency.from_config(stored_config(make_algorithm("rise", n=50, seed=3)),
                                            mask_cache=cache).masks(np.zeros((8, 8)))
    assert not np.array_equal(other_config, first)
    assert (cache.misses, cache.hits, len(cache)) == (3, 2, 3)


def test_mask_cache_drops_the_least_recently_used_and_skips_unseeded_rise():
    cache = MaskCache(max_entries=2)
    perturber = RISEGrid(n=10, s=2, p1=0.5, seed=0, threads=0)
    a = cache.masks(perturber, (8, 8))
    cache.masks(perturber, (4, 4))
    assert cache.masks(perturber, (8, 8)) is a
    cache.masks(perturber, (5, 5))  # drops (4, 4), the least recently used
    assert cache.masks(perturber, (8, 8)) is a
    assert (cache.misses, len(cache)) == (3, 2)
    cache.masks(perturber, (4, 4))
    assert cache.misses == 4
    assert not depends_only_on_shape(RISEGrid(n=10, s=2, p1=0.5, seed=None, threads=0))
    assert not depends_only_on_shape(make_algorithm("random_grid").perturber().__class__(
        n=10, s=(2, 2), p1=0.5, seed=None, threads=0))
    for name in ("random_grid", "sliding_radial", "sliding_window", "rise"):
        assert depends_only_on_shape(make_algorithm(name).perturber()), name


class UndeclaredWindows(SlidingWindow):
    """xaitk's sliding window under a type no algorithm declares."""


def test_masks_are_kept_only_for_perturbers_an_algorithm_declares(monkeypatch):
    perturber = UndeclaredWindows(window_size=(2, 2), stride=(2, 2))
    cache = MaskCache()
    engine = FastSaliency(perturber, OcclusionScoring(), mask_cache=cache)
    assert not depends_only_on_shape(perturber)
    assert engine.masks(np.zeros((8, 8))) is not engine.masks(np.zeros((8, 8)))
    assert (cache.misses, cache.hits, len(cache)) == (0, 0, 0)

    class Declaring(SaliencyAlgorithm):  # as a new file in steps/core/algorithms/ would
        name = "declaring"

        @classmethod
        def shape_only_masks(cls, perturber) -> bool:
            return type(perturber) is UndeclaredWindows

    monkeypatch.setitem(ALGORITHMS._classes, Declaring.name, Declaring)
    assert depends_only_on_shape(perturber)
    first = engine.masks(np.zeros((8, 8)))
    assert engine.masks(np.ones((8, 8))) is first
    assert (cache.misses, cache.hits) == (1, 1)


@pytest.mark.parametrize("fill", [None, 0, 0.0, [0.0, 0.0, 0.0], 0.3, [0.1, 0.5, 0.9]])
@pytest.mark.parametrize("block_bytes", [CHUNK_BYTES, 256])
def test_occlusion_equals_xaitk_streaming_occlusion(monkeypatch, fill, block_bytes):
    """The same values as xaitk's per-image expression, for any mask type, grey or colour, a
    fill of 0 skipped or not, in blocks of one image or of all."""
    monkeypatch.setattr(fast_saliency, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(0)
    colour = rng.random((6, 5, 3), dtype=np.float32)
    grey = colour[..., 0]
    for image in (colour, grey) if np.ndim(fill) == 0 else (colour,):
        for masks in (rng.random((9, 6, 5), dtype=np.float32), rng.random((9, 6, 5)) < 0.5,
                      rng.random((9, 6, 5))):
            expected = np.stack(list(occlude_image_streaming(image, masks, fill=fill)))
            np.testing.assert_array_equal(occlude(image, masks, fill), expected)
            out = np.full((12, *image.shape), np.nan, dtype=image.dtype)
            assert occlude(image, masks, fill, out=out[:9]) is not None
            np.testing.assert_array_equal(out[:9], expected)
            assert np.isnan(out[9:]).all()


def test_scaling_equals_sklearn_maxabs_scale_then_clip():
    rows = np.array([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0], [1e-16, -2e-16, 0.0], [3.0, 1.0, 2.0]])
    np.testing.assert_array_equal(scale_by_max_abs(rows),
                                  np.clip(maxabs_scale(rows, axis=1), -1, 1))


def test_benchmark_script_runs_on_tiny_sizes():
    script = PROJECT_DIR / "benchmarks" / "saliency_benchmark.py"
    result = subprocess.run(
        [sys.executable, str(script), "--sizes", "8x8", "12x12x3", "--images", "2", "--n", "40",
         "--epochs", "3", "--repeats", "1"],
        cwd=PROJECT_DIR.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("naive", "ours", "bound", "12x12x3", "ours / naive: ", "bound / ours: ",
                 "peak MiB", "load average", "maps equal xaitk's"):
        assert line in result.stdout, result.stdout


@pytest.fixture(scope="module")
def colour():
    """Colour images (tinted digits, 12×12×3) and a logistic regression on their flattened
    `H, W, C` pixels."""
    from sklearn.linear_model import LogisticRegression

    from tests.images import tinted_digits

    pixels, labels = tinted_digits(per_class=20, size=12)
    images = pixels.astype(np.float32) / 255.0
    model = LogisticRegression(max_iter=300).fit(images.reshape(len(images), -1), labels)
    return images, model


@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=120, s=3, p1=0.4, seed=4),
    make_algorithm("rise", n=90, s=4, p1=0.6, seed=1, debiased=False, fill=0.5),
    make_algorithm("sliding_window", window_size=(3, 3), stride=(2, 2)),
    make_algorithm("sliding_window", window_size=(4, 2), stride=(1, 3), fill=1.0),
    make_algorithm("random_grid", n=100, cell_size=(3, 2), p1=0.5, seed=7, fill=0.25),
    make_algorithm("sliding_radial", radius=(3, 3), stride=(2, 2), sigma=(1, 1)),
])
def test_colour_maps_equal_xaitk_high_level_stacks(colour, params):
    """On `H×W×3` images the engine occludes every channel as xaitk does: the same maps."""
    images, model = colour
    classifier = image_classifier(model, batch_size=32)
    engine = FastSaliency.from_config(stored_config(params))
    for image in images[[0, 25, 70]]:
        ours = engine(image, classifier)
        assert ours.shape == (4, 12, 12)
        np.testing.assert_allclose(ours, params.xaitk_stack()(image, classifier), atol=ATOL)


@pytest.mark.parametrize("fill_colors", [((0.0,), (1.0,)), ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))])
def test_mc_rise_on_colour_images_is_xaitks_own_stack_with_batched_classification(
        colour, fill_colors):
    """MC-RISE goes through xaitk's `MCRISEStack` itself: batching the classifier (32 images a
    call) leaves its maps `[colours, classes, H, W]` as xaitk's one-image-at-a-time ones."""
    images, model = colour
    params = make_algorithm("mc_rise", n=60, s=3, p1=0.5, seed=2, fill_colors=fill_colors)
    engine = engine_from_config(stored_config(params))
    assert not isinstance(engine, FastSaliency)
    for image in images[[3, 50]]:
        ours = engine(image, image_classifier(model, batch_size=32))
        assert ours.shape == (2, 4, 12, 12) and ours.min() >= -1 and ours.max() <= 1
        reference = params.xaitk_stack()(image, DictOnlyClassifier(image_classifier(model, 1)))
        np.testing.assert_allclose(ours, reference, atol=ATOL)


def test_mc_rise_on_grey_images_gives_xaitk_a_channel_axis(model, images):
    params = make_algorithm("mc_rise", n=50, s=2, p1=0.4, seed=1)
    engine = engine_from_config(stored_config(params))
    classifier = image_classifier(model.classifier)
    ours = engine(images[0], classifier)
    assert ours.shape == (2, 10, 8, 8)

    class Flattening(DictOnlyClassifier):
        def classify_images(self, img_iter):
            return self._inner.classify_images(image[..., 0] for image in img_iter)

    reference = params.xaitk_stack()(images[0][..., np.newaxis], Flattening(classifier))
    np.testing.assert_allclose(ours, reference, atol=ATOL)


@pytest.mark.parametrize("grey", [True, False], ids=["grey", "colour"])
def test_mc_rise_raw_maps_are_confidence_changes_that_xaitk_scales(grey, model, images, colour):
    """MC-RISE's raw maps, each class's scaled by its largest magnitude, are xaitk's maps; unscaled,
    the class the model gives least confidence moves least, where xaitk draws it at full scale."""
    image, classifier = ((images[0], image_classifier(model.classifier)) if grey else
                         (colour[0][3], image_classifier(colour[1], batch_size=32)))
    params = make_algorithm("mc_rise", n=80, s=3, p1=0.4, seed=2)
    engine = engine_from_config(stored_config(params))
    ((maps, raw),) = engine.maps_and_raw([image], classifier)
    assert raw.shape == maps.shape == (2, len(classifier.get_labels()), *image.shape[:2])
    peaks = np.abs(raw).reshape(*raw.shape[:2], -1).max(axis=2)
    np.testing.assert_allclose(raw / peaks[..., np.newaxis, np.newaxis], maps, atol=ATOL)
    confidences = fast_saliency.classify_array(classifier, image[np.newaxis])[0]
    least, most = confidences.argmin(), confidences.argmax()
    assert np.abs(maps[:, least]).max() == pytest.approx(1.0)
    assert (peaks[:, least] < 0.5 * peaks[:, most]).all(), (peaks, confidences)


def test_mc_rise_fill_colours_must_fit_the_images():
    rgb = make_algorithm("mc_rise", fill_colors=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    rgb.check_image((8, 8, 3))
    with pytest.raises(ParameterError, match="fill colours of 3 values do not fit 1-channel"):
        rgb.check_image((8, 8))
    make_algorithm("mc_rise").check_image((8, 8, 3))  # one value a colour: every channel
    assert make_algorithm("mc_rise").used_params()["fill_colors"] == ((0.0,), (1.0,))
    from steps.core.parameters import as_param

    assert as_param(rgb.used_params()["fill_colors"]) == "1.0,0.0,0.0;0.0,0.0,1.0"
    assert "fill" not in rgb.used_params()


@pytest.mark.parametrize("name,settings", [
    ("sliding_window", {"window_size": (3, 3), "stride": (2, 2)}),
    ("random_grid", {"n": 70, "cell_size": (2, 3), "seed": 4, "fill": 0.5}),
    ("sliding_radial", {"radius": (2, 2.5), "stride": (2, 2), "sigma": (1, 1)}),
])
def test_squared_difference_scoring_gives_xaitks_one_map_per_image(model, images, colour, name,
                                                                   settings):
    """SquaredDifferenceScoring scores how much the whole prediction changes: one `[H, W]` map
    in [0, 1], the same as xaitk's, on grey and colour images."""
    params = make_algorithm(name, scoring="squared_difference", **settings)
    engine = engine_from_config(stored_config(params))
    assert isinstance(engine, FastSaliency)  # masks made once, scored as one matrix product
    colour_images, colour_model = colour
    for image, classifier in ((images[1], image_classifier(model.classifier)),
                              (colour_images[9], image_classifier(colour_model, 16))):
        ours = engine(image, classifier)
        assert ours.shape == image.shape[:2] and ours.min() >= 0 and ours.max() <= 1
        np.testing.assert_allclose(ours, params.xaitk_stack()(image, classifier), atol=ATOL)


@pytest.fixture(scope="module")
def real_sizes(digits):
    """Digits at real sizes: 28×28 grey and 64×64×3 (tinted), each with a small MLP fitted on
    them, and a blank image (see `images`)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    rows = np.arange(60)
    grey = resize(digits.images[rows], (28, 28))
    tints = np.random.default_rng(0).uniform(0.4, 1.0, (len(rows), 1, 1, 3))
    colour = (resize(digits.images[rows], (64, 64))[..., np.newaxis] * tints).astype(np.float32)
    sized = {}
    for name, images in (("28x28", grey), ("64x64x3", colour)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier((16,), max_iter=5, random_state=0).fit(
                images.reshape(len(images), -1), digits.labels[rows])
        sized[name] = ([images[0], images[7], np.zeros_like(images[0])], model)
    return sized


@pytest.mark.parametrize("size", ["28x28", "64x64x3"])
@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=300, s=4, p1=0.5, seed=1),
    make_algorithm("rise", n=100, s=6, p1=0.3, seed=2, debiased=False, fill=0.5),
    make_algorithm("sliding_window", window_size=(8, 8), stride=(6, 6)),
    make_algorithm("random_grid", n=100, cell_size=(7, 5), p1=0.5, seed=3, fill=0.25),
])
def test_maps_equal_xaitk_at_real_sizes(real_sizes, size, params):
    """Grey 28×28 and colour 64×64×3 (the scorers' blocks, chunks capped by `CHUNK_BYTES`):
    the same maps as xaitk's, on digits and on a blank image."""
    images, model = real_sizes[size]
    classifier = image_classifier(model, batch_size=32)
    engine = FastSaliency.from_config(stored_config(params), chunk_size=4096)
    for image in images:
        ours = engine(image, classifier)
        assert ours.shape == (10, *image.shape[:2])
        np.testing.assert_allclose(ours, params.xaitk_stack()(image, classifier), atol=ATOL)


@pytest.mark.parametrize("size", ["28x28", "64x64x3"])
@pytest.mark.parametrize("derived_bytes, scalar_bytes", [
    (fast_saliency.DERIVED_BYTES, fast_saliency.SCALAR_BYTES),  # kept weights, scored together
    (0, 1),  # nothing derived kept, each image scored alone
])
@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=300, s=4, p1=0.5, seed=1),
    make_algorithm("sliding_window", window_size=(8, 8), stride=(6, 6), fill=0.5),
])
def test_maps_of_many_images_equal_their_maps_one_at_a_time_and_xaitks(
        monkeypatch, real_sizes, size, derived_bytes, scalar_bytes, params):
    """`engine.maps` scores the images together, with the masks' weights (and, for colour, the
    masks in every channel) kept when they fit `DERIVED_BYTES`: the same maps as alone."""
    monkeypatch.setattr(fast_saliency, "DERIVED_BYTES", derived_bytes)
    monkeypatch.setattr(fast_saliency, "SCALAR_BYTES", scalar_bytes)
    images, model = real_sizes[size]
    classifier = image_classifier(model, batch_size=32)
    cache = MaskCache()
    engine = FastSaliency.from_config(stored_config(params), mask_cache=cache)
    together = engine.maps(images, classifier)
    assert len(cache._derived) == (0 if derived_bytes == 0 else 1 + (len(size.split("x")) == 3))
    for image, ours in zip(images, together):
        np.testing.assert_allclose(ours, engine(image, classifier), rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours, params.xaitk_stack()(image, classifier), atol=ATOL)


def test_chunks_of_large_images_hold_at_most_chunk_bytes(real_sizes):
    """At 64×64×3 a chunk holds `CHUNK_BYTES` of perturbed images (in whole batches), not
    `chunk_size` of them."""
    (image, *_), model = real_sizes["64x64x3"]
    classifier = ChunkRecordingClassifier(model, batch_size=16)
    engine = FastSaliency.from_config(stored_config(make_algorithm("rise", n=400)),
                                      chunk_size=4096)
    engine(image, classifier)
    largest = CHUNK_BYTES // image.nbytes // 16 * 16
    assert classifier.chunks == [largest] * (400 // largest) + [400 % largest] * bool(400 % largest)
    assert largest * image.nbytes <= CHUNK_BYTES


@pytest.mark.parametrize("params", [
    make_algorithm("rise", n=300, s=4, p1=0.5, seed=1),
    make_algorithm("sliding_window", window_size=(8, 8), stride=(6, 6), fill=0.5),
])
def test_building_the_next_chunk_while_one_is_classified_changes_no_map(
        monkeypatch, real_sizes, params):
    """With the overlap forced (any chunk) and with none, at 64×64×3 in several chunks: the
    same chunks to the classifier, the same maps to the last bit; the overlap occludes in its
    own thread."""
    images, model = real_sizes["64x64x3"]
    threads = []

    def recording_occlude(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return occlude(*args, **kwargs)

    monkeypatch.setattr(fast_saliency, "occlude", recording_occlude)
    made = {}
    for name, overlap_bytes in (("serial", float("inf")), ("overlap", 0)):
        monkeypatch.setattr(fast_saliency, "OVERLAP_BYTES", overlap_bytes)
        classifier = ChunkRecordingClassifier(model, batch_size=16)
        engine = FastSaliency.from_config(stored_config(params), chunk_size=4096)
        threads.clear()
        made[name] = (engine.maps(images, classifier), classifier.chunks, list(threads))
    (serial, serial_chunks, serial_main), (overlap, overlap_chunks, overlap_main) = (
        made["serial"], made["overlap"])
    assert len(serial_chunks) >= 3 and overlap_chunks == serial_chunks
    assert all(serial_main) and not any(overlap_main)
    for ours, theirs in zip(overlap, serial):
        np.testing.assert_array_equal(ours, theirs)


def blas_thread_counts() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


class ThreadRecordingClassifier(ImageClassifier):
    """Records the BLAS thread counts each array call runs with."""

    def __init__(self, model):
        super().__init__(ProbaModel(model), batch_size=64)
        self.seen = []

    def classify_array(self, images):
        self.seen.append(blas_thread_counts())
        return super().classify_array(images)


@pytest.mark.parametrize("params", [make_algorithm("rise", n=100),
                                    make_algorithm("mc_rise", n=30)])
def test_maps_are_made_with_one_blas_thread_and_the_count_is_restored(model, images, params,
                                                                      monkeypatch):
    monkeypatch.delenv(blas.BLAS_THREADS_ENV, raising=False)
    classifier = ThreadRecordingClassifier(model.classifier)
    before = blas_thread_counts()
    engine_from_config(stored_config(params))(images[0], classifier)
    assert classifier.seen and all(counts == [1] * len(before) for counts in classifier.seen)
    assert blas_thread_counts() == before


def test_blas_threads_by_kind_cores_and_environment(monkeypatch):
    monkeypatch.delenv(blas.BLAS_THREADS_ENV, raising=False)
    many = blas.MANY_VALUES
    assert blas.threads_for(blas.SMALL_BATCHES) == blas.threads_for(blas.SMALL_BATCHES, many) == 1
    assert blas.threads_for(blas.ONE_PREDICTION, many) == blas.usable_cores()
    assert blas.threads_for(blas.ONE_PREDICTION, many - 1) == 1
    monkeypatch.setattr(blas, "usable_cores", lambda: 1)
    assert blas.threads_for(blas.ONE_PREDICTION, many) == 1
    monkeypatch.setenv(blas.BLAS_THREADS_ENV, "3")
    assert blas.threads_for(blas.SMALL_BATCHES) == blas.threads_for(blas.ONE_PREDICTION) == 3
    with blas.blas_threads(blas.ONE_PREDICTION) as threads:
        assert threads == 3 and set(blas_thread_counts()) == {3}
    for wrong in ("0", "two"):
        monkeypatch.setenv(blas.BLAS_THREADS_ENV, wrong)
        with pytest.raises(ValueError, match=blas.BLAS_THREADS_ENV):
            blas.threads_for(blas.SMALL_BATCHES)
    with pytest.raises(ValueError, match="kind must be one of"):
        blas.threads_for("big")


def test_nested_blas_blocks_restore_the_outer_count(monkeypatch):
    monkeypatch.delenv(blas.BLAS_THREADS_ENV, raising=False)
    monkeypatch.setattr(blas, "usable_cores", lambda: 2)
    before = blas_thread_counts()
    with blas.blas_threads(blas.ONE_PREDICTION, blas.MANY_VALUES):
        assert set(blas_thread_counts()) == {2}
        with blas.blas_threads(blas.SMALL_BATCHES):
            with blas.blas_threads(blas.SMALL_BATCHES):
                assert set(blas_thread_counts()) == {1}
            assert set(blas_thread_counts()) == {1}
        assert set(blas_thread_counts()) == {2}
    assert blas_thread_counts() == before


def test_blas_benchmark_runs_on_tiny_sizes():
    script = PROJECT_DIR / "benchmarks" / "blas_benchmark.py"
    result = subprocess.run(
        [sys.executable, str(script), "--sizes", "8x8", "--n", "40", "--epochs", "2",
         "--repeats", "1"],
        cwd=PROJECT_DIR.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("small batches", "one prediction", "1 thread", "2 threads", "chosen",
                 "load average"):
        assert line in result.stdout, result.stdout


@pytest.mark.parametrize("params", [
    make_algorithm("sliding_window", window_size=(2, 2), stride=(1, 1)),
    make_algorithm("random_grid", n=60, cell_size=(2, 2), scoring="squared_difference"),
    make_algorithm("rise", n=120, s=2),
    make_algorithm("rise", n=120, s=2, debiased=False),
], ids=["occlusion", "squared", "rise", "rise-not-debiased"])
def test_the_raw_map_is_xaitks_sum_before_its_scaling_in_confidence_units(model, images, params):
    """xaitk's own `weight_regions_by_scalar` of the perturbed confidences, as its scorer calls
    it, before `maxabs_scale`: occlusion's is already a mean change of confidence; RISE's sum
    over n masks is divided into one (by n·p1·(1 - p1) debiased, by n·p1 not)."""
    engine = FastSaliency.from_config(stored_config(params))
    classifier = image_classifier(model.classifier)
    image = images[0]
    ((maps, raw),) = engine.maps_and_raw([image], classifier)
    np.testing.assert_array_equal(maps, engine(image, classifier))
    masks = engine.masks(image)
    confidences = classify_array(classifier, occlude(image, masks, engine.fill))
    reference = classify_array(classifier, image[np.newaxis])[0]
    if params.name == "rise":
        p1 = params.p1 if params.debiased else 0.0
        expected = weight_regions_by_scalar(confidences, masks - p1, inv_masks=False,
                                            normalize=False)
        expected /= len(masks) * (p1 * (1 - p1) if params.debiased else masks.mean())
    elif params.scoring == "squared_difference":
        change = 0.5 * ((reference - confidences) ** 2).sum(axis=1, keepdims=True)
        expected = weight_regions_by_scalar(change, masks)[0]
    else:
        expected = weight_regions_by_scalar(reference - confidences, masks)
    np.testing.assert_allclose(raw, expected, rtol=1e-9, atol=1e-12)
    assert raw.shape == maps.shape
