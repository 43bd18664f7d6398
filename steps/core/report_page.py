"""A pipeline's results on one self-contained HTML page: pictures embedded, no network, no
JavaScript, readable in a browser, a mail attachment or the MLflow UI's artifact view."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from steps import store_names
from steps.core.metrics import (BEATS_RANDOM_PERCENTILE, TRUE_CLASS_SUFFIX, percentile_name,
                                random_name)
from steps.core.ranking import RankedConfiguration

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5em; color: #1f2328; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.sub { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { text-align: left; padding: 0.25em 0.8em 0.25em 0; vertical-align: top; }
th { color: #59636e; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.what { color: #59636e; font-size: 0.9em; }
code { font-size: 0.9em; background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.figures figure { margin: 0; }
.figures img { width: 460px; max-width: 100%; height: auto; border: 1px solid #d0d7de; }
.gallery { display: flex; flex-direction: column; gap: 1em; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 0.8em; display: grid;
        grid-template-columns: minmax(0, 1fr) minmax(0, 1.5fr); gap: 0.5em 2em; }
.card .picture { grid-column: 1 / -1; }
.card figure { margin: 0; }
.card.wrong { border-left: 5px solid #cf222e; } .card.right { border-left: 5px solid #1a7f37; }
.card img { max-width: 100%; height: auto; }
.card h3 { margin: 0 0 0.3em 0; font-size: 1em; }
.bad { color: #cf222e; font-weight: 600; } .good { color: #1a7f37; font-weight: 600; }
.warn { color: #9a6700; }
"""


@dataclass(frozen=True)
class Picture:
    """A PNG and what it shows (its alt text and caption)."""

    png: bytes
    caption: str

    def html(self, captioned: bool = True) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        alt = html.escape(self.caption)
        caption = f'<figcaption class="sub">{alt}</figcaption>' if captioned else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{caption}</figure>'




@dataclass(frozen=True)
class RunRef:
    """A run named on the page: its ID, and a link to it when the MLflow UI's address is known."""

    run_id: str
    url: str | None = None

    def html(self) -> str:
        text = f"<code>{html.escape(self.run_id)}</code>"
        return f'<a href="{html.escape(self.url)}">{text}</a>' if self.url else text


@dataclass(frozen=True)
class ExplainedImage:
    """One explained image: what the model made of it, its picture and its map's metrics."""

    image_id: str
    true_class: str
    predicted_class: str
    confidence: float | None
    split: str | None
    picture: Picture | None
    metrics: dict[str, float]
    run: RunRef
    beats_random: bool | None = None
    #: The sanity check's result (`passed`/`failed`), when the map was checked.
    sanity: str | None = None


@dataclass(frozen=True)
class SanityResult:
    """A step run's sanity check: of the maps checked, how many failed, and their mean
    Spearman correlation with the maps of the model with randomised weights."""

    failed: int
    checked: int
    spearman_mean: float | None = None


@dataclass(frozen=True)
class ExplanationSet:
    """One saliency step run: its algorithm, aggregates and images."""

    title: str
    run: RunRef
    aggregates: dict[str, float]
    images: list[ExplainedImage]
    sanity: SanityResult | None = None


@dataclass
class PipelineReport:
    """Everything the page shows, in order."""

    title: str
    run: RunRef
    status: str
    facts: dict[str, str]  # model and data: label -> text
    links: dict[str, RunRef] = field(default_factory=dict)  # step label -> run
    evaluation_metrics: dict[str, float] = field(default_factory=dict)
    evaluation_pictures: list[Picture] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    explanations: list[ExplanationSet] = field(default_factory=list)
    comparison: dict[str, float] = field(default_factory=dict)  # pair -> mean agreement
    #: The compared configurations, best first, each with its saliency step run.
    ranking: list[tuple[RankedConfiguration, RunRef]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return f"{int(value):,}" if abs(value) < 1e15 else f"{value:g}"


def _table(rows: dict[str, str], numeric: bool = False,
           notes: dict[str, str] | None = None) -> str:
    """Rows of a label and a value, and, for the labels in `notes`, a note after the value."""
    notes = notes or {}
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td{' class=num' if numeric else ''}>{v}</td>"
        + (f'<td class="what">{html.escape(notes[k])}</td>' if k in notes else "") + "</tr>"
        for k, v in rows.items())
    return f"<table>{cells}</table>"


