"""Explaining images: what the model predicts for each, its maps, and how far they can be trusted.

The pure part of the saliency step: an `ImageExplainer` holds the dataset, the model, its
classes and the algorithm's stored configuration, and gives plain results (`PredictedImage`,
`ExplainedImage`) that `steps/tracking/map_runs.py` logs. The maps come from one
`FastSaliency` engine for all the images (xaitk's generator where it does not apply), built
from the stored configuration, so a stored map can be made again bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from steps.core import plots
from steps.core.image_dataset import TRAIN, ImageDataset, Split
from steps.core.errors import NotRandomisable
from steps.core.metrics import MapScores, MetricSettings, class_map, score_map
from steps.core.sanity import SANITY_SEED, fails_sanity, map_similarity
from steps.core.image_models import ClassMapping, ImageModel
from steps.core.xaitk_generators import ImageClassifier


@dataclass(frozen=True)
class PredictedImage:
    """One image and what the model makes of it, from one prediction: the true and predicted
    class names, the predicted class's confidence, the output columns of the predicted and
    true class (None when the model has no column for the true class), and the confidence of
    each output column (the prediction's row)."""

    image_id: str
    image: np.ndarray
    true_class: str
    predicted_class: str
    confidence: float
    predicted_column: int
    true_column: int | None
    confidences: np.ndarray | None = None

    @property
    def correct(self) -> bool:
        return self.true_class == self.predicted_class

    def class_marks(self) -> plots.Answer:
        """What the pictures title, order and mark the class panels by."""
        return plots.Answer(self.confidences, self.predicted_column, self.true_column)

    def title(self) -> str:
        return f"image {self.image_id}: true {self.true_class}, predicted {self.predicted_class}"


@dataclass(frozen=True)
class ExplainedImage:
    """An image's maps (xaitk's, scaled per class), the same before xaitk's scaling in the
    model's confidence units (None where the engine has none), and their scores."""

    predicted: PredictedImage
    maps: np.ndarray
    raw: np.ndarray | None
    scores: MapScores


def raw_meaning(engine) -> plots.MapMeaning:
    """What an engine's raw maps' values are: `RegionWeighting.in_confidence_units`, or MC-RISE's
    (`McRiseRaw`) for xaitk's generator."""
    weighting = getattr(engine, "weighting", None)
    if weighting is None:
        return plots.FILLING_IN_CONFIDENCE
    if weighting.squared:
        return plots.OCCLUDING_IN_CONFIDENCE
    if weighting.normalize or weighting.offset:
        return plots.SHOWING_IN_CONFIDENCE
    return plots.SHOWN_IN_CONFIDENCE


def fill_colours_of(config: dict) -> list:
    """The fill colours of an MC-RISE configuration (`[[0.0], [1.0]]`), else none."""
    generator = config["generator"]
    return generator.get(generator.get("type"), {}).get("fill_colors", [])


def resolve_metric_settings(settings: MetricSettings, dataset: ImageDataset, split: Split,
                            model: ImageModel, config: dict) -> MetricSettings:
    """The settings with their baselines' values for this data, model and algorithm: the mean
    colour of the model's declared input_mean, else of the training split (of every image when
    nothing is held out for training); the fill value(s) the algorithm occluded with."""
    fill = config.get("fill")
    fills = fill_colours_of(config) or ([[fill]] if fill is not None else [])
    if len(split.train_rows):
        images, source = dataset.images[split.train_rows], "the training split"
    else:
        images, source = dataset.images, "every image (no training split)"
    return settings.resolve(images, source, fills, model.convention.mean,
                            model.convention.scale)


@dataclass
class ImageExplainer:
    """The dataset, the model on it and the algorithm's configuration: predictions, maps and
    scores of the dataset's images, by image ID."""

    dataset: ImageDataset
    model: ImageModel
    classes: ClassMapping
    #: The generator's configuration (`generator_config.json`), which makes `engine`.
    config: dict
    #: The dataset's split: which images the model was trained on.
    split: Split
    predict_batch_size: int
    #: How the maps are scored, baselines resolved (`resolve_metric_settings`).
    metric_settings: MetricSettings = field(default_factory=MetricSettings)
    #: Predictions by image ID, once made.
    predictions: dict[str, PredictedImage] = field(default_factory=dict)

    @functools.cached_property
    def classifier(self) -> ImageClassifier:
        return ImageClassifier(self.model, batch_size=self.predict_batch_size,
                               classes=len(self.classes.names))

    @functools.cached_property
    def randomised_classifier(self) -> ImageClassifier:
        """The classifier with the model's weights redrawn (the sanity check's); raises
        `NotRandomisable` when they cannot be."""
        return ImageClassifier(self.model.randomised(SANITY_SEED),
                               batch_size=self.predict_batch_size,
                               classes=len(self.classes.names))

    def sanity_unavailable(self) -> str | None:
        """Why the sanity check asked for cannot run on this model, or None."""
        if not self.metric_settings.sanity_check:
            return None
        try:
            self.randomised_classifier
        except NotRandomisable as error:
            return str(error)
        return None

    @functools.cached_property
    def engine(self):
        """FastSaliency, or xaitk's generator where it does not apply; made when the first map
        is (xaitk's implementations are slow to import, and compare never needs them; figures:
        benchmarks/README.md, "Start-up and overhead")."""
        from steps.core.fast_saliency import engine_from_config

        return engine_from_config(self.config)

    def raw_meaning(self) -> plots.MapMeaning:
        return raw_meaning(self.engine)

    def split_of(self, image_id: str) -> str:
        """The part of the dataset's split the image is in: train, test, val or all."""
        return self.split.name_of(int(self.dataset.rows([image_id])[0]), self.dataset)

    def training_images(self, image_ids) -> list[str]:
        return [i for i in image_ids if self.split_of(i) == TRAIN]

    def predict(self, image_id: str) -> PredictedImage:
        """The image of `image_id` and the model's answer on it, predicted alone (a float32
        model rounds by batch, and a map run's confidence must not depend on which images
        shared its batch); kept, so the step's pictures reuse it."""
        if image_id not in self.predictions:
            data, column_classes = self.dataset, self.classes.column_classes
            row = data.rows([image_id])[0]
            confidences = np.asarray(self.model.predict_proba(data.images[row:row + 1]),
                                     dtype=float)[0]
            predicted_column = int(confidences.argmax())
            true = np.flatnonzero(column_classes == data.labels[row])
            self.predictions[image_id] = PredictedImage(
                image_id, data.images[row], data.class_names[data.labels[row]],
                data.class_names[column_classes[predicted_column]], float(confidences.max()),
                predicted_column, int(true[0]) if len(true) else None, confidences)
        return self.predictions[image_id]

    def predict_all(self, image_ids) -> list[PredictedImage]:
        return [self.predict(image_id) for image_id in image_ids]

    def maps_of(self, predicted: Sequence[PredictedImage]
                ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The images' maps and raw maps, made together (the engine scores images of a shape
        in one pass)."""
        return self.engine.maps_and_raw([one.image for one in predicted], self.classifier)

    def score(self, predicted: PredictedImage, maps: np.ndarray) -> MapScores:
        return score_map(maps, predicted.image, self.classifier.classify_array,
                         predicted.predicted_column, predicted.true_column,
                         self.metric_settings, predicted.image_id)

    def randomised_maps(self, predicted: Sequence[PredictedImage]) -> list[np.ndarray | None]:
        """The images' maps by the randomised model, when the sanity check asks for them and
        can run (else None each)."""
        if not self.metric_settings.sanity_check or self.sanity_unavailable():
            return [None] * len(predicted)
        return [maps for maps, _ in self.engine.maps_and_raw([one.image for one in predicted],
                                                             self.randomised_classifier)]

    def explain(self, predicted: Sequence[PredictedImage]) -> Iterator[ExplainedImage]:
        """Each image explained and scored, in order; the maps (and those of the randomised
        model, for the sanity check) made together first, each image's scores as it is reached
        (a caller that stops early scores no more)."""
        made = zip(self.maps_of(predicted), self.randomised_maps(predicted))
        for one, ((maps, raw), randomised) in zip(predicted, made):
            scores = self.score(one, maps)
            if randomised is not None:
                similarity = map_similarity(class_map(maps, one.predicted_column),
                                            class_map(randomised, one.predicted_column))
                scores = scores.with_sanity(similarity, fails_sanity(similarity))
            yield ExplainedImage(one, maps, raw, scores)
