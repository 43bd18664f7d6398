"""Data the tests make themselves: an image folder of colour PNG/JPEG files and an .npz file.

The images are scikit-learn's digits 0 to 3, upscaled and tinted a random colour (so colour
carries no class information), in two sizes, so that `image_size` matters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

CLASSES = ("zero", "one", "two", "three")


def tinted_digits(per_class: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 colour images `[N, size, size, 3]` of digits 0..3 and their labels."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(CLASSES)):
        for grey in digits.images[digits.target == label][:per_class]:
            big = Image.fromarray((grey * 255 / 16).astype(np.uint8)).resize(
                (size, size), Image.Resampling.BILINEAR)
            tint = rng.uniform(0.4, 1.0, size=3)
            images.append((np.asarray(big, np.float32)[..., None] * tint).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def write_image_folder(root: Path, per_class: int = 25, sizes=(16, 12), seed: int = 0) -> Path:
    """`root/<class>/<n>.png` (every fifth a JPEG), colour, half of each class in each size."""
    for size_index, size in enumerate(sizes):
        images, labels = tinted_digits(per_class, size, seed + size_index)
        for n, (image, label) in enumerate(zip(images, labels)):
            if n % len(sizes) != size_index:
                continue
            folder = root / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            suffix = "jpg" if n % 5 == 0 else "png"
            Image.fromarray(image).save(folder / f"img_{n:03d}.{suffix}")
    return root


def write_npz(path: Path, per_class: int = 30, size: int = 10, seed: int = 1) -> Path:
    images, labels = tinted_digits(per_class, size, seed)
    np.savez(path, images=images, labels=labels, class_names=np.array(CLASSES))
    return path


def write_split_folder(root: Path, train_per_class: int = 12, test_per_class: int = 5,
                       size: int = 12, seed: int = 2, splits=("train", "test")) -> dict[str, list]:
    """`root/<split>/<class>/<n>.png`: different images in each split (`train` first, then
    the next ones for `test`, then `val`). Returns each split's image IDs."""
    counts = {"train": train_per_class, "test": test_per_class, "val": test_per_class}
    per_class = sum(counts[split] for split in splits)
    images, labels = tinted_digits(per_class, size, seed)
    ids: dict[str, list] = {split: [] for split in splits}
    for label in range(len(CLASSES)):
        own = images[labels == label]
        start = 0
        for split in splits:
            for n in range(start, start + counts[split]):
                image_id = f"{split}/{CLASSES[label]}/{n:03d}.png"
                (root / image_id).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(own[n]).save(root / image_id)
                ids[split].append(image_id)
            start += counts[split]
    return ids
