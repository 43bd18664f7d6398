"""Saliency maps per second, three ways side by side, in one process, at several image sizes.

- naive: xaitk's high-level stack called once per image (RISEStack with threads=0, or
  SlidingWindowStack), as the saliency step used to;
- ours: one `FastSaliency` for all the images, built from the stored configuration, with its
  masks made (the one-off cost of making them is printed apart), given the images as the
  saliency step gives them, `MAP_PARTITION_SIZE` at a time (`engine.maps`);
- bound: the classifier alone, `predict_proba` on the same perturbed images in the same
  batches (building them is not timed); no engine that asks the classifier can beat it.

Every size is scikit-learn's digits resized (Pillow, bilinear), `HxWx3` ones tinted a random
colour each, explained by a model (`--model`, one table row per model and size):
- mlp: an MLP trained on them (scikit-learn, through `ProbaModel`);
- cnn: a small convolutional network with random weights (fixed seed) built here as an ONNX
  graph, NCHW, ImageNet's scale, mean and std, logits (`OnnxModel`, run by onnxruntime).
All three ways run with the BLAS (and onnxruntime) threads the saliency step uses
(`steps/core/blas.py`): one. Peak memory is tracemalloc's peak over one map
(numpy's arrays included): ours with its masks made, naive making its own; `kept` is what ours
keeps between maps (the masks, and what it derives from them within `DERIVED_BYTES`). Run
from anywhere:
    python benchmarks/saliency_benchmark.py [--sizes 8x8 28x28 64x64x3 --n 1000 ...]
    python benchmarks/saliency_benchmark.py --model cnn mlp --sizes 64x64x3 224x224x3
`--overlap off` times ours without building the next chunk while one is classified (`on`:
for any chunk; `auto`: from `OVERLAP_BYTES`); `--serial` also times ours without it, in turns
with the others (column `serial`). It exits 1 if our maps differ from xaitk's.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's `steps` package

import numpy as np  # noqa: E402

from steps.core.algorithm import ALGORITHMS, SaliencyAlgorithm, make_algorithm  # noqa: E402
from steps.core.blas import SMALL_BATCHES, blas_threads, threads_for  # noqa: E402
from steps.core.image_dataset import load_dataset, resize, random_split  # noqa: E402
from steps.core import fast_saliency  # noqa: E402
from steps.core.fast_saliency import (  # noqa: E402
    DEFAULT_CHUNK_SIZE,
    FastSaliency,
    MaskCache,
    occlude,
)
from steps.core.model_input import InputConvention  # noqa: E402
from steps.core.image_models import ModelParams, OnnxModel, ProbaModel, train_classifier  # noqa: E402
from steps.core.xaitk_generators import ImageClassifier, generator_config  # noqa: E402
from steps.tracking.cluster import MAP_PARTITION_SIZE  # noqa: E402

ATOL = 1e-5
#: Images explained and timed passes of each way, by default, per size: fewer where xaitk
#: takes seconds a map.
SIZES = {"8x8": (30, 5), "28x28": (10, 3), "64x64": (5, 3), "64x64x3": (5, 3),
         "224x224x3": (2, 2)}
#: The same for the CNN, whose every prediction costs more than the MLP's.
CNN_SIZES = {"8x8": (30, 5), "28x28": (10, 3), "64x64": (5, 3), "64x64x3": (4, 2),
             "224x224x3": (1, 2)}
MODELS = ("mlp", "cnn")
#: ImageNet's normalisation, as torchvision models take it (grey: the channels' average).
IMAGENET_MEAN, IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CNN_CLASSES = 10
#: Training is cut to this many epochs x features (the classifier's speed does not depend on
#: how long it trained).
EPOCH_FEATURES = 12288 * 100
#: Issue 14's targets by size, for the MLP: ours / naive at least; and by model, bound / ours
#: at most.
TARGETS = {"28x28": 15, "64x64": 15, "64x64x3": 15, "224x224x3": 5}
BOUND_TARGETS = {"mlp": 1.5, "cnn": 1.2}
#: `--overlap`: the chunk bytes from which ours builds the next chunk while one is classified.
OVERLAP_MODES = {"auto": fast_saliency.OVERLAP_BYTES, "on": 0, "off": float("inf")}


def parse_size(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a size is HxW or HxWxC, e.g. 64x64x3, not {text!r}")
    return shape


def size_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+",
                        default=[parse_size(size) for size in SIZES],
                        help="image sizes, HxW (grey) or HxWx3 (colour)")
    parser.add_argument("--images", type=int, default=None,
                        help="test images to explain at every size (default: by size, "
                             + ", ".join(f"{k} {v[0]}" for k, v in SIZES.items())
                             + "; CNN " + ", ".join(f"{k} {v[0]}" for k, v in CNN_SIZES.items())
                             + ")")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes of each way, in turns, the fastest counts (default: "
                             "by size, " + ", ".join(f"{k} {v[1]}" for k, v in SIZES.items())
                             + "; CNN " + ", ".join(f"{k} {v[1]}" for k, v in CNN_SIZES.items())
                             + ")")
    parser.add_argument("--model", choices=MODELS, nargs="+", default=["mlp"],
                        help="models explained, each at every size: mlp (trained here), cnn "
                             "(ONNX, random weights)")
    parser.add_argument("--overlap", choices=tuple(OVERLAP_MODES), default="auto",
                        help="ours: build the next chunk while one is classified for chunks of "
                             f"OVERLAP_BYTES ({fast_saliency.OVERLAP_BYTES:,}) or more (auto), "
                             "any (on), none (off)")
    parser.add_argument("--serial", action="store_true",
                        help="also time ours with no overlap (column serial)")
    parser.add_argument("--algorithm", choices=ALGORITHMS.names(), default="rise")
    parser.add_argument("--n", type=int, default=1000, help="RISE: number of masks")
    parser.add_argument("--s", type=int, default=4, help="RISE: grid resolution")
    parser.add_argument("--p1", type=float, default=0.5, help="RISE: probability a cell is kept")
    parser.add_argument("--seed", type=int, default=0, help="RISE: seed of the masks")
    parser.add_argument("--window-size", type=int, nargs=2, default=(2, 2),
                        help="sliding window: height width")
    parser.add_argument("--stride", type=int, nargs=2, default=(1, 1),
                        help="sliding window: step height width")
    parser.add_argument("--fill", type=float, default=0.0, help="value of occluded pixels")
    parser.add_argument("--epochs", type=int, default=100,
                        help=f"MLP training epochs (cut to {EPOCH_FEATURES:,} / features)")
    parser.add_argument("--train-images", type=int, default=500, help="MLP training images")
    parser.add_argument("--hidden", type=int, default=64, help="MLP hidden layer size")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="images per predict_proba call, all three ways (the step's default)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help="perturbed images FastSaliency holds at most")
    return parser.parse_args(argv)


def fastest(passes: dict, repeats: int) -> dict:
    """Each timed pass `repeats` times, taking turns so that the machine's changing load hits
    all alike: by name, the shortest time and the last pass's result."""
    best = {name: (float("inf"), None) for name in passes}
    for _ in range(repeats):
        for name, timed_pass in passes.items():
            seconds, result = timed_pass()
            best[name] = (min(best[name][0], seconds), result)
    return best


