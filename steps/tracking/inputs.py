"""What the evaluate and saliency steps start from: the data and the model, checked together.

Bad data or a model that does not fit it ends the step with one line naming the parameter,
before any run is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import click
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.core.image_dataset import (DATASET_SOURCES, DataError, DatasetSource, ImageDataset, Split,
                             SplitChoice, dataset_source)
from steps.core.model_input import FROM_MEASURED
from steps.core.image_models import ClassMapping, ImageModel, ModelError, check_model_fits
from steps import store_names
from steps.tracking import lifecycle
from steps.tracking.model_loading import ResolvedModel, load_image_model, resolve_model_uri
from steps.tracking.store_check import launch_directory


def absolute_dataset(spec: str) -> str:
    """A dataset given as a relative path, made absolute against the directory `mlflow run` was
    started in (the steps run in the project's directory); names such as `digits` unchanged.
    A path is one that exists there, has a `/`, or that a source says names one
    (`DatasetSource.names_a_path`, e.g. `x.npz`)."""
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = launch_directory() / path
    if candidate.exists() or "/" in spec or any(source.names_a_path(spec)
                                                for source in DATASET_SOURCES):
        return str(candidate.resolve())
    return spec


@dataclass
class Data:
    source: DatasetSource
    dataset: ImageDataset
    digest: str


def load_data(spec: str, image_size: tuple[int, ...], quiet: bool = False) -> Data:
    """The dataset and its digest, with a line for each of the source's notes (unless `quiet`
    or under the driver); a click error naming `dataset` for data that cannot be used."""
    with dataset_errors():
        source = dataset_source(absolute_dataset(spec), image_size)
        data = Data(source, source.load(), source.digest())
    if not quiet and not lifecycle.under_driver():  # the driver said so already
        for line in source.notes():
            click.echo(line, err=True)
    return data


def dataset_digest(spec: str, image_size: tuple[int, ...]) -> str:
    """Only the digest (no image decoded); errors as `load_data`."""
    with dataset_errors():
        return dataset_source(absolute_dataset(spec), image_size).digest()


@contextlib.contextmanager
def dataset_errors():
    """Data that cannot be used, as one line naming `--dataset`."""
    try:
        yield
    except DataError as error:
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
                      resolved: ResolvedModel | None = None,
                      input_flags: Mapping[str, Any] | None = None,
                      stored_convention: Mapping[str, Any] | None = None) -> ModelInputs:
    """Load the model and the data and check the model takes the images and gives
    probabilities (or logits) for the dataset's classes. The model's input convention comes
    from `stored_convention` (a map's, to make it again), else from the user's `input_flags`
    (`model_input.flags_of`), its metadata and its declared shape. A model that declares a
    fixed image size gets the images resized to it, unless `image_size` is given."""
    if resolved is None:
        if not model_uri:
            raise click.BadParameter("give the model to use", param_hint="'--model_uri'")
        resolved = resolve_model_uri(model_uri)
    model = load_image_model(resolved, input_flags, stored_convention)
    data = load_data(spec, image_size)
    shape = data.dataset.image_shape
    if not image_size and model.image_size and tuple(shape[:2]) != tuple(model.image_size):
        height, width = model.image_size
        if not lifecycle.under_driver():  # the driver said so already
            click.echo(f"Resizing the {data.dataset.describe_shape()} images of {spec} to "
                       f"{height}×{width}, the size model {resolved.given} takes (its "
                       f"{model.size_source}); set -P image_size=H,W to choose", err=True)
        data = load_data(spec, (height, width), quiet=True)
    try:
        classes = check_model_fits(model, data.dataset.images, data.dataset.class_names,
                                   data.dataset.describe_shape())
    except ModelError as error:
        raise click.BadParameter(f"model {resolved.given} on dataset {spec}: {error}",
                                 param_hint=f"'--{error.param}'") from None
    convention = model.convention
    if (convention.output == "logits" and convention.sources.get("output") == FROM_MEASURED
            and not lifecycle.under_driver()):
        click.echo(f"Model {resolved.given} returns values that are not probabilities: read "
                   "as logits (softmax applied); set -P model_output= to say otherwise",
                   err=True)
    return ModelInputs(data, model, resolved, classes)


#: Models (with their data) a Dask worker keeps loaded between partitions: a step's, and the
#: next step's on the same cluster.
WORKER_CACHED_INPUTS = 2


def worker_model_inputs(model_uri: str, spec: str, image_size: tuple[int, ...] | None,
                        digest: str, input_flags: Mapping[str, Any] | None = None,
                        stored_convention: Mapping[str, Any] | None = None) -> ModelInputs:
    """On a Dask worker: `load_model_inputs`, loaded once per worker process and kept for its
    later partitions. `model_uri` is a resolved one (a version, never an alias, which moves);
    DataMismatch unless the images read here have the step's `digest`."""
    inputs = _cached_model_inputs(model_uri, spec, tuple(image_size or ()),
                                  json.dumps(input_flags or {}, sort_keys=True),
                                  json.dumps(stored_convention, sort_keys=True))
    if inputs.data.digest != digest:
        raise DataMismatch(f"it reads other images at {spec} (digest "
                           f"{inputs.data.digest[:12]}, the step's {digest[:12]}): give the "
                           "workers the same files, on a shared path or in an object store")
    return inputs


@functools.lru_cache(maxsize=WORKER_CACHED_INPUTS)
def _cached_model_inputs(model_uri: str, spec: str, image_size: tuple[int, ...],
                         input_flags: str, stored_convention: str) -> ModelInputs:
    return load_model_inputs(model_uri, spec, image_size, input_flags=json.loads(input_flags),
                             stored_convention=json.loads(stored_convention))


class DataMismatch(Exception):
    """A Dask worker reads other images than the step under the dataset's name."""


def split_data(dataset: ImageDataset, choice: SplitChoice, quiet: bool = False) -> Split:
    """The dataset split as chosen, with a line for each note (unless `quiet`); a click error
    naming `eval_split` (or `test_fraction`) for a split that cannot be made."""
    try:
        split = choice.apply(dataset)
    except DataError as error:
        param = "test_fraction" if "test_fraction " in str(error) else "eval_split"
        raise click.BadParameter(str(error), param_hint=f"'--{param}'") from None
    if not quiet:
        for line in choice.notes(dataset):
            click.echo(line, err=True)
    return split


def refuse_training_images(inputs: ModelInputs) -> None:
    """`eval_split=all` evaluates every image: a click error for a model this pipeline trained
    on part of these very images."""
    run_id = inputs.resolved.source_run_id
    if not run_id:
        return
    try:
        trained_on = MlflowClient().get_run(run_id).data.tags.get(store_names.DATASET_DIGEST_TAG)
    except MlflowException:  # a run of another store, or purged
        return
    if trained_on == inputs.data.digest:
        raise click.BadParameter(
            f"model {inputs.resolved.given} was trained on part of these images (run {run_id}); "
            "eval_split=all would evaluate it on its training images. Use eval_split=test, or "
            "all with a model trained elsewhere", param_hint="'--eval_split'")
