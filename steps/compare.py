"""Compare step: how far the maps of several saliency runs of the same images agree.

Takes two or more FINISHED saliency step runs of the same model and data (the driver makes one
per configuration of `-P compare=...`) and logs one "compare" run in the "Saliency Map
Generation" experiment: for every image they share and every pair of configurations, the
agreement of their maps of the predicted class (xaitk's cross-correlation and sum of squared
differences) as metrics `<Measure>_<a>_vs_<b>_image_<Image_id>`, their mean and median over the
images as `<Measure>_<a>_vs_<b>_mean/_median`, the same as one table
(`comparison/agreement.json`, `mlflow.load_table`), and a side-by-side picture per image. It
also ranks the configurations by their step runs' aggregates (steps/core/ranking.py: the share
of maps beating random, then the mean ROAD gap, one failing the sanity check last): a table
(`comparison/ranking.json`), a metric `Rank_<label>` each (1 is best), the description and
the console say the order.
"""

from __future__ import annotations

import click
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run

from steps import options, phases, store_names
from steps.core import plots
from steps.core.agreement import AGREEMENTS, CrossCorrelation, agreements, configuration_labels
from steps.core.metrics import class_map
from steps.core.parameters import text_items
from steps.core.ranking import rank_configurations, ranking_line, table_row
from steps.core.explain import PredictedImage
from steps.tracking import runs
from steps.tracking.map_runs import BATCH_PARAM, identity_tags, stored_map
from steps.tracking.stored_maps import stored_writer

PARAM = "saliency_run_ids"
#: The agreement measure the pictures and the console show.
CAPTION_MEASURE = CrossCorrelation.name


def saliency_step_runs(run_ids) -> list[Run]:
    """FINISHED saliency step runs of one model and one dataset, at least two."""
    if len(run_ids) < 2:
        raise click.BadParameter("give at least two saliency step runs to compare",
                                 param_hint=f"'--{PARAM}'")
    step_runs = [runs.require_run(run_id, store_names.SALIENCY_EXPERIMENT, PARAM) for run_id in run_ids]
    for run in step_runs:
        if store_names.IMAGE_ID_TAG in run.data.tags or store_names.ALGORITHM_TAG not in run.data.tags:
            raise click.BadParameter(
                f"run {run.info.run_id} is not a saliency step run (one with a map run per "
                "image); give the runs the saliency step made", param_hint=f"'--{PARAM}'")
    for tag in (store_names.MODEL_URI_TAG, store_names.DATASET_DIGEST_TAG):
        values = {run.data.tags.get(tag) for run in step_runs}
        if len(values) > 1:
            raise click.BadParameter(
                f"the runs differ in {tag} ({', '.join(sorted(map(str, values)))}); compare "
                "maps of one model on one dataset", param_hint=f"'--{PARAM}'")
    return step_runs


def algorithm_params(run: Run) -> dict[str, str]:
    """What a map run logged of its algorithm: `algorithm` and the parameters it uses."""
    data = {d.name for d in options.DATA + options.SPLIT}
    return {k: v for k, v in run.data.params.items() if k not in data and k != BATCH_PARAM}


def comparison_rows(predicted: PredictedImage, maps: dict[str, np.ndarray], class_names,
                    captions: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Each configuration's map of the predicted class (its panel titled with its label and
    caption), and of the true class when it differs, by row title (the class and the model's
    confidence in it)."""
    def row_title(kind: str, column: int) -> str:
        confidence = ("" if predicted.confidences is None
                      else f" ({float(predicted.confidences[column]):.2f})")
        return f"{kind} class {class_names[column]}{confidence}"

    rows = {row_title("predicted", predicted.predicted_column): {
        f"{label}{captions.get(label, '')}": class_map(m, predicted.predicted_column)
        for label, m in maps.items()}}
    if predicted.true_column is not None and predicted.true_column != predicted.predicted_column:
        rows[row_title("true", predicted.true_column)] = {
            label: class_map(m, predicted.true_column) for label, m in maps.items()}
    return rows


def map_meaning(configurations: list[dict[str, str]]) -> plots.MapMeaning:
    """What the compared maps' values mean, when they all mean the same (else `COMPARED`)."""
    kinds = {"filling" if c.get("algorithm") == "mc_rise" else
             "occluding" if c.get("scoring") == "squared_difference" else "showing"
             for c in configurations}
    known = {"showing": plots.SHOWING, "occluding": plots.OCCLUDING}
    return known.get(kinds.pop(), plots.COMPARED) if len(kinds) == 1 else plots.COMPARED


