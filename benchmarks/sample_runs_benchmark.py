"""Per-sample runs written the naive way and by `SampleRunWriter`, side by side, in runs/s.

Both ways write the same realistic evaluation runs (ten `Class_k_conf` metrics and
`Predicted_class_conf`; tags `Image_id`, `GT_class`, `Predicted_class`, `Correct`,
`Model_uri`, `Train_run_id` and the parent run's ID) into (a) a fresh SQLite store in a
temporary directory, once as the steps leave a SQLite store (WAL mode,
steps/tracking/sqlite_journal.py) and once in SQLite's default rollback-journal mode, and (b)
an `mlflow server` this script starts on a free 127.0.0.1 port, backed by a fresh PostgreSQL
database (or SQLite with `--backend sqlite`), dropped and stopped at the end.

    python benchmarks/sample_runs_benchmark.py --runs 400
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps import store_names  # noqa: E402
from steps.tracking.evaluation import sample_runs  # noqa: E402
from steps.tracking.console import quiet_run_links  # noqa: E402
from steps.tracking.sample_runs import SERVER_WORKERS, SampleRun, SampleRunWriter  # noqa: E402
from steps.tracking.sqlite_journal import journal_mode, use_wal  # noqa: E402

# The parent tags the evaluate step puts on its sample runs.
PARENT_TAGS = (store_names.EVALUATION_PARENT_TAG, store_names.PARENT_RUN_TAG)
SERVER_START_SECONDS = 180
WARM_UP_RUNS = 2 * SERVER_WORKERS
# SQLite journal modes measured: as the steps leave a store, and SQLite's default.
SQLITE_JOURNALS = {"wal": "sqlite file, WAL (as the steps leave it)",
                   "delete": "sqlite file, rollback journal (SQLite's default)"}
NUM_CLASSES = 10


def realistic_samples(count: int, parent_id: str, seed: int = 0) -> list[SampleRun]:
    """Runs shaped as the evaluate step writes them, from random class confidences."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(count, NUM_CLASSES))
    confidences = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = rng.integers(0, NUM_CLASSES, size=count)
    class_names = np.array([str(k) for k in range(NUM_CLASSES)])
    # The model's lineage tags, as a model logged by the train step gives them.
    tags = {store_names.MODEL_URI_TAG: f"models:/m-{uuid.uuid4().hex}",
            store_names.TRAIN_RUN_TAG: uuid.uuid4().hex, **dict.fromkeys(PARENT_TAGS, parent_id)}
    return sample_runs([str(i) for i in range(count)], class_names[truth],
                       class_names[confidences.argmax(axis=1)], confidences, class_names, tags)


def write_naive(experiment_id: str, samples: list[SampleRun]) -> None:
    """The obvious loop: the fluent API, one `start_run` block per sample."""
    # MLflow prints two "View run" lines per run ended in a server; the fetch behind them
    # is part of the naive cost, the lines are not wanted on the console.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for sample in samples:
            with mlflow.start_run(experiment_id=experiment_id, run_name=sample.name):
                mlflow.log_metrics(sample.metrics)
                mlflow.set_tags(sample.tags)


def write_ours(experiment_id: str, samples: list[SampleRun], workers: int | None) -> None:
    SampleRunWriter(experiment_id, workers=workers).write_all(samples, label="    writer")


