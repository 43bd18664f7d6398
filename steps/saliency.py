"""Saliency step: one "Saliency Map Generation" run per image, with its map, pictures and config.

Each per-image run is nested under the step's run and holds the algorithm's parameters, the
xaitk/smqtk configuration that rebuilds the same generator (`generator_config.json`), the map
(`saliency_map.npy`, `[classes, H, W]` in [-1, 1]) and pictures of it over the image. The maps
come from one `FastSaliency` engine for all the images, built from that stored configuration:
the same maps as xaitk's generator, about 50 times faster per map
(benchmarks/saliency_benchmark.py).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import mlflow
import numpy as np

from steps import options, plots, tracking
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


def check_image_ids(image_ids: tuple[int, ...], data: ImageDataset) -> None:
    if not image_ids:
        raise click.BadParameter("give at least one image ID", param_hint="'--image_ids'")
    too_large = [i for i in image_ids if i >= len(data)]
    if too_large:
        raise click.BadParameter(
            f"image IDs {too_large} are outside the {data.name} dataset (IDs 0 to {len(data) - 1})",
            param_hint="'--image_ids'",
        )


def check_evaluation_runs(image_ids, evaluation_run_ids) -> tuple[str, ...]:
    """Each evaluation run must be an Evaluation sample run of the same image, in order."""
    if not evaluation_run_ids:
        return ("",) * len(image_ids)
    hint = "'--evaluation_run_ids'"
    if len(evaluation_run_ids) != len(image_ids):
        raise click.BadParameter(
            f"{len(evaluation_run_ids)} run IDs given for {len(image_ids)} image IDs; "
            "give one evaluation run ID per image ID, in the same order",
            param_hint=hint,
        )
    for image_id, run_id in zip(image_ids, evaluation_run_ids):
        run = tracking.require_run(run_id, tracking.EVALUATION_EXPERIMENT, "evaluation_run_ids")
        if run.data.tags.get("Image_id") != str(image_id):
            raise click.BadParameter(
                f"run {run_id} evaluated image {run.data.tags.get('Image_id')}, not image {image_id}",
                param_hint=hint,
            )
    return tuple(evaluation_run_ids)


def log_pictures(image, maps, class_names, title, picture_mode) -> None:
    if picture_mode in ("both", "combined"):
        fig = plots.all_classes_figure(image, maps, class_names, title)
        mlflow.log_figure(fig, "pictures/all_classes.png")
        plots.plt.close(fig)
    if picture_mode in ("both", "per_class"):
        for name, saliency in zip(class_names, maps):
            fig = plots.class_overlay_figure(image, saliency, f"{title}\nclass {name}")
            mlflow.log_figure(fig, f"pictures/class_{name}.png")
            plots.plt.close(fig)


def log_map(maps: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, MAP_ARTIFACT)
        np.save(path, maps)
        mlflow.log_artifact(str(path))


@click.command(help=__doc__)
@options.with_options([
    options.TRAIN_RUN_ID,
    options.IMAGE_IDS,
    options.EVALUATION_RUN_IDS,
    *options.SALIENCY,
])
def saliency(train_run_id, image_ids, evaluation_run_ids, picture_mode, predict_batch_size,
             **algorithm_args):
    params = SaliencyParams(**algorithm_args)
    train_run = tracking.require_run(train_run_id, tracking.TRAIN_EXPERIMENT, "train_run_id")
    data = load_dataset(tracking.train_run_setup(train_run)["dataset"])
    check_image_ids(image_ids, data)
    evaluation_run_ids = check_evaluation_runs(image_ids, evaluation_run_ids)
    model = tracking.load_train_model(train_run)
    classifier = SklearnImageClassifier(model, batch_size=predict_batch_size)
    config = generator_config(build_generator(params))
    engine = FastSaliency.from_config(config)

    with tracking.step_run(tracking.SALIENCY_EXPERIMENT, "saliency") as parent:
        mlflow.set_tags({"Train_run_id": train_run_id, "Algorithm": params.algorithm,
                         "Image_ids": ",".join(map(str, image_ids))})
        pairs = list(zip(image_ids, evaluation_run_ids))
        with click.progressbar(pairs, label=f"Saliency maps ({params.algorithm})",
                               file=sys.stderr, show_pos=True) as bar:
            for image_id, evaluation_run_id in bar:
                image = data.images[image_id]
                confidences = model.predict_proba(image.reshape(1, -1))[0]
                predicted = int(model.classes_[confidences.argmax()])
                truth = int(data.labels[image_id])
                with mlflow.start_run(run_name=f"image-{image_id}", nested=True,
                                      experiment_id=parent.info.experiment_id):
                    mlflow.set_tags({
                        "Image_id": str(image_id),
                        "GT_class": str(truth),
                        "Predicted_class": str(predicted),
                        "Train_run_id": train_run_id,
                        "Evaluation_run_id": evaluation_run_id,
                        "Saliency_parent_run_id": parent.info.run_id,
                    })
                    mlflow.log_params({k: options.as_param(v) for k, v in params.used_params().items()})
                    mlflow.log_metric("Predicted_class_conf", float(confidences.max()))
                    mlflow.log_dict(config, CONFIG_ARTIFACT)
                    maps = engine(image, classifier)
                    log_map(maps)
                    title = f"image {image_id}: true {truth}, predicted {predicted}"
                    log_pictures(image, maps, data.class_names, title, picture_mode)
        click.echo(f"Saliency run {parent.info.run_id}: {len(image_ids)} maps")


if __name__ == "__main__":
    options.run_cli(saliency)
