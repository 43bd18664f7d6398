"""How far a saliency map can be trusted: the RISE paper's causal metrics, and xaitk's Entropy.

Deletion and insertion (Petsiuk et al., 2018, section 4.1): the pixels are ordered by the map's
saliency for a class, most salient first, and changed `CAUSAL_STEPS` times, an equal share each
step. Deletion sets them to 0 in the image; insertion puts them back, from the original image,
into a blurred copy (a Gaussian of `blur_sigma`). The class's probability is measured at each of
the `CAUSAL_STEPS + 1` points (all of them classified in batches) and the metric is the area
under that curve over the fraction of pixels changed, from 0 to 1 (trapezoids). A faithful map
has a low deletion and a high insertion area. The same metrics of a random map of the image
are the baseline a map should beat. Nothing here knows about MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from steps.core.registry import Registry
from steps.core.road import FRACTIONS, LERF, MORF, NOISE, road_images

CAUSAL_STEPS = 50
#: The RISE paper's blur for insertion: sigma 5 px on 224-px images, scaled to the image.
BLUR_SIGMA_AT_224 = 5.0
RANDOM_MAP_SEED = 0


def class_map(maps: np.ndarray, column: int) -> np.ndarray:
    """The `[H, W]` map of one model output column: a class's map of `[classes, H, W]`; of
    MC-RISE's `[colours, classes, H, W]`, its mean over the fill colours; a whole-prediction
    `[H, W]` map as it is."""
    maps = np.asarray(maps)
    if maps.ndim == 2:
        return maps
    if maps.ndim == 4:
        maps = maps.mean(axis=0)
    return maps[column]


def blur_sigma(image: np.ndarray) -> float:
    return max(1.0, BLUR_SIGMA_AT_224 * max(image.shape[:2]) / 224)


def blurred(image: np.ndarray) -> np.ndarray:
    """The insertion base: the image blurred on its height and width only."""
    from scipy.ndimage import gaussian_filter

    sigma = blur_sigma(image)
    return gaussian_filter(image, sigma=(sigma, sigma, 0)[:image.ndim]).astype(image.dtype)


def causal_images(image: np.ndarray, saliency: np.ndarray, start: np.ndarray, end: np.ndarray,
                  steps: int = CAUSAL_STEPS) -> np.ndarray:
    """`[steps + 1, *image.shape]`: `start` with the most salient pixels taken from `end`, none
    at first, all at the last step, `ceil(k * pixels / steps)` at step k."""
    height, width = image.shape[:2]
    pixels = height * width
    rank = np.empty(pixels, dtype=np.int64)
    rank[np.argsort(-np.asarray(saliency, dtype=np.float64).ravel(), kind="stable")] = \
        np.arange(pixels)
    counts = np.ceil(np.arange(steps + 1) * pixels / steps).astype(np.int64)
    changed = (rank[np.newaxis, :] < counts[:, np.newaxis]).reshape(steps + 1, height, width)
    if image.ndim == 3:
        changed = changed[..., np.newaxis]
    return np.where(changed, end, start).astype(image.dtype)


def area_under_curve(curve: np.ndarray) -> float:
    """Trapezoids over the fraction of pixels changed, 0 to 1."""
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


@dataclass
class MapContext:
    """What a map metric sees: the image, one class's map, and the classifier's probabilities
    (`predict`: images -> `[N, columns]`) for that class's `column`."""

    image: np.ndarray
    saliency: np.ndarray
    predict: Callable[[np.ndarray], np.ndarray]
    column: int
    steps: int = CAUSAL_STEPS
    _blurred: np.ndarray | None = field(default=None, repr=False)

    def insertion_base(self) -> np.ndarray:
        if self._blurred is None:
            self._blurred = blurred(self.image)
        return self._blurred


class MapMetric:
    """A measure of one class's map; `compute` gives its value and its curve (or None)."""

    name: ClassVar[str]

    def compute(self, context: MapContext) -> tuple[float, np.ndarray | None]:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"name": self.name}


MAP_METRICS: Registry = Registry("map metric", ordered=True)


class CausalMetric(MapMetric):
    insert: ClassVar[bool]

    def compute(self, context: MapContext) -> tuple[float, np.ndarray]:
        image = context.image
        if self.insert:
            start, end = context.insertion_base(), image
        else:
            start, end = image, np.zeros_like(image)
        images = causal_images(image, context.saliency, start, end, context.steps)
        curve = np.asarray(context.predict(images), dtype=np.float64)[:, context.column]
        return area_under_curve(curve), curve

    def get_config(self) -> dict:
        return {"name": self.name, "steps": CAUSAL_STEPS,
                "base": "blurred image" if self.insert else "zeros",
                **({"blur_sigma_at_224": BLUR_SIGMA_AT_224} if self.insert else {})}


@MAP_METRICS.register
class Deletion(CausalMetric):
    name = "Deletion_auc"
    insert = False


@MAP_METRICS.register
class Insertion(CausalMetric):
    name = "Insertion_auc"
    insert = True


