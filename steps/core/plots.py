"""Pictures: the confusion matrix and saliency maps over their image.

Each function returns a matplotlib Figure (`class_overlay_figures` yields one, redrawn); the
steps save or log it and close it. Nothing here knows about MLflow.

Saliency pictures follow SHAP's `image_plot` and Captum's blended heat map: the image in grey
(a colour image's luma), faded toward white, under a colormap that is transparent at zero and
never quite opaque, so that the image shows under every map; red where a map is positive and
blue where it is negative, more opaque the larger the value, on a symmetric scale, or, when
all the values of a picture share a sign, on a sequential one from 0 (light to dark red, or
blue). The class panels of a figure share one scale (or, on request, each has its own), are
titled with the class and the model's confidence, ordered by confidence, and the true and
predicted classes are marked; a colour bar says what the colours mean and which scale it is.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import contourpy  # matplotlib's own contouring, for outlines made once for many panels
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from steps.core.road import FRACTIONS as ROAD_FRACTIONS  # noqa: E402

#: SHAP's colours (`shap.plots.colors`): red for positive values, blue for negative ones.
POSITIVE_RGB = (1.0, 13 / 255, 87 / 255)
NEGATIVE_RGB = (30 / 255, 136 / 255, 229 / 255)
#: A map's opacity at the top of its scale. Below 1, so that the image shows through the
#: strongest colours too (as through Captum's blended heat map, at 0.5).
MAP_OPACITY = 0.7
#: Maps of both signs: blue, transparent at zero, red; the opacity grows with |value| (SHAP's
#: `red_transparent_blue`). An odd number of colours puts zero on a colour of its own.
RED_TRANSPARENT_BLUE = LinearSegmentedColormap("red_transparent_blue", {
    "red": [(0, NEGATIVE_RGB[0], NEGATIVE_RGB[0]), (0.5, NEGATIVE_RGB[0], POSITIVE_RGB[0]),
            (1, POSITIVE_RGB[0], POSITIVE_RGB[0])],
    "green": [(0, NEGATIVE_RGB[1], NEGATIVE_RGB[1]), (0.5, NEGATIVE_RGB[1], POSITIVE_RGB[1]),
              (1, POSITIVE_RGB[1], POSITIVE_RGB[1])],
    "blue": [(0, NEGATIVE_RGB[2], NEGATIVE_RGB[2]), (0.5, NEGATIVE_RGB[2], POSITIVE_RGB[2]),
             (1, POSITIVE_RGB[2], POSITIVE_RGB[2])],
    "alpha": [(0, MAP_OPACITY, MAP_OPACITY), (0.5, 0, 0), (1, MAP_OPACITY, MAP_OPACITY)],
}, N=255)


def _from_clear(name: str, sequential: str, reverse: bool = False) -> ListedColormap:
    """matplotlib's `sequential` colormap from its light end (transparent, at 0) to its dark
    one (`MAP_OPACITY`): lightness as well as opacity tell the values of a one-signed map
    apart. `reverse`: dark at the low end, for maps whose values are all negative."""
    colours = matplotlib.colormaps[sequential](np.linspace(0.15, 0.85, 255))
    colours[:, 3] = np.linspace(0, MAP_OPACITY, 255)
    return ListedColormap(colours[::-1] if reverse else colours, name)


#: Maps whose values are all positive (all ≥ 0): transparent at 0, to dark red at the top.
TRANSPARENT_REDS = _from_clear("transparent_reds", "Reds")
#: Maps whose values are all negative: dark blue at the bottom, to transparent at 0.
TRANSPARENT_BLUES = _from_clear("transparent_blues", "Blues", reverse=True)

#: A picture's colour scale, by the signs of its maps' values: `diverging` (both signs, or
#: none), symmetric about 0; `positive` or `negative`, sequential from 0 to the data.
SIGNS = ("diverging", "positive", "negative")
COLORMAPS = dict(zip(SIGNS, (RED_TRANSPARENT_BLUE, TRANSPARENT_REDS, TRANSPARENT_BLUES)))
#: What the colour bar adds about a sequential scale.
SIGN_NOTES = {"positive": "\n(every value ≥ 0: a scale from 0, clear, up to dark red)",
              "negative": "\n(every value ≤ 0: a scale from 0, clear, down to dark blue)"}


def sign_of(maps) -> str:
    """The colour scale (`SIGNS`) of a picture of `maps` (arrays, or one array): `positive`
    when no value is below 0 and some are above, `negative` the other way round, else
    `diverging`. Decided for all of a picture's maps at once, so that they share it."""
    values = [np.asarray(m, dtype=float) for m in maps]
    values = [v for v in values if v.size and not np.isnan(v).all()]
    low = min((float(np.nanmin(v)) for v in values), default=0.0)
    high = max((float(np.nanmax(v)) for v in values), default=0.0)
    return "positive" if low >= 0 < high else "negative" if high <= 0 > low else "diverging"


def scale_limits(top: float, sign: str) -> tuple[float, float]:
    """The values a scale of `top` (its largest |value|) runs between, for `sign`."""
    return {"diverging": (-top, top), "positive": (0.0, top), "negative": (-top, 0.0)}[sign]


