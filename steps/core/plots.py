"""Pictures: the confusion matrix and saliency maps over their image.

Each function returns a matplotlib Figure (`class_overlay_figures` yields one, redrawn); the
steps save or log it and close it. Nothing here knows about MLflow.

Saliency pictures follow SHAP's `image_plot` and Captum's `visualize_image_attr`: the image
faded toward white (grey, or its colours) under a colormap that is transparent at zero, red
where a map is positive and blue where it is negative, more opaque the larger the value; the
class panels of a figure share one symmetric scale (or, on request, each has its own), are
titled with the class and the model's confidence, ordered by confidence, and the true and
predicted classes are marked; a colour bar says what the colours mean.
"""

from __future__ import annotations

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
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

#: SHAP's colours (`shap.plots.colors`): red for positive values, blue for negative ones.
POSITIVE_RGB = (1.0, 13 / 255, 87 / 255)
NEGATIVE_RGB = (30 / 255, 136 / 255, 229 / 255)
#: Signed maps: blue, transparent at zero, red; the opacity grows with |value| (SHAP's
#: `red_transparent_blue`). An odd number of colours puts zero on a colour of its own.
RED_TRANSPARENT_BLUE = LinearSegmentedColormap("red_transparent_blue", {
    "red": [(0, NEGATIVE_RGB[0], NEGATIVE_RGB[0]), (0.5, NEGATIVE_RGB[0], POSITIVE_RGB[0]),
            (1, POSITIVE_RGB[0], POSITIVE_RGB[0])],
    "green": [(0, NEGATIVE_RGB[1], NEGATIVE_RGB[1]), (0.5, NEGATIVE_RGB[1], POSITIVE_RGB[1]),
              (1, POSITIVE_RGB[1], POSITIVE_RGB[1])],
    "blue": [(0, NEGATIVE_RGB[2], NEGATIVE_RGB[2]), (0.5, NEGATIVE_RGB[2], POSITIVE_RGB[2]),
             (1, POSITIVE_RGB[2], POSITIVE_RGB[2])],
    "alpha": [(0, 1, 1), (0.5, 0, 0), (1, 1, 1)],
}, N=255)
#: Non-negative maps (SquaredDifferenceScoring's): transparent at zero, red at the top.
TRANSPARENT_RED = LinearSegmentedColormap.from_list(
    "transparent_red", [(*POSITIVE_RGB, 0.0), (*POSITIVE_RGB, 1.0)], N=255)


@dataclass(frozen=True)
class MapMeaning:
    """What a map's values mean: signed (blue, transparent, red) or not (transparent to red),
    and the colour bar's label saying so."""

    signed: bool
    label: str


#: RISE, random grid, sliding window and radial with OcclusionScoring.
SHOWING = MapMeaning(True, "map value: how much showing a region raises (red)\n"
                           "or lowers (blue) the class's confidence")
#: MC-RISE, a map per fill colour.
FILLING = MapMeaning(True, "map value: how much filling a region with this colour\n"
                           "raises (red) or lowers (blue) the class's confidence")
#: SquaredDifferenceScoring: one non-negative map of the whole prediction.
OCCLUDING = MapMeaning(False, "map value: how much occluding a region\n"
                              "changes the model's prediction")
#: Maps of different algorithms side by side.
COMPARED = MapMeaning(True, "map value: red positive, blue negative\n"
                            "(what it means depends on the algorithm: see the README)")


def meaning_of(maps: np.ndarray) -> MapMeaning:
    """What a map's values mean, by its shape: `[H, W]`, SquaredDifferenceScoring's whole
    prediction; `[colours, classes, H, W]`, MC-RISE's fill colours; else a map per class."""
    return {2: OCCLUDING, 4: FILLING}.get(np.ndim(maps), SHOWING)


RELATIVE_NOTE = "\n(each panel on its own scale: ± the value in its title)"

