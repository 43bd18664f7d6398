"""Image datasets: what every source gives, how one is chosen, and the train/test split.

A dataset source is a small class registered in `DATASET_SOURCES` (one module per source in
`steps/core/datasets/`): it says whether it accepts a `-P dataset=` value (and whether that
value names a file or folder, `names_a_path`), loads the images and computes a content digest. Every source gives an `ImageDataset`: float32 pixels in [0, 1],
`[N, H, W]` (grey) or `[N, H, W, C]` (colour), integer labels indexing `class_names`, a
stable `image_ids` string per image and, for data that comes split (`train/`, `test/`, `val/`
folders, an `.npz` `split` array), each image's split. Nothing here knows about MLflow.

Which images train and which are evaluated (`SplitChoice`): the data's own split where it has
one, else a stratified random one (`test_fraction`, `split_seed`); `eval_split=all` evaluates
every image, for a model trained elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from steps.core.errors import DataError
from steps.core.parameters import TEXT, Choice, Float, Integer, IntList, Parameter
from steps.core.registry import Registry


#: The splits a dataset may come with, and what a map run's `Split` tag says.
TRAIN, TEST, VAL = "train", "test", "val"
SPLIT_NAMES = (TRAIN, TEST, VAL)
#: `eval_split=all`: every image is evaluated; none is held out for training.
ALL = "all"
EVAL_SPLITS = (TEST, VAL, ALL)


@dataclass(frozen=True)
class ImageDataset:
    """Images in [0, 1], integer labels `[N]`, the class names and each image's stable ID."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    image_ids: tuple[str, ...]
    #: Each image's split (`train`, `test`, `val`) when the data comes split, else None.
    splits: tuple[str, ...] | None = None
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.labels) != n or len(self.image_ids) != n:
            raise DataError(f"dataset {self.name}: {n} images but {len(self.labels)} labels "
                               f"and {len(self.image_ids)} image IDs; give one label per image")
        if n == 0:
            raise DataError(f"dataset {self.name} holds no images")
        if self.images.ndim not in (3, 4):
            raise DataError(f"dataset {self.name}: images must be [N, H, W] or [N, H, W, C], "
                               f"not shape {self.images.shape}")
        present = np.unique(self.labels)
        if len(present) < 2:
            raise DataError(f"dataset {self.name} has one class only "
                               f"({self.class_names[int(present[0])]!r}); a classifier needs two")
        object.__setattr__(self, "_rows", {image_id: row for row, image_id
                                           in enumerate(self.image_ids)})
        if len(self._rows) != n:
            raise DataError(f"dataset {self.name}: image IDs are not unique")
        if self.splits is not None:
            unknown = sorted(set(self.splits) - set(SPLIT_NAMES))
            if len(self.splits) != n or unknown:
                raise DataError(f"dataset {self.name}: give each image's split as one of "
                                   f"{', '.join(SPLIT_NAMES)}, one per image"
                                   + (f" (found {', '.join(map(repr, unknown[:3]))})"
                                      if unknown else ""))

    @property
    def predefined(self) -> bool:
        """Whether the data comes with its own split."""
        return self.splits is not None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """`(H, W)` or `(H, W, C)`."""
        return tuple(self.images.shape[1:])

    def describe_shape(self) -> str:
        h, w = self.image_shape[:2]
        kind = f"{self.image_shape[2]}-channel colour" if len(self.image_shape) == 3 else "grey"
        return f"{h}×{w} {kind}"

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """The rows of the given image IDs; DataError naming those not in the dataset."""
        missing = [i for i in image_ids if i not in self._rows]
        if missing:
            examples = ", ".join(self.image_ids[:3])
            raise DataError(f"image IDs {', '.join(missing)} are not in the {self.name} "
                               f"dataset ({len(self)} images, IDs such as {examples})")
        return np.array([self._rows[i] for i in image_ids], dtype=np.int64)