@dataclass(frozen=True)
class MapMeaning:
    """What a map's values mean: the colour bar's label saying so."""

    label: str


#: RISE, random grid, sliding window and radial with OcclusionScoring.
SHOWING = MapMeaning("map value: how much showing a region raises (red)\n"
                     "or lowers (blue) the class's confidence")
#: MC-RISE, a map per fill colour.
FILLING = MapMeaning("map value: how much filling a region with this colour\n"
                     "raises (red) or lowers (blue) the class's confidence")
#: SquaredDifferenceScoring: one non-negative map of the whole prediction.
OCCLUDING = MapMeaning("map value: how much occluding a region\n"
                       "changes the model's prediction")
#: Maps before xaitk's per-class scaling (`saliency_map_raw.npy`), in the model's confidence
#: units: occlusion scoring and debiased RISE; RISE not debiased; squared-difference scoring;
#: MC-RISE, a map per fill colour.
SHOWING_IN_CONFIDENCE = MapMeaning("confidence change when a region is shown:\n"
                                   "red raises the class's confidence, blue lowers it")
SHOWN_IN_CONFIDENCE = MapMeaning("the class's mean confidence\nwhen a region is shown")
FILLING_IN_CONFIDENCE = MapMeaning("confidence change when a region is filled with\n"
                                   "this colour: red raises the class's confidence")
#: MC-RISE's maps averaged over the fill colours (`metrics.class_map`), scaled or raw.
FILLING_MEAN = MapMeaning("map value: mean over the fill colours of how much filling\n"
                          "a region raises (red) or lowers (blue) the class's confidence")
FILLING_MEAN_IN_CONFIDENCE = MapMeaning("confidence change when a region is filled, mean\n"
                                        "over the fill colours: red raises the class's "
                                        "confidence")
OCCLUDING_IN_CONFIDENCE = MapMeaning("half the squared change of the confidences\n"
                                     "when a region is hidden")
#: Maps of different algorithms side by side.
COMPARED = MapMeaning("map value: red positive, blue negative\n"
                      "(what it means depends on the algorithm: see the README)")


def meaning_of(maps: np.ndarray) -> MapMeaning:
    """What a map's values mean, by its shape: `[H, W]`, SquaredDifferenceScoring's whole
    prediction; `[colours, classes, H, W]`, MC-RISE's fill colours; else a map per class."""
    return {2: OCCLUDING, 4: FILLING}.get(np.ndim(maps), SHOWING)


#: Names of the fill colours people use most, by their value (grey, or R,G,B).
COLOUR_NAMES = {(0.0,): "black", (1.0,): "white", (0.5,): "grey", (1.0, 0.0, 0.0): "red",
                (0.0, 1.0, 0.0): "green", (0.0, 0.0, 1.0): "blue", (1.0, 1.0, 0.0): "yellow",
                (0.0, 1.0, 1.0): "cyan", (1.0, 0.0, 1.0): "magenta"}


def fill_colour_name(value) -> str:
    """A fill colour (a grey value, or one per channel, in [0, 1]) as a picture's title says
    it: its name when it has a common one, and its value: `black (0)`, `red (1,0,0)`,
    `(0.2,0.4,0.6)`. A colour whose channels are equal is the grey of that value."""
    channels = tuple(float(c) for c in np.atleast_1d(np.asarray(value, dtype=float)))
    text = ",".join(f"{c:g}" for c in channels)
    grey = channels[:1] if len(set(channels)) == 1 else channels
    name = COLOUR_NAMES.get(tuple(round(c, 3) for c in grey))
    return f"{name} ({text})" if name else f"({text})"


RELATIVE_NOTE = "\n(each panel on its own scale, given in its title)"

#: How much of the image's contrast shows under a map (the rest fades to white): enough to
#: make the object out under the map's colours, faint enough to leave them readable.
IMAGE_STRENGTH = 0.55
#: A colour image's grey under its maps: its luma, ITU-R BT.601 weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114])
#: Images up to this many pixels high and wide are also outlined over their maps (at half
#: their grey range): their few coarse pixels are hard to make out under a map.
OUTLINE_MAX_SIDE = 64
TRUE_COLOUR = "#1a9641"  # the true class's frame
WRONG_COLOUR = "#d7191c"  # the predicted class's frame, when it is not the true class
#: Class panels of a picture when `top_classes` is 0.
MAX_PANELS = 10
SCALES = ("shared", "per_class")

# Layout, in inches: figures are laid out by hand, not by `tight_layout`, whose measuring of
# every text took longer than drawing the picture.
PANEL_IN = 1.7
GAP_IN = 0.15
SIDE_IN = 0.25
TITLE_LINE_IN = 0.17
HEAD_LINE_IN = 0.22
HEAD_FONT = 10
#: A figure title's mean character width in ems (DejaVu Sans, matplotlib's default font, is
#: about 0.55 on words; a little more, so that a line never reaches the figure's edges).
HEAD_CHAR_EM = 0.6
BAR_IN = 0.13
BAR_LABEL_LINE_IN = 0.16
DPI = 100
#: PNG settings of `save_png`: zlib level 1 encodes these mostly white pictures faster than the
#: default level 6, into slightly larger files (figures: benchmarks/README.md, "Pictures").
PNG_OPTIONS = {"pil_kwargs": {"compress_level": 1}}


