"""What the saliency benchmarks share: digits, a model trained on its train split, and the RISE
engine built from its stored configuration, as the saliency step builds it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's `steps` package

import numpy as np  # noqa: E402

from steps.core.algorithm import make_algorithm  # noqa: E402
from steps.core.image_dataset import ImageDataset, load_dataset, random_split  # noqa: E402
from steps.core.fast_saliency import engine_from_config  # noqa: E402
from steps.core.image_models import ModelParams, ProbaModel, train_classifier  # noqa: E402
from steps.core.xaitk_generators import ImageClassifier, generator_config  # noqa: E402


@dataclass
class DigitsSetup:
    data: ImageDataset
    model: ProbaModel
    classifier: ImageClassifier
    engine: object
    rows: np.ndarray  # the test images benchmarked
    images: np.ndarray
    labels: np.ndarray


def digits_setup(epochs: int, images: int, **rise_settings) -> DigitsSetup:
    """The first `images` test images of digits, a model trained for `epochs`, and RISE's
    engine (with `rise_settings`) from its configuration as stored (JSON) in a map run."""
    data = load_dataset("digits")
    split = random_split(data, 0.25, 0)
    model = ProbaModel(train_classifier(ModelParams(epochs=epochs),
                                        data.images[split.train_rows],
                                        data.labels[split.train_rows]).classifier)
    engine = engine_from_config(json.loads(json.dumps(generator_config(
        make_algorithm("rise", **rise_settings).generator()))))
    rows = split.test_rows[:images]
    return DigitsSetup(data, model, ImageClassifier(model), engine, rows, data.images[rows],
                       data.labels[rows])
