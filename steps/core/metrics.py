"""How far a saliency map can be trusted: the RISE paper's causal metrics against a
distribution of random maps, ROAD, and xaitk's Entropy.

Deletion and insertion (Petsiuk et al., 2018, section 4.1): the pixels are ordered by the map's
saliency for a class, most salient first, and changed `metric_steps` times, an equal share each
step. Deletion replaces them with a baseline (`metric_baseline`: the mean colour, black, a
blurred copy or the algorithm's fill); insertion puts them back, from the original image, into
a start image (`insertion_start`, a blurred copy by default: a Gaussian of `blur_sigma`). The
class's probability is measured at each of the `metric_steps + 1` points (all classified in
batches) and the metric is the area under that curve over the fraction of pixels changed, 0 to
1 (trapezoids). A faithful map has a low deletion and a high insertion area. The same metrics
of `random_maps` random maps of the image (seeded by its ID) are the baseline: a map "beats
random" when it does better than at least `BEATS_RANDOM_PERCENTILE`% of them on both. Nothing
here knows about MLflow.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from steps.core.parameters import BOOLEAN, Choice, Integer, Parameter
from steps.core.registry import Registry
from steps.core.road import FRACTIONS, LERF, MORF, NOISE, road_images

CAUSAL_STEPS = 50
#: The RISE paper's blur for insertion: sigma 5 px on 224-px images, scaled to the image.
BLUR_SIGMA_AT_224 = 5.0
RANDOM_MAPS = 10
#: A map beats random when it does better than this share (in %) of the random maps, on
#: deletion and on insertion.
BEATS_RANDOM_PERCENTILE = 90.0

#: What deleted pixels become, and what insertion starts from.
MEAN, ZERO, BLUR, FILL = "mean", "zero", "blur", "fill"
BASELINES = (MEAN, ZERO, BLUR, FILL)

METRIC_BASELINE = Parameter(
    "metric_baseline", MEAN, Choice(BASELINES),
    "Deletion metric: what deleted pixels become: the mean colour (`mean`: the model's own "
    "input_mean where it declares one, else the training split's per-channel mean), black "
    "(`zero`), a blurred copy of the image (`blur`) or the value the algorithm occluded with "
    "(`fill`).")
INSERTION_START = Parameter(
    "insertion_start", BLUR, Choice(BASELINES),
    "Insertion metric: the image the most salient pixels are put back into, as for "
    "metric_baseline (`blur`: a Gaussian blur of sigma 5 px per 224 px, at least 1 px).")
METRIC_STEPS = Parameter("metric_steps", CAUSAL_STEPS, Integer(min=2),
                         "Deletion and insertion: in how many equal steps the pixels change.")
RANDOM_MAP_COUNT = Parameter(
    "random_maps", RANDOM_MAPS, Integer(min=1),
    "How many random maps of each image (seeded by its ID) the map is ranked among; it beats "
    "random when better than 90% of them on deletion and on insertion.")
SANITY_CHECK = Parameter(
    "sanity_check", False, BOOLEAN,
    "Also make each map with the model's weights randomised and compare the two (Adebayo et "
    "al., 2018): a map that stays the same barely depends on the model. Doubles the maps' cost.")
#: How a map is scored, whatever the algorithm: the saliency step's parameters.
METRIC_PARAMETERS = (METRIC_BASELINE, INSERTION_START, METRIC_STEPS, RANDOM_MAP_COUNT,
                     SANITY_CHECK)


@dataclass(frozen=True)
class MetricSettings:
    """How maps are scored: the chosen baselines, steps and random maps, and the values the
    baselines resolve to for the data and model at hand (`resolved`), stored with each map so
    that its scores can be computed again."""

    metric_baseline: str = MEAN
    insertion_start: str = BLUR
    metric_steps: int = CAUSAL_STEPS
    random_maps: int = RANDOM_MAPS
    sanity_check: bool = False
    #: The `mean` baseline in the pipeline's [0, 1] pixels: one value, or one per channel.
    mean_colour: tuple[float, ...] | None = None
    #: Where the mean colour comes from, in words.
    mean_source: str | None = None
    #: The `fill` baseline: the value(s) the algorithm occluded with; MC-RISE's fill colours.
    fills: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> MetricSettings:
        """The settings of the step's parameter values (defaults for those absent)."""
        return cls(**{p.name: p.type.convert(values.get(p.name, p.default))
                      for p in METRIC_PARAMETERS})

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any] | None) -> MetricSettings:
        stored = dict(stored or {})
        if stored.get("mean_colour") is not None:
            stored["mean_colour"] = tuple(stored["mean_colour"])
        stored["fills"] = tuple(tuple(fill) for fill in stored.get("fills", ()))
        return cls(**{k: v for k, v in stored.items() if k in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["fills"] = [list(fill) for fill in self.fills]
        if self.mean_colour is not None:
            values["mean_colour"] = list(self.mean_colour)
        return values

    def params(self) -> dict[str, Any]:
        """The step's parameter values these settings came from."""
        return {p.name: getattr(self, p.name) for p in METRIC_PARAMETERS}

    @property
    def resolved(self) -> bool:
        return self.mean_colour is not None

    def resolve(self, images: np.ndarray, source: str, fills: Sequence[Sequence[float]],
                model_mean: Sequence[float] = (), model_scale: float = 1.0) -> MetricSettings:
        """The baselines' values: the mean colour of the model's declared `input_mean` (in
        [0, 1] pixels: mean / scale), else of `images` (`source` says which images); the
        algorithm's `fills`. Settings already resolved (a stored map's) stay as they are."""
        if self.resolved:
            return self
        if model_mean:
            colour, source = np.asarray(model_mean, dtype=float) / model_scale, \
                "the model's input_mean"
        else:
            pixels = np.asarray(images, dtype=np.float64)
            colour = (pixels.mean(axis=tuple(range(pixels.ndim - 1))) if pixels.ndim == 4
                      else np.atleast_1d(pixels.mean()))
        return replace(self, mean_colour=tuple(float(c) for c in np.atleast_1d(colour)),
                       mean_source=source,
                       fills=tuple(tuple(float(v) for v in fill) for fill in fills))

    def base(self, kind: str, image: np.ndarray, blurred_image: np.ndarray,
             fill: Sequence[float] | None = None) -> np.ndarray:
        """The image a baseline `kind` makes of `image`; `fill`: the occluding value(s) of
        this map (MC-RISE's colour), by default the algorithm's (the mean of several)."""
        if kind == BLUR:
            return blurred_image
        if kind == ZERO:
            return np.zeros_like(image)
        if kind == MEAN:
            if self.mean_colour is None:
                raise ValueError("the mean colour is not resolved: call resolve() first")
            value = self.mean_colour
        else:
            value = (fill if fill is not None
                     else np.mean(self.fills, axis=0) if self.fills else (0.0,))
        return np.broadcast_to(colour_of(value, image), image.shape).astype(image.dtype)

    def get_config(self) -> dict[str, Any]:
        return self.as_dict()


def colour_of(value: Sequence[float], image: np.ndarray) -> np.ndarray:
    """A grey value or a colour as something that broadcasts over `image` (`[H, W]` or
    `[H, W, C]`): one value over every channel, a colour per channel."""
    value = np.asarray(value, dtype=np.float64).ravel()
    if image.ndim == 2:
        return np.asarray(value.mean())
    return value if len(value) == image.shape[-1] else np.full(image.shape[-1], value.mean())


#: The deletion and insertion areas of the true class's map, on a wrong prediction.
TRUE_CLASS_SUFFIX = "_true_class"


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
    """The image blurred on its height and width only."""
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
    """Trapezoids over the fraction of pixels changed, 0 to 1 (of each row of curves)."""
    curve = np.asarray(curve)
    return np.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), axis=-1)