#: How much of the image shows under a map (the rest is white), as SHAP's faint grey image.
IMAGE_STRENGTH = 0.3
#: Grey images up to this many pixels high and wide are also outlined over their maps (at
#: half their range): their few coarse pixels are hard to make out under a map.
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
BAR_IN = 0.13
BAR_LABEL_LINE_IN = 0.16
DPI = 100
#: PNG settings of `save_png`: zlib level 1 encodes these mostly white pictures about 1.4x as
#: fast as the default level 6 (5.3 against 7.7 ms a per-class picture), 10 to 20% larger.
PNG_OPTIONS = {"pil_kwargs": {"compress_level": 1}}


@dataclass(frozen=True)
class PictureStyle:
    """How saliency pictures are made: which files (`mode`: `both`, `combined`, `per_class`),
    how many class panels (`top_classes`: the most confident K, the true class added when
    it is not among them; 0: all, up to `MAX_PANELS`), and the colour scale of the class
    panels (`scale`: `shared`, one symmetric scale for all; `per_class`, each its own)."""

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
    """The top of each map's colour scale (its panel shows [-top, top], or [0, top] for a
    non-negative map): the largest |value| over all the maps (`shared`), or over each map
    alone (`per_class`); 1 where that is 0."""
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
                top: float | None = None) -> tuple[str, str | None]:
    """A class panel's title: the class and its confidence, then its marks (`true`,
    `predicted`) and, given `top`, its own scale; and its frame's colour (None: no frame)."""
    first = str(name)
    if answer.confidences is not None:
        first += f"  {confidence_text(float(answer.confidences[column]))}"
    marks = [mark for mark, at in (("true", answer.true), ("predicted", answer.predicted))
             if at == column]
    second = [f"({', '.join(marks)})"] if marks else []
    if top is not None:
        second.append(f"±{top:.2g}")
    frame = (TRUE_COLOUR if column == answer.true else
             WRONG_COLOUR if column == answer.predicted and answer.true is not None else None)
    return "\n".join([first, " ".join(second)]) if second else first, frame


def _pixels(image: np.ndarray) -> np.ndarray:
    """The image in [0, 1], `[H, W]` grey or `[H, W, 3]` colour."""
    pixels = np.clip(np.asarray(image, dtype=float), 0, 1)
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels


def _background(image: np.ndarray) -> np.ndarray:
    """The image as RGB faded toward white: in grey, or in its colours for `[H, W, 3]`."""
    pixels = _pixels(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., np.newaxis], 3, axis=2)
    return 1 - IMAGE_STRENGTH * (1 - pixels[..., :3])


def _layers(image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """What every panel shows of the image: the image faded, and the lines outlining a small
    grey image at half its range (none for others), made once for all the panels."""
    grey = _pixels(image)
    lines = []
    if grey.ndim == 2 and max(grey.shape) <= OUTLINE_MAX_SIDE and np.ptp(grey) > 0:
        lines = contourpy.contour_generator(z=grey, line_type="Separate").lines(
            (grey.min() + grey.max()) / 2)
    return _background(image), lines


def _title(ax, text: str) -> None:
    # A given `y` fixes the title's place: matplotlib otherwise measures the axes' every
    # child at each draw to lift it over them.
    ax.set_title(text, fontsize=9, y=1.0, pad=3)


def _norm(top: float, signed: bool) -> Normalize:
    return Normalize(-top if signed else 0.0, top)


class _Overlay:
    """One panel: the image faded, a map over it, for small grey images their outline over
    that, and a frame (hidden) around it; each settable again."""

    def __init__(self, ax, shape: tuple[int, ...], signed: bool):
        self.ax, self.signed = ax, signed
        self.background = ax.imshow(np.ones((*shape[:2], 3)))
        self.shown = ax.imshow(np.zeros(shape[:2]), norm=_norm(1.0, signed),
                               cmap=RED_TRANSPARENT_BLUE if signed else TRANSPARENT_RED)
        self.frame = ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,
                                            linewidth=3.5, clip_on=False, visible=False))
        self.outline = ax.add_collection(LineCollection([], colors="#222222", linewidths=0.9),
                                         autolim=False)
        _title(ax, "")

    def set_image(self, layers: tuple[np.ndarray, list[np.ndarray]]) -> None:
        """The image, as `_layers` of it."""
        background, lines = layers
        self.background.set_data(background)
        self.outline.set_segments(lines)

    def set_map(self, saliency: np.ndarray, top: float, title: str,
                frame: str | None = None) -> None:
        self.shown.set_data(saliency)
        self.shown.set_clim(-top if self.signed else 0.0, top)
        self.ax.title.set_text(title)
        self.frame.set_visible(frame is not None)
        if frame is not None:
            self.frame.set_edgecolor(frame)

    def changing(self) -> list:
        """The artists that change from class to class, in drawing order."""
        return [self.shown, self.frame, self.outline, self.ax.title]


