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

import functools
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import click
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import names, options, phases
from steps.core import plots
from steps.core.algorithm import algorithm_parameters, make_algorithm
from steps.core.data import TRAIN, DatasetError, Split, SplitChoice
from steps.core.model_input import flags_of
from steps.core.metrics import MapScores, average_maps, class_map, score_map
from steps.core.saliency import ImageClassifier, generator_config
from steps.tracking import lifecycle, runs
from steps.tracking.cluster import (MAP_PARTITION_SIZE, ClusterSpec, check_reachable_store,
                                    dask_client, run_partitions)
from steps.tracking.lifecycle import keep_finished
from steps.tracking.console import Progress, quiet_run_links
from steps.tracking.inputs import ModelInputs, absolute_dataset, load_model_inputs, split_data
from steps.tracking.datasets import log_dataset
from steps.tracking.models import convention_tags

# Stored with each map: the model's float32 confidences round by batch shape, so regenerating
# the very same map takes the same batches.
BATCH_PARAM = "predict_batch_size"
#: Images in the step run's `summary.png`, one row each.
SUMMARY_MAX_IMAGES = 30
# The panel of a map that is not any one class's (SquaredDifferenceScoring's).
WHOLE_PREDICTION = "prediction"


class MapsDiffer(click.ClickException):
    exit_code = 3
    #: The new map run is the finding (FAILED, kept to look at), not an unfinished result.
    keeps_results = True


def check_evaluation_runs(image_ids, evaluation_run_ids) -> list[dict[str, str]]:
    """Each evaluation run must be an Evaluation sample run of the same image, in order.

    Returns, per image, the lineage tags naming the evaluation sample and its evaluation.
    """
    if not evaluation_run_ids:
        return [{names.EVALUATION_RUN_TAG: ""} for _ in image_ids]
    hint = "'--evaluation_run_ids'"
    if len(evaluation_run_ids) != len(image_ids):
        raise click.BadParameter(
            f"{len(evaluation_run_ids)} run IDs given for {len(image_ids)} image IDs; "
            "give one evaluation run ID per image ID, in the same order",
            param_hint=hint,
        )
    lineage = []
    for image_id, run_id in zip(image_ids, evaluation_run_ids):
        run = runs.require_run(run_id, names.EVALUATION_EXPERIMENT, "evaluation_run_ids")
        evaluated = run.data.tags.get(names.IMAGE_ID_TAG)
        if evaluated != str(image_id):
            raise click.BadParameter(f"run {run_id} evaluated image {evaluated}, not image "
                                     f"{image_id}", param_hint=hint)
        lineage.append({
            names.EVALUATION_RUN_TAG: run_id,
            names.EVALUATION_PARENT_TAG: run.data.tags.get(names.EVALUATION_PARENT_TAG, ""),
        })
    return lineage


def require_map_run(run_id: str, param: str) -> Run:
    """A FINISHED per-image run of the Saliency experiment (one that holds a map and config)."""
    run = runs.require_run(run_id, names.SALIENCY_EXPERIMENT, param)
    if names.IMAGE_ID_TAG not in run.data.tags:
        raise click.BadParameter(
            f"run {run_id} is a saliency step run, not one image's map; give one of its image "
            f"runs (filter: tags.{names.SALIENCY_PARENT_TAG} = '{run_id}')",
            param_hint=f"'--{param}'")
    return run


def stored_config(run: Run) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{names.CONFIG_ARTIFACT}")


def stored_map(run: Run) -> np.ndarray:
    return np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                       artifact_path=names.MAP_ARTIFACT))


def original_image_id(run: Run) -> str:
    """The image of the run's own (root) map: its `Image_id`, or, for a run amended by an older
    version (whose `Image_id` then named the newest added image), the first of its history."""
    tags = run.data.tags
    return tags.get(names.HISTORY_TAG, tags[names.IMAGE_ID_TAG]).split(",")[0]


def write_pictures(folder: Path, image, maps, class_names, title: str, answer: plots.Answer,
                   pictures: plots.PictureStyle, prefix: str = "",
                   meaning: plots.MapMeaning | None = None, fill_colours=()) -> None:
    """Pictures of `[classes, H, W]` maps as PNG files in `folder`, their names starting with
    `prefix`; of `[colours, classes, H, W]` ones (MC-RISE, filled with `fill_colours`), the
    pictures of each fill colour's maps in `folder/<prefix>fill_colour_<i>/`; of one `[H, W]`
    map for the whole prediction (SquaredDifferenceScoring), one panel `prediction`.
    `meaning`: what the values are, when not xaitk's scaled maps (`plots.meaning_of`)."""
    meaning = meaning or plots.meaning_of(maps)
    if maps.ndim == 2:
        plots.write_pictures(folder, image, maps[np.newaxis], (WHOLE_PREDICTION,), title,
                             plots.Answer(), pictures, meaning, class_file, prefix)
    elif maps.ndim == 4:
        for colour, colour_maps in enumerate(maps):
            named = (plots.fill_colour_name(fill_colours[colour])
                     if colour < len(fill_colours) else f"colour {colour}")
            plots.write_pictures(folder / f"{prefix}fill_colour_{colour}", image, colour_maps,
                                 class_names, f"{title}, fill {named}", answer,
                                 pictures, meaning, class_file)
    else:
        plots.write_pictures(folder, image, maps, class_names, title, answer, pictures,
                             meaning, class_file, prefix)


