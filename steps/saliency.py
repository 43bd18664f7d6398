"""Saliency step: one "Saliency Map Generation" run per image, with its map, pictures and config.

Each per-image run is nested under the step's run and holds the algorithm's parameters, the
xaitk/smqtk configuration that rebuilds the same generator (`generator_config.json`), the map
(`saliency_map.npy`, `[classes, H, W]` in [-1, 1]) and pictures of it over the image. The maps
come from one `FastSaliency` engine for all the images, built from that stored configuration:
the same maps as xaitk's generator, many times faster per map (benchmarks/saliency_benchmark.py).
The console shows a progress bar with rate and ETA, not MLflow's "View run" line per image.

Two more modes work on stored runs: `reproduce_run_id` regenerates a stored map from its stored
configuration, data and batch size and fails when the new map differs; `update_run_id` adds
maps of more images to a stored run under new artifact paths, deleting nothing: the run keeps
its identity on its own image, and each added image is recorded in `Update_<k>_...` tags.

Every map run records which part of the dataset's split its image is in (`Split` tag: the
data's own train/test/val, else the random `test_fraction`/`split_seed` one); explaining a
training image prints a warning.
"""

from __future__ import annotations

import click
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steps import options, phases, store_names
from steps.core import plots
from steps.core.algorithm import algorithm_parameters, make_algorithm
from steps.core.metrics import MetricSettings
from steps.core.model_input import flags_of
from steps.core.xaitk_generators import generator_config
from steps.tracking import lifecycle, runs
from steps.tracking.cluster import ClusterSpec, check_reachable_store
from steps.tracking.console import quiet_run_links
from steps.tracking.map_runs import (BATCH_PARAM, MapRecipe, MapRunWriter, earlier_maps, make_maps, map_progress, stored_map)
from steps.tracking.stored_maps import (check_evaluation_runs, original_image_id,
                                        require_map_run, settled_identity, stored_writer,
                                        update_record)


class MapsDiffer(click.ClickException):
    exit_code = 3
    #: The new map run is the finding (FAILED, kept to look at), not an unfinished result.
    keeps_results = True


def generate(model_uri, dataset, image_size, split, image_ids, evaluation_run_ids, algorithm,
             pictures, predict_batch_size, cluster: ClusterSpec | None = None,
             parameters: dict[str, str] | None = None, resume: Run | None = None,
             input_flags: dict | None = None, metric_settings: MetricSettings | None = None,
             register_explainer: str = "") -> None:
    """The normal mode: one new map run per image, in this process or on a Dask cluster.
    `parameters`: the step's own, recorded for a resume. `resume`: a stopped step run to
    finish, keeping the map runs it made. `register_explainer`: log the step's classifier and
    configuration as an explainer model in the step run and register it under this name."""
    metric_settings = metric_settings or MetricSettings()
    if cluster is not None:
        check_reachable_store(cluster, mlflow.get_tracking_uri())
    writer = MapRunWriter.build(model_uri, dataset, image_size,
                                generator_config(algorithm.generator()), pictures,
                                predict_batch_size, image_ids, split=split,
                                input_flags=input_flags, metric_settings=metric_settings)
    if resume is not None:
        runs.require_same_data(resume, writer.inputs.data.digest)
    algorithm.check_image(writer.inputs.dataset.image_shape)
    writer.label = str(algorithm)
    lineage = check_evaluation_runs(image_ids, evaluation_run_ids)
    if evaluation_run_ids:
        writer.refuse_training_images(image_ids)
    writer.warn_about_training_images(image_ids)
    sanity_unavailable = writer.warn_if_sanity_unavailable()
    recipe = MapRecipe(writer.inputs.resolved.uri, writer.data_params["dataset"], image_size,
                       split, writer.config, pictures, predict_batch_size,
                       {**{k: options.as_param(v) for k, v in {
                           **algorithm.used_params(), **metric_settings.params()}.items()},
                        BATCH_PARAM: str(predict_batch_size)}, writer.label,
                       writer.inputs.data.digest)
    with runs.step_run(store_names.SALIENCY_EXPERIMENT, "saliency", parameters, resume) as parent:
        mlflow.set_tags({**writer.step_tags(), store_names.ALGORITHM_TAG: algorithm.name,
                         store_names.IMAGE_IDS_TAG: options.as_param(tuple(image_ids)),
                         store_names.RUN_NAME_TAG: store_names.saliency_run_name(writer.label),
                         **({store_names.CLUSTER_TAG: str(cluster)} if cluster else {})})
        found = {}
        if resume is None:
            writer.log_dataset()
        else:
            found = earlier_maps(MlflowClient(), parent.info.run_id, parent.info.experiment_id,
                                 restore=True)
            click.echo(f"Resuming saliency run {parent.info.run_id}: {len(found)} of "
                       f"{len(image_ids)} maps already made, making the other "
                       f"{len(image_ids) - len(found)}", err=True)
        todo = [(i, tags) for i, tags in zip(image_ids, lineage) if i not in found]
        with quiet_run_links(), map_progress(len(image_ids), f"Saliency maps ({algorithm})",
                                             len(found)) as bar:
            found.update((m.image_id, m) for m in make_maps(writer, recipe, parent, todo,
                                                            cluster, bar))
        made = [found[image_id] for image_id in image_ids]
        writer.log_step_results(made, parent.info.run_id, sanity_unavailable)
        if register_explainer:  # imported here: pyfunc logging is slow to import
            from steps.tracking.explainer_model import ExplainerSource, log_explainer

            _, version = log_explainer(ExplainerSource(writer, parent.info.run_id,
                                                       made[0].run_id), register_explainer)
            click.echo(f"Registered its explainer model as {version}")