#: What a metric the page shows means, in a few words, by its name (`metric_meaning` also
#: reads the names made from these: `<name>_mean`, `<agreement>_<a>_vs_<b>`).
METRIC_MEANINGS = {
    "accuracy": "share of the evaluated images classified right",
    "num_samples": "images evaluated",
    "f1_macro": "F1 (precision and recall together) averaged over the classes; 1 is perfect",
    "log_loss": "mean -log of the confidence given to the true class; lower is better",
    "roc_auc_ovr_macro": "area under each class's one-vs-rest ROC curve, averaged; 0.5 is "
                         "chance, 1 perfect",
    "expected_calibration_error": "mean gap between confidence and accuracy over confidence "
                                  "bins; 0 is perfectly calibrated",
    "Deletion_auc": "area under the class's probability as the pixels the map ranks first are "
                    "deleted first; lower is better",
    "Insertion_auc": "area under the class's probability as the pixels the map ranks first are "
                     "put back first into a blurred copy; higher is better",
    "Random_deletion_auc": "the same deletion, mean over random maps of the image: 90% of "
                           "them to beat (from below)",
    "Random_insertion_auc": "the same insertion, mean over random maps of the image: 90% of "
                            "them to beat (from above)",
    "Entropy": "how spread out the map is, in bits; lower is more focused",
    "Road_morf_auc": "ROAD: the class's mean probability as the pixels the map ranks first are "
                     "removed by imputation from their neighbours (10 to 90%); lower is better",
    "Road_lerf_auc": "ROAD: the same, the pixels the map ranks last removed first; higher is "
                     "better",
    "Road_lerf_minus_morf": "ROAD LeRF minus MoRF: above 0 when the map's ranking matters; "
                            "higher is better",
    "Maps_beating_random": "share of the maps whose deletion and insertion both beat 90% of "
                           "random maps",
    "Deletion_random_percentile": "share (%) of random maps whose deletion area this map's is "
                                  "below; higher is better",
    "Insertion_random_percentile": "share (%) of random maps whose insertion area this map's "
                                   "is above; higher is better",
    "Sanity_spearman": "sanity check: rank correlation of the map's absolute values with the "
                       "map of the model with randomised weights (Adebayo et al.'s measure)",
    "Sanity_spearman_signed": "sanity check: rank correlation of the map with the map of the "
                              "model with randomised weights; above 0.5 the map barely depends "
                              "on the model, lower is better",
    "Sanity_ssim": "sanity check: structural similarity of the map with the map of the model "
                   "with randomised weights; near 1 means the map barely depends on the "
                   "model, lower is better",
    "Maps_failing_sanity": "share of the maps that stay the same when the model's weights are "
                           "randomised (the sanity check); lower is better",
    "Xcorr": "agreement of two maps: normalised cross-correlation, 1 the same map up to scale",
    "Ssd": "difference of two maps: sum of squared differences over their norms, 0 the same",
}
#: Names made of a metric's name and what they are of it.
STATISTICS = {"_mean": "mean over the maps", "_median": "median over the maps"}


def metric_meaning(name: str) -> str | None:
    """A few words saying what metric `name` means; None for a name not known."""
    for suffix, statistic in STATISTICS.items():
        if name.endswith(suffix):
            meaning = metric_meaning(name.removesuffix(suffix))
            return f"{statistic} of: {meaning}" if meaning else None
    if name.endswith(TRUE_CLASS_SUFFIX):
        meaning = metric_meaning(name.removesuffix(TRUE_CLASS_SUFFIX))
        return (f"of the true class's map (the model was wrong): {meaning}" if meaning
                else None)
    if "_vs_" in name:  # an agreement of two configurations' maps
        name = name.split("_", 1)[0]
    return METRIC_MEANINGS.get(name)


def _metrics_table(metrics: dict[str, float]) -> str:
    """The metrics' values, each with what it means (`metric_meaning`) beside it."""
    notes = {k: meaning for k in metrics if (meaning := metric_meaning(k))}
    return _table({k: _number(v) for k, v in metrics.items()}, numeric=True, notes=notes)


