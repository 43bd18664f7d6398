"""The driver's query between evaluation and saliency on a fresh store and on one holding 50,000
sample runs, beside other ways to scope it to one evaluation (issue 12).

The store: a fresh PostgreSQL database behind an `mlflow server` this script starts on a free
127.0.0.1 port (both dropped at the end). One real evaluation is written through the project's
own steps, as a user runs them: `mlflow run . -e train` on an `.npz` of `--images` 8x8 digits,
then `mlflow run . -e evaluate` on a test split of `--samples` images (the step's sample runs,
its parent run and its `results.json`). That is the fresh store. The store is then FILLED IN
SQL, NOT THROUGH MLFLOW (through the server it writes about 25 runs/s: 33 min for 50,000): the
evaluation's parent run and sample runs, with their tags, params, metrics and latest metrics,
are copied until the store holds `--store-sample-runs` sample runs, each copy under a new fake
parent run (run IDs md5(ID:copy), the parent's ID replaced in every tag value, times moved k
hours back; the copies have no artifacts and no dataset inputs). A run's rows are inserted
together, as MLflow's log_batch writes them, then ANALYZE. The query is timed on the real
evaluation, the newest, while the store holds it alone and again once filled.

Ways to limit the query to one evaluation's samples, all returning the same runs:

- tag value (the query before): `tags.Evaluation_parent_run_id = '<id>' AND <filter>`, ordered,
  `max_results` = max_images, after reading the experiment by name: `query_samples` as it was,
  and as it still is for an evaluation whose sample runs lack the tag key below.
- run-ID scope: `attributes.run_id IN (...)` with the sample run IDs of the evaluation's
  `results.json` (downloaded through the server), in chunks of 1,000 IDs (sqlparse, which
  MLflow parses filters with, refuses a list of more than about 4,500), the chunks' best
  `max_images` merged by one more query with the same order.
- time window: the tag value AND `attributes.start_time` within the parent run's start and end
  (the parent run read first, for its experiment and times).
- tag key (query_samples now): `steps/tracking/query.py:query_samples` on an evaluation run
  tagged `Samples_keyed` = 'true' (as the evaluate step tags it): the run read, then
  tags.`Sample_of_<id>` = 'true' AND <filter>, a tag KEY naming the evaluation, which each
  sample run carries (the copies with their own IDs).
- tag value + partial index: the query before, once a partial index on the tag's values is
  made in the database (`CREATE INDEX ... ON tags (value) WHERE key =
  'Evaluation_parent_run_id'`): what an operator can do, outside MLflow's schema; made for
  that measurement only, then dropped.

Each way is timed through the server (tracking URI `http://...`, as a user's pipeline) and
direct to the database (tracking URI `postgresql://...`, MLflow's SqlAlchemyStore in this
process), the ways taking turns, median of `--repeats` after one warm-up call. Then the main
SELECT MLflow's SqlAlchemyStore issues for each way (captured from SQLAlchemy) is run under
EXPLAIN (ANALYZE, BUFFERS): its execution time, the buffers it touched, and its scans (rows read
by each), which show the step that grows with the store. Through the server every request but
a connection's first waits about 40 ms more (uvicorn under `mlflow server --workers 4` leaves
TCP_NODELAY off; Kludex/uvicorn#3149): the script prints one small request's time, the floor
under each call a way makes (the driver's query makes two: the experiment, then the search).

    python benchmarks/query_benchmark.py                     # --store-sample-runs 50000
    python benchmarks/query_benchmark.py --store-sample-runs 50000,250000

About 3 minutes with the defaults on 2 cores (4 more for 250,000).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_benchmark import (TRAIN_RUN, evaluate, make_dataset, mlflow_run,  # noqa: E402
                               now_utc, table)
from sample_runs_benchmark import postgres_database, tracking_server  # noqa: E402

QUERY = "tags.Correct = 'false'"
ORDER = "metrics.Predicted_class_conf ASC"
MAX_IMAGES = 5
RUN_ID_CHUNK = 1000
INDEX_NAME = "query_benchmark_evaluation_parent"
HOUR_MS = 3_600_000

# The copies: a run's rows inserted together (ORDER BY copy, run), as log_batch writes them.
FILL_SQL = """
CREATE TEMP TABLE clone_map ON COMMIT DROP AS
    SELECT r.run_uuid AS old, md5(r.run_uuid || ':' || k) AS new, k
    FROM runs r CROSS JOIN generate_series(%(first)s, %(last)s) AS k
    WHERE r.run_uuid = %(parent)s OR r.run_uuid IN (
        SELECT run_uuid FROM tags WHERE key = %(parent_tag)s AND value = %(parent)s);
