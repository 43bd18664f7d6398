"""Sharded evaluation: `-P shards=N` gives the same per-sample runs as one evaluate run."""

from __future__ import annotations

import pytest

from tests.conftest import FAST_TRAIN, Store
from tests.test_pipeline import model_uri_of

PARAMS = {**FAST_TRAIN, "num_samples": "30", "n": "50", "max_images": "3",
          "query": "metrics.Predicted_class_conf < 1.01", "picture_mode": "combined"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards")
    return Store(f"sqlite:///{directory / 'mlflow.db'}", directory)


def pipeline_samples(store, shards: int):
    result = store.run({**PARAMS, "shards": str(shards)})
    assert result.returncode == 0, result.output
    main = [r for r in store.runs("Default")
            if r.data.tags.get("mlflow.project.entryPoint") == "main"][0]
    evaluation_ids = main.data.tags["Evaluation_run_id"].split(",")
    samples = {}
    for evaluation_id in evaluation_ids:
        for run in store.runs("Evaluation", f"tags.Evaluation_parent_run_id = '{evaluation_id}'"):
            samples[run.data.tags["Image_id"]] = run
    return main, evaluation_ids, samples


def test_three_shards_write_the_same_samples_as_one(store):
    main, evaluation_ids, sharded = pipeline_samples(store, 3)
    assert len(evaluation_ids) == 3
    for evaluation_id in evaluation_ids:
        run = store.client.get_run(evaluation_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == main.info.run_id
        assert run.data.params["num_shards"] == "3"
        assert run.data.params["model_uri"] == main.data.tags["Model_uri"]
    assert sorted(store.client.get_run(e).data.params["shard_index"]
                  for e in evaluation_ids) == ["0", "1", "2"]
    assert len(sharded) == 30

    # The query ran across every shard: the 3 least confident of all 30 samples.
    lowest = sorted(sharded.values(), key=lambda r: r.data.metrics["Predicted_class_conf"])[:3]
    assert main.data.tags["Queried_image_ids"] == ",".join(r.data.tags["Image_id"] for r in lowest)

    _, single_ids, single = pipeline_samples(store, 1)
    assert len(single_ids) == 1
    assert sorted(single) == sorted(sharded)
    for image_id, run in single.items():
        assert run.data.metrics == sharded[image_id].data.metrics
        for tag in ("GT_class", "Predicted_class", "Correct", "Train_run_id", "Model_uri"):
            assert run.data.tags[tag] == sharded[image_id].data.tags[tag]

    # The sharded pipeline's report gives the whole evaluation's accuracy and log loss.
    report = open(store.client.download_artifacts(main.info.run_id, "report.html")).read()
    whole = store.client.get_run(single_ids[0]).data.metrics
    assert "ran in 3 shards" in report
    for name in ("accuracy", "log_loss"):
        assert f"<th>{name}</th><td class=num>{whole[name]:.4g}</td>" in report


def test_shard_index_outside_the_shards_is_a_clear_error(store):
    train_id = store.train()
    result = store.run({"model_uri": model_uri_of(store.client, train_id), "shard_index": "3",
                        "num_shards": "3"}, entry_point="evaluate")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'--shard_index'" in errors[0], result.output
