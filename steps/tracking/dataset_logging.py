"""The dataset a step ran on, recorded with MLflow's dataset tracking (`mlflow.log_input`)."""

from __future__ import annotations

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.exceptions import MlflowException

from steps.core.image_dataset import DatasetSource, ImageDataset, Split
from steps.core.parameters import as_param

#: What SQLite and PostgreSQL say when a concurrent insert of the same dataset got there first.
DUPLICATE_DATASET = ("UNIQUE constraint failed: datasets", "duplicate key value")


def log_dataset(source: DatasetSource, data: ImageDataset, digest: str, context: str,
                split: Split, settings: dict) -> None:
    """Log the whole dataset as an input of the active run: its name, where it is, our content
    digest (the one step reuse compares), and the split as the input's tags: where it comes
    from (`split`: predefined, random or all) and the settings."""
    location = source.location()
    origin = (resolve_dataset_source(location) if location.startswith("/")
              else CodeDatasetSource({"loader": location}))
    dataset = mlflow.data.from_numpy(data.images, targets=data.labels, source=origin,
                                     name=data.name, digest=digest)
    tags = {"split": split.origin, **{key: as_param(value) for key, value in settings.items()}}
    try:
        mlflow.log_input(dataset, context=context, tags=tags)
    except MlflowException as error:
        # Two steps logging the same new dataset at once: the other one's insert won, and the
        # dataset is now there to be linked to this run.
        if not any(words in str(error) for words in DUPLICATE_DATASET):
            raise
        mlflow.log_input(dataset, context=context, tags=tags)
