"""The evaluate step on a Dask cluster against a PostgreSQL-backed `mlflow server`.

Makes an `.npz` dataset of `--images` 8x8 images (digits, tiled with random
   one-pixel shifts and noise), trains a small model once (`mlflow run . -e train`), then
   evaluates the whole test split with `-P cluster=` empty (in-process), `local:1` and
   `local:2`, each by `mlflow run . --env-manager local -e evaluate ...`, against an
   `mlflow server` this script starts on a free 127.0.0.1 port (a fresh PostgreSQL database,
   `--artifacts-destination` a temporary directory; both dropped at the end). Runs/s is the
   step's own figure: the last line of its progress output (runs written / seconds writing);
   the table also gives the `mlflow run` command's wall time and how long the evaluation run
   was open (its start and end times in the store).
With `--heavy LAYERSxWIDTH` the model is an ONNX MLP whose prediction dominates (logged by the
script instead of training), and `--maps N` adds the saliency step on N images per
configuration. The driver's query on a large store is timed by
`benchmarks/query_benchmark.py`.

    python benchmarks/cluster_benchmark.py   # --images 10000 --test-fraction 0.99
    python benchmarks/cluster_benchmark.py --test-fraction 0.05   # about 5 minutes
    python benchmarks/cluster_benchmark.py --images 2700 --test-fraction 0.75 --heavy 24x4096 --maps 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sample_runs_benchmark import postgres_database, tracking_server  # noqa: E402

PROGRESS = re.compile(r"(\d+)/(\d+) runs\s+([\d.]+) runs/s.*?elapsed (\d+(?::\d+)+)")
EVALUATION_RUN = re.compile(r"Evaluation run ([0-9a-f]{32}): (\d+) samples")
TRAIN_RUN = re.compile(r"Train run ([0-9a-f]{32})")


def make_dataset(path: Path, images: int, seed: int = 0) -> None:
    """`images` 8x8 grey digits with labels: sklearn's 1,797 digits, each copy shifted by up to
    one pixel (edge-padded) with a little noise, so no two images are the same."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    base, labels = digits.images / 16.0, digits.target
    rng = np.random.default_rng(seed)
    rows = np.resize(np.arange(len(base)), images)
    padded = np.pad(base, ((0, 0), (1, 1), (1, 1)), mode="edge")
    dy, dx = rng.integers(0, 3, size=(2, images))
    out = np.empty((images, 8, 8), np.float32)
    for i, (row, y, x) in enumerate(zip(rows, dy, dx)):
        out[i] = padded[row, y:y + 8, x:x + 8]
    out = np.clip(out + rng.normal(scale=0.03, size=out.shape), 0.0, 1.0).astype(np.float32)
    np.savez(path, images=out, labels=labels[rows].astype(np.int64),
             class_names=np.array([str(k) for k in range(10)]),
             image_ids=np.array([f"img{i:06d}" for i in range(images)]))


