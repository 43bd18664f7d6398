"""Dataset sources (digits, image folders, .npz): what they load, their digests, bad data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from steps.core.image_dataset import DataError, dataset_source, load_dataset, random_split
from tests.images import CLASSES, write_image_folder, write_npz


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "shapes")


def test_image_folder_loads_colour_images_with_relative_path_ids(folder):
    data = load_dataset(str(folder), (16, 16))
    assert data.images.shape == (100, 16, 16, 3) and data.images.dtype == np.float32
    assert 0 <= data.images.min() and data.images.max() <= 1
    assert data.class_names == tuple(sorted(CLASSES))
    first = sorted(p.relative_to(folder).as_posix() for p in (folder / "one").iterdir())[0]
    assert data.image_ids[0] == first
    assert all((folder / image_id).is_file() for image_id in data.image_ids)
    # Each image's label is its folder.
    for image_id, label in zip(data.image_ids, data.labels):
        assert image_id.split("/")[0] == data.class_names[label]
    # The pixels are the file's, resized by Pillow.
    image_id = next(i for i in data.image_ids if i.startswith("two/") and i.endswith(".png"))
    row = data.rows([image_id])[0]
    expected = Image.open(folder / image_id).convert("RGB").resize(
        (16, 16), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(data.images[row], np.asarray(expected) / 255.0, atol=1e-6)
    assert data.describe_shape() == "16×16 3-channel colour"


def test_image_ids_stay_when_files_are_added(folder):
    before = load_dataset(str(folder), (8, 8))
    shutil.copy(folder / before.image_ids[0], folder / "one/a_new_image.jpg")
    after = load_dataset(str(folder), (8, 8))
    assert len(after) == len(before) + 1
    for image_id in before.image_ids:
        np.testing.assert_array_equal(after.images[after.rows([image_id])[0]],
                                      before.images[before.rows([image_id])[0]])


def test_grey_folder_stays_grey(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for n in range(3):
            Image.fromarray(np.full((5, 7), 40 * n, np.uint8)).save(tmp_path / label / f"{n}.png")
    data = load_dataset(str(tmp_path))
    assert data.images.shape == (6, 5, 7)
    assert data.describe_shape() == "5×7 grey"


def test_digest_changes_with_content_and_settings_only(folder):
    source = dataset_source(str(folder), (16, 16))
    digest = source.digest()
    assert digest == dataset_source(str(folder), (16, 16)).digest()
    assert digest != dataset_source(str(folder), (12, 12)).digest()
    target = sorted((folder / "zero").glob("*.png"))[0]
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    assert dataset_source(str(folder), (16, 16)).digest() != digest
    assert len(digest) == 16


def test_npz_loads_with_class_names(tmp_path):
    data = load_dataset(str(write_npz(tmp_path / "d.npz")))
    assert data.images.shape == (120, 10, 10, 3)
    assert data.class_names == CLASSES
    assert data.image_ids[:3] == ("0", "1", "2")
    assert data.describe_shape() == "10×10 3-channel colour"
    resized = load_dataset(str(tmp_path / "d.npz"), (6, 6))
    assert resized.images.shape == (120, 6, 6, 3)


def test_digits_resized(tmp_path):
    data = load_dataset("digits", (16, 16))
    assert data.images.shape == (1797, 16, 16)
    assert 0 <= data.images.min() and data.images.max() <= 1


def bad_folder(tmp_path, case):
    root = tmp_path / "bad"
    if case == "missing":
        return root
    root.mkdir()
    if case == "empty":
        return root
    write_image_folder(root, per_class=4)
    if case == "class_without_images":
        (root / "four").mkdir()
        (root / "four" / "notes.txt").write_text("no image here")
    elif case == "corrupt":
        (root / "two" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif case == "one_class":
        for name in CLASSES[1:]:
            shutil.rmtree(root / name)
    return root


@pytest.mark.parametrize("case,image_size,words", [
    ("missing", (), "no folder at"),
    ("empty", (), "has no class sub-folders"),
    ("class_without_images", (8, 8), "four holds no PNG or JPEG image"),
    ("corrupt", (8, 8), "cannot read image"),
    ("mixed_sizes", (), "images have different sizes"),
    ("one_class", (8, 8), "has one class only"),
])
def test_bad_folders_are_one_clear_error(tmp_path, case, image_size, words):
    root = bad_folder(tmp_path, case)
    with pytest.raises(DataError, match=words) as caught:
        load_dataset(str(root), image_size)
    assert "\n" not in str(caught.value)
    if case == "corrupt":
        assert "broken.png" in str(caught.value)
    if case == "mixed_sizes":
        assert "image_size=H,W" in str(caught.value)


def test_bad_npz_files_are_clear_errors(tmp_path):
    np.savez(tmp_path / "short.npz", images=np.zeros((5, 4, 4)), labels=np.arange(4))
    with pytest.raises(DataError, match="as many labels as images"):
        load_dataset(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((5, 4, 4)))
    with pytest.raises(DataError, match="has no labels array"):
        load_dataset(str(tmp_path / "nolabels.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_dataset(str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match="no .npz file at"):
        load_dataset(str(tmp_path / "absent.npz"))


def test_unknown_dataset_names_what_is_accepted():
    with pytest.raises(DataError, match="'mnist' is not a dataset this pipeline reads") as e:
        load_dataset("mnist")
    assert "digits" in str(e.value) and ".npz" in str(e.value) and "folder" in str(e.value)


def test_relative_paths_are_taken_from_the_launch_directory_as_sources_declare(
        tmp_path, monkeypatch):
    from steps.core.image_dataset import DATASET_SOURCES, DatasetSource
    from steps.tracking.inputs import absolute_dataset

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    launch = tmp_path.resolve()
    assert absolute_dataset("digits") == "digits"
    assert absolute_dataset("data.NPZ") == str(launch / "data.NPZ")
    assert absolute_dataset("images/train") == str(launch / "images/train")
    assert absolute_dataset("scans.h5") == "scans.h5"

    class H5File(DatasetSource):  # as a new file in steps/core/datasets/ would
        name = "h5"

        @classmethod
        def accepts(cls, spec):
            return spec.endswith(".h5")

        @classmethod
        def names_a_path(cls, spec):
            return cls.accepts(spec)

    monkeypatch.setitem(DATASET_SOURCES._classes, H5File.name, H5File)
    assert absolute_dataset("scans.h5") == str(launch / "scans.h5")


def test_split_that_leaves_a_part_without_every_class_is_refused():
    data = load_dataset("digits")
    with pytest.raises(DataError, match="each part needs at least one image per class"):
        random_split(data, 0.001, 0)


def test_files_a_folder_skips_are_named_and_hidden_ones_are_not(tmp_path):
    write_image_folder(tmp_path / "shapes", per_class=4, sizes=(8,))
    (tmp_path / "shapes" / "README.txt").write_text("about the data")
    (tmp_path / "shapes" / "one" / "labels.csv").write_text("a,b")
    (tmp_path / "shapes" / "one" / ".DS_Store").write_bytes(b"\0")
    (note,) = dataset_source(str(tmp_path / "shapes")).notes()
    assert note == (f"Note: skipped 2 files of {tmp_path / 'shapes'} that are not a PNG or "
                    "JPEG image in a class folder: README.txt, one/labels.csv")
    assert len(load_dataset(str(tmp_path / "shapes"))) == 16