CREATE TEMP TABLE parent_map ON COMMIT DROP AS
    SELECT k, new FROM clone_map WHERE old = %(parent)s;
INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status,
                  start_time, end_time, source_version, lifecycle_stage, artifact_uri,
                  experiment_id, deleted_time)
    SELECT m.new, r.name, r.source_type, r.source_name, r.entry_point_name, r.user_id, r.status,
           r.start_time - m.k * %(hour)s, r.end_time - m.k * %(hour)s, r.source_version,
           r.lifecycle_stage, replace(r.artifact_uri, r.run_uuid, m.new), r.experiment_id,
           r.deleted_time
    FROM runs r JOIN clone_map m ON r.run_uuid = m.old ORDER BY m.k, m.new;
INSERT INTO tags (key, value, run_uuid)
    SELECT replace(t.key, %(parent)s, p.new),
           CASE WHEN t.value = %(parent)s THEN p.new ELSE t.value END, m.new
    FROM tags t JOIN clone_map m ON t.run_uuid = m.old JOIN parent_map p ON p.k = m.k
    ORDER BY m.k, m.new, t.key;
INSERT INTO params (key, value, run_uuid)
    SELECT t.key, t.value, m.new FROM params t JOIN clone_map m ON t.run_uuid = m.old
    ORDER BY m.k, m.new;
INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
    SELECT t.key, t.value, t.timestamp - m.k * %(hour)s, m.new, t.step, t.is_nan
    FROM metrics t JOIN clone_map m ON t.run_uuid = m.old ORDER BY m.k, m.new;
INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
    SELECT t.key, t.value, t.timestamp - m.k * %(hour)s, t.step, t.is_nan, m.new
    FROM latest_metrics t JOIN clone_map m ON t.run_uuid = m.old ORDER BY m.k, m.new;
"""


def sql(db_uri: str, statement: str, parameters: dict | None = None, fetch: bool = False):
    """One statement (or several) in its own transaction on a raw psycopg2 connection."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_uri)
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(statement, parameters)
            rows = cursor.fetchall() if fetch else None
            connection.commit()
            return rows
        finally:
            connection.close()
    finally:
        engine.dispose()


def analyze(db_uri: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_uri, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("ANALYZE"))
    finally:
        engine.dispose()


def sample_runs_in(db_uri: str) -> tuple[int, int]:
    """(sample runs, all runs) in the store."""
    from steps.store_names import EVALUATION_PARENT_TAG

    ((samples,),) = sql(db_uri, "SELECT count(*) FROM tags WHERE key = %(key)s",
                        {"key": EVALUATION_PARENT_TAG}, fetch=True)
    ((runs,),) = sql(db_uri, "SELECT count(*) FROM runs", fetch=True)
    return samples, runs


