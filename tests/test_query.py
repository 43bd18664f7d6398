"""The driver's query (steps/tracking/query.py) on a store holding two evaluations: the query of
one never returns the other's samples, and keeps to the user's filter, order and max_images,
whether the evaluation's sample runs carry the tag key naming it (`Samples_keyed` on the
evaluation run: searched by that key) or not (searched by the parent tag's value).

The second evaluation's samples are all wrong and less confident than any of the first's, so a
query that lost its scope would put them first.
"""

from __future__ import annotations

import click
import pytest

from steps import store_names
from steps.tracking.query import (SAMPLES_KEYED_TAG, RESULT_COLUMNS, sample_key,
                                  query_samples)
from steps.tracking.runs import experiment_id

WRONG = "tags.Correct = 'false'"
ASC = "metrics.Predicted_class_conf ASC"
DESC = "metrics.Predicted_class_conf DESC"
# (confidence, correct) of each sample of the two evaluations.
FIRST = [(0.9, True), (0.5, False), (0.7, False), (0.3, True), (0.6, False), (0.8, False),
         (0.4, False)]
SECOND = [(0.05, False), (0.1, False), (0.2, False), (0.15, True)]


def write_evaluation(client, experiment: str, samples: list[tuple[float, bool]], prefix: str,
                     keyed: bool) -> tuple[str, dict[str, tuple[float, bool]]]:
    """A parent run and one run per sample, tagged as the evaluate step tags them (`keyed`:
    with the tag key naming the evaluation); the parent's ID and each sample's image ID with
    its (confidence, correct)."""
    parent = client.create_run(experiment, run_name="evaluate").info.run_id
    images = {}
    for i, (confidence, correct) in enumerate(samples):
        image_id = f"{prefix}{i:03d}"
        run = client.create_run(experiment, run_name=f"image-{image_id}", tags={
            store_names.EVALUATION_PARENT_TAG: parent, store_names.PARENT_RUN_TAG: parent,
            store_names.IMAGE_ID_TAG: image_id, store_names.GT_CLASS_TAG: "1",
            store_names.PREDICTED_CLASS_TAG: "1" if correct else "2",
            store_names.CORRECT_TAG: "true" if correct else "false",
            **({sample_key(parent): "true"} if keyed else {})})
        client.log_metric(run.info.run_id, store_names.PREDICTED_CONF_METRIC, confidence)
        client.set_terminated(run.info.run_id)
        images[image_id] = (confidence, correct)
    if keyed:
        client.set_tag(parent, SAMPLES_KEYED_TAG, "true")
    client.set_terminated(parent)
    return parent, images


@pytest.fixture(params=["tag value", "tag key"])
def evaluations(store, request):
    """Two evaluations, each scoped by the parent tag's value or each by its tag key."""
    experiment = experiment_id(store_names.EVALUATION_EXPERIMENT)
    keyed = request.param == "tag key"
    first = write_evaluation(store.client, experiment, FIRST, "a", keyed)
    second = write_evaluation(store.client, experiment, SECOND, "b", keyed)
    return first, second


def expected(images: dict[str, tuple[float, bool]], descending: bool = False,
             wrong_only: bool = True) -> list[str]:
    chosen = [(conf, image) for image, (conf, correct) in images.items()
              if not (wrong_only and correct)]
    return [image for _, image in sorted(chosen, reverse=descending)]


def image_ids(found) -> list[str]:
    return list(found[f"tags.{store_names.IMAGE_ID_TAG}"])


def test_the_query_keeps_to_its_evaluation_filter_order_and_max_images(evaluations):
    (first, first_images), (second, second_images) = evaluations
    found = query_samples(first, WRONG, ASC, 2)
    assert image_ids(found) == expected(first_images)[:2] == ["a006", "a001"]
    assert list(found.columns) == RESULT_COLUMNS
    assert set(found[f"tags.{store_names.CORRECT_TAG}"]) == {"false"}
    assert list(found[f"metrics.{store_names.PREDICTED_CONF_METRIC}"]) == [0.4, 0.5]

    # More room than matches: every wrong sample of this evaluation, none of the other's.
    assert image_ids(query_samples(first, WRONG, ASC, 50)) == expected(first_images)
    assert image_ids(query_samples(first, WRONG, DESC, 3)) == \
        expected(first_images, descending=True)[:3]
    assert image_ids(query_samples(second, WRONG, ASC, 50)) == expected(second_images)


def test_an_empty_filter_is_the_whole_evaluation_and_no_match_is_empty(evaluations):
    (first, first_images), _ = evaluations
    assert image_ids(query_samples(first, "", ASC, 50)) == \
        expected(first_images, wrong_only=False)
    found = query_samples(first, "metrics.Predicted_class_conf < 0.1", ASC, 5)
    assert found.empty and list(found.columns) == RESULT_COLUMNS


def test_a_filter_mlflow_rejects_is_one_line_naming_the_query(evaluations):
    (first, _), _ = evaluations
    for run_id in (first, "0" * 32):  # an evaluation, and a run that does not exist
        for bad in ({"user_filter": "tags.Correct === 'false'", "order_by": ASC},
                    {"user_filter": WRONG, "order_by": "metrics.Predicted_class_conf UP"}):
            with pytest.raises(click.BadParameter) as error:
                query_samples(run_id, max_images=5, **bad)
            message = error.value.format_message()
            assert "'--query'" in message and "MLflow rejected query" in message
            assert "\n" not in error.value.message


def test_a_run_that_does_not_exist_has_no_samples(evaluations):
    found = query_samples("0" * 32, WRONG, ASC, 5)
    assert found.empty and list(found.columns) == RESULT_COLUMNS


def test_a_keyed_evaluation_is_searched_by_its_key(store):
    """A sample run of the evaluation without the key (which the evaluate step never leaves) is
    not found: the search went by the key, not by the parent tag's value."""
    experiment = experiment_id(store_names.EVALUATION_EXPERIMENT)
    parent, images = write_evaluation(store.client, experiment, FIRST, "a", keyed=True)
    store.client.create_run(experiment, run_name="image-stray", tags={
        store_names.EVALUATION_PARENT_TAG: parent, store_names.IMAGE_ID_TAG: "stray",
        store_names.CORRECT_TAG: "false"})
    assert image_ids(query_samples(parent, WRONG, ASC, 50)) == expected(images)
    store.client.delete_tag(parent, SAMPLES_KEYED_TAG)
    assert "stray" in image_ids(query_samples(parent, WRONG, ASC, 50))
