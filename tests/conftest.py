"""Shared fixtures: a real SQLite tracking store in a temporary directory, and `mlflow run`.

Every test that runs the project does so as a user would: `mlflow run <project>` in a
subprocess, then reads what it wrote back with `MlflowClient`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import pytest
from mlflow.tracking import MlflowClient

PROJECT_DIR = Path(__file__).resolve().parents[1]

# Small sizes keep the end-to-end runs quick while exercising every code path.
FAST_TRAIN = {"epochs": "20", "hidden_layer_sizes": "32"}
FAST_SALIENCY = {"n": "100"}
#: The metric parameters every map run logs, at their defaults.
METRIC_DEFAULTS = {"metric_baseline": "mean", "insertion_start": "blur", "metric_steps": "50",
                   "random_maps": "10", "sanity_check": "false"}


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def unavailable(reason: str, require_env: str):
    """Skip a test for want of something this machine lacks, or fail where the environment
    variable `require_env` is 1 (CI sets it for what it must test)."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason}, and {require_env}=1 requires it")
    pytest.skip(reason)


def project_env(tracking_uri: str | None) -> dict[str, str]:
    """The environment for `mlflow run`: this interpreter's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    if tracking_uri is None:
        env.pop("MLFLOW_TRACKING_URI", None)
    else:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def mlflow_run_command(project: str | Path, params: dict[str, str], *, entry_point: str = "main",
                       env_manager: str = "local", extra_args: tuple[str, ...] = ()) -> list[str]:
    """`mlflow run <project> -e <entry point> --env-manager ... -P key=value ...`, with this
    interpreter's MLflow."""
    args = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point,
            "--env-manager", env_manager, *extra_args]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    return args


def start_mlflow_run(params: dict[str, str], *, tracking_uri: str, cwd: Path,
                     entry_point: str = "main", env: dict[str, str] | None = None
                     ) -> subprocess.Popen:
    """`mlflow run` of this project in the background, in a process group of its own, its
    output (stdout and stderr) read line by line from `.stdout`."""
    return subprocess.Popen(mlflow_run_command(PROJECT_DIR, params, entry_point=entry_point),
                            cwd=cwd, env={**project_env(tracking_uri), **(env or {})},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def mlflow_run(params: dict[str, str], *, entry_point: str = "main", tracking_uri: str | None,
               cwd: Path, extra_args: tuple[str, ...] = (), timeout: int = 600,
               project: Path = PROJECT_DIR) -> Completed:
    proc = subprocess.run(mlflow_run_command(project, params, entry_point=entry_point,
                                             extra_args=extra_args),
                          cwd=cwd, env=project_env(tracking_uri), capture_output=True,
                          text=True, timeout=timeout)
    return Completed(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite tracking store; this process's MLflow client points at it too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield Store(uri, tmp_path)
    mlflow.set_tracking_uri(None)


@dataclass
class Store:
    uri: str
    dir: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def run(self, params: dict[str, str], entry_point: str = "main", **kwargs) -> Completed:
        return mlflow_run(params, entry_point=entry_point, tracking_uri=self.uri, cwd=self.dir,
                          **kwargs)

    def process(self, params: dict[str, str], entry_point: str = "main") -> Completed:
        """The entry point's process started directly, as `mlflow run` starts it (without the
        run `mlflow run` makes first): seconds quicker, for what fails before any run."""
        module = ["main.py"] if entry_point == "main" else ["-m", f"steps.{entry_point}"]
        args = [item for key, value in params.items() for item in (f"--{key}", value)]
        env = {**project_env(self.uri), "PYTHONPATH": str(PROJECT_DIR)}
        proc = subprocess.run([sys.executable, *module, *args], cwd=PROJECT_DIR, env=env,
                              capture_output=True, text=True, timeout=300)
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def runs(self, experiment_name: str, filter_string: str = "") -> list:
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return []
        return self.client.search_runs([experiment.experiment_id], filter_string,
                                       max_results=10000)

    def all_runs(self) -> list:
        ids = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(ids, max_results=10000)

    @classmethod
    @contextlib.contextmanager
    def current(cls, directory: Path) -> Iterator[Store]:
        """A SQLite store in `directory`, this process's MLflow client pointing at it while
        the block runs."""
        store = cls(f"sqlite:///{directory / 'mlflow.db'}", directory)
        mlflow.set_tracking_uri(store.uri)
        try:
            yield store
        finally:
            mlflow.set_tracking_uri(None)

    def train(self, **params) -> str:
        """Run the train entry point alone; returns the Train run's ID."""
        result = self.run({**FAST_TRAIN, **params}, entry_point="train")
        assert result.returncode == 0, result.output
        (run,) = self.runs("Train")[:1]
        return run.info.run_id


def module_store(name: str):
    """A module-scoped `store` fixture: a SQLite store in a directory named after `name`,
    this process's MLflow client pointing at it."""

    @pytest.fixture(scope="module")
    def store(tmp_path_factory):
        with Store.current(tmp_path_factory.mktemp(name)) as store:
            yield store

    return store
