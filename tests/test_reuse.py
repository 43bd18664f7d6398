"""Step reuse in the driver: what is reused, what invalidates it, forced reruns, resuming.

The pipeline runs from a copy of the project outside git, so a test can edit the code.
"""

from __future__ import annotations

import shutil
import time

import mlflow
import numpy as np
import pytest
from xaitk_saliency.utils.sal_metrics import compute_ssd, compute_xcorr

from steps import store_names
from tests.conftest import PROJECT_DIR, Store, mlflow_run
from tests.test_pipeline import model_uri_of

STEP_EXPERIMENTS = ("Train", "Evaluation", "Saliency Map Generation")
SMALL = {"epochs": "10", "num_samples": "30", "n": "50", "max_images": "2",
         "query": "metrics.Predicted_class_conf < 0.999", "picture_mode": "combined"}


class ProjectCopy(Store):
    """A store plus a private copy of the project to run (and edit)."""

    def run(self, params, entry_point="main", **kwargs):
        return mlflow_run(params, entry_point=entry_point, tracking_uri=self.uri, cwd=self.dir,
                          project=self.dir / "project", **kwargs)

    def step_run_ids(self) -> set[str]:
        return {r.info.run_id for name in STEP_EXPERIMENTS for r in self.runs(name)}

    def last_main(self):
        mains = [r for r in self.runs("Default")
                 if r.data.tags.get("mlflow.project.entryPoint") == "main"]
        return mains[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reuse")
    shutil.copytree(PROJECT_DIR, directory / "project",
                    ignore=shutil.ignore_patterns(".git", ".venv", "mlruns", "mlflow.db",
                                                  "__pycache__", ".pytest_cache"))
    return ProjectCopy(f"sqlite:///{directory / 'mlflow.db'}", directory)


@pytest.fixture(scope="module")
def first(project):
    """The default pipeline, run once: what a new user's first `mlflow run .` does."""
    started = time.monotonic()
    result = project.run({})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.output
    return project.last_main(), elapsed


def test_unchanged_rerun_reuses_every_step_and_is_fast(project, first):
    first_main, first_seconds = first
    before = project.step_run_ids()
    started = time.monotonic()
    result = project.run({})
    second_seconds = time.monotonic() - started
    assert result.returncode == 0, result.output
    assert project.step_run_ids() == before, "no new train, evaluate or saliency run"
    main = project.last_main()
    tags = main.data.tags
    for step, tag in (("train", "Train_run_id"), ("evaluate", "Evaluation_run_id"),
                      ("saliency", "Saliency_run_id")):
        assert tags[f"Reused_{step}"] == tags[tag] == first_main.data.tags[tag]
        assert f"{step}: reusing FINISHED run {tags[tag]}" in result.stdout
    print(f"first run {first_seconds:.1f} s, unchanged rerun {second_seconds:.1f} s")
    assert second_seconds <= first_seconds / 4, (first_seconds, second_seconds)


def test_parameter_change_invalidates_that_step_and_its_downstream(project, first):
    before = project.step_run_ids()
    result = project.run({**SMALL})
    assert result.returncode == 0, result.output
    new = project.step_run_ids() - before
    tags = project.last_main().data.tags
    assert {tags["Train_run_id"], tags["Evaluation_run_id"], tags["Saliency_run_id"]} <= new
    assert not any(key.startswith("Reused_") for key in tags)

    # Only a saliency parameter changes: train and evaluation are reused.
    before = project.step_run_ids()
    result = project.run({**SMALL, "n": "60"})
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    assert "Reused_train" in tags and "Reused_evaluate" in tags
    assert project.step_run_ids() - before == {tags["Saliency_run_id"]} | {
        r.info.run_id for r in project.runs(
            "Saliency Map Generation", f"tags.mlflow.parentRunId = '{tags['Saliency_run_id']}'")}


def test_forced_rerun_runs_every_step(project, first):
    project.run({**SMALL})  # make sure a matching set exists
    before = project.step_run_ids()
    result = project.run({**SMALL, "use_cache": "false"})
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    new = project.step_run_ids() - before
    assert {tags["Train_run_id"], tags["Evaluation_run_id"], tags["Saliency_run_id"]} <= new
    assert not any(key.startswith("Reused_") for key in tags)


def test_new_upstream_run_invalidates_downstream(project, first):
    project.run({**SMALL})
    # A new train run with the same parameters, made outside the driver.
    result = project.run({"epochs": SMALL["epochs"]}, entry_point="train",
                         extra_args=("--experiment-name", "Train"))
    assert result.returncode == 0, result.output
    new_train = project.runs("Train")[0].info.run_id
    before = project.step_run_ids()
    result = project.run({**SMALL})
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    assert tags["Reused_train"] == tags["Train_run_id"] == new_train
    assert "Reused_evaluate" not in tags and "Reused_saliency" not in tags
    evaluation = project.client.get_run(tags["Evaluation_run_id"])
    assert evaluation.info.run_id in project.step_run_ids() - before
    assert evaluation.data.params["model_uri"] == model_uri_of(project.client, new_train)


def test_resume_from_train_run(project, first):
    old_train = first[0].data.tags["Train_run_id"]
    before_train = {r.info.run_id for r in project.runs("Train")}
    result = project.run({**SMALL, "train_run_id": old_train})
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    assert {r.info.run_id for r in project.runs("Train")} == before_train
    assert tags["Train_run_id"] == tags["Resumed_train"] == old_train
    evaluation = project.client.get_run(tags["Evaluation_run_id"])
    assert evaluation.data.params["model_uri"] == model_uri_of(project.client, old_train)
    assert tags["Model_uri"] == model_uri_of(project.client, old_train)


def test_resume_from_evaluation_run(project, first):
    first_tags = first[0].data.tags
    before = project.step_run_ids()
    result = project.run({**SMALL, "evaluation_run_id": first_tags["Evaluation_run_id"]})
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    assert tags["Train_run_id"] == first_tags["Train_run_id"]
    assert tags["Evaluation_run_id"] == tags["Resumed_evaluate"] == first_tags["Evaluation_run_id"]
    new = project.step_run_ids() - before
    assert tags["Train_run_id"] not in new and tags["Evaluation_run_id"] not in new


def test_compare_runs_each_configuration_once_and_compares_their_maps(project, first):
    result = project.run({**SMALL})
    assert result.returncode == 0, result.output
    plain = project.last_main().data.tags["Saliency_run_id"]
    before = project.step_run_ids()
    result = project.run({**SMALL, "compare": "rise,sliding_window(stride=2,2)"})
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    client = project.client
    # The configuration the plain pipeline already ran is reused, on its own.
    rise_id, window_id = tags["Saliency_run_id"].split(",")
    assert rise_id == plain == tags["Reused_saliency"]
    assert window_id in project.step_run_ids() - before
    window_maps = project.runs("Saliency Map Generation",
                               f"tags.Saliency_parent_run_id = '{window_id}'")
    assert {r.data.params["stride"] for r in window_maps} == {"2,2"}
    assert not any("n" in r.data.params for r in window_maps)

    comparison = client.get_run(tags["Comparison_run_id"])
    assert comparison.info.run_name == "compare"
    assert comparison.data.tags["mlflow.parentRunId"] == project.last_main().info.run_id
    assert comparison.data.tags["Compared_saliency_run_ids"] == f"{rise_id},{window_id}"
    assert comparison.data.tags["Compared_configurations"] == "rise, sliding_window"
    images = tags["Queried_image_ids"].split(",")
    metrics = comparison.data.metrics
    pair = "rise_vs_sliding_window"
    for image_id in images:
        maps = []
        for step_id in (rise_id, window_id):
            (map_run,) = project.runs("Saliency Map Generation",
                                      f"tags.Saliency_parent_run_id = '{step_id}' AND "
                                      f"tags.Image_id = '{image_id}'")
            predicted = int(map_run.data.tags["Predicted_class"])  # digits: class = column
            maps.append(np.load(client.download_artifacts(map_run.info.run_id,
                                                          "saliency_map.npy"))[predicted])
        assert metrics[f"Xcorr_{pair}_image_{image_id}"] == pytest.approx(compute_xcorr(*maps))
        assert metrics[f"Ssd_{pair}_image_{image_id}"] == pytest.approx(compute_ssd(*maps))
    assert metrics[f"Xcorr_{pair}_mean"] == pytest.approx(
        np.mean([metrics[f"Xcorr_{pair}_image_{i}"] for i in images]))
    artifacts = {a.path for a in client.list_artifacts(comparison.info.run_id, "comparison")}
    assert {f"comparison/image_{i}.png" for i in images} | {
        "comparison/agreement.json", "comparison/configurations.json",
        store_names.RANKING_TABLE} == artifacts
    assert "rise vs sliding_window" in comparison.data.tags["mlflow.note.content"]
    # The configurations ranked by their step runs' share of maps beating random, then ROAD.
    figures = {label: tuple(client.get_run(step_id).data.metrics[name] for name in (
        store_names.BEATING_RANDOM_METRIC, store_names.ROAD_GAP_MEAN_METRIC))
        for label, step_id in (("rise", rise_id), ("sliding_window", window_id))}
    order = sorted(figures, key=lambda label: figures[label], reverse=True)
    assert [metrics[f"Rank_{label}"] for label in order] == [1, 2]
    ranking_line = next(line for line in result.output.splitlines() if "Ranking: " in line)
    assert ranking_line.split("Ranking: ", 1)[1] == ", ".join(
        f"{rank}. {label} ({figures[label][0]:.0%} beat random, ROAD gap "
        f"{figures[label][1]:.2f})" for rank, label in enumerate(order, start=1))
    assert ranking_line.split("Ranking: ", 1)[1] in comparison.data.tags["mlflow.note.content"]
    # Where its process spent its time (it draws a picture an image).
    spent = {phase: metrics[store_names.duration_metric(phase)] for phase in store_names.PHASES}
    assert min(spent.values()) >= 0 and spent[store_names.PICTURES_PHASE] > 0, spent
    # The pipeline's report shows both configurations' maps and how far they agree.
    main_id = comparison.data.tags["mlflow.parentRunId"]
    report = open(client.download_artifacts(main_id, "report.html")).read()
    assert report.count("<h2>Saliency: ") == 2
    assert f"{metrics[f'Xcorr_{pair}_mean']:.4g}" in report
    assert report.count("of the maps beat random maps; mean ROAD MoRF") == 2
    assert window_id in report.split("<h2>Configurations ranked</h2>", 1)[1]
    mlflow.set_tracking_uri(project.uri)  # load_table searches with the fluent API
    try:
        table = client.load_table(comparison.info.experiment_id, "comparison/agreement.json",
                                  run_ids=[comparison.info.run_id])
        ranking = client.load_table(comparison.info.experiment_id, store_names.RANKING_TABLE,
                                    run_ids=[comparison.info.run_id])
    finally:
        mlflow.set_tracking_uri(None)
    assert list(map(str, table["Image_id"])) == images and set(table["second"]) == {"sliding_window"}
    assert list(ranking["label"]) == order and list(ranking["rank"]) == [1, 2]
    assert list(ranking["saliency_run_id"]) == [{"rise": rise_id, "sliding_window": window_id}[
        label] for label in order]
    assert list(ranking[store_names.ROAD_GAP_MEAN_METRIC]) == pytest.approx(
        [figures[label][1] for label in order])

    # Once more: both configurations and the comparison are reused.
    before = project.step_run_ids()
    result = project.run({**SMALL, "compare": "rise,sliding_window(stride=2,2)"})
    assert result.returncode == 0, result.output
    assert project.step_run_ids() == before
    tags = project.last_main().data.tags
    assert tags["Reused_compare"] == comparison.info.run_id
    assert tags["Reused_saliency"] == f"{rise_id},{window_id}"


def test_code_edit_invalidates_reuse(project, first):
    project.run({**SMALL})
    before = project.step_run_ids()
    model_py = project.dir / "project" / "steps" / "core" / "image_models.py"
    original = model_py.read_text()
    try:
        model_py.write_text(original + "\n# an uncommitted edit\n")
        result = project.run({**SMALL})
    finally:
        model_py.write_text(original)
    assert result.returncode == 0, result.output
    tags = project.last_main().data.tags
    assert not any(key.startswith("Reused_") for key in tags)
    assert tags["Train_run_id"] in project.step_run_ids() - before
    train = project.client.get_run(tags["Train_run_id"])
    assert train.data.tags["Code_version"].startswith("nogit:")


@pytest.mark.parametrize("params,param,words", [
    ({"train_run_id": "0123456789abcdef0123456789abcdef"}, "train_run_id", "no run"),
    ({"evaluation_run_id": "{train}"}, "evaluation_run_id", "belongs to experiment 'Train'"),
    ({"evaluation_run_id": "{sample}"}, "evaluation_run_id", "one image's sample run"),
    ({"evaluation_run_id": "{evaluation}", "model_uri": "runs:/{train}/other"},
     "evaluation_run_id", "evaluated model models:/m-"),
])
def test_bad_resume_run_ids_are_clear_errors(project, first, params, param, words):
    tags = first[0].data.tags
    sample = project.runs("Evaluation", f"tags.Evaluation_parent_run_id = "
                                        f"'{tags['Evaluation_run_id']}'")[0].info.run_id
    params = {k: v.format(train=tags["Train_run_id"], sample=sample,
                          evaluation=tags["Evaluation_run_id"]) for k, v in params.items()}
    result = project.run(params)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"'--{param}'" in errors[0] and words in errors[0], result.output
