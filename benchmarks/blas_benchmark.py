"""BLAS threads: 1 against 2, side by side, for the two kinds of model work the steps do.

- small batches (the saliency step): one RISE map by `FastSaliency`, which classifies its
  perturbed images in `predict_proba` calls of a batch each and scores them with a product;
- one prediction (the evaluation step): `predict_proba` on the whole test split at once.

At each image size (digits resized, as in `saliency_benchmark.py`), each kind is timed with the
thread count forced (`SALIENCY_FLOW_BLAS_THREADS`), in turns, the fastest pass counting.
Each row ends with the count `steps/core/blas.py` chooses for it. Compare one core with two:
    taskset -c 0 python benchmarks/blas_benchmark.py
    python benchmarks/blas_benchmark.py [--sizes 8x8 64x64x3 --repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's `steps` package

from saliency_benchmark import fastest, parse_size, size_name, sized_model  # noqa: E402

from steps.core.algorithm import make_algorithm  # noqa: E402
from steps.core.blas import (  # noqa: E402
    BLAS_THREADS_ENV,
    ONE_PREDICTION,
    SMALL_BATCHES,
    blas_threads,
    threads_for,
    usable_cores,
)
from steps.core.fast_saliency import FastSaliency  # noqa: E402
from steps.core.image_models import ProbaModel  # noqa: E402
from steps.core.xaitk_generators import ImageClassifier, generator_config  # noqa: E402

THREADS = (1, 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+",
                        default=[parse_size(s) for s in ("8x8", "28x28", "64x64x3", "224x224x3")],
                        help="image sizes, HxW (grey) or HxWx3 (colour)")
    parser.add_argument("--n", type=int, default=1000, help="RISE masks of a map")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each, in turns")
    parser.add_argument("--epochs", type=int, default=20, help="MLP training epochs")
    parser.add_argument("--hidden", type=int, default=64, help="MLP hidden layer size")
    return parser.parse_args(argv)


@contextlib.contextmanager
def forced_threads(threads: int):
    """Every kind of work with `threads` BLAS threads, as `SALIENCY_FLOW_BLAS_THREADS` does."""
    before = os.environ.get(BLAS_THREADS_ENV)
    os.environ[BLAS_THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        if before is None:
            del os.environ[BLAS_THREADS_ENV]
        else:
            os.environ[BLAS_THREADS_ENV] = before


def timed(threads: int, kind: str, work):
    def run():
        with forced_threads(threads), blas_threads(kind):
            start = time.perf_counter()
            work()
            return time.perf_counter() - start, None
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = generator_config(make_algorithm("rise", n=args.n).generator())
    load_before = os.getloadavg()
    print(f"BLAS benchmark: {usable_cores()} usable core(s); RISE n={args.n} maps, MLP "
          f"({args.hidden},); best of {args.repeats} passes, in turns; ms")
    print(f"{'size':>10} {'kind':>15} {'work':>28} | {'1 thread':>9} {'2 threads':>9} | "
          f"{'2 / 1':>6} | {'faster':>9} | chosen")
    for shape in args.sizes:
        model, _, test_images = sized_model(shape, args.epochs, args.hidden, 500)
        classifier = ImageClassifier(ProbaModel(model))
        engine = FastSaliency.from_config(config)
        image = test_images[0]
        engine.masks(image)
        engine(image, classifier)  # warm up
        batch = classifier.batch_size * image.size
        works = {
            SMALL_BATCHES: (f"one map, {args.n} images", batch,
                            lambda: engine(image, classifier)),
            ONE_PREDICTION: (f"predict_proba of {len(test_images)} images", test_images.size,
                             lambda: model.predict_proba(test_images.reshape(
                                 len(test_images), -1))),
        }
        for kind, (what, values, work) in works.items():
            best = fastest({t: timed(t, kind, work) for t in THREADS}, args.repeats)
            one, two = (1e3 * best[t][0] for t in THREADS)
            print(f"{size_name(shape):>10} {kind:>15} {what:>28} | {one:9.2f} {two:9.2f} | "
                  f"{two / one:5.2f}x | {'1 thread' if one <= two else '2 threads':>9} | "
                  f"{threads_for(kind, values)}")
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {' '.join(f'{v:.2f}' for v in load_before)}, "
          f"after {' '.join(f'{v:.2f}' for v in load_after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