@dataclass(frozen=True)
class PictureStyle:
    """How saliency pictures are made: which files (`mode`: `both`, `combined`, `per_class`),
    how many class panels (`top_classes`: the most confident K, the true class added when
    it is not among them; 0: all, up to `MAX_PANELS`), and the colour scale of the class
    panels (`scale`: `shared`, one scale for all; `per_class`, each its own)."""

    mode: str = "both"
    top_classes: int = 0
    scale: str = "shared"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"picture scale {self.scale!r} is not one of {', '.join(SCALES)}")
        if self.top_classes < 0:
            raise ValueError(f"top_classes must be 0 or more, not {self.top_classes}")


@dataclass(frozen=True)
class Answer:
    """What the model made of the image, to title, order and mark the class panels: each
    output column's confidence (None: none, as for a mean of maps), and the columns of the
    predicted and of the true class (None: unknown, or no column of the model)."""

    confidences: np.ndarray | None = None
    predicted: int | None = None
    true: int | None = None


def shown_columns(count: int, answer: Answer = Answer(), top_classes: int = 0) -> list[int]:
    """The columns (of `count`) a picture shows, in order: by confidence, highest first (by
    column without confidences); the first `top_classes` (0: all, up to `MAX_PANELS`), and
    the predicted then the true class after them when they are not among them."""
    if answer.confidences is None:
        order = list(range(count))
    else:
        order = [int(c) for c in np.argsort(-np.asarray(answer.confidences, dtype=float),
                                             kind="stable")]
    shown = order[:top_classes or MAX_PANELS]
    for marked in (answer.predicted, answer.true):
        if marked is not None and 0 <= marked < count and marked not in shown:
            shown.append(marked)
    return shown


def color_scales(maps, scale: str = "shared") -> list[float]:
    """The top of each map's colour scale (its panel shows `scale_limits(top, sign)`): the
    largest |value| over all the maps (`shared`), or over each map alone (`per_class`); 1
    where that is 0."""
    tops = [float(np.nanmax(np.abs(m))) if np.size(m) else 0.0 for m in maps]
    if scale == "shared":
        tops = [max(tops, default=0.0)] * len(tops)
    elif scale not in SCALES:
        raise ValueError(f"picture scale {scale!r} is not one of {', '.join(SCALES)}")
    return [top if top > 0 and np.isfinite(top) else 1.0 for top in tops]


def confidence_text(value: float) -> str:
    """A confidence as a panel title shows it: two decimals, `<0.01` for the smallest."""
    return "<0.01" if 0 < value < 0.005 else f"{value:.2f}"


def panel_title(name: str, column: int, answer: Answer = Answer(),
                limits: tuple[float, float] | None = None) -> tuple[str, str | None]:
    """A class panel's title: the class and its confidence, then its marks (`true`,
    `predicted`) and, given its own scale's `limits`, those (`±top` when symmetric); and its
    frame's colour (None: no frame)."""
    first = str(name)
    if answer.confidences is not None:
        first += f"  {confidence_text(float(answer.confidences[column]))}"
    marks = [mark for mark, at in (("true", answer.true), ("predicted", answer.predicted))
             if at == column]
    second = [f"({', '.join(marks)})"] if marks else []
    if limits is not None:
        low, high = limits
        second.append(f"±{high:.2g}" if low == -high else
                      f"{low:.2g} to {high:.2g}".replace("-", "−"))
    frame = (TRUE_COLOUR if column == answer.true else
             WRONG_COLOUR if column == answer.predicted and answer.true is not None else None)
    return "\n".join([first, " ".join(second)]) if second else first, frame


def _pixels(image: np.ndarray) -> np.ndarray:
    """The image in [0, 1], `[H, W]` grey or `[H, W, 3]` colour."""
    pixels = np.clip(np.asarray(image, dtype=float), 0, 1)
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels


def _luminance(image: np.ndarray) -> np.ndarray:
    """The image in grey, `[H, W]`, stretched to span [0, 1]: a colour image's luma (ITU-R
    BT.601), as Captum's blended heat map draws it in grey under the map. Stretched, so that
    a dark or faintly tinted image (a digit tinted dark green) keeps its full contrast."""
    pixels = _pixels(image)
    grey = pixels[..., :3] @ LUMA if pixels.ndim == 3 else pixels
    low, high = float(grey.min(initial=0.0)), float(grey.max(initial=0.0))
    return (grey - low) / (high - low) if high > low else grey