def _grid(rows: int, cols: int, title_lines: int, head_lines: int, bar_lines: int,
          pyplot: bool = True):
    """A figure of `rows` x `cols` square panels (axes off), room for `title_lines` of title
    above each and `head_lines` of figure title, and a horizontal colour bar under them with
    `bar_lines` of label. Returns the figure, the panels' axes `[rows, cols]`, the bar's.
    Without `pyplot`, the figure is pyplot's to know nothing of (no `plt.close`)."""
    title_in = title_lines * TITLE_LINE_IN + 0.08
    head_in = head_lines * HEAD_LINE_IN + 0.12
    foot_in = 0.12 + BAR_IN + 0.22 + bar_lines * BAR_LABEL_LINE_IN + 0.08
    width = 2 * SIDE_IN + cols * PANEL_IN + (cols - 1) * GAP_IN
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


def _head(fig: Figure, text: str) -> None:
    """The figure's title, at its top edge (`_grid` leaves it room)."""
    fig.suptitle(text, y=1 - 0.1 / fig.get_figheight(), va="top", fontsize=10)


def _colour_bar(fig, bar_axes, mappable, meaning: MapMeaning, relative: bool = False):
    bar = fig.colorbar(mappable, cax=bar_axes, orientation="horizontal")
    bar.set_label(meaning.label + (RELATIVE_NOTE if relative else ""), fontsize=8)
    bar_axes.tick_params(labelsize=8, length=3, pad=2)
    return bar