def raw_meaning(weighting) -> plots.MapMeaning:
    """What a raw map's values are (`RegionWeighting.in_confidence_units`)."""
    if weighting.squared:
        return plots.OCCLUDING_IN_CONFIDENCE
    if weighting.normalize or weighting.offset:
        return plots.SHOWING_IN_CONFIDENCE
    return plots.SHOWN_IN_CONFIDENCE


def fill_colours_of(config: dict) -> list:
    """The fill colours of an MC-RISE configuration (`[[0.0], [1.0]]`), else none."""
    generator = config["generator"]
    return generator.get(generator.get("type"), {}).get("fill_colors", [])


def class_file(name: str) -> str:
    return f"class_{names.metric_safe(name)}.png"


def log_pictures(image, maps, class_names, title: str, answer: plots.Answer,
                 pictures: plots.PictureStyle, folder: str, **how) -> None:
    """`write_pictures` under `folder` of the active run (a folder ending in `/`, or one and a
    file-name prefix after its last `/`), logged by one `mlflow.log_artifacts` call; `how`:
    its `meaning` and `fill_colours`."""
    directory, _, prefix = folder.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        with phases.phase(names.PICTURES_PHASE):
            write_pictures(Path(tmp), image, maps, class_names, title, answer, pictures, prefix,
                           **how)
        mlflow.log_artifacts(tmp, directory or None)


def log_map(maps: np.ndarray, prefix: str, file_name: str = names.MAP_ARTIFACT) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, file_name)
        np.save(path, maps)
        mlflow.log_artifact(str(path), artifact_path=prefix.rstrip("/") or None)


@dataclass(frozen=True)
class ImageFacts:
    """One image and what the model makes of it, from one prediction: its identity tags, the
    confidence of the predicted class, and the output columns of the predicted and true class
    (None when the model has no column for the true class); `confidences`, the model's
    confidence of each of its output columns (the prediction's row)."""

    image_id: str
    image: np.ndarray
    tags: dict[str, str]
    confidence: float
    predicted_column: int
    true_column: int | None
    confidences: np.ndarray | None = None

    def answer(self) -> plots.Answer:
        """What the pictures title, order and mark the class panels by."""
        return plots.Answer(self.confidences, self.predicted_column, self.true_column)

    def run_name(self) -> str:
        truth, predicted = (self.tags[names.GT_CLASS_TAG], self.tags[names.PREDICTED_CLASS_TAG])
        return names.image_run_name(self.image_id, predicted, truth == predicted)