def reproduce(source_id: str, pictures: plots.PictureStyle, predict_batch_size: int) -> None:
    """Regenerate a stored map from its stored configuration and compare with it."""
    source = require_map_run(source_id, "reproduce_run_id")
    image_id = original_image_id(source)
    writer = stored_writer(source, pictures, predict_batch_size, (image_id,), "reproduce_run_id")
    writer.warn_about_training_images((image_id,))
    expected = stored_map(source)
    tags = source.data.tags
    lineage = {k: tags[k] for k in (store_names.EVALUATION_RUN_TAG, store_names.EVALUATION_PARENT_TAG)
               if k in tags}
    algorithm_params = {k: v for k, v in source.data.params.items()
                        if k not in writer.data_params}
    with runs.step_run(store_names.SALIENCY_EXPERIMENT, "saliency-reproduce") as parent:
        mlflow.set_tags({store_names.REPRODUCED_TAG: source_id, **writer.step_tags()})
        explained, = phases.produced_in(store_names.COMPUTE_PHASE, writer.explainer.explain(
            writer.explainer.predict_all([image_id])))
        run = writer.map_run(explained, parent, algorithm_params,
                             {**lineage, store_names.REPRODUCED_TAG: source_id})
        writer.warn_about_scores(image_id, explained.scores)
        maps = explained.maps
        difference = (float(np.max(np.abs(maps - expected))) if maps.shape == expected.shape
                      else float("inf"))
        client = MlflowClient()
        client.log_metric(run.info.run_id, store_names.MAX_DIFFERENCE_METRIC, difference)
        mlflow.log_metric(store_names.MAX_DIFFERENCE_METRIC, difference)
        if difference != 0:
            client.set_terminated(run.info.run_id, "FAILED")
            raise MapsDiffer(f"the regenerated map of image {image_id} differs from the map "
                             f"stored in run {source_id}: largest absolute difference "
                             f"{difference:.3g} (new run {run.info.run_id})")
        click.echo(f"Reproduced run {source_id} as run {run.info.run_id}: identical map "
                   f"(largest absolute difference 0)")