def naive_pass(params: SaliencyAlgorithm, classifier, images):
    start = time.perf_counter()
    stack = params.xaitk_stack()
    maps = [stack(image, classifier) for image in images]
    return time.perf_counter() - start, maps


def masks_pass(engine, image):
    """Making the masks, once per configuration and image shape (an empty cache each pass)."""
    cache = MaskCache()
    start = time.perf_counter()
    cache.masks(engine.perturber, image.shape)
    return time.perf_counter() - start, None


def fast_pass(engine, classifier, images):
    """Maps with the masks already made (the engine's cache is warm), of `MAP_PARTITION_SIZE`
    images at a time, as the saliency step makes them."""
    engine.masks(images[0])
    start = time.perf_counter()
    maps = [one for first in range(0, len(images), MAP_PARTITION_SIZE)
            for one in engine.maps(images[first:first + MAP_PARTITION_SIZE], classifier)]
    return time.perf_counter() - start, maps


def serial_pass(engine, classifier, images):
    """`fast_pass` building no chunk while another is classified."""
    overlap_bytes = fast_saliency.OVERLAP_BYTES
    fast_saliency.OVERLAP_BYTES = OVERLAP_MODES["off"]
    try:
        return fast_pass(engine, classifier, images)
    finally:
        fast_saliency.OVERLAP_BYTES = overlap_bytes


def bound_pass(model, engine, classifier, images, batch_size):
    """Only the `predict_proba` calls of the `ImageModel` (its input convention, the model,
    softmax) on the perturbed images are timed."""
    seconds = 0.0
    for image in images:
        masks = engine.masks(image)
        step = engine.chunk_length(image, classifier)
        for start in range(0, len(masks), step):
            perturbed = occlude(image, masks[start:start + step], engine.fill)
            begin = time.perf_counter()
            with blas_threads(SMALL_BATCHES):
                for first in range(0, len(perturbed), batch_size):
                    model.predict_proba(perturbed[first:first + batch_size])
            seconds += time.perf_counter() - begin
    return seconds, None


def peak_mib(make_map) -> float:
    """tracemalloc's peak over one call, in MiB."""
    tracemalloc.start()
    try:
        make_map()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def describe(params: SaliencyAlgorithm) -> str:
    return " ".join(f"{key}={value}" for key, value in params.used_params().items())