def random_map_seed(image_id: str) -> int:
    """A seed of the image's ID: the same random maps for the same image, run after run."""
    return int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:8], "little")


def random_maps(image_id: str, shape: tuple[int, ...], count: int) -> np.ndarray:
    """`[count, H, W]` maps of uniform noise, seeded by the image's ID."""
    return np.random.default_rng(random_map_seed(image_id)).random((count, *shape[:2]))


def random_percentile(value: float, random_values: Sequence[float],
                      lower_is_better: bool) -> float:
    """The share (in %) of the random maps' values that `value` does better than, ties
    counting half."""
    from scipy.stats import percentileofscore

    values = np.asarray(random_values, dtype=np.float64)
    if lower_is_better:
        return float(percentileofscore(-values, -value, kind="mean"))
    return float(percentileofscore(values, value, kind="mean"))


@dataclass
class MapContext:
    """What a map metric sees: the image, one class's map, and the classifier's probabilities
    (`predict`: images -> `[N, columns]`) for that class's `column`; the images deleted
    pixels become and insertion starts from."""

    image: np.ndarray
    saliency: np.ndarray
    predict: Callable[[np.ndarray], np.ndarray]
    column: int
    steps: int = CAUSAL_STEPS
    deletion_base: np.ndarray | None = field(default=None, repr=False)
    insertion_base: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.deletion_base is None:
            self.deletion_base = np.zeros_like(self.image)
        if self.insertion_base is None:
            self.insertion_base = blurred(self.image)

    def with_map(self, saliency: np.ndarray, column: int | None = None) -> MapContext:
        return replace(self, saliency=saliency,
                       column=self.column if column is None else column)


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
    #: Whether a lower area means a more faithful map.
    lower_is_better: ClassVar[bool]

    def ends(self, context: MapContext) -> tuple[np.ndarray, np.ndarray]:
        """The image the curve starts from and the one its changed pixels come from."""
        if self.insert:
            return context.insertion_base, context.image
        return context.image, context.deletion_base

    def curves(self, context: MapContext, maps: Sequence[np.ndarray]) -> np.ndarray:
        """`[len(maps), steps + 1]`: the curves of several maps of the class, classified in
        one batch."""
        start, end = self.ends(context)
        images = np.concatenate([causal_images(context.image, saliency, start, end,
                                               context.steps) for saliency in maps])
        probabilities = np.asarray(context.predict(images), dtype=np.float64)[:, context.column]
        return probabilities.reshape(len(maps), context.steps + 1)

    def compute(self, context: MapContext) -> tuple[float, np.ndarray]:
        curve, = self.curves(context, [context.saliency])
        return float(area_under_curve(curve)), curve

    def get_config(self) -> dict:
        return {"name": self.name, "steps": "metric_steps",
                "base": "insertion_start" if self.insert else "metric_baseline",
                "blur_sigma_at_224": BLUR_SIGMA_AT_224}


