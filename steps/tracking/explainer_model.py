"""The explainer as an MLflow model: a saliency run's classifier and stored configuration as one
pyfunc that `mlflow models serve` serves (`steps/core/serving.py` computes).

The classifier is copied into the explainer model as an artifact (`classifier/`), not referred
to by its URI: a `models:/` or `runs:/` URI would need the tracking server, and the very
version, to be reachable wherever and whenever the explainer is loaded; a copy serves from any
directory, offline, and cannot drift from the maps it was checked against. Beside it,
`explainer.json` holds the map run's stored configuration (with the model's input convention
and map metric settings), the class name of each model output column, the image shape the maps
were made on and the prediction batch size. The `steps` package travels as `code_paths`, and
the requirements are requirements.txt's pins (plus any of the classifier's own that it lacks),
so the model loads without the project checkout.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from steps import store_names
from steps.core.serving import CLASSES_COLUMN, IMAGE_COLUMN, BadRow, ServingExplainer, image_mode
from steps.tracking.map_runs import MapRunWriter
from steps.tracking.model_loading import ResolvedModel, load_image_model

PROJECT_DIR = Path(__file__).resolve().parents[2]
CLASSIFIER_ARTIFACT = "classifier"
SPEC_ARTIFACT = "explainer.json"
SIGNATURE = ModelSignature(inputs=Schema([
    ColSpec("binary", IMAGE_COLUMN),
    ColSpec("string", CLASSES_COLUMN, required=False),
]))


class SaliencyExplainer(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `image` (PNG or JPEG bytes; base64 in JSON) and, optionally,
    `classes` (comma-separated class names to explain; default the predicted class). Output:
    one record per image (`ServingExplainer.explain`). A row that cannot be explained is an
    INVALID_PARAMETER_VALUE error naming it, which the scoring server answers with HTTP 400."""

    def load_context(self, context) -> None:
        spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        path = context.artifacts[CLASSIFIER_ARTIFACT]
        model = load_image_model(ResolvedModel(path, path),
                                 stored=spec["config"][store_names.MODEL_INPUT_CONFIG_KEY])
        self.explainer = ServingExplainer(model, tuple(spec["class_names"]), spec["config"],
                                          tuple(spec["image_shape"]), spec["predict_batch_size"])

    def predict(self, context, model_input, params=None):
        if IMAGE_COLUMN not in getattr(model_input, "columns", ()):
            raise MlflowException(f"the request has no {IMAGE_COLUMN!r} column (the bytes of "
                                  "a PNG or JPEG file, base64 in JSON)",
                                  error_code=INVALID_PARAMETER_VALUE)
        classes = (list(model_input[CLASSES_COLUMN]) if CLASSES_COLUMN in model_input.columns
                   else None)
        try:
            return self.explainer.explain(list(model_input[IMAGE_COLUMN]), classes)
        except BadRow as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None


def config_digest(config: dict) -> str:
    """A short digest of a stored configuration, the same for the same settings."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pinned_requirements(classifier_dir: Path) -> list[str]:
    """requirements.txt's pins, then the classifier's own requirements it does not name."""
    ours = [line.strip() for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    names = {requirement_name(line) for line in ours}
    theirs = classifier_dir / "requirements.txt"
    extra = ([line.strip() for line in theirs.read_text().splitlines()
              if line.strip() and not line.startswith(("#", "-"))
              and requirement_name(line) not in names] if theirs.exists() else [])
    return ours + extra


def code_copy(folder: Path) -> Path:
    """The `steps` package copied into `folder` without its byte-code caches."""
    target = folder / "steps"
    shutil.copytree(PROJECT_DIR / "steps", target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@dataclass(frozen=True)
class ExplainerSource:
    """What an explainer is made of, from a saliency run's writer: the classifier's resolved
    URI and lineage, the stored configuration, class names, image shape and batch size."""

    writer: MapRunWriter
    #: The saliency run given (a step run or a map run) and the map run whose config it uses.
    source_run_id: str
    map_run_id: str

    def spec(self) -> dict:
        explainer = self.writer.explainer
        return {"config": explainer.config, "class_names": list(self.writer.inputs.classes.names),
                "image_shape": list(self.writer.inputs.dataset.image_shape),
                "predict_batch_size": explainer.predict_batch_size,
                "classifier_uri": self.writer.inputs.resolved.uri}

    def tags(self) -> dict[str, str]:
        """The source runs, the classifier's lineage and the configuration's digest."""
        resolved = self.writer.inputs.resolved
        return {store_names.EXPLAINER_SOURCE_TAG: self.source_run_id,
                store_names.EXPLAINER_MAP_RUN_TAG: self.map_run_id,
                store_names.CONFIG_DIGEST_TAG: config_digest(self.writer.config),
                **{k: v for k, v in resolved.lineage_tags().items()
                   if k in (store_names.MODEL_URI_TAG, store_names.MODEL_VERSION_TAG)}}


def log_explainer(source: ExplainerSource, register_as: str = "") -> tuple[str, str | None]:
    """The explainer of a saliency run logged in the active run (`log_explainer_spec`), with
    the source's tags."""
    return log_explainer_spec(source.spec(), source.tags(), register_as)


def log_explainer_spec(spec: dict, tags: dict[str, str], register_as: str = ""
                       ) -> tuple[str, str | None]:
    """An explainer (`ExplainerSource.spec`'s fields) logged in the active run as model
    `explainer`, `tags` set on the run and, with `register_as`, on a new registered version of
    that name; returns the logged model's URI and `<name>/<version>` or None. A click error
    naming `saliency_run_id` for images the service cannot read as the pipeline did."""
    try:
        image_mode(spec["image_shape"])
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--saliency_run_id'") from None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        classifier = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=spec["classifier_uri"], dst_path=str(folder / CLASSIFIER_ARTIFACT)))
        (folder / SPEC_ARTIFACT).write_text(json.dumps(spec, indent=1))
        info = mlflow.pyfunc.log_model(
            name=store_names.EXPLAINER_MODEL, python_model=SaliencyExplainer(),
            artifacts={CLASSIFIER_ARTIFACT: str(classifier),
                       SPEC_ARTIFACT: str(folder / SPEC_ARTIFACT)},
            code_paths=[str(code_copy(folder))], pip_requirements=pinned_requirements(classifier),
            signature=SIGNATURE)
    mlflow.set_tags(tags)
    if not register_as:
        return info.model_uri, None
    version = mlflow.register_model(info.model_uri, register_as)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(register_as, version.version, key, value)
    client.update_model_version(
        register_as, version.version,
        description=f"Saliency explainer of saliency-flow run "
                    f"{tags.get(store_names.EXPLAINER_SOURCE_TAG, '(none)')} (classifier "
                    f"{spec['classifier_uri']}, configuration {config_digest(spec['config'])})")
    named = f"{register_as}/{version.version}"
    mlflow.set_tag(store_names.EXPLAINER_VERSION_TAG, named)
    return info.model_uri, named
