"""The query between evaluation and saliency: which evaluated samples to explain.

The search is limited to one evaluation's sample runs. MLflow's SQL stores key tags by (key,
run) and index no tag value, so a scope on the value of the `Evaluation_parent_run_id` tag
reads that tag of every sample run in the store: its cost grows with the store. A tag KEY that
names the evaluation is found through that index and reads the evaluation's own rows only
(figures: benchmarks/README.md, "The query on a large store"). So an evaluation run tagged `Samples_keyed` = 'true', whose
every sample run carries the tag `Sample_of_<its run ID>` = 'true' (`names.sample_key`), is
searched by that key; one made before, by the parent tag's value.
"""

from __future__ import annotations

import click
import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from steps.store_names import (CORRECT_TAG, EVALUATION_EXPERIMENT, EVALUATION_PARENT_TAG, GT_CLASS_TAG,
                         IMAGE_ID_TAG, PREDICTED_CLASS_TAG, PREDICTED_CONF_METRIC,
                         SAMPLES_KEYED_TAG, sample_key)
from steps.tracking.runs import experiment_id

RESULT_COLUMNS = ["run_id", f"tags.{IMAGE_ID_TAG}", f"tags.{GT_CLASS_TAG}",
                  f"tags.{PREDICTED_CLASS_TAG}", f"tags.{CORRECT_TAG}",
                  f"metrics.{PREDICTED_CONF_METRIC}"]

def sample_filter(evaluation_run_id: str, user_filter: str, keyed: bool = False) -> str:
    """The user's filter, limited to the per-sample runs of one evaluation: by the parent tag's
    value, or with `keyed` by the tag whose key names the evaluation."""
    scope = (f"tags.`{sample_key(evaluation_run_id)}` = 'true'" if keyed
             else f"tags.{EVALUATION_PARENT_TAG} = '{evaluation_run_id}'")
    return f"{scope} AND {user_filter}" if user_filter.strip() else scope


def _scope(evaluation_run_id: str, user_filter: str) -> tuple[str, str]:
    """The experiment to search and the filter. The evaluation run, read first, gives both (one
    request, as reading the experiment by name was). A run that does not exist has no samples:
    the search, which still checks the user's filter, is then limited to its own ID, which
    costs a primary-key lookup where the parent tag's value reads every sample run's tag."""
    try:
        run = MlflowClient().get_run(evaluation_run_id)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        scope = f"attributes.run_id = '{evaluation_run_id}'"
        return (experiment_id(EVALUATION_EXPERIMENT),
                f"{scope} AND {user_filter}" if user_filter.strip() else scope)
    keyed = run.data.tags.get(SAMPLES_KEYED_TAG) == "true"
    return run.info.experiment_id, sample_filter(evaluation_run_id, user_filter, keyed)


def _search(evaluation_run_id: str, user_filter: str, order: list[str], max_images: int,
            order_by: str) -> pd.DataFrame:
    experiment, filter_string = _scope(evaluation_run_id, user_filter)
    try:
        return mlflow.search_runs(
            experiment_ids=[experiment],
            filter_string=filter_string,
            order_by=order,
            max_results=max_images,
        )
    except MlflowException as error:
        first_line = str(error.message).strip().splitlines()[0]
        raise click.BadParameter(
            f"MLflow rejected query {user_filter!r} with order_by {order_by!r}: {first_line}. "
            "See https://mlflow.org/docs/latest/search-runs.html for the syntax, "
            "e.g. \"metrics.Predicted_class_conf < 0.9 AND tags.GT_class = '3'\"",
            param_hint="'--query'",
        ) from None


def query_samples(evaluation_run_id: str, user_filter: str, order_by: str,
                  max_images: int) -> pd.DataFrame:
    """Evaluation samples of one evaluation (parent) run matching the user's filter, ordered, at
    most `max_images` of them. Raises a click error naming `query` when MLflow rejects the
    filter or order syntax."""
    order = [clause.strip() for clause in order_by.split(",") if clause.strip()]
    runs = _search(evaluation_run_id, user_filter, order, max_images, order_by)
    if runs.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return runs[[c for c in RESULT_COLUMNS if c in runs.columns]].reset_index(drop=True)
