"""The core's shape: pure processing that never imports MLflow, and registries that take a new
dataset source or saliency algorithm as one new file."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import PROJECT_DIR

CORE = PROJECT_DIR / "steps" / "core"


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


#: What the core never imports: it knows nothing of tracking nor of the command line.
NOT_IN_CORE = ("mlflow", "click")


def test_no_core_module_imports_mlflow_or_click_even_lazily():
    offenders = {str(path.relative_to(PROJECT_DIR)): sorted(m for m in imported_modules(path)
                                                           if m.split(".")[0] in NOT_IN_CORE)
                 for path in CORE.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}
    # Nor through another project module: steps.core imports only steps.core.
    inner = {str(path.relative_to(PROJECT_DIR)): sorted(
        m for m in imported_modules(path) if m.startswith("steps.") and
        not m.startswith("steps.core")) for path in CORE.rglob("*.py")}
    assert not {k: v for k, v in inner.items() if v}


def test_importing_and_using_the_core_loads_no_mlflow_or_click():
    code = textwrap.dedent("""
        import sys
        from steps.core.algorithm import ALGORITHMS, make_algorithm
        from steps.core.image_dataset import DATASET_SOURCES, load_dataset
        from steps.core.image_models import MODEL_KINDS, ProbaModel, ModelParams, train_classifier
        from steps.core.xaitk_generators import ImageClassifier, generator_config
        from steps.core.fast_saliency import FastSaliency
        from steps.core import plots
        data = load_dataset("digits")
        model = train_classifier(ModelParams(epochs=2, hidden_layer_sizes=(8,)), data.images[:200],
                                 data.labels[:200]).classifier
        algorithm = make_algorithm("rise", n=20)
        engine = FastSaliency.from_config(generator_config(algorithm.generator()))
        maps = engine(data.images[0], ImageClassifier(ProbaModel(model), classes=10))
        assert maps.shape == (10, 8, 8)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "click"))
        assert not loaded, loaded
        print("ok", ALGORITHMS.names(), DATASET_SOURCES.names(), MODEL_KINDS.names())
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ("ok ('mc_rise', 'random_grid', 'rise', 'sliding_radial', 'sliding_window') "
            "('digits', 'image_folder', 'npz')") in result.stdout


NEW_DATASET = '''
import numpy as np
from steps.core.image_dataset import DATASET_SOURCES, DatasetSource, ImageDataset

@DATASET_SOURCES.register
class Checkerboards(DatasetSource):
    name = "checkerboards"
    usage = "`checkerboards`"

    @classmethod
    def accepts(cls, spec):
        return spec == cls.name

    def load(self):
        images = np.indices((8, 8)).sum(axis=0) % 2 * np.ones((6, 1, 1), np.float32)
        return ImageDataset(self.name, images, np.array([0, 1] * 3), ("a", "b"),
                            tuple(map(str, range(6))))

    def content_digest(self, digest):
        digest.update(b"checkerboards")
'''

NEW_ALGORITHM = '''
from steps.core.algorithm import ALGORITHMS, SCORING
from steps.core.algorithms.sliding_window import SlidingWindow
from steps.core.parameters import Integer, Parameter

SPAN = Parameter("span", 3, Integer(min=1), "Square window: side in pixels.")

@ALGORITHMS.register
class SquareWindow(SlidingWindow):
    name = "square_window"
    xaitk = "`SlidingWindow` of square windows + `OcclusionScoring`"
    parameters = (SPAN, SCORING)
    count_parameter = "span"

    @property
    def window_size(self):
        return (self.span, self.span)

    @property
    def stride(self):
        return (1, 1)
'''


def test_a_new_dataset_or_algorithm_is_one_new_file(tmp_path):
    """Dropped into its package, a module is found by the registry, the CLI options and the
    step's parameter check, with no other file edited."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR / "steps", project / "steps",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / "steps/core/datasets/checkerboards.py").write_text(NEW_DATASET)
    (project / "steps/core/algorithms/square_window.py").write_text(NEW_ALGORITHM)
    code = textwrap.dedent("""
        from steps import options
        from steps.core.algorithm import make_algorithm
        from steps.core.image_dataset import load_dataset
        names = [d.name for d in options.ENTRY_POINTS["saliency"]]
        assert "span" in names, names
        algorithm = make_algorithm("square_window", span=2)
        assert algorithm.used_params() == {"algorithm": "square_window", "span": 2,
                                           "scoring": "occlusion", "fill": 0.0}
        print(type(algorithm.generator()).__name__, load_dataset("checkerboards").images.shape)
        from steps.core.fast_saliency import depends_only_on_shape
        assert depends_only_on_shape(algorithm.perturber())  # its masks are kept, as declared
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["PerturbationOcclusion", "(6,", "8,", "8)"]


def test_a_list_with_an_empty_item_is_one_line_naming_it():

    from steps.core.errors import ParameterError
    from steps.core.parameters import TextList

    with pytest.raises(ParameterError, match=r"'3,,4' has an empty item"):
        TextList().convert("3,,4", None, None)


PROJECT_COPY_IGNORES = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache",
                                              "mlruns", "mlartifacts", "*.db")


@pytest.mark.slow
def test_an_algorithm_with_a_new_parameter_is_one_file_and_runs_through_mlflow_run(store):
    """The whole project copied, one algorithm file added: regenerating the project files
    declares its parameter in MLproject, and `mlflow run -e saliency -P span=...` makes a map
    run with it."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from steps import store_names
    from steps.core.image_dataset import flatten, load_dataset

    project = store.dir / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=PROJECT_COPY_IGNORES)
    (project / "steps/core/algorithms/square_window.py").write_text(NEW_ALGORITHM)
    generated = subprocess.run([sys.executable, "-m", "steps.project_files"], cwd=project,
                               capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stderr
    assert sorted(generated.stdout.split()) == sorted(
        "Wrote MLproject Wrote docs/parameters.md Wrote README.md".split())
    assert "span: {type: int, default: 3}" in (project / "MLproject").read_text()
    assert "| `span` | int | `3` | x>=1. Square window: side in pixels. |" in (
        project / "docs/parameters.md").read_text()

    digits = load_dataset("digits")
    classifier = LogisticRegression(max_iter=200).fit(flatten(digits.images), digits.labels)
    mlflow.set_experiment("models")
    with mlflow.start_run():
        model_uri = mlflow.sklearn.log_model(classifier, name="logreg").model_uri
    result = store.run({"model_uri": model_uri, "image_ids": "5", "algorithm": "square_window",
                        "span": "2"}, entry_point="saliency", project=project)
    assert result.returncode == 0, result.output
    (map_run,) = store.runs(store_names.SALIENCY_EXPERIMENT,
                            "params.algorithm = 'square_window' and params.span = '2'")
    saliency_map = np.load(store.client.download_artifacts(
        map_run.info.run_id, store_names.MAP_ARTIFACT, str(store.dir)))
    assert saliency_map.shape == (10, 8, 8) and np.abs(saliency_map).max() > 0
