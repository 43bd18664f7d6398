"""Saliency algorithms: each a composition of an xaitk-saliency perturber and scorer.

An algorithm is a small class registered in `ALGORITHMS` (one module per algorithm in
`steps/core/algorithms/`), declaring the parameters it takes. From their values it builds
xaitk's `PerturbationOcclusion(perturber, scorer)` with the occlusion `fill` set, and xaitk's
own high-level stack for the same settings (the reference the fast engine is tested against).
xaitk is imported only when a generator is built, so the CLIs can list the algorithms and check
their parameters quickly. Nothing here knows about MLflow.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

from steps.core.errors import ParameterError
from steps.core.parameters import Choice, Float, Parameter, as_param
from steps.core.registry import Registry

#: Images per classifier call, unless the user sets `predict_batch_size`.
PREDICT_BATCH_SIZE = 256
#: Memory the masks of a step may take (GiB), unless the environment variable says otherwise:
#: the masks are made and kept whole, so settings that need more are refused before any work.
MASK_MEMORY_GIB = 2.0
MASK_MEMORY_ENV = "SALIENCY_FLOW_MASK_MEMORY_GIB"

FILL = Parameter("fill", 0.0, Float(0, 1),
                 "Value occluded pixels take (images are in [0, 1]).")


SCORING = Parameter("scoring", "occlusion", Choice(("occlusion", "squared_difference")),
                    "Random grid, sliding window, sliding radial: xaitk's OcclusionScoring (a map "
                    "per class) or SquaredDifferenceScoring (one map of how much the whole "
                    "prediction changes).")


class SaliencyAlgorithm:
    """One algorithm with its parameter values; `generator()` is the xaitk generator.

    An algorithm also declares what the fast engine may assume of the perturber it builds:
    `shape_only_masks(perturber)` says whether that perturber's masks depend only on its
    configuration and the image's height and width, so are made once per shape and kept
    (`steps/core/fast_saliency.py`, which asks every registered algorithm, also of a perturber
    rebuilt from a stored configuration). The default, no, is always safe: the masks are made
    again for each image.
    """

    name: ClassVar[str]
    #: What it is made of in xaitk's terms (perturber + scorer), for the docs.
    xaitk: ClassVar[str] = ""
    #: The algorithm's own parameters.
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    #: Whether occluded pixels take the `fill` value (every algorithm but those with their own).
    uses_fill: ClassVar[bool] = True

    def __init__(self, **values: Any) -> None:
        # Through each parameter's type, so a default such as "2,2" becomes (2, 2) and values
        # given in code are checked as the CLI checks them.
        self.values = {p.name: p.type.convert(values.get(p.name, p.default), None, None)
                       for p in self.all_parameters()}

    @classmethod
    def all_parameters(cls) -> tuple[Parameter, ...]:
        return (*cls.parameters, FILL) if cls.uses_fill else cls.parameters

    #: Bytes of one mask pixel as xaitk's perturber makes them (RISE-style masks are float32).
    mask_itemsize: ClassVar[int] = 4
    #: The parameter that sets how many masks there are.
    count_parameter: ClassVar[str] = "n"

    def mask_count(self, image_shape: tuple[int, ...]) -> int:
        return self.n

    def check_image(self, image_shape: tuple[int, ...]) -> None:
        """A ParameterError naming the parameter when the settings cannot explain images of this
        shape (`H, W` or `H, W, C`): settings that do not fit the image, or masks that would not
        fit in the memory budget."""
        self.check_shape(image_shape)
        height, width = image_shape[:2]
        needed = self.mask_count(image_shape) * height * width * self.mask_itemsize
        budget = mask_memory_budget()
        if needed > budget:
            value = as_param(self.values[self.count_parameter])
            raise ParameterError(
                f"{self.count_parameter} {value} needs {needed / 2**30:.1f} GiB of masks for "
                f"{height}×{width} images, over the {budget / 2**30:g} GiB budget (set "
                f"{MASK_MEMORY_ENV} to change it)", param=self.count_parameter)

    def check_shape(self, image_shape: tuple[int, ...]) -> None:
        """A ParameterError naming the parameter when a setting does not fit images of this
        shape."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self) -> str:
        """The name and the settings that differ from the defaults, as `-P compare=` takes
        them: `rise(s=8 n=2000)`."""
        return settings_text(self.name, {
            p.name: self.values[p.name] for p in self.all_parameters()
            if as_param(self.values[p.name]) != as_param(p.type.convert(p.default, None, None))})

    def used_params(self) -> dict[str, Any]:
        """Only the parameters this algorithm uses, with its name: what a map run logs."""
        return {"algorithm": self.name, **self.values}

    def get_config(self) -> dict[str, Any]:
        return self.used_params()

    @classmethod
    def shape_only_masks(cls, perturber: Any) -> bool:
        """Whether `perturber` is one this algorithm builds whose masks are the same for every
        image of a shape (a seeded random one, say); False for any other perturber."""
        return False

    def perturber(self):
        raise NotImplementedError

    def scorer(self):
        raise NotImplementedError

    def xaitk_stack(self):
        """xaitk's own high-level generator for the same settings, fill included."""
        raise NotImplementedError

    def generator(self):
        """xaitk's `PerturbationOcclusion` of this perturber and scorer, fill included."""
        from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.occlusion_based import (
            PerturbationOcclusion,
        )

        generator = PerturbationOcclusion(self.perturber(), self.scorer(), threads=0)
        generator.fill = self.fill
        return generator


