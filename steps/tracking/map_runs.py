"""Map runs: one "Saliency Map Generation" run per image, with its map, pictures and config.

Each is nested under its step run and holds the algorithm's parameters, the xaitk/smqtk
configuration that rebuilds the same generator (`generator_config.json`), the map
(`saliency_map.npy`, `[classes, H, W]` in [-1, 1]), the map before xaitk's scaling
(`saliency_map_raw.npy`, in the model's confidence units) and pictures of it over the image,
and the map's metrics. They are made in this process or by a Dask cluster's workers, in
partitions a retry makes whole without doubling. What is computed comes from
`steps/core/explain.py`; this module only logs it.
"""

from __future__ import annotations

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

from steps import phases, store_names
from steps.core import plots
from steps.core.image_dataset import DATA_PARAMETERS, SPLIT_PARAMETERS, DataError, SplitChoice
from steps.core.parameters import values_of
from steps.core.ranking import SANITY_FAILURE_SHARE
from steps.core.sanity import SPEARMAN_SIGNED, sanity_config
from steps.core.serving import WHOLE_PREDICTION  # the panel of a whole-prediction map
from steps.core.explain import (ExplainedImage, ImageExplainer, PredictedImage,
                                fill_colours_of, resolve_metric_settings)
from steps.core.metrics import (BEATS_RANDOM_PERCENTILE, Deletion, Insertion, MapScores,
                                MetricSettings, average_maps, class_map, percentile_name,
                                random_name)
from steps.tracking import lifecycle, runs
from steps.tracking.cluster import (MAP_PARTITION_SIZE, ClusterSpec, TrackingSettings,
                                    dask_client, run_partitions)
from steps.tracking.console import Progress, quiet_run_links
from steps.tracking.dataset_logging import log_dataset
from steps.tracking.inputs import (ModelInputs, absolute_dataset, load_model_inputs,
                                   split_data, worker_model_inputs)
from steps.tracking.lifecycle import settle_earlier_runs
from steps.tracking.model_loading import convention_tags

# Stored with each map: the model's float32 confidences round by batch shape, so regenerating
# the very same map takes the same batches.
BATCH_PARAM = "predict_batch_size"
#: Images in the step run's `summary.png`, one row each.
SUMMARY_MAX_IMAGES = 30


def identity_tags(predicted: PredictedImage) -> dict[str, str]:
    """`Image_id`, `GT_class` and `Predicted_class`: how a user finds an image's runs."""
    return {store_names.IMAGE_ID_TAG: predicted.image_id, store_names.GT_CLASS_TAG: predicted.true_class,
            store_names.PREDICTED_CLASS_TAG: predicted.predicted_class}


def class_file(name: str) -> str:
    return f"class_{store_names.metric_safe(name)}.png"


def write_pictures(folder: Path, image, maps, class_names, title: str, marks: plots.Answer,
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
                                 class_names, f"{title}, fill {named}", marks,
                                 pictures, meaning, class_file)
    else:
        plots.write_pictures(folder, image, maps, class_names, title, marks, pictures,
                             meaning, class_file, prefix)


def log_pictures(image, maps, class_names, title: str, marks: plots.Answer,
                 pictures: plots.PictureStyle, folder: str, **how) -> None:
    """`write_pictures` under `folder` of the active run (a folder ending in `/`, or one and a
    file-name prefix after its last `/`), logged by one `mlflow.log_artifacts` call; `how`:
    its `meaning` and `fill_colours`."""
    directory, _, prefix = folder.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        with phases.phase(store_names.PICTURES_PHASE):
            write_pictures(Path(tmp), image, maps, class_names, title, marks, pictures, prefix,
                           **how)
        mlflow.log_artifacts(tmp, directory or None)


def log_map(maps: np.ndarray, prefix: str, file_name: str = store_names.MAP_ARTIFACT) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, file_name)
        np.save(path, maps)
        mlflow.log_artifact(str(path), artifact_path=prefix.rstrip("/") or None)


