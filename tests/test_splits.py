"""The user's own split and a model trained elsewhere: data that comes split (train/ and test/
folders, an .npz `split` array) is used as given, `eval_split=all` evaluates every image,
`models:/<name>/latest` resolves, and image IDs holding commas travel as a JSON list."""

from __future__ import annotations

import json
import shlex
import shutil

import mlflow
import numpy as np
import pytest

from steps.core.errors import ParameterError
from steps.core.image_dataset import DataError, SplitChoice, load_dataset
from steps.core.parameters import TextList, as_param, text_items
from tests.conftest import module_store
from tests.images import CLASSES, tinted_digits, write_split_folder
from tests.test_own_data import one_error_line

SMALL = {"epochs": "30", "hidden_layer_sizes": "32", "n": "40", "picture_mode": "combined"}
COMMA_ID = "test/zero/a,b.png"


# --- reading the data's own split ------------------------------------------------------------

def test_a_folder_with_train_and_test_folders_is_read_as_its_own_split(tmp_path):
    ids = write_split_folder(tmp_path / "split", splits=("train", "test", "val"))
    data = load_dataset(str(tmp_path / "split"))
    assert data.predefined and data.class_names == tuple(sorted(CLASSES))
    assert set(data.image_ids) == set(ids["train"] + ids["test"] + ids["val"])
    for eval_split in ("test", "val"):
        split = SplitChoice(0.25, 0, eval_split).apply(data)
        assert sorted(data.image_ids[r] for r in split.train_rows) == sorted(ids["train"])
        assert sorted(data.image_ids[r] for r in split.test_rows) == sorted(ids[eval_split])
        assert split.origin == "predefined"
        assert {split.name_of(r, data) for r in split.test_rows} == {eval_split}
    # The random split's settings change nothing, and say so when the user set them.
    assert np.array_equal(SplitChoice(0.5, 3).apply(data).test_rows,
                          SplitChoice(0.25, 0).apply(data).test_rows)
    assert SplitChoice(0.25, 0).notes(data) == []
    (note,) = SplitChoice(0.5, 3, settings_given=True).notes(data)
    assert "test_fraction and split_seed are ignored" in note and "own split" in note


def test_a_class_missing_from_one_split_is_one_note(tmp_path):
    write_split_folder(tmp_path / "split")
    shutil.rmtree(tmp_path / "split" / "test" / "three")
    data = load_dataset(str(tmp_path / "split"))
    assert data.class_names == tuple(sorted(CLASSES))  # the union of the splits' classes
    (note,) = SplitChoice(0.25, 0).notes(data)
    assert note == "Note: test/ of split has no image of class three"


