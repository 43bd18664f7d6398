"""Map runs read back: their configuration, map, split and model, to make a map again or add
maps to a run; the evaluation sample runs a step's maps link to; the records of added maps."""

from __future__ import annotations

import click
import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import store_names
from steps.core import plots
from steps.core.image_dataset import DATASET, IMAGE_SIZE, SPLIT_PARAMETERS, SplitChoice, split_choice
from steps.core.explain import PredictedImage
from steps.tracking import runs
from steps.tracking.map_runs import BATCH_PARAM, MapRunWriter, identity_tags


def check_evaluation_runs(image_ids, evaluation_run_ids) -> list[dict[str, str]]:
    """Each evaluation run must be an Evaluation sample run of the same image, in order.

    Returns, per image, the lineage tags naming the evaluation sample and its evaluation.
    """
    if not evaluation_run_ids:
        return [{store_names.EVALUATION_RUN_TAG: ""} for _ in image_ids]
    hint = "'--evaluation_run_ids'"
    if len(evaluation_run_ids) != len(image_ids):
        raise click.BadParameter(
            f"{len(evaluation_run_ids)} run IDs given for {len(image_ids)} image IDs; "
            "give one evaluation run ID per image ID, in the same order",
            param_hint=hint,
        )
    lineage = []
    for image_id, run_id in zip(image_ids, evaluation_run_ids):
        run = runs.require_run(run_id, store_names.EVALUATION_EXPERIMENT, "evaluation_run_ids")
        evaluated = run.data.tags.get(store_names.IMAGE_ID_TAG)
        if evaluated != str(image_id):
            raise click.BadParameter(f"run {run_id} evaluated image {evaluated}, not image "
                                     f"{image_id}", param_hint=hint)
        lineage.append({
            store_names.EVALUATION_RUN_TAG: run_id,
            store_names.EVALUATION_PARENT_TAG: run.data.tags.get(store_names.EVALUATION_PARENT_TAG, ""),
        })
    return lineage


def require_map_run(run_id: str, param: str) -> Run:
    """A FINISHED per-image run of the Saliency experiment (one that holds a map and config)."""
    run = runs.require_run(run_id, store_names.SALIENCY_EXPERIMENT, param)
    if store_names.IMAGE_ID_TAG not in run.data.tags:
        raise click.BadParameter(
            f"run {run_id} is a saliency step run, not one image's map; give one of its image "
            f"runs (filter: tags.{store_names.SALIENCY_PARENT_TAG} = '{run_id}')",
            param_hint=f"'--{param}'")
    return run


def stored_config(run: Run) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{store_names.CONFIG_ARTIFACT}")


def original_image_id(run: Run) -> str:
    """The image of the run's own (root) map: its `Image_id`, or, for a run amended by an older
    version (whose `Image_id` then named the newest added image), the first of its history."""
    tags = run.data.tags
    return tags.get(store_names.HISTORY_TAG, tags[store_names.IMAGE_ID_TAG]).split(",")[0]


def stored_split(run: Run) -> SplitChoice:
    """The split of a stored map run: its own parameters; for a run made before it recorded
    them, its evaluation's, else the defaults."""
    params = run.data.params
    if not all(d.name in params for d in SPLIT_PARAMETERS):
        evaluation = run.data.tags.get(store_names.EVALUATION_PARENT_TAG)
        try:
            params = MlflowClient().get_run(evaluation).data.params if evaluation else {}
        except MlflowException:  # the evaluation was purged
            params = {}
    return split_choice({d.name: params.get(d.name, d.default) for d in SPLIT_PARAMETERS})


def stored_writer(run: Run, pictures: plots.PictureStyle, predict_batch_size: int, image_ids,
                  param: str) -> MapRunWriter:
    """The writer of a stored map run: its model, data, split, configuration and batch size."""
    tags, params = run.data.tags, run.data.params
    if store_names.MODEL_URI_TAG not in tags:
        raise click.BadParameter(f"run {run.info.run_id} records no model URI; it was made by "
                                 "an older version of this project", param_hint=f"'--{param}'")
    writer = MapRunWriter.build(
        tags[store_names.MODEL_URI_TAG], params.get(DATASET.name, DATASET.default),
        IMAGE_SIZE.type.convert(params.get(IMAGE_SIZE.name, IMAGE_SIZE.default)),
        stored_config(run), pictures, int(params.get(BATCH_PARAM, predict_batch_size)),
        image_ids, split=stored_split(run))
    runs.require_same_data(run, writer.inputs.data.digest, param)
    return writer


def update_record(k: int, predicted: PredictedImage, split: str
                  ) -> tuple[dict[str, str], dict[str, float]]:
    """The tags and metric that describe the `k`-th image added to a map run:
    `Update_<k>_image_id`, `..._GT_class`, `..._Predicted_class`, `..._Split` and
    `Update_<k>_Predicted_class_conf`."""
    tags = {store_names.update_tag(k, store_names.UPDATE_IMAGE_ID): predicted.image_id,
            store_names.update_tag(k, store_names.SPLIT_TAG): split}
    identity = identity_tags(predicted)
    for name in (store_names.GT_CLASS_TAG, store_names.PREDICTED_CLASS_TAG):
        tags[store_names.update_tag(k, name)] = identity[name]
    return tags, {store_names.update_tag(k, store_names.PREDICTED_CONF_METRIC): predicted.confidence}


def settled_identity(writer: MapRunWriter, tags: dict[str, str], own: str, added: list[str]
                     ) -> tuple[dict[str, str], dict[str, float]]:
    """What a run made by an older version lacks to read as this version's do: its identity
    tags back on its own image (older updates set them to the newest added image), its `Split`,
    and the `Update_<k>_...` records and `Added_image_ids` of images added before."""
    explainer = writer.explainer
    fixed, metrics = {}, {}
    if tags[store_names.IMAGE_ID_TAG] != own:
        fixed.update(identity_tags(explainer.predict(own)))
    if store_names.SPLIT_TAG not in tags:
        fixed[store_names.SPLIT_TAG] = explainer.split_of(own)
    for k, image_id in enumerate(added, 1):
        if store_names.update_tag(k, store_names.UPDATE_IMAGE_ID) not in tags:
            record, metric = update_record(k, explainer.predict(image_id),
                                           explainer.split_of(image_id))
            fixed.update(record)
            metrics.update(metric)
    if added and store_names.ADDED_IMAGES_TAG not in tags:
        fixed[store_names.ADDED_IMAGES_TAG] = ",".join(added)
    return fixed, metrics
