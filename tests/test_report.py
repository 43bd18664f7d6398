"""The report page and the classifier metrics, as functions of their inputs."""

from __future__ import annotations

import dataclasses
import html
import io

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import log_loss, roc_auc_score

from steps.core.classification import Evaluated, classifier_metrics, curve_figures, \
    expected_calibration_error
from steps.core.ranking import rank_configurations
from steps.core.report_page import (ExplainedImage, ExplanationSet, Picture, PipelineReport, RunRef,
                                    SanityResult, metric_meaning, render)
from tests.browser import render_page


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return buffer.getvalue()


def page(ui: str | None = None) -> PipelineReport:
    link = (lambda run_id: RunRef(run_id, f"{ui}/#/experiments/1/runs/{run_id}" if ui else None))
    images = [
        ExplainedImage("cat/<1>.png", "cat", "cat", 0.93, "test", Picture(png("red"), "a"),
                       {"Deletion_auc": 0.1, "Random_deletion_auc": 0.3, "Insertion_auc": 0.6,
                        "Random_insertion_auc": 0.4, "Entropy": 5.0}, link("a" * 32), True),
        ExplainedImage("dog/2.png", "dog", "cat", 0.51, "train", Picture(png("blue"), "b"),
                       {"Deletion_auc": 0.5, "Random_deletion_auc": 0.3}, link("b" * 32), False),
    ]
    return PipelineReport(
        "pipeline & co", link("c" * 32), "FINISHED", {"Model": "models:/m/1"},
        {"Train run": link("d" * 32)}, {"accuracy": 0.9, "num_samples": 450.0},
        [Picture(png("green"), "confusion matrix")],
        {"Filter": "tags.Correct = 'false'", "Matched samples": "2"},
        [ExplanationSet("Saliency: rise", link("e" * 32), {"Maps_beating_random": 0.5}, images)],
        {"Xcorr_rise_vs_sliding_window": 0.8})


def test_the_page_is_self_contained_escaped_and_says_which_maps_to_trust():
    text = render(page())
    assert "<script" not in text and "http" not in text
    assert text.count("data:image/png;base64,") == 3
    assert "cat/&lt;1&gt;.png" in text and "pipeline &amp; co" in text
    assert "tags.Correct = &#x27;false&#x27;" in text
    assert "The map beats random maps" in text
    assert "does not beat random maps" in text
    assert "the model saw it in training" in text  # the train-split image, said so
    assert text.count('class="card wrong"') == 1 and text.count('class="card right"') == 1
    for run_id in ("a", "b", "c", "d", "e"):
        assert run_id * 32 in text


def test_runs_link_to_the_ui_when_its_address_is_known():
    text = render(page("http://127.0.0.1:5000"))
    assert f'href="http://127.0.0.1:5000/#/experiments/1/runs/{"a" * 32}"' in text
    assert "<a " not in render(page())


def test_the_page_renders_in_chromium_with_every_picture_decoded(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render(page()), encoding="utf-8")
    rendered = render_page(path, tmp_path, height=1200)
    assert (rendered.images, rendered.decoded, rendered.errors, rendered.external) == (3, 3, 0, 0)
    shot = np.asarray(Image.open(rendered.screenshot).convert("RGB"))
    # The red picture of the first card is on screen, as drawn.
    assert ((shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] < 60)).sum() > 500


def evaluated() -> Evaluated:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 2.0 * np.eye(3)[truth]
    confidences = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Evaluated(truth, confidences, np.array([0, 1, 2]), ("a", "b", "c"))


def test_classifier_metrics_equal_scikit_learns():
    result = evaluated()
    overall, per_class = classifier_metrics(result)
    assert overall["accuracy"] == pytest.approx(np.mean(result.confidences.argmax(1) == result.truth))
    assert overall["log_loss"] == pytest.approx(log_loss(result.truth, result.confidences))
    assert overall["roc_auc_ovr_macro"] == pytest.approx(
        roc_auc_score(result.truth, result.confidences, multi_class="ovr"))
    assert set(per_class) == {"a", "b", "c"}
    assert all(0 < v["f1"] < 1 for v in per_class.values())


def test_a_model_without_a_column_for_a_true_class_gets_no_log_loss():
    result = evaluated()
    partial = Evaluated(result.truth, result.confidences[:, :2], np.array([0, 1]),
                        ("a", "b", "c"))
    overall, _ = classifier_metrics(partial)
    assert "log_loss" not in overall and "roc_auc_ovr_macro" in overall


def test_expected_calibration_error():
    # Always 0.8 confident and right 8 times in 10: perfectly calibrated.
    assert expected_calibration_error(np.full(10, 0.8), np.arange(10) < 8) == pytest.approx(0)
    # Always 0.9 confident and right half the time: off by 0.4.
    assert expected_calibration_error(np.full(10, 0.9), np.arange(10) < 5) == pytest.approx(0.4)


def test_curve_figures_draw_one_curve_per_class():
    figures = curve_figures(evaluated())
    assert set(figures) == {"roc_curves.png", "precision_recall_curves.png",
                            "calibration_curve.png"}
    assert len(figures["roc_curves.png"].axes[0].get_lines()) >= 3


def test_one_vs_rest_curves_say_so_and_not_positive_label():
    figures = curve_figures(evaluated())
    for name, labels in (("roc_curves.png", ("False positive rate", "True positive rate")),
                         ("precision_recall_curves.png", ("Recall", "Precision"))):
        (ax,) = figures[name].axes
        assert (ax.get_xlabel(), ax.get_ylabel()) == labels
        assert "one-vs-rest" in ax.get_title()
        texts = [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(),
                 *(t.get_text() for t in ax.get_legend().get_texts())]
        assert not any("Positive label" in text for text in texts), texts
        assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()][-3:] == [
            "class a", "class b", "class c"]


