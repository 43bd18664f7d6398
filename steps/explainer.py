"""Explainer step: a saliency run's classifier and stored configuration as one MLflow model.

The model (`steps/tracking/explainer_model.py`) takes PNG or JPEG files and answers with the
prediction and the saliency maps the saliency run's configuration makes of them, the same maps
its map runs store for the same files; `mlflow models serve` serves it. It is logged in a run
of the "Explainers" experiment and, with `register_as`, registered as a new version tagged with
the saliency run, the classifier's version and the configuration's digest.
"""

from __future__ import annotations

import click
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steps import options, store_names
from steps.core import plots
from steps.tracking import lifecycle, runs
from steps.tracking.explainer_model import ExplainerSource, log_explainer
from steps.tracking.map_runs import BATCH_PARAM
from steps.tracking.stored_maps import original_image_id, stored_writer

PARAM = "saliency_run_id"


def map_run_of(run_id: str) -> Run:
    """The map run itself, or the first FINISHED map run of a saliency step run (they share
    the step's configuration); a click error naming `saliency_run_id` otherwise."""
    run = runs.require_run(run_id, store_names.SALIENCY_EXPERIMENT, PARAM)
    if store_names.IMAGE_ID_TAG in run.data.tags:
        return run
    found = MlflowClient().search_runs(
        [run.info.experiment_id], f"tags.`{store_names.SALIENCY_PARENT_TAG}` = '{run_id}' AND "
        f"attributes.status = '{lifecycle.FINISHED}'",
        order_by=["attributes.start_time ASC"], max_results=1)
    if not found:
        raise click.BadParameter(f"saliency run {run_id} holds no FINISHED map run to take "
                                 "its configuration from", param_hint=f"'--{PARAM}'")
    return found[0]


@click.command(help=__doc__)
@options.with_options(options.ENTRY_POINTS["explainer"])
def explainer(saliency_run_id, register_as):
    source = map_run_of(saliency_run_id)
    writer = stored_writer(source, plots.PictureStyle(),
                           int(source.data.params.get(BATCH_PARAM, options.PREDICT_BATCH_SIZE)),
                           (original_image_id(source),), PARAM)
    with runs.step_run(store_names.EXPLAINER_EXPERIMENT, "explainer",
                       options.values_of(options.ENTRY_POINTS["explainer"],
                                         click.get_current_context().params)) as run:
        model_uri, version = log_explainer(
            ExplainerSource(writer, saliency_run_id, source.info.run_id), register_as)
    click.echo(f"Explainer run {run.info.run_id}: model {model_uri} (configuration of map run "
               f"{source.info.run_id})"
               + (f", registered as {version}; serve it with: mlflow models serve -m "
                  f"models:/{version} --env-manager local" if version else ""))


if __name__ == "__main__":
    options.run_cli(explainer)
