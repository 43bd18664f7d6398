"""Image classifiers as the pipeline sees them, and the MLP the train step fits.

Any model is wrapped as an `ImageModel`: probabilities per class for a batch of images
`[N, H, W(, C)]` in [0, 1]. Its input convention is the README's: each image flattened in
`H, W, C` order (`images.reshape(n, -1)`), unless the model declares it takes image batches.
The model kinds are registered in `MODEL_KINDS`; `class_mapping` ties the model's output
columns to the dataset's classes. Nothing here knows about MLflow.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import click
import numpy as np

from steps.core.data import flatten
from steps.core.parameters import Float, IntList, Parameter
from steps.core.registry import Registry


class ModelError(ValueError):
    """A model that cannot explain this data; the message names both shapes."""


class ImageModel:
    """Probabilities `[N, classes]` for images `[N, H, W(, C)]`."""

    name: ClassVar[str]
    #: The model's own label for each output column, or None (columns in the dataset's order).
    labels: tuple | None = None

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def expected_input(self) -> str:
        """What the model takes, in words, for messages."""
        return "unknown"

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.name, "labels": None if self.labels is None else list(self.labels)}


MODEL_KINDS: Registry = Registry("model kind")


@MODEL_KINDS.register
class ProbaModel(ImageModel):
    """A fitted model with `predict_proba` on feature rows and `classes_` (scikit-learn's API)."""

    name = "predict_proba"

    def __init__(self, model) -> None:
        self.model = model
        classes = getattr(model, "classes_", None)
        self.labels = None if classes is None else tuple(np.asarray(classes).tolist())

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(flatten(images)))

    def expected_input(self) -> str:
        features = getattr(self.model, "n_features_in_", None)
        return f"[N, {features}] feature rows" if features else "feature rows"


@MODEL_KINDS.register
class ProbabilityFunction(ImageModel):
    """A function that returns one probability per class, given flattened rows (`flat`) or the
    image batch itself (`images`), e.g. a pyfunc model whose signature is an image tensor."""

    name = "function"
    LAYOUTS = ("flat", "images")

    def __init__(self, predict: Callable[[np.ndarray], Any], layout: str = "flat",
                 labels: Sequence | None = None, input_shape: Sequence[int] | None = None):
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout must be one of {self.LAYOUTS}, not {layout!r}")
        self.predict = predict
        self.layout = layout
        self.labels = None if labels is None else tuple(labels)
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        batch = flatten(images) if self.layout == "flat" else np.asarray(images, np.float32)
        return np.asarray(self.predict(batch))

    def expected_input(self) -> str:
        if self.input_shape:
            return "[" + ", ".join("N" if d in (-1, None) else str(d)
                                   for d in self.input_shape) + "]"
        return "feature rows" if self.layout == "flat" else "image batches"

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "layout": self.layout}


@dataclass(frozen=True)
class ClassMapping:
    """The dataset class of each model output column, and each column's class name."""

    column_classes: np.ndarray
    names: tuple[str, ...]

    def predicted(self, confidences: np.ndarray) -> np.ndarray:
        """The dataset class index predicted by each row of confidences."""
        return self.column_classes[np.asarray(confidences).argmax(axis=1)]


def class_mapping(model: ImageModel, class_names: Sequence[str], columns: int) -> ClassMapping:
    """Tie the model's `columns` outputs to the dataset's classes.

    Labels that are integers index the dataset's classes (how the train step fits); other
    labels must be the dataset's class names; a model without labels must have one column per
    dataset class, in the dataset's order.
    """
    labels = model.labels
    names = tuple(class_names)
    if labels is None:
        if columns != len(names):
            raise ModelError(f"the model gives {columns} probabilities per image but the dataset "
                             f"has {len(names)} classes ({', '.join(names[:10])})")
        return ClassMapping(np.arange(columns), names)
    if len(labels) != columns:
        raise ModelError(f"the model names {len(labels)} classes but gives {columns} "
                         "probabilities per image")
    if all(isinstance(label, (int, np.integer)) for label in labels):
        outside = [label for label in labels if not 0 <= label < len(names)]
        if outside:
            raise ModelError(f"the model's classes {outside} are not class indices of the "
                             f"dataset (0 to {len(names) - 1})")
        indices = np.array(labels, dtype=np.int64)
    else:
        position = {name: i for i, name in enumerate(names)}
        unknown = [str(label) for label in labels if str(label) not in position]
        if unknown:
            raise ModelError(f"the model's classes {unknown} are not classes of the dataset "
                             f"({', '.join(names[:10])})")
        indices = np.array([position[str(label)] for label in labels], dtype=np.int64)
    return ClassMapping(indices, tuple(names[i] for i in indices))


