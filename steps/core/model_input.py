"""A model's input convention: how the pipeline's images become what the model takes, and how
what it returns becomes probabilities.

The pipeline's images are `[N, H, W]` (grey) or `[N, H, W, C]` pixels in [0, 1]. A model takes
them in one `layout`: `flat` rows in `H, W, C` order (scikit-learn's), `nhwc` or `nchw` tensors
(Keras's, PyTorch's and most ONNX exports'). Pixels are first multiplied by `scale` (255 for
models trained on 0..255), then normalised per channel by `mean` and `std` (torchvision's
`Normalize`). The model returns `probabilities`, or `logits`, to which softmax is applied.

Each fact is resolved once, in this order: what the user set (`-P`), the model's own metadata
(`image_input` in its MLmodel), what its signature or ONNX graph says, then the defaults; for
the output, what the model's answer on a few images shows (`measured`). Each resolved fact
remembers where it came from. Nothing here knows about MLflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from steps.core.errors import ModelError
from steps.core.parameters import Choice, Float, NumberList, Parameter, ParamType

LAYOUTS = ("flat", "nhwc", "nchw")
OUTPUTS = ("probabilities", "logits")
AUTO = "auto"
#: The key of a model's MLmodel `metadata` that carries its convention.
METADATA_KEY = "image_input"
#: The fields `METADATA_KEY` may hold besides the convention's own.
METADATA_FIELDS = ("layout", "scale", "mean", "std", "output", "class_names", "image_size")

# Where a resolved fact came from.
FROM_FLAG = "flag"
FROM_METADATA = "metadata"
FROM_DEFAULT = "default"
FROM_MEASURED = "measured"
#: How far a row of probabilities may sum from 1.
SUM_TOLERANCE = 1e-3


class ModelInputError(ModelError):
    """An input convention that cannot hold for this model or these images; `param` is the
    parameter that fixes it."""


class OptionalFloat(ParamType):
    """A finite number in a range (`Float`'s arguments), or empty for none (None)."""

    name = "optional_float"

    def __init__(self, **bounds) -> None:
        self.number = Float(**bounds)

    def convert(self, value, param=None, ctx=None):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.number.convert(value, param, ctx)

    def accepts(self) -> str:
        return self.number.accepts()


MODEL_INPUT_PARAMETERS = (
    Parameter("input_layout", AUTO, Choice((AUTO, *LAYOUTS)),
              "How the model takes images: flat rows (H, W, C order), nhwc or nchw tensors "
              "(auto: the model's metadata, signature or ONNX graph; flat if none says)."),
    Parameter("input_scale", "", OptionalFloat(min=0, min_open=True),
              "Multiply the [0, 1] pixels by this first, e.g. 255 (empty: the model's "
              "metadata, else 1)."),
    Parameter("input_mean", "", NumberList(minimum=None, allow_empty=True),
              "Per-channel mean subtracted after scaling: one value or one per channel "
              "(empty: the model's metadata, else none)."),
    Parameter("input_std", "", NumberList(minimum=0, min_open=True, allow_empty=True),
              "Per-channel std divided by after the mean (empty: the model's metadata, else "
              "none)."),
    Parameter("model_output", AUTO, Choice((AUTO, *OUTPUTS)),
              "What the model returns: probabilities, or logits (softmax is applied); auto: "
              "the model's metadata, else rows that are probabilities are, others logits."),
)


@dataclass(frozen=True)
class ShapeHint:
    """What a model's declared input shape (MLflow signature or ONNX graph) says."""

    shape: tuple  # axes as declared: an int, or None / -1 / a name for a free one
    source: str  # "signature" or "graph"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def fixed(self, axis: int) -> int | None:
        value = self.shape[axis]
        return value if isinstance(value, (int, np.integer)) and value > 0 else None

    def layout(self) -> str | None:
        """`flat` for two axes; for four, `nchw` when axis 1 has 1 or 3 channels and the last
        does not, `nhwc` otherwise; `nhwc` for three (grey images `[N, H, W]`)."""
        if self.rank == 2:
            return "flat"
        if self.rank == 3:
            return "nhwc"
        if self.rank == 4:
            return "nchw" if self.fixed(1) in (1, 3) and self.fixed(3) not in (1, 3) else "nhwc"
        return None

    def image_size(self, layout: str) -> tuple[int, int] | None:
        """The fixed height and width the model takes, if it declares them."""
        axes = {"nchw": (2, 3), "nhwc": (1, 2)}.get(layout)
        if axes is None or self.rank < 3 or (layout == "nchw" and self.rank != 4):
            return None
        size = tuple(self.fixed(axis) for axis in axes)
        return size if None not in size else None

    def describe(self) -> str:
        return "[" + ", ".join("N" if i == 0 else (str(d) if self.fixed(i) else "?")
                               for i, d in enumerate(self.shape)) + "]"


@dataclass(frozen=True)
class InputConvention:
    """Resolved: how images become the model's input, and its output probabilities."""

    layout: str = "flat"
    scale: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    output: str = AUTO  # AUTO until measured on the model's answer
    #: Where each field came from, by field name.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: The rank of the model's declared input, if known: 3 takes grey images `[N, H, W]`.
    rank: int | None = field(default=None, compare=False)

    FIELDS = ("layout", "scale", "mean", "std", "output")

    def prepare(self, images: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Images `[N, H, W(, C)]` in [0, 1] as the model takes them, in `dtype`."""
        batch = np.asarray(images, dtype=dtype)
        if self.scale != 1:
            batch = batch * np.asarray(self.scale, dtype=batch.dtype)
        if self.mean or self.std:
            grey = batch.ndim == 3
            pixels = batch[..., np.newaxis] if grey else batch
            if self.mean:
                pixels = pixels - np.asarray(self.mean, dtype=batch.dtype)
            if self.std:
                pixels = pixels / np.asarray(self.std, dtype=batch.dtype)
            batch = pixels[..., 0] if grey else pixels
        if self.layout == "flat":
            return batch.reshape(len(batch), -1)
        if batch.ndim == 3 and self.rank != 3:
            batch = batch[..., np.newaxis]  # grey images with their one channel
        if self.layout == "nchw":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return batch

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """The model's outputs as probabilities: softmax of logits, probabilities as they are."""
        outputs = np.asarray(outputs)
        if self.output != "logits":
            return outputs
        outputs = outputs.astype(np.float64)  # as xaitk reads confidences: Python floats
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def check_channels(self, channels: int, shape_words: str) -> None:
        """Mean and std of one value or one per channel of the images."""
        for name, values in (("input_mean", self.mean), ("input_std", self.std)):
            if len(values) not in (0, 1, channels):
                raise ModelInputError(
                    f"{name} has {len(values)} values ({as_text(values)}) but the images are "
                    f"{shape_words}, {channels} channel{'s' if channels != 1 else ''}; give one "
                    f"value or one per channel", name)

    def with_output(self, output: str, source: str) -> InputConvention:
        return replace(self, output=output, sources={**self.sources, "output": source})

    def as_dict(self) -> dict[str, Any]:
        """The convention and where each fact came from: what is stored with a map."""
        values = asdict(self)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        values["sources"] = dict(self.sources)
        return values

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> InputConvention:
        return cls(stored["layout"], float(stored["scale"]), tuple(stored.get("mean") or ()),
                   tuple(stored.get("std") or ()), stored["output"],
                   dict(stored.get("sources") or {}), stored.get("rank"))

    def describe(self) -> str:
        """E.g. `nchw, scale 255, mean 123.675,116.28,103.53, std 58.395,57.12,57.375, logits`."""
        parts = [self.layout, f"scale {as_text((self.scale,))}"]
        if self.mean:
            parts.append(f"mean {as_text(self.mean)}")
        if self.std:
            parts.append(f"std {as_text(self.std)}")
        parts.append("logits (softmax applied)" if self.output == "logits" else self.output)
        return ", ".join(parts)

    def describe_sources(self) -> str:
        """E.g. `layout: graph, scale: metadata, mean: metadata, std: metadata, output: flag`."""
        return ", ".join(f"{name}: {self.sources.get(name, FROM_DEFAULT)}" for name in self.FIELDS)


def as_text(values: Sequence[float]) -> str:
    """Numbers as the user types them: `255`, `0.5`, `123.675,116.28`."""
    return ",".join(f"{float(v):g}" if float(v) == int(v) else repr(float(v)) for v in values)


def flags_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """The facts the user set, by convention field, from the step's converted parameters
    (`auto` and empty values are not set)."""
    given = {"layout": values.get("input_layout"), "scale": values.get("input_scale"),
             "mean": values.get("input_mean") or None, "std": values.get("input_std") or None,
             "output": values.get("model_output")}
    return {name: value for name, value in given.items() if value not in (None, AUTO, ())}


def metadata_facts(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `image_input` entry of a model's MLmodel metadata, checked; ModelInputError naming
    the bad field."""
    entry = (metadata or {}).get(METADATA_KEY)
    if entry is None:
        return {}
    if not isinstance(entry, Mapping):
        raise ModelInputError(f"the model's metadata {METADATA_KEY!r} is not a mapping")
    unknown = sorted(set(entry) - set(METADATA_FIELDS))
    if unknown:
        raise ModelInputError(f"the model's metadata {METADATA_KEY!r} has unknown fields "
                              f"{unknown}; it may hold {', '.join(METADATA_FIELDS)}")
    facts = dict(entry)

    def bad(name: str, why: str) -> ModelInputError:
        return ModelInputError(f"the model's metadata {METADATA_KEY}.{name} = {entry[name]!r} "
                               f"{why}")

    if "layout" in facts and facts["layout"] not in LAYOUTS:
        raise bad("layout", f"is not one of {', '.join(LAYOUTS)}")
    if "output" in facts and facts["output"] not in OUTPUTS:
        raise bad("output", f"is not one of {', '.join(OUTPUTS)}")
    try:
        if "scale" in facts:
            facts["scale"] = float(facts["scale"])
            if not np.isfinite(facts["scale"]) or facts["scale"] <= 0:
                raise bad("scale", "is not a positive number")
        for name in ("mean", "std"):
            if name in facts:
                values = facts[name]
                values = tuple(map(float, values if isinstance(values, (list, tuple))
                                   else [values]))
                if not all(np.isfinite(values)) or (name == "std" and min(values) <= 0):
                    raise bad(name, "is not finite numbers" + (" above 0" if name == "std" else ""))
                facts[name] = values
        if "image_size" in facts:
            size = tuple(int(v) for v in facts["image_size"])
            if len(size) != 2 or min(size) < 1:
                raise bad("image_size", "is not [height, width]")
            facts["image_size"] = size
        if "class_names" in facts:
            facts["class_names"] = tuple(str(name) for name in facts["class_names"])
    except (TypeError, ValueError) as error:
        if isinstance(error, ModelInputError):
            raise
        raise ModelInputError(f"the model's metadata {METADATA_KEY!r} cannot be read "
                              f"({error})") from None
    return facts


def resolve_convention(flags: Mapping[str, Any], metadata: Mapping[str, Any],
                       hint: ShapeHint | None) -> InputConvention:
    """Each fact from the first that gives it: the user's flags, the model's metadata, its
    declared input shape (layout only), the defaults. ModelInputError when the layout set by
    flag or metadata contradicts the declared shape (flat rows against image tensors)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    declared = hint.layout() if hint is not None else None
    for name in InputConvention.FIELDS:
        for source, given in ((FROM_FLAG, flags), (FROM_METADATA, metadata)):
            if name in given:
                values[name], sources[name] = given[name], source
                break
        else:
            if name == "layout" and declared is not None:
                values[name], sources[name] = declared, hint.source
            else:
                sources[name] = FROM_DEFAULT
    convention = InputConvention(**values, sources=sources,
                                 rank=hint.rank if hint is not None else None)
    if declared is not None and (declared == "flat") != (convention.layout == "flat"):
        what = "flat feature rows" if declared == "flat" else "image tensors"
        origin = sources["layout"]
        set_by = (f"-P input_layout={convention.layout}" if origin == FROM_FLAG else
                  f"the model's {origin} layout {convention.layout}")
        raise ModelInputError(f"{set_by} does not fit the model: it takes {what} "
                              f"{hint.describe()} ({hint.source}); use -P input_layout="
                              f"{declared} or auto",
                              "input_layout" if origin == FROM_FLAG else "model_uri")
    return convention


def output_kind(outputs: np.ndarray) -> str:
    """`probabilities` for rows in [0, 1] that sum to 1, `logits` for anything else."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if (np.isfinite(outputs).all() and outputs.min() >= -1e-6 and outputs.max() <= 1 + 1e-6
            and np.allclose(outputs.sum(axis=1), 1.0, atol=SUM_TOLERANCE)):
        return "probabilities"
    return "logits"


def describe_rows(outputs: np.ndarray) -> str:
    """What a model's output rows look like, for messages."""
    outputs = np.asarray(outputs, dtype=np.float64)
    sums = ", ".join(f"{s:.3g}" for s in outputs.sum(axis=1)[:4])
    return f"values from {outputs.min():.3g} to {outputs.max():.3g}, rows summing to {sums}"
