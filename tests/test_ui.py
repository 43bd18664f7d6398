"""The MLflow UI tells the pipeline's runs apart: `mlflow ui` over a store one small pipeline
filled, each page loaded once in headless Chromium (tests/ui_screenshots.py), its DOM checked
for the names, descriptions and metrics a user reads there. Every expected name and value is
read from the store.
"""

from __future__ import annotations

import html
import re

import pytest

from steps import store_names
from tests.browser import chromium
from tests.conftest import module_store
from tests.ui_screenshots import (PICTURE, UI_PARAMS, Landmarks, Shot, landmarks, make_store,
                                  run_name, run_route, shoot_all)

store = module_store("ui")

#: The pages checked here (tests/ui_screenshots.py takes a few more): a table sorted by name
#: lists every run, where the default order folds a step run's image runs under it.
PAGES = ("experiments", "table-default", "table-default-results", "table-saliency-results", "table-evaluation-by-name", "table-saliency-by-name", "main-run",
         "saliency-run", "map-run", "map-picture")
NAME_COLUMN = "attributes.`Run Name`"
DATASET_COLUMN = "attributes.`Dataset`"


@pytest.fixture(scope="module")
def marks(store) -> Landmarks:
    result = make_store(store.dir)
    assert result.returncode == 0, result.output
    return landmarks(store.client)


@pytest.fixture(scope="module")
def shots(store, marks, tmp_path_factory) -> dict[str, Shot]:
    chromium()  # skips (or fails where required) without a browser
    taken = shoot_all(store.dir, tmp_path_factory.mktemp("ui-shots"), dump_dom=True,
                      only=PAGES)
    return {shot.page.name: shot for shot in taken}


def text(dom: str) -> str:
    """What the page says: its DOM without tags, white space collapsed."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))).strip()


def cell(dom: str, run_id: str, column: str) -> str:
    """The HTML of a run's cell in the runs table (an ag-grid: each row, in each of its
    containers, marked with the run's ID; each cell with its column's ID)."""
    for row in re.finditer(rf'row-id="{run_id}"(.*?)(?=role="row"|$)', dom, re.DOTALL):
        found = re.search(rf'col-id="{re.escape(column)}"[^>]*>(.*?)(?=<div class="ag-cell |$)',
                          row.group(1), re.DOTALL)
        if found:
            return found.group(1)
    return ""


def name_in_table(dom: str, run) -> str:
    """The name a run's row shows: its Run Name cell's link to the run's page."""
    link = re.search(rf'href="#{run_route(run)}"[^>]*>(.*?)</a>',
                     cell(dom, run.info.run_id, NAME_COLUMN), re.DOTALL)
    return text(link.group(1)) if link else ""


def shown(value: float) -> str:
    """A metric's value as the UI writes it (JavaScript's shortest form)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def test_run_names_say_what_each_run_is(marks):
    assert run_name(marks.main).startswith("pipeline · digits · "), run_name(marks.main)
    assert re.fullmatch(rf"evaluate · \d+\.\d% · {UI_PARAMS['num_samples']} images",
                        run_name(marks.evaluation)), run_name(marks.evaluation)
    assert re.fullmatch(rf"saliency · \d+/{len(marks.maps)} beat random · .+",
                        run_name(marks.step)), run_name(marks.step)
    for run in marks.samples + marks.maps:
        tags = run.data.tags
        mark = "✓" if tags[store_names.GT_CLASS_TAG] == tags[store_names.PREDICTED_CLASS_TAG] else "✗"
        assert run_name(run) == (f"image-{tags[store_names.IMAGE_ID_TAG]} · "
                                 f"{tags[store_names.PREDICTED_CLASS_TAG]} {mark}")


def test_each_table_row_shows_its_own_runs_name(shots, marks):
    """Every run of the Default, Evaluation and Saliency experiments by name, in its own row
    (all 41 rows of Evaluation are in the DOM: the table renders them all at this size)."""
    tables = {"table-default": [marks.main],
              "table-evaluation-by-name": [marks.evaluation, *marks.samples],
              "table-saliency-by-name": [marks.step, *marks.maps]}
    wrong = {(page, run_name(run)): name_in_table(shots[page].dom, run)
             for page, runs in tables.items() for run in runs
             if name_in_table(shots[page].dom, run) != run_name(run)}
    assert wrong == {}


def test_the_experiment_list_says_what_each_experiment_holds_in_plain_words(store, shots, marks):
    """The list shows a description's first words as written: no Markdown marks there."""
    page = text(shots["experiments"].dom)
    for experiment in marks.experiments.values():
        note = store.client.get_experiment(experiment).tags[store_names.NOTE_TAG]
        assert note in page and not re.search(r"[*`_]{2}|`", note), note


@pytest.mark.parametrize("page,which", [("saliency-run", "step"), ("map-run", "map")])
def test_saliency_runs_show_their_dataset(shots, marks, page, which):
    """The step run in its table's Datasets column and on its page; a map run on its page."""
    run = getattr(marks, which)
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["digits"]
    contexts = {t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {store_names.SALIENCY_CONTEXT}
    assert f"Datasets {inputs[0].dataset.name} (" in text(shots[page].dom)
    if which == "step":
        in_table = text(cell(shots["table-saliency-by-name"].dom, run.info.run_id,
                             DATASET_COLUMN))
        assert in_table.startswith(f"{inputs[0].dataset.name} ({inputs[0].dataset.digest})"), \
            in_table


def test_the_main_runs_page_shows_its_headline_metrics(shots, marks):
    page = text(shots["main-run"].dom)
    metrics = marks.main.data.metrics
    for name in (store_names.TEST_ACCURACY_METRIC, store_names.MAPS_EXPLAINED_METRIC):
        assert f"{name} {shown(metrics[name])}" in page, name


def test_the_map_runs_page_shows_its_verdict_rendered(shots, marks):
    note = marks.map.data.tags[store_names.NOTE_TAG]
    verdict = re.match(r"\*\*((?:Beats|Does not beat) random maps)\*\*", note)
    assert verdict, note
    assert f"Description {verdict.group(1)} (better than 90% of them on both):" in \
        text(shots["map-run"].dom)


def test_the_results_view_shows_each_experiments_outcome_columns(shots, marks):
    """The pipelines' table in the results view: the main run's headline metrics in its row;
    the saliency table's: the step run's share beating random, its map runs' classes."""
    dom = shots["table-default-results"].dom
    for column in store_names.PIPELINE_VIEW_COLUMNS:
        name = column.split("`")[1]
        assert text(cell(dom, marks.main.info.run_id, column)).split()[:1] == \
            [shown(marks.main.data.metrics[name])], column
    dom = shots["table-saliency-results"].dom
    beating = store_names.metric_column(store_names.BEATING_RANDOM_METRIC)
    assert text(cell(dom, marks.step.info.run_id, beating)).split()[:1] == \
        [shown(marks.step.data.metrics[store_names.BEATING_RANDOM_METRIC])]
    for column in store_names.RESULTS_VIEW_COLUMNS[store_names.SALIENCY_EXPERIMENT][:3]:
        assert f'col-id="{column}"' in dom, column


def test_the_map_picture_shows_in_the_artifact_view(shots):
    """The UI fetches the artifact, then shows it from a blob."""
    assert f'<img alt="{PICTURE}" src="blob:' in shots["map-picture"].dom
