"""Screenshots of the MLflow UI over a store the pipeline filled, taken by headless Chromium.

    python -m tests.ui_screenshots --make-store DIR                 # a small pipeline into DIR
    python -m tests.ui_screenshots --store DIR --out SHOTS [--dump-dom]

`--store` starts `mlflow ui` on 127.0.0.1 (a free port) over DIR's `mlflow.db` and `mlruns/`,
loads each page once in Chromium (a PNG of a window 1600 pixels wide and, with `--dump-dom`,
the page's DOM beside it as .html), checks that each DOM holds what the page must show (a page
still loading is loaded again with more time), and stops the UI, also on error. The pages, in
the UI's "Model training" mode: the experiment list, each experiment's runs table (Evaluation
and Saliency also sorted by name, which lists their image runs; Default and Saliency also in
the results view the pipeline saves, its metrics as columns), the main run, the saliency
step run, a map run and that map run's `pictures/all_classes.png` in the UI's artifact view.
`tests/test_ui.py` checks most of them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steps import store_names
from tests.browser import render_url
from tests.conftest import FAST_SALIENCY, FAST_TRAIN, Completed, mlflow_run
from tests.servers import _healthy, free_port, process_group, server_env, wait_until

#: A pipeline of about 40 s that still fills every experiment: 40 evaluated images, 2 maps.
UI_PARAMS = {**FAST_TRAIN, **FAST_SALIENCY, "num_samples": "40", "max_images": "2"}
DEFAULT_EXPERIMENT = "Default"
EXPERIMENTS = (DEFAULT_EXPERIMENT, store_names.TRAIN_EXPERIMENT, store_names.EVALUATION_EXPERIMENT,
               store_names.SALIENCY_EXPERIMENT)
PICTURE = f"{store_names.PICTURES_DIR}/all_classes.png"
WIDTH = 1600
#: Window heights: a runs table or list, and a run's page (tall enough to show its metrics).
TABLE_HEIGHT, RUN_HEIGHT = 1000, 1500
#: Virtual time Chromium gives the React app before the screenshot; doubled on a second try.
BUDGET_MS = 15000
#: Every page in the UI's "Model training" mode (MLflow 3's UI opens in "GenAI" mode, an
#: experiment then opening on a traces overview; the toggle a user clicks once, remembered).
MODEL_TRAINING = "workflowType=machine_learning"
#: The runs table sorted by run name: the UI nests a step run's image runs (folded) under it
#: only when sorted by date, so this lists every run by its name.
BY_NAME = "orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
#: The runs table in the results view the pipeline saves in each experiment.
RESULTS = f"viewStateShareKey={store_names.RESULTS_VIEW}&{MODEL_TRAINING}"
#: The experiments whose results view is pictured, and its columns there.
RESULTS_VIEWS = {DEFAULT_EXPERIMENT: store_names.PIPELINE_VIEW_COLUMNS,
                 store_names.SALIENCY_EXPERIMENT:
                     store_names.RESULTS_VIEW_COLUMNS[store_names.SALIENCY_EXPERIMENT]}


def store_uri(directory: Path) -> str:
    return f"sqlite:///{directory.resolve() / 'mlflow.db'}"


def make_store(directory: Path, params: dict[str, str] | None = None) -> Completed:
    """Fill `directory` with one small pipeline (`mlflow run`, the store's directory as its
    working directory so the artifacts go to `directory/mlruns`)."""
    directory.mkdir(parents=True, exist_ok=True)
    return mlflow_run({**UI_PARAMS, **(params or {})}, tracking_uri=store_uri(directory),
                      cwd=directory)


@dataclass
class Landmarks:
    """The runs a user looks for in the UI, read from the store."""

    experiments: dict[str, str]  # name -> ID
    main: Run
    train: Run
    evaluation: Run  # the evaluate step's run
    samples: list[Run]  # its per-image runs
    step: Run  # the (first) saliency step's run
    maps: list[Run]  # its per-image map runs

    @property
    def map(self) -> Run:
        return self.maps[0]


def landmarks(client: MlflowClient) -> Landmarks:
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    (main, *_) = client.search_runs(
        [experiments[DEFAULT_EXPERIMENT]], f"tags.`{store_names.ENTRY_POINT_TAG}` = 'main'",
        order_by=["attributes.start_time DESC"], max_results=1)
    tags = main.data.tags

    def children(parent: Run) -> list[Run]:
        return client.search_runs([parent.info.experiment_id],
                                  f"tags.`{store_names.PARENT_RUN_TAG}` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=1000)

    evaluation = client.get_run(tags[store_names.EVALUATION_RUN_TAG])
    step = client.get_run(tags[store_names.SALIENCY_RUN_TAG].split(",")[0])
    return Landmarks(experiments, main, client.get_run(tags[store_names.TRAIN_RUN_TAG]), evaluation,
                     children(evaluation), step, children(step))


def run_name(run: Run) -> str:
    return run.data.tags.get(store_names.RUN_NAME_TAG, run.info.run_name)


@dataclass(frozen=True)
class Page:
    """A page of the UI: its file name, its route (after `#`), texts its DOM must hold, and
    the window's height for its screenshot."""

    name: str
    route: str
    expect: tuple[str, ...]
    height: int = RUN_HEIGHT
    query: str = MODEL_TRAINING

    def url(self, ui: str) -> str:
        return f"{ui}/#{self.route}?{self.query}"


