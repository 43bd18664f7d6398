"""Saliency step: one "Saliency Map Generation" run per image, with its map, pictures and config.

Each per-image run is nested under the step's run and holds the algorithm's parameters, the
xaitk/smqtk configuration that rebuilds the same generator (`generator_config.json`), the map
(`saliency_map.npy`, `[classes, H, W]` in [-1, 1]) and pictures of it over the image. The maps
come from one `FastSaliency` engine for all the images, built from that stored configuration:
the same maps as xaitk's generator, many times faster per map (benchmarks/saliency_benchmark.py).
The console shows a progress bar with rate and ETA, not MLflow's "View run" line per image.

Two more modes work on stored runs: `reproduce_run_id` regenerates a stored map from its stored
configuration and batch size and fails when the new map differs; `update_run_id` adds maps of
more images to a stored run under new artifact paths, deleting nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steps import options, plots, tracking
from steps.code_version import CODE_VERSION_TAG
from steps.console import Progress, quiet_run_links
from steps.data import ImageDataset, load_dataset
from steps.fast_saliency import FastSaliency
from steps.saliency_maps import (
    SaliencyParams,
    SklearnImageClassifier,
    build_generator,
    generator_config,
)

CONFIG_ARTIFACT = "generator_config.json"
MAP_ARTIFACT = "saliency_map.npy"
REPRODUCED_TAG = "Reproduced_from"
HISTORY_TAG = "Image_id_history"
UPDATES_TAG = "Update_count"
# Stored with each map: the model's float32 confidences round by batch shape, so regenerating
# the very same map takes the same batches.
BATCH_PARAM = "predict_batch_size"


class MapsDiffer(click.ClickException):
    exit_code = 3


def check_image_ids(image_ids: tuple[int, ...], data: ImageDataset) -> None:
    if not image_ids:
        raise click.BadParameter("give at least one image ID", param_hint="'--image_ids'")
    too_large = [i for i in image_ids if i >= len(data)]
    if too_large:
        raise click.BadParameter(
            f"image IDs {too_large} are outside the {data.name} dataset (IDs 0 to {len(data) - 1})",
            param_hint="'--image_ids'",
        )


def check_evaluation_runs(image_ids, evaluation_run_ids) -> list[dict[str, str]]:
    """Each evaluation run must be an Evaluation sample run of the same image, in order.

    Returns, per image, the lineage tags naming the evaluation sample and its evaluation.
    """
    if not evaluation_run_ids:
        return [{"Evaluation_run_id": ""} for _ in image_ids]
    hint = "'--evaluation_run_ids'"
    if len(evaluation_run_ids) != len(image_ids):
        raise click.BadParameter(
            f"{len(evaluation_run_ids)} run IDs given for {len(image_ids)} image IDs; "
            "give one evaluation run ID per image ID, in the same order",
            param_hint=hint,
        )
    lineage = []
    for image_id, run_id in zip(image_ids, evaluation_run_ids):
        run = tracking.require_run(run_id, tracking.EVALUATION_EXPERIMENT, "evaluation_run_ids")
        if run.data.tags.get("Image_id") != str(image_id):
            raise click.BadParameter(
                f"run {run_id} evaluated image {run.data.tags.get('Image_id')}, not image {image_id}",
                param_hint=hint,
            )
        lineage.append({
            "Evaluation_run_id": run_id,
            tracking.EVALUATION_PARENT_TAG: run.data.tags.get(tracking.EVALUATION_PARENT_TAG, ""),
        })
    return lineage


def require_map_run(run_id: str, param: str) -> Run:
    """A FINISHED per-image run of the Saliency experiment (one that holds a map and config)."""
    run = tracking.require_run(run_id, tracking.SALIENCY_EXPERIMENT, param)
    if "Image_id" not in run.data.tags:
        raise click.BadParameter(
            f"run {run_id} is a saliency step run, not one image's map; give one of its image "
            f"runs (filter: tags.Saliency_parent_run_id = '{run_id}')", param_hint=f"'--{param}'")
    return run


def stored_config(run: Run) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{CONFIG_ARTIFACT}")


def stored_map(run: Run) -> np.ndarray:
    return np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                       artifact_path=MAP_ARTIFACT))


def stored_batch_size(run: Run, given: int) -> int:
    """The batch size the run's maps were made with (`given` for runs stored without it)."""
    return int(run.data.params.get(BATCH_PARAM, given))


def original_image_id(run: Run) -> int:
    """The image of the run's own (root) map, even after updates added others."""
    return int(run.data.tags.get(HISTORY_TAG, run.data.tags["Image_id"]).split(",")[0])


