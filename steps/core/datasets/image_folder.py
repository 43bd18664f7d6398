"""A folder of images laid out one sub-folder per class, `root/<class>/<file>` (the layout of
torchvision's `ImageFolder`), PNG or JPEG, grey or colour, any size; or already split,
`root/train/<class>/<file>` beside `root/test/...` and/or `root/val/...` (when those are the
root's only sub-folders and hold class folders), each image then in its folder's split.

Classes are the class folders' names, sorted (the union over the splits); an image's ID is its
path relative to the root (`cat/001.png`, `test/cat/001.png`), so it stays the same when files
are added. Images are decoded with Pillow: if
any is in colour, all are read as RGB, otherwise as grey. With `image_size` every image is
resized to it (bilinear, antialiased); without it all must have the same size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steps.core.image_dataset import (DATASET_SOURCES, SPLIT_NAMES, DataError, DatasetSource,
                             ImageDataset)

EXTENSIONS = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@DATASET_SOURCES.register
class ImageFolder(DatasetSource):
    name = "image_folder"
    usage = "a path to a folder of class sub-folders of PNG/JPEG images (root/<class>/<file>)"

    @classmethod
    def accepts(cls, spec: str) -> bool:
        # A missing folder given as a path (`data/images`) is accepted, to be named as missing.
        return Path(spec).expanduser().is_dir() or cls.names_a_path(spec)

    @classmethod
    def names_a_path(cls, spec: str) -> bool:
        return "/" in spec and not Path(spec).expanduser().suffix

    @property
    def root(self) -> Path:
        return Path(self.spec).expanduser()

    def class_roots(self) -> list[tuple[str | None, Path]]:
        """`(split, folder of class folders)`: the root's `train/`, `test/`, `val/` when the
        data comes split, else `(None, root)`. DataError for a missing folder."""
        root = self.root
        if not root.is_dir():
            raise DataError(f"no folder at {root}")
        folders = _sub_folders(root)
        if folders and all(f.name in SPLIT_NAMES and _sub_folders(f) for f in folders):
            return [(folder.name, folder) for folder in folders]
        return [(None, root)]

    def files(self) -> list[tuple[str | None, str, Path]]:
        """`(split, class name, file)` for every image file, sorted; DataError for a folder
        that is missing, empty or has a class folder without images."""
        return self.scan()[0]

    def notes(self) -> list[str]:
        skipped = self.scan()[1]
        if not skipped:
            return []
        names = ", ".join(path.relative_to(self.root).as_posix() for path in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        return [f"Note: skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} of "
                f"{self.root} that {'is' if len(skipped) == 1 else 'are'} not a PNG or JPEG "
                f"image in a class folder: {names}{more}"]

    def scan(self) -> tuple[list[tuple[str | None, str, Path]], list[Path]]:
        """The image files as `files` gives them, and the other (not hidden) files skipped."""
        found, skipped = [], []
        roots = self.class_roots()
        if roots[0][0] is not None:
            skipped += _loose_files(self.root)
        for split, folder in roots:
            skipped += _loose_files(folder)
            classes = _sub_folders(folder)
            if not classes:
                raise DataError(f"{folder} has no class sub-folders; lay it out as "
                                   "root/<class>/<image file> (or root/train/<class>/..., "
                                   "root/test/<class>/...)")
            for class_folder in classes:
                files = sorted(p for p in class_folder.rglob("*") if p.is_file()
                               and not p.name.startswith("."))
                images = [p for p in files if p.suffix.lower() in EXTENSIONS]
                if not images:
                    raise DataError(f"class folder {class_folder} holds no PNG or JPEG image")
                found += [(split, class_folder.name, path) for path in images]
                skipped += [p for p in files if p.suffix.lower() not in EXTENSIONS]
        return found, sorted(skipped)

    def load(self) -> ImageDataset:
        from PIL import Image, UnidentifiedImageError

        files = self.files()
        decoded = []
        for *_, path in files:
            try:
                with Image.open(path) as image:
                    image.load()
                    decoded.append(image.copy())
            except (OSError, UnidentifiedImageError, ValueError) as error:
                raise DataError(f"cannot read image {path}: {error}") from None
        colour = any(image.mode not in GREY_MODES for image in decoded)
        mode = "RGB" if colour else "L"
        if not self.image_size:
            sizes = {}
            for (*_, path), image in zip(files, decoded):
                sizes.setdefault(image.size, path)
            if len(sizes) > 1:
                (a, path_a), (b, path_b) = list(sizes.items())[:2]
                raise DataError(
                    f"images have different sizes ({path_a} is {a[1]}×{a[0]}, {path_b} is "
                    f"{b[1]}×{b[0]}); set -P image_size=H,W to resize them all")
        images = np.stack([pixels(image, mode, self.image_size) for image in decoded])
        class_names = tuple(sorted({name for _, name, _ in files}))
        index = {name: i for i, name in enumerate(class_names)}
        splits = tuple(split for split, _, _ in files)
        return ImageDataset(
            name=self.root.resolve().name,
            images=images,
            labels=np.array([index[name] for _, name, _ in files], dtype=np.int64),
            class_names=class_names,
            image_ids=tuple(path.relative_to(self.root).as_posix() for *_, path in files),
            splits=None if splits[0] is None else splits,
        )

    def content_digest(self, digest) -> None:
        for *_, path in self.files():
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError as error:
                raise DataError(f"cannot read image {path}: {error.strerror}") from None

    def location(self) -> str:
        return str(self.root.resolve())


def pixels(image, mode: str, size: tuple[int, ...] = ()) -> np.ndarray:
    """A decoded Pillow image as the dataset holds it: converted to `mode` (`RGB` or `L`),
    resized to `size` (H, W; bilinear, antialiased) when given, float32 in [0, 1]. The one
    place an image file becomes pixels: the explainer service reads the bytes it is sent
    through it too (`steps/core/serving.py`), so a file gives the same pixels either way."""
    from PIL import Image

    image = image.convert(mode)
    if size:
        height, width = size
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def _loose_files(folder: Path) -> list[Path]:
    """Files (not hidden) beside the class or split folders: no image of any class."""
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