def _layers(image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """What every panel shows of the image, made once for all the panels: the image in grey
    (`_luminance`) faded toward white, as RGB, and the lines outlining a small image at half
    its grey range (none for larger ones). Grey, so that the map's colours are the only ones
    on a panel; the image's own colours are in its panel beside."""
    grey = _luminance(image)
    lines = []
    if max(grey.shape) <= OUTLINE_MAX_SIDE and np.ptp(grey) > 0:
        lines = contourpy.contour_generator(z=grey, line_type="Separate").lines(0.5)
    faded = 1 - IMAGE_STRENGTH * (1 - grey)
    return np.repeat(faded[..., np.newaxis], 3, axis=2), lines


def _title(ax, text: str) -> None:
    # A given `y` fixes the title's place: matplotlib otherwise measures the axes' every
    # child at each draw to lift it over them.
    ax.set_title(text, fontsize=9, y=1.0, pad=3)


class _Overlay:
    """One panel: the image faded, a map over it on a scale of `sign` (`SIGNS`), for small
    images their outline over that, and a frame (hidden) around it; each settable again."""

    def __init__(self, ax, shape: tuple[int, ...], sign: str):
        self.ax = ax
        self.background = ax.imshow(np.ones((*shape[:2], 3)))
        self.shown = ax.imshow(np.zeros(shape[:2]), norm=Normalize(-1.0, 1.0))
        self.frame = ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,
                                            linewidth=3.5, clip_on=False, visible=False))
        self.outline = ax.add_collection(LineCollection([], colors="#222222", linewidths=0.9),
                                         autolim=False)
        self.set_sign(sign)
        _title(ax, "")

    def set_sign(self, sign: str) -> None:
        self.sign = sign
        self.shown.set_cmap(COLORMAPS[sign])

    def set_image(self, layers: tuple[np.ndarray, list[np.ndarray]]) -> None:
        """The image, as `_layers` of it."""
        background, lines = layers
        self.background.set_data(background)
        self.outline.set_segments(lines)

    def set_map(self, saliency: np.ndarray, top: float, title: str,
                frame: str | None = None) -> None:
        self.shown.set_data(saliency)
        self.shown.set_clim(*scale_limits(top, self.sign))
        self.ax.title.set_text(title)
        self.frame.set_visible(frame is not None)
        if frame is not None:
            self.frame.set_edgecolor(frame)

    def changing(self) -> list:
        """The artists that change from class to class, in drawing order."""
        return [self.shown, self.frame, self.outline, self.ax.title]


def _width(cols: int) -> float:
    """A figure's width, in inches, of `cols` panels."""
    return 2 * SIDE_IN + cols * PANEL_IN + (cols - 1) * GAP_IN


def _grid(rows: int, cols: int, title_lines: int, head_lines: int, bar_lines: int,
          pyplot: bool = True):
    """A figure of `rows` x `cols` square panels (axes off), room for `title_lines` of title
    above each and `head_lines` of figure title, and a horizontal colour bar under them with
    `bar_lines` of label. Returns the figure, the panels' axes `[rows, cols]`, the bar's.
    Without `pyplot`, the figure is pyplot's to know nothing of (no `plt.close`)."""
    title_in = title_lines * TITLE_LINE_IN + 0.08
    head_in = head_lines * HEAD_LINE_IN + 0.12
    foot_in = 0.12 + BAR_IN + 0.22 + bar_lines * BAR_LABEL_LINE_IN + 0.08
    width = _width(cols)
    height = head_in + rows * (title_in + PANEL_IN) + (rows - 1) * GAP_IN + foot_in
    if pyplot:
        fig = plt.figure(figsize=(width, height), dpi=DPI)
    else:
        fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(fig)
    axes = np.empty((rows, cols), dtype=object)
    for row in range(rows):
        for col in range(cols):
            left = SIDE_IN + col * (PANEL_IN + GAP_IN)
            bottom = height - (head_in + row * (title_in + PANEL_IN + GAP_IN) + title_in
                               + PANEL_IN)
            ax = fig.add_axes((left / width, bottom / height, PANEL_IN / width,
                               PANEL_IN / height))
            ax.set_axis_off()
            axes[row, col] = ax
    bar_width = min(3.6, width - 2 * SIDE_IN)
    bar = fig.add_axes(((width - bar_width) / 2 / width, (foot_in - 0.12 - BAR_IN) / height,
                        bar_width / width, BAR_IN / height))
    return fig, axes, bar


def wrapped_title(text: str, cols: int) -> str:
    """A figure title broken into lines that fit a figure of `cols` panels (as `_head` draws
    it): each line's characters at most the width over an average character's."""
    chars = max(20, int((_width(cols) - 2 * SIDE_IN) * 72 / (HEAD_CHAR_EM * HEAD_FONT)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) or line
                     for line in text.split("\n"))


def _lines(text: str) -> int:
    return text.count("\n") + 1


def _head(fig: Figure, text: str) -> None:
    """The figure's title (`wrapped_title` already), at its top edge (`_grid` leaves it
    room)."""
    fig.suptitle(text, y=1 - 0.1 / fig.get_figheight(), va="top", fontsize=HEAD_FONT)


def _bar_label(meaning: MapMeaning, sign: str, relative: bool = False) -> str:
    """The colour bar's label: what the values mean, and which scale they are on."""
    return meaning.label + SIGN_NOTES.get(sign, "") + (RELATIVE_NOTE if relative else "")