def log_scores(scores: MapScores) -> None:
    """The causal curves as an array file and a picture."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, store_names.CURVES_ARTIFACT)
        np.savez(path, **scores.curves)
        mlflow.log_artifact(str(path), artifact_path=store_names.METRICS_DIR)
    with phases.phase(store_names.PICTURES_PHASE):
        fig = plots.causal_curves_figure(scores.curves, scores.metrics)
        mlflow.log_figure(fig, f"{store_names.METRICS_DIR}/{store_names.CURVES_PICTURE}")
        plots.plt.close(fig)


def against_random(scores: MapScores) -> str:
    """`deletion 0.110, better than 100% of the random maps (mean 0.590), lower is better;
    insertion ...`."""
    m = scores.metrics

    def one(metric, better: str) -> str:
        name = metric.name
        return (f"{name.split('_')[0].lower()} {m[name]:.3f}, better than "
                f"{m[percentile_name(name)]:.0f}% of the random maps (mean "
                f"{m[random_name(name)]:.3f}), {better} is better")

    return f"{one(Deletion, 'lower')}; {one(Insertion, 'higher')}"


def barely_depends(scores: MapScores) -> str:
    """`it stays the same when the model's weights are randomised (Spearman 0.93)`."""
    return ("it stays the same when the model's weights are randomised (signed Spearman "
            f"{scores.metrics[SPEARMAN_SIGNED]:.2f})")


def map_verdict(scores: MapScores) -> str:
    """A map run's description: whether the map beats random maps, and whether it passed the
    sanity check, in words."""
    verdict = ("**Beats random maps**" if scores.beats_random()
               else "**Does not beat random maps**")
    sanity = ("" if scores.fails_sanity is None else
              f" **This map barely depends on the model**: {barely_depends(scores)}."
              if scores.fails_sanity else
              " It passed the sanity check: it changes when the model's weights are "
              f"randomised (signed Spearman {scores.metrics[SPEARMAN_SIGNED]:.2f}).")
    return (f"{verdict} (better than {BEATS_RANDOM_PERCENTILE:.0f}% of them on both): hiding "
            f"its most salient pixels first lowers the predicted class's confidence, and "
            f"showing them first raises it, against random maps' orders "
            f"({against_random(scores)}; areas under the curves in `metrics/`).{sanity}")


def aggregate_scores(scores: list[MapScores]) -> dict[str, float]:
    """Mean and median of each metric over the maps, and the share that beats a random map."""
    aggregates = {store_names.BEATING_RANDOM_METRIC: float(np.mean([s.beats_random() for s in scores]))}
    checked = [s.fails_sanity for s in scores if s.fails_sanity is not None]
    if checked:
        aggregates[store_names.FAILING_SANITY_METRIC] = float(np.mean(checked))
    for name in scores[0].metrics:
        values = [s.metrics[name] for s in scores if name in s.metrics]
        aggregates[f"{name}_mean"] = float(np.mean(values))
        aggregates[f"{name}_median"] = float(np.median(values))
    return aggregates


def sanity_summary(scores: list[MapScores], unavailable: str | None) -> tuple[str, str, str]:
    """The step run's `Sanity_check` tag (`passed` when at most half its maps fail, `failed`,
    `unavailable`), a sentence for its description and a clause for the console line; empty
    words when the check was not asked for."""
    if unavailable:
        return (store_names.SANITY_UNAVAILABLE, f" No sanity check: {unavailable}.",
                ", no sanity check")
    checked = [s.fails_sanity for s in scores if s.fails_sanity is not None]
    if not checked:
        return "", "", ""
    failing = sum(checked)
    verdict = (store_names.SANITY_FAILED if failing > len(checked) * SANITY_FAILURE_SHARE
               else store_names.SANITY_PASSED)
    return (verdict, f" Sanity check {verdict}: {failing} of {len(checked)} maps barely "
                     "depend on the model (they stay the same when its weights are "
                     "randomised).", f", {failing} failing the sanity check")



@dataclass
class MapRunWriter:
    """An `ImageExplainer` and what its runs record: the model's lineage, the data's source and
    digest, the data parameters, how pictures are drawn."""

    explainer: ImageExplainer
    inputs: ModelInputs
    pictures: plots.PictureStyle
    data_params: dict[str, str]
    #: What the console calls the algorithm, e.g. `rise(s=8)`.
    label: str = ""
    #: Raw maps made and not yet logged, by image ID.
    pending_raw: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(cls, model_uri: str | None, dataset: str, image_size, config: dict,
              pictures: plots.PictureStyle, predict_batch_size: int, image_ids=(), *,
              split: SplitChoice, input_flags: dict | None = None,
              metric_settings: MetricSettings | None = None,
              inputs: ModelInputs | None = None) -> MapRunWriter:
        """`split`: how the dataset is split, which tells training from test images.
        The model's input convention and the metrics' settings are those `config` holds (a
        stored map's), else resolved from `input_flags` and `metric_settings`; either way the
        explainer's config then holds them. `inputs`: the model and data, already loaded."""
        dataset = absolute_dataset(dataset)
        inputs = inputs or load_model_inputs(
            model_uri, dataset, image_size, input_flags=input_flags,
            stored_convention=config.get(store_names.MODEL_INPUT_CONFIG_KEY))
        config = {**config, store_names.MODEL_INPUT_CONFIG_KEY: inputs.model.convention.as_dict()}
        if not image_ids:
            raise click.BadParameter("give at least one image ID", param_hint="'--image_ids'")
        try:
            inputs.dataset.rows(image_ids)
        except DataError as error:
            raise click.BadParameter(str(error), param_hint="'--image_ids'") from None
        made = split_data(inputs.dataset, split, quiet=lifecycle.under_driver())
        stored = config.get(store_names.METRICS_CONFIG_KEY)
        settings = resolve_metric_settings(
            MetricSettings.from_dict(stored) if stored else metric_settings or MetricSettings(),
            inputs.dataset, made, inputs.model, config)
        config = {**config, store_names.METRICS_CONFIG_KEY: {
            **settings.as_dict(), **({"sanity": sanity_config()} if settings.sanity_check else {})}}
        explainer = ImageExplainer(inputs.dataset, inputs.model, inputs.classes, config, made,
                                   predict_batch_size, settings)
        return cls(explainer, inputs, pictures,
                   values_of(DATA_PARAMETERS + SPLIT_PARAMETERS, {
                       "dataset": dataset, "image_size": image_size,
                       "test_fraction": split.test_fraction, "split_seed": split.seed,
                       "eval_split": split.eval_split}))

    @property
    def config(self) -> dict:
        return self.explainer.config

    def split_description(self) -> str:
        """`test_fraction 0.25, split_seed 0`, or `its own train/ split`."""
        if self.inputs.dataset.predefined:
            return f"{self.inputs.dataset.name}'s own train/ split"
        return ", ".join(f"{d.name} {self.data_params[d.name]}" for d in SPLIT_PARAMETERS[:2])

    def log_step_results(self, made: list[MapMade], run_id: str,
                         sanity_unavailable: str | None) -> None:
        """What the step run `run_id` (active) says of its maps: a warning per untrusted map,
        the scores' aggregates, the mean maps and summary, a name and a description with how
        many beat random maps and the sanity check's verdict, and one console line."""
        for one in made:
            self.warn_about_scores(one.image_id, one.scores)
        scores = [one.scores for one in made]
        mlflow.log_metrics(aggregate_scores(scores))
        with phases.phase(store_names.PICTURES_PHASE):
            self.log_averages(made)
            self.log_summary(made)
        beating = sum(s.beats_random() for s in scores)
        mlflow.set_tag(store_names.RUN_NAME_TAG,
                       store_names.saliency_run_name(self.label, beating, len(scores)))
        settings = self.explainer.metric_settings
        sanity = sanity_summary(scores, sanity_unavailable)
        if settings.sanity_check:
            mlflow.set_tag(store_names.SANITY_TAG, sanity[0])
        runs.describe(f"Saliency maps of {len(made)} images by `{self.label}`: {beating} "
                      f"of them beat random maps (better than {BEATS_RANDOM_PERCENTILE:.0f}% "
                      f"of {settings.random_maps} random maps each on deletion and "
                      f"insertion).{sanity[1]} One run per image below.")
        click.echo(f"Saliency run {run_id} ({self.label}): {len(made)} maps, "
                   f"{beating} beating random maps{sanity[2]}")

    def refuse_training_images(self, image_ids) -> None:
        """Refuse images of the training split given as an evaluation's samples: the
        evaluation's split differs from this one."""
        trained_on = self.explainer.training_images(image_ids)
        if trained_on:
            one = len(trained_on) == 1
            raise click.BadParameter(
                f"with {self.split_description()}, image{'' if one else 's'} "
                f"{', '.join(trained_on)} {'is' if one else 'are'} in the training split, but "
                f"{'its evaluation run' if one else 'their evaluation runs'} evaluated "
                f"{'it as a test image' if one else 'them as test images'}; give the "
                "evaluation's test_fraction, split_seed and eval_split",
                param_hint="'--split_seed'")

    def warn_about_training_images(self, image_ids) -> None:
        """One `Warning:` line naming the images of the training split, if any."""
        seen = self.explainer.training_images(image_ids)
        if seen:
            one = len(seen) == 1
            click.echo(f"Warning: image{'' if one else 's'} {', '.join(seen)} "
                       f"{'is' if one else 'are'} in the training split "
                       f"({self.split_description()}): the model has seen "
                       f"{'it' if one else 'them'}", err=True)

    def warn_about_scores(self, image_id: str, scores: MapScores) -> None:
        """A `Warning:` line for a map that does not beat random maps, and one for a map that
        fails the sanity check."""
        which = f"the {self.label + ' ' if self.label else ''}map of image {image_id}"
        if not scores.beats_random():
            click.echo(f"Warning: {which} does not beat {BEATS_RANDOM_PERCENTILE:.0f}% of "
                       f"random maps ({against_random(scores)})", err=True)
        if scores.fails_sanity:
            click.echo(f"Warning: {which} barely depends on the model: "
                       f"{barely_depends(scores)}", err=True)

    def warn_if_sanity_unavailable(self) -> str | None:
        """One `Warning:` line when the sanity check was asked for and cannot run; why."""
        why = self.explainer.sanity_unavailable()
        if why:
            click.echo(f"Warning: no sanity check: {why}", err=True)
        return why

    def step_tags(self) -> dict[str, str]:
        """What every run of this step records about its model and data."""
        data = self.inputs.data
        return {**self.inputs.resolved.lineage_tags(),
                **convention_tags(self.inputs.model.convention),
                store_names.DATASET_TAG: data.dataset.name, store_names.DATASET_DIGEST_TAG: data.digest}

    def log_dataset(self) -> None:
        """The dataset as an input of the active run, with its split."""
        data = self.inputs.data
        log_dataset(data.source, data.dataset, data.digest, store_names.SALIENCY_CONTEXT,
                    self.explainer.split,
                    {k: v for k, v in self.data_params.items() if k != "dataset"})

    def log_maps(self, predicted: PredictedImage, maps: np.ndarray, raw: np.ndarray | None,
                 prefix: str = "") -> None:
        """The image's map, raw map and pictures (under `prefix`) in the active run."""
        log_map(maps, prefix)
        if raw is not None:
            log_map(raw, prefix, store_names.RAW_MAP_ARTIFACT)
        # Pictured in confidence units where the raw map exists: a class the model ignores
        # fades beside the one it predicts (xaitk scales each to ±1).
        log_pictures(predicted.image, maps if raw is None else raw, self.inputs.classes.names,
                     predicted.title(), predicted.class_marks(), self.pictures,
                     f"{prefix}{store_names.PICTURES_DIR}/",
                     meaning=None if raw is None else self.explainer.raw_meaning(),
                     fill_colours=fill_colours_of(self.config))

    def make_and_log_maps(self, predicted: PredictedImage, prefix: str) -> None:
        """Make the image's map now and log it (`log_maps`), unscored."""
        with phases.phase(store_names.COMPUTE_PHASE):
            (maps, raw), = self.explainer.maps_of([predicted])
        self.log_maps(predicted, maps, raw, prefix)

    def map_run(self, explained: ExplainedImage, parent: Run, params: dict,
                extra_tags: dict[str, str]) -> Run:
        """A per-image run nested under the step run `parent` (also on a Dask worker, where no
        run is active) with its tags, params, config, maps, pictures and metrics."""
        predicted, scores = explained.predicted, explained.scores
        with lifecycle.run_context(run_name=store_names.image_run_name(
                predicted.image_id, predicted.predicted_class, predicted.correct),
                nested=mlflow.active_run() is not None,
                experiment_id=parent.info.experiment_id,
                tags={store_names.PARENT_RUN_TAG: parent.info.run_id}) as run:
            if scores.fails_sanity is not None:
                extra_tags = {**extra_tags, store_names.SANITY_TAG: store_names.SANITY_FAILED
                              if scores.fails_sanity else store_names.SANITY_PASSED}
            if scores.most_faithful_fill is not None:
                extra_tags = {**extra_tags, store_names.MOST_FAITHFUL_FILL_TAG:
                              self.fill_name(scores.most_faithful_fill)}
            mlflow.set_tags({**identity_tags(predicted), **self.step_tags(),
                             store_names.SPLIT_TAG: self.explainer.split_of(predicted.image_id),
                             store_names.SALIENCY_PARENT_TAG: parent.info.run_id,
                             store_names.CODE_VERSION_TAG: parent.data.tags[store_names.CODE_VERSION_TAG],
                             **extra_tags})
            mlflow.log_params({**params, **self.data_params})
            self.log_dataset()  # the run's page then names the dataset, as its step run's does
            mlflow.log_dict(self.config, store_names.CONFIG_ARTIFACT)
            self.log_maps(predicted, explained.maps, explained.raw)
            log_scores(scores)
            mlflow.log_metrics({store_names.PREDICTED_CONF_METRIC: predicted.confidence,
                                **scores.metrics})
            runs.describe(map_verdict(scores))
            return run

    def fill_name(self, colour: int) -> str:
        """`0: black`: an MC-RISE fill colour's index and name."""
        return f"{colour}: {plots.fill_colour_name(fill_colours_of(self.config)[colour])}"

    def log_averages(self, made: list[MapMade]) -> None:
        """Mean maps by true class and by confusion cell (true → predicted) of two maps or more,
        as `.npy` (and `_raw.npy`, of the maps in the model's confidence units, where the maps
        have them) and pictures over the mean image, under `averages/` of the active (step)
        run: the classes in the model's order (a mean has no one confidence), the group's true
        class and, of a confusion cell, its predicted class marked. Pictured in confidence units
        where they exist, as the map runs' pictures."""
        predicted = self.explainer.predict_all([one.image_id for one in made])
        images = [one.image for one in predicted]
        true_names = [one.true_class for one in predicted]
        predicted_names = [one.predicted_class for one in predicted]
        groups = average_maps([one.maps for one in made], images, true_names, predicted_names)
        raw = pictured_raw(made)
        raw_groups = (average_maps(raw, images, true_names, predicted_names) if raw else {})
        column = {n: k for k, n in enumerate(self.inputs.classes.names)}.get
        for (true, predicted_name), (mean_maps, mean_image, count) in groups.items():
            name = f"true_{store_names.metric_safe(true)}" + (
                f"_predicted_{store_names.metric_safe(predicted_name)}"
                if predicted_name is not None else "")
            what = f"true {true}" + (f", predicted {predicted_name}"
                                     if predicted_name is not None else "")
            log_map(mean_maps, f"{store_names.AVERAGES_DIR}/", f"{name}.npy")
            shown, meaning = mean_maps, None
            if (true, predicted_name) in raw_groups:
                shown = raw_groups[(true, predicted_name)][0]
                meaning = self.explainer.raw_meaning()
                log_map(shown, f"{store_names.AVERAGES_DIR}/", f"{name}_raw.npy")
            log_pictures(mean_image, shown, self.inputs.classes.names,
                         f"mean of {count} maps: {what}",
                         plots.Answer(None, column(predicted_name), column(true)),
                         replace(self.pictures, mode="combined", top_classes=0),
                         f"{store_names.AVERAGES_DIR}/{name}_", meaning=meaning)

    def log_summary(self, made: list[MapMade]) -> None:
        """One picture of the step's maps (`summary.png` of the active, step run): a row per
        image (the first `SUMMARY_MAX_IMAGES`), its map of the predicted class and, where the
        model was wrong, of the true class, all on one scale: in the model's confidence units
        where the maps have them, so an image whose answer no region moves stays pale."""
        class_names, rows = self.inputs.classes.names, []
        raw = pictured_raw(made)
        pictured = raw or [one.maps for one in made]
        predicted = self.explainer.predict_all([one.image_id for one in made])
        for one, maps in list(zip(predicted, pictured))[:SUMMARY_MAX_IMAGES]:
            def label(kind: str, column: int) -> str:
                return (f"{kind} {class_names[column]}  "
                        f"{plots.confidence_text(one.confidences[column])}")
            if maps.ndim == 2:
                row = {WHOLE_PREDICTION: maps}
            else:
                row = {label("predicted", one.predicted_column):
                       class_map(maps, one.predicted_column)}
                if one.true_column not in (None, one.predicted_column):
                    row[label("true", one.true_column)] = class_map(maps, one.true_column)
            rows.append((one.image, f"{one.image_id}: true {one.true_class}", row))
        shown = (f"the first {len(rows)} of {len(made)}" if len(rows) < len(made)
                 else f"{len(made)}")
        if pictured[0].ndim == 4:  # `class_map` averages MC-RISE's fill colours
            meaning = plots.FILLING_MEAN_IN_CONFIDENCE if raw else plots.FILLING_MEAN
        else:
            meaning = self.explainer.raw_meaning() if raw else plots.meaning_of(pictured[0])
        fig = plots.rows_figure(rows, f"{shown} maps by {self.label or 'the algorithm'}: the "
                                      "predicted class, and the true class where it differs",
                                meaning)
        mlflow.log_figure(fig, store_names.SUMMARY_PICTURE)
        plots.plt.close(fig)


def pictured_raw(made: list[MapMade]) -> list[np.ndarray] | None:
    """The maps in the model's confidence units, when every one of them has them (else None:
    one picture draws one kind of map)."""
    raw = [one.raw for one in made]
    return None if any(r is None for r in raw) else raw


@dataclass(frozen=True)
class MapRecipe:
    """What makes a step's map runs, sent to the Dask workers: each builds its own writer
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
    #: The digest of the step's images, which a worker's must equal.
    digest: str

    def inputs(self) -> ModelInputs:
        """The model and the data, loaded once per worker; DataMismatch for other images."""
        return worker_model_inputs(self.model_uri, self.dataset, self.image_size, self.digest,
                                   stored_convention=self.config.get(
                                       store_names.MODEL_INPUT_CONFIG_KEY))

    def writer(self, image_ids) -> MapRunWriter:
        writer = MapRunWriter.build(self.model_uri, self.dataset, self.image_size, self.config,
                                    self.pictures, self.predict_batch_size, image_ids,
                                    split=self.split, inputs=self.inputs())
        writer.label = self.label
        return writer


def stored_map(run: Run, name: str = store_names.MAP_ARTIFACT) -> np.ndarray | None:
    """A map run's map (or its raw map, `name`); None for a raw map the run does not have."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=name)
    except (MlflowException, OSError):
        if name == store_names.MAP_ARTIFACT:
            raise
        return None
    return np.load(path)


@dataclass(frozen=True)
class MapMade:
    """One image's map run, made or found: its ID, map and metrics."""

    image_id: str
    run_id: str
    maps: np.ndarray
    scores: MapScores
    #: The map before xaitk's scaling, in the model's confidence units (None where there is none).
    raw: np.ndarray | None = None

    @classmethod
    def stored(cls, run: Run) -> MapMade:
        metrics = {k: v for k, v in run.data.metrics.items() if k != store_names.PREDICTED_CONF_METRIC}
        sanity = run.data.tags.get(store_names.SANITY_TAG)
        return cls(run.data.tags[store_names.IMAGE_ID_TAG], run.info.run_id, stored_map(run),
                   MapScores(metrics, {}, fails_sanity=None if sanity is None
                             else sanity == store_names.SANITY_FAILED),
                   stored_map(run, store_names.RAW_MAP_ARTIFACT))


def earlier_maps(client: MlflowClient, parent_id: str, experiment_id: str, restore: bool,
                 partition: int | None = None) -> dict[str, MapMade]:
    """The FINISHED map runs an earlier try of a step run (or of one of its partitions) made,
    by image ID; any other run of it is ended KILLED and soft-deleted (`settle_earlier_runs`)."""
    kept = settle_earlier_runs(client, experiment_id, parent_id, partition, restore)
    return {image_id: MapMade.stored(run) for image_id, run in kept.items()}


def map_runs(writer: MapRunWriter, params: dict, parent: Run, todo: list[tuple[str, dict]],
             extra_tags: dict[str, str] | None = None, stopped=lambda: False
             ) -> Iterator[MapMade]:
    """The map runs of `todo` (image ID, lineage tags) under the step run `parent`, in order;
    the maps of `MAP_PARTITION_SIZE` images at a time made together. Ends early, before a run,
    once `stopped()`, checked right before each run is created."""
    for first in range(0, len(todo), MAP_PARTITION_SIZE):
        group = todo[first:first + MAP_PARTITION_SIZE]
        predicted = writer.explainer.predict_all([image_id for image_id, _ in group])
        explained = phases.produced_in(store_names.COMPUTE_PHASE, writer.explainer.explain(predicted))
        for (_, lineage), one in zip(group, explained):
            if stopped():
                return
            run = writer.map_run(one, parent, params, {**lineage, **(extra_tags or {})})
            yield MapMade(one.predicted.image_id, run.info.run_id, one.maps, one.scores,
                          one.raw)


def explain_partition(index: int, items: list[tuple[str, dict]], *, settings, version: str,
                      parent_id: str, attempt: str, recipe: MapRecipe,
                      stop_event: str | None = None) -> list[MapMade]:
    """On a Dask worker: the map runs of one partition of a step's images (`items`: image ID
    and lineage tags), under the step run `parent_id`, in the order of `items`. Safe to run
    again after a try that died part-way: only the images without a FINISHED run are
    explained. `settings`: the step's `TrackingSettings`, applied while it runs; `version`:
    the step's code version; `attempt`: the step's attempt token, checked before each run
    (`cluster.partition_guard`)."""
    from steps.tracking.cluster import partition_client

    with partition_client(settings, version) as client:
        return _explain_partition(index, items, client, parent_id, attempt, recipe, stop_event)


def _explain_partition(index: int, items: list[tuple[str, dict]], client: MlflowClient,
                       parent_id: str, attempt: str, recipe: MapRecipe, stop_event: str | None
                       ) -> list[MapMade]:
    from steps.tracking.cluster import partition_guard, worker_name
    parent = client.get_run(parent_id)
    made = earlier_maps(client, parent_id, parent.info.experiment_id, False, index)
    writer = recipe.writer([image_id for image_id, _ in items])
    extra = {store_names.PARTITION_TAG: str(index), store_names.WORKER_TAG: worker_name(),
             store_names.ATTEMPT_TAG: attempt}
    stopped = partition_guard(client, stop_event, parent_id, attempt, index).stopped
    with quiet_run_links():
        for one in map_runs(writer, recipe.params, parent,
                            [item for item in items if item[0] not in made], extra, stopped):
            made[one.image_id] = one
    if len(made) < len(items):
        return []  # stopped: the step is failing and discards it, a quiet end
    return [made[image_id] for image_id, _ in items]


def map_progress(total: int, label: str, done: int = 0) -> Progress:
    """Maps made so far, their rate and ETA, on stderr."""
    return Progress(total, label, unit="maps", done=done)


def make_maps(writer: MapRunWriter, recipe: MapRecipe, parent: Run,
              todo: list[tuple[str, dict]], cluster: ClusterSpec | None, bar: Progress
              ) -> list[MapMade]:
    """The map runs of `todo` (image ID, lineage tags), made in this process or on the
    cluster's workers, in order."""
    if cluster is None:
        return [bar.advanced(one) for one in map_runs(writer, recipe.params, parent, todo)]
    settings = TrackingSettings.current()
    with dask_client(cluster, parent.info.run_id, settings, prepare=recipe.inputs) as client:
        parts = run_partitions(client, explain_partition, todo,
                               lambda done: bar.advanced(done, len(done)), MAP_PARTITION_SIZE,
                               settings=settings, parent_id=parent.info.run_id, recipe=recipe)
    return [made for part in parts for made in part]
