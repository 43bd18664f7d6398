"""The query between evaluation and saliency: which evaluated samples to explain."""

from __future__ import annotations

import click
import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from steps.names import (CORRECT_TAG, EVALUATION_EXPERIMENT, EVALUATION_PARENT_TAG, GT_CLASS_TAG,
                         IMAGE_ID_TAG, PREDICTED_CLASS_TAG, PREDICTED_CONF_METRIC)
from steps.tracking.runs import experiment_id

RESULT_COLUMNS = ["run_id", f"tags.{IMAGE_ID_TAG}", f"tags.{GT_CLASS_TAG}",
                  f"tags.{PREDICTED_CLASS_TAG}", f"tags.{CORRECT_TAG}",
                  f"metrics.{PREDICTED_CONF_METRIC}"]


def sample_filter(evaluation_run_id: str, user_filter: str) -> str:
    """The user's filter, limited to the per-sample runs of one evaluation."""
    scope = f"tags.{EVALUATION_PARENT_TAG} = '{evaluation_run_id}'"
    return f"{scope} AND {user_filter}" if user_filter.strip() else scope


def _search(evaluation_run_id: str, user_filter: str, order: list[str], max_images: int,
            order_by: str) -> pd.DataFrame:
    try:
        return mlflow.search_runs(
            experiment_ids=[experiment_id(EVALUATION_EXPERIMENT)],
            filter_string=sample_filter(evaluation_run_id, user_filter),
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