def _bar_scale(ax, sign: str) -> AxesImage:
    """What a colour bar of no one panel shows: the colormap of `sign` on [-1, 1] or its half.
    An image never drawn: matplotlib's bar draws a `ScalarMappable` opaque once its limits
    change (its alpha then reads 1), and an artist's colormap with its own transparency."""
    return AxesImage(ax, cmap=COLORMAPS[sign], norm=Normalize(*scale_limits(1.0, sign)))


def _colour_bar(fig, bar_axes, mappable, label: str):
    bar = fig.colorbar(mappable, cax=bar_axes, orientation="horizontal")
    bar.set_label(label, fontsize=8)
    bar_axes.tick_params(labelsize=8, length=3, pad=2)
    return bar


def _scale_ticks(bar, top: float, sign: str, relative: bool = False) -> None:
    """The bar's ticks: its ends and 0, and the middle of a sequential scale; of a `relative`
    bar (panels on their own scales, the bar on [-1, 1] or a half of it), named, not valued."""
    low, high = scale_limits(1.0 if relative else top, sign)
    ticks = sorted({low, (low + high) / 2, high})
    if relative:
        names = {-1.0: "−top", -0.5: "−top/2", 0.0: "0", 0.5: "+top/2", 1.0: "+top"}
        bar.set_ticks(ticks, labels=[names[t] for t in ticks])
    else:
        bar.set_ticks(ticks, labels=[f"{t:.2g}".replace("-", "−") for t in ticks])


def _encode(fig: Figure, target) -> None:
    """The figure's canvas as drawn, written as PNG (`save_png`'s settings)."""
    buffer = fig.canvas.buffer_rgba()
    PIL.Image.frombuffer("RGBA", (buffer.shape[1], buffer.shape[0]), buffer, "raw", "RGBA", 0,
                         1).save(target, format="png", **PNG_OPTIONS["pil_kwargs"])


class _ClassOverlay:
    """The per-class picture: the image beside the image under one class's map, a colour bar
    under them. One figure, set to an image (`set_image`) and then to each of its classes in
    turn (`show`); `write` draws only what changes from class to class over the rest, drawn
    once for each scale (blitting), and writes the PNG. Each class's picture has the scale
    its own map's signs call for (`sign_of`): the bar's room fits the longest label."""

    COLS = 2

    def __init__(self, shape: tuple[int, ...], head_lines: int, meaning: MapMeaning,
                 pyplot: bool = True):
        lines = max(_lines(_bar_label(meaning, sign)) for sign in SIGNS)
        self.fig, axes, bar_axes = _grid(1, self.COLS, 2, head_lines, lines, pyplot)
        left, right = axes[0]
        self.image = left.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1)
        _title(left, "image")
        self.panel = _Overlay(right, shape, "diverging")
        # A bar for each sign, in one place, the one of the class's scale shown: building a
        # bar again (as setting its colormap does) took longer than drawing the picture.
        self.bars = {}
        for sign in SIGNS:
            ax = self.fig.add_axes(bar_axes.get_position()) if self.bars else bar_axes
            self.bars[sign] = _colour_bar(self.fig, ax, _bar_scale(ax, sign),
                                          _bar_label(meaning, sign))
        self.scale, self.bar_scale, self.bar_tops = None, None, {}
        #: The picture but what changes from class to class, drawn, by scale `(top, sign)`:
        #: classes whose maps' signs differ take turns, each scale is drawn once an image.
        self.rests: dict[tuple[float, str], object] = {}

    def set_image(self, image: np.ndarray, title: str) -> None:
        """The image, and the figure's title (`wrapped_title` for `COLS` already)."""
        self.image.set_data(_pixels(image))
        self.panel.set_image(_layers(image))
        _head(self.fig, title)
        self.rests = {}

    def show(self, saliency: np.ndarray, title: str, top: float,
             frame: str | None, bar: bool = True) -> Figure:
        """The class's picture; without `bar`, its colour bar is left as it is."""
        self.scale = (top, sign_of([saliency]))
        if self.scale[1] != self.panel.sign:
            self.panel.set_sign(self.scale[1])
        self.panel.set_map(saliency, top, title, frame)
        if bar:
            self._set_bar()
        return self.fig

    def _set_bar(self) -> None:
        if self.scale == self.bar_scale:
            return
        top, sign = self.bar_scale = self.scale
        for shown, bar in self.bars.items():
            bar.ax.set_visible(shown == sign)
        if self.bar_tops.get(sign) != top:
            self.bars[sign].mappable.set_clim(*scale_limits(top, sign))
            _scale_ticks(self.bars[sign], top, sign)
            self.bar_tops[sign] = top

    def write(self, target, saliency: np.ndarray, title: str, top: float,
              frame: str | None) -> None:
        """`show`, then the picture as PNG: the same pixels as `save_png` of the figure."""
        self.show(saliency, title, top, frame, bar=False)
        canvas, changing = self.fig.canvas, self.panel.changing()
        if self.scale not in self.rests:  # a new image or scale: draw the rest
            self._set_bar()
            for artist in changing:
                artist.set_visible(False)
            canvas.draw()
            self.rests[self.scale] = canvas.copy_from_bbox(self.fig.bbox)
            for artist in changing:
                artist.set_visible(artist is not self.panel.frame or frame is not None)
        canvas.restore_region(self.rests[self.scale])
        for artist in changing:
            self.fig.draw_artist(artist)
        _encode(self.fig, target)


