"""Two pipelines started at the same moment on one SQLite file: both finish, every run is there.

SQLite takes one writer at a time; MLflow waits up to 20 s for its lock, and our own writes try
again past that (steps/tracking/runs.py, steps/tracking/sample_runs.py). A brand-new store is
created once first, as docs/running-anywhere.md says: `mlflow run` itself creates a new store's tables without
a lock, and two at once can fail inside MLflow's schema migration (MLflow's behaviour, before
any project code runs). Two pipelines against one tracking server: tests/test_servers.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_DIR
from tests.servers import SMALL, background_runs, finish_all, pipelines_in, start_project

pytestmark = pytest.mark.slow


def test_two_pipelines_at_once_on_one_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepared = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri],
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr

    with background_runs() as started:
        for index in range(2):
            user_dir = tmp_path / f"user{index}"
            user_dir.mkdir()
            started[index] = start_project(PROJECT_DIR, {**SMALL, "random_state": str(index)},
                                           cwd=user_dir, tracking_uri=uri,
                                           log=tmp_path / f"pipeline{index}.log")
        results = finish_all(started)
    for result in results.values():
        assert result.returncode == 0, result.output
        assert "database is locked" not in result.output, result.output
        assert "Traceback" not in result.output, result.output

    pipelines = pipelines_in(MlflowClient(uri))
    assert len(pipelines) == 2
    assert len({p.train.info.run_id for p in pipelines}) == 2
    samples = {r.info.run_id for p in pipelines for r in p.samples}
    assert len(samples) == 2 * int(SMALL["num_samples"])
