"""Report step: a pipeline's results on one page, `report.html`, rebuilt from the store alone.

The driver logs the report in its main run when the pipeline ends; `mlflow run . -e report -P
main_run_id=<ID>` rebuilds it for an earlier pipeline (e.g. after a newer version of this
project, or once the tracking server's address is known) and logs it in that main run again.
Runs are linked to the MLflow UI when the tracking URI is a server's address.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click
import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import options, store_names
from steps.core.metrics import beats_random
from steps.core.parameters import text_items
from steps.core.ranking import from_row
from steps.core.report_page import (ExplainedImage, ExplanationSet, Picture, PipelineReport, RunRef,
                                    SanityResult, render)
from steps.tracking import lifecycle, runs

#: The evaluation's headline metrics, in the order the page shows them.
HEADLINE_METRICS = ("accuracy", "num_samples", "f1_macro", "log_loss", "roc_auc_ovr_macro",
                    "expected_calibration_error")
#: A saliency step run's aggregates the page shows, beside any `*_mean`.
SALIENCY_AGGREGATES = (store_names.BEATING_RANDOM_METRIC, store_names.FAILING_SANITY_METRIC)


class StoreReader:
    """The runs and artifacts a report reads, and links to them in the MLflow UI."""

    def __init__(self) -> None:
        self.client = MlflowClient()
        uri = mlflow.get_tracking_uri()
        self.ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else None

    def ref(self, run: Run) -> RunRef:
        url = (f"{self.ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
               if self.ui else None)
        return RunRef(run.info.run_id, url)

    def run(self, run_id: str) -> Run | None:
        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def picture(self, run: Run, path: str, caption: str) -> Picture | None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run.info.run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            return Picture(Path(local).read_bytes(), caption)

    def table(self, run: Run, path: str) -> list[dict] | None:
        """The rows of a table the run logged with `mlflow.log_table` (JSON), or None."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run.info.run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            table = json.loads(Path(local).read_text(encoding="utf-8"))
        return [dict(zip(table["columns"], row)) for row in table["data"]]

    def first_picture(self, run: Run, paths: list[str], caption: str) -> Picture | None:
        """The first of `paths` the run has (listing once, not trying each)."""
        have = set()
        for folder in {p.rsplit("/", 1)[0] for p in paths if "/" in p}:
            have |= {f.path for f in self.client.list_artifacts(run.info.run_id, folder)}
        for path in paths:
            if path in have:
                return self.picture(run, path, caption)
        return None



def model_input_text(tags: dict[str, str]) -> str:
    """The model's input convention as a run's tags give it, and where each fact came from."""
    return (f"layout {tags[store_names.INPUT_LAYOUT_TAG]}, scale {tags.get(store_names.INPUT_SCALE_TAG)}, "
            f"mean {tags.get(store_names.INPUT_MEAN_TAG)}, std {tags.get(store_names.INPUT_STD_TAG)}, "
            f"output {tags.get(store_names.MODEL_OUTPUT_TAG)} (from {tags.get(store_names.INPUT_SOURCES_TAG)})")

def explained_image(reader: StoreReader, run: Run) -> ExplainedImage:
    tags, metrics = run.data.tags, run.data.metrics
    predicted = tags.get(store_names.PREDICTED_CLASS_TAG, "")
    pictures = store_names.PICTURES_DIR
    picture = reader.first_picture(run, [
        f"{pictures}/all_classes.png", f"{pictures}/class_{store_names.metric_safe(predicted)}.png",
        f"{pictures}/class_prediction.png", f"{pictures}/fill_colour_0/all_classes.png"],
        f"saliency of image {tags.get(store_names.IMAGE_ID_TAG)}")
    shown = {k: v for k, v in sorted(metrics.items())
             if k != store_names.PREDICTED_CONF_METRIC and not k.startswith("Update_")}
    return ExplainedImage(tags.get(store_names.IMAGE_ID_TAG, ""), tags.get(store_names.GT_CLASS_TAG, ""),
                          predicted, metrics.get(store_names.PREDICTED_CONF_METRIC),
                          tags.get(store_names.SPLIT_TAG), picture, shown, reader.ref(run),
                          beats_random(metrics), tags.get(store_names.SANITY_TAG))


def sanity_result(step: Run, images: list[Run]) -> SanityResult | None:
    """The step run's sanity check: from its map runs' `Sanity_check` tags, else from its
    share of maps failing; None when its maps were not checked."""
    checked = [r.data.tags[store_names.SANITY_TAG] for r in images
               if store_names.SANITY_TAG in r.data.tags]
    metrics = step.data.metrics
    spearman = metrics.get(store_names.mean_metric(store_names.SANITY_SIGNED_SPEARMAN_METRIC))
    if checked:
        return SanityResult(checked.count(store_names.SANITY_FAILED), len(checked), spearman)
    if store_names.FAILING_SANITY_METRIC in metrics and images:
        return SanityResult(round(metrics[store_names.FAILING_SANITY_METRIC] * len(images)),
                            len(images), spearman)
    return None


def explanation_set(reader: StoreReader, step: Run) -> ExplanationSet:
    by_image = runs.map_runs(step)
    order = text_items(step.data.tags.get(store_names.IMAGE_IDS_TAG, ""))
    images = [by_image[i] for i in order if i in by_image]
    images += [r for i, r in by_image.items() if i not in order]
    aggregates = {k: v for k, v in sorted(step.data.metrics.items())
                  if k in SALIENCY_AGGREGATES or k.endswith("_mean")}
    algorithm = step.data.tags.get(store_names.ALGORITHM_TAG, "saliency")
    settings = images[0].data.params if images else {}
    not_algorithm = {d.name for d in options.SALIENCY_INPUTS + options.MAP_MAKING
                     + options.MAP_SCORING} | {
        "algorithm"}
    used = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if k not in not_algorithm)
    return ExplanationSet(f"Saliency: {algorithm}" + (f" ({used})" if used else ""),
                          reader.ref(step), aggregates,
                          [explained_image(reader, run) for run in images],
                          sanity_result(step, images))