def _class_picture(image, title: str, meaning: MapMeaning) -> _ClassOverlay:
    """A per-class picture (pyplot's) of the image, titled."""
    title = wrapped_title(title, _ClassOverlay.COLS)
    picture = _ClassOverlay(np.shape(_pixels(image)), _lines(title), meaning)
    picture.set_image(image, title)
    return picture


def class_overlay_figures(image: np.ndarray, maps: np.ndarray, class_names, title: str,
                          answer: Answer = Answer(), style: PictureStyle = PictureStyle(),
                          meaning: MapMeaning = SHOWING) -> Iterator[tuple[int, Figure]]:
    """A picture per shown class (`shown_columns`), as `(column, figure)`: the image beside
    the image under that class's map, titled with the class, its confidence and marks, a
    labelled colour bar under them; one scale for all the classes (`style.scale` `shared`)
    or each its own; diverging, or sequential from 0 for a map whose values share a sign.
    One figure, redrawn from class to class: only the map, its scale and the title change.
    Save each before taking the next. The figure is closed at the end."""
    picture = _class_picture(image, title, meaning)
    try:
        for column, text, top, frame in _class_panels(maps, class_names, answer, style):
            yield column, picture.show(maps[column], text, top, frame)
    finally:
        plt.close(picture.fig)


def _class_panels(maps, class_names, answer: Answer, style: PictureStyle,
                  sign: str | None = None):
    """`(column, title, top, frame)` of each shown class, in order; given the `sign` of a
    picture whose panels have their own scales, each title gives its panel's scale."""
    columns = shown_columns(len(maps), answer, style.top_classes)
    tops = color_scales([maps[c] for c in columns], style.scale)
    for column, top in zip(columns, tops):
        text, frame = panel_title(class_names[column], column, answer,
                                  None if sign is None else scale_limits(top, sign))
        yield column, text, top, frame


class _ClassGrid:
    """The picture of all shown classes: the image, then each class's map over it, in a
    grid, on a scale of `sign` (decided for all the panels at once), and a colour bar; one
    figure, set again for each image by `paint`."""

    def __init__(self, shape: tuple[int, ...], head_lines: int, meaning: MapMeaning,
                 classes: int, relative: bool, sign: str, pyplot: bool = True):
        panels = classes + 1
        label = _bar_label(meaning, sign, relative)
        self.fig, axes, bar_axes = _grid(int(np.ceil(panels / self.cols(classes))),
                                         self.cols(classes), 2, head_lines, _lines(label),
                                         pyplot)
        flat = axes.ravel()
        self.image = flat[0].imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1)
        _title(flat[0], "image")
        self.panels = [_Overlay(ax, shape, sign) for ax in flat[1:panels]]
        self.sign, self.relative = sign, relative
        mappable = _bar_scale(bar_axes, sign) if relative else self.panels[0].shown
        self.bar = _colour_bar(self.fig, bar_axes, mappable, label)
        if relative:
            _scale_ticks(self.bar, 1.0, sign, relative=True)

    @staticmethod
    def cols(classes: int) -> int:
        return min(classes + 1, 6)

    def paint(self, image, maps, class_names, title: str, answer: Answer,
              style: PictureStyle) -> Figure:
        """The picture of the image's maps; `title` already `wrapped_title`."""
        self.image.set_data(_pixels(image))
        panels = list(_class_panels(maps, class_names, answer, style,
                                    self.sign if self.relative else None))
        layers = _layers(image)
        for panel, (column, text, top, frame) in zip(self.panels, panels, strict=True):
            panel.set_image(layers)
            panel.set_map(maps[column], top, text, frame)
        if not self.relative:
            _scale_ticks(self.bar, panels[0][2], self.sign)
        _head(self.fig, title)
        return self.fig


def _grid_layout(maps, answer: Answer, style: PictureStyle, title: str) -> tuple:
    """What a `_ClassGrid` of these maps is made for, but the image's shape and the meaning:
    `(classes, relative, sign)`, and the title wrapped to it."""
    columns = shown_columns(len(maps), answer, style.top_classes)
    relative = style.scale == "per_class" and len(columns) > 1
    return ((len(columns), relative, sign_of([maps[c] for c in columns])),
            wrapped_title(title, _ClassGrid.cols(len(columns))))


def class_overlay_figure(image: np.ndarray, maps: np.ndarray, class_names, title: str,
                         column: int, answer: Answer = Answer(),
                         style: PictureStyle = PictureStyle(),
                         meaning: MapMeaning = SHOWING) -> Figure:
    """`class_overlay_figures`' picture of one column, as a figure of its own."""
    picture = _class_picture(image, title, meaning)
    for shown, text, top, frame in _class_panels(maps, class_names, answer, style):
        if shown == column:
            return picture.show(maps[column], text, top, frame)
    plt.close(picture.fig)
    raise ValueError(f"column {column} is not among the classes shown")


