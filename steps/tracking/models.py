"""Models from MLflow: resolving a model URI and loading it as an `ImageModel`.

A user gives `runs:/<run ID>/<path>`, `models:/<name>/<version>`, `models:/<name>@<alias>` or
`models:/<model ID>`. An alias is resolved to its version first (aliases move), and that
version's URI is what the steps log, compare for reuse and load. A model is loaded by the first
registered flavour source its MLmodel offers: the sklearn flavour when the model has
`predict_proba`, else the pyfunc flavour, whose `predict` must return one probability per class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import click
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import names
from steps.core.models import ImageModel, ProbabilityFunction, ProbaModel
from steps.core.registry import Registry

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
LOGGED_MODEL_URI = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)$")
RUN_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-f]{32})/.+$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI with any alias resolved, and where the model came from."""

    uri: str
    given: str
    version: str | None = None  # "<name>/<version>" for a registered model
    alias: str | None = None
    source_run_id: str | None = None

    def lineage_tags(self) -> dict[str, str]:
        tags = {names.MODEL_URI_TAG: self.uri}
        if self.version:
            tags[names.MODEL_VERSION_TAG] = self.version
        if self.alias:
            tags[names.MODEL_ALIAS_TAG] = self.alias
        if self.source_run_id:
            tags[names.TRAIN_RUN_TAG] = self.source_run_id
        return tags


def _bad(uri: str, why: str, param: str) -> click.BadParameter:
    return click.BadParameter(f"model {uri}: {why}", param_hint=f"'--{param}'")


def _first_line(error: MlflowException) -> str:
    return str(error.message).strip().splitlines()[0]


def resolve_model_uri(uri: str, param: str = "model_uri") -> ResolvedModel:
    """The URI with an alias replaced by its version; a click error naming `param` for a model
    that is not there."""
    client = MlflowClient()
    try:
        if match := ALIAS_URI.match(uri):
            version = client.get_model_version_by_alias(match["name"], match["alias"])
            return ResolvedModel(f"models:/{match['name']}/{version.version}", uri,
                                 f"{match['name']}/{version.version}", match["alias"],
                                 version.run_id or None)
        if match := VERSION_URI.match(uri):
            version = client.get_model_version(match["name"], match["version"])
            return ResolvedModel(uri, uri, f"{match['name']}/{version.version}", None,
                                 version.run_id or None)
        if match := LOGGED_MODEL_URI.match(uri):
            logged = client.get_logged_model(match["model_id"])
            return ResolvedModel(uri, uri, source_run_id=logged.source_run_id or None)
        if match := RUN_URI.match(uri):
            run = client.get_run(match["run_id"])
            if run.info.lifecycle_stage == "deleted":
                raise _bad(uri, f"run {match['run_id']} is deleted; restore it with `mlflow runs "
                           f"restore --run-id {match['run_id']}`", param)
            return ResolvedModel(uri, uri, source_run_id=match["run_id"])
    except MlflowException as error:
        raise _bad(uri, f"not found in {mlflow.get_tracking_uri()} ({_first_line(error)})",
                   param) from None
    return ResolvedModel(uri, uri)


class FlavourSource:
    """Loads a model that has this MLflow flavour, if it suits; registered in `MODEL_SOURCES`."""

    name: ClassVar[str]

    def load(self, uri: str, info) -> ImageModel | None:
        """The model as an `ImageModel`, or None when this flavour cannot serve it."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"flavour": self.name}


# Tried in registration order: the sklearn flavour first, then the pyfunc flavour.
MODEL_SOURCES: Registry = Registry("model flavour", ordered=True)


@MODEL_SOURCES.register
class SklearnFlavour(FlavourSource):
    name = "sklearn"

    def load(self, uri: str, info) -> ImageModel | None:
        model = mlflow.sklearn.load_model(uri)
        return ProbaModel(model) if hasattr(model, "predict_proba") else None


@MODEL_SOURCES.register
class PyfuncFlavour(FlavourSource):
    name = "python_function"

    def load(self, uri: str, info) -> ImageModel | None:
        model = mlflow.pyfunc.load_model(uri)
        inputs = info.signature.inputs if info.signature is not None else None
        if inputs is not None and inputs.is_tensor_spec():
            shape = inputs.inputs[0].shape
            # A tensor signature of more than two axes takes the image batch itself.
            layout = "images" if len(shape) > 2 else "flat"
            return ProbabilityFunction(lambda batch: np.asarray(model.predict(batch)), layout,
                                       input_shape=shape)
        if inputs is not None and inputs.has_input_names():
            # A column signature: one named column per pixel value, in the flattened order.
            import pandas as pd

            columns = inputs.input_names()
            return ProbabilityFunction(
                lambda rows: np.asarray(model.predict(pd.DataFrame(rows, columns=columns))),
                "flat", input_shape=(-1, len(columns)))
        return ProbabilityFunction(lambda batch: np.asarray(model.predict(batch)), "flat")


def load_image_model(model: ResolvedModel, param: str = "model_uri") -> ImageModel:
    """The model behind a resolved URI, loaded by the first flavour source that serves it."""
    try:
        info = mlflow.models.get_model_info(model.uri)
    except (MlflowException, OSError) as error:
        why = _first_line(error) if isinstance(error, MlflowException) else str(error)
        raise _bad(model.given, f"cannot be read ({why})", param) from None
    for source in MODEL_SOURCES:
        if source.name in info.flavors:
            loaded = source().load(model.uri, info)
            if loaded is not None:
                return loaded
    raise _bad(model.given, f"has flavours {', '.join(info.flavors)}; the pipeline needs an "
               "sklearn model with predict_proba or a pyfunc model", param)