@click.command(help=__doc__)
@options.with_options(options.ENTRY_POINTS["compare"])
def compare(saliency_run_ids):
    step_runs = saliency_step_runs(saliency_run_ids)
    by_run = [runs.map_runs(run) for run in step_runs]
    image_ids = [i for i in text_items(step_runs[0].data.tags[store_names.IMAGE_IDS_TAG])
                 if all(i in maps for maps in by_run)]
    if not image_ids:
        raise click.BadParameter("the runs share no image; compare runs of the same images",
                                 param_hint=f"'--{PARAM}'")
    configurations = [algorithm_params(maps[image_ids[0]]) for maps in by_run]
    labels = configuration_labels(configurations)
    first = by_run[0][image_ids[0]]
    writer = stored_writer(first, plots.PictureStyle("combined"),
                                 int(first.data.params[BATCH_PARAM]), image_ids, PARAM)
    class_names = writer.inputs.classes.names
    rows, metrics = [], {}
    with runs.step_run(store_names.SALIENCY_EXPERIMENT, "compare"):
        mlflow.set_tags({**writer.step_tags(),
                         store_names.COMPARED_RUNS_TAG: ",".join(saliency_run_ids),
                         store_names.CONFIGURATIONS_TAG: ", ".join(labels),
                         store_names.IMAGE_IDS_TAG: options.as_param(tuple(image_ids))})
        mlflow.log_dict({label: {"saliency_run_id": run.info.run_id, **configuration}
                         for label, run, configuration in zip(labels, step_runs, configurations)},
                        store_names.CONFIGURATIONS_ARTIFACT)
        for image_id in image_ids:
            image = writer.explainer.predict(image_id)
            maps = {label: stored_map(maps[image_id]) for label, maps in zip(labels, by_run)}
            predicted_maps = {label: class_map(m, image.predicted_column)
                              for label, m in maps.items()}
            captions = {}
            for (a, b), values in agreements(predicted_maps).items():
                rows.append({**identity_tags(image), "first": a, "second": b, **values})
                metrics.update({store_names.agreement_metric(measure, a, b, image_id): value
                                for measure, value in values.items()})
                if a == labels[0]:
                    captions[b] = f"\n{CAPTION_MEASURE} {values[CAPTION_MEASURE]:.2f} with {a}"
            with phases.phase(store_names.PICTURES_PHASE):
                fig = plots.comparison_figure(
                    image.image, comparison_rows(image, maps, class_names, captions),
                    image.title(), map_meaning(configurations))
                mlflow.log_figure(fig, f"{store_names.COMPARISON_DIR}/image_"
                                       f"{store_names.metric_safe(image_id)}.png")
                plots.plt.close(fig)
        table = pd.DataFrame(rows)
        pairs = table.groupby(["first", "second"], sort=False)
        for measure in AGREEMENTS.names():
            for statistic in ("mean", "median"):
                metrics.update({f"{store_names.agreement_metric(measure, a, b)}_{statistic}":
                                float(value) for (a, b), value in
                                pairs[measure].agg(statistic).items()})
        ranked = rank_configurations({label: run.data.metrics
                                      for label, run in zip(labels, step_runs)})
        run_ids = {label: run.info.run_id for label, run in zip(labels, step_runs)}
        metrics.update({store_names.rank_metric(r.label): r.rank for r in ranked})
        mlflow.log_metrics(metrics)
        mlflow.log_table(table, store_names.AGREEMENT_TABLE)
        mlflow.log_table(pd.DataFrame([table_row(r, run_ids[r.label]) for r in ranked]),
                         store_names.RANKING_TABLE)
        ranking = ranking_line(ranked)
        agreement = "; ".join(f"{a} vs {b} {value:.3f}"
                              for (a, b), value in pairs[CAPTION_MEASURE].mean().items())
        runs.describe(f"Compared the maps of {', '.join(labels)} on {len(image_ids)} images; "
                      f"mean {CAPTION_MEASURE}: {agreement}.\n\nRanking: {ranking}.")
        click.echo(f"Compared {', '.join(labels)} on {len(image_ids)} images; mean "
                   f"{CAPTION_MEASURE}: {agreement}")
        click.echo(f"Ranking: {ranking}")


if __name__ == "__main__":
    options.run_cli(compare)
