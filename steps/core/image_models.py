"""Image classifiers as the pipeline sees them, and the MLP the train step fits.

Any model is wrapped as an `ImageModel`: probabilities per class for a batch of images
`[N, H, W(, C)]` in [0, 1]. Its `InputConvention` (`steps/core/model_input.py`) turns the images
into what the model takes (flat rows, NHWC or NCHW tensors, scaled and normalised) and its
output into probabilities (softmax of logits). The model kinds are registered in `MODEL_KINDS`;
`class_mapping` ties the model's output columns to the dataset's classes. `randomised` gives
the same model with its learned weights redrawn, for the model-randomisation sanity check
(`steps/core/sanity.py`). Nothing here knows about MLflow.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from steps.core.blas import ONE_PREDICTION, current_threads, threads_for
from steps.core.image_dataset import flatten
from steps.core.model_input import (AUTO, FROM_FLAG, FROM_MEASURED, InputConvention,
                                    ModelInputError, ShapeHint, describe_rows, output_kind)
from steps.core.errors import ModelError, NotRandomisable
from steps.core.parameters import Choice, Float, Integer, IntList, Parameter
from steps.core.registry import Registry



class ImageModel:
    """Probabilities `[N, classes]` for images `[N, H, W(, C)]`: the images prepared by the
    model's `convention`, its raw outputs (`predict_prepared`) made probabilities."""

    name: ClassVar[str]
    #: The model's own label for each output column, or None (columns in the dataset's order).
    labels: tuple | None = None
    #: What the model declares it takes (signature, ONNX graph, fitted feature count), if known.
    hint: ShapeHint | None = None
    convention: InputConvention = InputConvention()
    #: The height and width the model takes, if it declares them, and which declaration says.
    image_size: tuple[int, int] | None = None
    size_source: str | None = None
    #: The type the model's input is given in.
    input_dtype: Any = np.float32

    def predict_prepared(self, batch: np.ndarray) -> Any:
        """The model's own outputs for a batch already in its layout and scale."""
        raise NotImplementedError

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        """The model's own outputs (probabilities or logits) for images in [0, 1]."""
        return np.asarray(self.predict_prepared(self.convention.prepare(images,
                                                                        self.input_dtype)))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.convention.probabilities(self.predict_raw(images))

    def expected_input(self) -> str:
        """What the model takes, in words, for messages."""
        if self.hint is not None:
            return self.hint.describe()
        return "feature rows" if self.convention.layout == "flat" else "image batches"

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.name, "labels": None if self.labels is None else list(self.labels),
                "input": self.convention.as_dict()}

    def randomised(self, seed: int = 0) -> ImageModel:
        """A new model of the same kind, taking the same input and naming the same classes,
        whose learned weights are all redrawn at once (every layer): the model-randomisation
        sanity check of Adebayo et al. (2018) compares a map with the map of this model.

        Each weight array is redrawn from a normal distribution with that array's own mean and
        standard deviation (`redraw`, one `numpy.random.default_rng(seed)` for the whole
        model, the arrays in order), so each layer keeps its scale and loses what it learned;
        an all-zero array stays zero, and an array of one value (or all equal) keeps it. This
        model is left untouched. NotRandomisable when the weights cannot be reached.
        """
        raise NotRandomisable(f"a {self.name} model's weights cannot be redrawn; the sanity "
                              "check needs a scikit-learn or ONNX model")

    def _same_input(self, model: ImageModel) -> ImageModel:
        """`model` given this model's convention, labels, shape hint and image size."""
        for name in ("convention", "labels", "hint", "image_size", "size_source", "input_dtype"):
            setattr(model, name, getattr(self, name))
        return model