def heavy_onnx_model(layers: int, width: int, seed: int = 0) -> bytes:
    """An ONNX classifier of the flattened 8x8 images whose prediction dominates a step: a
    first Gemm to `width` units, then `layers` times the same `width`x`width` Gemm and Relu
    (one weight matrix, reused, so the file stays small), then 10 logits. Its classes are
    meaningless; what it costs per image is what is measured."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.onnx_models import checked_model

    rng = np.random.default_rng(seed)
    weights = {
        "w_in": rng.normal(scale=0.1, size=(64, width)),
        "w_hidden": rng.normal(scale=1 / np.sqrt(width), size=(width, width)),
        "w_out": rng.normal(scale=1 / np.sqrt(width), size=(width, 10)),
        "bias": np.zeros(width), "bias_out": np.zeros(10)}
    initializers = [numpy_helper.from_array(value.astype(np.float32), name)
                    for name, value in weights.items()]
    nodes = [helper.make_node("Gemm", ["input", "w_in", "bias"], ["h0"])]
    for layer in range(layers):
        nodes += [helper.make_node("Gemm", [f"h{layer}", "w_hidden", "bias"], [f"z{layer}"]),
                  helper.make_node("Relu", [f"z{layer}"], [f"h{layer + 1}"])]
    nodes.append(helper.make_node("Gemm", [f"h{layers}", "w_out", "bias_out"], ["logits"]))
    return checked_model(
        nodes, "heavy_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializers).SerializeToString()


def log_heavy_model(url: str, layers: int, width: int) -> str:
    """The heavy model logged into the tracking server; its `models:/` URI."""
    import mlflow
    import onnx

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("Benchmark models")
    with mlflow.start_run(run_name=f"heavy mlp {layers}x{width}"):
        info = mlflow.onnx.log_model(
            onnx.load_from_string(heavy_onnx_model(layers, width)), name="heavy",
            metadata={"image_input": {"layout": "flat", "output": "logits"}},
            pip_requirements=["onnx", "onnxruntime"])
    return info.model_uri


def project_env(tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def project_command(entry_point: str, params: dict[str, object],
                    project: Path = PROJECT_DIR) -> list[str]:
    """`mlflow run <project, this one by default> -e <entry point> --env-manager local
    -P key=value ...`."""
    args = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point,
            "--env-manager", "local"]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    return args


def mlflow_run(entry_point: str, params: dict[str, str], tracking_uri: str, cwd: Path,
               log: Path) -> tuple[str, float]:
    """`mlflow run` as a user types it; its output and wall seconds. Fails loudly."""
    args = project_command(entry_point, params)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=project_env(tracking_uri), capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    with open(log, "a") as file:
        file.write(f"$ {' '.join(args)}\n{output}\n")
    if proc.returncode:
        raise RuntimeError(f"{entry_point} failed ({proc.returncode}):\n{output[-4000:]}")
    return output, seconds


def seconds_of(clock: str) -> int:
    total = 0
    for part in clock.split(":"):
        total = 60 * total + int(part)
    return total


@dataclass
class Evaluation:
    config: str
    run_id: str
    samples: int
    wall: float           # the `mlflow run` command, start to exit
    open_s: float         # the evaluation run's end_time - start_time in the store
    write_s: int          # the progress line's elapsed (whole seconds)
    rate: float           # the progress line's runs/s


def evaluate(config: str, model_uri: str, dataset: Path, test_fraction: float, url: str,
             cwd: Path, log: Path) -> Evaluation:
    from mlflow.tracking import MlflowClient

    params = {"model_uri": model_uri, "dataset": str(dataset),
              "test_fraction": str(test_fraction), "cluster": config}
    output, wall = mlflow_run("evaluate", params, url, cwd, log)
    found, progress = EVALUATION_RUN.search(output), PROGRESS.findall(output)
    if not found or not progress:
        raise RuntimeError(f"no evaluation run or progress line in the output:\n{output[-3000:]}")
    done, total, rate, elapsed = progress[-1]
    if done != total:
        raise RuntimeError(f"the last progress line is {done}/{total}")
    info = MlflowClient(url).get_run(found[1]).info
    return Evaluation(config or "in-process", found[1], int(found[2]), wall,
                      (info.end_time - info.start_time) / 1000, seconds_of(elapsed), float(rate))


@dataclass
class Explanation:
    config: str
    maps: int
    wall: float  # the `mlflow run` command, start to exit


def explain(config: str, model_uri: str, dataset: Path, images: int, rise_n: int, url: str,
            cwd: Path, log: Path) -> Explanation:
    """The saliency step on the dataset's first `images` images (RISE, `rise_n` masks)."""
    params = {"model_uri": model_uri, "dataset": str(dataset), "cluster": config,
              "image_ids": ",".join(f"img{i:06d}" for i in range(images)),
              "n": str(rise_n), "picture_mode": "combined", "random_maps": "1",
              "eval_split": "all"}
    _, wall = mlflow_run("saliency", params, url, cwd, log)
    return Explanation(config or "in-process", images, wall)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000,
                        help="images in the dataset the script makes (default: 10000)")
    parser.add_argument("--test-fraction", type=float, default=0.99,
                        help="test split of the scaling evaluations, as -P test_fraction "
                             "(default: 0.99: 9,900 of 10,000 images)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    parser.add_argument("--configs", default=",local:1,local:2",
                        help="comma-separated -P cluster values, empty for in-process "
                             "(default: ',local:1,local:2')")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times each configuration is evaluated, taking turns (default: 1)")
    parser.add_argument("--skip-scaling", action="store_true",
                        help="evaluate once (the first configuration), no scaling table")
    parser.add_argument("--heavy", metavar="LAYERSxWIDTH", default="",
                        help="evaluate (and explain) an ONNX model whose prediction dominates, "
                             "e.g. 12x2048, instead of training a small MLP")
    parser.add_argument("--maps", type=int, default=0,
                        help="also run the saliency step on this many images per "
                             "configuration (RISE, --rise-n masks; default: none)")
    parser.add_argument("--rise-n", type=int, default=100, help="RISE masks per map")
    parser.add_argument("--postgres", default="127.0.0.1:5432",
                        help="PostgreSQL host:port, user postgres, trust auth")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print("$ python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
          flush=True)
    print(f"{os.cpu_count()} CPU cores (os.cpu_count()), started {now_utc():%Y-%m-%d %H:%M} UTC",
          flush=True)
    host, port = args.postgres.rsplit(":", 1)
    configs = [c.strip() for c in args.configs.split(",")]
    if args.skip_scaling:
        configs = configs[:1]
    with tempfile.TemporaryDirectory(prefix="cluster-benchmark-") as scratch, \
            postgres_database(host, int(port), "postgres") as db_uri, \
            tracking_server(db_uri, Path(scratch)) as url:
        scratch = Path(scratch)
        log = scratch / "steps.log"
        dataset = scratch / f"digits{args.images}.npz"
        make_dataset(dataset, args.images)
        print(f"dataset {dataset.name}: {args.images} images 8x8; server {url} on {db_uri}",
              flush=True)
        if args.heavy:
            layers, width = map(int, args.heavy.lower().split("x"))
            model_uri = log_heavy_model(url, layers, width)
            print(f"logged {model_uri}: ONNX MLP, {layers} hidden layers of {width} units",
                  flush=True)
        else:
            output, seconds = mlflow_run("train", {"dataset": str(dataset),
                                                   "epochs": str(args.epochs)}, url, scratch,
                                         log)
            from mlflow.tracking import MlflowClient

            from steps.store_names import MODEL_URI_TAG

            train_run = MlflowClient(url).get_run(TRAIN_RUN.search(output)[1])
            model_uri = train_run.data.tags[MODEL_URI_TAG]
            print(f"trained {model_uri} in {seconds:.1f} s", flush=True)

        evaluations: list[Evaluation] = []
        for round_ in range(args.rounds):
            for config in configs if round_ % 2 == 0 else configs[::-1]:
                result = evaluate(config, model_uri, dataset, args.test_fraction, url, scratch,
                                  log)
                evaluations.append(result)
                print(f"  {result.config:<11} {result.samples} samples: {result.rate:.1f} runs/s "
                      f"writing, {result.wall:.1f} s the command ({now_utc():%H:%M:%S} UTC)",
                      flush=True)
        explanations: list[Explanation] = []
        if args.maps:
            for config in configs:
                made = explain(config, model_uri, dataset, args.maps, args.rise_n, url, scratch,
                               log)
                explanations.append(made)
                print(f"  {made.config:<11} {made.maps} maps: {made.wall:.1f} s the command",
                      flush=True)

        rates: dict[str, list[Evaluation]] = {}
        for result in evaluations:
            rates.setdefault(result.config, []).append(result)
        first = rates[configs[0] or "in-process"]
        base_wall = statistics.mean(r.samples / r.wall for r in first)
        rows = []
        for config, results in rates.items():
            rate = statistics.mean(r.rate for r in results)
            wall = statistics.mean(r.wall for r in results)
            per_wall = statistics.mean(r.samples / r.wall for r in results)
            rows.append([config, str(sum(r.samples for r in results) // len(results)),
                         f"{wall:.1f}", f"{statistics.mean(r.open_s for r in results):.1f}",
                         f"{statistics.mean(r.write_s for r in results):.0f}",
                         f"{rate:.1f}", f"{per_wall:.1f}", f"{per_wall / base_wall:.2f}x"])
        map_rows = [[made.config, str(made.maps), f"{made.wall:.1f}",
                     f"{made.maps / made.wall:.2f}",
                     f"{(made.maps / made.wall) / (explanations[0].maps / explanations[0].wall):.2f}x"]
                    for made in explanations]


    print(f"\n{os.cpu_count()} CPU cores; dataset of {args.images:,} images, "
          f"test_fraction {args.test_fraction}; mlflow server (4 workers) on PostgreSQL, "
          "all on this machine; runs/s from the step's progress line (runs / seconds writing)")
    model = (f"ONNX MLP {args.heavy} (prediction dominates)" if args.heavy
             else "the train step's MLP")
    print(f"model: {model}; runs/s: the progress line's (in-process it counts writing only, "
          "on a cluster the workers' predicting too); images/s: samples / the command's "
          "wall time")
    print(table(rows, ["-P cluster", "samples", "mlflow run, s", "run open, s", "progress, s",
                       "runs/s", "images/s", "ratio to " + (configs[0] or "in-process")]))
    if map_rows:
        print(f"\nsaliency step, RISE n={args.rise_n}, maps/s: maps / the command's wall time")
        print(table(map_rows, ["-P cluster", "maps", "mlflow run, s", "maps/s",
                               "ratio to " + (configs[0] or "in-process")]))
    print(f"\nended {now_utc():%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
