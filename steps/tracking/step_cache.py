"""Finding a stored step run that can stand in for running the step again.

A run matches when it is a FINISHED run of the same entry point, with the same code version
tag, the same dataset digest tag (the data it ran on), and every parameter equal as MLflow
stores it: `mlflow run` logs each value shell-quoted (an empty value as `''`, a path with a space
in quotes), so the values are compared in that form. The upstream model URI is a parameter of
the downstream steps, so a new train run never matches an old evaluation. The search runs on
the tracking store with the conditions as a filter string and pages through every result,
however many runs the experiment holds.
"""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.string_utils import quote

from steps.store_names import CODE_VERSION_TAG, ENTRY_POINT_TAG

PAGE_SIZE = 1000


def _quoted(value: str) -> str | None:
    """`value` as a filter-string literal, or None when it holds both kinds of quote."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def reuse_filter(entry_point: str, params: dict[str, str], version: str,
                 tags: dict[str, str] | None = None) -> str:
    clauses = [
        f"tags.`{ENTRY_POINT_TAG}` = {_quoted(entry_point)}",
        f"tags.`{CODE_VERSION_TAG}` = {_quoted(version)}",
        "attributes.status = 'FINISHED'",
        *(f"tags.`{key}` = {_quoted(value)}" for key, value in (tags or {}).items()),
    ]
    for key, value in stored_params(params).items():
        literal = _quoted(value)
        if literal is not None:
            clauses.append(f"params.`{key}` = {literal}")
    return " AND ".join(clauses)


def stored_params(params: dict[str, str]) -> dict[str, str]:
    """The values as `mlflow run` stores them: shell-quoted where the shell needs it."""
    return {key: quote(value) for key, value in params.items()}


def find_reusable_run(experiment_id: str, entry_point: str, params: dict[str, str],
                      version: str, tags: dict[str, str] | None = None,
                      client: MlflowClient | None = None) -> Run | None:
    """The newest FINISHED run that matches on entry point, code version, every param and the
    given tags (e.g. the digest of the data it ran on)."""
    client = client or MlflowClient()
    filter_string = reuse_filter(entry_point, params, version, tags)
    expected = stored_params(params)
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=PAGE_SIZE,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        for run in page:
            # The filter already matched; this also checks what it could not express
            # (values with both kinds of quote).
            if all(run.data.params.get(k) == v for k, v in expected.items()) and all(
                    run.data.tags.get(k) == v for k, v in (tags or {}).items()):
                return run
        token = page.token
        if not token:
            return None
