"""A user's own images and own model, end to end: an image folder of colour PNG/JPEG files,
an .npz file, a model registered with an alias, read back from the store as a user would."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from steps.core.image_dataset import dataset_source, load_dataset, random_split
from tests.conftest import METRIC_DEFAULTS, module_store
from tests.images import CLASSES, write_image_folder, write_npz

SMALL = {"epochs": "40", "hidden_layer_sizes": "32", "n": "40", "max_images": "2",
         "query": "metrics.Predicted_class_conf < 1.01", "picture_mode": "both"}
SIZE = "16,16"
STEP_EXPERIMENTS = ("Train", "Evaluation", "Saliency Map Generation")


store = module_store("own_data")


@pytest.fixture(scope="module")
def folder(store):
    return write_image_folder(store.dir / "shapes")


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def main_runs(store):
    return [r for r in store.runs("Default")
            if r.data.tags.get("mlflow.project.entryPoint") == "main"]


def step_run_ids(store):
    return {r.info.run_id for name in STEP_EXPERIMENTS for r in store.runs(name)}


def one_error_line(result):
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


@pytest.fixture(scope="module")
def folder_pipeline(store, folder):
    """The whole pipeline on the folder (a relative path, as a user types it), registering the
    model it trains."""
    result = store.run({**SMALL, "dataset": "shapes", "image_size": SIZE,
                        "register_as": "shapes-mlp"})
    assert result.returncode == 0, result.output
    (main,) = main_runs(store)
    return main, result


def test_folder_pipeline_runs_tags_and_dataset_inputs(store, folder, folder_pipeline):
    main, _ = folder_pipeline
    client = store.client
    digest = dataset_source(str(folder), (16, 16)).digest()
    assert {r.info.status for r in store.all_runs()} == {"FINISHED"}
    tags = main.data.tags
    train = client.get_run(tags["Train_run_id"])
    assert train.data.params["dataset"] == str(folder)
    assert train.data.params["image_size"] == SIZE
    assert train.data.tags["Dataset"] == "shapes"
    assert train.data.tags["Dataset_digest"] == digest
    assert train.data.tags["Image_shape"] == "16x16x3"
    assert train.data.tags["Num_classes"] == "4"
    # MLflow's dataset tracking, on the train and the evaluation run.
    evaluation = client.get_run(tags["Evaluation_run_id"])
    for run, context in ((train, "training"), (evaluation, "evaluation")):
        (logged,) = run.inputs.dataset_inputs
        assert logged.dataset.name == "shapes" and logged.dataset.digest == digest
        assert str(folder) in logged.dataset.source
        input_tags = {t.key: t.value for t in logged.tags}
        assert input_tags["mlflow.data.context"] == context
        assert input_tags["test_fraction"] == "0.25" and input_tags["split_seed"] == "0"
        assert input_tags["split"] == "random" and input_tags["eval_split"] == "test"
    # The registered version, named on the main run, carries its lineage.
    assert train.data.tags["Registered_model"] == "shapes-mlp/1"
    assert tags["Model_version"] == "shapes-mlp/1"
    assert tags["Model_uri"] == evaluation.data.params["model_uri"] == "models:/shapes-mlp/1"
    version = client.get_model_version("shapes-mlp", "1")
    assert version.tags["Train_run_id"] == train.info.run_id
    assert version.tags["Dataset_digest"] == digest
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        train.data.metrics["test_accuracy"], abs=1e-6)
    # Its pyfunc gives probabilities, over flattened H, W, C pixels.
    data = load_dataset(str(folder), (16, 16))
    probabilities = mlflow.pyfunc.load_model("models:/shapes-mlp/1").predict(
        data.images[:3].reshape(3, -1))
    assert np.asarray(probabilities).shape == (3, 4)
    np.testing.assert_allclose(np.asarray(probabilities).sum(axis=1), 1, atol=1e-5)


def test_folder_samples_are_found_by_their_relative_path(store, folder, folder_pipeline):
    main, _ = folder_pipeline
    evaluation_id = main.data.tags["Evaluation_run_id"]
    samples = store.runs("Evaluation", f"tags.Evaluation_parent_run_id = '{evaluation_id}'")
    data = load_dataset(str(folder), (16, 16))
    test_ids = {data.image_ids[row] for row in random_split(data, 0.25, 0).test_rows}
    assert {r.data.tags["Image_id"] for r in samples} == test_ids and len(samples) == 25
    for run in samples:
        image_id = run.data.tags["Image_id"]
        assert (folder / image_id).is_file()
        assert run.data.tags["GT_class"] == image_id.split("/")[0]
        confs = [run.data.metrics[f"Class_{name}_conf"] for name in sorted(CLASSES)]
        assert sum(confs) == pytest.approx(1, abs=1e-5)
        assert run.data.tags["Predicted_class"] == sorted(CLASSES)[int(np.argmax(confs))]
    image_id = samples[0].data.tags["Image_id"]
    found = mlflow.search_runs(experiment_names=["Evaluation"],
                               filter_string=f"tags.Image_id = '{image_id}'")
    assert found["run_id"].tolist() == [samples[0].info.run_id]


def test_folder_maps_are_colour_sized_and_queryable(store, folder_pipeline):
    main, _ = folder_pipeline
    queried = main.data.tags["Queried_image_ids"].split(",")
    assert len(queried) == 2
    for image_id in queried:
        (run,) = store.runs("Saliency Map Generation", f"tags.Image_id = '{image_id}'")
        assert run.data.params["image_size"] == SIZE
        maps = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))
        assert maps.shape == (4, 16, 16) and np.isfinite(maps).all()
        paths = artifact_paths(store.client, run.info.run_id)
        assert {f"pictures/class_{name}.png" for name in CLASSES} <= paths
        assert run.data.tags["Model_version"] == "shapes-mlp/1"


def test_a_folder_map_reproduces_bit_identically(store, folder_pipeline):
    main, _ = folder_pipeline
    image_id = main.data.tags["Queried_image_ids"].split(",")[0]
    (source,) = store.runs("Saliency Map Generation", f"tags.Image_id = '{image_id}'")
    result = store.run({"reproduce_run_id": source.info.run_id}, entry_point="saliency")
    assert result.returncode == 0, result.output
    (again,) = store.runs("Saliency Map Generation",
                          f"tags.Reproduced_from = '{source.info.run_id}' "
                          f"AND tags.Image_id = '{image_id}'")
    assert again.data.metrics["Max_abs_difference"] == 0


def test_reuse_notices_a_changed_folder(store, folder, folder_pipeline):
    params = {**SMALL, "dataset": str(folder), "image_size": SIZE, "register_as": "shapes-mlp"}
    before = step_run_ids(store)
    result = store.run(params)
    assert result.returncode == 0, result.output
    assert step_run_ids(store) == before, "unchanged data: every step reused"

    shutil.copy(sorted((folder / "two").glob("*.png"))[0], folder / "two" / "extra.png")
    result = store.run(params)
    assert result.returncode == 0, result.output
    tags = main_runs(store)[0].data.tags
    assert not any(key.startswith("Reused_") for key in tags)
    assert {tags["Train_run_id"], tags["Evaluation_run_id"]} <= step_run_ids(store) - before
    assert tags["Model_version"] == "shapes-mlp/2"
    new_digest = dataset_source(str(folder), (16, 16)).digest()
    assert store.client.get_run(tags["Train_run_id"]).data.tags["Dataset_digest"] == new_digest


@pytest.fixture(scope="module")
def user_model(store):
    """A logistic regression the user trained elsewhere on the .npz file, with string labels,
    logged with mlflow.sklearn and registered with the alias `champion`."""
    from sklearn.linear_model import LogisticRegression

    npz = write_npz(store.dir / "tinted.npz")
    data = load_dataset(str(npz))
    rows = random_split(data, 0.25, 0).train_rows
    model = LogisticRegression(max_iter=300).fit(
        data.images[rows].reshape(len(rows), -1), np.asarray(data.class_names)[data.labels[rows]])
    mlflow.set_experiment("user models")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(model, name="logreg", registered_model_name="user-logreg")
    MlflowClient().set_registered_model_alias("user-logreg", "champion", "1")
    return npz, run.info.run_id


def test_a_registered_model_by_alias_goes_through_without_training(store, user_model):
    npz, source_run = user_model
    before_train = {r.info.run_id for r in store.runs("Train")}
    result = store.run({**SMALL, "dataset": str(npz),
                        "model_uri": "models:/user-logreg@champion"})
    assert result.returncode == 0, result.output
    main = main_runs(store)[0]
    assert {r.info.run_id for r in store.runs("Train")} == before_train, "nothing trained"
    tags = main.data.tags
    assert tags["Model_uri"] == "models:/user-logreg/1"
    assert tags["Model_version"] == "user-logreg/1" and tags["Model_alias"] == "champion"
    assert tags["Train_run_id"] == source_run
    evaluation = store.client.get_run(tags["Evaluation_run_id"])
    assert evaluation.data.params["model_uri"] == "models:/user-logreg/1"
    (logged,) = evaluation.inputs.dataset_inputs
    assert logged.dataset.name == "tinted.npz"
    assert logged.dataset.digest == dataset_source(str(npz)).digest()
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "evaluation"
    assert evaluation.data.metrics["num_samples"] == 30
    assert 0 <= evaluation.data.metrics["accuracy"] <= 1
    assert "confusion_matrix.png" in artifact_paths(store.client, evaluation.info.run_id)
    samples = store.runs("Evaluation",
                         f"tags.Evaluation_parent_run_id = '{evaluation.info.run_id}'")
    assert len(samples) == 30
    for run in samples:
        assert run.data.tags["Model_version"] == "user-logreg/1"
        assert run.data.tags["GT_class"] in CLASSES and run.data.tags["Predicted_class"] in CLASSES
    maps = [r for r in store.runs("Saliency Map Generation", "tags.Model_version = 'user-logreg/1'")
            if "Image_id" in r.data.tags]
    assert len(maps) == 2
    for run in maps:
        stored = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))
        assert stored.shape == (4, 10, 10) and np.isfinite(stored).all()
        assert run.data.params["dataset"] == str(npz)
        assert {"generator_config.json", "pictures/all_classes.png",
                *(f"pictures/class_{name}.png" for name in CLASSES)} <= artifact_paths(
                    store.client, run.info.run_id)


class LabelsOnly(mlflow.pyfunc.PythonModel):
    """A pyfunc that answers with one label per image, not probabilities."""

    def predict(self, context, model_input, params=None):
        return np.zeros(len(model_input), dtype=np.int64)


def test_models_that_do_not_fit_are_one_line_naming_both_shapes(store, user_model):
    npz, _ = user_model
    error = one_error_line(store.run({"dataset": "digits",
                                      "model_uri": "models:/user-logreg/1"}))
    assert "'--model_uri'" in error and "[N, 300]" in error and "[2, 64]" in error, error

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="labels", python_model=LabelsOnly())
    error = one_error_line(store.run({"dataset": str(npz), "model_uri": info.model_uri},
                                     entry_point="evaluate"))
    assert "'--model_uri'" in error and "returns shape (2,)" in error, error
    assert "RUNNING" not in {r.info.status for r in store.all_runs()}


@pytest.mark.parametrize("case,words", [("corrupt", "cannot read image"),
                                        ("mixed", "images have different sizes")])
def test_bad_folders_stop_the_pipeline_in_one_line_before_any_step(store, case, words):
    root = write_image_folder(store.dir / f"bad_{case}", per_class=3)
    if case == "corrupt":
        (root / "one" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    before = step_run_ids(store)
    params = {"dataset": str(root)} if case == "mixed" else {"dataset": str(root),
                                                              "image_size": "8,8"}
    error = one_error_line(store.run(params))
    assert "'--dataset'" in error and words in error, error
    assert step_run_ids(store) == before, "no step run started"


@pytest.mark.parametrize("algorithm,settings,logged,shape,picture", [
    ("random_grid", {"n": "60", "cell_size": "3,3", "p1": "0.4", "seed": "2"},
     {"n": "60", "cell_size": "3,3", "p1": "0.4", "seed": "2", "scoring": "occlusion",
      "fill": "0.0"}, (4, 16, 16), "pictures/all_classes.png"),
    ("sliding_radial", {"radius": "3,2.5", "stride": "2,2", "sigma": "1,1", "n": "7",
                        "scoring": "squared_difference"},
     {"radius": "3.0,2.5", "stride": "2,2", "sigma": "1.0,1.0", "scoring": "squared_difference",
      "fill": "0.0"}, (16, 16), "pictures/all_classes.png"),
    ("sliding_window", {"window_size": "4,4", "stride": "3,3", "fill": "0.5"},
     {"window_size": "4,4", "stride": "3,3", "scoring": "occlusion", "fill": "0.5"},
     (4, 16, 16), "pictures/all_classes.png"),
    ("mc_rise", {"n": "40", "s": "3", "seed": "1", "fill_colors": "1,0,0;0,0,1", "fill": "0.3"},
     {"n": "40", "s": "3", "p1": "0.5", "seed": "1",
      "fill_colors": "1.0,0.0,0.0;0.0,0.0,1.0"}, (2, 4, 16, 16),
     "pictures/fill_colour_1/all_classes.png"),
])
def test_each_algorithm_on_the_colour_folder(store, folder, folder_pipeline, algorithm,
                                             settings, logged, shape, picture):
    """`-e saliency` alone with the registered model: only the algorithm's own parameters are
    logged, and the stored configuration rebuilds xaitk's generator, which gives the stored map."""
    from steps.core.image_models import ProbaModel
    from steps.core.xaitk_generators import ImageClassifier, generator_from_config

    data = load_dataset(str(folder), (16, 16))
    image_id = data.image_ids[7]
    result = store.run({"model_uri": "models:/shapes-mlp/1", "dataset": str(folder),
                        "image_size": SIZE, "image_ids": image_id, "algorithm": algorithm,
                        "picture_mode": "combined", **settings}, entry_point="saliency")
    assert result.returncode == 0, result.output
    (run,) = store.runs("Saliency Map Generation",
                        f"params.algorithm = '{algorithm}' AND tags.Image_id = '{image_id}'")
    assert run.data.params == {"algorithm": algorithm, **logged, **METRIC_DEFAULTS,
                               "predict_batch_size": "256",
                               "dataset": str(folder), "image_size": SIZE,
                               "test_fraction": "0.25", "split_seed": "0", "eval_split": "test"}
    stored = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))
    assert stored.shape == shape and np.isfinite(stored).all()
    assert picture in artifact_paths(store.client, run.info.run_id)
    metrics = run.data.metrics
    assert {"Deletion_auc", "Insertion_auc", "Entropy", "Random_deletion_auc",
            "Random_insertion_auc", "Deletion_random_percentile"} <= set(metrics)
    if algorithm == "mc_rise":  # each fill colour's map scored on its own
        assert {"Deletion_auc_fill_0", "Insertion_auc_fill_1"} <= set(metrics)
        faithful = [metrics[f"Insertion_auc_fill_{k}"] - metrics[f"Deletion_auc_fill_{k}"]
                    for k in (0, 1)]
        assert run.data.tags["Most_faithful_fill"] == \
            ("0: red (1,0,0)", "1: blue (0,0,1)")[int(np.argmax(faithful))]
    found = mlflow.search_runs(experiment_names=["Saliency Map Generation"], filter_string=(
        f"params.algorithm = '{algorithm}' AND metrics.Insertion_auc <= {metrics['Insertion_auc']}"
        f" AND metrics.Deletion_auc >= {metrics['Deletion_auc']}"))
    assert run.info.run_id in found["run_id"].tolist()
    config = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/generator_config.json")
    model = ProbaModel(mlflow.sklearn.load_model("models:/shapes-mlp/1"))
    again = generator_from_config(config)(data.images[data.rows([image_id])[0]],
                                          ImageClassifier(model))
    np.testing.assert_allclose(again, stored, atol=1e-5)


