"""Comparing saliency algorithms on the same images: configurations, labels and agreement.

A configuration is an algorithm with some of its parameters set, written as the user types it
in `-P compare=...`: `rise,sliding_window` or `rise(s=8 n=2000),sliding_window(stride=2,2)`.
Parameters a configuration does not set take the values shared by all of them. Two maps of the
same image agree as xaitk's saliency metrics say (`compute_xcorr`, `compute_ssd`), each an
agreement measure in the `AGREEMENTS` registry. Nothing here knows about MLflow.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from steps.core.algorithm import ALGORITHMS, SaliencyAlgorithm, make_algorithm, settings_text
from steps.core.errors import ParameterError
from steps.core.parameters import ItemList, as_param
from steps.core.registry import Registry

# `name` or `name(key=value key=value)`, then a comma or the end.
_ITEM = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\(([^()]*)\))?\s*(,|$)")


@dataclass(frozen=True)
class Configuration:
    """An algorithm's name and the parameter values it sets itself, converted."""

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return settings_text(self.name, dict(self.overrides))

    def algorithm(self, shared: dict[str, Any]) -> SaliencyAlgorithm:
        """The algorithm with the shared values, its own overriding them."""
        return make_algorithm(self.name, **{**shared, **dict(self.overrides)})


class Configurations(ItemList):
    """Comma-separated algorithm configurations to compare, at least two, all different;
    empty means no comparison (the empty tuple)."""

    name = "configurations"

    def items(self, text, param, ctx):
        configurations, position = [], 0
        while position < len(text):
            match = _ITEM.match(text, position)
            if match is None:
                self.fail(f"cannot read {text[position:]!r}; give algorithm names, each "
                          "optionally with its settings, e.g. rise,rise(s=8),sliding_window"
                          "(window_size=2,2 stride=1,1)", param, ctx)
            configurations.append(self._configuration(match[1], match[2] or "", param, ctx))
            position = match.end()
            if match[3] == "," and position == len(text):
                self.fail(f"{text!r} ends with a comma", param, ctx)
        if len(configurations) < 2:
            self.fail(f"{text!r} names one configuration; give at least two to compare",
                      param, ctx)
        for first, second in itertools.combinations(configurations, 2):
            if first == second:
                self.fail(f"{first} is given twice", param, ctx)
        return tuple(configurations)

    def _configuration(self, name: str, settings: str, param, ctx) -> Configuration:
        if name not in ALGORITHMS.names():
            self.fail(f"{name!r} is not an algorithm; choose from {', '.join(ALGORITHMS.names())}",
                      param, ctx)
        declared = {p.name: p for p in ALGORITHMS.get(name).all_parameters()}
        overrides = {}
        for setting in settings.split():
            key, equals, value = setting.partition("=")
            if not equals or key not in declared:
                self.fail(f"{setting!r} in {name}(...) is not a setting of {name}; give "
                          f"key=value with a key from {', '.join(declared)}", param, ctx)
            try:
                overrides[key] = declared[key].type.convert(value, None, ctx)
            except ParameterError as error:
                self.fail(f"{name}({key}=...): {error}", param, ctx)
        return Configuration(name, tuple(sorted(overrides.items())))


def configuration_labels(configurations: list[dict[str, Any]]) -> list[str]:
    """A short, distinct, metric-key-safe label for each algorithm configuration (its used
    parameters, `algorithm` included): the algorithm's name, followed by the settings that tell
    it apart from others of the same algorithm, then by its position if nothing does."""
    labels = []
    for configuration in configurations:
        same = [c for c in configurations if c["algorithm"] == configuration["algorithm"]]
        differing = [key for key in configuration
                     if len({as_param(c.get(key)) for c in same}) > 1]
        labels.append("_".join([configuration["algorithm"], *(
            f"{key}{_safe(as_param(configuration[key]))}" for key in differing)]))
    counts = {label: labels.count(label) for label in labels}
    seen: dict[str, int] = {}
    for index, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[index] = f"{label}_{seen[label]}"
    return labels


def _safe(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z.]+", "_", text)


class Agreement:
    """How alike two `[H, W]` maps of the same image and class are, by one of xaitk's
    `xaitk_saliency.utils.sal_metrics` functions."""

    name: ClassVar[str]
    #: The xaitk function.
    function: ClassVar[str]
    #: What a user reads from the value.
    meaning: ClassVar[str]

    def compute(self, first: np.ndarray, second: np.ndarray) -> float:
        from xaitk_saliency.utils import sal_metrics

        return float(getattr(sal_metrics, self.function)(np.asarray(first, np.float64),
                                                         np.asarray(second, np.float64)))

    def get_config(self) -> dict:
        return {"name": self.name, "function": self.function, "meaning": self.meaning}


AGREEMENTS: Registry = Registry("map agreement", ordered=True)


@AGREEMENTS.register
class CrossCorrelation(Agreement):
    name = "Xcorr"
    function = "compute_xcorr"
    meaning = "normalised cross-correlation, -1 to 1: 1 is the same map up to scale"


@AGREEMENTS.register
class SumOfSquaredDifferences(Agreement):
    name = "Ssd"
    function = "compute_ssd"
    meaning = "sum of squared differences over the maps' norms, 0 for identical maps"


def agreements(maps: dict[str, np.ndarray]) -> dict[tuple[str, str], dict[str, float]]:
    """Every registered agreement measure for each pair of labelled `[H, W]` maps, in the
    labels' order."""
    return {(first, second): {measure.name: measure().compute(maps[first], maps[second])
                              for measure in AGREEMENTS}
            for first, second in itertools.combinations(maps, 2)}
