"""Regenerating a stored saliency map from what was logged, and amending a stored map run."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from tests.conftest import Store
from tests.test_pipeline import artifact_paths, model_uri_of, read_artifact

# Deliberately not the defaults: reproduction must use what was stored.
STORED = {"n": "80", "s": "3", "p1": "0.3", "seed": "5", "fill": "0.2",
          "predict_batch_size": "7", "picture_mode": "combined"}
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reproduce")
    store = Store(f"sqlite:///{directory / 'mlflow.db'}", directory)
    train_id = store.train(epochs="10")
    result = store.run({"model_uri": model_uri_of(store.client, train_id),
                        "image_ids": "7,21,33", **STORED}, entry_point="saliency")
    assert result.returncode == 0, result.output
    return store


def map_runs(store):
    return {r.data.tags["Image_id"]: r for r in store.runs("Saliency Map Generation")
            if "Image_id" in r.data.tags and "Reproduced_from" not in r.data.tags}


def local_path(store, run_id, artifact):
    return Path(urlparse(store.client.get_run(run_id).info.artifact_uri).path, artifact)


def test_reproduce_rebuilds_from_stored_config_and_gives_the_identical_map(store):
    source = map_runs(store)["7"]
    result = store.run({"reproduce_run_id": source.info.run_id}, entry_point="saliency")
    assert result.returncode == 0, result.output
    (new,) = store.runs("Saliency Map Generation",
                        f"tags.Reproduced_from = '{source.info.run_id}' AND tags.Image_id = '7'")
    assert new.info.status == "FINISHED"
    assert new.data.metrics["Max_abs_difference"] == 0
    assert new.data.params == source.data.params
    assert new.data.params["n"] == "80" and new.data.params["fill"] == "0.2"
    assert new.data.params["predict_batch_size"] == "7"
    for tag in ("Image_id", "GT_class", "Predicted_class", "Train_run_id", "Model_uri",
                "Dataset", "Dataset_digest"):
        assert new.data.tags[tag] == source.data.tags[tag]
    original = np.load(store.client.download_artifacts(source.info.run_id, "saliency_map.npy"))
    again = np.load(store.client.download_artifacts(new.info.run_id, "saliency_map.npy"))
    np.testing.assert_array_equal(again, original)
    config = json.loads(read_artifact(store.client, new.info.run_id, "generator_config.json"))
    assert config == json.loads(read_artifact(store.client, source.info.run_id,
                                              "generator_config.json"))
    assert "identical map" in result.stdout


def test_reproduce_reports_a_corrupted_stored_map_as_different(store):
    source = map_runs(store)["21"]
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
                        f"tags.Reproduced_from = '{source.info.run_id}' AND tags.Image_id = '21'")
    assert new.data.metrics["Max_abs_difference"] == pytest.approx(0.25)
    assert new.info.status == "FAILED"
    assert "RUNNING" not in {r.info.status for r in store.all_runs()}


def test_update_adds_maps_without_deleting_or_overwriting(store):
    target = map_runs(store)["33"]
    run_id = target.info.run_id
    before = {p: read_artifact(store.client, run_id, p)
              for p in artifact_paths(store.client, run_id)}

    result = store.run({"update_run_id": run_id, "image_ids": "40,41"}, entry_point="saliency")
    assert result.returncode == 0, result.output
    result = store.run({"update_run_id": run_id, "image_ids": "40"}, entry_point="saliency")
    assert result.returncode == 0, result.output

    after = artifact_paths(store.client, run_id)
    for path, content in before.items():
        assert read_artifact(store.client, run_id, path) == content, path
    added = after - set(before)
    for prefix in ("updates/1_image_40", "updates/2_image_41", "updates/3_image_40"):
        assert f"{prefix}/saliency_map.npy" in added
    updated = store.client.get_run(run_id)
    tags = updated.data.tags
    assert tags["Image_id"] == "40"
    assert tags["Image_id_history"] == "33,40,41,40"
    assert tags["Modified_run"] == "true"
    assert updated.info.status == "FINISHED"
    assert updated.data.params == target.data.params
    maps = np.load(store.client.download_artifacts(run_id, "updates/2_image_41/saliency_map.npy"))
    assert maps.shape == (10, 8, 8)

    # The amended run still reproduces: its own map belongs to its first image.
    result = store.run({"reproduce_run_id": run_id}, entry_point="saliency")
    assert result.returncode == 0, result.output


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
])
def test_bad_reproduce_and_update_run_ids_are_clear_errors(store, params, param, words):
    step = [r for r in store.runs("Saliency Map Generation") if "Image_id" not in r.data.tags][-1]
    train_id = store.runs("Train")[0].info.run_id
    ids = {"train": train_id, "step": step.info.run_id, "map": map_runs(store)["7"].info.run_id,
           "model": model_uri_of(store.client, train_id)}
    params = {k: v.format(**ids) for k, v in params.items()}
    result = store.run(params, entry_point="saliency")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert f"'--{param}'" in errors[0] and words in errors[0], errors[0]
    assert "RUNNING" not in {r.info.status for r in store.all_runs()}