@MAP_METRICS.register
class Entropy(MapMetric):
    """xaitk's `Entropy` of the map (min-max normalised), in bits."""

    name = "Entropy"

    def compute(self, context: MapContext) -> tuple[float, None]:
        from xaitk_saliency.impls.saliency_metric.entropy import Entropy as XaitkEntropy

        return XaitkEntropy().compute(np.asarray(context.saliency)), None


class RoadMetric(MapMetric):
    """ROAD (steps/core/road.py): the class's mean probability with the map's most (MoRF) or
    least (LeRF) relevant pixels removed by noisy linear imputation, over ROAD's fractions."""

    order: ClassVar[str]

    def compute(self, context: MapContext) -> tuple[float, np.ndarray]:
        images = road_images(context.image, context.saliency, self.order)
        curve = np.asarray(context.predict(images), dtype=np.float64)[:, context.column]
        return float(curve.mean()), curve

    def get_config(self) -> dict:
        return {"name": self.name, "order": self.order, "fractions": list(FRACTIONS),
                "imputation": "noisy linear", "noise": NOISE}


@MAP_METRICS.register
class RoadMorf(RoadMetric):
    name = "Road_morf_auc"
    order = MORF


@MAP_METRICS.register
class RoadLerf(RoadMetric):
    name = "Road_lerf_auc"
    order = LERF


ROAD_METRICS = (RoadMorf, RoadLerf)
#: LeRF minus MoRF: how far removing what the map ranks last hurts less than removing what
#: it ranks first (positive for a faithful map).
ROAD_GAP = "Road_lerf_minus_morf"

#: The metrics `beats_random` compares.
AGAINST_RANDOM = ("Deletion_auc", "Random_deletion_auc", "Insertion_auc", "Random_insertion_auc")


def beats_random(metrics: dict[str, float]) -> bool | None:
    """Whether a map's deletion area is below a random map's and its insertion area above;
    None when the metrics do not say."""
    if not set(AGAINST_RANDOM) <= metrics.keys():
        return None
    return (metrics["Deletion_auc"] < metrics["Random_deletion_auc"]
            and metrics["Insertion_auc"] > metrics["Random_insertion_auc"])


@dataclass
class MapScores:
    """A map's metrics by name, the curves by name, and whether it beats a random map."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray]

    def beats_random(self) -> bool:
        return bool(beats_random(self.metrics))


def score_map(maps: np.ndarray, image: np.ndarray, predict, predicted_column: int,
              true_column: int | None, metrics_of_map: tuple[type[MapMetric], ...] | None = None
              ) -> MapScores:
    """Every registered metric (or those of `metrics_of_map`) of the predicted class's map;
    deletion and insertion also for the true class's map when it differs, and for a random map
    (the baseline)."""
    image = np.asarray(image, dtype=np.float32)
    metrics, curves = {}, {}
    blurred_image = blurred(image)

    def run(saliency, column, suffix, which=tuple(MAP_METRICS)):
        context = MapContext(image, saliency, predict, column, _blurred=blurred_image)
        for metric_class in which:
            value, curve = metric_class().compute(context)
            metrics[suffix(metric_class.name)] = value
            if curve is not None:
                curves[suffix(metric_class.name)] = curve

    causal = (Deletion, Insertion)
    run(class_map(maps, predicted_column), predicted_column, lambda name: name,
        tuple(MAP_METRICS) if metrics_of_map is None else metrics_of_map)
    if {RoadLerf.name, RoadMorf.name} <= metrics.keys():
        metrics[ROAD_GAP] = metrics[RoadLerf.name] - metrics[RoadMorf.name]
    if true_column is not None and true_column != predicted_column:
        run(class_map(maps, true_column), true_column, lambda name: f"{name}_true_class",
            causal)
    noise = np.random.default_rng(RANDOM_MAP_SEED).random(image.shape[:2])
    run(noise, predicted_column, lambda name: f"Random_{name[0].lower()}{name[1:]}", causal)
    return MapScores(metrics, curves)


def average_maps(maps: list[np.ndarray], images: list[np.ndarray], true_names: list[str],
                 predicted_names: list[str], fewest: int = 2
                 ) -> dict[tuple[str, str | None], tuple]:
    """Mean maps and mean images by true class (`(true, None)`) and by confusion cell
    (`(true, predicted)`), over maps of one shape: what the model looks at for a class, and
    for the mistakes it makes on it. Only groups of at least `fewest` maps: a mean of one is
    that map."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for index, (true, predicted) in enumerate(zip(true_names, predicted_names)):
        groups.setdefault((true, None), []).append(index)
        groups.setdefault((true, predicted), []).append(index)
    return {key: (np.mean([maps[i] for i in members], axis=0),
                  np.mean([images[i] for i in members], axis=0), len(members))
            for key, members in sorted(groups.items(), key=lambda item: (item[0][0],
                                                                          item[0][1] or ""))
            if len(members) >= fewest}
