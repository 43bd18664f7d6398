"""Evaluate step: one "Evaluation" run per test image, under a parent run with the aggregates.

Each per-sample run holds the class confidences as metrics and `Image_id`, `GT_class`,
`Predicted_class`, `Correct` as tags, so samples can be found with `mlflow.search_runs`.
"""

from __future__ import annotations

import click
import mlflow
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from steps import options, plots, tracking
from steps.code_version import CODE_VERSION_TAG
from steps.data import load_dataset, split_dataset
from steps.model import predict_confidences, predicted_labels
from steps.sample_runs import SampleRun, SampleRunWriter


def sample_runs(image_ids, true_labels, confidences, class_labels, tags) -> list[SampleRun]:
    """The per-sample runs to write: confidences as metrics, identity and outcome as tags."""
    predicted = np.asarray(class_labels)[confidences.argmax(axis=1)]
    runs = []
    for image_id, truth, pred, conf in zip(image_ids, true_labels, predicted, confidences):
        metrics = {f"Class_{label}_conf": float(c) for label, c in zip(class_labels, conf)}
        metrics["Predicted_class_conf"] = float(conf.max())
        runs.append(SampleRun(
            name=f"image-{image_id}",
            metrics=metrics,
            tags={
                **tags,
                "Image_id": str(int(image_id)),
                "GT_class": str(int(truth)),
                "Predicted_class": str(int(pred)),
                "Correct": str(bool(truth == pred)).lower(),
            },
        ))
    return runs


def aggregate_metrics(true_labels, predicted, class_labels) -> dict[str, float]:
    precision, recall, _, _ = precision_recall_fscore_support(
        true_labels, predicted, labels=class_labels, zero_division=0
    )
    metrics = {"accuracy": float(np.mean(true_labels == predicted)), "num_samples": len(true_labels)}
    for label, p, r in zip(class_labels, precision, recall):
        metrics[f"Class_{label}_precision"] = float(p)
        metrics[f"Class_{label}_recall"] = float(r)
    return metrics


@click.command(help=__doc__)
@options.with_options([options.TRAIN_RUN_ID, *options.EVALUATE, *options.SHARD])
def evaluate(train_run_id, num_samples, shard_index, num_shards):
    if shard_index >= num_shards:
        raise click.BadParameter(f"shard {shard_index} does not exist among {num_shards} shards "
                                 f"(0 to {num_shards - 1})", param_hint="'--shard_index'")
    train_run = tracking.require_run(train_run_id, tracking.TRAIN_EXPERIMENT, "train_run_id")
    setup = tracking.train_run_setup(train_run)
    data = load_dataset(setup["dataset"])
    test_ids = split_dataset(data, float(setup["test_fraction"]), int(setup["split_seed"])).test_ids
    if num_samples:
        test_ids = test_ids[:num_samples]
    model = tracking.load_train_model(train_run)
    class_labels = [int(c) for c in model.classes_]
    # Every shard predicts the whole sample set and keeps its own slice: float32 products round
    # differently for batches of other shapes (up to 2e-7 seen here), and a sharded evaluation
    # must give exactly the confidences of an unsharded one. Predicting takes milliseconds;
    # writing the runs is what the shards share out.
    shard = slice(shard_index, None, num_shards)
    confidences = predict_confidences(model, data.images[test_ids])[shard]
    test_ids = test_ids[shard]

    with tracking.step_run(tracking.EVALUATION_EXPERIMENT, "evaluate") as parent:
        parent_id = parent.info.run_id
        mlflow.set_tags({"Train_run_id": train_run_id, "Dataset": setup["dataset"],
                         "Num_samples": len(test_ids), "Shard": f"{shard_index}/{num_shards}"})
        truth = data.labels[test_ids]
        predicted = predicted_labels(model, confidences)
        runs = sample_runs(test_ids, truth, confidences, class_labels, {
            "Train_run_id": train_run_id,
            tracking.EVALUATION_PARENT_TAG: parent_id,
            tracking.PARENT_RUN_TAG: parent_id,
            CODE_VERSION_TAG: parent.data.tags[CODE_VERSION_TAG],
        })
        writer = SampleRunWriter(parent.info.experiment_id)
        writer.write_all(runs, label=f"Logging {len(runs)} evaluation runs")

        mlflow.log_metrics(aggregate_metrics(truth, predicted, class_labels))
        fig = plots.confusion_matrix_figure(truth, predicted, data.class_names)
        mlflow.log_figure(fig, "confusion_matrix.png")
        plots.plt.close(fig)
        click.echo(f"Evaluation run {parent_id}: {len(runs)} samples, "
                   f"accuracy {np.mean(truth == predicted):.4f}")


if __name__ == "__main__":
    options.run_cli(evaluate)