def log_pictures(image, maps, class_names, title, picture_mode, prefix: str) -> None:
    if picture_mode in ("both", "combined"):
        fig = plots.all_classes_figure(image, maps, class_names, title)
        mlflow.log_figure(fig, f"{prefix}pictures/all_classes.png")
        plots.plt.close(fig)
    if picture_mode in ("both", "per_class"):
        titles = [f"{title}\nclass {name}" for name in class_names]
        for name, fig in zip(class_names, plots.class_overlay_figures(image, maps, titles),
                             strict=True):
            mlflow.log_figure(fig, f"{prefix}pictures/class_{name}.png")


def log_map(maps: np.ndarray, prefix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, MAP_ARTIFACT)
        np.save(path, maps)
        mlflow.log_artifact(str(path), artifact_path=prefix.rstrip("/") or None)


@dataclass
class Explainer:
    """Everything that makes one image's map: data, model, engine; and how to log it."""

    train_run_id: str
    data: ImageDataset
    model: object
    classifier: SklearnImageClassifier
    engine: FastSaliency
    picture_mode: str

    @classmethod
    def build(cls, train_run_id: str, config: dict, picture_mode: str, predict_batch_size: int,
              image_ids=()) -> Explainer:
        train_run = tracking.require_run(train_run_id, tracking.TRAIN_EXPERIMENT, "train_run_id")
        data = load_dataset(tracking.train_run_setup(train_run)["dataset"])
        check_image_ids(image_ids, data)
        model = tracking.load_train_model(train_run)
        return cls(train_run_id, data, model,
                   SklearnImageClassifier(model, batch_size=predict_batch_size),
                   FastSaliency.from_config(config), picture_mode)

    def identity_tags(self, image_id: int) -> tuple[dict[str, str], float]:
        """`Image_id`, `GT_class`, `Predicted_class` of an image, and the model's confidence."""
        confidences = self.model.predict_proba(self.data.images[image_id].reshape(1, -1))[0]
        return {
            "Image_id": str(image_id),
            "GT_class": str(int(self.data.labels[image_id])),
            "Predicted_class": str(int(self.model.classes_[confidences.argmax()])),
        }, float(confidences.max())

    def explain(self, image_id: int, identity: dict[str, str], prefix: str = "") -> np.ndarray:
        """Make the image's map and log it with its pictures (under `prefix`) in the active run;
        `identity` is the image's `identity_tags`, for the pictures' titles."""
        image = self.data.images[image_id]
        maps = self.engine(image, self.classifier)
        log_map(maps, prefix)
        title = (f"image {image_id}: true {identity['GT_class']}, "
                 f"predicted {identity['Predicted_class']}")
        log_pictures(image, maps, self.data.class_names, title, self.picture_mode, prefix)
        return maps

    def map_run(self, image_id: int, parent: Run, params: dict, config: dict,
                extra_tags: dict[str, str]) -> tuple[Run, np.ndarray]:
        """A nested per-image run with its tags, params, config, map and pictures."""
        tags, confidence = self.identity_tags(image_id)
        with mlflow.start_run(run_name=f"image-{image_id}", nested=True,
                              experiment_id=parent.info.experiment_id) as run:
            mlflow.set_tags({**tags, "Train_run_id": self.train_run_id,
                             "Saliency_parent_run_id": parent.info.run_id,
                             CODE_VERSION_TAG: parent.data.tags[CODE_VERSION_TAG], **extra_tags})
            mlflow.log_params(params)
            mlflow.log_metric("Predicted_class_conf", confidence)
            mlflow.log_dict(config, CONFIG_ARTIFACT)
            return run, self.explain(image_id, tags)


def map_progress(total: int, label: str) -> Progress:
    """Maps made so far, their rate and ETA, on stderr."""
    return Progress(total, label, unit="maps")


def generate(train_run_id, image_ids, evaluation_run_ids, params: SaliencyParams,
             picture_mode, predict_batch_size) -> None:
    """The normal mode: one new map run per image."""
    config = generator_config(build_generator(params))
    explainer = Explainer.build(train_run_id, config, picture_mode, predict_batch_size, image_ids)
    lineage = check_evaluation_runs(image_ids, evaluation_run_ids)
    logged = {**{k: options.as_param(v) for k, v in params.used_params().items()},
              BATCH_PARAM: str(predict_batch_size)}
    with tracking.step_run(tracking.SALIENCY_EXPERIMENT, "saliency") as parent:
        mlflow.set_tags({"Train_run_id": train_run_id, "Algorithm": params.algorithm,
                         "Image_ids": ",".join(map(str, image_ids))})
        with quiet_run_links(), map_progress(len(image_ids),
                                             f"Saliency maps ({params.algorithm})") as bar:
            for image_id, tags in zip(image_ids, lineage):
                bar.advanced(explainer.map_run(image_id, parent, logged, config, tags))
        click.echo(f"Saliency run {parent.info.run_id}: {len(image_ids)} maps")


