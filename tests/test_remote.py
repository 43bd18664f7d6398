"""`mlflow run <git URL>`: the project served by a real `git daemon`, run from another directory.

The served repository is a bare clone of the project's committed HEAD (uncommitted edits are not
in it). MLflow checks the project out into a temporary directory (TMPDIR, here the test's own)
and runs the driver there; every step run must still land in the store of the directory
`mlflow run` was started in, and record the commit it ran.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_DIR
from tests.servers import (SMALL, GitDaemon, background_runs, finish_all, git, git_daemon,
                           pipelines_in, project_head, start_project)

pytestmark = pytest.mark.slow

SUBDIR = "pipelines/saliency-flow"
COMMIT_TAG = "mlflow.source.git.commit"


@dataclass
class Served:
    daemon: GitDaemon
    head: str        # the project's HEAD: the served repository's default branch
    later: str       # a commit after it, on another branch, tagged `v-later`
    mono: str        # the commit of the repository holding the project in SUBDIR

    @property
    def url(self) -> str:
        return self.daemon.url("saliency-flow.git")

    @property
    def mono_url(self) -> str:
        return self.daemon.url("monorepo.git")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    head = project_head()
    repos = base / "repos"
    repos.mkdir()

    bare = repos / "saliency-flow.git"
    git("clone", "--quiet", "--bare", "--no-local", str(PROJECT_DIR), str(bare), cwd=base)
    # Its default branch is exactly the project's HEAD, whichever branch (or none) is checked out.
    git("update-ref", "refs/heads/served", head, cwd=bare)
    git("symbolic-ref", "HEAD", "refs/heads/served", cwd=bare)

    # A later commit on another branch, tagged: `-v v-later` must run it, not the default branch.
    later_work = base / "later"
    git("clone", "--quiet", str(bare), str(later_work), cwd=base)
    (later_work / "LATER.txt").write_text("A commit after the served HEAD.\n")
    git("add", "LATER.txt", cwd=later_work)
    git("commit", "--quiet", "-m", "A later commit", cwd=later_work)
    later = git("rev-parse", "HEAD", cwd=later_work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/later", cwd=later_work)
    git("tag", "v-later", later, cwd=bare)

    # The committed project in a subfolder of another repository.
    mono_work = base / "mono"
    (mono_work / SUBDIR).mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", head], cwd=PROJECT_DIR,
                             capture_output=True, check=True, timeout=120).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(mono_work / SUBDIR, filter="data")
    (mono_work / "README.md").write_text("Other things, and the project in pipelines/.\n")
    git("init", "--quiet", "-b", "main", cwd=mono_work)
    git("add", "-A", cwd=mono_work)
    git("commit", "--quiet", "-m", "Project in a subfolder", cwd=mono_work)
    mono = git("rev-parse", "HEAD", cwd=mono_work)
    git("clone", "--quiet", "--bare", str(mono_work), str(repos / "monorepo.git"), cwd=base)

    with git_daemon(repos) as daemon:
        yield Served(daemon, head, later, mono)


def checkout_of(tmp: Path) -> Path:
    """The one temporary checkout `mlflow run` made under TMPDIR."""
    checkouts = [path for path in tmp.iterdir() if (path / ".git").is_dir()]
    assert len(checkouts) == 1, list(tmp.iterdir())
    return checkouts[0]


def assert_no_store_inside(checkout: Path) -> None:
    assert not list(checkout.rglob("mlflow.db")), "a second SQLite store inside the checkout"
    assert not list(checkout.rglob("mlruns")), "artifacts inside the checkout"


def assert_runs_record(commit: str, runs=(), step_runs=()) -> None:
    """Every run names the commit (MLflow's tag); step runs also in our Code_version tag."""
    for run in [*runs, *step_runs]:
        assert run.data.tags[COMMIT_TAG] == commit, (run.info.run_id, run.data.tags)
    for run in step_runs:
        assert run.data.tags["Code_version"].split(":")[0] == commit, run.data.tags


@dataclass
class RemoteRun:
    user_dir: Path   # where `mlflow run` was started
    tmp: Path        # its TMPDIR, where MLflow checks the project out
    result: object


@pytest.fixture(scope="module")
def remote_runs(served, tmp_path_factory):
    """The three `mlflow run <git URL>` of this module, started at once (they are independent;
    a pipeline alone keeps only about one of the two cores busy)."""
    base = tmp_path_factory.mktemp("remote-runs")
    runs = {
        # MLFLOW_TRACKING_URI unset: MLflow's default `sqlite:///mlflow.db` of the directory.
        "default_store": (served.url, SMALL, None, {}),
        # `-v <tag>` of a later commit than the default branch's; the train step alone.
        "version_tag": (served.url, {"epochs": "5"}, "sqlite:///{user_dir}/mlflow.db",
                        {"entry_point": "train", "extra_args": ("-v", "v-later")}),
        # `<url>#<subdir> -v <commit>`, the store given as a path relative to the directory.
        "subdirectory": (f"{served.mono_url}#{SUBDIR}", SMALL, "sqlite:///mlflow.db",
                         {"extra_args": ("-v", served.mono)}),
    }
    dirs = {}
    with background_runs() as started:
        for name, (url, params, uri, command) in runs.items():
            user_dir, tmp = base / name / "user", base / name / "tmp"
            user_dir.mkdir(parents=True)
            tmp.mkdir()
            dirs[name] = (user_dir, tmp)
            started[name] = start_project(
                url, params, cwd=user_dir, log=base / name / "mlflow-run.log",
                tracking_uri=uri.format(user_dir=user_dir) if uri else None,
                env={"TMPDIR": str(tmp)}, **command)
        results = finish_all(started)
    return {name: RemoteRun(*dirs[name], results[name]) for name in runs}


def test_git_url_runs_the_pipeline_into_the_default_store_of_the_working_directory(
        served, remote_runs):
    """MLFLOW_TRACKING_URI unset: MLflow's default `sqlite:///mlflow.db`, of the directory
    `mlflow run` starts in, holds every run, not a database inside the checkout."""
    run = remote_runs["default_store"]
    assert run.result.returncode == 0, run.result.output
    store = run.user_dir / "mlflow.db"
    assert store.is_file()
    client = MlflowClient(f"sqlite:///{store}")
    (pipeline,) = pipelines_in(client)
    assert pipeline.main.data.tags["mlflow.source.name"] == served.url
    assert_runs_record(served.head, [pipeline.main, *pipeline.maps], pipeline.step_runs)
    for step in pipeline.step_runs:
        assert step.info.artifact_uri.startswith(str(run.user_dir / "mlruns")), step.info

    checkout = checkout_of(run.tmp)
    assert (checkout / "MLproject").is_file()
    assert_no_store_inside(checkout)
    assert f"sqlite:///{store}" in run.result.output


def test_version_option_runs_that_tag_not_the_default_branch(served, remote_runs):
    """`-v v-later` checks out the tagged later commit; the step run records it."""
    run = remote_runs["version_tag"]
    assert run.result.returncode == 0, run.result.output
    assert served.later != served.head
    client = MlflowClient(f"sqlite:///{run.user_dir / 'mlflow.db'}")
    (train,) = client.search_runs([client.get_experiment_by_name("Train").experiment_id])
    outer = client.get_run(train.data.tags["mlflow.parentRunId"])
    assert_runs_record(served.later, [outer], [train])
    assert (checkout_of(run.tmp) / "LATER.txt").is_file()


def test_project_in_a_subdirectory_with_a_commit_and_a_relative_store_path(served, remote_runs):
    """`<url>#<subdir> -v <commit>`, with MLFLOW_TRACKING_URI=sqlite:///mlflow.db given
    relative: MLflow passes it on unchanged to the checkout, where the driver and steps resolve
    it against the directory `mlflow run` started in, not the checkout."""
    run = remote_runs["subdirectory"]
    assert run.result.returncode == 0, run.result.output
    client = MlflowClient(f"sqlite:///{run.user_dir / 'mlflow.db'}")
    (pipeline,) = pipelines_in(client)
    assert_runs_record(served.mono, [pipeline.main], pipeline.step_runs)
    assert pipeline.main.data.tags["mlflow.source.name"] == f"{served.mono_url}#{SUBDIR}"
    checkout = checkout_of(run.tmp)
    assert (checkout / SUBDIR / "MLproject").is_file()
    assert_no_store_inside(checkout)
