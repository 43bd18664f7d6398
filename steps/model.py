"""The image classifier: an sklearn `MLPClassifier` on flattened pixels.

Pure functions of arrays; nothing here knows about MLflow.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from steps.data import flatten



@dataclass(frozen=True)
class ModelParams:
    """The hyperparameters a user sets; names follow the MLproject parameters."""

    hidden_layer_sizes: tuple[int, ...] = (64,)
    learning_rate: float = 0.001
    epochs: int = 200
    solver: str = "adam"
    alpha: float = 0.0001
    batch_size: int = 64
    random_state: int = 0

    def as_sklearn(self) -> dict:
        """The same settings under `MLPClassifier`'s own argument names."""
        p = asdict(self)
        return {
            "hidden_layer_sizes": tuple(p["hidden_layer_sizes"]),
            "learning_rate_init": p["learning_rate"],
            "max_iter": p["epochs"],
            "solver": p["solver"],
            "alpha": p["alpha"],
            "batch_size": p["batch_size"],
            "random_state": p["random_state"],
        }


@dataclass
class TrainedModel:
    classifier: MLPClassifier
    loss_curve: list[float]
    converged: bool


def train_classifier(params: ModelParams, images: np.ndarray, labels: np.ndarray) -> TrainedModel:
    """Fit an MLP; returns it with its per-epoch training loss and whether it converged."""
    classifier = MLPClassifier(**params.as_sklearn())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(flatten(images), labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    # Stochastic solvers keep one loss per epoch; lbfgs only its final loss.
    curve = list(getattr(classifier, "loss_curve_", None) or [classifier.loss_])
    return TrainedModel(classifier=classifier, loss_curve=[float(v) for v in curve], converged=converged)


def predict_confidences(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities `[N, classes]` for images `[N, H, W]`."""
    return np.asarray(model.predict_proba(flatten(images)))


def predicted_labels(model, confidences: np.ndarray) -> np.ndarray:
    """The model's class label for each row of confidences."""
    return np.asarray(model.classes_)[np.asarray(confidences).argmax(axis=1)]


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted_labels(model, predict_confidences(model, images)) == labels))
