"""The driver: train -> evaluate -> query -> saliency, each step an `mlflow.run` nested in this run.

Run it as `mlflow run .` (entry point `main`). It passes each step's run ID on to the next,
selects the images to explain with `mlflow.search_runs`, and logs that query's result here.
A step whose stored run matches (same parameters, code version and upstream runs) is reused
instead of run again, unless `-P use_cache=false`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
from mlflow.exceptions import ExecutionException
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENV

from steps import options, tracking
from steps.code_version import code_version
from steps.query import query_samples
from steps.step_cache import find_reusable_run

PROJECT_DIR = Path(__file__).resolve().parent
NO_RUN_ID = "0" * 32


class StepFailed(click.ClickException):
    exit_code = 1


def step_params(declarations, values: dict) -> dict[str, str]:
    """The values of the given option declarations, as `-P` strings for `mlflow.run`."""
    return {d.name: options.as_param(values[d.name]) for d in declarations}


@dataclass
class Driver:
    """Runs or reuses steps inside the main run and records what it did there."""

    env_manager: str
    use_cache: bool
    version: str

    def _stored(self, entry_point: str, experiment_id: str, parameters: dict[str, str]):
        """The ID of a stored run that can stand in for this one, if reuse is on and one exists."""
        if not self.use_cache:
            return None
        stored = find_reusable_run(experiment_id, entry_point, parameters, self.version)
        if stored is None:
            return None
        click.echo(f"=== {entry_point}: reusing FINISHED run {stored.info.run_id} "
                   "(same parameters, code version and upstream runs) ===")
        return stored.info.run_id

    def _launch(self, entry_point: str, experiment_id: str, parameters: dict[str, str],
                synchronous: bool):
        click.echo(f"=== {entry_point} ===")
        return mlflow.run(str(PROJECT_DIR), entry_point, parameters=parameters,
                          experiment_id=experiment_id, env_manager=self.env_manager,
                          synchronous=synchronous)

    def step(self, entry_point: str, experiment: str, parameters: dict[str, str]) -> str:
        """The run ID of the step: a matching stored run, or a new nested `mlflow.run`."""
        return self.steps(entry_point, experiment, [parameters])[0]

    def steps(self, entry_point: str, experiment: str, parameter_sets: list[dict[str, str]]
              ) -> list[str]:
        """Runs of one entry point, all started at once (e.g. evaluation shards); waits for all.

        Each is reused when a matching stored run exists. A failed run fails the step, after
        every other run has finished.
        """
        experiment_id = tracking.experiment_id(experiment)
        run_ids, reused, submitted = [], [], []
        for parameters in parameter_sets:
            stored = self._stored(entry_point, experiment_id, parameters)
            if stored is not None:
                reused.append(stored)
                run_ids.append(stored)
                continue
            try:
                run = self._launch(entry_point, experiment_id, parameters,
                                   synchronous=len(parameter_sets) == 1)
            except ExecutionException as error:
                raise StepFailed(f"the {entry_point} step failed ({error}); "
                                 "its message is above") from None
            submitted.append(run)
            run_ids.append(run.run_id)
        failed = [run.run_id for run in submitted if not run.wait()]
        if failed:
            raise StepFailed(f"{len(failed)} of {len(parameter_sets)} {entry_point} runs failed "
                             f"(run {', '.join(failed)}); their messages are above")
        if reused:
            mlflow.set_tag(f"Reused_{entry_point}", ",".join(reused))
        return run_ids

    def resume(self, entry_point: str, run_id: str) -> str:
        click.echo(f"=== {entry_point}: starting from stored run {run_id} ===")
        mlflow.set_tag(f"Resumed_{entry_point}", run_id)
        return run_id


def resume_points(train_run_id: str | None, evaluation_run_id: str | None):
    """Check the stored runs the user asked to start from; returns (train ID, evaluation ID)."""
    if evaluation_run_id:
        evaluation = tracking.require_run(evaluation_run_id, tracking.EVALUATION_EXPERIMENT,
                                          "evaluation_run_id")
        if tracking.EVALUATION_PARENT_TAG in evaluation.data.tags:
            raise click.BadParameter(
                f"run {evaluation_run_id} is one image's sample run; give its evaluation "
                f"(parent) run {evaluation.data.tags[tracking.EVALUATION_PARENT_TAG]}",
                param_hint="'--evaluation_run_id'")
        evaluated = evaluation.data.tags.get("Train_run_id")
        if train_run_id and train_run_id != evaluated:
            raise click.BadParameter(
                f"evaluation run {evaluation_run_id} evaluated train run {evaluated}, "
                f"not {train_run_id}", param_hint="'--train_run_id'")
        train_run_id = evaluated
    if train_run_id:
        tracking.require_run(train_run_id, tracking.TRAIN_EXPERIMENT, "train_run_id")
    return train_run_id, evaluation_run_id


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


@click.command(help=__doc__)
@options.with_options(options.DRIVER + options.TRAIN + options.EVALUATE + options.QUERY
                      + options.SALIENCY)
def main(use_cache, train_run_id, evaluation_run_id, shards, **values):
    # Fail on a bad filter string or resume run now, not after training and evaluating.
    query_samples(NO_RUN_ID, values["query"], values["order_by"], 1)
    train_run_id, evaluation_run_id = resume_points(train_run_id, evaluation_run_id)

    with mlflow.start_run() as main_run:
        # MLflow does not pass its environment manager on to nested `mlflow.run` calls.
        driver = Driver(env_manager=main_run.data.tags.get(MLFLOW_PROJECT_ENV, "local"),
                        use_cache=use_cache, version=code_version())
        summary = {"Main run": main_run.info.run_id}

        if train_run_id:
            train_id = driver.resume("train", train_run_id)
        else:
            train_id = driver.step("train", tracking.TRAIN_EXPERIMENT,
                                   step_params(options.TRAIN, values))
        mlflow.set_tag("Train_run_id", train_id)
        summary["Train run"] = train_id

        if evaluation_run_id:
            evaluation_ids = [driver.resume("evaluate", evaluation_run_id)]
        else:
            shared = {"train_run_id": train_id, **step_params(options.EVALUATE, values),
                      "num_shards": str(shards)}
            evaluation_ids = driver.steps("evaluate", tracking.EVALUATION_EXPERIMENT, [
                {**shared, "shard_index": str(index)} for index in range(shards)])
        evaluation_id = ",".join(evaluation_ids)
        mlflow.set_tag("Evaluation_run_id", evaluation_id)
        summary["Evaluation run" if shards == 1 else "Evaluation runs"] = evaluation_id

        samples = query_samples(evaluation_ids, values["query"], values["order_by"],
                                values["max_images"])
        mlflow.log_text(samples.to_csv(index=False), "query/query_result.csv")
        mlflow.set_tag("Query_matches", len(samples))
        if samples.empty:
            click.echo(f"The query {values['query']!r} matched no evaluation sample of run "
                       f"{evaluation_id}; no saliency maps made. Try a broader -P query=...")
        else:
            image_ids = ",".join(samples["tags.Image_id"])
            click.echo(f"Query {values['query']!r} selected images {image_ids}")
            mlflow.set_tag("Queried_image_ids", image_ids)
            saliency_id = driver.step("saliency", tracking.SALIENCY_EXPERIMENT, {
                "train_run_id": train_id,
                "image_ids": image_ids,
                "evaluation_run_ids": ",".join(samples["run_id"]),
                **step_params(options.SALIENCY, values),
            })
            mlflow.set_tag("Saliency_run_id", saliency_id)
            summary["Saliency run"] = saliency_id

    uri = mlflow.get_tracking_uri()
    click.echo("\nPipeline finished.")
    for label, run_id in summary.items():
        click.echo(f"  {label + ':':18}{run_id}")
    click.echo(f"  {'Tracking URI:':18}{uri}")
    click.echo(f"  {'Open the UI:':18}{ui_hint(uri)}")


if __name__ == "__main__":
    options.run_cli(main)
