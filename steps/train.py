"""Train step: fit the classifier and log it, with its data and environment, to "Train"."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import click
import mlflow
import skops.io
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from steps import options, tracking
from steps.data import flatten, load_dataset, split_dataset
from steps.model import ModelParams, accuracy, train_classifier

PROJECT_DIR = Path(__file__).resolve().parents[1]
ENVIRONMENT_FILES = ("conda.yaml", "requirements.txt")


def log_new_params(run_id: str, params: dict) -> None:
    """Log params the run does not hold yet (`mlflow run` already logged the `-P` values)."""
    existing = MlflowClient().get_run(run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def sklearn_trusted_types(model) -> list[str]:
    """Types skops does not trust by default but that are scikit-learn's own (e.g. its optimizers)."""
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return [name for name in untrusted if name.startswith("sklearn.")]


def loss_metrics(loss_curve: list[float], timestamp: int) -> list[Metric]:
    return [Metric("training_loss", loss, timestamp, epoch) for epoch, loss in enumerate(loss_curve)]


@click.command(help=__doc__)
@options.with_options(options.TRAIN)
def train(dataset, test_fraction, split_seed, **model_args):
    model_params = ModelParams(**model_args)
    data = load_dataset(dataset)
    split = split_dataset(data, test_fraction, split_seed)
    train_images, train_labels = data.images[split.train_ids], data.labels[split.train_ids]
    test_images, test_labels = data.images[split.test_ids], data.labels[split.test_ids]

    with tracking.step_run(tracking.TRAIN_EXPERIMENT, "train") as run:
        run_id = run.info.run_id
        log_new_params(run_id, {
            "dataset": dataset,
            "test_fraction": test_fraction,
            "split_seed": split_seed,
            **{k: options.as_param(v) for k, v in model_args.items()},
        })
        click.echo(f"Training MLPClassifier{model_params.hidden_layer_sizes} on {len(train_labels)} "
                   f"{dataset} images ({model_params.solver}, up to {model_params.epochs} epochs)...")
        trained = train_classifier(model_params, train_images, train_labels)
        classifier = trained.classifier
        train_acc = accuracy(classifier, train_images, train_labels)
        test_acc = accuracy(classifier, test_images, test_labels)

        mlflow.set_tags({
            "Dataset": dataset,
            "Model_type": "MLPClassifier",
            "Train_size": len(train_labels),
            "Test_size": len(test_labels),
            "Num_classes": len(data.class_names),
            "Image_shape": "x".join(map(str, data.image_shape)),
            "Converged": str(trained.converged).lower(),
            "Epochs_run": len(trained.loss_curve),
        })
        timestamp = run.info.start_time
        MlflowClient().log_batch(run_id, metrics=loss_metrics(trained.loss_curve, timestamp) + [
            Metric("train_accuracy", train_acc, timestamp, 0),
            Metric("test_accuracy", test_acc, timestamp, 0),
        ])

        features = flatten(test_images[:5])
        model_info = mlflow.sklearn.log_model(
            classifier,
            name="model",
            serialization_format="skops",
            skops_trusted_types=sklearn_trusted_types(classifier),
            signature=infer_signature(features, classifier.predict(features)),
            input_example=features,
        )
        # MLflow 3 keeps the model as a LoggedModel linked to this run; the tag finds it.
        mlflow.set_tag("Model_uri", model_info.model_uri)
        with tempfile.TemporaryDirectory() as tmp:
            pickle_path = Path(tmp, "model.pkl")
            pickle_path.write_bytes(pickle.dumps(classifier))
            mlflow.log_artifact(str(pickle_path))
        for name in ENVIRONMENT_FILES:
            mlflow.log_artifact(str(PROJECT_DIR / name), artifact_path="environment")
        click.echo(f"Train run {run_id}: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}")


if __name__ == "__main__":
    options.run_cli(train)
