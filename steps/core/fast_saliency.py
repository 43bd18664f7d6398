"""Fast saliency maps from xaitk-saliency's own perturbers and scorers, for many images.

Per image, xaitk's `PerturbationOcclusion` makes the masks again (RISEGrid's and SlidingWindow's
depend only on their configuration and the image's height and width), occludes and classifies
the perturbed images one by one, and its scorers weight the masks in a Python loop over classes
and masks. On the digits default (RISE, 1,000 masks) a map takes many times what the classifier
alone needs (figures: benchmarks/README.md, "Saliency maps"). `FastSaliency` runs the same
perturber and scorer, rebuilt from the configuration the saliency step stores, but
- makes the masks once per (perturber configuration, image shape) and reuses them (`MaskCache`),
  for the perturbers whose algorithm declares so (`depends_only_on_shape`);
- builds the perturbed images a chunk at a time with xaitk's own per-image expression, vectorised,
  into one buffer of at most `chunk_size` of them and `CHUNK_BYTES` (or one classifier batch,
  if that is larger), skipping the fill term when it is 0;
- classifies each chunk with one array call, in the same batches as xaitk's stream would be,
  building the next chunk in a second thread meanwhile when chunks hold `OVERLAP_BYTES` or more;
- does the scorers' loop as one matrix product for several images at once (`maps`), over the
  masks' weights kept beside the masks, or over cache-sized blocks of them when they would
  take more than `DERIVED_BYTES`;
- runs the model's BLAS with one thread (`steps/core/blas.py`).
Its maps equal xaitk's (tests/test_fast_saliency.py). Nothing here knows about MLflow.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np
from smqtk_classifier.interfaces.classify_image import ClassifyImage
from smqtk_core.configuration import from_config_dict, to_config_dict
from xaitk_saliency.impls.gen_classifier_conf_sal.occlusion_scoring import OcclusionScoring
from xaitk_saliency.impls.gen_classifier_conf_sal.rise_scoring import RISEScoring
from xaitk_saliency.impls.gen_classifier_conf_sal.squared_difference_scoring import (
    SquaredDifferenceScoring,
)
from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack
from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.occlusion_based import (
    PerturbationOcclusion,
)
from xaitk_saliency.interfaces.gen_classifier_conf_sal import GenerateClassifierConfidenceSaliency
from xaitk_saliency.interfaces.perturb_image import PerturbImage
from xaitk_saliency.utils.masking import UINT8_ONE

from steps.core.algorithm import ALGORITHMS
from steps.core.blas import SMALL_BATCHES, blas_threads
from steps.core.xaitk_generators import quiet_plugin_discovery

DEFAULT_CHUNK_SIZE = 1024
#: Bytes of perturbed images a chunk holds at most (fewer than `chunk_size` for large images).
CHUNK_BYTES = 2**22
#: Bytes of a chunk from which the next chunk is built while it is classified (`_scalars`).
#: Below, handing work to a thread cost more than it saved (figures: benchmarks/README.md, "An
#: ONNX CNN beside the MLP, and overlapping chunks"); 224x224x3 chunks are 147 MiB.
OVERLAP_BYTES = 2**24
#: Bytes of a block of work kept in cache: perturbed images, or the scorers' weights.
BLOCK_BYTES = 2**19
#: Pixels of a scoring block; its rows fill the rest of `BLOCK_BYTES`.
BLOCK_COLUMNS = 256
#: Bytes of confidences `FastSaliency.maps` keeps to score images together.
SCALAR_BYTES = 2**24
#: Bytes an array made from cached masks may take to be cached too (`MaskCache.derived`): the
#: masks copied into each colour channel, the scorers' float64 weights. Larger ones are made a
#: block at a time for each image instead, so memory stays bounded at any image size.
DERIVED_BYTES = 2**26


def _type_name(cls) -> str:
    """A class's name as smqtk configurations give it."""
    return f"{cls.__module__}.{cls.__name__}"


PERTURBATION_OCCLUSION = _type_name(PerturbationOcclusion)
MC_RISE_STACK = _type_name(MCRISEStack)
VECTORISED_SCORERS = tuple(map(_type_name, (RISEScoring, OcclusionScoring,
                                             SquaredDifferenceScoring)))