def all_classes_figure(image: np.ndarray, maps: np.ndarray, class_names, suptitle: str,
                       answer: Answer = Answer(), style: PictureStyle = PictureStyle(),
                       meaning: MapMeaning = SHOWING) -> Figure:
    """The image, then its map of each shown class (`shown_columns`: by confidence, the
    true class kept) over it, titled with the class, its confidence and marks (and framed:
    green, the true class; red, the predicted one when it is wrong), in one grid on one
    scale (`style.scale` `shared`) or each on its own, with a labelled colour bar. The
    scale is symmetric, or sequential from 0 when all the panels' values share a sign."""
    (classes, relative, sign), title = _grid_layout(maps, answer, style, suptitle)
    grid = _ClassGrid(np.shape(_pixels(image)), _lines(title), meaning, classes, relative,
                      sign)
    return grid.paint(image, maps, class_names, title, answer, style)


def comparison_figure(image: np.ndarray, rows: dict[str, dict[str, np.ndarray]],
                      suptitle: str, meaning: MapMeaning | None = None) -> Figure:
    """One row per class (`rows`: row title -> label -> `[H, W]` map): the image, then each
    configuration's map of that class over it, side by side on one scale for the whole
    figure, with a colour bar labelled by `meaning` (None: `SHOWING`, or `OCCLUDING` when no
    map has a negative value)."""
    return rows_figure([(image, title, maps) for title, maps in rows.items()], suptitle,
                       meaning)


def rows_figure(rows: list[tuple[np.ndarray, str, dict[str, np.ndarray]]], suptitle: str,
                meaning: MapMeaning | None = None) -> Figure:
    """One row per (image, row title, label -> `[H, W]` map): the image, then each map over
    it, on one scale for the whole figure (as `comparison_figure`: symmetric, or sequential
    from 0 when all the maps' values share a sign); the images of all rows have one shape.
    The title is wrapped to the figure's width."""
    maps = [m for _, _, row in rows for m in row.values()]
    if meaning is None:
        meaning = SHOWING if any(np.nanmin(m) < 0 for m in maps) else OCCLUDING
    sign = sign_of(maps)
    (top, *_) = color_scales(maps, "shared")
    columns = 1 + max(len(row) for _, _, row in rows)
    lines = max([2] + [_lines(label) for _, _, row in rows for label in row])
    title, label = wrapped_title(suptitle, columns), _bar_label(meaning, sign)
    fig, axes, bar_axes = _grid(len(rows), columns, lines, _lines(title), _lines(label))
    panel = None
    for row_axes, (image, row_title, row) in zip(axes, rows):
        shape, layers = np.shape(_pixels(image)), _layers(image)
        row_axes[0].imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
        _title(row_axes[0], f"image\n{row_title}")
        for ax, (text, saliency) in zip(row_axes[1:], row.items()):
            panel = _Overlay(ax, shape, sign)
            panel.set_image(layers)
            panel.set_map(saliency, top, text)
    _scale_ticks(_colour_bar(fig, bar_axes, panel.shown, label), top, sign)
    _head(fig, title)
    return fig


def save_png(fig: Figure, target) -> None:
    """Write the figure as PNG (a path or a binary file) with this module's fast settings."""
    fig.savefig(target, format="png", **PNG_OPTIONS)


#: The figures `write_pictures` draws again and again, by layout: building a figure took
#: longer than drawing it. Not pyplot's: nothing to close, and never more than a few.
_REUSED: dict[tuple, object] = {}
REUSED_FIGURES = 4


def _reused(key: tuple, make):
    if key not in _REUSED:
        while len(_REUSED) >= REUSED_FIGURES:
            _REUSED.pop(next(iter(_REUSED)))
        _REUSED[key] = make()
    return _REUSED[key]