#: Faithfulness metrics that have a random map's value to beat: name -> (label, lower is better).
AGAINST_RANDOM = {"Deletion_auc": ("Deletion AUC", True), "Insertion_auc": ("Insertion AUC", False)}


def _faithfulness_tables(metrics: dict[str, float]) -> tuple[str, str]:
    """This map's deletion and insertion areas against the random maps' (their mean, and the
    share of them this map does better than); the rest, each with what it means."""
    rows, shown = [], set()
    for name, (label, lower_better) in AGAINST_RANDOM.items():
        random_key, percentile_key = random_name(name), percentile_name(name)
        if name not in metrics or random_key not in metrics:
            continue
        shown |= {name, random_key, percentile_key}
        value, random = metrics[name], metrics[random_key]
        percentile = metrics.get(percentile_key)
        if percentile is None:  # a run from before the random maps' percentiles
            better = value < random if lower_better else value > random
            mark = ('<span class="good">better</span>' if better
                    else '<span class="bad">worse</span>')
        else:
            good = percentile >= BEATS_RANDOM_PERCENTILE
            mark = (f'<span class="{"good" if good else "bad"}">better than '
                    f"{percentile:.0f}%</span>")
        rows.append(f'<tr><th title="{html.escape(METRIC_MEANINGS[name])}">{label} '
                    f"({'lower' if lower_better else 'higher'} is better)</th>"
                    f"<td class=num>{value:.3f}</td><td class=num>{random:.3f}</td>"
                    f"<td>{mark}</td></tr>")
    head = ("<tr><th></th><th>this map</th><th>random maps (mean)</th><th></th></tr>"
            if rows else "")
    rest = {k: v for k, v in metrics.items() if k not in shown}
    return f"<table>{head}{''.join(rows)}</table>", (_metrics_table(rest) if rest else "")


def _image_card(image: ExplainedImage) -> str:
    right = image.true_class == image.predicted_class
    outcome = ('<span class="good">correct</span>' if right
               else '<span class="bad">wrong</span>')
    confidence = f", confidence {image.confidence:.3f}" if image.confidence is not None else ""
    split = ("" if image.split in (None, "test")
             else f' <span class="warn">({html.escape(image.split)} image: the model saw it '
                  f'in training)</span>')
    trust = ""
    if image.beats_random is not None:
        trust = ('<p class="good">The map beats random maps (deletion and insertion, better '
                 'than 90% of them).</p>' if image.beats_random else
                 '<p class="bad">The map does not beat random maps: do not trust it.</p>')
    if image.sanity == store_names.SANITY_FAILED:
        spearman = image.metrics.get(store_names.SANITY_SIGNED_SPEARMAN_METRIC)
        trust += ('<p class="bad">This map barely depends on the model: it stays the same when '
                  "the model's weights are randomised"
                  + (f" (signed Spearman ρ {spearman:.2f})" if spearman is not None else "") + ".</p>")
    picture = (image.picture.html(captioned=False) if image.picture
               else "<p class=sub>(no picture)</p>")
    against_random, rest = _faithfulness_tables(image.metrics)
    # The picture across the card, the facts and the metrics (each with its meaning) under it,
    # side by side: a side column beside the picture is too narrow for the meanings.
    return (f'<div class="card {"right" if right else "wrong"}"><div class="picture">{picture}'
            f"</div><div><h3>Image <code>{html.escape(image.image_id)}</code>{split}</h3>"
            f"<p>true <b>{html.escape(image.true_class)}</b>, predicted "
            f"<b>{html.escape(image.predicted_class)}</b>{confidence}: {outcome}</p>"
            f"{trust}{against_random}<p class=sub>map run {image.run.html()}</p></div>"
            f"<div>{rest}</div></div>")


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _set_summary(explanation: ExplanationSet) -> str:
    """The share of maps beating random, the mean ROAD figures and the sanity check's result,
    each when the step run has it."""
    aggregates = explanation.aggregates
    figures = []
    if store_names.BEATING_RANDOM_METRIC in aggregates:
        figures.append(f"<b>{_percent(aggregates[store_names.BEATING_RANDOM_METRIC])}</b> of "
                       "the maps beat random maps")
    road = [f"{label} {aggregates[name]:.3f}" for label, name in (
        ("MoRF", store_names.ROAD_MORF_MEAN_METRIC), ("LeRF", store_names.ROAD_LERF_MEAN_METRIC),
        ("gap (LeRF − MoRF)", store_names.ROAD_GAP_MEAN_METRIC)) if name in aggregates]
    if road:
        figures.append("mean ROAD " + ", ".join(road))
    parts = [f"<p>{'; '.join(figures)}.</p>"] if figures else []
    sanity = explanation.sanity
    if sanity is not None:
        spearman = ("" if sanity.spearman_mean is None
                    else f" (mean signed Spearman {sanity.spearman_mean:.2f})")
        if sanity.failed:
            parts.append(f'<p class="bad">Sanity check failed for {sanity.failed} of '
                         f"{sanity.checked} maps: these maps barely depend on the model"
                         f"{spearman}.</p>")
        else:
            parts.append('<p class="good">Sanity check passed: maps change when the model\'s '
                         f"weights are randomised{spearman}.</p>")
    return "".join(parts)