@dataclass
class Explainer:
    """Everything that makes one image's map: data, model, engine; and how to log it."""

    inputs: ModelInputs
    classifier: ImageClassifier
    #: The generator's configuration (`generator_config.json`), which makes `engine`.
    config: dict
    pictures: plots.PictureStyle
    data_params: dict[str, str]
    #: What the console calls the algorithm, e.g. `rise(s=8)`.
    label: str = ""
    #: The dataset's split as `data_params` say: which images the model was trained on.
    split: Split | None = None
    #: `facts` by image ID, once predicted.
    known_facts: dict[str, ImageFacts] = field(default_factory=dict)
    #: The maps before xaitk's scaling (`RAW_MAP_ARTIFACT`) by image ID, once made.
    known_raw: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(cls, model_uri: str | None, dataset: str, image_size, config: dict,
              pictures: plots.PictureStyle, predict_batch_size: int, image_ids=(), *,
              split: SplitChoice, input_flags: dict | None = None) -> Explainer:
        """`split`: how the dataset is split, which tells training from test images.
        The model's input convention is the one `config` holds (a stored map's), else
        resolved from `input_flags`; either way `config` then holds it."""
        dataset = absolute_dataset(dataset)
        inputs = load_model_inputs(model_uri, dataset, image_size, input_flags=input_flags,
                                   stored_convention=config.get(names.MODEL_INPUT_CONFIG_KEY))
        config = {**config, names.MODEL_INPUT_CONFIG_KEY: inputs.model.convention.as_dict()}
        if not image_ids:
            raise click.BadParameter("give at least one image ID", param_hint="'--image_ids'")
        try:
            inputs.dataset.rows(image_ids)
        except DatasetError as error:
            raise click.BadParameter(str(error), param_hint="'--image_ids'") from None
        made = split_data(inputs.dataset, split, quiet=lifecycle.under_driver())
        classifier = ImageClassifier(inputs.model, batch_size=predict_batch_size,
                                     classes=len(inputs.classes.names))
        return cls(inputs, classifier, config, pictures,
                   options.values_of(options.DATA + options.SPLIT, {
                       "dataset": dataset, "image_size": image_size,
                       "test_fraction": split.test_fraction, "split_seed": split.seed,
                       "eval_split": split.eval_split}),
                   split=made)

    @functools.cached_property
    def engine(self):
        """FastSaliency, or xaitk's generator where it does not apply; made when the first map
        is (xaitk's implementations are slow to import, and compare never needs them; figures:
        benchmarks/README.md, "Start-up and overhead")."""
        from steps.core.fast_saliency import engine_from_config

        return engine_from_config(self.config)

    def split_of(self, image_id: str) -> str:
        """The part of the dataset's split the image is in: train, test, val or all."""
        data = self.inputs.dataset
        return self.split.name_of(int(data.rows([image_id])[0]), data)

    def training_images(self, image_ids) -> list[str]:
        return [i for i in image_ids if self.split_of(i) == TRAIN]

    def split_description(self) -> str:
        """`test_fraction 0.25, split_seed 0`, or `its own train/ split`."""
        if self.inputs.dataset.predefined:
            return f"{self.inputs.dataset.name}'s own train/ split"
        return ", ".join(f"{d.name} {self.data_params[d.name]}" for d in options.SPLIT[:2])

    def warn_about_training_images(self, image_ids) -> None:
        """One `Warning:` line naming the images of the training split, if any."""
        seen = self.training_images(image_ids)
        if seen:
            one = len(seen) == 1
            click.echo(f"Warning: image{'' if one else 's'} {', '.join(seen)} "
                       f"{'is' if one else 'are'} in the training split "
                       f"({self.split_description()}): the model has seen "
                       f"{'it' if one else 'them'}", err=True)

    def facts(self, image_id: str) -> ImageFacts:
        """The image of `image_id` and the model's answer on it, predicted alone (a float32
        model rounds by batch, and a map run's confidence must not depend on which images
        shared its batch); kept, so the step's pictures reuse it."""
        if image_id not in self.known_facts:
            data, column_classes = self.inputs.dataset, self.inputs.classes.column_classes
            row = data.rows([image_id])[0]
            confidences = np.asarray(
                self.inputs.model.predict_proba(data.images[row:row + 1]), dtype=float)[0]
            predicted_column = int(confidences.argmax())
            true = np.flatnonzero(column_classes == data.labels[row])
            self.known_facts[image_id] = ImageFacts(image_id, data.images[row], {
                names.IMAGE_ID_TAG: image_id,
                names.GT_CLASS_TAG: data.class_names[data.labels[row]],
                names.PREDICTED_CLASS_TAG: data.class_names[column_classes[predicted_column]],
            }, float(confidences.max()), predicted_column,
                int(true[0]) if len(true) else None, confidences)
        return self.known_facts[image_id]

    def facts_of(self, image_ids) -> list[ImageFacts]:
        return [self.facts(image_id) for image_id in image_ids]

    def step_tags(self) -> dict[str, str]:
        """What every run of this step records about its model and data."""
        data = self.inputs.data
        return {**self.inputs.resolved.lineage_tags(),
                **convention_tags(self.inputs.model.convention),
                names.DATASET_TAG: data.dataset.name, names.DATASET_DIGEST_TAG: data.digest}

    def log_dataset(self) -> None:
        """The dataset as an input of the active run, with its split."""
        data = self.inputs.data
        log_dataset(data.source, data.dataset, data.digest, names.SALIENCY_CONTEXT, self.split,
                    {k: v for k, v in self.data_params.items() if k != "dataset"})

    def maps_of(self, facts: list[ImageFacts]) -> list[np.ndarray]:
        """The images' maps, made together (the engine scores images of a shape in one pass);
        their raw maps kept for `explain`."""
        with phases.phase(names.COMPUTE_PHASE):
            made = self.engine.maps_and_raw([one.image for one in facts], self.classifier)
        for one, (_, raw) in zip(facts, made):
            if raw is not None:
                self.known_raw[one.image_id] = raw
        return [maps for maps, _ in made]

    def explain(self, facts: ImageFacts, prefix: str = "", maps: np.ndarray | None = None
                ) -> np.ndarray:
        """Log the image's map (made now unless given) with its pictures (under `prefix`) in
        the active run."""
        if maps is None:
            maps = self.maps_of([facts])[0]
        log_map(maps, prefix)
        raw = self.known_raw.pop(facts.image_id, None)
        if raw is not None:
            log_map(raw, prefix, names.RAW_MAP_ARTIFACT)
        title = (f"image {facts.image_id}: true {facts.tags[names.GT_CLASS_TAG]}, "
                 f"predicted {facts.tags[names.PREDICTED_CLASS_TAG]}")
        # Pictured in confidence units where the raw map exists: a class the model ignores
        # fades beside the one it predicts (xaitk scales each to ±1).
        log_pictures(facts.image, maps if raw is None else raw, self.inputs.classes.names,
                     title, facts.answer(), self.pictures, f"{prefix}{names.PICTURES_DIR}/",
                     meaning=None if raw is None else raw_meaning(self.engine.weighting),
                     fill_colours=fill_colours_of(self.config))
        return maps

    def log_averages(self, made: list[tuple[ImageFacts, np.ndarray]]) -> None:
        """Mean maps by true class and by confusion cell (true → predicted) of two maps or more,
        as `.npy` and pictures over the mean image, under `averages/` of the active (step) run: the classes
        in the model's order (a mean has no one confidence), the group's true class and, of a
        confusion cell, its predicted class marked."""
        groups = average_maps([maps for _, maps in made], [facts.image for facts, _ in made],
                              [facts.tags[names.GT_CLASS_TAG] for facts, _ in made],
                              [facts.tags[names.PREDICTED_CLASS_TAG] for facts, _ in made])
        for (true, predicted), (mean_maps, mean_image, count) in groups.items():
            name = f"true_{names.metric_safe(true)}" + (
                f"_predicted_{names.metric_safe(predicted)}" if predicted is not None else "")
            what = f"true {true}" + (f", predicted {predicted}" if predicted is not None else "")
            log_map(mean_maps, f"{names.AVERAGES_DIR}/", f"{name}.npy")
            column = {n: k for k, n in enumerate(self.inputs.classes.names)}.get
            log_pictures(mean_image, mean_maps, self.inputs.classes.names,
                         f"mean of {count} maps: {what}",
                         plots.Answer(None, column(predicted), column(true)),
                         replace(self.pictures, mode="combined", top_classes=0),
                         f"{names.AVERAGES_DIR}/{name}_")

    def log_summary(self, made: list[tuple[ImageFacts, np.ndarray]]) -> None:
        """One picture of the step's maps (`summary.png` of the active, step run): a row per
        image (the first `SUMMARY_MAX_IMAGES`), its map of the predicted class and, where the
        model was wrong, of the true class, all on one scale."""
        class_names, rows = self.inputs.classes.names, []
        for facts, maps in made[:SUMMARY_MAX_IMAGES]:
            def label(kind: str, column: int) -> str:
                return (f"{kind} {class_names[column]}  "
                        f"{plots.confidence_text(facts.confidences[column])}")
            if maps.ndim == 2:
                row = {WHOLE_PREDICTION: maps}
            else:
                row = {label("predicted", facts.predicted_column):
                       class_map(maps, facts.predicted_column)}
                if facts.true_column not in (None, facts.predicted_column):
                    row[label("true", facts.true_column)] = class_map(maps, facts.true_column)
            rows.append((facts.image, f"{facts.image_id}: true {facts.tags[names.GT_CLASS_TAG]}",
                         row))
        shown = (f"the first {len(rows)} of {len(made)}" if len(rows) < len(made)
                 else f"{len(made)}")
        fig = plots.rows_figure(rows, f"{shown} maps by {self.label or 'the algorithm'}: the "
                                      "predicted class, and the true class where it differs",
                                plots.meaning_of(made[0][1]))
        mlflow.log_figure(fig, names.SUMMARY_PICTURE)
        plots.plt.close(fig)

    def map_run(self, facts: ImageFacts, parent: Run, params: dict, config: dict,
                extra_tags: dict[str, str], maps: np.ndarray | None = None
                ) -> tuple[Run, np.ndarray, MapScores]:
        """A per-image run nested under the step run `parent` (also on a Dask worker, where no
        run is active) with its tags, params, config, map (made now unless given), pictures
        and metrics."""
        image_id = facts.image_id
        with lifecycle.run_context(run_name=facts.run_name(),
                                   nested=mlflow.active_run() is not None,
                                   experiment_id=parent.info.experiment_id,
                                   tags={names.PARENT_RUN_TAG: parent.info.run_id}) as run:
            mlflow.set_tags({**facts.tags, **self.step_tags(),
                             names.SPLIT_TAG: self.split_of(image_id),
                             names.SALIENCY_PARENT_TAG: parent.info.run_id,
                             names.CODE_VERSION_TAG: parent.data.tags[names.CODE_VERSION_TAG],
                             **extra_tags})
            mlflow.log_params({**params, **self.data_params})
            mlflow.log_dict(config, names.CONFIG_ARTIFACT)
            maps = self.explain(facts, maps=maps)
            with phases.phase(names.COMPUTE_PHASE):
                scores = score_map(maps, facts.image, self.classifier.classify_array,
                                   facts.predicted_column, facts.true_column)
            log_scores(scores)
            mlflow.log_metrics({names.PREDICTED_CONF_METRIC: facts.confidence, **scores.metrics})
            runs.describe(map_verdict(scores))
            return run, maps, scores

    def warn_unless_beating_random(self, image_id: str, scores: MapScores) -> None:
        if not scores.beats_random():
            click.echo(f"Warning: the {self.label + ' ' if self.label else ''}map of image "
                       f"{image_id} does not beat a random map ({against_random(scores)})",
                       err=True)


