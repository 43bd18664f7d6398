"""Evaluate step: one "Evaluation" run per test image, under a parent run with the aggregates.

Each per-sample run holds the class confidences as metrics and `Image_id`, `GT_class`,
`Predicted_class`, `Correct` as tags, so samples can be found with `mlflow.search_runs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steps import options, phases, store_names
from steps.core.model_input import flags_of
from steps.tracking import lifecycle, runs
from steps.tracking.dataset_logging import log_dataset
from steps.core.image_dataset import ALL
from steps.tracking.evaluation import (EvaluatedSample, EvaluationRecipe, evaluate_partition,
                                       predict_confidences, samples_of)
from steps.tracking.inputs import (ModelInputs, absolute_dataset, load_model_inputs,
                                   refuse_training_images, split_data)
from steps.tracking.model_loading import convention_tags
from steps.tracking.cluster import (ClusterSpec, TrackingSettings, check_reachable_store,
                                    dask_client, run_partitions)
from steps.tracking.console import Progress
from steps.tracking.lifecycle import settle_earlier_runs
from steps.tracking.sample_runs import SampleRun, SampleRunWriter

if TYPE_CHECKING:
    from steps.core.classification import Evaluated


def named_metrics(result: Evaluated) -> dict[str, float]:
    """The evaluation's metrics as logged: overall ones, and `Class_<name>_<kind>` per class."""
    from steps.core.classification import classifier_metrics

    overall, per_class = classifier_metrics(result)
    return {**overall, **{f"Class_{store_names.metric_safe(name)}_{kind}": value
                          for name, values in per_class.items() for kind, value in values.items()}}


def results_table(samples: list[SampleRun], run_ids: list[str]) -> dict[str, list]:
    """One row per sample: what its run records, and the run's ID (for `mlflow.load_table`)."""
    return {
        "image_id": [s.tags[store_names.IMAGE_ID_TAG] for s in samples],
        "true_class": [s.tags[store_names.GT_CLASS_TAG] for s in samples],
        "predicted_class": [s.tags[store_names.PREDICTED_CLASS_TAG] for s in samples],
        "confidence": [s.metrics[store_names.PREDICTED_CONF_METRIC] for s in samples],
        "correct": [s.tags[store_names.CORRECT_TAG] == "true" for s in samples],
        "run_id": list(run_ids),
    }


def log_evaluation(result: Evaluated, samples: list[SampleRun], run_ids: list[str]) -> None:
    """The parent run's summary: metrics, per-sample table, confusion matrix and curves."""
    from steps.core import plots  # matplotlib: only here
    from steps.core.classification import curve_figures

    with phases.phase(store_names.COMPUTE_PHASE):
        metrics = named_metrics(result)
    mlflow.log_metrics(metrics)
    # log_table appends to a table already there (of a resumed run).
    if not runs.has_artifact(mlflow.active_run().info.run_id, store_names.RESULTS_TABLE):
        mlflow.log_table(results_table(samples, run_ids), store_names.RESULTS_TABLE)
    with phases.phase(store_names.PICTURES_PHASE):
        figures = {store_names.CONFUSION_MATRIX_ARTIFACT: plots.confusion_matrix_figure(
            result.truth, result.predicted, result.class_names), **{
            f"{store_names.CURVES_DIR}/{file}": fig for file, fig in curve_figures(result).items()}}
        for path, fig in figures.items():
            mlflow.log_figure(fig, path)
            plots.plt.close(fig)


def write_on_cluster(cluster: ClusterSpec, recipe: EvaluationRecipe,
                     items: list[tuple[int, str | None]], progress: Progress,
                     experiment_id: str, parent_id: str) -> list[EvaluatedSample]:
    """The samples predicted and written by the cluster's workers, a partition at a time
    (`items`: dataset row, and its run already written or None); in the order of `items`."""
    settings = TrackingSettings.current()
    already = {kept for _, kept in items if kept}
    with dask_client(cluster, parent_id, settings, prepare=recipe.inputs) as client:
        parts = run_partitions(
            client, evaluate_partition, items,
            lambda part: progress.advanced(part, sum(one.run_id not in already for one in part)),
            settings=settings, experiment_id=experiment_id, parent_id=parent_id, recipe=recipe)
    return [one for part in parts for one in part]


def write_samples(inputs: ModelInputs, rows: np.ndarray, confidences: np.ndarray | None,
                  recipe: EvaluationRecipe, parent: Run, cluster: ClusterSpec | None,
                  resuming: bool) -> tuple[list[SampleRun], list[str], np.ndarray]:
    """Write the sample runs of the dataset's `rows` under the step run: in this process,
    from the `confidences` predicted here, or on the cluster, whose workers predict. The
    sample runs and their run IDs in the order of `rows`, and the confidences. Resuming, the FINISHED runs an
    earlier try wrote are kept (and restored) and only the missing ones are written."""
    experiment, parent_id = parent.info.experiment_id, parent.info.run_id
    image_ids = [inputs.dataset.image_ids[row] for row in rows]
    kept = {}
    if resuming:
        kept = {image_id: run.info.run_id for image_id, run
                in settle_earlier_runs(MlflowClient(), experiment, parent_id, restore=True).items()}
        click.echo(f"Resuming evaluation run {parent_id}: {len(kept)} of {len(rows)} sample "
                   f"runs already written, writing the other {len(rows) - len(kept)}",
                   err=True)
    with Progress(len(rows), f"Logging {len(rows)} evaluation runs", done=len(kept)) as progress:
        if cluster is not None:
            done = write_on_cluster(cluster, recipe, [
                (int(row), kept.get(image_id)) for row, image_id in zip(rows, image_ids)],
                progress, experiment, parent_id)
            confidences = np.stack([one.confidences for one in done])
            return (samples_of(inputs, rows, confidences, recipe.tags, recipe.split_name),
                    [one.run_id for one in done], confidences)
        samples = samples_of(inputs, rows, confidences, recipe.tags, recipe.split_name)
        missing = [s for s in samples if s.tags[store_names.IMAGE_ID_TAG] not in kept]
        written = SampleRunWriter(experiment).write_batch(missing, progress.advanced)
    kept.update(zip((s.tags[store_names.IMAGE_ID_TAG] for s in missing), written))
    return samples, [kept[image_id] for image_id in image_ids], confidences