def test_the_calibration_plot_shows_how_many_samples_each_bin_holds():
    result = evaluated()
    fig = curve_figures(result)["calibration_curve.png"]
    curve, counts = fig.axes
    assert "ECE" in curve.get_title()
    bars = counts.patches
    assert len(bars) == 10 and sum(b.get_height() for b in bars) == len(result.truth)
    expected = np.histogram(result.confidences.max(axis=1), bins=np.linspace(0, 1, 11))[0]
    assert [int(b.get_height()) for b in bars] == expected.tolist()
    # Each non-empty bin's count is written over it.
    written = [t.get_text() for t in counts.texts if t.get_text()]
    assert written == [str(n) for n in expected if n]
    assert counts.get_ylabel() == "samples per bin"
    assert curve.get_xlim() == counts.get_xlim()  # the same bins under the curve


def test_metric_names_on_the_page_are_explained():
    assert "lower is better" in metric_meaning("Deletion_auc")
    assert metric_meaning("Deletion_auc_mean").startswith("mean over the maps of: area")
    assert "random map" in metric_meaning("Random_insertion_auc")
    assert "cross-correlation" in metric_meaning("Xcorr_rise_vs_sliding_window")
    assert metric_meaning("accuracy") and metric_meaning("expected_calibration_error")
    assert metric_meaning("something_else") is None
    assert metric_meaning("Deletion_auc_true_class").startswith("of the true class's map")
    text = render(page())
    # Beside every metric in a table: its meaning, the map's deletion row as a tooltip.
    for shown in ("Maps_beating_random", "accuracy", "num_samples", "Entropy",
                  "Xcorr_rise_vs_sliding_window"):
        row = text.split(f"<th>{shown}</th>", 1)[1].split("</tr>", 1)[0]
        assert f'<td class="what">{html.escape(metric_meaning(shown))}</td>' in row, shown
    assert f'title="{html.escape(metric_meaning("Deletion_auc"))}"' in text


def test_each_configuration_says_how_far_its_maps_beat_random_and_pass_the_sanity_check():
    report = page()
    (rise,) = report.explanations
    checked = dataclasses.replace(rise, aggregates={
        "Maps_beating_random": 0.5, "Road_morf_auc_mean": 0.31, "Road_lerf_auc_mean": 0.52,
        "Road_lerf_minus_morf_mean": 0.21, "Maps_failing_sanity": 0.5},
        images=[rise.images[0], dataclasses.replace(
            rise.images[1], sanity="failed", metrics={"Sanity_spearman_signed": 0.934})],
        sanity=SanityResult(1, 2, 0.47))
    passed = dataclasses.replace(rise, title="Saliency: sliding_window", aggregates={},
                                 sanity=SanityResult(0, 2, 0.12))
    report.explanations = [checked, passed]
    text = render(report)
    assert "<b>50%</b> of the maps beat random maps; mean ROAD MoRF 0.310, LeRF 0.520, gap " \
           "(LeRF − MoRF) 0.210." in text
    assert ("Sanity check failed for 1 of 2 maps: these maps barely depend on the model "
            "(mean signed Spearman 0.47).") in text
    assert ("Sanity check passed: maps change when the model's weights are randomised "
            "(mean signed Spearman 0.12).") in text
    # The one card whose map failed says so, with its correlation.
    assert text.count("This map barely depends on the model") == 1
    assert ("This map barely depends on the model: it stays the same when the model's weights "
            "are randomised (signed Spearman ρ 0.93).") in text
    # Without a sanity check nor ROAD (the plain page), none of it.
    plain = render(page())
    assert "Sanity check" not in plain and "ROAD" not in plain and "ranked" not in plain
    for name in ("Deletion_random_percentile", "Insertion_random_percentile", "Sanity_spearman",
                 "Sanity_ssim", "Maps_failing_sanity", "Road_morf_auc_mean",
                 "Road_lerf_auc_mean", "Road_lerf_minus_morf_mean", "Sanity_spearman_mean"):
        assert metric_meaning(name), name
    row = text.split("<th>Maps_failing_sanity</th>", 1)[1].split("</tr>", 1)[0]
    assert html.escape(metric_meaning("Maps_failing_sanity")) in row


def test_the_page_shows_the_compared_configurations_ranked():
    report = page()
    ranked = rank_configurations({
        "rise": {"Maps_beating_random": 0.5, "Road_lerf_minus_morf_mean": 0.21},
        "sliding_window": {"Maps_beating_random": 1.0, "Maps_failing_sanity": 1.0},
        "rise_s8": {"Maps_beating_random": 0.5}})
    report.ranking = [(r, RunRef(str(i) * 32)) for i, r in enumerate(ranked)]
    text = render(report)
    table = text.split("<h2>Configurations ranked</h2>", 1)[1].split("</table>", 1)[0]
    rows = [row.split("</td>", 2)[:2] for row in table.split("<tr>")[2:]]
    assert [(rank.removeprefix("<td class=num>"), label.removeprefix("<td>"))
            for rank, label in rows] == [("1", "rise"), ("2", "rise_s8"), ("3", "sliding_window")]
    assert "<td class=num>0.210</td>" in table and table.count("<td class=num>n/a</td>") == 2
    assert "failed (100% of maps)" in table and "0" * 32 in table