@dataclass(frozen=True)
class MapRecipe:
    """What makes a step's map runs, sent to the Dask workers: each builds its own explainer
    from it."""

    model_uri: str
    dataset: str
    image_size: tuple | None
    split: SplitChoice
    config: dict
    pictures: plots.PictureStyle
    predict_batch_size: int
    #: The algorithm's parameters, logged on each map run.
    params: dict
    label: str

    def explainer(self, image_ids) -> Explainer:
        explainer = Explainer.build(self.model_uri, self.dataset, self.image_size, self.config,
                                    self.pictures, self.predict_batch_size, image_ids,
                                    split=self.split)
        explainer.label = self.label
        return explainer


@dataclass(frozen=True)
class MapMade:
    """One image's map run, made or found: its ID, map and metrics."""

    image_id: str
    run_id: str
    maps: np.ndarray
    scores: MapScores

    @classmethod
    def stored(cls, run: Run) -> MapMade:
        metrics = {k: v for k, v in run.data.metrics.items() if k != names.PREDICTED_CONF_METRIC}
        return cls(run.data.tags[names.IMAGE_ID_TAG], run.info.run_id, stored_map(run),
                   MapScores(metrics, {}))


def earlier_maps(client: MlflowClient, parent_id: str, experiment_id: str, restore: bool,
                 partition: int | None = None) -> dict[str, MapMade]:
    """The FINISHED map runs an earlier try of a step run (or of one of its partitions) made,
    by image ID; any other run of it is ended KILLED and soft-deleted (`keep_finished`)."""
    kept = keep_finished(client, experiment_id, parent_id, partition, restore)
    return {image_id: MapMade.stored(run) for image_id, run in kept.items()}


