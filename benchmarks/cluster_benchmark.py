"""The evaluate step on a Dask cluster against a PostgreSQL-backed `mlflow server` (issue 12).

1. Scaling: makes an `.npz` dataset of `--images` 8x8 images (digits, tiled with random
   one-pixel shifts and noise), trains a small model once (`mlflow run . -e train`), then
   evaluates the whole test split with `-P cluster=` empty (in-process), `local:1` and
   `local:2`, each by `mlflow run . --env-manager local -e evaluate ...`, against an
   `mlflow server` this script starts on a free 127.0.0.1 port (a fresh PostgreSQL database,
   `--artifacts-destination` a temporary directory; both dropped at the end). Runs/s is the
   step's own figure: the last line of its progress output (runs written / seconds writing);
   the table also gives the `mlflow run` command's wall time and how long the evaluation run
   was open (its start and end times in the store).
2. Query: the driver's query (`steps/tracking/query.py:query_samples`, the default
   `tags.Correct = 'false'` ordered by `metrics.Predicted_class_conf ASC`, at most 5) on the
   first evaluation, timed while the store holds that one evaluation, and again once more
   evaluations (`--fill-cluster`, in-process by default; `--fill-test-fraction` of the dataset
   each) have filled the store to `--store-runs` runs (or until `--deadline`). Each time, the
   SQL MLflow runs for it is timed statement by statement (in this process, through MLflow's
   own SqlAlchemyStore on the same database), and the slowest statement's
   `EXPLAIN (ANALYZE, BUFFERS)` is printed with `--explain`. Filling the store through
   evaluations takes hours; `benchmarks/query_benchmark.py` fills it in SQL (50,000 sample
   runs in under a minute) and times the query beside other ways to scope it.

    python benchmarks/cluster_benchmark.py   # --images 10000 --test-fraction 0.99 --store-runs 50000

With the defaults that is about 1.5 h on a 2-core machine (`local:1` writes about 5 runs/s);
`--test-fraction 0.1 --deadline HH:MM` gives the scaling table in about 8 minutes.
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

DEFAULT_QUERY = "tags.Correct = 'false'"
DEFAULT_ORDER = "metrics.Predicted_class_conf ASC"
MAX_IMAGES = 5
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


def project_env(tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def mlflow_run(entry_point: str, params: dict[str, str], tracking_uri: str, cwd: Path,
               log: Path) -> tuple[str, float]:
    """`mlflow run` as a user types it; its output and wall seconds. Fails loudly."""
    args = [sys.executable, "-m", "mlflow", "run", str(PROJECT_DIR), "-e", entry_point,
            "--env-manager", "local"]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
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
    store_before: int = 0


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


def store_runs(db_uri: str) -> int:
    """Runs in the store (the per-sample runs and their few step runs)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_uri)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT count(*) FROM runs")).scalar()
    finally:
        engine.dispose()


@dataclass
class QueryTime:
    first: float
    median: float
    found: int


def time_query(url: str, run_id: str, repeats: int) -> QueryTime:
    """The driver's query on one evaluation, through the server, as the driver makes it."""
    import mlflow

    from steps.tracking.query import query_samples

    mlflow.set_tracking_uri(url)
    times = []
    for _ in range(1 + repeats):
        started = time.perf_counter()
        found = query_samples(run_id, DEFAULT_QUERY, DEFAULT_ORDER, MAX_IMAGES)
        times.append(time.perf_counter() - started)
    return QueryTime(times[0], statistics.median(times[1:]), len(found))