def check_model_fits(model: ImageModel, images: np.ndarray, class_names: Sequence[str],
                     shape_words: str) -> ClassMapping:
    """Classify two images and check the answer is probabilities; ModelError naming both the
    model's input and the images' shapes otherwise. Returns the class mapping."""
    sample = np.asarray(images[:2])
    given = f"[{len(sample)}, {flatten(sample).shape[1]}] flattened from {shape_words} images"
    try:
        output = model.predict_proba(sample)
    except Exception as error:  # the model's own error says little without the shapes
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"the model does not take these images: it expects "
                         f"{model.expected_input()}, the pipeline gives {given} ({first})") from None
    output = np.asarray(output)
    if output.ndim != 2 or output.shape[0] != len(sample):
        raise ModelError(f"the model returns shape {output.shape} for {given}: labels or scores, "
                         f"not probabilities [N, classes]; log a model whose predict gives "
                         "one probability per class (e.g. pyfunc_predict_fn='predict_proba')")
    if not np.issubdtype(output.dtype, np.floating) or not np.isfinite(output).all() or \
            output.min() < -1e-6 or output.max() > 1 + 1e-6 or \
            not np.allclose(output.sum(axis=1), 1.0, atol=1e-3):
        raise ModelError(f"the model returns shape {output.shape} for {given}, but its rows are "
                         "not probabilities (each in [0, 1], summing to 1)")
    return class_mapping(model, class_names, output.shape[1])


# --- the train step's own model --------------------------------------------------------------


SOLVERS = ("adam", "sgd", "lbfgs")

MLP_PARAMETERS = (
    Parameter("hidden_layer_sizes", "64", IntList(minimum=1), "Hidden layer sizes, e.g. 64,32."),
    Parameter("learning_rate", 0.001, Float(min=0, min_open=True),
              "Initial learning rate (MLPClassifier learning_rate_init)."),
    Parameter("epochs", 200, click.IntRange(min=1), "Maximum epochs (MLPClassifier max_iter)."),
    Parameter("solver", "adam", click.Choice(SOLVERS), "Optimizer."),
    Parameter("alpha", 0.0001, Float(min=0), "L2 penalty."),
    Parameter("batch_size", 64, click.IntRange(min=1), "Minibatch size."),
    Parameter("random_state", 0, click.IntRange(min=0),
              "Seed of weight initialisation and shuffling."),
)


def _declared(name: str):
    """The declared default of an MLP parameter, converted by its type."""
    (parameter,) = [p for p in MLP_PARAMETERS if p.name == name]
    return field(default=parameter.type.convert(parameter.default, None, None))


@dataclass(frozen=True)
class ModelParams:
    """The hyperparameters a user sets; names and defaults are `MLP_PARAMETERS`'."""

    hidden_layer_sizes: tuple[int, ...] = _declared("hidden_layer_sizes")
    learning_rate: float = _declared("learning_rate")
    epochs: int = _declared("epochs")
    solver: str = _declared("solver")
    alpha: float = _declared("alpha")
    batch_size: int = _declared("batch_size")
    random_state: int = _declared("random_state")

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
    classifier: Any
    loss_curve: list[float]
    converged: bool


def train_classifier(params: ModelParams, images: np.ndarray, labels: np.ndarray) -> TrainedModel:
    """Fit an MLP on flattened images; returns it with its per-epoch training loss and whether
    it converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    classifier = MLPClassifier(**params.as_sklearn())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(flatten(images), labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    # Stochastic solvers keep one loss per epoch; lbfgs only its final loss.
    curve = list(getattr(classifier, "loss_curve_", None) or [classifier.loss_])
    return TrainedModel(classifier=classifier, loss_curve=[float(v) for v in curve], converged=converged)


def predict_confidences(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities `[N, classes]` of a fitted scikit-learn model for images."""
    return np.asarray(model.predict_proba(flatten(images)))


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    predicted = np.asarray(model.classes_)[predict_confidences(model, images).argmax(axis=1)]
    return float(np.mean(predicted == labels))