def explain_partition(index: int, items: list[tuple[str, dict]], *, tracking_uri: str,
                      parent_id: str, recipe: MapRecipe, stop_event: str | None = None
                      ) -> list[MapMade]:
    """On a Dask worker: the map runs of one partition of a step's images (`items`: image ID
    and lineage tags), under the step run `parent_id`, in the order of `items`. Safe to run
    again after a try that died part-way: only the images without a FINISHED run are
    explained."""
    from steps.tracking.cluster import stop_check, worker_name

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    made = earlier_maps(client, parent_id, parent.info.experiment_id, False, index)
    explainer = recipe.explainer([image_id for image_id, _ in items])
    extra = {names.PARTITION_TAG: str(index), names.WORKER_TAG: worker_name()}
    with quiet_run_links():
        for one in map_runs(explainer, recipe, parent,
                            [item for item in items if item[0] not in made], extra,
                            stop_check(stop_event)):
            made[one.image_id] = one
    if len(made) < len(items):
        return []  # stopped: the step is failing and discards it, a quiet end
    return [made[image_id] for image_id, _ in items]


def map_runs(explainer: Explainer, recipe: MapRecipe, parent: Run, todo: list[tuple[str, dict]],
             extra_tags: dict[str, str] | None = None, stopped=lambda: False
             ) -> Iterator[MapMade]:
    """The map runs of `todo` (image ID, lineage tags) under the step run `parent`, in order;
    the maps of `MAP_PARTITION_SIZE` images at a time made together (`Explainer.maps_of`).
    Ends early, before a run, once `stopped()`."""
    for first in range(0, len(todo), MAP_PARTITION_SIZE):
        group = todo[first:first + MAP_PARTITION_SIZE]
        facts = explainer.facts_of([image_id for image_id, _ in group])
        for one, maps, (_, lineage) in zip(facts, explainer.maps_of(facts), group):
            if stopped():
                return
            run, maps, scores = explainer.map_run(one, parent, recipe.params, recipe.config,
                                                  {**lineage, **(extra_tags or {})}, maps)
            yield MapMade(one.image_id, run.info.run_id, maps, scores)


def map_progress(total: int, label: str, done: int = 0) -> Progress:
    """Maps made so far, their rate and ETA, on stderr."""
    return Progress(total, label, unit="maps", done=done)