def sized_images(images: np.ndarray, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Digits at `shape`: resized, and tinted a random colour each when it has channels."""
    images = resize(images, shape[:2])
    if len(shape) == 2:
        return images
    tints = np.random.default_rng(seed).uniform(0.4, 1.0, (len(images), 1, 1, shape[2]))
    return (images[..., np.newaxis] * tints).astype(np.float32)


def sized_model(shape: tuple[int, ...], epochs: int, hidden: int, train_images: int):
    """An MLP trained on digits at `shape` (epochs cut to `EPOCH_FEATURES` / features), and
    the digits of the test split at that shape: `(model, epochs trained, test images)`."""
    data = load_dataset("digits")
    split = random_split(data, 0.25, 0)
    epochs = max(1, min(epochs, EPOCH_FEATURES // int(np.prod(shape))))
    train_rows = split.train_rows[:train_images]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer epochs than convergence needs
        trained = train_classifier(ModelParams(hidden_layer_sizes=(hidden,), epochs=epochs),
                                   sized_images(data.images[train_rows], shape, 1),
                                   data.labels[train_rows])
    return (trained.classifier, len(trained.loss_curve),
            sized_images(data.images[split.test_rows], shape, 2))


def cnn_graph(channels: int, height: int, width: int, seed: int = 0):
    """A small CNN as an ONNX graph with random weights (He's normal, `seed`): NCHW float input
    `[N, channels, height, width]`; Conv 3x3 to 8, Relu, MaxPool 2, Conv 3x3 to 16, Relu,
    MaxPool 2, GlobalAveragePool, Flatten, Gemm to `CNN_CLASSES` logits."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.onnx_models import checked_model

    rng = np.random.default_rng(seed)

    def he(*dims: int) -> np.ndarray:
        return rng.normal(0.0, np.sqrt(2.0 / np.prod(dims[1:])), dims).astype(np.float32)

    def bias(size: int) -> np.ndarray:
        return rng.normal(0.0, 0.1, size).astype(np.float32)

    weights = {"w1": he(8, channels, 3, 3), "b1": bias(8), "w2": he(16, 8, 3, 3),
               "b2": bias(16), "w3": he(CNN_CLASSES, 16), "b3": bias(CNN_CLASSES)}
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], **pool),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], **pool),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
    ]
    return checked_model(
        nodes, "saliency_benchmark_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["N", channels, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CNN_CLASSES])],
        [numpy_helper.from_array(array, name) for name, array in weights.items()])


def cnn_model(shape: tuple[int, ...]) -> OnnxModel:
    """`cnn_graph` for images of `shape`, as the pipeline runs an ONNX model."""
    channels = shape[2] if len(shape) == 3 else 1
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if channels != 3:
        mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
    convention = InputConvention(layout="nchw", scale=255.0, mean=mean, std=std,
                                 output="logits")
    return OnnxModel(cnn_graph(channels, *shape[:2]).SerializeToString(), convention,
                     labels=range(CNN_CLASSES))


def test_digits(shape: tuple[int, ...]) -> np.ndarray:
    """The digits of the test split at `shape`, as `sized_model` gives them."""
    data = load_dataset("digits")
    return sized_images(data.images[random_split(data, 0.25, 0).test_rows], shape, 2)


def run_size(args, params, config, kind, shape) -> dict:
    """One model (`kind`) at one size: train (the MLP), time the three ways, measure memory;
    the row of the table."""
    name = size_name(shape)
    count, repeats = (CNN_SIZES if kind == "cnn" else SIZES).get(name, (5, 3))
    count, repeats = args.images or count, args.repeats or repeats
    if kind == "cnn":
        model, epochs, test_images = cnn_model(shape), 0, test_digits(shape)
    else:
        mlp, epochs, test_images = sized_model(shape, args.epochs, args.hidden,
                                               args.train_images)
        model = ProbaModel(mlp)
    images = test_images[:count]
    classifier = ImageClassifier(model, batch_size=args.batch_size)
    engine = FastSaliency.from_config(config, chunk_size=args.chunk_size)
    classifier.classify_array(images)  # warm up
    passes = {
        "naive": lambda: naive_pass(params, classifier, images),
        "masks": lambda: masks_pass(engine, images[0]),
        "ours": lambda: fast_pass(engine, classifier, images),
        "bound": lambda: bound_pass(model, engine, classifier, images, args.batch_size),
    }
    if args.serial:
        passes["serial"] = lambda: serial_pass(engine, classifier, images)
    timed = fastest(passes, repeats)
    (naive_s, naive_maps), (masks_s, _), (fast_s, fast_maps), (bound_s, _) = (
        timed["naive"], timed["masks"], timed["ours"], timed["bound"])
    chunk = engine.chunk_length(images[0], classifier)
    return {
        "model": kind, "size": name, "images": count, "passes": repeats, "epochs": epochs,
        "naive": count / naive_s, "ours": count / fast_s, "bound": count / bound_s,
        "serial": count / timed["serial"][0] if "serial" in timed else None,
        "masks_ms": 1e3 * masks_s, "chunk": chunk,
        "chunk_mib": min(chunk, len(engine.masks(images[0]))) * images[0].nbytes / 2**20,
        "masks_mib": engine.mask_cache.nbytes / 2**20,
        "ours_mib": peak_mib(lambda: engine(images[0], classifier)),
        "naive_mib": peak_mib(lambda: params.xaitk_stack()(images[0], classifier)),
        "difference": max(float(np.abs(a - b).max()) for a, b in zip(fast_maps, naive_maps)),
    }