def profile_search(db_uri: str, artifacts: Path, run_id: str, explain: bool) -> list[str]:
    """The statements MLflow's SQL store runs for the driver's query, with their times; the
    slowest one's EXPLAIN (ANALYZE, BUFFERS) with `explain`. Lines to print."""
    import sqlalchemy
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.entities import ViewType

    from steps.names import EVALUATION_EXPERIMENT
    from steps.tracking.query import sample_filter

    store = SqlAlchemyStore(db_uri, artifacts.as_uri())
    experiment = store.get_experiment_by_name(EVALUATION_EXPERIMENT).experiment_id
    statements: list[list] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("started", []).append(time.perf_counter())

    def after(conn, cursor, statement, parameters, context, executemany):
        seconds = time.perf_counter() - conn.info["started"].pop()
        statements.append([seconds, statement, parameters])

    sqlalchemy.event.listen(store.engine, "before_cursor_execute", before)
    sqlalchemy.event.listen(store.engine, "after_cursor_execute", after)
    started = time.perf_counter()
    store.search_runs([experiment], sample_filter(run_id, DEFAULT_QUERY), ViewType.ACTIVE_ONLY,
                      MAX_IMAGES, [DEFAULT_ORDER])
    total = time.perf_counter() - started
    sqlalchemy.event.remove(store.engine, "before_cursor_execute", before)
    sqlalchemy.event.remove(store.engine, "after_cursor_execute", after)
    lines = [f"    SqlAlchemyStore.search_runs in process: {total * 1000:.1f} ms, "
             f"{len(statements)} statements, {sum(s[0] for s in statements) * 1000:.1f} ms in SQL"]
    for seconds, statement, _ in sorted(statements, key=lambda s: -s[0])[:3]:
        text = " ".join(statement.split())
        cut = "..." if len(text) > 160 else ""
        lines.append(f"      {seconds * 1000:8.1f} ms  {text[:160]}{cut}")
    if explain and statements:
        _, statement, parameters = max(statements, key=lambda s: s[0])
        with store.engine.connect() as connection:
            cursor = connection.connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            lines += ["    EXPLAIN (ANALYZE, BUFFERS) of the slowest:"]
            lines += [f"      {row[0]}" for row in cursor.fetchall()]
            cursor.close()
    store.engine.dispose()
    return lines


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
    parser.add_argument("--store-runs", type=int, default=50_000,
                        help="sample runs the store holds before the query is timed again "
                             "(default: 50000)")
    parser.add_argument("--fill-test-fraction", type=float, default=0.99,
                        help="test fraction of the evaluations that fill the store "
                             "(default: 0.99)")
    parser.add_argument("--fill-cluster", default="",
                        help="-P cluster of the evaluations that fill the store (default: empty, "
                             "in-process: against a server the fastest writer, 8 threads)")
    parser.add_argument("--query-repeats", type=int, default=5,
                        help="timed repeats of the query after a first call (default: 5)")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of the query's slowest statement")
    parser.add_argument("--skip-scaling", action="store_true",
                        help="evaluate once (the first configuration), no scaling table")
    parser.add_argument("--skip-query", action="store_true",
                        help="no query timing, no filling of the store")
    parser.add_argument("--deadline", default="",
                        help="HH:MM UTC: fill no more than is expected to end by then")
    parser.add_argument("--postgres", default="127.0.0.1:5432",
                        help="PostgreSQL host:port, user postgres, trust auth")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print("$ python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
          flush=True)
    print(f"{os.cpu_count()} CPU cores (os.cpu_count()), started {now_utc():%Y-%m-%d %H:%M} UTC",
          flush=True)
    deadline = None
    if args.deadline:
        hour, minute = map(int, args.deadline.split(":"))
        deadline = now_utc().replace(hour=hour, minute=minute, second=0, microsecond=0)
    host, port = args.postgres.rsplit(":", 1)
    configs = [c.strip() for c in args.configs.split(",")]
    if args.skip_scaling:
        configs = configs[:1]
    query_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cluster-benchmark-") as scratch, \
            postgres_database(host, int(port), "postgres") as db_uri, \
            tracking_server(db_uri, Path(scratch)) as url:
        scratch = Path(scratch)
        log = scratch / "steps.log"
        dataset = scratch / f"digits{args.images}.npz"
        make_dataset(dataset, args.images)
        print(f"dataset {dataset.name}: {args.images} images 8x8; server {url} on {db_uri}",
              flush=True)
        output, seconds = mlflow_run("train", {"dataset": str(dataset),
                                               "epochs": str(args.epochs)}, url, scratch, log)
        from mlflow.tracking import MlflowClient

        from steps.names import MODEL_URI_TAG

        train_run = MlflowClient(url).get_run(TRAIN_RUN.search(output)[1])
        model_uri = train_run.data.tags[MODEL_URI_TAG]
        print(f"trained {model_uri} in {seconds:.1f} s", flush=True)

        evaluations: list[Evaluation] = []
        fresh: tuple[QueryTime, list[str], int] | None = None
        for round_ in range(args.rounds):
            for config in configs if round_ % 2 == 0 else configs[::-1]:
                before = store_runs(db_uri)
                result = evaluate(config, model_uri, dataset, args.test_fraction, url, scratch,
                                  log)
                result.store_before = before
                evaluations.append(result)
                print(f"  {result.config:<11} {result.samples} samples: {result.rate:.1f} runs/s "
                      f"writing, {result.wall:.1f} s the command ({now_utc():%H:%M:%S} UTC)",
                      flush=True)
                if fresh is None and not args.skip_query:
                    runs_now = store_runs(db_uri)
                    fresh = (time_query(url, result.run_id, args.query_repeats),
                             profile_search(db_uri, scratch, result.run_id, args.explain),
                             runs_now)

        first = evaluations[0]
        rates: dict[str, list[Evaluation]] = {}
        for result in evaluations:
            rates.setdefault(result.config, []).append(result)
        base = statistics.mean(r.rate for r in rates[configs[0] or "in-process"])
        rows = []
        for config, results in rates.items():
            rate = statistics.mean(r.rate for r in results)
            rows.append([config, str(sum(r.samples for r in results) // len(results)),
                         f"{statistics.mean(r.wall for r in results):.1f}",
                         f"{statistics.mean(r.open_s for r in results):.1f}",
                         f"{statistics.mean(r.write_s for r in results):.0f}",
                         f"{rate:.1f}", f"{rate / base:.2f}x"])

        fills: list[Evaluation] = []
        if not args.skip_query:
            target = args.store_runs
            while (count := store_runs(db_uri)) < target:
                last = (fills or [e for e in evaluations
                                  if e.config == (args.fill_cluster or "in-process")]
                        or evaluations)[-1]
                expected = round(args.fill_test_fraction * args.images)
                needed = dt.timedelta(seconds=expected / last.rate * 1.15 + 30)
                if deadline and now_utc() + needed > deadline:
                    print(f"  stopped filling at {count} runs: one more evaluation would end "
                          f"after {args.deadline} UTC", flush=True)
                    break
                result = evaluate(args.fill_cluster, model_uri, dataset,
                                  args.fill_test_fraction, url, scratch, log)
                result.store_before = count
                fills.append(result)
                print(f"  fill {len(fills)}: {result.samples} samples on {count} runs, "
                      f"{result.rate:.1f} runs/s writing ({now_utc():%H:%M:%S} UTC)", flush=True)
            big_runs = store_runs(db_uri)
            big = time_query(url, first.run_id, args.query_repeats)
            big_lines = profile_search(db_uri, scratch, first.run_id, args.explain)
            latest = fills[-1] if fills else first
            latest_time = time_query(url, latest.run_id, args.query_repeats)
            small, small_lines, small_runs = fresh
            query_lines = [
                table([[f"fresh store, one evaluation ({small_runs:,} runs)",
                        f"{small.first * 1000:.0f}", f"{small.median * 1000:.0f}",
                        str(small.found)],
                       [f"store of {big_runs:,} runs, same evaluation",
                        f"{big.first * 1000:.0f}", f"{big.median * 1000:.0f}", str(big.found)],
                       [f"store of {big_runs:,} runs, latest evaluation "
                        f"({latest.samples:,} samples)",
                        f"{latest_time.first * 1000:.0f}", f"{latest_time.median * 1000:.0f}",
                        str(latest_time.found)]],
                      ["query_samples on one evaluation (" + f"{first.samples:,} samples)",
                       "first call, ms", f"median of {args.query_repeats}, ms", "rows"]),
                f"large / fresh store (median): {big.median / small.median:.2f}x",
                "  SQL on the fresh store:", *small_lines,
                f"  SQL on the store of {big_runs:,} runs:", *big_lines]

    print(f"\n{os.cpu_count()} CPU cores; dataset of {args.images:,} images, "
          f"test_fraction {args.test_fraction}; mlflow server (4 workers) on PostgreSQL, "
          "all on this machine; runs/s from the step's progress line (runs / seconds writing)")
    print(table(rows, ["-P cluster", "samples", "mlflow run, s", "run open, s", "writing, s",
                       "runs/s", "ratio to " + (configs[0] or "in-process")]))
    if fills:
        print("\nEvaluations filling the store (-P cluster=" + args.fill_cluster + "):")
        print(table([[str(i + 1), f"{r.store_before:,}", str(r.samples), f"{r.wall:.1f}",
                      f"{r.rate:.1f}"] for i, r in enumerate(fills)],
                    ["#", "runs in store before", "samples", "mlflow run, s", "runs/s"]))
    if query_lines:
        print()
        print("\n".join(query_lines))
    print(f"\nended {now_utc():%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