@click.command(help=__doc__)
@options.with_options(options.ENTRY_POINTS["evaluate"])
def evaluate(model_uri, dataset, image_size, test_fraction, split_seed, eval_split, num_samples,
             cluster, resume_run_id, **input_values):
    resume = None
    if resume_run_id:
        resume = runs.require_resumable(resume_run_id, store_names.EVALUATION_EXPERIMENT)
        if resume.info.status == lifecycle.FINISHED:
            click.echo(f"Evaluation run {resume_run_id} is FINISHED: nothing to resume")
            return
        stored = runs.stored_parameters(evaluate, resume)
        model_uri, dataset, image_size, test_fraction, split_seed, num_samples = (
            stored[name] for name in ("model_uri", "dataset", "image_size", "test_fraction",
                                      "split_seed", "num_samples"))
        eval_split = stored.get("eval_split", eval_split)  # a run logged before it existed
        input_values = {d.name: stored[d.name] for d in options.MODEL_INPUT}
    if not model_uri:
        raise click.BadParameter("give the model to evaluate", param_hint="'--model_uri'")
    if cluster is not None:
        check_reachable_store(cluster, mlflow.get_tracking_uri())
    inputs = load_model_inputs(model_uri, dataset, image_size,
                               input_flags=flags_of(input_values))
    data = inputs.dataset
    if resume is not None:
        runs.require_same_data(resume, inputs.data.digest)
    split_values = {"test_fraction": test_fraction, "split_seed": split_seed,
                    "eval_split": eval_split}
    split = split_data(data, options.split_choice(split_values))
    if split.evaluated == ALL:
        refuse_training_images(inputs)
    test_rows = split.test_rows
    if num_samples:
        test_rows = test_rows[:num_samples]
    phases.enter(store_names.COMPUTE_PHASE)
    # On a cluster the workers predict, each its partitions.
    confidences = (None if cluster is not None
                   else predict_confidences(inputs.model, data.images[test_rows]))

    parameters = options.values_of(options.ENTRY_POINTS["evaluate"],
                                   click.get_current_context().params)
    with runs.step_run(store_names.EVALUATION_EXPERIMENT, "evaluate", parameters, resume) as parent:
        parent_id = parent.info.run_id
        lineage = inputs.resolved.lineage_tags()
        mlflow.set_tags({**lineage, **convention_tags(inputs.model.convention),
                         store_names.DATASET_TAG: data.name,
                         store_names.DATASET_DIGEST_TAG: inputs.data.digest,
                         store_names.IMAGE_SHAPE_TAG: store_names.image_shape_tag(data.image_shape),
                         "Num_samples": len(test_rows),
                         **({store_names.CLUSTER_TAG: str(cluster)} if cluster else {})})
        if resume is None:
            log_dataset(inputs.data.source, data, inputs.data.digest, store_names.EVALUATION_CONTEXT,
                        split, {**split_values, "image_size": image_size})
        recipe = EvaluationRecipe(
            inputs.resolved.uri, absolute_dataset(dataset), image_size,
            flags_of(input_values), inputs.data.digest, split.evaluated, {
                **lineage,
                store_names.EVALUATION_PARENT_TAG: parent_id,
                store_names.sample_key(parent_id): "true",
                store_names.PARENT_RUN_TAG: parent_id,
                store_names.CODE_VERSION_TAG: parent.data.tags[store_names.CODE_VERSION_TAG],
            })
        samples, run_ids, confidences = write_samples(inputs, test_rows, confidences, recipe,
                                                      parent, cluster, resume is not None)
        from steps.core.classification import Evaluated  # scikit-learn's metrics: 0.8 s

        result = Evaluated(data.labels[test_rows], np.asarray(confidences),
                           inputs.classes.column_classes, tuple(data.class_names))
        mlflow.set_tag(store_names.SAMPLES_KEYED_TAG, "true")
        log_evaluation(result, samples, run_ids)
        accuracy = float(np.mean(result.correct))
        mlflow.set_tag(store_names.RUN_NAME_TAG, store_names.evaluation_run_name(len(samples), accuracy))
        runs.describe(f"Evaluated model `{inputs.resolved.uri}` on {len(samples)} "
                      f"{'' if split.evaluated == ALL else split.evaluated + ' '}images "
                      f"of `{data.name}`: accuracy {accuracy:.2%}, "
                      f"{int((~result.correct).sum())} wrong. One run per image below; "
                      f"the table `{store_names.RESULTS_TABLE}` lists them.")
        click.echo(f"Evaluation run {parent_id}: {len(samples)} samples, "
                   f"accuracy {accuracy:.4f}")


if __name__ == "__main__":
    options.run_cli(evaluate)
