"""Saliency maps with xaitk-saliency, used as released: generators, their stored configuration,
and any `ImageModel` seen by xaitk as an smqtk `ClassifyImage`.

A generator is xaitk's `PerturbationOcclusion` of an algorithm's perturber and scorer
(`steps/core/algorithm.py`), with the occlusion `fill` set on it. Its smqtk configuration (plus
the fill, which xaitk keeps outside the configuration) is what the saliency step stores, and
`generator_from_config` rebuilds the same generator from it. Nothing here knows about MLflow.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pkgutil
import warnings
from typing import Any, Hashable, Iterable, Iterator, Sequence

import numpy as np
from smqtk_classifier.interfaces.classify_image import ClassifyImage
from smqtk_core.configuration import from_config_dict, to_config_dict
from xaitk_saliency.interfaces.gen_image_classifier_blackbox_sal import (
    GenerateImageClassifierBlackboxSaliency,
)

from steps.core.algorithm import PREDICT_BATCH_SIZE
from steps.core.blas import SMALL_BATCHES, blas_threads
from steps.core.image_models import ImageModel


def generator_config(generator) -> dict[str, Any]:
    """The smqtk configuration of the generator, with its fill: enough to rebuild it."""
    # Stacks that fill by other means (MC-RISE's fill colours) have no `fill`.
    return {"generator": to_config_dict(generator), "fill": getattr(generator, "fill", None)}


SMQTK_PACKAGES = ("smqtk_classifier", "smqtk_descriptors", "smqtk_detection",
                  "smqtk_dataprovider", "smqtk_image_io")


XAITK_IMPLS = ("xaitk_saliency.impls.perturb_image", "xaitk_saliency.impls.gen_classifier_conf_sal",
               "xaitk_saliency.impls.gen_image_classifier_blackbox_sal")


def import_xaitk_impls() -> None:
    """Import every xaitk perturber, scorer and generator module: smqtk's `get_impls` finds the
    classes of imported modules, and xaitk 0.15 declares no plugin entry point for some (e.g.
    `SquaredDifferenceScoring`), so a stored configuration naming one would not rebuild in a
    process that had not imported it yet."""
    for package in XAITK_IMPLS:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"{package}.{info.name}")


@contextlib.contextmanager
def quiet_plugin_discovery():
    """smqtk's plugin discovery warns about optional back-ends (caffe, libsvm) we never use.
    Every xaitk implementation is imported first, so that discovery finds them all."""
    loggers = [logging.getLogger(name) for name in SMQTK_PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import_xaitk_impls()
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def generator_from_config(config: dict[str, Any]) -> GenerateImageClassifierBlackboxSaliency:
    """Rebuild a generator from `generator_config`'s output (e.g. read back from a run)."""
    with quiet_plugin_discovery():
        impls = GenerateImageClassifierBlackboxSaliency.get_impls()
        generator = from_config_dict(config["generator"], impls)
    if config.get("fill") is not None:
        generator.fill = config["fill"]
    return generator


class ImageClassifier(ClassifyImage):
    """An `ImageModel` seen by xaitk as an smqtk `ClassifyImage`.

    Images arrive one at a time from xaitk's occlusion stream; they are gathered into batches of
    `batch_size` and classified with one `predict_proba` call per batch. Labels are the model's
    output columns, 0 to classes - 1.
    """

    def __init__(self, model: ImageModel, batch_size: int = PREDICT_BATCH_SIZE,
                 classes: int | None = None):
        self._model = model
        self._batch_size = int(batch_size)
        self._classes = classes if classes is not None else len(model.labels)

    @property
    def batch_size(self) -> int:
        """Images per `predict_proba` call."""
        return self._batch_size

    def get_labels(self) -> Sequence[Hashable]:
        return list(range(self._classes))

    def classify_array(self, images: np.ndarray) -> np.ndarray:
        """Confidences `[N, classes]` of images `[N, H, W(, C)]`, columns in `get_labels` order.

        The array form of `classify_images`, for callers that hold a whole batch: no per-image
        dictionaries. `batch_size` images per `predict_proba` call, BLAS threads as for small
        batches (`steps/core/blas.py`).
        """
        size = self._batch_size
        with blas_threads(SMALL_BATCHES):
            return np.concatenate([self._model.predict_proba(images[start:start + size])
                                   for start in range(0, len(images), size)])

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


def compute_saliency(generator, image: np.ndarray, classifier: ClassifyImage) -> np.ndarray:
    """One map per class, `[classes, H, W]`, values in [-1, 1]."""
    return np.asarray(generator(image, classifier))