def test_a_first_run_with_a_model_that_makes_no_mistake_shows_maps(store):
    """The default query (the mistakes) finds none: the least confident correct images are
    explained instead, and the driver says so."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = (rng.uniform(0, 0.3, (40, 6, 6)) + 0.7 * labels[:, None, None]).astype(np.float32)
    np.savez(store.dir / "dark_bright.npz", images=images, labels=labels,
             class_names=np.array(["dark", "bright"]))
    model = LogisticRegression().fit(images.reshape(40, -1), labels)
    mlflow.set_experiment("user models")
    with mlflow.start_run():
        logged = mlflow.sklearn.log_model(model, name="perfect")
    params = {key: value for key, value in SMALL.items() if key != "query"}
    result = store.run({**params, "dataset": "dark_bright.npz", "model_uri": logged.model_uri})
    assert result.returncode == 0, result.output
    assert ("The model got every evaluated image right: explaining the 2 it is least confident "
            "about instead (query tags.Correct = 'true', order metrics.Predicted_class_conf ASC)"
            in result.stdout), result.output
    main = [r for r in main_runs(store) if r.data.tags.get("Model_uri") == logged.model_uri][0]
    assert main.data.tags["Query"] == "tags.Correct = 'true'"
    maps = store.runs("Saliency Map Generation",
                      f"tags.`mlflow.parentRunId` = '{main.data.tags['Saliency_run_id']}'")
    assert len(maps) == 2
    assert all(r.data.tags["GT_class"] == r.data.tags["Predicted_class"] for r in maps)
