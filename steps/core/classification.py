"""How well a classifier did on a labelled set: the metrics and curves of its evaluation.

Functions of arrays: the true dataset class of each sample, the model's confidences (one column
per model output) and which dataset class each column is. The evaluate step logs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (f1_score, log_loss, precision_recall_fscore_support,
                             roc_auc_score)

from steps.core import plots

#: Equal-width confidence bins of the calibration curve and its expected calibration error.
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Evaluated:
    """A model's confidences on samples whose true classes are known."""

    truth: np.ndarray  # [N] dataset class index
    confidences: np.ndarray  # [N, columns]
    column_classes: np.ndarray  # [columns] dataset class index of each output column
    class_names: tuple[str, ...]  # the dataset's class names

    @property
    def predicted(self) -> np.ndarray:
        return self.column_classes[self.confidences.argmax(axis=1)]

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.truth

    def one_vs_rest(self):
        """(class name, is-this-class, this column's confidence) for each output column whose
        class has both positive and negative samples here (curves need both)."""
        for column, cls in enumerate(self.column_classes):
            positive = self.truth == cls
            if 0 < positive.sum() < len(positive):
                yield self.class_names[cls], positive, self.confidences[:, column]

    def true_columns(self) -> np.ndarray | None:
        """The output column of each sample's true class; None if a true class has none."""
        lookup = {int(cls): column for column, cls in enumerate(self.column_classes)}
        columns = [lookup.get(int(cls)) for cls in self.truth]
        return None if None in columns else np.asarray(columns)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        in_bin = which == b
        error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def classifier_metrics(result: Evaluated) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall: accuracy, macro F1, log loss and mean one-vs-rest ROC-AUC (where defined), and
    the expected calibration error of the top confidence. Per class name: precision, recall
    and F1."""
    indices = list(range(len(result.class_names)))
    truth, predicted = result.truth, result.predicted
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, labels=indices, zero_division=0)
    metrics = {"accuracy": float(np.mean(result.correct)), "num_samples": len(truth),
               "f1_macro": float(f1_score(truth, predicted, labels=indices, average="macro",
                                          zero_division=0)),
               "expected_calibration_error": expected_calibration_error(
                   result.confidences.max(axis=1), result.correct)}
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f)}
                 for name, p, r, f in zip(result.class_names, precision, recall, f1)}
    columns = result.true_columns()
    if columns is not None:
        metrics["log_loss"] = float(log_loss(columns, result.confidences,
                                             labels=list(range(result.confidences.shape[1]))))
    aucs = [roc_auc_score(positive, score) for _, positive, score in result.one_vs_rest()]
    if aucs:
        metrics["roc_auc_ovr_macro"] = float(np.mean(aucs))
    return metrics, per_class


def curve_figures(result: Evaluated) -> dict[str, plots.Figure]:
    """ROC and precision-recall curves of each class against the rest, and the calibration
    curve of the top confidence, keyed by file name."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figures = {}
    # The axis labels are set here: scikit-learn's say "(Positive label: 1)", which means
    # nothing for a class against the rest.
    for file_name, display, kind, (x_label, y_label), legend in (
            ("roc_curves.png", RocCurveDisplay, "ROC",
             ("False positive rate", "True positive rate"), "lower right"),
            ("precision_recall_curves.png", PrecisionRecallDisplay, "Precision-recall",
             ("Recall", "Precision"), "lower left")):
        fig, ax = plots.plt.subplots(figsize=(6, 5))
        for name, positive, score in result.one_vs_rest():
            display.from_predictions(positive, score, name=f"class {name}", ax=ax)
        ax.set_title(f"{kind} curves, one-vs-rest: each class against the rest", fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.legend(fontsize=7, loc=legend)
        figures[file_name] = fig
    figures["calibration_curve.png"] = calibration_figure(result)
    return figures


def calibration_figure(result: Evaluated) -> plots.Figure:
    """The calibration curve of the top confidence and, under it on the same bins, how many
    samples each bin holds (as scikit-learn's calibration example draws them): a bin of few
    samples says little."""
    from sklearn.calibration import CalibrationDisplay

    confidence = result.confidences.max(axis=1)
    fig, (curve, counts) = plots.plt.subplots(2, 1, figsize=(5, 6.4), sharex=True,
                                              height_ratios=(3, 1), layout="constrained")
    CalibrationDisplay.from_predictions(result.correct, confidence, n_bins=CALIBRATION_BINS,
                                        name="top confidence", ax=curve)
    ece = expected_calibration_error(confidence, result.correct)
    curve.set_title(f"Calibration: is the top confidence the accuracy? (ECE {ece:.3f})",
                    fontsize=10)
    curve.set_xlabel("")
    curve.set_ylabel("fraction predicted correctly")
    _, _, bars = counts.hist(confidence, bins=np.linspace(0, 1, CALIBRATION_BINS + 1),
                             color="#888888", edgecolor="white")
    counts.bar_label(bars, labels=[f"{int(b.get_height())}" if b.get_height() else ""
                                   for b in bars], fontsize=7, padding=1)
    counts.margins(y=0.25)  # room for the count over the highest bar
    counts.set_xlabel("confidence of the predicted class")
    counts.set_ylabel("samples per bin")
    return fig