def update(target_id: str, image_ids, pictures: plots.PictureStyle,
           predict_batch_size: int) -> None:
    """Add maps of more images to a stored map run, under new artifact paths, deleting nothing.

    The run stays the map of its own image: its name, top-level map, identity tags, metrics and
    evaluation sample are left as they are. The `k`-th image added is recorded beside them:
    its map and pictures under `updates/<k>_image_<Image_id>/`, `Update_<k>_...` tags and
    metric, and its ID appended to `Added_image_ids`.
    """
    target = require_map_run(target_id, "update_run_id")
    if not image_ids:
        raise click.BadParameter("give the images to add to the run", param_hint="'--image_ids'")
    writer = stored_writer(target, pictures, predict_batch_size, image_ids, "update_run_id")
    explainer, tags = writer.explainer, target.data.tags
    own = original_image_id(target)
    added = [i for i in tags.get(store_names.ADDED_IMAGES_TAG, "").split(",") if i]
    if not added and store_names.HISTORY_TAG in tags:  # amended by an older version
        added = tags[store_names.HISTORY_TAG].split(",")[1:]
    count = int(tags.get(store_names.UPDATES_TAG, "0"))
    writer.warn_about_training_images(image_ids)
    with runs.step_run(store_names.SALIENCY_EXPERIMENT, "saliency-update") as parent:
        mlflow.set_tags({store_names.UPDATED_RUN_TAG: target_id,
                         store_names.IMAGE_IDS_TAG: options.as_param(tuple(image_ids))})
        with mlflow.start_run(run_id=target_id, nested=True):
            fixed, metrics = settled_identity(writer, tags, own, added)
            if fixed:
                mlflow.set_tags(fixed)
            if metrics:
                mlflow.log_metrics(metrics)
            with map_progress(len(image_ids), f"Adding maps to run {target_id}") as bar:
                for image_id in image_ids:
                    count += 1
                    predicted = explainer.predict(image_id)
                    writer.make_and_log_maps(predicted, store_names.update_prefix(count, image_id))
                    added.append(image_id)
                    record, metric = update_record(count, predicted,
                                                   explainer.split_of(image_id))
                    mlflow.set_tags({**record, store_names.ADDED_IMAGES_TAG: ",".join(added),
                                     store_names.UPDATES_TAG: str(count), store_names.MODIFIED_TAG: "true",
                                     store_names.MODIFIED_BY_TAG: parent.info.run_id})
                    mlflow.log_metrics(metric)
                    bar.advanced(image_id)
        click.echo(f"Added {len(image_ids)} maps to run {target_id}, the map of image {own} "
                   f"(images added to it: {','.join(added)})")


@click.command(help=__doc__)
@options.with_options(options.ENTRY_POINTS["saliency"])
def saliency(model_uri, image_ids, reproduce_run_id, update_run_id, cluster, resume_run_id,
             picture_mode, top_classes, picture_scale, predict_batch_size, **_):
    pictures = plots.PictureStyle(picture_mode, top_classes, picture_scale)
    if reproduce_run_id:
        if image_ids or update_run_id or model_uri:
            raise click.BadParameter("reproduce_run_id takes everything from the stored run; "
                                     "give it alone", param_hint="'--reproduce_run_id'")
        reproduce(reproduce_run_id, pictures, predict_batch_size)
    elif update_run_id:
        update(update_run_id, image_ids, pictures, predict_batch_size)
    elif resume_run_id:
        resume = runs.require_resumable(resume_run_id, store_names.SALIENCY_EXPERIMENT)
        if resume.info.status == lifecycle.FINISHED:
            click.echo(f"Saliency run {resume_run_id} is FINISHED: nothing to resume")
            return
        generate_with(runs.stored_parameters(saliency, resume), cluster, resume)
    else:
        if not model_uri:
            raise click.BadParameter("give the model to explain (or reproduce_run_id, or "
                                     "update_run_id)", param_hint="'--model_uri'")
        generate_with(click.get_current_context().params, cluster)


def generate_with(values: dict, cluster: ClusterSpec | None, resume: Run | None = None) -> None:
    """`generate` from the step's parameters as converted by its command line."""
    algorithm_values = {p.name: values[p.name] for p in algorithm_parameters()}
    generate(values["model_uri"], values["dataset"], values["image_size"],
             options.split_choice(values), values["image_ids"],
             values["evaluation_run_ids"],
             make_algorithm(values["algorithm"], **algorithm_values),
             plots.PictureStyle(values["picture_mode"], values["top_classes"],
                                values["picture_scale"]),
             values["predict_batch_size"], cluster,
             None if resume else options.values_of(options.ENTRY_POINTS["saliency"], values),
             resume, flags_of(values), MetricSettings.from_values(values),
             values.get("register_explainer") or "")


if __name__ == "__main__":
    options.run_cli(saliency)