def mask_memory_budget() -> float:
    """Bytes the masks of one saliency step may take."""
    return float(os.environ.get(MASK_MEMORY_ENV, MASK_MEMORY_GIB)) * 2**30


def settings_text(name: str, settings: dict[str, Any]) -> str:
    """`name`, or `name(key=value key=value)` with the settings."""
    if not settings:
        return name
    return f"{name}({' '.join(f'{k}={as_param(v)}' for k, v in settings.items())})"


def check_fits(image_shape: tuple[int, ...], sizes: dict[str, tuple]) -> None:
    """A ParameterError naming the first `-P name=height,width` larger than the images: a window,
    stride or cell that does not fit gives one occlusion, or none, and maps of nothing."""
    height, width = image_shape[:2]
    for name, (h, w) in sizes.items():
        if h > height or w > width:
            raise ParameterError(f"{name} {h},{w} is larger than the {height}×{width} images",
                                 param=name)


class OcclusionAlgorithm(SaliencyAlgorithm):
    """An algorithm whose occlusion masks xaitk can score either way (`scoring`)."""

    def scorer(self):
        if self.scoring == "squared_difference":
            from xaitk_saliency.impls.gen_classifier_conf_sal.squared_difference_scoring import (
                SquaredDifferenceScoring,
            )

            return SquaredDifferenceScoring()
        from xaitk_saliency.impls.gen_classifier_conf_sal.occlusion_scoring import (
            OcclusionScoring,
        )

        return OcclusionScoring()


class SlidingAlgorithm(OcclusionAlgorithm):
    """An occlusion at every `stride` step over the image: one boolean mask per position."""

    mask_itemsize = 1
    count_parameter = "stride"

    def mask_count(self, image_shape: tuple[int, ...]) -> int:
        (height, width), (down, across) = image_shape[:2], self.stride
        return math.ceil(height / down) * math.ceil(width / across)


ALGORITHMS: Registry = Registry("saliency algorithm", "steps.core.algorithms")


def make_algorithm(name: str, **values: Any) -> SaliencyAlgorithm:
    """The named algorithm with the given values (the declared defaults for the others);
    values of parameters it does not take are ignored."""
    return ALGORITHMS.get(name)(**values)


def algorithm_parameters() -> list[Parameter]:
    """Every algorithm's parameters, each once, in the algorithms' order; `fill` last."""
    seen: dict[str, Parameter] = {}
    for algorithm in ALGORITHMS:
        for parameter in algorithm.parameters:
            if seen.setdefault(parameter.name, parameter) is not parameter:
                raise ValueError(f"parameter {parameter.name!r} is declared twice; algorithms "
                                 "that share it must share its declaration")
    return [*seen.values(), FILL]