def redraw(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New weights of the same shape and type, drawn from a normal distribution with the mean
    and standard deviation of `weights` (`ImageModel.randomised`'s rule)."""
    weights = np.asarray(weights)
    if not weights.any():
        return weights.copy()
    # In float64: float16 weights' own sums overflow.
    wide = weights.astype(np.float64)
    return rng.normal(wide.mean(), wide.std(), weights.shape).astype(weights.dtype)


MODEL_KINDS: Registry = Registry("model kind")


@MODEL_KINDS.register
class ProbaModel(ImageModel):
    """A fitted model with `predict_proba` on feature rows and `classes_` (scikit-learn's API)."""

    name = "predict_proba"

    def __init__(self, model, convention: InputConvention | None = None) -> None:
        self.model = model
        classes = getattr(model, "classes_", None)
        self.labels = None if classes is None else tuple(np.asarray(classes).tolist())
        features = getattr(model, "n_features_in_", None)
        self.hint = ShapeHint((None, int(features)), "scikit-learn") if features else None
        self.convention = convention or InputConvention()

    def predict_prepared(self, batch: np.ndarray) -> Any:
        return self.model.predict_proba(batch)

    #: The learned weights redrawn: an MLP's lists of arrays, a linear model's arrays.
    WEIGHTS = ("coefs_", "intercepts_", "coef_", "intercept_")

    def randomised(self, seed: int = 0) -> ProbaModel:
        """The same estimator with `WEIGHTS` redrawn on every step of a scikit-learn pipeline; see
        `ImageModel.randomised`."""
        model = copy.deepcopy(self.model)
        rng = np.random.default_rng(seed)
        redrawn = 0
        for estimator in _estimators(model):
            # The instance's own attributes only: SVC's `coef_`, say, is a read-only property.
            learned = vars(estimator)
            for name in self.WEIGHTS:
                value = learned.get(name)
                if isinstance(value, list):
                    setattr(estimator, name, [redraw(array, rng) for array in value])
                elif isinstance(value, np.ndarray):
                    setattr(estimator, name, redraw(value, rng))
                else:
                    continue
                redrawn += 1
        if not redrawn:
            raise NotRandomisable(
                f"the scikit-learn model {type(self.model).__name__} has none of "
                f"{', '.join(self.WEIGHTS)} to redraw; the sanity check needs an MLP or a "
                "linear model (or an ONNX model)")
        return self._same_input(ProbaModel(model))


def _estimators(model) -> list:
    """The estimator, or every step of a pipeline (nested ones too)."""
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list):
        return [model]
    return [estimator for _, step in steps if hasattr(step, "__dict__")
            for estimator in _estimators(step)]


@MODEL_KINDS.register
class ProbabilityFunction(ImageModel):
    """A function of the prepared batch that returns one probability (or logit) per class,
    e.g. a pyfunc model's `predict`."""

    name = "function"

    def __init__(self, predict: Callable[[np.ndarray], Any],
                 convention: InputConvention | None = None, labels: Sequence | None = None,
                 hint: ShapeHint | None = None):
        self.predict = predict
        self.convention = convention or InputConvention()
        self.labels = None if labels is None else tuple(labels)
        self.hint = hint

    def predict_prepared(self, batch: np.ndarray) -> Any:
        return self.predict(batch)

    def randomised(self, seed: int = 0) -> ImageModel:
        raise NotRandomisable("a pyfunc model's weights are not reachable from its predict "
                              "function; the sanity check needs a scikit-learn or ONNX model")


#: ONNX tensor element types the pipeline can feed, as numpy types.
ONNX_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                    "tensor(float16)": np.float16}


