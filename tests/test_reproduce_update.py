"""Regenerating a stored saliency map from what was logged, and amending a stored map run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest

from steps.core.image_dataset import load_dataset
from tests.conftest import PROJECT_DIR, Store
from tests.test_pipeline import artifact_paths, model_uri_of, read_artifact

# Deliberately not the defaults: reproduction must use what was stored.
STORED = {"n": "80", "s": "3", "p1": "0.3", "seed": "5", "fill": "0.2",
          "predict_batch_size": "7", "picture_mode": "combined"}
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"
# The first test images of digits (test_fraction 0.25, split_seed 0), in the evaluation's
# order: the first three get maps, the others are added to them. Image 40 is a training image.
EVALUATED = ("1364", "1579", "1023", "1176", "1151", "312")
MAPPED = EVALUATED[:3]
TRAINING_IMAGE = "40"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reproduce")
    store = Store(f"sqlite:///{directory / 'mlflow.db'}", directory)
    train_id = store.train(epochs="10")
    model_uri = model_uri_of(store.client, train_id)
    result = store.run({"model_uri": model_uri, "num_samples": str(len(EVALUATED))},
                       entry_point="evaluate")
    assert result.returncode == 0, result.output
    samples = evaluation_samples(store)
    assert tuple(sorted(samples)) == tuple(sorted(EVALUATED))
    result = store.run({"model_uri": model_uri, "image_ids": ",".join(MAPPED),
                        "evaluation_run_ids": ",".join(samples[i].info.run_id for i in MAPPED),
                        **STORED}, entry_point="saliency")
    assert result.returncode == 0, result.output
    assert "training split" not in result.output
    return store


def map_runs(store):
    return {r.data.tags["Image_id"]: r for r in store.runs("Saliency Map Generation")
            if "Image_id" in r.data.tags and "Reproduced_from" not in r.data.tags}


def evaluation_samples(store):
    return {r.data.tags["Image_id"]: r for r in store.runs("Evaluation")
            if "Image_id" in r.data.tags}


def readme_lineage_search() -> tuple[str, str]:
    """The lineage snippet of docs/experiments.md (linked from the README), and its search for
    the map of an image, as Python source."""
    readme = (PROJECT_DIR / "docs" / "experiments.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                  if "Evaluation_run_id" in block and "tags.Image_id = '" in block]
    (search,) = re.findall(r"^sal = (mlflow\.search_runs\(.*\))\.iloc\[0\]$", snippet, re.M)
    return snippet, search


def with_image(code: str, image_id: str) -> str:
    return re.sub(r"tags\.Image_id = '[^']*'", f"tags.Image_id = '{image_id}'", code)


def local_path(store, run_id, artifact):
    return Path(urlparse(store.client.get_run(run_id).info.artifact_uri).path, artifact)


def test_reproduce_rebuilds_from_stored_config_and_gives_the_identical_map(store):
    source = map_runs(store)["1364"]
    result = store.run({"reproduce_run_id": source.info.run_id}, entry_point="saliency")
    assert result.returncode == 0, result.output
    (new,) = store.runs("Saliency Map Generation",
                        f"tags.Reproduced_from = '{source.info.run_id}' AND tags.Image_id = '1364'")
    assert new.info.status == "FINISHED"
    assert new.data.metrics["Max_abs_difference"] == 0
    assert new.data.params == source.data.params
    assert new.data.params["n"] == "80" and new.data.params["fill"] == "0.2"
    assert new.data.params["predict_batch_size"] == "7"
    assert new.data.params["test_fraction"] == "0.25" and new.data.params["split_seed"] == "0"
    for tag in ("Image_id", "GT_class", "Predicted_class", "Split", "Train_run_id", "Model_uri",
                "Dataset", "Dataset_digest", "Evaluation_run_id"):
        assert new.data.tags[tag] == source.data.tags[tag]
    original = np.load(store.client.download_artifacts(source.info.run_id, "saliency_map.npy"))
    again = np.load(store.client.download_artifacts(new.info.run_id, "saliency_map.npy"))
    np.testing.assert_array_equal(again, original)
    config = json.loads(read_artifact(store.client, new.info.run_id, "generator_config.json"))
    assert config == json.loads(read_artifact(store.client, source.info.run_id,
                                              "generator_config.json"))
    assert "identical map" in result.stdout


def test_reproduce_reports_a_corrupted_stored_map_as_different(store):
    source = map_runs(store)["1579"]
    path = local_path(store, source.info.run_id, "saliency_map.npy")
    stored = np.load(path)
    corrupted = stored.copy()
    corrupted[3, 2, 2] += 0.25
    np.save(path, corrupted)
    result = store.run({"reproduce_run_id": source.info.run_id}, entry_point="saliency")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "differs from the map stored in run" in errors[0], result.output
    assert "0.25" in errors[0]
    (new,) = store.runs("Saliency Map Generation",
                        f"tags.Reproduced_from = '{source.info.run_id}' AND tags.Image_id = '1579'")
    assert new.data.metrics["Max_abs_difference"] == pytest.approx(0.25)
    assert new.info.status == "FAILED"
    assert "RUNNING" not in {r.info.status for r in store.all_runs()}


def test_update_adds_maps_without_deleting_or_overwriting(store):
    target = map_runs(store)["1023"]
    run_id = target.info.run_id
    before = {p: read_artifact(store.client, run_id, p)
              for p in artifact_paths(store.client, run_id)}
    added, again = EVALUATED[3], TRAINING_IMAGE

    first = store.run({"update_run_id": run_id, "image_ids": f"{added},{again}",
                       "picture_mode": "combined"}, entry_point="saliency")
    assert first.returncode == 0, first.output
    warnings = [line for line in first.stderr.splitlines() if "training split" in line]
    assert warnings == [f"Warning: image {again} is in the training split (test_fraction 0.25, "
                        "split_seed 0): the model has seen it"], first.stderr
    second = store.run({"update_run_id": run_id, "image_ids": added, "picture_mode": "combined"},
                       entry_point="saliency")
    assert second.returncode == 0, second.output
    assert "training split" not in second.output

    after = artifact_paths(store.client, run_id)
    for path, content in before.items():
        assert read_artifact(store.client, run_id, path) == content, path
    new_paths = after - set(before)
    for prefix in (f"updates/1_image_{added}", f"updates/2_image_{again}",
                   f"updates/3_image_{added}"):
        assert f"{prefix}/saliency_map.npy" in new_paths
        assert any(path.startswith(f"{prefix}/pictures/") for path in new_paths), prefix
    assert all(path.startswith("updates/") for path in new_paths), new_paths
    maps = np.load(store.client.download_artifacts(
        run_id, f"updates/2_image_{again}/saliency_map.npy"))
    assert maps.shape == (10, 8, 8)

    updated = store.client.get_run(run_id)
    tags, metrics = updated.data.tags, updated.data.metrics
    assert updated.info.status == "FINISHED"
    assert updated.info.run_name == target.info.run_name
    assert updated.info.run_name.startswith("image-1023 · ")
    assert updated.data.params == target.data.params
    # The run is still the map of its own image, as its evaluation sample says ...
    samples = evaluation_samples(store)
    own = samples["1023"]
    assert tags["Image_id"] == "1023" and tags["Split"] == "test"
    for tag in ("GT_class", "Predicted_class", "Split"):
        assert tags[tag] == own.data.tags[tag], tag
    assert tags["Evaluation_run_id"] == own.info.run_id
    assert tags["Evaluation_parent_run_id"] == own.data.tags["Evaluation_parent_run_id"]
    assert metrics["Predicted_class_conf"] == pytest.approx(
        own.data.metrics["Predicted_class_conf"], abs=1e-6)
    # ... every tag and metric it had is unchanged, and nothing else was added but the updates'.
    for key, value in target.data.tags.items():
        assert tags[key] == value, key
    assert {k: v for k, v in metrics.items() if not k.startswith("Update_")} == \
        target.data.metrics
    # Each added image is described by its own tags, as its evaluation sample (or the data) says.
    for k, image_id in ((1, added), (2, again), (3, added)):
        assert tags[f"Update_{k}_image_id"] == image_id
        assert f"Update_{k}_Predicted_class_conf" in metrics
    sample = samples[added]
    for k in (1, 3):
        for tag in ("GT_class", "Predicted_class", "Split"):
            assert tags[f"Update_{k}_{tag}"] == sample.data.tags[tag], (k, tag)
        assert metrics[f"Update_{k}_Predicted_class_conf"] == pytest.approx(
            sample.data.metrics["Predicted_class_conf"], abs=1e-6)
    digits = load_dataset("digits")
    assert tags["Update_2_GT_class"] == digits.class_names[digits.labels[int(again)]]
    assert tags["Update_2_Split"] == "train"
    assert tags["Update_2_Predicted_class"] in digits.class_names
    assert tags["Added_image_ids"] == f"{added},{again},{added}"
    assert tags["Update_count"] == "3" and tags["Modified_run"] == "true"
    (update_step,) = store.runs("Saliency Map Generation",
                                f"tags.Updated_run_id = '{run_id}' AND tags.Image_ids = '{added}'")
    assert tags["Modified_by_run_id"] == update_step.info.run_id
    assert "Image_id_history" not in tags
    assert run_id in {r.info.run_id for r in store.runs(
        "Saliency Map Generation", f"tags.Added_image_ids LIKE '%{again}%'")}

    # The docs' lineage snippet finds the run from its own image, never from an added one.
    snippet, search = readme_lineage_search()
    mlflow.set_tracking_uri(store.uri)
    try:
        namespace = {}
        exec(with_image(snippet, "1023"), namespace)
        assert namespace["sal"]["run_id"] == run_id
        assert namespace["sample"].info.run_id == own.info.run_id
        assert namespace["model"] is not None
        for image_id in (added, again):
            found = eval(with_image(search, image_id), {"mlflow": mlflow})
            assert run_id not in set(found["run_id"]), image_id
    finally:
        mlflow.set_tracking_uri(None)

    # The amended run still reproduces: its own map belongs to its own image.
    result = store.run({"reproduce_run_id": run_id, "picture_mode": "combined"},
                       entry_point="saliency")
    assert result.returncode == 0, result.output


def test_update_settles_a_run_amended_by_an_older_version(store):
    """Older versions moved Image_id, GT_class and Predicted_class to the newest added image
    and listed the images in Image_id_history; the next update puts them back."""
    run_id = map_runs(store)["1364"].info.run_id
    samples = evaluation_samples(store)
    old_added, added = EVALUATED[3], EVALUATED[4]
    for tag, value in {"Image_id": old_added, "GT_class": samples[old_added].data.tags["GT_class"],
                       "Predicted_class": samples[old_added].data.tags["Predicted_class"],
                       "Image_id_history": f"1364,{old_added}", "Update_count": "1",
                       "Modified_run": "true"}.items():
        store.client.set_tag(run_id, tag, value)

    result = store.run({"update_run_id": run_id, "image_ids": added, "picture_mode": "combined"},
                       entry_point="saliency")
    assert result.returncode == 0, result.output
    tags = store.client.get_run(run_id).data.tags
    for tag in ("Image_id", "GT_class", "Predicted_class", "Split"):
        assert tags[tag] == samples["1364"].data.tags[tag], tag
    for k, image_id in ((1, old_added), (2, added)):
        assert tags[f"Update_{k}_image_id"] == image_id
        for tag in ("GT_class", "Predicted_class", "Split"):
            assert tags[f"Update_{k}_{tag}"] == samples[image_id].data.tags[tag], (k, tag)
    assert tags["Added_image_ids"] == f"{old_added},{added}" and tags["Update_count"] == "2"
    assert f"updates/2_image_{added}/saliency_map.npy" in artifact_paths(store.client, run_id)


@pytest.mark.parametrize("params,param,words", [
    ({"reproduce_run_id": UNKNOWN_RUN}, "reproduce_run_id", "no run"),
    ({"reproduce_run_id": "{train}"}, "reproduce_run_id", "belongs to experiment 'Train'"),
    ({"reproduce_run_id": "{step}"}, "reproduce_run_id", "not one image's map"),
    ({"reproduce_run_id": "{map}", "image_ids": "3"}, "reproduce_run_id", "give it alone"),
    ({"reproduce_run_id": "{map}", "model_uri": "{model}"}, "reproduce_run_id", "give it alone"),
    ({"update_run_id": UNKNOWN_RUN, "image_ids": "3"}, "update_run_id", "no run"),
    ({"update_run_id": "{map}"}, "image_ids", "give the images to add"),
    ({"update_run_id": "{map}", "image_ids": "5000"}, "image_ids",
     "image IDs 5000 are not in the digits dataset"),
    ({"update_run_id": "not-a-run", "image_ids": "3"}, "update_run_id", "not an MLflow run ID"),
    # Image 1364 is a test image of split_seed 0 (evaluated), a training image of split_seed 1.
    ({"model_uri": "{model}", "image_ids": "1364", "evaluation_run_ids": "{sample}",
      "split_seed": "1"}, "split_seed", "with test_fraction 0.25, split_seed 1, image 1364 is "
     "in the training split, but its evaluation run evaluated it as a test image"),
])
def test_bad_reproduce_and_update_run_ids_are_clear_errors(store, params, param, words):
    step = [r for r in store.runs("Saliency Map Generation") if "Image_id" not in r.data.tags][-1]
    train_id = store.runs("Train")[0].info.run_id
    ids = {"train": train_id, "step": step.info.run_id, "map": map_runs(store)["1364"].info.run_id,
           "model": model_uri_of(store.client, train_id),
           "sample": evaluation_samples(store)["1364"].info.run_id}
    params = {k: v.format(**ids) for k, v in params.items()}
    result = store.run(params, entry_point="saliency")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert f"'--{param}'" in errors[0] and words in errors[0], errors[0]
    assert "RUNNING" not in {r.info.status for r in store.all_runs()}