def reproduce(source_id: str, picture_mode: str, predict_batch_size: int) -> None:
    """Regenerate a stored map from its stored configuration and compare with it."""
    source = require_map_run(source_id, "reproduce_run_id")
    config = stored_config(source)
    tags = source.data.tags
    image_id = original_image_id(source)
    explainer = Explainer.build(tags["Train_run_id"], config, picture_mode,
                                stored_batch_size(source, predict_batch_size), (image_id,))
    expected = stored_map(source)
    lineage = {k: tags[k] for k in ("Evaluation_run_id", tracking.EVALUATION_PARENT_TAG) if k in tags}
    with tracking.step_run(tracking.SALIENCY_EXPERIMENT, "saliency-reproduce") as parent:
        mlflow.set_tags({REPRODUCED_TAG: source_id, "Train_run_id": tags["Train_run_id"]})
        run, maps = explainer.map_run(image_id, parent, source.data.params, config,
                                      {**lineage, REPRODUCED_TAG: source_id})
        difference = (float(np.max(np.abs(maps - expected))) if maps.shape == expected.shape
                      else float("inf"))
        client = MlflowClient()
        client.log_metric(run.info.run_id, "Max_abs_difference", difference)
        mlflow.log_metric("Max_abs_difference", difference)
        if difference != 0:
            client.set_terminated(run.info.run_id, "FAILED")
            raise MapsDiffer(f"the regenerated map of image {image_id} differs from the map "
                             f"stored in run {source_id}: largest absolute difference "
                             f"{difference:.3g} (new run {run.info.run_id})")
        click.echo(f"Reproduced run {source_id} as run {run.info.run_id}: identical map "
                   f"(largest absolute difference 0)")


def update(target_id: str, image_ids, picture_mode: str, predict_batch_size: int) -> None:
    """Add maps of more images to a stored map run, under new artifact paths, deleting nothing."""
    target = require_map_run(target_id, "update_run_id")
    if not image_ids:
        raise click.BadParameter("give the images to add to the run", param_hint="'--image_ids'")
    config = stored_config(target)
    tags = target.data.tags
    explainer = Explainer.build(tags["Train_run_id"], config, picture_mode,
                                stored_batch_size(target, predict_batch_size), image_ids)
    history = tags.get(HISTORY_TAG, tags["Image_id"]).split(",")
    count = int(tags.get(UPDATES_TAG, "0"))
    with tracking.step_run(tracking.SALIENCY_EXPERIMENT, "saliency-update") as parent:
        mlflow.set_tags({"Updated_run_id": target_id, "Image_ids": ",".join(map(str, image_ids))})
        with mlflow.start_run(run_id=target_id, nested=True):
            with map_progress(len(image_ids), f"Adding maps to run {target_id}") as bar:
                for image_id in image_ids:
                    count += 1
                    identity, _ = explainer.identity_tags(image_id)
                    explainer.explain(image_id, identity,
                                      prefix=f"updates/{count}_image_{image_id}/")
                    history.append(str(image_id))
                    mlflow.set_tags({**identity, HISTORY_TAG: ",".join(history),
                                     UPDATES_TAG: str(count), "Modified_run": "true",
                                     "Modified_by_run_id": parent.info.run_id})
                    bar.advanced(image_id)
        click.echo(f"Added {len(image_ids)} maps to run {target_id} (images it has held: "
                   f"{','.join(history)})")


@click.command(help=__doc__)
@options.with_options(options.SALIENCY_INPUTS + options.SALIENCY)
def saliency(train_run_id, image_ids, evaluation_run_ids, reproduce_run_id, update_run_id,
             picture_mode, predict_batch_size, **algorithm_args):
    if reproduce_run_id:
        if image_ids or update_run_id or train_run_id:
            raise click.BadParameter("reproduce_run_id takes everything from the stored run; "
                                     "give it alone", param_hint="'--reproduce_run_id'")
        reproduce(reproduce_run_id, picture_mode, predict_batch_size)
    elif update_run_id:
        update(update_run_id, image_ids, picture_mode, predict_batch_size)
    else:
        if not train_run_id:
            raise click.BadParameter("give the train run whose model to explain (or "
                                     "reproduce_run_id, or update_run_id)",
                                     param_hint="'--train_run_id'")
        generate(train_run_id, image_ids, evaluation_run_ids, SaliencyParams(**algorithm_args),
                 picture_mode, predict_batch_size)


if __name__ == "__main__":
    options.run_cli(saliency)