def make_maps(explainer: Explainer, recipe: MapRecipe, parent: Run, todo: list[tuple[str, dict]],
              cluster: ClusterSpec | None, bar: Progress) -> list[MapMade]:
    """The map runs of `todo` (image ID, lineage tags), made in this process or on the
    cluster's workers, in order."""
    if cluster is None:
        return [bar.advanced(one) for one in map_runs(explainer, recipe, parent, todo)]
    with tempfile.TemporaryDirectory() as scratch, dask_client(cluster, Path(scratch)) as client:
        parts = run_partitions(client, explain_partition, todo,
                               lambda done: bar.advanced(done, len(done)), MAP_PARTITION_SIZE,
                               tracking_uri=mlflow.get_tracking_uri(),
                               parent_id=parent.info.run_id, recipe=recipe)
    return [made for part in parts for made in part]


def generate(model_uri, dataset, image_size, split, image_ids, evaluation_run_ids, algorithm,
             pictures, predict_batch_size, cluster: ClusterSpec | None = None,
             parameters: dict[str, str] | None = None, resume: Run | None = None,
             input_flags: dict | None = None) -> None:
    """The normal mode: one new map run per image, in this process or on a Dask cluster.
    `parameters`: the step's own, recorded for a resume. `resume`: a stopped step run to
    finish, keeping the map runs it made."""
    if cluster is not None:
        check_reachable_store(cluster, mlflow.get_tracking_uri())
    config = generator_config(algorithm.generator())
    explainer = Explainer.build(model_uri, dataset, image_size, config, pictures,
                                predict_batch_size, image_ids, split=split,
                                input_flags=input_flags)
    config = explainer.config
    if resume is not None:
        runs.require_same_data(resume, explainer.inputs.data.digest)
    algorithm.check_image(explainer.inputs.dataset.image_shape)
    explainer.label = str(algorithm)
    lineage = check_evaluation_runs(image_ids, evaluation_run_ids)
    trained_on = explainer.training_images(image_ids)
    if evaluation_run_ids and trained_on:  # an evaluation's samples are its test images
        one = len(trained_on) == 1
        raise click.BadParameter(
            f"with {explainer.split_description()}, image{'' if one else 's'} "
            f"{', '.join(trained_on)} {'is' if one else 'are'} in the training split, but "
            f"{'its evaluation run' if one else 'their evaluation runs'} evaluated "
            f"{'it as a test image' if one else 'them as test images'}; give the evaluation's "
            "test_fraction, split_seed and eval_split", param_hint="'--split_seed'")
    explainer.warn_about_training_images(image_ids)
    recipe = MapRecipe(explainer.inputs.resolved.uri, explainer.data_params["dataset"],
                       image_size, split, config, pictures, predict_batch_size,
                       {**{k: options.as_param(v) for k, v in algorithm.used_params().items()},
                        BATCH_PARAM: str(predict_batch_size)}, explainer.label)
    with runs.step_run(names.SALIENCY_EXPERIMENT, "saliency", parameters, resume) as parent:
        mlflow.set_tags({**explainer.step_tags(), names.ALGORITHM_TAG: algorithm.name,
                         names.IMAGE_IDS_TAG: options.as_param(tuple(image_ids)),
                         names.RUN_NAME_TAG: names.saliency_run_name(explainer.label),
                         **({names.CLUSTER_TAG: str(cluster)} if cluster else {})})
        if resume is None:
            explainer.log_dataset()
        found = {}
        if resume is not None:
            found = earlier_maps(MlflowClient(), parent.info.run_id, parent.info.experiment_id,
                                 restore=True)
            click.echo(f"Resuming saliency run {parent.info.run_id}: {len(found)} of "
                       f"{len(image_ids)} maps already made, making the other "
                       f"{len(image_ids) - len(found)}", err=True)
        todo = [(i, tags) for i, tags in zip(image_ids, lineage) if i not in found]
        with quiet_run_links(), map_progress(len(image_ids), f"Saliency maps ({algorithm})",
                                             len(found)) as bar:
            found.update((m.image_id, m) for m in make_maps(explainer, recipe, parent, todo,
                                                            cluster, bar))
        made = [found[image_id] for image_id in image_ids]
        for one in made:
            explainer.warn_unless_beating_random(one.image_id, one.scores)
        scores = [one.scores for one in made]
        mlflow.log_metrics(aggregate_scores(scores))
        with phases.phase(names.PICTURES_PHASE):
            pairs = list(zip(explainer.facts_of(image_ids), (one.maps for one in made)))
            explainer.log_averages(pairs)
            explainer.log_summary(pairs)
        beating = sum(s.beats_random() for s in scores)
        mlflow.set_tag(names.RUN_NAME_TAG,
                       names.saliency_run_name(explainer.label, beating, len(scores)))
        runs.describe(f"Saliency maps of {len(image_ids)} images by `{algorithm}`: {beating} "
                      f"of them beat a random map. One run per image below.")
        click.echo(f"Saliency run {parent.info.run_id} ({algorithm}): {len(image_ids)} maps, "
                   f"{beating} beating a random map")


