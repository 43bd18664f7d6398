"""What the evaluate and saliency steps start from: the data and the model, checked together.

Bad data or a model that does not fit it ends the step with one line naming the parameter,
before any run is written.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import click

from steps.core.data import DatasetError, DatasetSource, ImageDataset, dataset_source
from steps.core.models import ClassMapping, ImageModel, ModelError, check_model_fits
from steps.tracking.models import ResolvedModel, load_image_model, resolve_model_uri
from steps.tracking.store_check import launch_directory


def absolute_dataset(spec: str) -> str:
    """A dataset given as a relative path, made absolute against the directory `mlflow run` was
    started in (the steps run in the project's directory); names such as `digits` unchanged."""
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = launch_directory() / path
    if candidate.exists() or "/" in spec or spec.lower().endswith(".npz"):
        return str(candidate.resolve())
    return spec


@dataclass
class Data:
    source: DatasetSource
    dataset: ImageDataset
    digest: str


def load_data(spec: str, image_size: tuple[int, ...]) -> Data:
    """The dataset and its digest; a click error naming `dataset` for data that cannot be used."""
    with dataset_errors():
        source = dataset_source(absolute_dataset(spec), image_size)
        return Data(source, source.load(), source.digest())


def dataset_digest(spec: str, image_size: tuple[int, ...]) -> str:
    """Only the digest (no image decoded); errors as `load_data`."""
    with dataset_errors():
        return dataset_source(absolute_dataset(spec), image_size).digest()


@contextlib.contextmanager
def dataset_errors():
    """Data that cannot be used, as one line naming `--dataset`."""
    try:
        yield
    except DatasetError as error:
        raise click.BadParameter(str(error), param_hint="'--dataset'") from None


@dataclass
class ModelInputs:
    """A dataset and the model to run on it, with its outputs tied to the dataset's classes."""

    data: Data
    model: ImageModel
    resolved: ResolvedModel
    classes: ClassMapping

    @property
    def dataset(self) -> ImageDataset:
        return self.data.dataset


def load_model_inputs(model_uri: str | None, spec: str, image_size: tuple[int, ...],
                      resolved: ResolvedModel | None = None) -> ModelInputs:
    """Load the data and the model and check the model takes the images and gives
    probabilities for the dataset's classes."""
    if resolved is None:
        if not model_uri:
            raise click.BadParameter("give the model to use", param_hint="'--model_uri'")
        resolved = resolve_model_uri(model_uri)
    data = load_data(spec, image_size)
    model = load_image_model(resolved)
    try:
        classes = check_model_fits(model, data.dataset.images, data.dataset.class_names,
                                   data.dataset.describe_shape())
    except ModelError as error:
        raise click.BadParameter(f"model {resolved.given} on dataset {spec}: {error}",
                                 param_hint="'--model_uri'") from None
    return ModelInputs(data, model, resolved, classes)