@MODEL_KINDS.register
class OnnxModel(ImageModel):
    """An ONNX graph run by onnxruntime directly: arrays in and out, no DataFrame. One session
    per thread count, the count chosen by the BLAS policy of the work at hand
    (`steps/core/blas.py`: one thread for the saliency engine's batches)."""

    name = "onnx"

    def __init__(self, model: str | bytes, convention: InputConvention | None = None,
                 labels: Sequence | None = None) -> None:
        self._model = model
        self._sessions: dict[int, Any] = {}
        session = self.session(1)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"the ONNX model takes {len(inputs)} inputs "
                             f"({', '.join(i.name for i in inputs)}); the pipeline gives one "
                             "image tensor")
        self._input = inputs[0].name
        if inputs[0].type not in ONNX_INPUT_TYPES:
            raise ModelError(f"the ONNX model's input {self._input} is {inputs[0].type}; the "
                             f"pipeline gives {', '.join(ONNX_INPUT_TYPES)}")
        self.input_dtype = ONNX_INPUT_TYPES[inputs[0].type]
        self.hint = ShapeHint(tuple(d if isinstance(d, int) else None for d in inputs[0].shape),
                              "graph")
        self.convention = convention or InputConvention()
        self.labels = None if labels is None else tuple(labels)

    def session(self, threads: int):
        """The inference session that runs on `threads` threads."""
        if threads not in self._sessions:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.log_severity_level = 3  # errors only
            self._sessions[threads] = onnxruntime.InferenceSession(
                self._model, options, providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def predict_prepared(self, batch: np.ndarray) -> Any:
        threads = current_threads() or threads_for(ONE_PREDICTION, batch.size)
        return self.session(threads).run(None, {self._input: batch})[0]

    def randomised(self, seed: int = 0) -> OnnxModel:
        """The same graph with every float initializer redrawn; see `ImageModel.randomised`."""
        import onnx
        from onnx import numpy_helper

        # Loaded afresh, so this model's graph is untouched.
        proto = (onnx.load_model_from_string(self._model) if isinstance(self._model, bytes)
                 else onnx.load_model(self._model))
        rng = np.random.default_rng(seed)
        redrawn = 0
        for initializer in proto.graph.initializer:
            weights = numpy_helper.to_array(initializer)
            if np.issubdtype(weights.dtype, np.floating):
                initializer.CopyFrom(numpy_helper.from_array(redraw(weights, rng),
                                                             initializer.name))
                redrawn += 1
        if not redrawn:
            raise NotRandomisable("the ONNX graph has no float initializers to redraw (its "
                                  "weights may be Constant nodes)")
        model = OnnxModel(proto.SerializeToString(), self.convention, self.labels)
        return self._same_input(model)


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
    """Classify a few images and check the answer is probabilities, or logits where the
    convention says or finds so (an `auto` output is settled on the model's convention here);
    ModelError naming the model's input, the images' shapes and the flag that fixes it
    otherwise. Returns the class mapping."""
    sample = np.asarray(images[:2])
    channels = sample.shape[3] if sample.ndim == 4 else 1
    convention = model.convention
    try:
        convention.check_channels(channels, shape_words)
    except ModelInputError as error:
        raise ModelError(str(error), error.param) from None
    prepared = convention.prepare(sample, model.input_dtype)
    given = (f"[{', '.join(map(str, prepared.shape))}] ({convention.layout} from {shape_words} "
             "images)")
    try:
        output = model.predict_prepared(prepared)
    except Exception as error:  # the model's own error says little without the shapes
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"the model does not take these images: it expects "
                         f"{model.expected_input()}, the pipeline gives {given} ({first})") from None
    output = np.asarray(output)
    if output.ndim != 2 or output.shape[0] != len(sample):
        raise ModelError(f"the model returns shape {output.shape} for {given}: labels or scores, "
                         f"not one value per class [N, classes]; log a model whose predict "
                         "gives one probability or logit per class (e.g. "
                         "pyfunc_predict_fn='predict_proba')")
    if not np.issubdtype(output.dtype, np.floating) or not np.isfinite(output).all():
        raise ModelError(f"the model returns {output.dtype} values for {given}, not finite "
                         "probabilities or logits")
    found = output_kind(output)
    if convention.output == AUTO:
        model.convention = convention.with_output(found, FROM_MEASURED)
    elif convention.output == "probabilities" and found != "probabilities":
        origin = convention.sources.get("output")
        said = ("-P model_output=probabilities" if origin == FROM_FLAG
                else f"the model's {origin} says its output is probabilities")
        raise ModelError(f"{said}, but its rows for {given} are not ({describe_rows(output)}): "
                         "they look like logits; use -P model_output=logits (or auto)",
                         "model_output")
    return class_mapping(model, class_names, output.shape[1])


# --- the train step's own model --------------------------------------------------------------


SOLVERS = ("adam", "sgd", "lbfgs")

MLP_PARAMETERS = (
    Parameter("hidden_layer_sizes", "64", IntList(minimum=1), "Hidden layer sizes, e.g. 64,32."),
    Parameter("learning_rate", 0.001, Float(min=0, min_open=True),
              "Initial learning rate (MLPClassifier learning_rate_init)."),
    Parameter("epochs", 200, Integer(min=1), "Maximum epochs (MLPClassifier max_iter)."),
    Parameter("solver", "adam", Choice(SOLVERS), "Optimizer."),
    Parameter("alpha", 0.0001, Float(min=0), "L2 penalty."),
    Parameter("batch_size", 64, Integer(min=1), "Minibatch size."),
    Parameter("random_state", 0, Integer(min=0),
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