@dataclass(frozen=True)
class SplitChoice:
    """How the user asked to split: the random split's fraction and seed (used only for data
    that does not come split), and which images are evaluated (`test`, `val` or `all`)."""

    test_fraction: float
    seed: int
    eval_split: str = TEST
    #: Whether the user set test_fraction or split_seed (a note says when they are ignored).
    settings_given: bool = field(default=False, compare=False)

    def apply(self, dataset: ImageDataset) -> Split:
        if self.eval_split not in EVAL_SPLITS:
            raise DataError(f"eval_split {self.eval_split!r}: give one of "
                               f"{', '.join(EVAL_SPLITS)}")
        rows = np.arange(len(dataset))
        if self.eval_split == ALL:
            return Split(np.array([], dtype=np.int64), rows, ALL)
        if dataset.predefined:
            splits = np.asarray(dataset.splits)
            evaluated = rows[splits == self.eval_split]
            if not len(evaluated):
                present = ", ".join(f"{name}/" for name in SPLIT_NAMES if name in splits)
                raise DataError(f"dataset {dataset.name} has no {self.eval_split}/ split "
                                   f"to evaluate (it has {present}); choose one of those with "
                                   "-P eval_split=, or all")
            return Split(rows[splits == TRAIN], evaluated, self.eval_split, predefined=True)
        if self.eval_split == VAL:
            raise DataError(f"dataset {dataset.name} has no val/ split of its own (it is "
                               "split at random by test_fraction and split_seed); give a "
                               "folder with train/, test/ and val/ sub-folders or an .npz "
                               "with a split array, or evaluate eval_split=test")
        return random_split(dataset, self.test_fraction, self.seed)

    def notes(self, dataset: ImageDataset) -> list[str]:
        """What a user should know about this split of `dataset`, one line each: settings it
        ignores, classes missing from a split."""
        lines = []
        if self.settings_given and (dataset.predefined or self.eval_split == ALL):
            why = ("comes with its own split" if dataset.predefined and self.eval_split != ALL
                   else "is evaluated whole (eval_split=all)")
            lines.append(f"Note: test_fraction and split_seed are ignored: {dataset.name} {why}")
        if dataset.predefined and self.eval_split != ALL:
            splits = np.asarray(dataset.splits)
            for name in SPLIT_NAMES:
                present = set(dataset.labels[splits == name].tolist())
                missing = [c for i, c in enumerate(dataset.class_names) if i not in present]
                if present and missing:
                    lines.append(f"Note: {name}/ of {dataset.name} has no image of class"
                                 f"{'es' if len(missing) > 1 else ''} {', '.join(missing)}")
        return lines


#: Where the images come from and their size.
DATASET = Parameter("dataset", "digits", TEXT,
                    "`digits`, a folder of class sub-folders of images, or an .npz file.")
IMAGE_SIZE = Parameter("image_size", "", IntList(minimum=1, length=2, allow_empty=True),
                       "Resize every image to height,width (empty: keep the images' size).")
DATA_PARAMETERS = (DATASET, IMAGE_SIZE)

#: Which images are held out and evaluated.
SPLIT_PARAMETERS = (
    Parameter("test_fraction", 0.25, Float(0, 1, min_open=True, max_open=True),
              "Fraction of the dataset held out as the test split (data with its own train/ "
              "and test/ split ignores it)."),
    Parameter("split_seed", 0, Integer(min=0), "Seed of the train/test split."),
    Parameter("eval_split", TEST, Choice(EVAL_SPLITS),
              "The images evaluated and explained: `test` (the data's own test/ split, else "
              "the random test_fraction), `val` (the data's own val/ split) or `all` (every "
              "image; for a model_uri trained elsewhere)."),
)


def split_choice(values: Mapping[str, Any]) -> SplitChoice:
    """The SPLIT_PARAMETERS' values (converted, or as logged) as a SplitChoice."""
    fraction, seed = float(values["test_fraction"]), int(values["split_seed"])
    defaults = tuple(p.default for p in SPLIT_PARAMETERS[:2])
    return SplitChoice(fraction, seed, values.get("eval_split") or TEST,
                       settings_given=(fraction, seed) != defaults)


@dataclass(frozen=True)
class Split:
    """Rows of the train part and of the evaluated part, and where the split came from."""

    train_rows: np.ndarray
    test_rows: np.ndarray
    #: What the evaluated images are called on their runs' `Split` tag: test, val or all.
    evaluated: str = TEST
    #: From the data itself (folders, an .npz array) rather than drawn at random.
    predefined: bool = False

    @property
    def origin(self) -> str:
        """`predefined`, `random` or `all` (no training split)."""
        if self.evaluated == ALL:
            return ALL
        return "predefined" if self.predefined else "random"

    def name_of(self, row: int, dataset: ImageDataset) -> str:
        """The split an image is in, as its `Split` tag says."""
        if self.evaluated == ALL:
            return ALL
        if dataset.predefined:
            return dataset.splits[row]
        return TEST if row in self.test_rows else TRAIN


