"""Models from MLflow: resolving a model URI and loading it as an `ImageModel`.

A user gives `runs:/<run ID>/<path>`, `models:/<name>/<version>`, `models:/<name>@<alias>`,
`models:/<name>/latest` or `models:/<model ID>`. An alias or `latest` is resolved to its version
first (both move), and that
version's URI is what the steps log, compare for reuse and load. A model is loaded by the first
registered flavour source its MLmodel offers: the sklearn flavour when the model has
`predict_proba`; the onnx flavour, run by onnxruntime directly; else the pyfunc flavour (PyTorch,
Keras, TensorFlow, a custom PythonModel), whose `predict` returns one probability or logit per
class. Its input convention is resolved from the user's flags, the MLmodel's `image_input`
metadata and its signature or ONNX graph (`steps/core/model_input.py`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import click
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import store_names
from steps.core.model_input import (InputConvention, ModelInputError, ShapeHint, as_text,
                                    metadata_facts, resolve_convention)
from steps.core.image_models import ImageModel, ModelError, OnnxModel, ProbabilityFunction, ProbaModel
from steps.core.registry import Registry

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
#: `models:/<name>/latest`: the newest version, recorded as that version (as an alias is).
LATEST_URI = re.compile(r"^models:/(?P<name>[^/@]+)/latest$")
LATEST = "latest"
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
        tags = {store_names.MODEL_URI_TAG: self.uri}
        if self.version:
            tags[store_names.MODEL_VERSION_TAG] = self.version
        if self.alias:
            tags[store_names.MODEL_ALIAS_TAG] = self.alias
        if self.source_run_id:
            tags[store_names.TRAIN_RUN_TAG] = self.source_run_id
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
        if match := LATEST_URI.match(uri):
            versions = client.search_model_versions(f"name = '{match['name']}'")
            if not versions:
                raise _bad(uri, f"registered model {match['name']} has no version in "
                           f"{mlflow.get_tracking_uri()}", param)
            version = max(versions, key=lambda v: int(v.version))
            return ResolvedModel(f"models:/{match['name']}/{version.version}", uri,
                                 f"{match['name']}/{version.version}", LATEST,
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


def signature_hint(info) -> ShapeHint | None:
    """The input shape of the model's tensor signature, if it has one."""
    inputs = info.signature.inputs if info.signature is not None else None
    if inputs is not None and inputs.is_tensor_spec():
        return ShapeHint(tuple(inputs.inputs[0].shape), "signature")
    return None


@MODEL_SOURCES.register
class OnnxFlavour(FlavourSource):
    """The ONNX file itself, run by an onnxruntime session (`OnnxModel`)."""

    name = "onnx"

    def load(self, uri: str, info) -> ImageModel | None:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        model = OnnxModel(str(local / info.flavors[self.name].get("data", "model.onnx")))
        model.hint = signature_hint(info) or model.hint
        return model


@MODEL_SOURCES.register
class PyfuncFlavour(FlavourSource):
    name = "python_function"

    def load(self, uri: str, info) -> ImageModel | None:
        model = mlflow.pyfunc.load_model(uri)
        inputs = info.signature.inputs if info.signature is not None else None
        if inputs is not None and not inputs.is_tensor_spec() and inputs.has_input_names():
            # A column signature: one named column per pixel value, in the flattened order.
            import pandas as pd

            columns = inputs.input_names()
            return ProbabilityFunction(
                lambda rows: np.asarray(model.predict(pd.DataFrame(rows, columns=columns))),
                hint=ShapeHint((None, len(columns)), "signature"))
        return ProbabilityFunction(lambda batch: np.asarray(model.predict(batch)),
                                   hint=signature_hint(info))


#: Python modules whose distribution on PyPI has another name.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "PIL": "pillow", "cv2": "opencv-python",
                 "skimage": "scikit-image", "yaml": "pyyaml"}


def missing_framework(uri: str, module: str) -> str:
    """What to install for a model whose flavour imports `module`, which is missing: the
    model's own requirement for it (its `requirements.txt`), else the package's name."""
    wanted = DISTRIBUTIONS.get(module, module)
    requirement = wanted
    try:
        logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
        lines = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines()
    except (MlflowException, OSError):
        lines = []
    for line in lines:
        name = re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]
        if name.lower().replace("_", "-") == wanted.lower().replace("_", "-"):
            requirement = line.strip()
            break
    return (f"needs the {wanted} package to load (its flavour imports {module}), which is not "
            f"installed here; install the version the model was logged with: "
            f"pip install '{requirement}'")


def load_image_model(model: ResolvedModel, flags: Mapping[str, Any] | None = None,
                     stored: Mapping[str, Any] | None = None,
                     param: str = "model_uri") -> ImageModel:
    """The model behind a resolved URI, loaded by the first flavour source that serves it, with
    its input convention: the one `stored` with a map (to make it again), else resolved from
    the user's `flags` (`model_input.flags_of`), the model's metadata and its declared shape.
    One click error for a model that cannot be read or loaded, or a convention that does not
    fit it."""
    try:
        info = mlflow.models.get_model_info(model.uri)
    except (MlflowException, OSError) as error:
        why = _first_line(error) if isinstance(error, MlflowException) else str(error)
        raise _bad(model.given, f"cannot be read ({why})", param) from None
    try:
        metadata = metadata_facts(info.metadata)
    except ModelInputError as error:
        raise _bad(model.given, str(error), param) from None
    loaded = None
    for source in MODEL_SOURCES:
        if source.name in info.flavors:
            try:
                loaded = source().load(model.uri, info)
            except ImportError as error:
                module = (error.name or str(error)).split(".")[0]
                raise _bad(model.given, missing_framework(model.uri, module), param) from None
            except ModelError as error:
                raise _bad(model.given, str(error), param) from None
            if loaded is not None:
                break
    if loaded is None:
        raise _bad(model.given, f"has flavours {', '.join(info.flavors)}; the pipeline needs "
                   "an sklearn model with predict_proba, an ONNX model or a pyfunc model", param)
    if "class_names" in metadata:
        loaded.labels = metadata["class_names"]
    try:
        if stored:
            loaded.convention = InputConvention.from_dict(stored)
        else:
            loaded.convention = resolve_convention(flags or {}, metadata, loaded.hint)
    except ModelInputError as error:
        raise click.BadParameter(f"model {model.given}: {error}",
                                 param_hint=f"'--{error.param}'") from None
    layout = loaded.convention.layout
    loaded.image_size = metadata.get("image_size") or (
        loaded.hint.image_size(layout) if loaded.hint is not None else None)
    loaded.size_source = ("metadata" if "image_size" in metadata else
                          loaded.hint.source if loaded.image_size else None)
    return loaded


def convention_tags(convention: InputConvention) -> dict[str, str]:
    """The resolved input convention as the tags every evaluation, saliency and map run shows."""
    return {store_names.INPUT_LAYOUT_TAG: convention.layout,
            store_names.INPUT_SCALE_TAG: as_text((convention.scale,)),
            store_names.INPUT_MEAN_TAG: as_text(convention.mean) or "none",
            store_names.INPUT_STD_TAG: as_text(convention.std) or "none",
            store_names.MODEL_OUTPUT_TAG: convention.output,
            store_names.INPUT_SOURCES_TAG: convention.describe_sources()}