class Way:
    """One way of writing the sample runs, into its own experiment, timed round by round."""

    def __init__(self, name: str, write: Callable[[str, list[SampleRun]], None], runs: int):
        self.name, self.write = name, write
        self.client = MlflowClient()
        self.experiment_id = self.client.create_experiment(f"{name}-{uuid.uuid4().hex[:8]}")
        self.parent_id = self.client.create_run(self.experiment_id,
                                                run_name=f"{name}-parent").info.run_id
        self.samples = realistic_samples(runs, self.parent_id)
        self.seconds = 0.0

    @property
    def rate(self) -> float:
        return len(self.samples) / self.seconds

    def write_round(self, round_: int, rounds: int) -> None:
        count = len(self.samples)
        chunk = self.samples[round_ * count // rounds:(round_ + 1) * count // rounds]
        started = time.perf_counter()
        self.write(self.experiment_id, chunk)
        self.seconds += time.perf_counter() - started

    def finish(self) -> None:
        """End the parent run and check that every sample run is in the store."""
        with quiet_run_links():
            self.client.set_terminated(self.parent_id)
        wanted = len(self.samples) + 1
        written = self.client.search_runs([self.experiment_id], max_results=wanted + 10)
        assert len(written) == wanted, f"{self.name}: {len(written)} runs stored, not {wanted}"


@dataclass
class Result:
    store: str
    naive: float
    ours: float

    @property
    def ratio(self) -> float:
        return self.ours / self.naive


def compare(store: str, uri: str, runs: int, rounds: int, workers: int | None) -> Result:
    """Both ways, after an untimed warm-up (a server's workers each set up their store on
    first use), taking turns round by round so that a change in the machine's load meanwhile
    weighs on both alike."""
    print(f"{store}: {uri}", flush=True)
    mlflow.set_tracking_uri(uri)
    writes = {"naive": write_naive, "writer": functools.partial(write_ours, workers=workers)}
    for name, write in writes.items():
        warm_up = Way(f"warm-up-{name}", write, WARM_UP_RUNS)
        warm_up.write_round(0, 1)
        warm_up.finish()
    naive, ours = (Way(name, write, runs) for name, write in writes.items())
    for round_ in range(rounds):
        print(f"  round {round_ + 1}/{rounds}", flush=True)
        for way in (naive, ours) if round_ % 2 == 0 else (ours, naive):
            way.write_round(round_, rounds)
    for way in (naive, ours):
        way.finish()
        print(f"  {way.name:<8}{way.rate:8.1f} runs/s", flush=True)
    return Result(store, naive.rate, ours.rate)


def sqlite_store(path: Path, journal: str) -> str:
    """A new SQLite store at `path` in the given journal mode; its URI."""
    uri = f"sqlite:///{path}"
    MlflowClient(uri).search_experiments(max_results=1)  # creates the tables
    if journal == "wal":
        use_wal(path)
    if journal_mode(path) != journal:
        raise RuntimeError(f"{path} is in {journal_mode(path)} mode, not {journal} "
                           "(SALIENCY_FLOW_SQLITE_WAL=0?)")
    return uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_database(host: str, port: int, user: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one use; its SQLAlchemy URI. Dropped afterwards."""
    import psycopg2
    from psycopg2 import sql

    name = f"sample_runs_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg2://{user}@{host}:{port}/{name}"
        finally:
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                               .format(sql.Identifier(name)))
    finally:
        admin.close()


@contextlib.contextmanager
def tracking_server(backend_uri: str, directory: Path, workers: int = 4) -> Iterator[str]:
    """An `mlflow server` on a free local port, serving artifacts from `directory`; its URL.

    It runs in its own process group, so that it and its worker processes are all stopped
    at the end, whatever happens meanwhile.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = directory / f"mlflow-server-{port}.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(directory / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # No background job runner (MLflow's GenAI jobs): a dozen busy processes that
            # nothing here uses, competing with what is measured.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    try:
        _wait_until_up(server, url, log_path)
        yield url
    finally:
        _stop(server)


def _wait_until_up(server: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({server.returncode}):\n"
                               f"{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server not up after {SERVER_START_SECONDS} s:\n"
                       f"{log_path.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group; then SIGKILL to any of it still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(15)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300,
                        help="sample runs each way writes into each store (default: 300)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="rounds the runs are split into, the two ways taking turns "
                             "(default: 20)")
    parser.add_argument("--stores", choices=("both", "sqlite", "server"), default="both",
                        help="which stores to measure (default: both)")
    parser.add_argument("--sqlite-journal", choices=("both", *SQLITE_JOURNALS), default="both",
                        help="SQLite journal modes to measure: wal (as the steps leave a store), "
                             "delete (SQLite's default) or both (default: both)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql",
                        help="the tracking server's backend store (default: postgresql)")
    parser.add_argument("--workers", type=int, default=SERVER_WORKERS,
                        help=f"writer threads against the server (default: {SERVER_WORKERS})")
    parser.add_argument("--server-workers", type=int, default=4,
                        help="mlflow server worker processes (default: 4, as mlflow server)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= args.runs:
        parser.error("--rounds must be from 1 to --runs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Killed with SIGTERM, still stop the server and drop the database on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    results = []
    with tempfile.TemporaryDirectory(prefix="sample-runs-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        directory = Path(tmp)
        if args.stores in ("both", "sqlite"):
            for journal, label in SQLITE_JOURNALS.items():
                if args.sqlite_journal in ("both", journal):
                    uri = sqlite_store(directory / f"local-{journal}.db", journal)
                    results.append(compare(label, uri, args.runs, args.rounds, workers=None))
        if args.stores in ("both", "server"):
            if args.backend == "postgresql":
                backend = stack.enter_context(
                    postgres_database(args.pg_host, args.pg_port, args.pg_user))
            else:
                backend = f"sqlite:///{directory / 'server.db'}"
            print(f"server backend store: {backend}", flush=True)
            url = stack.enter_context(tracking_server(backend, directory, args.server_workers))
            results.append(compare(f"server ({args.backend} backend)", url, args.runs,
                                   args.rounds, workers=args.workers))
    mlflow.set_tracking_uri(None)
    print(f"\n{args.runs} runs each way in {args.rounds} rounds; "
          f"writer threads against the server: {args.workers}")
    print(f"{'store':<50}{'naive runs/s':>14}{'writer runs/s':>15}{'ratio':>9}")
    for result in results:
        print(f"{result.store:<50}{result.naive:>14.1f}{result.ours:>15.1f}"
              f"{result.ratio:>8.2f}x")
    by_store = {result.store: result for result in results}
    wal, default = (by_store.get(label) for label in SQLITE_JOURNALS.values())
    if wal and default:
        print(f"\nnaive loop on a SQLite file in its default mode -> the writer on the file as "
              f"the steps leave it: {default.naive:.1f} -> {wal.ours:.1f} runs/s, "
              f"{wal.ours / default.naive:.2f}x (two comparisons of this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
