"""Thin MLflow wiring shared by the steps: the stage experiments, the step's run, run lookups."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import click
import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PROJECT_ENV, MLFLOW_SOURCE_NAME

from steps import phases
from steps.core.code_version import code_version
from steps.store_names import (CODE_VERSION_TAG, DATASET_DIGEST_TAG, ERROR_TAG,
                         EXPERIMENT_DESCRIPTIONS, IMAGE_ID_TAG, RESULTS_VIEW, RESULTS_VIEW_COLUMNS,
                         RESULTS_VIEW_NAME, SAVED_VIEW_TAG_PREFIX, INTERRUPTED_TAG, NOTE_TAG, PARENT_RUN_TAG, PHASES, PROCESS_HOST_TAG,
                         PROCESS_ID_TAG, RESULTS_DELETED_TAG, RESUME_COUNT_TAG, RUN_NAME_TAG,
                         SALIENCY_PARENT_TAG, STEP_PARAMETERS_ARTIFACT, STEP_RUN_TAG,
                         WRITE_PHASE, duration_metric)
from steps.tracking.lifecycle import (RUNNING, hide_partial_results, note_failure,
                                      note_resume_hint, process_gone, process_tags,
                                      run_context)


def _artifact_location(client: MlflowClient, name: str) -> str | None:
    """Where a new stage experiment keeps artifacts: beside the Default experiment's.

    A store the process opens itself (SQLite, PostgreSQL) would otherwise put them under
    `./mlruns` of whatever directory the step runs in (the project checkout), away from the
    main run's. A tracking server decides for itself.
    """
    if urllib.parse.urlparse(mlflow.get_tracking_uri()).scheme in ("http", "https", "databricks"):
        return None
    default = client.get_experiment("0")
    if default is None or not default.artifact_location:
        return None
    root = default.artifact_location.rstrip("/").rsplit("/", 1)[0]
    return f"{root}/{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"


def saved_view(name: str, columns: tuple[str, ...]) -> str:
    """A saved view of the MLflow UI's runs table showing `columns` (MLflow 3.17's UI format:
    the view's name and times around its state, itself JSON)."""
    now = int(time.time() * 1000)
    return json.dumps({"name": name, "createdAt": now, "updatedAt": now,
                       "state": json.dumps({"selectedColumns": list(columns)})})


def experiment_tags(description: str, view_columns: tuple[str, ...] = ()) -> dict[str, str]:
    """What the MLflow UI shows of an experiment: its description and its results view."""
    view = ({SAVED_VIEW_TAG_PREFIX + RESULTS_VIEW: saved_view(RESULTS_VIEW_NAME, view_columns)}
            if view_columns else {})
    return {NOTE_TAG: description, **view}


def describe_experiment(client: MlflowClient, experiment, description: str,
                        view_columns: tuple[str, ...] = ()) -> None:
    """Give an existing experiment the tags of `experiment_tags` it lacks (made by an older
    version, or by the user); what is there stays, the user's own description and views too."""
    for key, value in experiment_tags(description, view_columns).items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)


def experiment_id(name: str) -> str:
    """ID of the named experiment, created if missing (safe when two processes race)."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    description, columns = EXPERIMENT_DESCRIPTIONS[name], RESULTS_VIEW_COLUMNS.get(name, ())
    if experiment is not None:
        describe_experiment(client, experiment, description, columns)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(client, name),
                                        tags=experiment_tags(description, columns))
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name).experiment_id


def describe(text: str) -> None:
    """The active run's description in the MLflow UI (Markdown)."""
    mlflow.set_tag(NOTE_TAG, text)


@contextlib.contextmanager
def step_run(experiment_name: str, run_name: str, parameters: dict[str, str] | None = None,
             resume: Run | None = None) -> Iterator[Run]:
    """The run a step logs into, always in its stage's experiment.

    Under `mlflow run`, MLflow has already created a run (MLFLOW_RUN_ID). The driver creates it
    in the stage's experiment and it is used as is. A step run alone (`mlflow run . -e train`)
    gets its run in the default experiment: the step's results then go to a run nested under it
    in the stage's experiment, and the outer run is tagged with that run's ID. Either way, the runs
    record this process (`lifecycle.process_tags`); an error ends them FAILED, a signal KILLED,
    and the sample or map runs the step wrote are then soft-deleted. From here on the process
    is writing, but where the step says it computes or draws (`steps/phases.py`); a step that
    finishes logs the time of each phase of its process as `Duration_<phase>_s` metrics.

    `parameters` (the step's own, as `-P` strings) are recorded in the step run
    (`step_parameters.json`), which is what a resume reads back. `resume`: a stored step run
    that did not finish (`require_resumable`), opened again instead of a new one (nested under
    the run `mlflow run` made, if any), its end reasons cleared and its resumes counted.
    """
    phases.enter(WRITE_PHASE)
    stage_experiment = experiment_id(experiment_name)
    tags = {CODE_VERSION_TAG: code_version(), **process_tags()}
    # Popped, or every later `start_run(nested=True)` would resume this run instead.
    launched_id = os.environ.pop("MLFLOW_RUN_ID", None)
    launched = MlflowClient().get_run(launched_id) if launched_id else None
    if resume is not None:
        yield from _resumed(resume, launched, tags, run_name)
    elif launched is None:
        with run_context(experiment_id=stage_experiment, run_name=run_name, tags=tags) as run:
            yield from _recording(run, run_name, parameters, launched)
    elif launched.info.experiment_id == stage_experiment:
        # Named as when the step runs alone, not with MLflow's random name.
        with run_context(run_id=launched_id, tags={**tags, RUN_NAME_TAG: run_name}) as run:
            yield from _recording(run, run_name, parameters, launched)
    else:
        with run_context(run_id=launched_id, tags={**process_tags(), RUN_NAME_TAG: run_name}):
            with run_context(experiment_id=stage_experiment, run_name=run_name, nested=True,
                             tags=tags) as run:
                _point_to(launched_id, run.info.run_id, run_name, experiment_name)
                yield from _recording(run, run_name, parameters, launched)