def fill(db_uri: str, parent_id: str, samples: int, target: int, batch: int = 25) -> int:
    """Copy the evaluation until the store holds `target` sample runs; copies made."""
    from steps.store_names import EVALUATION_PARENT_TAG

    have, _ = sample_runs_in(db_uri)
    made = have // samples - 1  # copies made before: copy k has IDs md5(ID:k)
    copies = max(0, math.ceil((target - have) / samples))
    started = time.perf_counter()
    for first in range(made + 1, made + copies + 1, batch):
        last = min(made + copies, first + batch - 1)
        sql(db_uri, FILL_SQL, {"first": first, "last": last, "parent": parent_id,
                               "parent_tag": EVALUATION_PARENT_TAG, "hour": HOUR_MS})
        print(f"    copies {first}-{last} of {made + copies} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    analyze(db_uri)
    return copies


# --- The ways to scope the query. Each uses the current tracking URI, as the driver does. ---

def tag_scope(parent_id: str, server_url: str):
    """The driver's query as it was, and still is for an evaluation without the key tags: the
    experiment read by name, then one search scoped by the parent tag's value."""
    import mlflow

    from steps.store_names import EVALUATION_EXPERIMENT
    from steps.tracking.query import sample_filter
    from steps.tracking.runs import experiment_id

    return mlflow.search_runs(experiment_ids=[experiment_id(EVALUATION_EXPERIMENT)],
                              filter_string=sample_filter(parent_id, QUERY), order_by=[ORDER],
                              max_results=MAX_IMAGES)


def results_run_ids(parent_id: str, server_url: str) -> list[str]:
    """The sample run IDs the evaluate step lists in its results table (through the server:
    `mlflow-artifacts:` URIs need it, also when the store is read direct)."""
    from mlflow.tracking import MlflowClient

    from steps.store_names import RESULTS_TABLE

    with tempfile.TemporaryDirectory() as scratch:
        path = MlflowClient(server_url).download_artifacts(parent_id, RESULTS_TABLE, scratch)
        with open(path) as file:
            results = json.load(file)
    column = results["columns"].index("run_id")
    return [row[column] for row in results["data"]]


def run_id_filter(run_ids: list[str]) -> str:
    listed = ",".join(f"'{run_id}'" for run_id in run_ids)
    return f"attributes.run_id IN ({listed}) AND {QUERY}"


def run_id_scope(parent_id: str, server_url: str):
    import mlflow

    from steps.store_names import EVALUATION_EXPERIMENT
    from steps.tracking.runs import experiment_id

    experiment = experiment_id(EVALUATION_EXPERIMENT)
    run_ids = results_run_ids(parent_id, server_url)

    def search(ids: list[str]):
        return mlflow.search_runs(experiment_ids=[experiment], filter_string=run_id_filter(ids),
                                  order_by=[ORDER], max_results=MAX_IMAGES)

    if len(run_ids) <= RUN_ID_CHUNK:
        return search(run_ids)
    best = [run_id for i in range(0, len(run_ids), RUN_ID_CHUNK)
            for run_id in search(run_ids[i:i + RUN_ID_CHUNK])["run_id"]]
    return search(best)


def window_filter(parent_id: str, run=None) -> str:
    from mlflow.tracking import MlflowClient

    from steps.tracking.query import sample_filter

    info = (run or MlflowClient().get_run(parent_id)).info
    return (f"{sample_filter(parent_id, QUERY)} AND attributes.start_time >= {info.start_time} "
            f"AND attributes.start_time <= {info.end_time}")


def time_window(parent_id: str, server_url: str):
    """The parent run read once (its experiment and times: as many requests as the driver's
    query, whose first one reads the experiment by name), then one search."""
    import mlflow
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(parent_id)
    return mlflow.search_runs(experiment_ids=[run.info.experiment_id],
                              filter_string=window_filter(parent_id, run), order_by=[ORDER],
                              max_results=MAX_IMAGES)


def key_filter(parent_id: str, server_url: str = "") -> str:
    from steps.tracking.query import sample_filter

    return sample_filter(parent_id, QUERY, keyed=True)


def key_scope(parent_id: str, server_url: str):
    """The driver's query now, `query_samples`, on an evaluation run tagged `Samples_keyed`:
    the evaluation run read, then one search scoped by the tag key naming the evaluation."""
    from steps.tracking.query import query_samples

    return query_samples(parent_id, QUERY, ORDER, MAX_IMAGES)


@dataclass
class Way:
    label: str
    select: Callable[[str, str], object]          # (parent ID, server URL) -> DataFrame
    main_filter: Callable[[str, str], str]        # the filter of its (first) search
    indexed: bool = False


def _tag_filter(parent_id: str, server_url: str) -> str:
    from steps.tracking.query import sample_filter

    return sample_filter(parent_id, QUERY)


WAYS = [
    Way("tag value (the query before)", tag_scope, _tag_filter),
    Way("run-ID scope (results.json)", run_id_scope,
        lambda parent, url: run_id_filter(results_run_ids(parent, url)[:RUN_ID_CHUNK])),
    Way("time window + tag value", time_window, lambda parent, url: window_filter(parent)),
    Way("tag key (query_samples now)", key_scope, key_filter),
]
INDEXED = Way("tag value + partial index", tag_scope, _tag_filter, indexed=True)


# --- Timing and EXPLAIN ---

def request_ms(url: str) -> float:
    """One small request through the server: its floor under every call of a way."""
    from mlflow.tracking import MlflowClient

    from steps.store_names import EVALUATION_EXPERIMENT

    client = MlflowClient(url)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        client.get_experiment_by_name(EVALUATION_EXPERIMENT)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])

