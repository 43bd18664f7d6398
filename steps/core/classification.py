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
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figures = {}
    for file_name, display, title in (
            ("roc_curves.png", RocCurveDisplay, "ROC, each class against the rest"),
            ("precision_recall_curves.png", PrecisionRecallDisplay,
             "Precision-recall, each class against the rest")):
        fig, ax = plots.plt.subplots(figsize=(6, 5))
        for name, positive, score in result.one_vs_rest():
            display.from_predictions(positive, score, name=f"class {name}", ax=ax)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower right" if display is RocCurveDisplay else "lower left")
        figures[file_name] = fig
    fig, ax = plots.plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(result.correct, result.confidences.max(axis=1),
                                        n_bins=CALIBRATION_BINS, name="top confidence", ax=ax)
    ece = expected_calibration_error(result.confidences.max(axis=1), result.correct)
    ax.set_title(f"Calibration: is the top confidence the accuracy? (ECE {ece:.3f})",
                 fontsize=10)
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("fraction predicted correctly")
    figures["calibration_curve.png"] = fig
    return figures