def _point_to(launched_id: str, step_run_id: str, run_name: str, experiment_name: str) -> None:
    """Tag the run `mlflow run` made with the step run that holds the step's results."""
    client = MlflowClient()
    client.set_tag(launched_id, STEP_RUN_TAG, step_run_id)
    client.set_tag(launched_id, NOTE_TAG, f"The {run_name} step's results are in its run "
                   f"{step_run_id}, experiment {experiment_name!r}.")


def _recording(run: Run, run_name: str, parameters: dict[str, str] | None,
               launched: Run | None) -> Iterator[Run]:
    if parameters is not None:  # a step that can be resumed (its entry point is `run_name`)
        mlflow.log_dict(parameters, STEP_PARAMETERS_ARTIFACT)
        note_resume_hint(f"To finish it without redoing what it wrote: "
                         f"{resume_command(run_name, run.info.run_id, launched)}")
    yield from _hiding_results_on_failure(run)


def resumable(run_id: str) -> bool:
    """Whether a step run can be resumed: it recorded its parameters."""
    return has_artifact(run_id, STEP_PARAMETERS_ARTIFACT)


def resume_command(entry_point: str, run_id: str, launched: Run | None) -> str:
    """The command that resumes a step run: `mlflow run` of the project as it was launched
    (`launched`, the run `mlflow run` made: its source, Git commit and environment manager)."""
    tags = launched.data.tags if launched is not None else {}
    source = tags.get(MLFLOW_SOURCE_NAME) or str(Path(__file__).resolve().parents[2])
    local = urllib.parse.urlparse(source)
    if local.scheme in ("", "file"):  # this checkout as it is, not one of its commits
        command = ["mlflow", "run", urllib.parse.unquote(local.path)]
    else:
        command = ["mlflow", "run", source]
        if tags.get(MLFLOW_GIT_COMMIT):
            command += ["--version", tags[MLFLOW_GIT_COMMIT]]
    command += ["-e", entry_point, "--env-manager", tags.get(MLFLOW_PROJECT_ENV, "local"),
                "-P", f"resume_run_id={run_id}"]
    return shlex.join(command)


def _resumed(stored: Run, launched: Run | None, tags: dict[str, str],
             run_name: str) -> Iterator[Run]:
    run_id, client = stored.info.run_id, MlflowClient()
    launched_id = launched.info.run_id if launched is not None else None
    note_resume_hint(f"To finish it without redoing what it wrote: "
                     f"{resume_command(run_name, run_id, launched)}")
    for key in (INTERRUPTED_TAG, ERROR_TAG, RESULTS_DELETED_TAG):
        if key in stored.data.tags:
            client.delete_tag(run_id, key)
    tags = {**tags, RESUME_COUNT_TAG: str(int(stored.data.tags.get(RESUME_COUNT_TAG, "0")) + 1)}
    with contextlib.ExitStack() as stack:
        if launched_id:
            stack.enter_context(run_context(run_id=launched_id, tags={
                **process_tags(), RUN_NAME_TAG: f"{run_name}-resume"}))
            _point_to(launched_id, run_id, run_name,
                      client.get_experiment(stored.info.experiment_id).name)
        run = stack.enter_context(run_context(run_id=run_id, nested=bool(launched_id),
                                              tags=tags))
        yield from _hiding_results_on_failure(run)


def require_resumable(run_id: str, experiment_name: str, param: str = "resume_run_id") -> Run:
    """A step run of the named experiment that can be resumed: not one image's run, not
    running in a live process. A FINISHED run is returned as is (nothing to resume)."""
    run = require_run(run_id, experiment_name, param, finished=False)
    tags, hint = run.data.tags, f"'--{param}'"
    if IMAGE_ID_TAG in tags:
        raise click.BadParameter(
            f"run {run_id} is one image's run; give its step run, {tags.get(PARENT_RUN_TAG)}",
            param_hint=hint)
    if run.info.status == RUNNING and not process_gone(tags):
        raise click.BadParameter(
            f"run {run_id} is still RUNNING (process {tags.get(PROCESS_ID_TAG, '?')} on "
            f"{tags.get(PROCESS_HOST_TAG, '?')}); stop it or let it finish first",
            param_hint=hint)
    return run


