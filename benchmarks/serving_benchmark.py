"""Explanations served over HTTP: requests per second and latency, ours against the naive way.

Both are pyfunc models served by `mlflow models serve --env-manager local` (one worker) on
127.0.0.1, sent the same PNG files by one client, one request after another:

- naive: a pyfunc that reads each image and calls xaitk's `RISEStack` on it, one image at a
  time (the stack built once, in `load_context`; the classifier batched as ours is);
- ours: the explainer model (`steps/tracking/explainer_model.py`), RISE's stored configuration
  run by the fast engine, the request's images predicted and explained together.

For 1 and for 8 images a request, each way takes its turn at `--requests` requests, `--rounds`
times; it prints requests/s, images/s and latency percentiles of the best round of each, and
the ratio. Data: digits (8x8 grey, as the PNG files a user would send) or `64x64x3` (digits
upscaled and tinted, `tests/images.py`), an MLP trained on the training split, RISE n=1000.
Ours answers the naive model's maps (they are xaitk's): it exits 1 if they differ.

    python benchmarks/serving_benchmark.py                       # digits
    python benchmarks/serving_benchmark.py --data 64x64x3
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))  # the project's `steps` package

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from steps.core.algorithm import PREDICT_BATCH_SIZE, make_algorithm  # noqa: E402
from steps.core.image_dataset import ImageDataset, load_dataset, random_split  # noqa: E402
from steps.core.image_models import ModelParams, train_classifier  # noqa: E402
from steps.core.model_input import InputConvention  # noqa: E402
from steps.core.xaitk_generators import generator_config  # noqa: E402
from steps.tracking.explainer_model import (SIGNATURE, code_copy,  # noqa: E402
                                            log_explainer_spec, pinned_requirements)

RISE = {"n": 1000}
ATOL = 1e-6


class NaiveExplainer(mlflow.pyfunc.PythonModel):
    """The naive way: each row's image read and explained alone by xaitk's RISEStack."""

    def load_context(self, context):
        from steps.core.image_models import ProbaModel
        from steps.core.xaitk_generators import ImageClassifier

        model = ProbaModel(mlflow.sklearn.load_model(context.artifacts["classifier"]))
        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.names, self.shape = spec["class_names"], tuple(spec["image_shape"])
        self.classifier = ImageClassifier(model, spec["predict_batch_size"], len(self.names))
        self.stack = make_algorithm("rise", **spec["rise"]).xaitk_stack()

    def predict(self, context, model_input, params=None):
        answers = []
        for data in model_input["image"]:
            image = Image.open(io.BytesIO(data)).convert("RGB" if len(self.shape) == 3 else "L")
            pixels = np.asarray(image, dtype=np.float32) / 255.0
            confidences = self.classifier.classify_array(pixels[np.newaxis])[0]
            column = int(confidences.argmax())
            maps = np.asarray(self.stack(pixels, self.classifier))
            answers.append({"predicted_class": self.names[column],
                            "confidence": float(confidences[column]),
                            "saliency_map": {self.names[column]: maps[column].tolist()}})
        return answers


def colour_dataset(folder: Path) -> ImageDataset:
    """Digits upscaled to 64x64 and tinted (the tests' colour folder), read as a folder."""
    from tests.images import write_image_folder

    return load_dataset(str(write_image_folder(folder / "colour", per_class=60, sizes=(64,))))


def png(image: np.ndarray) -> bytes:
    """An image in [0, 1] as the PNG file a user would send."""
    out = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def log_models(data: ImageDataset, folder: Path) -> tuple[str, str]:
    """The classifier, ours and the naive explainer logged in a SQLite store in `folder`."""
    split = random_split(data, 0.25, 0)
    model = train_classifier(ModelParams(epochs=100), data.images[split.train_rows],
                             data.labels[split.train_rows]).classifier
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    names = [data.class_names[int(label)] for label in model.classes_]
    config = {**generator_config(make_algorithm("rise", **RISE).generator()),
              "model_input": InputConvention(output="probabilities").as_dict()}
    spec = {"config": json.loads(json.dumps(config)), "class_names": names,
            "image_shape": list(data.image_shape), "predict_batch_size": PREDICT_BATCH_SIZE,
            "rise": RISE}
    with mlflow.start_run():
        classifier = mlflow.sklearn.log_model(model, name="mlp", serialization_format="skops",
                                              skops_trusted_types=trusted(model),
                                              pip_requirements=["scikit-learn", "skops"])
        ours, _ = log_explainer_spec({**spec, "classifier_uri": classifier.model_uri}, {})
        local = Path(mlflow.artifacts.download_artifacts(classifier.model_uri,
                                                         dst_path=str(folder / "mlp")))
        (folder / "spec.json").write_text(json.dumps(spec))
        naive = mlflow.pyfunc.log_model(
            name="naive", python_model=NaiveExplainer(),
            artifacts={"classifier": str(local), "spec": str(folder / "spec.json")},
            code_paths=[str(code_copy(folder))], pip_requirements=pinned_requirements(local),
            signature=SIGNATURE)
    return ours, naive.model_uri


def trusted(model) -> list[str]:
    from steps.train import sklearn_trusted_types

    return sklearn_trusted_types(model)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`mlflow models serve` of one model, in a process group of its own."""

    def __init__(self, model_uri: str, folder: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        # This interpreter's tools (uvicorn, which the server execs) first on PATH.
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        self.log = open(folder / f"serve-{self.url.rsplit(':', 1)[1]}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
             "--env-manager", "local", "--host", "127.0.0.1", "--port",
             self.url.rsplit(":", 1)[1], "--workers", "1"],
            cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.25)
        self.stop()
        tail = Path(self.log.name).read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"the server of {model_uri} did not come up:\n" + "\n".join(tail))

    def post(self, body: bytes) -> list:
        request = urllib.request.Request(f"{self.url}/invocations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())["predictions"]

    def stop(self) -> None:
        """SIGTERM to the server's group (ours), SIGKILL if it lingers."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def bodies(files: list[bytes], per_request: int, requests: int) -> list[bytes]:
    """`requests` JSON bodies of `per_request` images each, going round the files."""
    made = []
    for r in range(requests):
        chosen = [files[(r * per_request + k) % len(files)] for k in range(per_request)]
        made.append(json.dumps({"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(one).decode()] for one in chosen]}}).encode())
    return made


def timed_round(server: Server, requests: list[bytes]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for body in requests:
        began = time.perf_counter()
        server.post(body)
        latencies.append(time.perf_counter() - began)
    return time.perf_counter() - start, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("digits", "64x64x3"), default="digits")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per round (default: 40 for digits, 8 for 64x64x3)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    requests = args.requests or (40 if args.data == "digits" else 8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = load_dataset("digits") if args.data == "digits" else colour_dataset(folder)
        split = random_split(data, 0.25, 0)
        files = [png(data.images[row]) for row in split.test_rows[:16]]
        ours_uri, naive_uri = log_models(data, folder)
        servers = {"naive": Server(naive_uri, folder), "ours": Server(ours_uri, folder)}
        try:
            check = bodies(files, 8, 1)[0]
            answers = {name: server.post(check) for name, server in servers.items()}
            worst = max(float(np.max(np.abs(np.asarray(next(iter(o["saliency_map"].values())))
                                            - np.asarray(next(iter(n["saliency_map"].values()))))))
                        for o, n in zip(answers["ours"], answers["naive"]))
            same = all(o["predicted_class"] == n["predicted_class"]
                       for o, n in zip(answers["ours"], answers["naive"]))
            print(f"{args.data}, RISE n={RISE['n']}, {requests} requests a round, best of "
                  f"{args.rounds}; maps equal the naive (xaitk's): max |difference| "
                  f"{worst:.1e}, same predictions: {same}")
            print("| images a request | way | requests/s | images/s | p50 ms | p90 ms | p99 ms |")
            print("|---|---|---|---|---|---|---|")
            for per_request in (1, 8):
                made = bodies(files, per_request, requests)
                best = {}
                for _ in range(args.rounds):
                    for name, server in servers.items():
                        seconds, latencies = timed_round(server, made)
                        if name not in best or seconds < best[name][0]:
                            best[name] = (seconds, latencies)
                rates = {}
                for name, (seconds, latencies) in best.items():
                    rates[name] = requests / seconds
                    p50, p90, p99 = (1000 * np.percentile(latencies, q) for q in (50, 90, 99))
                    print(f"| {per_request} | {name} | {rates[name]:.2f} | "
                          f"{rates[name] * per_request:.1f} | {p50:.0f} | {p90:.0f} | {p99:.0f} |")
                print(f"| {per_request} | ours / naive | {rates['ours'] / rates['naive']:.1f}x "
                      "| | | | |")
        finally:
            for server in servers.values():
                server.stop()
    return 0 if worst <= ATOL and same else 1


if __name__ == "__main__":
    sys.exit(main())