def collect(main_run_id: str, status: str | None = None) -> PipelineReport:
    """What the page of pipeline `main_run_id` shows, read from the store. `status`: the main
    run's, when the page is written before it ends (by the driver, as its last act)."""
    reader = StoreReader()
    main = reader.client.get_run(main_run_id)
    tags = main.data.tags
    status = status or main.info.status
    started = datetime.fromtimestamp(main.info.start_time / 1000, timezone.utc)
    report = PipelineReport(f"saliency-flow pipeline of {started:%Y-%m-%d %H:%M} UTC",
                            reader.ref(main), status, {})
    if status != "FINISHED":
        report.notes.append(f"This pipeline's main run is {main.info.status}: its results "
                            "may be incomplete.")
    train = reader.run(tags[store_names.TRAIN_RUN_TAG]) if store_names.TRAIN_RUN_TAG in tags else None
    if train is not None:
        report.links["Train run"] = reader.ref(train)
        for metric in ("train_accuracy", "test_accuracy"):
            if metric in train.data.metrics:
                report.facts[metric.replace("_", " ").capitalize()] = \
                    f"{train.data.metrics[metric]:.4f}"
        if train.data.tags.get("Converged") == "false":
            report.notes.append("Training did not converge: the model may be weaker than it "
                                "could be.")
    evaluation = (reader.run(tags[store_names.EVALUATION_RUN_TAG])
                  if store_names.EVALUATION_RUN_TAG in tags else None)
    if evaluation is not None:
        report.links["Evaluation run"] = reader.ref(evaluation)
        report.facts |= {label: evaluation.data.tags[tag] for label, tag in (
            ("Model", store_names.MODEL_URI_TAG), ("Model version", store_names.MODEL_VERSION_TAG),
            ("Dataset", store_names.DATASET_TAG), ("Image shape", store_names.IMAGE_SHAPE_TAG),
            ("Dataset digest", store_names.DATASET_DIGEST_TAG)) if tag in evaluation.data.tags}
        if store_names.INPUT_LAYOUT_TAG in evaluation.data.tags:
            report.facts["Model input"] = model_input_text(evaluation.data.tags)
        report.evaluation_metrics = {k: evaluation.data.metrics[k] for k in HEADLINE_METRICS
                                     if k in evaluation.data.metrics}
        for path, caption in ((store_names.CONFUSION_MATRIX_ARTIFACT, "confusion matrix"),
                              (f"{store_names.CURVES_DIR}/calibration_curve.png", "calibration")):
            picture = reader.picture(evaluation, path, caption)
            if picture is not None:
                report.evaluation_pictures.append(picture)
    report.query = {label: tags[tag] for label, tag in (
        ("Filter", store_names.QUERY_TAG), ("Order by", store_names.ORDER_BY_TAG),
        ("Matched samples", store_names.QUERY_MATCHES_TAG),
        ("Explained images", store_names.QUERIED_IMAGES_TAG)) if tag in tags}
    for step_id in filter(None, tags.get(store_names.SALIENCY_RUN_TAG, "").split(",")):
        step = reader.run(step_id)
        if step is not None:
            report.explanations.append(explanation_set(reader, step))
    comparison = (reader.run(tags[store_names.COMPARISON_RUN_TAG])
                  if store_names.COMPARISON_RUN_TAG in tags else None)
    if comparison is not None:
        report.comparison = {k.removesuffix("_mean"): v
                             for k, v in sorted(comparison.data.metrics.items())
                             if k.endswith("_mean")}
        rows = reader.table(comparison, store_names.RANKING_TABLE) or []
        for ranked, run_id in map(from_row, rows):
            step = reader.run(run_id)
            report.ranking.append((ranked, reader.ref(step) if step else RunRef(run_id)))
    return report


def log_report(main_run_id: str, status: str | None = None) -> str:
    """Build the page of pipeline `main_run_id` and log it in that run; returns the page."""
    page = render(collect(main_run_id, status))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, store_names.REPORT_ARTIFACT)
        path.write_text(page, encoding="utf-8")
        MlflowClient().log_artifact(main_run_id, str(path))
    return page


@click.command(help=__doc__)
@options.with_options(options.ENTRY_POINTS["report"])
def report(main_run_id):
    main = runs.require_run(main_run_id, None, "main_run_id", finished=False)
    if store_names.EVALUATION_RUN_TAG not in main.data.tags:
        raise click.BadParameter(f"run {main_run_id} is not a pipeline's main run (it has no "
                                 f"{store_names.EVALUATION_RUN_TAG} tag)", param_hint="'--main_run_id'")
    with lifecycle.run_context(tags={store_names.RUN_NAME_TAG: "report", store_names.REPORT_OF_TAG: main_run_id,
                                     store_names.NOTE_TAG: f"Rebuilt the report of pipeline "
                                                     f"{main_run_id}; it is logged there."}):
        log_report(main_run_id)
    click.echo(f"Report of pipeline {main_run_id} logged as {store_names.REPORT_ARTIFACT} in it "
               f"({mlflow.get_tracking_uri()})")


if __name__ == "__main__":
    options.run_cli(report)