def require_same_data(run: Run, digest: str, param: str = "resume_run_id") -> None:
    """The data a stored run was made from must be the data at hand (same dataset digest)."""
    stored = run.data.tags.get(DATASET_DIGEST_TAG)
    if stored and stored != digest:
        raise click.BadParameter(
            f"the data of run {run.info.run_id} has changed since it was made (dataset digest "
            f"{stored}, now {digest})", param_hint=f"'--{param}'")


def has_artifact(run_id: str, path: str) -> bool:
    """Whether the run holds an artifact at `path`."""
    folder, _, _ = path.rpartition("/")
    listed = MlflowClient().list_artifacts(run_id, folder or None)
    return any(item.path == path for item in listed)


def stored_parameters(command: click.Command, run: Run, param: str = "resume_run_id") -> dict:
    """The step's parameters as recorded in a step run, converted as on its command line."""
    try:
        stored = mlflow.artifacts.load_dict(
            f"{run.info.artifact_uri.rstrip('/')}/{STEP_PARAMETERS_ARTIFACT}")
    except MlflowException:
        raise click.BadParameter(
            f"run {run.info.run_id} records no {STEP_PARAMETERS_ARTIFACT}: it was made by an "
            "older version; run the step again instead", param_hint=f"'--{param}'") from None
    arguments = [part for name, value in stored.items() for part in (f"--{name}", value)]
    return command.make_context(command.name, arguments).params


def _hiding_results_on_failure(run: Run) -> Iterator[Run]:
    """Yield the step run; if the step fails or is interrupted, hide what it wrote (unless the
    error says its results are the finding, `keeps_results`)."""
    try:
        yield run
    except BaseException as error:
        note_failure(error)
        if getattr(error, "keeps_results", False):
            raise
        try:
            hide_partial_results(run.info.run_id)
        except Exception:  # the store may be what failed; the next start settles the run
            click.echo(f"Could not hide the results of unfinished run {run.info.run_id} now; "
                       "the next start will.", err=True)
        raise
    orphans = hide_partial_results(run.info.run_id, running_only=True)
    if orphans:
        click.echo(f"Deleted {orphans} run{'s' if orphans > 1 else ''} left RUNNING under run "
                   f"{run.info.run_id} by writes the tracking server lost the answer to and that "
                   "were written again (restorable with `mlflow runs restore`).", err=True)
    log_durations(run.info.run_id)


def log_durations(run_id: str) -> None:
    """This process's time so far in each phase, as the run's `Duration_<phase>_s` metrics
    (seconds; 0 for a phase the step does not have)."""
    spent = phases.PHASES.durations()
    mlflow.log_metrics({duration_metric(phase): spent.get(phase, 0.0) for phase in PHASES},
                       run_id=run_id)


def require_run(run_id: str, experiment_name: str | None, param: str,
                finished: bool = True) -> Run:
    """A not deleted run (of the named experiment, if one is named; FINISHED, if `finished`),
    or a click error naming the parameter."""
    hint = f"'--{param}'"
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise click.BadParameter(
            f"no run {run_id} in the tracking store {mlflow.get_tracking_uri()}", param_hint=hint
        ) from None
    if run.info.lifecycle_stage == "deleted":
        raise click.BadParameter(
            f"run {run_id} is deleted; restore it first with `mlflow runs restore --run-id "
            f"{run_id}` (or choose another run)", param_hint=hint)
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment_name is not None and experiment.name != experiment_name:
        raise click.BadParameter(
            f"run {run_id} belongs to experiment {experiment.name!r}; "
            f"expected a run of experiment {experiment_name!r}",
            param_hint=hint,
        )
    if finished and run.info.status != RunStatus.to_string(RunStatus.FINISHED):
        raise click.BadParameter(
            f"run {run_id} is {run.info.status}; expected a FINISHED run", param_hint=hint
        )
    return run


def finished_run_tagged(experiment_names: list[str], key: str, value: str) -> Run | None:
    """The newest FINISHED run of the named experiments that carries tag `key` = `value`."""
    client = MlflowClient()
    ids = [e.experiment_id for e in map(client.get_experiment_by_name, experiment_names) if e]
    found = ids and client.search_runs(
        ids, f"tags.`{key}` = '{value}' AND attributes.status = 'FINISHED'", max_results=1,
        order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def map_runs(step_run: Run) -> dict[str, Run]:
    """A saliency step run's map runs by image ID."""
    found = MlflowClient().search_runs(
        [step_run.info.experiment_id],
        f"tags.{SALIENCY_PARENT_TAG} = '{step_run.info.run_id}'", max_results=10000)
    return {run.data.tags[IMAGE_ID_TAG]: run for run in found}
