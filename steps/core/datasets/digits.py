"""scikit-learn's bundled digits: 1,797 8×8 grey images of 10 classes, nothing downloaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from steps.core.image_dataset import DATASET_SOURCES, DatasetSource, ImageDataset, resize


@DATASET_SOURCES.register
class Digits(DatasetSource):
    name = "digits"
    usage = "`digits` (scikit-learn's bundled 8×8 digits)"

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec == cls.name

    def load(self) -> ImageDataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = (bunch.images / 16.0).astype(np.float32)
        if self.image_size:
            images = resize(images, self.image_size)
        return ImageDataset(
            name=self.name,
            images=images,
            labels=bunch.target.astype(np.int64),
            class_names=tuple(str(c) for c in bunch.target_names),
            image_ids=tuple(str(i) for i in range(len(images))),
        )

    def content_digest(self, digest) -> None:
        # The file scikit-learn reads them from, found without importing scikit-learn.
        (package,) = importlib.util.find_spec("sklearn").submodule_search_locations
        digest.update(Path(package, "datasets", "data", "digits.csv.gz").read_bytes())

    def location(self) -> str:
        return "sklearn.datasets.load_digits"
