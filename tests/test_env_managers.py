"""`mlflow run . --env-manager uv`, end to end: MLflow builds one virtual environment from the pip
section of conda.yaml through the package index, and the driver's steps run in it too.

`local` is what every other test uses; `conda` is documented only (conda.yaml's validity and its
pins are checked in tests/test_project_files.py).
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_DIR
from tests.servers import SMALL, pipelines_in, run_project, which

NEW_ENVIRONMENT = re.compile(r"Creating a new environment in (\S+) ")
REUSED_ENVIRONMENT = re.compile(r"Environment (\S+) already exists")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_uv_builds_one_environment_and_every_step_runs_in_it(tmp_path):
    assert which("uv"), "uv is not on the PATH: pip install -r requirements-dev.txt"
    env_root = tmp_path / "envs"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_project(PROJECT_DIR, SMALL, env_manager="uv", cwd=tmp_path, tracking_uri=uri,
                         env={"MLFLOW_ENV_ROOT": str(env_root)}, timeout=1500)
    assert result.returncode == 0, result.output

    # One environment, built once (by `mlflow run`), then found by each of the three steps.
    (environment,) = list(env_root.iterdir())
    assert NEW_ENVIRONMENT.findall(result.output) == [str(environment)], result.output
    assert REUSED_ENVIRONMENT.findall(result.output) == [str(environment)] * 3, result.output
    activate = f"source {environment}/bin/activate && python"
    for command in ("main.py", "-m steps.train", "-m steps.evaluate", "-m steps.saliency"):
        assert f"{activate} {command}" in result.output, command
    assert (environment / "bin" / "python").exists()

    (pipeline,) = pipelines_in(MlflowClient(uri))
    for run in [pipeline.main, *pipeline.step_runs]:
        assert run.data.tags["mlflow.project.env"] == "uv", run.data.tags