def depends_only_on_shape(perturber: PerturbImage) -> bool:
    """Whether the perturber's masks are the same for every image of a shape, so can be kept.

    Each algorithm declares it for the perturbers it builds (`SaliencyAlgorithm.
    shape_only_masks`): a RISEGrid or RandomGrid without a seed draws new masks on every call,
    like xaitk, so it is not cached. A perturber no algorithm declares is not cached either.
    """
    return any(algorithm.shape_only_masks(perturber) for algorithm in ALGORITHMS)


class MaskCache:
    """Masks by (perturber configuration, image height and width); least recently used go first.

    Shared masks are returned read-only. `hits` and `misses` count the look-ups of masks;
    arrays made from them (`derived`) are kept apart, as many.
    """

    def __init__(self, max_entries: int = 4) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], np.ndarray] = OrderedDict()
        self._derived: OrderedDict[tuple, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays kept: masks and what was derived from them."""
        kept = [*self._entries.values(), *self._derived.values()]
        return sum(array.nbytes for entry in kept
                   for array in (entry if isinstance(entry, tuple) else (entry,))
                   if isinstance(array, np.ndarray))

    def masks(self, perturber: PerturbImage, shape: Sequence[int]) -> np.ndarray:
        """The perturber's masks `[n, H, W]` for images of `shape` (`H, W[, C]`)."""
        key = (self._configuration(perturber), tuple(shape[:2]))
        if key in self._entries:
            self.hits += 1
        else:
            self.misses += 1
        return self._kept(self._entries, key, lambda: np.asarray(
            perturber.perturb(np.zeros(key[1], dtype=np.float32))))

    def derived(self, perturber: PerturbImage, shape: Sequence[int], kind: Hashable,
                nbytes: int, make: Callable[[], Any]) -> Any:
        """What `make` makes from the perturber's masks for images of `shape` (`kind` says
        what), kept like the masks if its `nbytes` are at most `DERIVED_BYTES`; None if more."""
        if nbytes > DERIVED_BYTES:
            return None
        return self._kept(self._derived, (self._configuration(perturber), tuple(shape), kind),
                          make)

    @staticmethod
    def _configuration(perturber: PerturbImage) -> str:
        return json.dumps(to_config_dict(perturber), sort_keys=True)

    def _kept(self, entries: OrderedDict, key: tuple, make: Callable[[], Any]) -> Any:
        """The entry of `key`, made (arrays read-only) if missing; the least recently used go."""
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        made = make()
        for array in made if isinstance(made, tuple) else (made,):
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
        entries[key] = made
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        return made


def occlude(image: np.ndarray, masks: np.ndarray, fill: Any = None,
            out: np.ndarray | None = None) -> np.ndarray:
    """Perturbed images `[N, *image.shape]`, one per mask, written to `out` if given.

    The expression xaitk's `occlude_image_streaming` applies to each image, applied to blocks
    of masks (`BLOCK_BYTES` of images each, so they stay in cache): the same values without a
    Python loop per image. A fill of 0 adds nothing (x + 0 is x), so it is skipped. The masks
    of a colour image are `[N, H, W]`, or already copied into its channels, `[N, H, W, C]`
    (fastest). `[N, H, W]` ones are copied into every channel a block at a time, then
    multiplied in place, when that is the same product in the same type (numpy's loop over a
    broadcast axis of 3 is its slowest).
    """
    if out is None:
        out = np.empty((len(masks), *image.shape), dtype=image.dtype)
    with_fill = fill is not None and np.any(fill)
    spread = masks.ndim == image.ndim  # one mask for all the channels of a colour image
    in_place = (spread and not with_fill and np.can_cast(masks.dtype, out.dtype)
                and np.result_type(masks, image) == out.dtype)
    rows = max(1, BLOCK_BYTES // out[:1].nbytes)
    for start in range(0, len(masks), rows):
        block, into = masks[start:start + rows], out[start:start + rows]
        if in_place:
            for channel in range(image.shape[2]):
                into[..., channel] = block
            np.multiply(into, image, out=into)
            continue
        block = block[..., np.newaxis] if spread else block
        if with_fill:
            np.add(block * image, (UINT8_ONE - block) * fill, out=into, casting="unsafe")
        else:
            np.multiply(block, image, out=into, casting="unsafe")
    return out


def classify_array(classifier: ClassifyImage, images: np.ndarray) -> np.ndarray:
    """Confidences `[N, classes]` in `get_labels` order, as float64.

    Uses the classifier's array call when it has one (`SklearnImageClassifier.classify_array`):
    building a dictionary per perturbed image costs more than classifying it. float64 as in
    xaitk, which reads the confidences as Python floats and so scores in float64 even when the
    model answers in float32.
    """
    array_call = getattr(classifier, "classify_array", None)
    if array_call is not None:
        return np.asarray(array_call(images), dtype=np.float64)
    labels = classifier.get_labels()
    return np.asarray([[confidences[label] for label in labels]
                       for confidences in classifier.classify_images(images)], dtype=np.float64)


def aligned_chunk_size(chunk_size: int, classifier: ClassifyImage) -> int:
    """`chunk_size` in whole batches of the classifier (`batch_size`, if it has one), at least one.

    xaitk streams the perturbed images through `classify_images`, which classifies them in
    batches of `batch_size` from the first. Chunks of whole batches give every `predict_proba`
    call the same images in the same places, so the same confidences to the last bit: float32
    products round differently in batches of other shapes, and where an occlusion changes
    nothing (a blank image) that rounding is all a class's map is made of.
    """
    batch = getattr(classifier, "batch_size", None)
    if not batch:
        return chunk_size
    return max(1, chunk_size // batch) * batch


def scale_by_max_abs(rows: np.ndarray) -> np.ndarray:
    """Each row divided by its largest magnitude, clipped to [-1, 1]: how xaitk's scorers end.

    The same as sklearn's `maxabs_scale(rows, axis=1)` (a peak below 10 eps counts as 0 and
    divides by 1), whose input checks alone take about as long as a whole digits map here.
    """
    peak = np.abs(rows).max(axis=1, keepdims=True)
    peak[peak < 10 * np.finfo(peak.dtype).eps] = 1.0
    return np.clip(rows / peak, -1, 1)


@dataclass(frozen=True)
class RegionWeighting:
    """An xaitk scorer's call to `weight_regions_by_scalar`, done as a matrix product per chunk.

    RISEScoring weights `masks - p1` by the perturbed confidences. OcclusionScoring weights the
    occluded part, `1 - masks`, by the drop from the reference confidences and divides each
    pixel by how much it was occluded; both then scale each class's map to [-1, 1].
    SquaredDifferenceScoring weights the occluded part the same way by half the squared change
    of all the confidences, giving one map, then scales it to [0, 1] (min to max).
    """

    offset: float = 0.0
    invert: bool = False
    normalize: bool = False
    from_reference: bool = False
    squared: bool = False

    @classmethod
    def of(cls, scorer: GenerateClassifierConfidenceSaliency) -> RegionWeighting:
        if type(scorer) is RISEScoring:
            return cls(offset=scorer.p1)
        if type(scorer) is OcclusionScoring:
            return cls(invert=True, normalize=True, from_reference=True)
        if type(scorer) is SquaredDifferenceScoring:
            return cls(invert=True, normalize=True, from_reference=True, squared=True)
        raise ValueError(f"FastSaliency scores like RISEScoring, OcclusionScoring or "
                         f"SquaredDifferenceScoring, not {type(scorer).__name__}")

    def scalars(self, reference: np.ndarray | None, confidences: np.ndarray) -> np.ndarray:
        """What each perturbed image's mask is weighted by, `[n, maps]`."""
        if not self.from_reference:
            return confidences
        if self.squared:
            return 0.5 * ((reference - confidences) ** 2).sum(axis=1, keepdims=True)
        return reference - confidences

    def weight_type(self, scalars: np.ndarray, masks: np.ndarray) -> np.dtype:
        """Types as in xaitk: the masks, less the offset in their own type, upcast to the
        scalars' type."""
        return np.result_type(scalars, self._own_type(masks))

    def _own_type(self, masks: np.ndarray) -> np.dtype:
        return np.result_type(masks, self.offset) if self.offset else masks.dtype

    def _weights_into(self, masks: np.ndarray, weights: np.ndarray) -> None:
        if self.offset:
            np.subtract(masks, self.offset, out=weights, dtype=self._own_type(masks))
        else:
            np.copyto(weights, masks)
        if self.invert:
            np.subtract(UINT8_ONE, weights, out=weights)

    def weights(self, masks: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, Any]:
        """All the masks' weights `[n, H*W]` in `dtype` and, if normalizing, their coverage
        `[H*W]`: what `weigh` makes a block at a time, whole, to keep for images of a shape."""
        flat = masks.reshape(len(masks), -1)
        weights = np.empty(flat.shape, dtype)
        self._weights_into(flat, weights)
        return weights, (weights.sum(axis=0) if self.normalize else 0.0)

    def weigh(self, scalars: np.ndarray, masks: np.ndarray,
              whole: tuple[np.ndarray, Any] | None = None) -> tuple[np.ndarray, Any]:
        """The weighted sum `[maps, H*W]` and, if normalizing, the coverage `[H*W]`.

        With `whole` (from `weights`, in `weight_type`), one matrix product. Otherwise the weights are made a
        block at a time (`BLOCK_BYTES`), each multiplied while still in cache.
        """
        by_map = scalars.T
        if whole is not None:
            return by_map @ whole[0], whole[1]
        dtype = self.weight_type(scalars, masks)
        flat = masks.reshape(len(masks), -1)
        pixels = flat.shape[1]
        total = np.zeros((len(by_map), pixels), dtype)
        coverage = np.zeros(pixels, dtype) if self.normalize else 0.0
        columns = min(pixels, BLOCK_COLUMNS)
        rows = max(1, BLOCK_BYTES // (columns * dtype.itemsize))
        scratch = np.empty(min(rows, len(flat)) * columns, dtype)
        for row in range(0, len(flat), rows):
            for column in range(0, pixels, columns):
                part = flat[row:row + rows, column:column + columns]
                weights = scratch[:part.size].reshape(part.shape)
                self._weights_into(part, weights)
                total[:, column:column + columns] += by_map[:, row:row + rows] @ weights
                if self.normalize:
                    coverage[column:column + columns] += weights.sum(axis=0)
        return total, coverage

    def in_confidence_units(self, total: np.ndarray, coverage: Any, masks: np.ndarray
                            ) -> np.ndarray:
        """The sums over the masks before xaitk's scaling, `[maps, H*W]`, as a change of
        confidence. Occlusion: the class's mean confidence drop when the pixel is hidden
        (squared scoring: the mean of half the squared change of all confidences). Debiased
        RISE: the class's mean confidence with the pixel shown less that with it hidden (the sum
        of `(mask - p1) × confidence` over n masks is n·p1·(1 - p1) times that); RISE not
        debiased: the mean confidence with the pixel shown."""
        if self.normalize:
            return total / np.where(coverage == 0, 1.0, coverage)
        if self.offset:
            return total / (len(masks) * self.offset * (1 - self.offset))
        return total / max(float(masks.sum(dtype=np.float64)) / masks[0].size, 1e-12)

    def finish(self, total: np.ndarray, coverage: Any) -> np.ndarray:
        """The maps `[classes, H*W]` (`[1, H*W]` when squared) from the sums over all chunks."""
        if self.normalize:
            total = total / np.where(coverage == 0, 1.0, coverage)
        if self.squared:
            total = total - total.min()
            return total / total.max()
        return scale_by_max_abs(total)


class FastSaliency:
    """Saliency maps for many images with one xaitk perturber and scorer; see the module doc.

    Call it like an xaitk generator: `engine(image, classifier)` gives `[classes, H, W]`.
    """

    def __init__(self, perturber: PerturbImage, scorer: GenerateClassifierConfidenceSaliency,
                 fill: Any = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 mask_cache: MaskCache | None = None) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        self.perturber = perturber
        self.scorer = scorer
        self.weighting = RegionWeighting.of(scorer)
        self.fill = fill
        self.chunk_size = int(chunk_size)
        self.mask_cache = MaskCache() if mask_cache is None else mask_cache

    @classmethod
    def from_config(cls, config: dict[str, Any], chunk_size: int = DEFAULT_CHUNK_SIZE,
                    mask_cache: MaskCache | None = None) -> FastSaliency:
        """The engine for a stored `generator_config`: its perturber, scorer and fill."""
        generator = config["generator"]
        if generator.get("type") != PERTURBATION_OCCLUSION:
            raise ValueError(f"FastSaliency is built from a {PERTURBATION_OCCLUSION} "
                             f"configuration, not {generator.get('type')!r}")
        parts = generator[PERTURBATION_OCCLUSION]
        with quiet_plugin_discovery():
            perturber = from_config_dict(parts["perturber"], PerturbImage.get_impls())
            scorer = from_config_dict(parts["generator"],
                                      GenerateClassifierConfidenceSaliency.get_impls())
        return cls(perturber, scorer, fill=config.get("fill"), chunk_size=chunk_size,
                   mask_cache=mask_cache)

    def masks(self, image: np.ndarray) -> np.ndarray:
        """The perturbation masks `[n, H, W]` for this image, from the cache when they can be."""
        if depends_only_on_shape(self.perturber):
            return self.mask_cache.masks(self.perturber, image.shape)
        return self.perturber(image)

    def chunk_length(self, image: np.ndarray, classifier: ClassifyImage) -> int:
        """Perturbed images made and classified at once: `chunk_size`, or as many as fit in
        `CHUNK_BYTES`, in whole classifier batches (`aligned_chunk_size`)."""
        fitting = max(1, CHUNK_BYTES // max(1, image.nbytes))
        return aligned_chunk_size(min(self.chunk_size, fitting), classifier)

    def __call__(self, image: np.ndarray, classifier: ClassifyImage) -> np.ndarray:
        """One map per class, `[classes, H, W]`, values in [-1, 1] (one `[H, W]` map in [0, 1]
        with SquaredDifferenceScoring)."""
        return self.maps([image], classifier)[0]

    def maps(self, images: Sequence[np.ndarray], classifier: ClassifyImage) -> list[np.ndarray]:
        """The maps of several images, each as `engine(image, classifier)` gives it."""
        return [maps for maps, _ in self.maps_and_raw(images, classifier)]

    def maps_and_raw(self, images: Sequence[np.ndarray], classifier: ClassifyImage
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The maps of several images, each with the same map before xaitk's scaling, in the
        model's confidence units (`RegionWeighting.in_confidence_units`).

        Each image is occluded and classified as on its own; images of one shape that share
        their masks (`depends_only_on_shape`) are then scored together, as many at a time as
        keep their confidences within `SCALAR_BYTES`: one pass over the masks' weights serves
        them all, a matrix product with a row per image and class, which BLAS does faster per
        row than one image's few rows.
        """
        images = [np.asarray(image) for image in images]
        for image in images:
            if image.ndim not in (2, 3):
                raise ValueError(f"expected an image [H, W] or [H, W, C], got {image.ndim} "
                                 "dimensions")
        made: list = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        shared = depends_only_on_shape(self.perturber)
        with blas_threads(SMALL_BATCHES):
            for indices in by_shape.values():
                group: list[tuple[int, np.ndarray]] = []
                for index in indices:
                    masks, weights = self._scalars(images[index], classifier)
                    group.append((index, weights))
                    if (not shared or index == indices[-1]
                            or sum(w.nbytes for _, w in group) >= SCALAR_BYTES):
                        scored = self._score(images[index], masks, [w for _, w in group])
                        for (done, _), maps in zip(group, scored):
                            made[done] = maps
                        group = []
        return made

    def _scalars(self, image: np.ndarray, classifier: ClassifyImage
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The image's masks and what each is weighted by, `[n, maps]`: its perturbed images
        made and classified a chunk at a time."""
        masks = self.masks(image)
        occluding = masks
        if image.ndim == 3 and depends_only_on_shape(self.perturber):
            channels = image.shape[2]
            occluding = self.mask_cache.derived(
                self.perturber, image.shape, "channels", masks.nbytes * channels,
                lambda: np.repeat(masks[..., np.newaxis], channels, axis=-1))
            occluding = masks if occluding is None else occluding
        weighting = self.weighting
        step = self.chunk_length(image, classifier)
        perturbed = np.empty((min(step, len(masks)), *image.shape), dtype=image.dtype)
        reference = None
        if weighting.from_reference:
            reference = classify_array(classifier, image[np.newaxis])[0]
        starts = range(0, len(masks), step)
        # Occlusion (numpy) and the model (BLAS, onnxruntime) release the GIL: when chunks are
        # large, a second thread builds the next chunk into the other buffer while this one is
        # classified. The chunks are the same either way, so the batches and the maps are too.
        overlap = len(starts) > 1 and perturbed.nbytes >= OVERLAP_BYTES
        buffers = (perturbed, np.empty_like(perturbed) if overlap else perturbed)

        def made(index: int) -> np.ndarray:
            """The perturbed images of chunk `index`, in buffer `index % 2`."""
            chunk = occluding[starts[index]:starts[index] + step]
            return occlude(image, chunk, self.fill, out=buffers[index % 2][:len(chunk)])

        def scored(images: np.ndarray) -> np.ndarray:
            return weighting.scalars(reference, classify_array(classifier, images))

        if not overlap:
            return masks, np.concatenate([scored(made(index)) for index in range(len(starts))])
        parts = []
        with ThreadPoolExecutor(1, thread_name_prefix="occlude") as builder:
            pending = builder.submit(made, 0)
            for index in range(len(starts)):
                images = pending.result()
                if index + 1 < len(starts):  # its buffer's chunk, index - 1, is classified
                    pending = builder.submit(made, index + 1)
                parts.append(scored(images))
        return masks, np.concatenate(parts)

    def _score(self, image: np.ndarray, masks: np.ndarray, scalars: list[np.ndarray]
               ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The maps, and raw maps, of images of `image`'s shape and `masks` from their
        `_scalars`, in one pass."""
        weighting = self.weighting
        joined = np.concatenate(scalars, axis=1)
        whole = None
        if depends_only_on_shape(self.perturber):
            dtype = weighting.weight_type(joined, masks)
            whole = self.mask_cache.derived(
                self.perturber, image.shape[:2], (weighting, dtype.str),
                masks.size * dtype.itemsize, lambda: weighting.weights(masks, dtype))
        total, coverage = weighting.weigh(joined, masks, whole)
        maps, first = [], 0
        for own in scalars:
            rows = total[first:first + own.shape[1]]
            first += own.shape[1]
            pair = [part.reshape(-1, *image.shape[:2]) for part in (
                weighting.finish(rows, coverage),
                weighting.in_confidence_units(rows, coverage, masks))]
            # One map for the whole prediction with squared scoring.
            maps.append(tuple(part[0] for part in pair) if weighting.squared else tuple(pair))
        return maps


class McRiseRaw:
    """MC-RISE's maps before `MCRISEScoring`'s per-class scaling, in the model's confidence
    units: for each fill colour, the class's mean confidence with a region filled with that
    colour less its mean confidence with the region kept.

    `MCRISEScoring` sums `(k·filled·(1 - p1) - kept·p1) × confidence` over the n masks, which is
    n·p1·(1 - p1) times `k·filled/p1 - kept/(1 - p1)` weighted by the confidences and averaged:
    with a region filled in colour c in p1/k of the masks and kept in 1 - p1 of them, that is
    the change of confidence from keeping it to filling it. The masks are drawn again from the
    configuration's seed with xaitk's `MCRISEGrid`, the same masks the stack drew.
    """

    def __init__(self, n: int, s: int, p1: float, seed: int, colours: int) -> None:
        from xaitk_saliency.impls.perturb_image.mc_rise import MCRISEGrid

        self.p1, self.colours = float(p1), int(colours)
        self.grid = MCRISEGrid(n=n, s=s, p1=p1, k=colours, seed=seed, threads=0)

    @classmethod
    def of(cls, config: dict[str, Any]) -> McRiseRaw:
        """For an `MCRISEStack` configuration (`generator_config`'s inner dictionary)."""
        return cls(config["n"], config["s"], config["p1"], config["seed"],
                   len(config["fill_colors"]))

    def __call__(self, image: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
        """The raw maps `[colours, classes, H, W]` from the perturbed images' confidences
        `[n, classes]`, in the order the stack classified them."""
        masks = self.grid(image)  # [colours, n, H, W], 1 where the image is kept
        filled = (1 - masks).reshape(masks.shape[0], masks.shape[1], -1)
        kept = 1 - filled.sum(axis=0)
        by_class = perturbed.T / len(perturbed)
        raw = [by_class @ (self.colours * colour / self.p1 - kept / (1 - self.p1))
               for colour in filled]
        return np.asarray(raw).reshape(len(raw), len(by_class), *masks.shape[2:])


class XaitkGenerator:
    """xaitk's own generator, for configurations `FastSaliency` does not vectorise (e.g. MC-RISE,
    whose masks carry a fill colour each): the same maps, as xaitk makes them; the classifier
    still takes the perturbed images a batch at a time (`ImageClassifier`).

    A grey image `[H, W]` is given to xaitk as `[H, W, 1]` (MC-RISE adds its fill colours along a
    channel axis), and the classifier sees each perturbed image without that axis again. With
    `raw_scoring` (`McRiseRaw`), the confidences the generator asks for are kept, and each map
    comes with its raw map.
    """

    def __init__(self, generator, raw_scoring: McRiseRaw | None = None) -> None:
        self.generator = generator
        self.raw_scoring = raw_scoring

    def maps(self, images: Sequence[np.ndarray], classifier: ClassifyImage) -> list[np.ndarray]:
        """The maps of several images, one at a time."""
        return [maps for maps, _ in self.maps_and_raw(images, classifier)]

    def maps_and_raw(self, images: Sequence[np.ndarray], classifier: ClassifyImage
                     ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The maps, each with its raw map where `raw_scoring` makes one (else None)."""
        return [self._map_and_raw(np.asarray(image), classifier) for image in images]

    def __call__(self, image: np.ndarray, classifier: ClassifyImage) -> np.ndarray:
        return self._map_and_raw(np.asarray(image), classifier)[0]

    def _map_and_raw(self, image: np.ndarray, classifier: ClassifyImage
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        grey = image.ndim == 2
        seen = _Seen(classifier, without_channel=grey)
        with blas_threads(SMALL_BATCHES):
            maps = np.asarray(self.generator(image[..., np.newaxis] if grey else image, seen))
        if self.raw_scoring is None:
            return maps, None
        # The stack asks for the reference image's confidences first, then the perturbed ones.
        return maps, self.raw_scoring(image, np.asarray(seen.confidences[1:], np.float64))


class _Seen(ClassifyImage):
    """A classifier as the generator sees it: the confidences it gave kept, in order, and for
    grey images `[H, W]` fed `[H, W, 1]`, each image given without that axis."""

    def __init__(self, inner: ClassifyImage, without_channel: bool) -> None:
        self._inner = inner
        self._without_channel = without_channel
        self.confidences: list[list[float]] = []

    def get_labels(self):
        return self._inner.get_labels()

    def classify_images(self, img_iter):
        if self._without_channel:
            img_iter = (image[..., 0] for image in img_iter)
        labels = self._inner.get_labels()
        for confidences in self._inner.classify_images(img_iter):
            self.confidences.append([confidences[label] for label in labels])
            yield confidences

    def get_config(self) -> dict[str, Any]:
        return self._inner.get_config()


def engine_from_config(config: dict[str, Any], chunk_size: int = DEFAULT_CHUNK_SIZE,
                       mask_cache: MaskCache | None = None):
    """The fastest engine that gives xaitk's maps for a stored `generator_config`: `FastSaliency`
    for a perturber-and-scorer composition it scores, xaitk's generator itself otherwise."""
    from steps.core.xaitk_generators import generator_from_config

    generator = config["generator"]
    if generator.get("type") == PERTURBATION_OCCLUSION:
        parts = generator[PERTURBATION_OCCLUSION]
        if parts["generator"].get("type") in VECTORISED_SCORERS:
            return FastSaliency.from_config(config, chunk_size, mask_cache)
    raw_scoring = (McRiseRaw.of(generator[MC_RISE_STACK])
                   if generator.get("type") == MC_RISE_STACK else None)
    return XaitkGenerator(generator_from_config(config), raw_scoring)