def against_random(scores: MapScores) -> str:
    """`deletion 0.110 vs 0.590, lower is better; insertion ...`."""
    m = scores.metrics
    return (f"deletion {m['Deletion_auc']:.3f} vs {m['Random_deletion_auc']:.3f}, lower is "
            f"better; insertion {m['Insertion_auc']:.3f} vs {m['Random_insertion_auc']:.3f}, "
            "higher is better")


def map_verdict(scores: MapScores) -> str:
    """A map run's description: whether the map beats a random map, in words."""
    verdict = ("**Beats a random map**" if scores.beats_random()
               else "**Does not beat a random map**")
    return (f"{verdict}: hiding its most salient pixels first lowers the predicted class's "
            f"confidence, and showing them first raises it, against a random map's order "
            f"({against_random(scores)}; areas under the curves in `metrics/`).")


def aggregate_scores(scores: list[MapScores]) -> dict[str, float]:
    """Mean and median of each metric over the maps, and the share that beats a random map."""
    aggregates = {names.BEATING_RANDOM_METRIC: float(np.mean([s.beats_random() for s in scores]))}
    for name in scores[0].metrics:
        values = [s.metrics[name] for s in scores if name in s.metrics]
        aggregates[f"{name}_mean"] = float(np.mean(values))
        aggregates[f"{name}_median"] = float(np.median(values))
    return aggregates


def log_scores(scores: MapScores) -> None:
    """The causal curves as an array file and a picture."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, names.CURVES_ARTIFACT)
        np.savez(path, **scores.curves)
        mlflow.log_artifact(str(path), artifact_path=names.METRICS_DIR)
    with phases.phase(names.PICTURES_PHASE):
        fig = plots.causal_curves_figure(scores.curves, scores.metrics)
        mlflow.log_figure(fig, f"{names.METRICS_DIR}/{names.CURVES_PICTURE}")
        plots.plt.close(fig)


def stored_split(run: Run) -> SplitChoice:
    """The split of a stored map run: its own parameters; for a run made before it recorded
    them, its evaluation's, else the defaults."""
    params = run.data.params
    if not all(d.name in params for d in options.SPLIT):
        evaluation = run.data.tags.get(names.EVALUATION_PARENT_TAG)
        try:
            params = MlflowClient().get_run(evaluation).data.params if evaluation else {}
        except MlflowException:  # the evaluation was purged
            params = {}
    return options.split_choice({d.name: params.get(d.name, d.default) for d in options.SPLIT})


def stored_explainer(run: Run, pictures: plots.PictureStyle, predict_batch_size: int, image_ids,
                     param: str) -> Explainer:
    """The explainer of a stored map run: its model, data, split, configuration and batch
    size."""
    tags, params = run.data.tags, run.data.params
    if names.MODEL_URI_TAG not in tags:
        raise click.BadParameter(f"run {run.info.run_id} records no model URI; it was made by "
                                 "an older version of this project", param_hint=f"'--{param}'")
    explainer = Explainer.build(
        tags[names.MODEL_URI_TAG], params.get("dataset", "digits"),
        options.IntList(minimum=1, length=2, allow_empty=True).convert(
            params.get("image_size", ""), None, None),
        stored_config(run), pictures, int(params.get(BATCH_PARAM, predict_batch_size)),
        image_ids, split=stored_split(run))
    runs.require_same_data(run, explainer.inputs.data.digest, param)
    return explainer


def reproduce(source_id: str, pictures: plots.PictureStyle, predict_batch_size: int) -> None:
    """Regenerate a stored map from its stored configuration and compare with it."""
    source = require_map_run(source_id, "reproduce_run_id")
    image_id = original_image_id(source)
    explainer = stored_explainer(source, pictures, predict_batch_size, (image_id,),
                                 "reproduce_run_id")
    explainer.warn_about_training_images((image_id,))
    expected = stored_map(source)
    tags = source.data.tags
    lineage = {k: tags[k] for k in (names.EVALUATION_RUN_TAG, names.EVALUATION_PARENT_TAG)
               if k in tags}
    algorithm_params = {k: v for k, v in source.data.params.items()
                        if k not in explainer.data_params}
    with runs.step_run(names.SALIENCY_EXPERIMENT, "saliency-reproduce") as parent:
        mlflow.set_tags({names.REPRODUCED_TAG: source_id, **explainer.step_tags()})
        run, maps, scores = explainer.map_run(explainer.facts(image_id), parent,
                                              algorithm_params, explainer.config,
                                              {**lineage, names.REPRODUCED_TAG: source_id})
        explainer.warn_unless_beating_random(image_id, scores)
        difference = (float(np.max(np.abs(maps - expected))) if maps.shape == expected.shape
                      else float("inf"))
        client = MlflowClient()
        client.log_metric(run.info.run_id, names.MAX_DIFFERENCE_METRIC, difference)
        mlflow.log_metric(names.MAX_DIFFERENCE_METRIC, difference)
        if difference != 0:
            client.set_terminated(run.info.run_id, "FAILED")
            raise MapsDiffer(f"the regenerated map of image {image_id} differs from the map "
                             f"stored in run {source_id}: largest absolute difference "
                             f"{difference:.3g} (new run {run.info.run_id})")
        click.echo(f"Reproduced run {source_id} as run {run.info.run_id}: identical map "
                   f"(largest absolute difference 0)")


