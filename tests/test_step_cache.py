"""Finding a stored step run to reuse, in a real SQLite store, with params stored as `mlflow run`
stores them (shell-quoted)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from mlflow.utils.string_utils import quote

from steps.tracking.step_cache import find_reusable_run

PARAMS = {"dataset": "/data/my pets", "image_size": "", "model_uri": "models:/m-1",
          "query": "tags.Correct = 'false'"}


def test_values_mlflow_run_quotes_still_match(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("steps")

    def stored_run(params, digest="d1"):
        run = client.create_run(experiment, tags={"mlflow.project.entryPoint": "evaluate",
                                                  "Code_version": "v1", "Dataset_digest": digest})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, quote(value))  # as `mlflow run` logs it
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    wanted = stored_run(PARAMS)
    stored_run({**PARAMS, "image_size": "8,8"})
    stored_run(PARAMS, digest="d2")

    def find(params, digest="d1"):
        found = find_reusable_run(experiment, "evaluate", params, "v1",
                                  {"Dataset_digest": digest}, client=client)
        return found and found.info.run_id

    assert find(PARAMS) == wanted
    assert find({**PARAMS, "image_size": "4,4"}) is None
    assert find({**PARAMS, "dataset": "/data/my_pets"}) is None
    assert find(PARAMS, digest="d3") is None
