"""A NumPy `.npz` file holding `images` (`[N, H, W]` or `[N, H, W, C]`) and `labels` (`[N]`).

Optional arrays: `class_names` (one per class, in label order), `image_ids` (one string per
image) and `split` (`train`, `test` or `val` per image: the data's own split). Without them the
classes are the sorted distinct labels, an image's ID is its index and the split is drawn at
random.
Integer images are read as 8-bit (divided by 255), float images must already be in [0, 1].
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from steps.core.image_dataset import DATASET_SOURCES, DataError, DatasetSource, ImageDataset, resize


@DATASET_SOURCES.register
class NpzFile(DatasetSource):
    name = "npz"
    usage = "a path to an .npz file with `images` and `labels` arrays"

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec.lower().endswith(".npz")

    @classmethod
    def names_a_path(cls, spec: str) -> bool:
        return cls.accepts(spec)

    @property
    def path(self) -> Path:
        return Path(self.spec).expanduser()

    def load(self) -> ImageDataset:
        path = self.path
        if not path.is_file():
            raise DataError(f"no .npz file at {path}")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                missing = {"images", "labels"} - set(arrays.files)
                if missing:
                    raise DataError(f"{path} has no {' or '.join(sorted(missing))} array "
                                       f"(it holds: {', '.join(arrays.files) or 'nothing'})")
                images, labels = arrays["images"], arrays["labels"]
                names = arrays["class_names"] if "class_names" in arrays.files else None
                ids = arrays["image_ids"] if "image_ids" in arrays.files else None
                splits = arrays["split"] if "split" in arrays.files else None
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(f"{path} is not a readable .npz file ({error})") from None
        if images.ndim not in (3, 4) or len(images) != len(labels) or labels.ndim != 1:
            raise DataError(f"{path}: images of shape {images.shape} and labels of shape "
                               f"{labels.shape}; expected images [N, H, W] or [N, H, W, C] and "
                               "labels [N], as many labels as images")
        if np.issubdtype(images.dtype, np.integer):
            images = images.astype(np.float32) / 255.0
        images = images.astype(np.float32)
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: float images must have finite pixels in [0, 1] "
                               f"(found {images.min():.3g} to {images.max():.3g})")
        if self.image_size:
            images = resize(images, self.image_size)
        values, codes = np.unique(labels, return_inverse=True)
        if names is not None:
            if np.issubdtype(labels.dtype, np.integer) and len(values) and (
                    values.min() >= 0 and values.max() < len(names)):
                codes, class_names = labels.astype(np.int64), tuple(str(n) for n in names)
            else:
                raise DataError(f"{path}: class_names has {len(names)} names, but labels "
                                   f"{values[:5].tolist()}... are not indices into it")
        else:
            class_names = tuple(str(v) for v in values)
        image_ids = (tuple(str(i) for i in ids) if ids is not None
                     else tuple(str(i) for i in range(len(images))))
        return ImageDataset(name=path.name, images=images, labels=np.asarray(codes, np.int64),
                            class_names=class_names, image_ids=image_ids,
                            splits=None if splits is None else tuple(str(s) for s in splits))

    def content_digest(self, digest) -> None:
        try:
            with open(self.path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
        except OSError as error:
            raise DataError(f"cannot read {self.path}: {error.strerror}") from None

    def location(self) -> str:
        return str(self.path.resolve())