@dataclass
class Measured:
    server_ms: float
    direct_ms: float
    sql_ms: float = math.nan
    buffers: int = 0
    scans: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)


def time_ways(ways: list[Way], parent_id: str, url: str, db_uri: str,
              repeats: int) -> dict[str, Measured]:
    """Median times of each way through the server and direct, the ways taking turns."""
    import mlflow

    times: dict[tuple[str, str], list[float]] = {}
    found: dict[str, list[str]] = {}
    for repeat in range(1 + repeats):
        turn = repeat % len(ways)  # each way first in turn: a connection's first request
        for mode, uri in (("server", url), ("direct", db_uri)):  # through the server is faster
            mlflow.set_tracking_uri(uri)
            for way in ways[turn:] + ways[:turn]:
                started = time.perf_counter()
                rows = way.select(parent_id, url)
                seconds = time.perf_counter() - started
                if repeat:  # the first round warms connections and caches
                    times.setdefault((way.label, mode), []).append(seconds * 1000)
                found[way.label] = list(rows["run_id"])
    mlflow.set_tracking_uri(None)
    return {way.label: Measured(statistics.median(times[way.label, "server"]),
                                statistics.median(times[way.label, "direct"]),
                                found=found[way.label]) for way in ways}


SCAN = re.compile(r"(Seq Scan|Index Scan|Index Only Scan|Bitmap Index Scan|Bitmap Heap Scan)")
DETAILS = ("Index Cond", "Recheck Cond", "Filter", "Rows Removed by Filter")