def run_route(run: Run) -> str:
    return f"/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def pages(marks: Landmarks) -> list[Page]:
    """The experiment list; each experiment's runs table as it first opens (a step run's image
    runs folded under it) and, for Evaluation and Saliency, sorted by name (which lists every
    run flat) and, for Default and Saliency, in the results view; the main run, the saliency
    step run, a map run and the map run's picture. Each expects the names a user tells runs
    apart by."""
    tables = {DEFAULT_EXPERIMENT: [marks.main], store_names.TRAIN_EXPERIMENT: [marks.train],
              store_names.EVALUATION_EXPERIMENT: [marks.evaluation],
              store_names.SALIENCY_EXPERIMENT: [marks.step]}
    flat = {store_names.EVALUATION_EXPERIMENT: [marks.evaluation, *marks.samples],
            store_names.SALIENCY_EXPERIMENT: [marks.step, *marks.maps]}
    listed = [Page("experiments", "/experiments", EXPERIMENTS, TABLE_HEIGHT)]
    for experiment, shown in tables.items():
        route = f"/experiments/{marks.experiments[experiment]}/runs"
        stem = f"table-{experiment.split()[0].lower()}"
        listed.append(Page(stem, route, tuple(map(run_name, shown)), TABLE_HEIGHT))
        if experiment in flat:
            listed.append(Page(f"{stem}-by-name", route, tuple(map(run_name, flat[experiment])),
                               TABLE_HEIGHT, f"{BY_NAME}&{MODEL_TRAINING}"))
        if experiment in RESULTS_VIEWS:
            listed.append(Page(f"{stem}-results", route, (
                *map(run_name, shown), f'col-id="{RESULTS_VIEWS[experiment][0]}"'),
                TABLE_HEIGHT, RESULTS))
    return listed + [
        Page("main-run", run_route(marks.main),
             (run_name(marks.main), store_names.TEST_ACCURACY_METRIC, store_names.MAPS_EXPLAINED_METRIC)),
        Page("saliency-run", run_route(marks.step), (run_name(marks.step),)),
        Page("map-run", run_route(marks.map), (run_name(marks.map), "random maps")),
        Page("map-picture", f"{run_route(marks.map)}/artifactPath/{PICTURE}",
             (f'<img alt="{PICTURE}" src="blob:',), TABLE_HEIGHT),  # shown once fetched
    ]


@contextlib.contextmanager
def mlflow_ui(store: Path, log_dir: Path) -> Iterator[str]:
    """`mlflow ui` over the store in `store` on 127.0.0.1 and a free port, until the block
    ends (its process group is stopped then, also on error); yields its address."""
    port = free_port()
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri(store),
            "--default-artifact-root", str((store / "mlruns").resolve()),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = server_env()
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no GenAI job runner processes
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"mlflow-ui-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with process_group(args, log, env=env, cwd=store) as proc:
        wait_until(lambda: _healthy(url), proc, log, "mlflow ui", 180)
        yield url


@dataclass
class Shot:
    page: Page
    png: Path
    dom: str

    @property
    def missing(self) -> list[str]:
        return [text for text in self.page.expect if text not in self.dom]


def shoot(url: str, page: Page, out: Path, dump_dom: bool = False) -> Shot:
    """The page's screenshot (and DOM); loaded a second time, with twice the time, when its DOM
    lacks an expected text."""
    png = out / f"{page.name}.png"
    for budget in (BUDGET_MS, 2 * BUDGET_MS):
        shot = Shot(page, png, render_url(page.url(url), png, width=WIDTH, height=page.height,
                                          budget_ms=budget))
        if not shot.missing:
            break
    if dump_dom:
        png.with_suffix(".html").write_text(shot.dom, encoding="utf-8")
    return shot


def shoot_all(store: Path, out: Path, dump_dom: bool = False,
              only: tuple[str, ...] = ()) -> list[Shot]:
    """Every page of `pages` (or those named in `only`) over the store in `store`."""
    out.mkdir(parents=True, exist_ok=True)
    marks = landmarks(MlflowClient(tracking_uri=store_uri(store)))
    wanted = [p for p in pages(marks) if not only or p.name in only]
    with mlflow_ui(store, out) as url:
        return [shoot(url, page, out, dump_dom) for page in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ui_screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-store", type=Path, metavar="DIR",
                        help="fill DIR with a small pipeline run first")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="the store's directory (mlflow.db and mlruns/)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where the PNGs go")
    parser.add_argument("--dump-dom", action="store_true",
                        help="also write each page's DOM beside its PNG (.html)")
    args = parser.parse_args(argv)
    if args.make_store is None and (args.store is None or args.out is None):
        parser.error("give --make-store DIR, or --store DIR and --out DIR (or all three)")
    if args.make_store is not None:
        result = make_store(args.make_store)
        if result.returncode != 0:
            print(result.output, file=sys.stderr)
            return result.returncode
        print(f"Store filled: {args.make_store}")
    if args.out is None:
        return 0
    shots = shoot_all(args.store or args.make_store, args.out, args.dump_dom)
    for shot in shots:
        state = (f"missing {', '.join(map(repr, shot.missing))}" if shot.missing else "ok")
        print(f"{shot.png}: {state}")
    return 1 if any(shot.missing for shot in shots) else 0


if __name__ == "__main__":
    sys.exit(main())