def test_an_npz_split_array_is_its_own_split(tmp_path):
    images, labels = tinted_digits(10, 8)
    splits = np.array(["train"] * 6 + ["test"] * 4)[np.arange(len(labels)) % 10]
    np.savez(tmp_path / "own.npz", images=images, labels=labels, split=splits)
    data = load_dataset(str(tmp_path / "own.npz"))
    split = SplitChoice(0.25, 0).apply(data)
    assert np.array_equal(np.sort(split.test_rows), np.flatnonzero(splits == "test"))
    assert np.array_equal(np.sort(split.train_rows), np.flatnonzero(splits == "train"))
    with pytest.raises(DataError, match="no val/ split to evaluate .*train/, test/"):
        SplitChoice(0.25, 0, "val").apply(data)
    np.savez(tmp_path / "bad.npz", images=images, labels=labels,
             split=np.where(splits == "test", "testing", splits))
    with pytest.raises(DataError, match="one of train, test, val.*'testing'"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_all_evaluates_every_image_and_val_needs_data_that_has_one(tmp_path):
    images, labels = tinted_digits(10, 8)
    np.savez(tmp_path / "plain.npz", images=images, labels=labels)
    data = load_dataset(str(tmp_path / "plain.npz"))
    whole = SplitChoice(0.25, 0, "all").apply(data)
    assert len(whole.train_rows) == 0 and sorted(whole.test_rows) == list(range(len(data)))
    assert whole.origin == "all" and whole.name_of(0, data) == "all"
    random = SplitChoice(0.25, 0).apply(data)
    assert random.origin == "random" and len(random.test_rows) == 10
    with pytest.raises(DataError, match="no val/ split of its own"):
        SplitChoice(0.25, 0, "val").apply(data)


def test_image_ids_with_commas_travel_as_a_json_list():
    ids = ("test/zero/a,b.png", "c.png")
    assert as_param(ids) == '["test/zero/a,b.png", "c.png"]'
    assert text_items(as_param(ids)) == ids
    assert as_param(("a.png", "c.png")) == "a.png,c.png"  # the plain form where it suffices
    assert TextList().convert('["a,b.png","c.png"]', None, None) == ("a,b.png", "c.png")
    assert TextList().convert(" a.png , 7 ", None, None) == ("a.png", "7")
    for bad, words in (('["a.png",', "is not a JSON list"), ('["a.png", 3]', "of strings"),
                       ('[""]', "an empty item")):
        with pytest.raises(ParameterError, match=words):
            TextList().convert(bad, None, None)


# --- end to end ------------------------------------------------------------------------------

store = module_store("splits")


@pytest.fixture(scope="module")
def split_folder(store):
    """train/ and test/ of different images, and one test image whose name holds a comma."""
    ids = write_split_folder(store.dir / "split")
    first = ids["test"][0]  # a zero
    (store.dir / "split" / first).rename(store.dir / "split" / COMMA_ID)
    (store.dir / "split" / "test" / "one" / "labels.txt").write_text("not an image")
    ids["test"] = [COMMA_ID if i == first else i for i in ids["test"]]
    return ids


def samples_of(store, evaluation_id: str) -> dict[str, object]:
    return {run.data.tags["Image_id"]: run for run in store.runs(
        "Evaluation", f"tags.Evaluation_parent_run_id = '{evaluation_id}'")}


@pytest.fixture(scope="module")
def split_pipeline(store, split_folder):
    """The pipeline on the folder, explaining the image whose ID holds a comma (the driver
    passes it on to the saliency step)."""
    result = store.run({**SMALL, "dataset": "split", "test_fraction": "0.4",
                        "query": f"tags.Image_id = '{COMMA_ID}'"})
    assert result.returncode == 0, result.output
    (main,) = [r for r in store.runs("Default")
               if r.data.tags.get("mlflow.project.entryPoint") == "main"]
    return main, result


def test_the_pipeline_trains_on_train_and_evaluates_exactly_test(store, split_folder,
                                                                  split_pipeline):
    main, result = split_pipeline
    assert result.output.count("Note: test_fraction and split_seed are ignored: split comes "
                               "with its own split") == 1, result.output
    assert result.output.count("Note: skipped 1 file of ") == 1
    assert "that is not a PNG or JPEG image in a class folder: test/one/labels.txt" in \
        result.output
    train = store.client.get_run(main.data.tags["Train_run_id"])
    assert train.data.tags["Train_size"] == str(len(split_folder["train"]))
    assert train.data.tags["Test_size"] == str(len(split_folder["test"]))
    evaluation = store.client.get_run(main.data.tags["Evaluation_run_id"])
    assert evaluation.data.params["eval_split"] == "test"
    (logged,) = evaluation.inputs.dataset_inputs
    assert {t.key: t.value for t in logged.tags}["split"] == "predefined"
    samples = samples_of(store, evaluation.info.run_id)
    assert sorted(samples) == sorted(split_folder["test"])
    assert {run.data.tags["Split"] for run in samples.values()} == {"test"}

    (saliency_id,) = main.data.tags["Saliency_run_id"].split(",")
    saliency = store.client.get_run(saliency_id)
    # MLflow logs a project's string parameters shell-quoted.
    assert json.loads(shlex.split(saliency.data.params["image_ids"])[0]) == [COMMA_ID]
    assert json.loads(saliency.data.tags["Image_ids"]) == [COMMA_ID]
    (map_run,) = store.runs("Saliency Map Generation",
                            f"tags.Saliency_parent_run_id = '{saliency_id}'")
    assert map_run.data.tags["Image_id"] == COMMA_ID and map_run.data.tags["Split"] == "test"
    assert map_run.data.params["eval_split"] == "test"


@pytest.fixture(scope="module")
def own_model(store, split_folder):
    """A logistic regression trained elsewhere on the train/ images, registered twice (the
    second version is the latest)."""
    from sklearn.linear_model import LogisticRegression

    data = load_dataset(str(store.dir / "split"))
    rows = SplitChoice(0.25, 0).apply(data).train_rows
    mlflow.set_experiment("user models")
    for max_iter in (50, 300):
        model = LogisticRegression(max_iter=max_iter).fit(
            data.images[rows].reshape(len(rows), -1), data.labels[rows])
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="logreg", registered_model_name="own")
    return data


