"""The whole pipeline, `mlflow run <project>`, checked through what it left in the store."""

from __future__ import annotations

import html
import io
import json
import platform
import re
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from steps import store_names
from steps.core.image_dataset import load_dataset, random_split
from steps.core.metrics import beats_random
from steps.core.image_models import ProbaModel
from steps.core.xaitk_generators import ImageClassifier, compute_saliency, generator_from_config
from steps.tracking.sqlite_journal import journal_mode
from tests.browser import render_page
from tests.conftest import FAST_SALIENCY, FAST_TRAIN, METRIC_DEFAULTS, PROJECT_DIR, Store

NUM_SAMPLES = 40
# Quotes inside: MLflow logs it shell-quoted as a param; the driver keeps it as typed.
QUERY = "metrics.Predicted_class_conf < 0.99 AND tags.Correct != 'maybe'"
MAX_IMAGES = 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pipeline")
    store = Store(f"sqlite:///{directory / 'mlflow.db'}", directory)
    result = store.run({**FAST_TRAIN, **FAST_SALIENCY, "num_samples": str(NUM_SAMPLES),
                        "query": QUERY, "max_images": str(MAX_IMAGES)})
    assert result.returncode == 0, result.output
    mlflow.set_tracking_uri(store.uri)
    yield store, result
    mlflow.set_tracking_uri(None)


