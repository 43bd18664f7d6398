"""Saliency maps with xaitk-saliency, used as released.

A generator is xaitk's `PerturbationOcclusion` composed of a perturber and a scorer (RISE:
`RISEGrid` + `RISEScoring`; sliding window: `SlidingWindow` + `OcclusionScoring`), with the
occlusion `fill` set on it. Its smqtk configuration (plus the fill, which xaitk keeps outside
the configuration) is what the saliency step stores, and `generator_from_config` rebuilds the
same generator from it. Nothing here knows about MLflow.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Iterator, Sequence

import numpy as np
from smqtk_classifier.interfaces.classify_image import ClassifyImage
from smqtk_core.configuration import from_config_dict, to_config_dict
from xaitk_saliency.impls.gen_classifier_conf_sal.occlusion_scoring import OcclusionScoring
from xaitk_saliency.impls.gen_classifier_conf_sal.rise_scoring import RISEScoring
from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.occlusion_based import (
    PerturbationOcclusion,
)
from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack
from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack
from xaitk_saliency.impls.perturb_image.rise import RISEGrid
from xaitk_saliency.impls.perturb_image.sliding_window import SlidingWindow
from xaitk_saliency.interfaces.gen_image_classifier_blackbox_sal import (
    GenerateImageClassifierBlackboxSaliency,
)

from steps.catalog import ALGORITHMS
from steps.data import flatten


@dataclass(frozen=True)
class SaliencyParams:
    """The algorithm and its xaitk parameters, as the user sets them."""

    algorithm: str = "rise"
    n: int = 1000
    s: int = 4
    p1: float = 0.5
    seed: int = 0
    debiased: bool = True
    window_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (1, 1)
    fill: float = 0.0

    def used_params(self) -> dict[str, Any]:
        """Only the parameters the chosen algorithm uses."""
        if self.algorithm == "rise":
            keys = ("n", "s", "p1", "seed", "debiased")
        else:
            keys = ("window_size", "stride")
        return {"algorithm": self.algorithm, "fill": self.fill,
                **{key: getattr(self, key) for key in keys}}


def build_generator(params: SaliencyParams) -> PerturbationOcclusion:
    """Compose xaitk's perturber and scorer for the chosen algorithm."""
    if params.algorithm == "rise":
        # threads=0: RISEGrid's threaded mask shifts share one RNG and are not reproducible.
        perturber = RISEGrid(n=params.n, s=params.s, p1=params.p1, seed=params.seed, threads=0)
        scorer = RISEScoring(p1=params.p1 if params.debiased else 0.0)
    elif params.algorithm == "sliding_window":
        perturber = SlidingWindow(window_size=params.window_size, stride=params.stride)
        scorer = OcclusionScoring()
    else:
        raise ValueError(f"unknown algorithm {params.algorithm!r}; known: {', '.join(ALGORITHMS)}")
    generator = PerturbationOcclusion(perturber, scorer, threads=0)
    generator.fill = params.fill
    return generator


def xaitk_stack(params: SaliencyParams) -> GenerateImageClassifierBlackboxSaliency:
    """xaitk's own high-level stack for the same parameters: the reference fast maps must equal."""
    if params.algorithm == "rise":
        stack = RISEStack(n=params.n, s=params.s, p1=params.p1, seed=params.seed, threads=0,
                          debiased=params.debiased)
    elif params.algorithm == "sliding_window":
        stack = SlidingWindowStack(window_size=params.window_size, stride=params.stride)
    else:
        raise ValueError(f"unknown algorithm {params.algorithm!r}; known: {', '.join(ALGORITHMS)}")
    stack.fill = params.fill
    return stack


def generator_config(generator: PerturbationOcclusion) -> dict[str, Any]:
    """The smqtk configuration of the generator, with its fill: enough to rebuild it."""
    return {"generator": to_config_dict(generator), "fill": generator.fill}


SMQTK_PACKAGES = ("smqtk_classifier", "smqtk_descriptors", "smqtk_detection",
                  "smqtk_dataprovider", "smqtk_image_io")


@contextlib.contextmanager
def quiet_plugin_discovery():
    """smqtk's plugin discovery warns about optional back-ends (caffe, libsvm) we never use."""
    loggers = [logging.getLogger(name) for name in SMQTK_PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def generator_from_config(config: dict[str, Any]) -> GenerateImageClassifierBlackboxSaliency:
    """Rebuild a generator from `generator_config`'s output (e.g. read back from a run)."""
    with quiet_plugin_discovery():
        impls = GenerateImageClassifierBlackboxSaliency.get_impls()
        generator = from_config_dict(config["generator"], impls)
    generator.fill = config.get("fill")
    return generator


class SklearnImageClassifier(ClassifyImage):
    """A fitted sklearn classifier seen by xaitk as an smqtk `ClassifyImage`.

    Images arrive one at a time from xaitk's occlusion stream; they are gathered into batches of
    `batch_size` and classified with one `predict_proba` call per batch.
    """

    def __init__(self, model, batch_size: int = 256) -> None:
        self._model = model
        self._batch_size = int(batch_size)

    @property
    def batch_size(self) -> int:
        """Images per `predict_proba` call."""
        return self._batch_size

    def get_labels(self) -> Sequence[Hashable]:
        return [int(c) for c in self._model.classes_]

    def classify_array(self, images: np.ndarray) -> np.ndarray:
        """Confidences `[N, classes]` of images `[N, H, W]`, columns in `get_labels` order.

        The array form of `classify_images`, for callers that hold a whole batch: no per-image
        dictionaries. `batch_size` images per `predict_proba` call.
        """
        rows = flatten(images)
        size = self._batch_size
        return np.concatenate([self._model.predict_proba(rows[start:start + size])
                               for start in range(0, len(rows), size)])

    def _classify_batch(self, batch: list[np.ndarray]) -> Iterator[dict]:
        labels = self.get_labels()
        for row in self.classify_array(np.stack(batch)):
            yield dict(zip(labels, row.tolist()))

    def classify_images(self, img_iter: np.ndarray | Iterable[np.ndarray]) -> Iterator[dict]:
        batch: list[np.ndarray] = []
        for image in img_iter:
            batch.append(image)
            if len(batch) == self._batch_size:
                yield from self._classify_batch(batch)
                batch = []
        if batch:
            yield from self._classify_batch(batch)

    def get_config(self) -> dict[str, Any]:
        return {"batch_size": self._batch_size}


def compute_saliency(
    generator: GenerateImageClassifierBlackboxSaliency, image: np.ndarray, classifier: ClassifyImage
) -> np.ndarray:
    """One map per class, `[classes, H, W]`, values in [-1, 1]."""
    return np.asarray(generator(image, classifier))
