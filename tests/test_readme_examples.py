"""The README's examples, run as written against a real store: the saliency-alone example and
the one-image query explain test images (`Split` tag `test`, no training-split warning), and the
query matches its image. Read from README.md, so a README changed to a wrong example fails."""

from __future__ import annotations

import re
import shlex

import pytest

from steps import options
from steps.core.image_dataset import load_dataset, random_split
from tests.conftest import FAST_TRAIN, PROJECT_DIR, Store

README = PROJECT_DIR / "README.md"
#: Only what makes the runs quick; never the images or the split.
QUICK = {"n": "50", "picture_mode": "combined"}
SALIENCY_EXAMPLE = "mlflow run . --env-manager local -e saliency -P model_uri=<Model_uri tag>"


def readme_saliency_example() -> dict[str, str]:
    """The `-P` parameters of the README's saliency-alone example."""
    (line,) = [line.strip() for line in README.read_text().splitlines()
               if line.strip().startswith(SALIENCY_EXAMPLE)]
    words = shlex.split(line)
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-P")


def readme_image_query() -> str:
    """The filter string of the README's 'one image' query example."""
    (query,) = re.findall(r"^\| one image[^|]*\| `([^`]+)` \|$", README.read_text(), re.M)
    return query


def default_test_ids() -> list[str]:
    """The test split of digits with the default test_fraction and split_seed, in order."""
    defaults = {d.name: d.default for d in options.SPLIT}
    data = load_dataset("digits")
    split = random_split(data, defaults["test_fraction"], defaults["split_seed"])
    return [data.image_ids[row] for row in split.test_rows]


def map_runs_of(store: Store, step_run_id: str) -> list:
    return store.runs("Saliency Map Generation", f"tags.Saliency_parent_run_id = '{step_run_id}'")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The pipeline with the README's one-image query, evaluating just enough of the test split
    to reach that image (the README's pipeline evaluates all of it)."""
    query = readme_image_query()
    (image_id,) = re.findall(r"tags\.Image_id = '([^']+)'", query)
    test_ids = default_test_ids()
    assert image_id in test_ids, f"the README's query {query!r} names a training image"
    directory = tmp_path_factory.mktemp("readme")
    store = Store(f"sqlite:///{directory / 'mlflow.db'}", directory)
    result = store.run({"query": query, "num_samples": str(test_ids.index(image_id) + 1),
                        **FAST_TRAIN, **QUICK})
    assert result.returncode == 0, result.output
    return store, result, image_id


def test_readme_query_example_matches_its_test_image(pipeline):
    store, result, image_id = pipeline
    assert "training split" not in result.output
    (main,) = [r for r in store.all_runs() if "Query_matches" in r.data.tags]
    assert int(main.data.tags["Query_matches"]) >= 1
    assert main.data.tags["Queried_image_ids"] == image_id
    step_id = main.data.tags["Saliency_run_id"]
    step = store.client.get_run(step_id)
    assert step.data.params["test_fraction"] == "0.25" and step.data.params["split_seed"] == "0"
    (map_run,) = map_runs_of(store, step_id)
    assert map_run.data.tags["Image_id"] == image_id
    assert map_run.data.tags["Split"] == "test"
    sample = store.client.get_run(map_run.data.tags["Evaluation_run_id"])
    assert sample.data.tags["Image_id"] == image_id and sample.data.tags["Split"] == "test"


def test_readme_saliency_example_explains_test_images(pipeline):
    store, _, _ = pipeline
    params = readme_saliency_example()
    image_ids = params["image_ids"].split(",")
    assert set(image_ids) <= set(default_test_ids()), params
    (train,) = store.runs("Train")
    params["model_uri"] = train.data.tags["Model_uri"]
    result = store.run({**params, **QUICK}, entry_point="saliency")
    assert result.returncode == 0, result.output
    assert "training split" not in result.output
    (step,) = [r for r in store.runs("Saliency Map Generation")
               if r.data.tags.get("Image_ids") == params["image_ids"]]
    runs = map_runs_of(store, step.info.run_id)
    assert sorted(r.data.tags["Image_id"] for r in runs) == sorted(image_ids)
    assert {r.data.tags["Split"] for r in runs} == {"test"}