def write_pictures(folder, image: np.ndarray, maps: np.ndarray, class_names, title: str,
                   answer: Answer = Answer(), style: PictureStyle = PictureStyle(),
                   meaning: MapMeaning = SHOWING, class_file=lambda name: f"class_{name}.png",
                   prefix: str = "") -> None:
    """An image's pictures of its `[classes, H, W]` maps as PNG files in `folder`:
    `<prefix>all_classes.png` (`style.mode` `both` or `combined`, as `all_classes_figure`)
    and, for each shown class, `<prefix><class_file(its name)>` (`both` or `per_class`, as
    `class_overlay_figures`). The same pixels, faster: the figures are kept from one call to
    the next and the per-class pictures redraw only what changes from class to class."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = np.shape(_pixels(image))
    if style.mode in ("both", "combined"):
        layout, head = _grid_layout(maps, answer, style, title)
        grid = _reused(("grid", shape, _lines(head), meaning, *layout),
                       lambda: _ClassGrid(shape, _lines(head), meaning, *layout,
                                          pyplot=False))
        grid.paint(image, maps, class_names, head, answer, style).canvas.draw()
        _encode(grid.fig, folder / f"{prefix}all_classes.png")
    if style.mode in ("both", "per_class"):
        head = wrapped_title(title, _ClassOverlay.COLS)
        picture = _reused(("class", shape, _lines(head), meaning),
                          lambda: _ClassOverlay(shape, _lines(head), meaning, pyplot=False))
        picture.set_image(image, head)
        for column, text, top, frame in _class_panels(maps, class_names, answer, style):
            picture.write(folder / f"{prefix}{class_file(class_names[column])}", maps[column],
                          text, top, frame)


def confusion_matrix_figure(
    true_labels: np.ndarray, predicted_labels: np.ndarray, class_names
) -> Figure:
    """Counts of true (rows) against predicted (columns) classes, each cell with its count and
    its share of the true class's samples: correct ones on the diagonal in blue, errors in
    red (the rarest still plainly red), zeros blank; the accuracy in the title."""
    from sklearn.metrics import confusion_matrix

    size = len(class_names)
    counts = confusion_matrix(true_labels, predicted_labels, labels=list(range(size)))
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else float("nan")
    diagonal = np.eye(size, dtype=bool)
    errors = ~diagonal & (counts > 0)
    worst = float(rates[errors].max()) if errors.any() else 1.0
    cell = float(np.clip(5.0 / size, 0.3, 0.55))
    fig, ax = plt.subplots(figsize=(max(4.5, size * cell + 1.4), max(4.5, size * cell + 1.5)),
                           layout="constrained")
    blues, reds = plt.get_cmap("Blues"), plt.get_cmap("Reds")
    # Correct rates on the light half of the blues; error rates on the darker part of the
    # reds, so that the rarest error is still plainly red.
    correct_norm, error_norm = Normalize(-0.5, 2.0), Normalize(-0.5 * worst, worst)
    colours = np.ones((size, size, 4))
    colours[diagonal & (counts > 0)] = blues(correct_norm(rates[diagonal & (counts > 0)]))
    colours[errors] = reds(error_norm(rates[errors]))
    ax.imshow(colours, interpolation="nearest")
    font = float(np.clip(85 / size, 5, 9))
    for (row, col), count in np.ndenumerate(counts):
        if count == 0:
            continue
        rate = rates[row, col]
        red, green, blue, _ = colours[row, col]
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(col, row, f"{count}\n{'<1' if rate < 0.005 else f'{rate:.0%}'[:-1]}%",
                ha="center", va="center", fontsize=font, color="white" if dark else "black",
                linespacing=1.1)
    ax.set_xticks(range(size), labels=class_names, fontsize=font + 1,
                  rotation=45 if max(len(str(n)) for n in class_names) > 3 else 0)
    ax.set_yticks(range(size), labels=class_names, fontsize=font + 1)
    ax.set_xticks(np.arange(size + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(size + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix: {total} samples, accuracy {accuracy:.1%}\n",
                 fontsize=11)
    ax.text(0.5, 1.01, "count and share of the true class's samples; errors in red",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="#444444")
    return fig


def causal_curves_figure(curves: dict[str, np.ndarray], metrics: dict[str, float]) -> Figure:
    """Deletion and insertion curves: the class probability against the fraction of pixels
    deleted or inserted, the map's beside the random maps' mean, areas in the legend; and ROAD's
    MoRF and LeRF curves against the fraction removed by imputation, when there are any. Laid
    out by hand: `tight_layout` took longer than drawing."""
    kinds = ["Deletion", "Insertion"] + (["Road"] if any(n.startswith("Road_") for n in curves)
                                         else [])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), sharey=True)
    fig.subplots_adjust(left=0.07 * 2 / len(kinds), right=0.99, bottom=0.14, top=0.92,
                        wspace=0.06)
    for ax, kind in zip(axes, kinds):
        for name, curve in curves.items():
            if kind == "Road":
                if not name.startswith("Road_"):
                    continue
                order = name.split("_")[1]
                ax.plot(ROAD_FRACTIONS, curve, "-" if order == "morf" else "--",
                        label=f"{order.upper()} (mean {metrics[name]:.3f})")
                continue
            if kind.lower() not in name.lower():
                continue
            label = ("random maps' mean" if name.startswith("Random")
                     else name.replace("_auc", "").replace("_", " "))
            style = ":" if name.startswith("Random") else "-"
            ax.plot(np.linspace(0, 1, len(curve)), curve, style,
                    label=f"{label} (area {metrics[name]:.3f})")
        if kind == "Road":
            ax.set_title("ROAD (MoRF lower, LeRF higher is better)", fontsize=9)
            ax.set_xlabel("fraction of pixels removed by imputation", fontsize=8)
        else:
            ax.set_title(f"{kind} ({'lower' if kind == 'Deletion' else 'higher'} is better)",
                         fontsize=9)
            ax.set_xlabel(f"fraction of pixels {kind.lower()[:-3]}ed", fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("class probability", fontsize=8)
    return fig
