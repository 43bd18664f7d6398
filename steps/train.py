"""Train step: fit the classifier and log it, with its data and environment, to "Train".

The model is logged with the sklearn flavour (skops, no pickle to load) and a pyfunc that gives
probabilities; with `register_as` it also becomes a new version in the Model Registry, tagged
with this run, the dataset digest and the test accuracy.
"""

from __future__ import annotations

import pickle
import re
from importlib import metadata
import tempfile
from pathlib import Path

import click
import mlflow
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from steps import options, phases, store_names
from steps.core.image_dataset import ALL, flatten
from steps.core.image_models import ModelParams, accuracy, train_classifier
from steps.tracking import lifecycle, runs
from steps.tracking.dataset_logging import log_dataset
from steps.tracking.inputs import load_data, split_data

PROJECT_DIR = Path(__file__).resolve().parents[1]
ENVIRONMENT_FILES = ("conda.yaml", "requirements.txt")
#: What loading the model needs (its sklearn flavour through skops, its pyfunc through MLflow).
MODEL_REQUIREMENTS = ("mlflow", "numpy", "scikit-learn", "skops")


def log_new_params(run_id: str, params: dict) -> None:
    """Log params the run does not hold yet (`mlflow run` already logged the `-P` values)."""
    existing = MlflowClient().get_run(run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def sklearn_trusted_types(model) -> list[str]:
    """Types skops does not trust by default but that are scikit-learn's own (e.g. its optimizers)."""
    # Slow to import (every scikit-learn estimator; benchmarks/README.md, "Start-up and
    # overhead"): only to log a model.
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return [name for name in untrusted if name.startswith("sklearn.")]


def model_requirements() -> list[str]:
    """The model's pip requirements, pinned to the versions installed here (those that wrote
    it; requirements.txt pins the same). Given them, `log_model` does not infer them in a
    subprocess, which takes seconds (figures: benchmarks/README.md, "Start-up and overhead")."""
    return [f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def log_classifier(classifier, name: str, features, infer_requirements: bool = False):
    """Log the fitted classifier in the active run as model `name` (sklearn flavour through
    skops; a pyfunc answering with probabilities, as the evaluate and saliency steps need),
    `features` its input example. `infer_requirements`: let MLflow infer the pip requirements
    in a subprocess instead of pinning them (only to measure what the pins save)."""
    return mlflow.sklearn.log_model(
        classifier,
        name=name,
        serialization_format="skops",
        skops_trusted_types=sklearn_trusted_types(classifier),
        pyfunc_predict_fn="predict_proba",
        signature=infer_signature(features, classifier.predict_proba(features)),
        input_example=features,
        pip_requirements=None if infer_requirements else model_requirements(),
    )


def loss_metrics(loss_curve: list[float], timestamp: int) -> list[Metric]:
    return [Metric("training_loss", loss, timestamp, epoch) for epoch, loss in enumerate(loss_curve)]


def register(model_uri: str, name: str, run_id: str, digest: str, test_acc: float) -> str:
    """A new version of registered model `name` from the logged model; returns `<name>/<version>`."""
    version = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    for key, value in {store_names.TRAIN_RUN_TAG: run_id, store_names.DATASET_DIGEST_TAG: digest,
                       "test_accuracy": f"{test_acc:.6f}"}.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.update_model_version(name, version.version,
                                description=f"Trained by saliency-flow run {run_id}; test "
                                            f"accuracy {test_acc:.4f}")
    return f"{name}/{version.version}"


@click.command(help=__doc__)
@options.with_options(options.TRAIN)
def train(dataset, image_size, test_fraction, split_seed, eval_split, register_as, **model_args):
    split_values = {"test_fraction": test_fraction, "split_seed": split_seed,
                    "eval_split": eval_split}
    if eval_split == ALL:
        raise click.BadParameter("eval_split=all evaluates every image, which leaves none to "
                                 "train on; give a model_uri trained elsewhere, or eval_split="
                                 "test", param_hint="'--eval_split'")
    model_params = ModelParams(**model_args)
    data = load_data(dataset, image_size)
    images, labels = data.dataset.images, data.dataset.labels
    split = split_data(data.dataset, options.split_choice(split_values),
                       quiet=lifecycle.under_driver())
    if not len(split.train_rows):
        raise click.BadParameter(f"dataset {data.dataset.name} has no train/ split to train on; "
                                 "give a model_uri to evaluate a model trained elsewhere",
                                 param_hint="'--dataset'")
    train_images, train_labels = images[split.train_rows], labels[split.train_rows]
    test_images, test_labels = images[split.test_rows], labels[split.test_rows]

    with runs.step_run(store_names.TRAIN_EXPERIMENT, "train") as run:
        run_id = run.info.run_id
        log_new_params(run_id, {
            **options.values_of(options.DATA + options.SPLIT, {
                "dataset": dataset, "image_size": image_size, **split_values}),
            "register_as": register_as,
            **{k: options.as_param(v) for k, v in model_args.items()},
        })
        log_dataset(data.source, data.dataset, data.digest, store_names.TRAINING_CONTEXT, split,
                    {**split_values, "image_size": image_size})
        click.echo(f"Training MLPClassifier{model_params.hidden_layer_sizes} on {len(train_labels)} "
                   f"{data.dataset.describe_shape()} images of {data.dataset.name} "
                   f"({model_params.solver}, up to {model_params.epochs} epochs)...")
        with phases.phase(store_names.COMPUTE_PHASE):
            trained = train_classifier(model_params, train_images, train_labels)
            classifier = trained.classifier
            train_acc = accuracy(classifier, train_images, train_labels)
            test_acc = accuracy(classifier, test_images, test_labels)
        if not trained.converged:
            click.echo(f"Warning: training stopped after {len(trained.loss_curve)} epochs without "
                       "converging; raise -P epochs (or the learning rate) for a better model",
                       err=True)

        mlflow.set_tags({
            store_names.DATASET_TAG: data.dataset.name,
            store_names.DATASET_DIGEST_TAG: data.digest,
            "Model_type": "MLPClassifier",
            "Train_size": len(train_labels),
            "Test_size": len(test_labels),
            "Num_classes": len(data.dataset.class_names),
            store_names.IMAGE_SHAPE_TAG: store_names.image_shape_tag(data.dataset.image_shape),
            "Converged": str(trained.converged).lower(),
            "Epochs_run": len(trained.loss_curve),
        })
        timestamp = run.info.start_time
        MlflowClient().log_batch(run_id, metrics=loss_metrics(trained.loss_curve, timestamp) + [
            Metric("train_accuracy", train_acc, timestamp, 0),
            Metric("test_accuracy", test_acc, timestamp, 0),
        ])

        model_info = log_classifier(
            classifier, f"mlp-{re.sub(r'[^A-Za-z0-9_-]+', '-', data.dataset.name)}-{run_id[:8]}",
            flatten(test_images[:5]))
        # MLflow 3 keeps the model as a LoggedModel linked to this run; the tag finds it.
        mlflow.set_tag(store_names.MODEL_URI_TAG, model_info.model_uri)
        if register_as:
            version = register(model_info.model_uri, register_as, run_id, data.digest, test_acc)
            mlflow.set_tag(store_names.REGISTERED_MODEL_TAG, version)
            click.echo(f"Registered the model as {register_as} version {version.split('/')[1]}")
        with tempfile.TemporaryDirectory() as tmp:
            pickle_path = Path(tmp, "model.pkl")
            pickle_path.write_bytes(pickle.dumps(classifier))
            mlflow.log_artifact(str(pickle_path))
        for name in ENVIRONMENT_FILES:
            mlflow.log_artifact(str(PROJECT_DIR / name), artifact_path=store_names.ENVIRONMENT_ARTIFACT_DIR)
        runs.describe(
            f"Trained MLPClassifier{model_params.hidden_layer_sizes} on {len(train_labels)} "
            f"images of `{data.dataset.name}` for {len(trained.loss_curve)} epochs"
            f"{'' if trained.converged else ' (did not converge)'}: test accuracy "
            f"{test_acc:.2%}. Model: `{model_info.model_uri}`.")
        click.echo(f"Train run {run_id}: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}")


if __name__ == "__main__":
    options.run_cli(train)