def _scale_ticks(bar, top: float, signed: bool, relative: bool = False) -> None:
    if relative:
        bar.set_ticks([-1, 0, 1], labels=["−top", "0", "+top"])
        return
    ticks = [-top, 0, top] if signed else [0, top / 2, top]
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
    once (blitting), and writes the PNG."""

    def __init__(self, shape: tuple[int, ...], head_lines: int, meaning: MapMeaning,
                 pyplot: bool = True):
        self.fig, axes, bar_axes = _grid(1, 2, 2, head_lines, 2, pyplot)
        left, right = axes[0]
        self.image = left.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1)
        _title(left, "image")
        self.panel = _Overlay(right, shape, meaning.signed)
        self.bar = _colour_bar(self.fig, bar_axes, self.panel.shown, meaning)
        self.signed, self.top, self.rest = meaning.signed, None, None

    def set_image(self, image: np.ndarray, title: str) -> None:
        self.image.set_data(_pixels(image))
        self.panel.set_image(_layers(image))
        _head(self.fig, title)
        self.rest = None

    def show(self, saliency: np.ndarray, title: str, top: float,
             frame: str | None) -> Figure:
        self.panel.set_map(saliency, top, title, frame)
        if top != self.top:
            _scale_ticks(self.bar, top, self.signed)
            self.top, self.rest = top, None
        return self.fig

    def write(self, target, saliency: np.ndarray, title: str, top: float,
              frame: str | None) -> None:
        """`show`, then the picture as PNG: the same pixels as `save_png` of the figure."""
        self.show(saliency, title, top, frame)
        canvas, changing = self.fig.canvas, self.panel.changing()
        if self.rest is None:  # the image or the scale changed: draw the rest again
            for artist in changing:
                artist.set_visible(False)
            canvas.draw()
            self.rest = canvas.copy_from_bbox(self.fig.bbox)
            for artist in changing:
                artist.set_visible(artist is not self.panel.frame or frame is not None)
        canvas.restore_region(self.rest)
        for artist in changing:
            self.fig.draw_artist(artist)
        _encode(self.fig, target)


def class_overlay_figures(image: np.ndarray, maps: np.ndarray, class_names, title: str,
                          answer: Answer = Answer(), style: PictureStyle = PictureStyle(),
                          meaning: MapMeaning = SHOWING) -> Iterator[tuple[int, Figure]]:
    """A picture per shown class (`shown_columns`), as `(column, figure)`: the image beside
    the image under that class's map, titled with the class, its confidence and marks, a
    labelled colour bar under them; one scale for all the classes (`style.scale` `shared`)
    or each its own. One figure, redrawn from class to class: only the map, its scale and
    the title change. Save each before taking the next. The figure is closed at the end."""
    picture = _ClassOverlay(np.shape(_pixels(image)), title.count("\n") + 1, meaning)
    picture.set_image(image, title)
    try:
        for column, text, top, frame in _class_panels(maps, class_names, answer, style):
            yield column, picture.show(maps[column], text, top, frame)
    finally:
        plt.close(picture.fig)


def _class_panels(maps, class_names, answer: Answer, style: PictureStyle,
                  relative: bool = False):
    """`(column, title, top, frame)` of each shown class, in order."""
    columns = shown_columns(len(maps), answer, style.top_classes)
    tops = color_scales([maps[c] for c in columns], style.scale)
    for column, top in zip(columns, tops):
        text, frame = panel_title(class_names[column], column, answer,
                                  top if relative else None)
        yield column, text, top, frame


class _ClassGrid:
    """The picture of all shown classes: the image, then each class's map over it, in a
    grid, and a colour bar; one figure, set again for each image by `paint`."""

    def __init__(self, shape: tuple[int, ...], classes: int, head_lines: int,
                 meaning: MapMeaning, relative: bool, pyplot: bool = True):
        panels = classes + 1
        cols = min(panels, 6)
        self.fig, axes, bar_axes = _grid(int(np.ceil(panels / cols)), cols, 2, head_lines,
                                         2 + relative, pyplot)
        flat = axes.ravel()
        self.image = flat[0].imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1)
        _title(flat[0], "image")
        self.panels = [_Overlay(ax, shape, meaning.signed) for ax in flat[1:panels]]
        self.signed, self.relative = meaning.signed, relative
        mappable = (ScalarMappable(_norm(1.0, self.signed), self.panels[0].shown.get_cmap())
                    if relative else self.panels[0].shown)
        self.bar = _colour_bar(self.fig, bar_axes, mappable, meaning, relative)
        if relative:
            _scale_ticks(self.bar, 1.0, self.signed, relative=True)

    def paint(self, image, maps, class_names, title: str, answer: Answer,
              style: PictureStyle) -> Figure:
        self.image.set_data(_pixels(image))
        panels = list(_class_panels(maps, class_names, answer, style, self.relative))
        layers = _layers(image)
        for panel, (column, text, top, frame) in zip(self.panels, panels, strict=True):
            panel.set_image(layers)
            panel.set_map(maps[column], top, text, frame)
        if not self.relative:
            _scale_ticks(self.bar, panels[0][2], self.signed)
        _head(self.fig, title)
        return self.fig


def _grid_for(image, maps, answer: Answer, style: PictureStyle, title: str,
              meaning: MapMeaning) -> _ClassGrid:
    classes = len(shown_columns(len(maps), answer, style.top_classes))
    return _ClassGrid(np.shape(_pixels(image)), classes, title.count("\n") + 1, meaning,
                      style.scale == "per_class" and classes > 1)


def class_overlay_figure(image: np.ndarray, maps: np.ndarray, class_names, title: str,
                         column: int, answer: Answer = Answer(),
                         style: PictureStyle = PictureStyle(),
                         meaning: MapMeaning = SHOWING) -> Figure:
    """`class_overlay_figures`' picture of one column, as a figure of its own."""
    picture = _ClassOverlay(np.shape(_pixels(image)), title.count("\n") + 1, meaning)
    picture.set_image(image, title)
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
    symmetric scale (`style.scale` `shared`) or each on its own, with a labelled colour
    bar."""
    grid = _grid_for(image, maps, answer, style, suptitle, meaning)
    return grid.paint(image, maps, class_names, suptitle, answer, style)


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
    it, on one scale for the whole figure (as `comparison_figure`); the images of all rows
    have one shape."""
    maps = [m for _, _, row in rows for m in row.values()]
    if meaning is None:
        meaning = SHOWING if any(np.nanmin(m) < 0 for m in maps) else OCCLUDING
    signed = meaning.signed
    (top, *_) = color_scales(maps, "shared")
    columns = 1 + max(len(row) for _, _, row in rows)
    lines = max([2] + [label.count("\n") + 1 for _, _, row in rows for label in row])
    fig, axes, bar_axes = _grid(len(rows), columns, lines, suptitle.count("\n") + 1, 2)
    panel = None
    for row_axes, (image, row_title, row) in zip(axes, rows):
        shape, layers = np.shape(_pixels(image)), _layers(image)
        row_axes[0].imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
        _title(row_axes[0], f"image\n{row_title}")
        for ax, (label, saliency) in zip(row_axes[1:], row.items()):
            panel = _Overlay(ax, shape, signed)
            panel.set_image(layers)
            panel.set_map(saliency, top, label)
    _scale_ticks(_colour_bar(fig, bar_axes, panel.shown, meaning), top, signed)
    _head(fig, suptitle)
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
    shape, head_lines = np.shape(_pixels(image)), title.count("\n") + 1
    if style.mode in ("both", "combined"):
        classes = len(shown_columns(len(maps), answer, style.top_classes))
        relative = style.scale == "per_class" and classes > 1
        grid = _reused(("grid", shape, classes, head_lines, meaning, relative),
                       lambda: _ClassGrid(shape, classes, head_lines, meaning, relative,
                                          pyplot=False))
        grid.paint(image, maps, class_names, title, answer, style).canvas.draw()
        _encode(grid.fig, folder / f"{prefix}all_classes.png")
    if style.mode in ("both", "per_class"):
        picture = _reused(("class", shape, head_lines, meaning),
                          lambda: _ClassOverlay(shape, head_lines, meaning, pyplot=False))
        picture.set_image(image, title)
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
    deleted or inserted, the map's beside the random map's, areas in the legend. Laid out by
    hand: `tight_layout` took longer than drawing."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.14, top=0.92, wspace=0.06)
    for ax, kind in zip(axes, ("Deletion", "Insertion")):
        for name, curve in curves.items():
            if kind.lower() not in name.lower():
                continue
            label = name.replace("_auc", "").replace("_", " ")
            style = ":" if name.startswith("Random") else "-"
            ax.plot(np.linspace(0, 1, len(curve)), curve, style,
                    label=f"{label} (area {metrics[name]:.3f})")
        ax.set_title(f"{kind} ({'lower' if kind == 'Deletion' else 'higher'} is better)",
                     fontsize=9)
        ax.set_xlabel(f"fraction of pixels {kind.lower()[:-3]}ed", fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("class probability", fontsize=8)
    return fig