def update_record(k: int, facts: ImageFacts, split: str
                  ) -> tuple[dict[str, str], dict[str, float]]:
    """The tags and metric that describe the `k`-th image added to a map run:
    `Update_<k>_image_id`, `..._GT_class`, `..._Predicted_class`, `..._Split` and
    `Update_<k>_Predicted_class_conf`."""
    tags = {names.update_tag(k, names.UPDATE_IMAGE_ID): facts.image_id,
            names.update_tag(k, names.SPLIT_TAG): split}
    for name in (names.GT_CLASS_TAG, names.PREDICTED_CLASS_TAG):
        tags[names.update_tag(k, name)] = facts.tags[name]
    return tags, {names.update_tag(k, names.PREDICTED_CONF_METRIC): facts.confidence}


def settled_identity(explainer: Explainer, tags: dict[str, str], own: str, added: list[str]
                     ) -> tuple[dict[str, str], dict[str, float]]:
    """What a run made by an older version lacks to read as this version's do: its identity
    tags back on its own image (older updates set them to the newest added image), its `Split`,
    and the `Update_<k>_...` records and `Added_image_ids` of images added before."""
    fixed, metrics = {}, {}
    if tags[names.IMAGE_ID_TAG] != own:
        facts = explainer.facts(own)
        fixed.update({k: facts.tags[k] for k in (names.IMAGE_ID_TAG, names.GT_CLASS_TAG,
                                                 names.PREDICTED_CLASS_TAG)})
    if names.SPLIT_TAG not in tags:
        fixed[names.SPLIT_TAG] = explainer.split_of(own)
    for k, image_id in enumerate(added, 1):
        if names.update_tag(k, names.UPDATE_IMAGE_ID) not in tags:
            record, metric = update_record(k, explainer.facts(image_id),
                                           explainer.split_of(image_id))
            fixed.update(record)
            metrics.update(metric)
    if added and names.ADDED_IMAGES_TAG not in tags:
        fixed[names.ADDED_IMAGES_TAG] = ",".join(added)
    return fixed, metrics


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
    explainer = stored_explainer(target, pictures, predict_batch_size, image_ids,
                                 "update_run_id")
    tags = target.data.tags
    own = original_image_id(target)
    added = [i for i in tags.get(names.ADDED_IMAGES_TAG, "").split(",") if i]
    if not added and names.HISTORY_TAG in tags:  # amended by an older version
        added = tags[names.HISTORY_TAG].split(",")[1:]
    count = int(tags.get(names.UPDATES_TAG, "0"))
    explainer.warn_about_training_images(image_ids)
    with runs.step_run(names.SALIENCY_EXPERIMENT, "saliency-update") as parent:
        mlflow.set_tags({names.UPDATED_RUN_TAG: target_id,
                         names.IMAGE_IDS_TAG: options.as_param(tuple(image_ids))})
        with mlflow.start_run(run_id=target_id, nested=True):
            fixed, metrics = settled_identity(explainer, tags, own, added)
            if fixed:
                mlflow.set_tags(fixed)
            if metrics:
                mlflow.log_metrics(metrics)
            with map_progress(len(image_ids), f"Adding maps to run {target_id}") as bar:
                for image_id in image_ids:
                    count += 1
                    facts = explainer.facts(image_id)
                    explainer.explain(facts, names.update_prefix(count, image_id))
                    added.append(image_id)
                    record, metric = update_record(count, facts, explainer.split_of(image_id))
                    mlflow.set_tags({**record, names.ADDED_IMAGES_TAG: ",".join(added),
                                     names.UPDATES_TAG: str(count), names.MODIFIED_TAG: "true",
                                     names.MODIFIED_BY_TAG: parent.info.run_id})
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
        resume = runs.require_resumable(resume_run_id, names.SALIENCY_EXPERIMENT)
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
             resume, flags_of(values))


if __name__ == "__main__":
    # The command of the module imported by name, not of `__main__`: what Dask sends to its
    # workers (explain_partition, MapRecipe) is then pickled by reference to `steps.saliency`.
    from steps.saliency import saliency as command

    options.run_cli(command)