def test_a_model_from_elsewhere_is_evaluated_on_every_image_by_latest(store, own_model):
    result = store.run({"model_uri": "models:/own/latest", "dataset": "split",
                        "eval_split": "all"}, entry_point="evaluate")
    assert result.returncode == 0, result.output
    (evaluation,) = [run for run in store.runs("Evaluation", "tags.Model_version = 'own/2'")
                     if "Image_id" not in run.data.tags]
    tags = evaluation.data.tags
    assert tags["Model_uri"] == "models:/own/2"
    assert tags["Model_version"] == "own/2" and tags["Model_alias"] == "latest"
    (logged,) = evaluation.inputs.dataset_inputs
    input_tags = {t.key: t.value for t in logged.tags}
    assert input_tags["split"] == "all" and input_tags["eval_split"] == "all"
    samples = samples_of(store, evaluation.info.run_id)
    assert sorted(samples) == sorted(own_model.image_ids)
    assert {run.data.tags["Split"] for run in samples.values()} == {"all"}


def test_split_refusals_are_one_line_each(store, split_folder, split_pipeline, own_model):
    main, _ = split_pipeline
    trained_here = store.client.get_run(main.data.tags["Train_run_id"]).data.tags["Model_uri"]
    (store.dir / "tests_only" / "test").mkdir(parents=True)
    shutil.copytree(store.dir / "split" / "test", store.dir / "tests_only" / "test",
                    dirs_exist_ok=True)
    images, labels = tinted_digits(5, 12)
    np.savez(store.dir / "plain.npz", images=images, labels=labels)
    before = {r.info.run_id for e in ("Train", "Evaluation", "Saliency Map Generation")
              for r in store.runs(e)}
    line = one_error_line(store.run({"dataset": "split", "eval_split": "all"}))
    assert ("Invalid value for '--eval_split': eval_split=all evaluates every image, which "
            "leaves none to train on") in line, line
    split, plain = str(store.dir / "split"), str(store.dir / "plain.npz")
    cases = [  # the steps' own processes: what `mlflow run -e <step>` would start
        ("evaluate", {"model_uri": "models:/own/latest", "dataset": split, "eval_split": "val"},
         "Invalid value for '--eval_split': dataset split has no val/ split to evaluate (it has "
         "train/, test/)"),
        ("evaluate", {"model_uri": trained_here, "dataset": split, "eval_split": "all"},
         "eval_split=all would evaluate it on its training images"),
        ("evaluate", {"model_uri": "models:/own/latest", "dataset": plain, "eval_split": "val"},
         "dataset plain.npz has no val/ split of its own"),
        ("train", {"dataset": str(store.dir / "tests_only")},
         "Invalid value for '--dataset': dataset tests_only has no train/ split to train on"),
        ("evaluate", {"model_uri": "models:/nobody/latest", "dataset": split},
         "registered model nobody has no version"),
        ("saliency", {"model_uri": "models:/own/latest", "dataset": split,
                      "image_ids": '["test/zero/a,b.png"'},
         "Invalid value for '--image_ids': '[\"test/zero/a,b.png\"' is not a JSON list"),
    ]
    for entry_point, params, words in cases:
        line = one_error_line(store.process(params, entry_point=entry_point))
        assert words in line, (entry_point, params, line)
    assert {r.info.run_id for e in ("Train", "Evaluation", "Saliency Map Generation")
            for r in store.runs(e)} == before, "a refused step writes no run"