def random_split(dataset: ImageDataset, test_fraction: float, seed: int) -> Split:
    """Stratified split of the rows, the same for the same data, fraction and seed."""
    from sklearn.model_selection import train_test_split  # sklearn takes a second to import

    rows = np.arange(len(dataset))
    classes = len(np.unique(dataset.labels))
    test_size = int(np.ceil(test_fraction * len(rows)))
    if len(rows) - test_size < classes or test_size < classes:
        raise DataError(
            f"test_fraction {test_fraction} splits the {len(rows)} images of {dataset.name} into "
            f"{len(rows) - test_size} to train and {test_size} to test; each part needs at least "
            f"one image per class ({classes})")
    counts = np.bincount(dataset.labels)
    stratify = dataset.labels if counts[counts > 0].min() >= 2 else None
    train_rows, test_rows = train_test_split(rows, test_size=test_fraction, random_state=seed,
                                             stratify=stratify)
    return Split(train_rows=np.asarray(train_rows), test_rows=np.asarray(test_rows))


def flatten(images: np.ndarray) -> np.ndarray:
    """Images `[N, H, W(, C)]` as feature rows `[N, H*W*C]`, in `H, W, C` order: the input
    convention of every model the pipeline explains."""
    images = np.asarray(images, dtype=np.float32)
    return images.reshape(images.shape[0], -1)


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float images `[N, H, W(, C)]` resized to `size` (H, W) with Pillow's bilinear filter
    (antialiased when shrinking), channel by channel in Pillow's 32-bit float mode."""
    from PIL import Image

    height, width = size
    if images.shape[1:3] == (height, width):
        return images
    channels = images[..., np.newaxis] if images.ndim == 3 else images
    out = np.empty((len(images), height, width, channels.shape[-1]), dtype=np.float32)
    for i, image in enumerate(channels):
        for c in range(channels.shape[-1]):
            plane = Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F")
            out[i, ..., c] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    out = np.clip(out, 0.0, 1.0)
    return out[..., 0] if images.ndim == 3 else out


class DatasetSource:
    """Where images come from; a subclass is registered under its `name`.

    `spec` is the user's `-P dataset=` value and `image_size` the `-P image_size=` one (empty:
    keep the images' own size, which must then be the same for all).
    """

    name: ClassVar[str]
    #: What a user writes to choose it, for messages and the README.
    usage: ClassVar[str]

    def __init__(self, spec: str, image_size: tuple[int, ...] = ()) -> None:
        self.spec = spec
        self.image_size = tuple(image_size)

    @classmethod
    def accepts(cls, spec: str) -> bool:
        raise NotImplementedError

    @classmethod
    def names_a_path(cls, spec: str) -> bool:
        """Whether `spec` is, by its form alone, a file or folder this source reads (a relative
        one is then taken from where `mlflow run` was started); no for named datasets."""
        return False

    def load(self) -> ImageDataset:
        raise NotImplementedError

    def content_digest(self, digest: Any) -> None:
        """Feed everything the images are read from into `digest` (a hashlib object)."""
        raise NotImplementedError

    def digest(self) -> str:
        """A short content digest: the same data and settings give the same digest, and any
        changed, added or removed image a new one. Computed without decoding images."""
        digest = hashlib.sha256()
        digest.update(f"{self.name}\0{self.image_size}\0".encode())
        self.content_digest(digest)
        return digest.hexdigest()[:16]

    def notes(self) -> list[str]:
        """What a user should know about how the data was read (e.g. files skipped), one
        line each."""
        return []

    def location(self) -> str:
        """Where the data is, for MLflow's dataset source."""
        return self.spec

    def get_config(self) -> dict[str, Any]:
        return {"type": self.name, "spec": self.spec, "image_size": list(self.image_size)}


DATASET_SOURCES: Registry = Registry("dataset source", "steps.core.datasets")


def dataset_source(spec: str, image_size: tuple[int, ...] = ()) -> DatasetSource:
    """The registered source that accepts `spec`; DataError saying what is accepted."""
    for source in DATASET_SOURCES:
        if source.accepts(spec):
            return source(spec, image_size)
    accepted = "; ".join(source.usage for source in DATASET_SOURCES)
    raise DataError(f"{spec!r} is not a dataset this pipeline reads. It takes: {accepted}")


def load_dataset(spec: str, image_size: tuple[int, ...] = ()) -> ImageDataset:
    return dataset_source(spec, image_size).load()
