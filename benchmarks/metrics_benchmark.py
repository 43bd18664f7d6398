"""Map metrics' cost, side by side in one process on the same images and maps.

- maps: the saliency step's engine alone (`engine_from_config`), one map per image;
- maps + metrics, one random map, without ROAD: the same, then `score_map` (deletion and
  insertion to the mean colour for the predicted class, the true class when it differs and
  one random map; Entropy), its curves' images classified in batches;
- maps + metrics without ROAD: the same against 10 random maps (the default `random_maps`);
- maps + metrics (ours): the same with ROAD's MoRF and LeRF too (nine imputed images each);
- + sanity check: the same, and each map made again with the model's weights randomised and
  compared with it (`-P sanity_check=true`);
- naive metrics: the same curves with one `predict_proba` call per step per image.
The rounds alternate between the ways. It prints maps/s and the ratios, and exits 1 if the
naive metrics differ from ours by more than float32 rounding.

    python benchmarks/metrics_benchmark.py [--images 30 --n 1000 --rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's `steps` package

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from digits_setup import digits_setup  # noqa: E402
from steps.core.metrics import (MAP_METRICS, ROAD_METRICS, MetricSettings,  # noqa: E402
                                score_map)
from steps.core.sanity import map_similarity  # noqa: E402
from steps.core.xaitk_generators import ImageClassifier  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30, help="test images to explain")
    parser.add_argument("--n", type=int, default=1000, help="RISE: number of masks")
    parser.add_argument("--epochs", type=int, default=100, help="MLP training epochs")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    return parser.parse_args(argv)


class OneAtATime:
    """The naive classifier call: one `predict_proba` per image."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self.model.predict_proba(image[np.newaxis]) for image in images])


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = digits_setup(args.epochs, args.images, n=args.n)
    classifier, engine, images, labels = setup.classifier, setup.engine, setup.images, setup.labels
    predicted = classifier.classify_array(images).argmax(axis=1)
    engine(images[0], classifier)  # masks made once, outside the timings

    settings = MetricSettings().resolve(images, "the benchmark's images", [(0.0,)])
    one_random = MetricSettings(random_maps=1).resolve(images, "the benchmark's images",
                                                       [(0.0,)])
    without_road = tuple(m for m in MAP_METRICS if m not in ROAD_METRICS)

    def scored(predict, how: MetricSettings, metrics=None):
        return [score_map(engine(image, classifier), image, predict, p, t, how, str(k),
                          metrics)
                for k, (image, p, t) in enumerate(zip(images, predicted, labels))]

    randomised = ImageClassifier(setup.model.randomised())

    def with_sanity_check():
        results = []
        for k, (image, p, t) in enumerate(zip(images, predicted, labels)):
            maps = engine(image, classifier)
            results.append(score_map(maps, image, classifier.classify_array, p, t, settings,
                                     str(k)))
            map_similarity(maps[p], engine(image, randomised)[p])
        return results

    def maps_only():
        return [engine(image, classifier) for image in images]

    naive_predict = OneAtATime(setup.model)
    ways = {
        "maps": maps_only,
        "maps + metrics, 1 random map, without ROAD":
            lambda: scored(classifier.classify_array, one_random, without_road),
        "maps + metrics without ROAD":
            lambda: scored(classifier.classify_array, settings, without_road),
        "maps + metrics (ours)": lambda: scored(classifier.classify_array, settings),
        "maps + metrics + sanity check": with_sanity_check,
        "maps + metrics, one predict_proba per step": lambda: scored(naive_predict, settings),
    }
    seconds = {name: [] for name in ways}
    results = {}
    with threadpool_limits(1):
        for _ in range(args.rounds):
            for name, way in ways.items():
                started = time.perf_counter()
                results[name] = way()
                seconds[name].append(time.perf_counter() - started)
    ways_list = list(ways)
    rate = {name: len(images) / np.median(times) for name, times in seconds.items()}
    for name in ways:
        print(f"{name:45s} {rate[name]:8.1f} maps/s")
    ours_name, naive_name = "maps + metrics (ours)", "maps + metrics, one predict_proba per step"
    ours, naive = results[ours_name], results[naive_name]
    print(f"metrics cost: maps + metrics run at {rate[ours_name] / rate['maps']:.2f}x the rate "
          "of maps alone")
    print(f"10 random maps' cost: {rate[ways_list[2]] / rate[ways_list[1]]:.2f}x the rate "
          "with one")
    print(f"ROAD's cost: maps + metrics run at {rate[ours_name] / rate[ways_list[2]]:.2f}x "
          "the rate without ROAD")
    print(f"the sanity check's cost: {rate[ways_list[4]] / rate[ours_name]:.2f}x the rate "
          "without it")
    print(f"ours / naive: {rate[ours_name] / rate[naive_name]:.1f}x")
    worst = max(abs(a.metrics[k] - b.metrics[k]) for a, b in zip(ours, naive) for k in a.metrics)
    print(f"largest difference between our and the naive metrics: {worst:.2e}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