def explain(db_uri: str, artifacts: Path, filter_string: str) -> tuple[float, int, list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the main SELECT SqlAlchemyStore.search_runs issues for
    the filter: execution ms, shared buffers touched (hit + read), and its scan lines."""
    import sqlalchemy
    from mlflow.entities import ViewType
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from steps.store_names import EVALUATION_EXPERIMENT

    store = SqlAlchemyStore(db_uri, artifacts.as_uri())
    experiment = store.get_experiment_by_name(EVALUATION_EXPERIMENT).experiment_id
    statements: list[tuple[str, object]] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sqlalchemy.event.listen(store.engine, "after_cursor_execute", after)
    store.search_runs([experiment], filter_string, ViewType.ACTIVE_ONLY, MAX_IMAGES, [ORDER])
    sqlalchemy.event.remove(store.engine, "after_cursor_execute", after)
    statement, parameters = max((s for s in statements if "ORDER BY" in s[0]),
                                key=lambda s: len(s[0]))
    with store.engine.connect() as connection:
        cursor = connection.connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        plan = [row[0] for row in cursor.fetchall()]
        cursor.close()
    store.engine.dispose()
    executed = float(re.search(r"Execution Time: ([\d.]+)", "\n".join(plan))[1])
    top = next(line for line in plan if "Buffers:" in line)
    buffers = sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top))
    scans = []
    for i, line in enumerate(plan):
        if SCAN.search(line):
            text = re.sub(r"\s+", " ", line.strip().lstrip("-> "))
            text = re.sub(r"\(cost=[^)]*\) ", "", text)
            details = []
            for below in plan[i + 1:]:
                if "->" in below or not below.strip().startswith(DETAILS):
                    break
                details.append(re.sub(r"\s+", " ", below.strip()))
            scans.append("; ".join([text, *details]))
    return executed, buffers, scans


def measure_store(label: str, ways: list[Way], parent_id: str, url: str, db_uri: str,
                  artifacts: Path, repeats: int, with_index: bool) -> dict[str, Measured]:
    from steps.store_names import EVALUATION_PARENT_TAG

    print(f"  timing on the {label} ...", flush=True)
    results = time_ways(ways, parent_id, url, db_uri, repeats)
    if with_index:
        sql(db_uri, f"CREATE INDEX {INDEX_NAME} ON tags (value) WHERE key = "
                    f"'{EVALUATION_PARENT_TAG}'")
        analyze(db_uri)
        try:
            results.update(time_ways([INDEXED], parent_id, url, db_uri, repeats))
            sql_ms, buffers, scans = explain(db_uri, artifacts, _tag_filter(parent_id, url))
            results[INDEXED.label].sql_ms, results[INDEXED.label].buffers = sql_ms, buffers
            results[INDEXED.label].scans = scans
        finally:
            sql(db_uri, f"DROP INDEX {INDEX_NAME}")
            analyze(db_uri)
    import mlflow

    mlflow.set_tracking_uri(url)  # window_filter and results.json read the parent run
    for way in ways:
        sql_ms, buffers, scans = explain(db_uri, artifacts, way.main_filter(parent_id, url))
        results[way.label].sql_ms, results[way.label].buffers = sql_ms, buffers
        results[way.label].scans = scans
    mlflow.set_tracking_uri(None)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000,
                        help="samples (test images) of the real evaluation (default: 1000)")
    parser.add_argument("--images", type=int, default=4000,
                        help="images in the dataset; the test split is --samples of them "
                             "(default: 4000)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    parser.add_argument("--store-sample-runs", default="50000",
                        help="comma-separated sizes the store is filled to, in sample runs, "
                             "the query timed at each (default: 50000)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="timed calls of each way in each mode, after a warm-up "
                             "(default: 9)")
    parser.add_argument("--no-index", action="store_true",
                        help="skip the 'tag value + partial index' measurement")
    parser.add_argument("--postgres", default="127.0.0.1:5432",
                        help="PostgreSQL host:port, user postgres, trust auth")
    args = parser.parse_args(argv)
    if not 0 < args.samples < args.images:
        parser.error("--samples must be from 1 to --images - 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print("$ python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
          flush=True)
    print(f"{os.cpu_count()} CPU cores (os.cpu_count()), load average "
          f"{os.getloadavg()[0]:.1f}, started {now_utc():%Y-%m-%d %H:%M} UTC", flush=True)
    targets = [int(t) for t in args.store_sample_runs.split(",") if t.strip()]
    stores: list[tuple[str, int, int, dict[str, Measured]]] = []
    try:
        measure(args, targets, stores)
    finally:
        if stores:
            report(args, stores)
    print(f"\nended {now_utc():%Y-%m-%d %H:%M} UTC")


def measure(args: argparse.Namespace, targets: list[int],
            stores: list[tuple[str, int, int, dict[str, Measured]]]) -> None:
    """Make the store, time the ways on it fresh and at each size; `stores` gets the results."""
    host, port = args.postgres.rsplit(":", 1)
    with tempfile.TemporaryDirectory(prefix="query-benchmark-") as scratch, \
            postgres_database(host, int(port), "postgres") as db_uri, \
            tracking_server(db_uri, Path(scratch)) as url:
        scratch = Path(scratch)
        log = scratch / "steps.log"
        dataset = scratch / f"digits{args.images}.npz"
        make_dataset(dataset, args.images)
        output, seconds = mlflow_run("train", {"dataset": str(dataset),
                                               "epochs": str(args.epochs)}, url, scratch, log)
        from mlflow.tracking import MlflowClient

        from steps.store_names import CORRECT_TAG, EVALUATION_PARENT_TAG, MODEL_URI_TAG

        model_uri = MlflowClient(url).get_run(TRAIN_RUN.search(output)[1]).data.tags[
            MODEL_URI_TAG]
        print(f"server {url} on {db_uri}; trained {model_uri} in {seconds:.0f} s", flush=True)
        real = evaluate("", model_uri, dataset, args.samples / args.images, url, scratch, log)
        ((wrong,),) = sql(db_uri, "SELECT count(*) FROM tags WHERE key = %(key)s AND value = "
                                  "'false' AND run_uuid IN (SELECT run_uuid FROM tags WHERE key "
                                  "= %(parent_tag)s AND value = %(parent)s)",
                          {"key": CORRECT_TAG, "parent_tag": EVALUATION_PARENT_TAG,
                           "parent": real.run_id}, fetch=True)
        print(f"evaluation run {real.run_id}: {real.samples} sample runs ({wrong} wrongly "
              f"classified) written by the evaluate step in {real.wall:.0f} s "
              f"({real.rate:.1f} runs/s)", flush=True)
        analyze(db_uri)
        print(f"  one request through the server (get_experiment_by_name), median of 9: "
              f"{request_ms(url):.1f} ms", flush=True)
        ways = WAYS
        samples, runs = sample_runs_in(db_uri)
        stores.append(("fresh store", samples, runs,
                       measure_store("fresh store", ways, real.run_id, url, db_uri, scratch,
                                     args.repeats, not args.no_index)))
        for target in targets:
            print(f"  filling the store in SQL to {target:,} sample runs ...", flush=True)
            fill(db_uri, real.run_id, real.samples, target)
            samples, runs = sample_runs_in(db_uri)
            label = f"store of {samples:,} sample runs"
            stores.append((label, samples, runs,
                           measure_store(label, ways, real.run_id, url, db_uri, scratch,
                                         args.repeats, not args.no_index)))


def report(args: argparse.Namespace,
           stores: list[tuple[str, int, int, dict[str, Measured]]]) -> None:
    ways = WAYS
    evaluation = stores[0][1]
    labels = [way.label for way in ways] + ([] if args.no_index else [INDEXED.label])
    reference = stores[0][3][WAYS[0].label].found
    for store_label, _, _, results in stores:
        for label in labels:
            if results[label].found != reference:
                print(f"WARNING: {label} on the {store_label} found {results[label].found}, "
                      f"the query before on the fresh store {reference}")
    print(f"\n{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end; "
          f"mlflow server (4 workers) on PostgreSQL, all on this machine. The query: "
          f"{QUERY!r}, order_by {ORDER!r}, max_images {MAX_IMAGES}, on one evaluation of "
          f"{evaluation:,} samples; the store beyond it filled in SQL with copies of it. "
          f"Medians of {args.repeats} calls after a warm-up; SQL: EXPLAIN ANALYZE of the main "
          "SELECT.")
    rows = []
    for store_label, samples, runs, results in stores:
        for label in labels:
            m = results[label]
            rows.append([f"{samples:,} ({runs:,} runs)", label, f"{m.server_ms:.1f}",
                         f"{m.direct_ms:.1f}", f"{m.sql_ms:.1f}", f"{m.buffers:,}"])
    print(table(rows, ["sample runs in store", "way", "via server, ms", "direct to DB, ms",
                       "SQL, ms", "buffers"]))
    fresh = stores[0][3]
    print("\nGrowth, each filled store / the fresh store (via server, direct, SQL, buffers):")
    for store_label, _, _, results in stores[1:]:
        for label in labels:
            m, f = results[label], fresh[label]
            print(f"  {store_label}, {label}: {m.server_ms / f.server_ms:.2f}x, "
                  f"{m.direct_ms / f.direct_ms:.2f}x, {m.sql_ms / f.sql_ms:.2f}x, "
                  f"{m.buffers / f.buffers:.2f}x")
    print("\nEach way / the query before (tag value) on the same store (via server, direct):")
    for store_label, _, _, results in stores:
        base = results[WAYS[0].label]
        print(f"  {store_label}: " + "; ".join(
            f"{label} {results[label].server_ms / base.server_ms:.2f}x, "
            f"{results[label].direct_ms / base.direct_ms:.2f}x" for label in labels[1:]))
    print("\nScans of each way's main SELECT (EXPLAIN ANALYZE; rows are per loop):")
    for store_label, _, _, results in stores:
        for label in labels:
            print(f"  {store_label}, {label}:")
            for scan in results[label].scans:
                print(f"      {re.sub(r'ANY [(][^)]*[)]', 'ANY (<ids>)', scan)[:230]}")


if __name__ == "__main__":
    main()
