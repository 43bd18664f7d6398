"""Saliency algorithms: each a composition of an xaitk-saliency perturber and scorer.

An algorithm is a small class registered in `ALGORITHMS` (one module per algorithm in
`steps/core/algorithms/`), declaring the parameters it takes. From their values it builds
xaitk's `PerturbationOcclusion(perturber, scorer)` with the occlusion `fill` set, and xaitk's
own high-level stack for the same settings (the reference the fast engine is tested against).
xaitk is imported only when a generator is built, so the CLIs can list the algorithms and check
their parameters quickly. Nothing here knows about MLflow.
"""

from __future__ import annotations

from typing import Any, ClassVar

import click

from steps.core.parameters import Float, Parameter, as_param
from steps.core.registry import Registry

#: Images per classifier call, unless the user sets `predict_batch_size`.
PREDICT_BATCH_SIZE = 256

FILL = Parameter("fill", 0.0, Float(0, 1),
                 "Value occluded pixels take (images are in [0, 1]).")


SCORING = Parameter("scoring", "occlusion", click.Choice(("occlusion", "squared_difference")),
                    "Random grid, sliding window, sliding radial: xaitk's OcclusionScoring (a map "
                    "per class) or SquaredDifferenceScoring (one map of how much the whole "
                    "prediction changes).")


class SaliencyAlgorithm:
    """One algorithm with its parameter values; `generator()` is the xaitk generator."""

    name: ClassVar[str]
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

    def check_image(self, image_shape: tuple[int, ...]) -> None:
        """A click error naming the parameter when the settings cannot explain images of this
        shape (`H, W` or `H, W, C`)."""

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


def settings_text(name: str, settings: dict[str, Any]) -> str:
    """`name`, or `name(key=value key=value)` with the settings."""
    if not settings:
        return name
    return f"{name}({' '.join(f'{k}={as_param(v)}' for k, v in settings.items())})"


def check_fits(image_shape: tuple[int, ...], sizes: dict[str, tuple]) -> None:
    """A click error naming the first `-P name=height,width` larger than the images: a window,
    stride or cell that does not fit gives one occlusion, or none, and maps of nothing."""
    height, width = image_shape[:2]
    for name, (h, w) in sizes.items():
        if h > height or w > width:
            raise click.BadParameter(f"{name} {h},{w} is larger than the {height}×{width} images",
                                     param_hint=f"'--{name}'")


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