def print_table(rows: list[dict]) -> None:
    serial = any(r["serial"] is not None for r in rows)
    print(f"{'model':>5} {'size':>10} {'images':>6} {'passes':>6} {'epochs':>6} | "
          f"maps/s: {'naive':>7} {'ours':>8} {'bound':>8} | ours/naive bound/ours | "
          + (f"{'serial':>8} bound/serial | " if serial else "")
          + f"{'chunk':>5} {'MiB':>6} | peak MiB: {'naive':>6} {'ours':>6} (kept {'':>6}) | "
          "max|diff|")
    for r in rows:
        print(f"{r['model']:>5} {r['size']:>10} {r['images']:6d} {r['passes']:6d} "
              f"{r['epochs']:6d} | {r['naive']:15.2f} {r['ours']:8.2f} {r['bound']:8.2f} | "
              f"{r['ours'] / r['naive']:9.1f}x {r['bound'] / r['ours']:9.2f}x | "
              + (f"{r['serial']:8.2f} {r['bound'] / r['serial']:11.2f}x | " if serial else "")
              + f"{r['chunk']:5d} {r['chunk_mib']:6.1f} | {r['naive_mib']:16.1f} "
              f"{r['ours_mib']:6.1f} (kept {r['masks_mib']:5.1f}) | {r['difference']:.1e}")


def print_targets(rows: list[dict]) -> None:
    for r in rows:
        speed, bound = r["ours"] / r["naive"], r["bound"] / r["ours"]
        want = TARGETS.get(r["size"]) if r["model"] == "mlp" else None
        most = BOUND_TARGETS[r["model"]]
        ceiling = r["bound"] / r["naive"]  # the most any engine that asks the model can reach
        verdicts = [f"ours / naive: {speed:.1f}x"
                    + (f" (target at least {want}x: {'met' if speed >= want else 'not met'}"
                       f"; the bound itself is {ceiling:.1f}x naive)" if want else "")]
        verdicts.append(f"bound / ours: {bound:.2f}x (target at most {most}x: "
                        f"{'met' if bound <= most else 'not met'})")
        print(f"{r['model']:>5} {r['size']:>10}: " + "; ".join(verdicts) + f"; masks made once: "
              f"{r['masks_ms']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Values of parameters the chosen algorithm does not take are ignored.
    params = make_algorithm(args.algorithm, n=args.n, s=args.s, p1=args.p1, seed=args.seed,
                            window_size=tuple(args.window_size), stride=tuple(args.stride),
                            fill=args.fill)
    config = generator_config(params.generator())
    fast_saliency.OVERLAP_BYTES = OVERLAP_MODES[args.overlap]
    load_before = os.getloadavg()
    rows = [run_size(args, params, config, kind, shape) for kind in args.model
            for shape in args.sizes]
    load_after = os.getloadavg()
    models = {"mlp": f"mlp: MLP ({args.hidden},) on up to {args.train_images} digits",
              "cnn": "cnn: ONNX CNN (conv 8, 16, random weights; epochs 0) by onnxruntime"}
    print(f"Saliency benchmark: {describe(params)}; {'; '.join(models[m] for m in args.model)}; "
          f"batch {args.batch_size}, chunk_size {args.chunk_size}, overlap {args.overlap}"
          f"{'' if args.overlap != 'auto' else f' (from {OVERLAP_MODES[args.overlap]:,} bytes)'}"
          f", BLAS threads {threads_for(SMALL_BATCHES)} (small batches); best of the passes, "
          "taken in turns")
    print_table(rows)
    print_targets(rows)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"load average (1, 5, 15 min): before {' '.join(f'{v:.2f}' for v in load_before)}, "
          f"after {' '.join(f'{v:.2f}' for v in load_after)}; process peak RSS "
          f"{peak_rss:.0f} MiB")
    difference = max(r["difference"] for r in rows)
    print(f"maps equal xaitk's: max |difference| {difference:.1e} (atol {ATOL:g})")
    return 0 if difference <= ATOL else 1


if __name__ == "__main__":
    sys.exit(main())