def only(runs, entry_point):
    matching = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == entry_point]
    assert len(matching) == 1, [r.data.tags for r in runs]
    return matching[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def model_uri_of(client: MlflowClient, train_run_id: str) -> str:
    """The model a Train run logged, as its `Model_uri` tag names it (`models:/m-...`)."""
    return client.get_run(train_run_id).data.tags["Model_uri"]


def read_artifact(client, run_id, path) -> bytes:
    local = client.download_artifacts(run_id, path)
    with open(local, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def runs(pipeline):
    store, _ = pipeline
    main = only(store.runs("Default"), "main")
    train = only(store.runs("Train"), "train")
    evaluation = only(store.runs("Evaluation"), "evaluate")
    samples = store.runs("Evaluation", f"tags.Evaluation_parent_run_id = '{evaluation.info.run_id}'")
    saliency = only(store.runs("Saliency Map Generation"), "saliency")
    maps = store.runs("Saliency Map Generation",
                      f"tags.mlflow.parentRunId = '{saliency.info.run_id}'")
    return {"main": main, "train": train, "evaluation": evaluation, "samples": samples,
            "saliency": saliency, "maps": maps}


def test_driver_prints_run_ids_tracking_uri_and_ui_command(pipeline, runs):
    store, result = pipeline
    for key in ("main", "train", "evaluation", "saliency"):
        assert runs[key].info.run_id in result.stdout
    assert store.uri in result.stdout
    assert f"mlflow ui --backend-store-uri {store.uri}" in result.stdout
    # The report as a file to open, where the artifacts are on this machine.
    (report,) = [line.split("Report:", 1)[1].strip() for line in result.stdout.splitlines()
                 if line.strip().startswith("Report:")]
    assert Path(report).is_file() and Path(report).name == "report.html"
    assert runs["main"].info.run_id in report


def test_the_sqlite_store_is_left_in_wal_mode(pipeline):
    store, _ = pipeline
    assert journal_mode(store.dir / "mlflow.db") == "wal"


def test_every_run_finished_and_steps_are_nested_under_main(pipeline, runs):
    store, _ = pipeline
    assert {r.info.status for r in store.all_runs()} == {"FINISHED"}
    main_id = runs["main"].info.run_id
    for key in ("train", "evaluation", "saliency"):
        assert runs[key].data.tags["mlflow.parentRunId"] == main_id
    tags = runs["main"].data.tags
    assert tags["Train_run_id"] == runs["train"].info.run_id
    assert tags["Evaluation_run_id"] == runs["evaluation"].info.run_id
    assert tags["Saliency_run_id"] == runs["saliency"].info.run_id
    # The model the steps handed on, and the data every step ran on.
    train_tags = runs["train"].data.tags
    assert tags["Model_uri"] == train_tags["Model_uri"]
    for key in ("main", "evaluation", "saliency"):
        assert runs[key].data.tags["Dataset_digest"] == train_tags["Dataset_digest"], key
    for key in ("evaluation", "saliency"):
        assert runs[key].data.tags["Model_uri"] == train_tags["Model_uri"], key
        assert runs[key].data.tags["Dataset"] == "digits", key


def test_train_run_params_tags_metrics(pipeline, runs):
    store, _ = pipeline
    train = runs["train"]
    assert len(store.runs("Train")) == 1
    params = train.data.params
    assert params["epochs"] == FAST_TRAIN["epochs"]
    assert params["hidden_layer_sizes"] == FAST_TRAIN["hidden_layer_sizes"]
    for key in ("learning_rate", "solver", "alpha", "batch_size", "random_state", "dataset",
                "image_size", "test_fraction", "split_seed", "register_as"):
        assert key in params
    assert params["dataset"] == "digits"
    tags = train.data.tags
    assert tags["Dataset"] == "digits"
    assert re.fullmatch(r"[0-9a-f]{16}", tags["Dataset_digest"]), tags
    assert tags["Image_shape"] == "8x8"
    assert "Registered_model" not in tags
    assert int(tags["Train_size"]) + int(tags["Test_size"]) == 1797
    assert int(tags["Test_size"]) == 450
    assert tags["Num_classes"] == "10"
    history = store.client.get_metric_history(train.info.run_id, "training_loss")
    assert [m.step for m in history] == list(range(int(tags["Epochs_run"])))
    assert 1 <= len(history) <= int(FAST_TRAIN["epochs"])
    assert history[-1].value < history[0].value
    assert 0.8 < train.data.metrics["test_accuracy"] <= 1
    assert 0.8 < train.data.metrics["train_accuracy"] <= 1


def test_train_run_artifacts_model_pickle_and_environment(pipeline, runs):
    store, _ = pipeline
    run_id = runs["train"].info.run_id
    paths = artifact_paths(store.client, run_id)
    assert {"model.pkl", "environment/conda.yaml", "environment/requirements.txt"} <= paths
    (logged,) = mlflow.search_logged_models(
        experiment_ids=[runs["train"].info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'", output_format="list")
    assert logged.name == f"mlp-digits-{run_id[:8]}"
    assert runs["train"].data.tags["Model_uri"] == f"models:/{logged.model_id}"
    info = mlflow.models.get_model_info(f"models:/{logged.model_id}")
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 64)
    # The pyfunc answers with probabilities, one per class.
    assert info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 10)
    assert info.saved_input_example_info is not None
    # Its requirements pin what wrote it (as requirements.txt does), not MLflow's inference.
    installed = {f"{name}=={metadata.version(name)}"
                 for name in ("mlflow", "numpy", "scikit-learn", "skops")}
    pinned = set((PROJECT_DIR / "requirements.txt").read_text().split())
    assert installed <= pinned
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{logged.model_id}"))
    assert set((model_dir / "requirements.txt").read_text().split()) == installed
    conda = yaml.safe_load((model_dir / "conda.yaml").read_text())
    assert set(next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]) == installed
    python_env = yaml.safe_load((model_dir / "python_env.yaml").read_text())
    assert python_env["python"] == platform.python_version()
    model = mlflow.sklearn.load_model(runs["train"].data.tags["Model_uri"])
    data = load_dataset("digits")
    rows = data.images[:50].reshape(50, -1)
    predictions = model.predict(rows)
    assert np.mean(predictions == data.labels[:50]) > 0.8
    # The same model through its run and name, and through the pyfunc flavour.
    same = mlflow.sklearn.load_model(f"runs:/{run_id}/{logged.name}")
    np.testing.assert_array_equal(same.predict_proba(rows), model.predict_proba(rows))
    probabilities = mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(rows)
    assert np.asarray(probabilities).shape == (50, 10)
    np.testing.assert_allclose(probabilities, model.predict_proba(rows), atol=1e-6)


def test_every_step_run_logs_where_its_process_spent_its_time(runs):
    for step in ("train", "evaluation", "saliency"):
        metrics = runs[step].data.metrics
        spent = {phase: metrics[store_names.duration_metric(phase)] for phase in store_names.PHASES}
        assert all(seconds >= 0 for seconds in spent.values()), (step, spent)
        # Python and its imports take a while; every step loads, computes and writes.
        assert spent[store_names.STARTUP_PHASE] > 0.1, (step, spent)
        for phase in (store_names.LOAD_PHASE, store_names.COMPUTE_PHASE, store_names.WRITE_PHASE):
            assert spent[phase] > 0, (step, phase, spent)
    assert runs["train"].data.metrics[store_names.duration_metric(store_names.PICTURES_PHASE)] == 0
    for step in ("evaluation", "saliency"):
        assert runs[step].data.metrics[store_names.duration_metric(store_names.PICTURES_PHASE)] > 0, step


def test_evaluation_per_sample_runs(pipeline, runs):
    samples = runs["samples"]
    assert len(samples) == NUM_SAMPLES
    data = load_dataset("digits")
    test_ids = {data.image_ids[row] for row in random_split(data, 0.25, 0).test_rows}
    image_ids = [r.data.tags["Image_id"] for r in samples]
    assert len(set(image_ids)) == NUM_SAMPLES and set(image_ids) <= test_ids
    parent_id = runs["evaluation"].info.run_id
    for run in samples:
        tags, metrics = run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["Train_run_id"] == runs["train"].info.run_id
        assert tags["Model_uri"] == runs["train"].data.tags["Model_uri"]
        assert tags["Code_version"] == runs["evaluation"].data.tags["Code_version"]
        (row,) = data.rows([tags["Image_id"]])
        assert int(tags["GT_class"]) == data.labels[row]
        confs = [metrics[f"Class_{k}_conf"] for k in range(10)]
        assert sum(confs) == pytest.approx(1, abs=1e-6)
        assert int(tags["Predicted_class"]) == int(np.argmax(confs))
        assert metrics["Predicted_class_conf"] == pytest.approx(max(confs))
        assert tags["Correct"] == str(tags["GT_class"] == tags["Predicted_class"]).lower()


def test_evaluation_parent_aggregates_and_confusion_matrix(pipeline, runs):
    store, _ = pipeline
    parent = runs["evaluation"]
    metrics = parent.data.metrics
    correct = [r.data.tags["Correct"] == "true" for r in runs["samples"]]
    assert metrics["accuracy"] == pytest.approx(np.mean(correct))
    for k in range(10):
        assert 0 <= metrics[f"Class_{k}_precision"] <= 1
        assert 0 <= metrics[f"Class_{k}_recall"] <= 1
    assert parent.data.tags["Train_run_id"] == runs["train"].info.run_id
    assert parent.data.tags["Model_uri"] == runs["train"].data.tags["Model_uri"]
    assert parent.data.params["model_uri"] == runs["train"].data.tags["Model_uri"]
    png = read_artifact(store.client, parent.info.run_id, "confusion_matrix.png")
    assert png.startswith(PNG_MAGIC)


def test_query_selects_saliency_images_and_is_logged(pipeline, runs):
    store, _ = pipeline
    matching = sorted(
        (r for r in runs["samples"] if r.data.metrics["Predicted_class_conf"] < 0.99),
        key=lambda r: r.data.metrics["Predicted_class_conf"],
    )[:MAX_IMAGES]
    assert matching, "the test's query should match some samples"
    expected = [r.data.tags["Image_id"] for r in matching]
    assert runs["main"].data.tags["Queried_image_ids"] == ",".join(expected)
    csv = read_artifact(store.client, runs["main"].info.run_id, "query/query_result.csv")
    table = pd.read_csv(io.BytesIO(csv), dtype=str)
    assert table["tags.Image_id"].tolist() == expected
    assert table["run_id"].tolist() == [r.info.run_id for r in matching]
    assert sorted(r.data.tags["Image_id"] for r in runs["maps"]) == sorted(expected)


def test_saliency_runs_tags_params_map_and_pictures(pipeline, runs):
    store, _ = pipeline
    samples = {r.data.tags["Image_id"]: r for r in runs["samples"]}
    model = mlflow.sklearn.load_model(runs["train"].data.tags["Model_uri"])
    data = load_dataset("digits")
    train_tags = runs["train"].data.tags
    assert len(runs["maps"]) == MAX_IMAGES
    for run in runs["maps"]:
        tags, run_id = run.data.tags, run.info.run_id
        sample = samples[tags["Image_id"]]
        assert tags["Evaluation_run_id"] == sample.info.run_id
        assert tags["Evaluation_parent_run_id"] == runs["evaluation"].info.run_id
        assert tags["Code_version"] == runs["train"].data.tags["Code_version"]
        assert tags["Train_run_id"] == runs["train"].info.run_id
        assert tags["Model_uri"] == train_tags["Model_uri"]
        assert tags["Dataset"] == "digits"
        assert tags["Dataset_digest"] == train_tags["Dataset_digest"]
        assert tags["GT_class"] == sample.data.tags["GT_class"]
        assert tags["Predicted_class"] == sample.data.tags["Predicted_class"]
        assert run.data.params == {"algorithm": "rise", "n": FAST_SALIENCY["n"], "s": "4",
                                   "p1": "0.5", "seed": "0", "debiased": "true", "fill": "0.0",
                                   **METRIC_DEFAULTS, "predict_batch_size": "256",
                                   "dataset": "digits",
                                   "image_size": "", "test_fraction": "0.25", "split_seed": "0",
                                   "eval_split": "test"}
        assert tags["Split"] == "test" and sample.data.tags["Split"] == "test"
        paths = artifact_paths(store.client, run_id)
        assert {"saliency_map.npy", "generator_config.json", "pictures/all_classes.png"} <= paths
        assert {f"pictures/class_{k}.png" for k in range(10)} <= paths
        assert read_artifact(store.client, run_id, "pictures/class_3.png").startswith(PNG_MAGIC)
        stored = np.load(store.client.download_artifacts(run_id, "saliency_map.npy"))
        assert stored.shape == (10, 8, 8)
        assert np.isfinite(stored).all() and stored.min() >= -1 and stored.max() <= 1
        config = json.loads(read_artifact(store.client, run_id, "generator_config.json"))
        generator = generator_from_config(config)
        (row,) = data.rows([tags["Image_id"]])
        again = compute_saliency(generator, data.images[row], ImageClassifier(ProbaModel(model)))
        np.testing.assert_allclose(again, stored, atol=1e-6)
        # Beside it, the map before xaitk scales each class's map to ±1: in confidence units.
        raw = np.load(store.client.download_artifacts(run_id, "saliency_map_raw.npy"))
        peak = np.abs(raw).reshape(10, -1).max(axis=1)[:, None, None]
        np.testing.assert_allclose(raw / peak, stored, atol=1e-12)


def test_every_map_carries_its_faithfulness_metrics_and_curves(pipeline, runs):
    """Deletion/insertion (against random maps) and Entropy on each map run, recomputed here
    from the stored map and the stored metric settings; aggregates on the saliency step's run;
    a filter finds them."""
    from steps.core.metrics import MetricSettings, beats_random, score_map

    store, _ = pipeline
    model = ProbaModel(mlflow.sklearn.load_model(runs["train"].data.tags["Model_uri"]))
    data = load_dataset("digits")
    classifier = ImageClassifier(model)
    all_metrics = []
    for run in runs["maps"]:
        metrics, run_id = run.data.metrics, run.info.run_id
        stored = np.load(store.client.download_artifacts(run_id, "saliency_map.npy"))
        (row,) = data.rows([run.data.tags["Image_id"]])
        predicted = int(run.data.tags["Predicted_class"])
        true = int(run.data.tags["GT_class"])
        config = mlflow.artifacts.load_dict(f"runs:/{run_id}/generator_config.json")
        settings = MetricSettings.from_dict(config["map_metrics"])
        assert settings.metric_baseline == "mean" and settings.random_maps == 10
        assert settings.mean_source == "the training split"
        assert run.data.params["metric_baseline"] == "mean"
        again = score_map(stored, data.images[row], classifier.classify_array, predicted,
                          true, settings, run.data.tags["Image_id"])
        for name, value in again.metrics.items():
            assert metrics[name] == pytest.approx(value, abs=1e-9), name
        assert ("Deletion_auc_true_class" in metrics) == (predicted != true)
        for name in ("Deletion_auc", "Insertion_auc", "Random_deletion_auc",
                     "Random_insertion_auc"):
            assert 0 <= metrics[name] <= 1
        for name in ("Deletion_random_percentile", "Insertion_random_percentile"):
            assert 0 <= metrics[name] <= 100
        assert 0 < metrics["Entropy"] <= 6
        paths = artifact_paths(store.client, run_id)
        assert {"metrics/causal_curves.npz", "metrics/causal_curves.png"} <= paths
        curves = np.load(store.client.download_artifacts(run_id, "metrics/causal_curves.npz"))
        assert curves["Deletion_auc"].shape == (51,)
        assert curves["Deletion_auc"][0] == pytest.approx(
            metrics["Predicted_class_conf"], abs=1e-6)
        all_metrics.append(metrics)
    parent = store.client.get_run(runs["saliency"].info.run_id).data.metrics
    for name in ("Deletion_auc", "Insertion_auc", "Entropy"):
        values = [m[name] for m in all_metrics]
        assert parent[f"{name}_mean"] == pytest.approx(np.mean(values))
        assert parent[f"{name}_median"] == pytest.approx(np.median(values))
    beating = [m["Deletion_random_percentile"] >= 90 and m["Insertion_random_percentile"] >= 90
               for m in all_metrics]
    assert beating == [beats_random(m) for m in all_metrics]
    assert parent["Maps_beating_random"] == pytest.approx(np.mean(beating))
    worst = max(all_metrics, key=lambda m: m["Deletion_auc"])["Deletion_auc"]
    found = mlflow.search_runs(experiment_names=["Saliency Map Generation"],
                               filter_string=f"metrics.Deletion_auc >= {worst}")
    assert len(found) == 1


def test_the_step_run_holds_mean_maps_by_class_and_confusion_cell(pipeline, runs):
    store, _ = pipeline
    step_id = runs["saliency"].info.run_id
    paths = artifact_paths(store.client, step_id)
    assert read_artifact(store.client, step_id, "summary.png").startswith(PNG_MAGIC)
    by_cell, raw_by_cell = {}, {}
    for run in runs["maps"]:
        key = (run.data.tags["GT_class"], run.data.tags["Predicted_class"])
        stored = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map.npy"))
        by_cell.setdefault(key, []).append(stored)
        raw = np.load(store.client.download_artifacts(run.info.run_id, "saliency_map_raw.npy"))
        raw_by_cell.setdefault(key, []).append(raw)
    groups = {f"averages/true_{true}": [m for (t, _), maps in by_cell.items() if t == true
                                        for m in maps] for true in {t for t, _ in by_cell}}
    groups.update({f"averages/true_{true}_predicted_{predicted}": members
                   for (true, predicted), members in by_cell.items()})
    for name, members in groups.items():
        if len(members) < 2:  # a mean of one map would only copy that map
            assert f"{name}.npy" not in paths and f"{name}_all_classes.png" not in paths
            continue
        mean = np.load(store.client.download_artifacts(step_id, f"{name}.npy"))
        np.testing.assert_allclose(mean, np.mean(members, axis=0), atol=1e-12)
        # Pictured in confidence units, as the map runs' pictures: the raw maps' mean.
        raw_members = [r for key, raws in raw_by_cell.items() for r in raws
                       if name in (f"averages/true_{key[0]}",
                                   f"averages/true_{key[0]}_predicted_{key[1]}")]
        raw_mean = np.load(store.client.download_artifacts(step_id, f"{name}_raw.npy"))
        np.testing.assert_allclose(raw_mean, np.mean(raw_members, axis=0), atol=1e-12)
        assert f"{name}_all_classes.png" in paths


def test_every_run_and_experiment_says_what_it_is(pipeline, runs):
    store, _ = pipeline
    names = {key: runs[key].data.tags["mlflow.runName"]
             for key in ("main", "train", "evaluation", "saliency")}
    accuracy = runs["evaluation"].data.metrics["accuracy"]
    beating = round(runs["saliency"].data.metrics["Maps_beating_random"] * MAX_IMAGES)
    assert names == {"main": "pipeline · digits · rise(n=100)", "train": "train",
                     "evaluation": f"evaluate · {accuracy:.1%} · {NUM_SAMPLES} images",
                     "saliency": f"saliency · {beating}/{MAX_IMAGES} beat random · rise(n=100)"}
    for run in runs["samples"] + runs["maps"]:
        tags = run.data.tags
        mark = "✓" if tags["GT_class"] == tags["Predicted_class"] else "✗"
        assert tags["mlflow.runName"] == \
            f"image-{tags['Image_id']} · {tags['Predicted_class']} {mark}"
    # The pipelines' runs table compares pipelines by the main run's headline metrics.
    headline = runs["main"].data.metrics
    assert headline["Test_accuracy"] == accuracy and headline["Maps_explained"] == MAX_IMAGES
    for name in ("Maps_beating_random", "Deletion_auc_mean", "Insertion_auc_mean"):
        assert headline[name] == runs["saliency"].data.metrics[name]
    for run in runs["maps"]:
        assert run.data.tags["mlflow.note.content"].startswith(
            "**Beats random maps**" if beats_random(run.data.metrics)
            else "**Does not beat random maps**")
    for key in ("main", "train", "evaluation", "saliency"):
        assert len(runs[key].data.tags.get("mlflow.note.content", "")) > 20, key
    assert "accuracy" in runs["evaluation"].data.tags["mlflow.note.content"]
    for experiment in ("Default", "Train", "Evaluation", "Saliency Map Generation"):
        tags = store.client.get_experiment_by_name(experiment).tags
        assert len(tags.get("mlflow.note.content", "")) > 20, experiment


def test_the_query_is_kept_as_typed(pipeline, runs):
    store, _ = pipeline
    main = runs["main"]
    typed = json.loads(read_artifact(store.client, main.info.run_id, "pipeline_parameters.json"))
    assert typed["query"] == QUERY
    assert typed["max_images"] == str(MAX_IMAGES)
    assert main.data.tags["Query"] == QUERY
    found = store.client.search_runs([main.info.experiment_id],
                                     f"tags.Query = \"{QUERY}\"")
    assert [r.info.run_id for r in found] == [main.info.run_id]


def test_the_evaluation_logs_its_samples_as_a_table_and_classifier_metrics(pipeline, runs):
    store, _ = pipeline
    parent = runs["evaluation"]
    table = store.client.load_table(parent.info.experiment_id, "results.json",
                                    run_ids=[parent.info.run_id])
    samples = {r.info.run_id: r for r in runs["samples"]}
    assert sorted(table["run_id"]) == sorted(samples)
    for row in table.itertuples():
        sample = samples[row.run_id]
        # load_table reads digit strings back as numbers
        assert str(row.image_id) == sample.data.tags["Image_id"]
        assert str(row.true_class) == sample.data.tags["GT_class"]
        assert str(row.predicted_class) == sample.data.tags["Predicted_class"]
        assert row.correct == (sample.data.tags["Correct"] == "true")
        assert row.confidence == pytest.approx(sample.data.metrics["Predicted_class_conf"])
    metrics = parent.data.metrics
    truth = [int(r.data.tags["GT_class"]) for r in runs["samples"]]
    confidences = np.array([[r.data.metrics[f"Class_{k}_conf"] for k in range(10)]
                            for r in runs["samples"]])
    from sklearn.metrics import log_loss
    assert metrics["log_loss"] == pytest.approx(log_loss(truth, confidences, labels=range(10)),
                                                rel=1e-5)
    assert 0.5 < metrics["roc_auc_ovr_macro"] <= 1
    assert 0 <= metrics["expected_calibration_error"] <= 1
    assert 0 <= metrics["f1_macro"] <= 1
    assert all(0 <= metrics[f"Class_{k}_f1"] <= 1 for k in range(10))
    paths = artifact_paths(store.client, parent.info.run_id)
    for picture in ("roc_curves.png", "precision_recall_curves.png", "calibration_curve.png"):
        assert read_artifact(store.client, parent.info.run_id,
                             f"curves/{picture}").startswith(PNG_MAGIC)
    assert "results.json" in paths


def test_the_report_renders_in_a_browser_with_every_image(pipeline, runs, tmp_path):
    store, _ = pipeline
    main_id = runs["main"].info.run_id
    page = tmp_path / "report.html"
    page.write_bytes(read_artifact(store.client, main_id, "report.html"))
    text = page.read_text()
    assert "<script" not in text.lower()
    for run in [runs["train"], runs["evaluation"], runs["saliency"], *runs["maps"]]:
        assert run.info.run_id in text
    assert html.escape(QUERY) in text
    assert f"{runs['evaluation'].data.metrics['accuracy']:.4g}" in text
    # Every metric of the saliency runs the page names is explained in its row.
    named = [name for run in [runs["saliency"], *runs["maps"]] for name in run.data.metrics
             if f"<th>{name}</th>" in text]
    assert any(name.endswith("_true_class") for name in named), named
    unexplained = {name for name in named if 'class="what"' not in
                   text.split(f"<th>{name}</th>", 1)[1].split("</tr>", 1)[0]}
    assert unexplained == set()
    rendered = render_page(page, tmp_path)
    # The confusion matrix, the calibration curve, one picture per map.
    assert rendered.images == 2 + len(runs["maps"])
    assert rendered.decoded == rendered.images
    assert rendered.errors == 0 and rendered.external == 0
    screenshot = np.asarray(Image.open(rendered.screenshot).convert("L"))
    assert screenshot.shape == (3000, 1280)
    assert (screenshot < 128).mean() > 0.01  # text and pictures, not a blank page


def test_the_report_entry_point_rebuilds_the_same_page_from_the_store(pipeline, runs):
    store, _ = pipeline
    main_id = runs["main"].info.run_id
    before = read_artifact(store.client, main_id, "report.html")
    result = store.run({"main_run_id": main_id}, entry_point="report")
    assert result.returncode == 0, result.output
    assert read_artifact(store.client, main_id, "report.html") == before
    (rebuild,) = [r for r in store.runs("Default")
                  if r.data.tags.get("mlflow.project.entryPoint") == "report"]
    assert rebuild.data.tags["Report_of_run_id"] == main_id
    assert rebuild.data.tags["mlflow.runName"] == "report"