def _ranking_table(ranking: list[tuple[RankedConfiguration, RunRef]]) -> str:
    """The compared configurations, best first, with the figures they were ranked by."""
    def cell(value: float | None, text) -> str:
        return "<td class=num>n/a</td>" if value is None else f"<td class=num>{text(value)}</td>"

    rows = []
    for ranked, run in ranking:
        failing = ranked.figures.get(store_names.FAILING_SANITY_METRIC)
        sanity = ("" if failing is None else
                  f'<span class="bad">failed ({_percent(failing)} of maps)</span>'
                  if ranked.fails_sanity else '<span class="good">passed</span>'
                  + (f" ({_percent(failing)} of maps failed)" if failing else ""))
        rows.append(f"<tr><td class=num>{ranked.rank}</td><td>{html.escape(ranked.label)}</td>"
                    + cell(ranked.figures.get(store_names.BEATING_RANDOM_METRIC), _percent)
                    + cell(ranked.figures.get(store_names.ROAD_GAP_MEAN_METRIC),
                           lambda v: f"{v:.3f}")
                    + f"<td>{sanity}</td><td>{run.html()}</td></tr>")
    head = ("<tr><th>rank</th><th>configuration</th><th>maps beating random</th>"
            "<th>mean ROAD gap (LeRF − MoRF)</th><th>sanity check</th><th>saliency run</th></tr>")
    return (f"<table>{head}{''.join(rows)}</table><p class=sub>Ranked by the share of maps "
            "beating random maps, then by the mean ROAD gap (both higher is better); a "
            "configuration whose maps mostly fail the sanity check ranks last, and a figure a "
            "run does not have ranks after those it has.</p>")


def render(report: PipelineReport) -> str:
    """The page, as one HTML document."""
    parts = [f"<h1>{html.escape(report.title)}</h1>",
             f"<p class=sub>Main run {report.run.html()}, {html.escape(report.status)}</p>"]
    parts += [f'<p class="warn">{html.escape(note)}</p>' for note in report.notes]
    parts.append("<h2>Model and data</h2>" + _table(
        {k: html.escape(v) for k, v in report.facts.items()}
        | {k: ref.html() for k, ref in report.links.items()}))
    if report.evaluation_metrics or report.evaluation_pictures:
        parts.append("<h2>Evaluation</h2>" + _metrics_table(report.evaluation_metrics)
                     + '<div class="figures">'
                     + "".join(p.html() for p in report.evaluation_pictures) + "</div>")
    if report.query:
        parts.append("<h2>Query</h2>" + _table(
            {k: f"<code>{html.escape(v)}</code>" for k, v in report.query.items()}))
    for explanation in report.explanations:
        parts.append(f"<h2>{html.escape(explanation.title)}</h2>"
                     f"<p class=sub>saliency run {explanation.run.html()}</p>"
                     + _set_summary(explanation) + _metrics_table(explanation.aggregates)
                     + '<div class="gallery">'
                     + "".join(_image_card(image) for image in explanation.images) + "</div>")
    if report.ranking:
        parts.append("<h2>Configurations ranked</h2>" + _ranking_table(report.ranking))
    if report.comparison:
        parts.append("<h2>How far the configurations agree (mean over images)</h2>"
                     + _metrics_table(report.comparison))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