@MAP_METRICS.register
class Deletion(CausalMetric):
    name = "Deletion_auc"
    insert = False
    lower_is_better = True


@MAP_METRICS.register
class Insertion(CausalMetric):
    name = "Insertion_auc"
    insert = True
    lower_is_better = False


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
CAUSAL_METRICS = (Deletion, Insertion)


def random_name(name: str) -> str:
    """`Random_deletion_auc`: metric `name`'s mean over the random maps."""
    return f"Random_{name[0].lower()}{name[1:]}"


def percentile_name(name: str) -> str:
    """`Deletion_random_percentile`: the share of random maps the map does better than on
    metric `name`."""
    return f"{name.split('_')[0]}_random_percentile"


def fill_suffix(colour: int) -> str:
    """`_fill_0`: the suffix of an MC-RISE fill colour's metrics."""
    return f"_fill_{colour}"


#: The metrics `beats_random` compares, and those of runs from before the percentiles.
PERCENTILES = tuple(percentile_name(m.name) for m in CAUSAL_METRICS)
AGAINST_RANDOM = ("Deletion_auc", "Random_deletion_auc", "Insertion_auc", "Random_insertion_auc")


def beats_random(metrics: Mapping[str, float]) -> bool | None:
    """Whether a map does better than `BEATS_RANDOM_PERCENTILE`% of the random maps on
    deletion and on insertion (for a run from before the percentiles: than the random map);
    None when the metrics do not say."""
    if set(PERCENTILES) <= metrics.keys():
        return all(metrics[name] >= BEATS_RANDOM_PERCENTILE for name in PERCENTILES)
    if not set(AGAINST_RANDOM) <= metrics.keys():
        return None
    return (metrics["Deletion_auc"] < metrics["Random_deletion_auc"]
            and metrics["Insertion_auc"] > metrics["Random_insertion_auc"])


