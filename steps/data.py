"""Image datasets and their deterministic train/test split.

Every loader returns the same `ImageDataset` shape so that other sources can be added beside
the bundled digits without touching the steps. An image's `Image_id` is its index in the
dataset, stable across runs and splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from steps.catalog import DATASETS


@dataclass(frozen=True)
class ImageDataset:
    """Grey images `[N, H, W]` scaled to [0, 1], integer labels `[N]` and the class names."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """Image IDs (dataset indices) of the train and test parts."""

    train_ids: np.ndarray
    test_ids: np.ndarray


def _load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits  # imported here: loading sklearn takes a second

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    return ImageDataset(
        name="digits",
        images=images,
        labels=bunch.target.astype(np.int64),
        class_names=tuple(str(c) for c in bunch.target_names),
    )


LOADERS: dict[str, Callable[[], ImageDataset]] = {"digits": _load_digits}


def load_dataset(name: str) -> ImageDataset:
    """Load a dataset by name; raises ValueError naming the known ones."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
    return loader()


def split_dataset(dataset: ImageDataset, test_fraction: float, seed: int) -> Split:
    """Stratified split of image IDs, the same for the same fraction and seed."""
    from sklearn.model_selection import train_test_split

    ids = np.arange(len(dataset))
    train_ids, test_ids = train_test_split(
        ids, test_size=test_fraction, random_state=seed, stratify=dataset.labels
    )
    return Split(train_ids=np.asarray(train_ids), test_ids=np.asarray(test_ids))


def flatten(images: np.ndarray) -> np.ndarray:
    """Images `[N, H, W]` as the model's feature rows `[N, H*W]`."""
    images = np.asarray(images, dtype=np.float32)
    return images.reshape(images.shape[0], -1)
