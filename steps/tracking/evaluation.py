"""The evaluate step's samples: the model's confidences on the evaluated images, one
`SampleRun` per image. Made in the step's own process, or a partition at a time on a Dask
cluster's workers, each of which loads the model and reads the images itself
(`EvaluationRecipe`), predicts, writes its partition's runs and returns the confidences the
step's aggregates need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from steps import store_names
from steps.core.blas import ONE_PREDICTION, blas_threads
from steps.core.image_dataset import TEST
from steps.core.image_models import ImageModel
from steps.tracking.inputs import ModelInputs, worker_model_inputs
from steps.tracking.sample_runs import SampleRun

#: Input bytes one prediction call takes at most: a deep model's activations grow with them.
PREDICTION_BYTES = 2**28


def predict_confidences(model: ImageModel, images: np.ndarray) -> np.ndarray:
    """The model's class confidences on `images`, at most PREDICTION_BYTES of them per call."""
    per_call = max(1, PREDICTION_BYTES // max(1, images[:1].nbytes))
    with blas_threads(ONE_PREDICTION, images.size):
        return np.concatenate([model.predict_proba(images[first:first + per_call])
                               for first in range(0, len(images), per_call)])


def sample_runs(image_ids, true_names, predicted_names, confidences, column_names,
                tags, split_name: str = TEST) -> list[SampleRun]:
    """The per-sample runs to write: confidences as metrics, identity and outcome as tags;
    `split_name` is the evaluated split's (test, val or all)."""
    metric_names = [store_names.class_conf_metric(name) for name in column_names]
    runs = []
    for image_id, truth, pred, conf in zip(image_ids, true_names, predicted_names, confidences):
        metrics = dict(zip(metric_names, map(float, conf)))
        metrics[store_names.PREDICTED_CONF_METRIC] = float(conf.max())
        runs.append(SampleRun(
            name=store_names.image_run_name(image_id, pred, truth == pred),
            metrics=metrics,
            tags={
                **tags,
                store_names.IMAGE_ID_TAG: str(image_id),
                store_names.GT_CLASS_TAG: str(truth),
                store_names.PREDICTED_CLASS_TAG: str(pred),
                store_names.CORRECT_TAG: str(bool(truth == pred)).lower(),
                store_names.SPLIT_TAG: split_name,
            },
        ))
    return runs


def samples_of(inputs: ModelInputs, rows: Sequence[int], confidences: np.ndarray,
               tags: dict[str, str], split_name: str) -> list[SampleRun]:
    """The sample runs of the dataset's `rows`, given the model's confidences on them."""
    data = inputs.dataset
    names = np.asarray(data.class_names)
    rows = np.asarray(rows, dtype=int)
    return sample_runs([data.image_ids[row] for row in rows], names[data.labels[rows]],
                       names[inputs.classes.predicted(confidences)], confidences,
                       inputs.classes.names, tags, split_name)


class EvaluatedSample(NamedTuple):
    """One image of a partition: its run, and the model's confidences on it."""

    run_id: str
    confidences: np.ndarray


@dataclass(frozen=True)
class EvaluationRecipe:
    """What a worker needs to evaluate a partition: where the model (a resolved URI) and the
    images are, the digest the images must have (the step's), and the runs' common tags."""

    model_uri: str
    dataset: str
    image_size: tuple | None
    input_flags: dict
    digest: str
    split_name: str
    tags: dict = field(default_factory=dict)

    def inputs(self) -> ModelInputs:
        """The model and the data, loaded once per worker; DataMismatch for other images."""
        return worker_model_inputs(self.model_uri, self.dataset, self.image_size, self.digest,
                                   self.input_flags)


def evaluate_partition(index: int, items: list[tuple[int, str | None]], *, settings,
                       version: str, experiment_id: str, parent_id: str, attempt: str,
                       recipe: EvaluationRecipe, stop_event: str | None = None
                       ) -> list[EvaluatedSample]:
    """On a Dask worker: predict one partition of the evaluated images (`items`: the dataset
    row, and the run an earlier attempt of the step already wrote for it, or None) and write
    the runs not yet written (`sample_runs.write_partition`'s rules); the samples in the order
    of `items`, or [] once the step stopped or this try was fenced out."""
    from steps.tracking.cluster import partition_client
    from steps.tracking.sample_runs import write_partition_runs

    with partition_client(settings, version) as client:
        inputs = recipe.inputs()
        rows = [row for row, _ in items]
        confidences = predict_confidences(inputs.model, inputs.dataset.images[rows])
        samples = samples_of(inputs, rows, confidences, recipe.tags, recipe.split_name)
        todo = [sample for sample, (_, kept) in zip(samples, items) if kept is None]
        written = write_partition_runs(index, todo, client, experiment_id, parent_id, attempt,
                                       stop_event)
    if len(written) < len(todo):
        return []
    fresh = iter(written)
    return [EvaluatedSample(kept or next(fresh), row_confidences)
            for (_, kept), row_confidences in zip(items, confidences)]
