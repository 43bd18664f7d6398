"""Explanations on request: images sent as PNG or JPEG bytes, predicted and explained together.

The computation behind the explainer model (`steps/tracking/explainer_model.py`, served by
`mlflow models serve`): a `ServingExplainer` holds the classifier, the names of its output
columns, a saliency run's stored configuration (`generator_config.json`, with the model's input
convention) and the image shape its maps were made on. Each image's bytes are decoded and
resized by the very code that reads an image folder (`datasets/image_folder.pixels`), so a file
sent here and the same file in a folder dataset give the same pixels, hence the same map as
the map run of that image stores in `saliency_map.npy`. The images of one request are
predicted in batches of `predict_batch_size` and explained in one engine pass. A row that is
not an image, or names a class the model does not have, is a `BadRow` naming the row.
Nothing here knows about MLflow.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from steps.core.datasets.image_folder import pixels
from steps.core.errors import SaliencyFlowError
from steps.core.image_models import ImageModel
from steps.core.xaitk_generators import ImageClassifier

#: The key of a map that is not any one class's (SquaredDifferenceScoring's whole prediction).
WHOLE_PREDICTION = "prediction"
#: The request's columns: the image file's bytes, and the classes to explain (optional).
IMAGE_COLUMN = "image"
CLASSES_COLUMN = "classes"


class BadRow(SaliencyFlowError):
    """A request row the explainer cannot use; the message names the row (from 0) and why."""

    def __init__(self, row: int, why: str) -> None:
        super().__init__(f"row {row}: {why}")
        self.row = row


def image_mode(shape: Sequence[int]) -> str:
    """How a file is decoded for images of `shape`: `RGB` for `(H, W, 3)`, `L` for `(H, W)`
    (as a folder of colour, or of grey, images is read); ValueError for other channel counts,
    which PNG and JPEG files do not give as the pipeline read them."""
    if len(shape) == 2:
        return "L"
    if len(shape) == 3 and shape[2] == 3:
        return "RGB"
    raise ValueError(f"images of shape {tuple(shape)}: the explainer reads PNG and JPEG files "
                     "as grey (H, W) or RGB (H, W, 3) images only")


def read_image(row: int, data: Any, shape: Sequence[int]) -> np.ndarray:
    """The bytes of a PNG or JPEG file as an image of `shape`, float32 in [0, 1]: decoded by
    Pillow, converted to grey or RGB and resized to the shape's height and width as
    `image_folder.pixels` reads a folder's file; BadRow for anything else."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        what = "empty" if data is None or (isinstance(data, float) and math.isnan(data)) \
            else f"a {type(data).__name__}"
        raise BadRow(row, f"the image is {what}, not the bytes of a PNG or JPEG file (base64 "
                          "in JSON)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return pixels(image, image_mode(shape), tuple(shape[:2]))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise BadRow(row, f"not a readable PNG or JPEG image ({error})") from None


def wanted_classes(row: int, value: Any, names: Sequence[str]) -> list[str] | None:
    """The class names a row's `classes` value asks for (comma-separated), or None for the
    predicted class; BadRow naming the classes the model does not have."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, str):
        raise BadRow(row, f"classes is a {type(value).__name__}, not comma-separated class names")
    wanted = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise BadRow(row, f"the model has no class {', '.join(map(repr, unknown))}; its classes "
                          f"are {', '.join(names)}")
    return list(dict.fromkeys(wanted)) or None


@dataclass
class ServingExplainer:
    """A classifier and a stored saliency configuration: one record per image sent."""

    model: ImageModel
    #: The class name of each of the model's output columns (the map's first axis).
    class_names: tuple[str, ...]
    #: A map run's stored configuration (`generator_config.json`), which makes the engine.
    config: dict
    #: `(H, W)` or `(H, W, 3)`: the images the maps were made on.
    image_shape: tuple[int, ...]
    predict_batch_size: int

    def __post_init__(self) -> None:
        image_mode(self.image_shape)

    @functools.cached_property
    def classifier(self) -> ImageClassifier:
        return ImageClassifier(self.model, batch_size=self.predict_batch_size,
                               classes=len(self.class_names))

    @functools.cached_property
    def engine(self):
        from steps.core.fast_saliency import engine_from_config

        return engine_from_config(self.config)

    def read(self, images: Sequence[Any], classes: Sequence[Any] | None = None
             ) -> tuple[np.ndarray, list[list[str] | None]]:
        """The request's images `[N, H, W(, C)]` and each row's wanted classes, every row
        checked before any is explained (a bad row costs no engine time)."""
        if not len(images):
            raise BadRow(0, "the request holds no image")
        classes = [None] * len(images) if classes is None else list(classes)
        pictures = [read_image(row, data, self.image_shape) for row, data in enumerate(images)]
        wanted = [wanted_classes(row, value, self.class_names)
                  for row, value in enumerate(classes)]
        return np.stack(pictures), wanted

    def class_maps(self, maps: np.ndarray, names: Sequence[str]) -> dict[str, list]:
        """The maps of the named classes as nested lists by class name: `[H, W]` each (an
        MC-RISE class's `[colours, H, W]`); a whole-prediction map under `prediction`."""
        if maps.ndim == 2:
            return {WHOLE_PREDICTION: maps.tolist()}
        column = {name: k for k, name in enumerate(self.class_names)}
        return {name: (maps[column[name]] if maps.ndim == 3 else maps[:, column[name]]).tolist()
                for name in names}

    def explain(self, images: Sequence[Any], classes: Sequence[Any] | None = None
                ) -> list[dict[str, Any]]:
        """One record per image, in order: `predicted_class`, `confidence`, `probabilities`
        (class name to probability), `saliency_map` (the wanted classes' maps, by class name;
        default the predicted class) and `image_size` ([H, W]). The images are predicted
        together, `predict_batch_size` per model call, then explained in one engine pass."""
        batch, wanted = self.read(images, classes)
        probabilities = np.asarray(self.classifier.classify_array(batch), dtype=float)
        made = self.engine.maps([image for image in batch], self.classifier)
        records = []
        for row, maps, names in zip(probabilities, made, wanted):
            predicted = self.class_names[int(row.argmax())]
            records.append({
                "predicted_class": predicted,
                "confidence": float(row.max()),
                "probabilities": dict(zip(self.class_names, row.tolist())),
                "saliency_map": self.class_maps(np.asarray(maps), names or [predicted]),
                "image_size": list(self.image_shape[:2]),
            })
        return records