@dataclass
class MapScores:
    """A map's metrics by name, the curves by name, whether it beats random maps, of MC-RISE's
    maps the fill colour whose map is the most faithful, and whether the map fails the sanity
    check (None: not checked)."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray]
    most_faithful_fill: int | None = None
    fails_sanity: bool | None = None

    def beats_random(self) -> bool:
        return bool(beats_random(self.metrics))

    def with_sanity(self, similarity: dict[str, float], fails: bool) -> MapScores:
        """These scores with the sanity check's similarity measures and verdict."""
        return replace(self, metrics={**self.metrics, **similarity}, fails_sanity=fails)


def scored(context: MapContext, which, suffix: str = ""
           ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The metrics `which` of the context's map, and their curves, by name plus `suffix`."""
    metrics, curves = {}, {}
    for metric_class in which:
        value, curve = metric_class().compute(context)
        metrics[metric_class.name + suffix] = value
        if curve is not None:
            curves[metric_class.name + suffix] = curve
    return metrics, curves


def score_map(maps: np.ndarray, image: np.ndarray, predict, predicted_column: int,
              true_column: int | None, settings: MetricSettings | None = None,
              image_id: str = "", metrics_of_map: tuple[type[MapMetric], ...] | None = None
              ) -> MapScores:
    """Every registered metric (or those of `metrics_of_map`) of the predicted class's map;
    deletion and insertion also for the true class's map when it differs, for each of
    MC-RISE's fill colours, and for `settings.random_maps` random maps (seeded by `image_id`):
    their mean, and the map's percentile among them. `settings` must be resolved when a
    baseline is `mean` (by default: deletion to zeros, insertion from the blurred image)."""
    settings = settings or MetricSettings(metric_baseline=ZERO)
    image = np.asarray(image, dtype=np.float32)
    blurred_image = blurred(image)
    context = MapContext(image, class_map(maps, predicted_column), predict, predicted_column,
                         settings.metric_steps,
                         settings.base(settings.metric_baseline, image, blurred_image),
                         settings.base(settings.insertion_start, image, blurred_image))
    metrics, curves = scored(context, tuple(MAP_METRICS) if metrics_of_map is None
                             else metrics_of_map)
    if {RoadLerf.name, RoadMorf.name} <= metrics.keys():
        metrics[ROAD_GAP] = metrics[RoadLerf.name] - metrics[RoadMorf.name]
    parts = []
    if true_column is not None and true_column != predicted_column:
        parts.append(scored(context.with_map(class_map(maps, true_column), true_column),
                            CAUSAL_METRICS, TRUE_CLASS_SUFFIX))
    noise = random_maps(image_id, image.shape, settings.random_maps)
    for metric_class in CAUSAL_METRICS:
        random_curves = metric_class().curves(context, noise)
        areas = area_under_curve(random_curves)
        metrics[random_name(metric_class.name)] = float(areas.mean())
        curves[random_name(metric_class.name)] = random_curves.mean(axis=0)
        metrics[percentile_name(metric_class.name)] = random_percentile(
            metrics[metric_class.name], areas, metric_class.lower_is_better)
    most_faithful = None
    if np.ndim(maps) == 4:
        colours = [scored(fill_context(context, colour_maps, settings, colour, blurred_image),
                          CAUSAL_METRICS, fill_suffix(colour))
                   for colour, colour_maps in enumerate(np.asarray(maps))]
        most_faithful = int(np.argmax([
            m[Insertion.name + fill_suffix(k)] - m[Deletion.name + fill_suffix(k)]
            for k, (m, _) in enumerate(colours)]))
        parts += colours
    for part_metrics, part_curves in parts:
        metrics.update(part_metrics)
        curves.update(part_curves)
    return MapScores(metrics, curves, most_faithful)


def fill_context(context: MapContext, colour_maps: np.ndarray, settings: MetricSettings,
                 colour: int, blurred_image: np.ndarray) -> MapContext:
    """The context of one MC-RISE fill colour's map of the class: a `fill` baseline is that
    colour."""
    fill = settings.fills[colour] if colour < len(settings.fills) else None
    image = context.image
    return replace(
        context.with_map(colour_maps[context.column]),
        deletion_base=settings.base(settings.metric_baseline, image, blurred_image, fill),
        insertion_base=settings.base(settings.insertion_start, image, blurred_image, fill))


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
