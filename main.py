"""The driver: train -> evaluate -> query -> saliency, each step an `mlflow.run` nested in this run.

Run it as `mlflow run .` (entry point `main`). It passes each step's run ID on to the next,
selects the images to explain with `mlflow.search_runs`, and logs that query's result here.
"""

from __future__ import annotations

from pathlib import Path

import click
import mlflow
from mlflow.exceptions import ExecutionException
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENV

from steps import options, tracking
from steps.query import query_samples

PROJECT_DIR = Path(__file__).resolve().parent
NO_RUN_ID = "0" * 32


class StepFailed(click.ClickException):
    exit_code = 1


def step_params(declarations, values: dict) -> dict[str, str]:
    """The values of the given option declarations, as `-P` strings for `mlflow.run`."""
    return {d.name: options.as_param(values[d.name]) for d in declarations}


def run_step(entry_point: str, experiment: str, parameters: dict, env_manager: str) -> str:
    """Run one entry point as a nested MLflow run in its stage's experiment; returns its run ID."""
    click.echo(f"=== {entry_point} ===")
    try:
        submitted = mlflow.run(
            str(PROJECT_DIR),
            entry_point,
            parameters=parameters,
            experiment_id=tracking.experiment_id(experiment),
            env_manager=env_manager,
        )
    except ExecutionException as error:
        raise StepFailed(f"the {entry_point} step failed ({error}); its message is above") from None
    return submitted.run_id


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


@click.command(help=__doc__)
@options.with_options(options.TRAIN + options.EVALUATE + options.QUERY + options.SALIENCY)
def main(**values):
    # Fail on a bad filter string now, not after training and evaluating.
    query_samples(NO_RUN_ID, values["query"], values["order_by"], 1)

    with mlflow.start_run() as main_run:
        # MLflow does not pass its environment manager on to nested `mlflow.run` calls.
        env_manager = main_run.data.tags.get(MLFLOW_PROJECT_ENV, "local")
        summary = {"Main run": main_run.info.run_id}

        train_id = run_step("train", tracking.TRAIN_EXPERIMENT,
                            step_params(options.TRAIN, values), env_manager)
        mlflow.set_tag("Train_run_id", train_id)
        summary["Train run"] = train_id

        evaluation_id = run_step("evaluate", tracking.EVALUATION_EXPERIMENT, {
            "train_run_id": train_id, **step_params(options.EVALUATE, values)}, env_manager)
        mlflow.set_tag("Evaluation_run_id", evaluation_id)
        summary["Evaluation run"] = evaluation_id

        samples = query_samples(evaluation_id, values["query"], values["order_by"],
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
            saliency_id = run_step("saliency", tracking.SALIENCY_EXPERIMENT, {
                "train_run_id": train_id,
                "image_ids": image_ids,
                "evaluation_run_ids": ",".join(samples["run_id"]),
                **step_params(options.SALIENCY, values),
            }, env_manager)
            mlflow.set_tag("Saliency_run_id", saliency_id)
            summary["Saliency run"] = saliency_id

    uri = mlflow.get_tracking_uri()
    click.echo("\nPipeline finished.")
    for label, run_id in summary.items():
        click.echo(f"  {label + ':':16}{run_id}")
    click.echo(f"  {'Tracking URI:':16}{uri}")
    click.echo(f"  {'Open the UI:':16}{ui_hint(uri)}")


if __name__ == "__main__":
    options.run_cli(main)
