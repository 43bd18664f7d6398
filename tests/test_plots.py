"""The pictures (steps/core/plots.py) on small arrays: saliency panels and the confusion matrix."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
from matplotlib.colors import to_hex

from steps.core import plots

plt = plots.plt
NAMES = [str(k) for k in range(5)]
CONFIDENCES = np.array([0.05, 0.6, 0.02, 0.3, 0.03])


@pytest.fixture
def image():
    return np.random.default_rng(1).uniform(0, 1, size=(6, 6))


@pytest.fixture
def maps():
    """Class k's map reaches k + 1 in absolute value: every panel has its own amplitude."""
    rng = np.random.default_rng(2)
    maps = rng.uniform(-1, 1, size=(5, 6, 6))
    maps /= np.abs(maps).max(axis=(1, 2), keepdims=True)
    return maps * np.arange(1, 6)[:, None, None]


@pytest.fixture(autouse=True)
def no_figures_left():
    before = plt.get_fignums()
    yield
    for number in set(plt.get_fignums()) - set(before):
        plt.close(number)


def class_panels(fig, count: int):
    """The class panels' axes of an `all_classes_figure` (the image's panel comes first)."""
    return fig.axes[1:count + 1]


def overlay(ax):
    return ax.images[1]  # the faded image is images[0]


def pixels(source) -> np.ndarray:
    return np.asarray(PIL.Image.open(source))


def png(fig) -> io.BytesIO:
    buffer = io.BytesIO()
    plots.save_png(fig, buffer)
    buffer.seek(0)
    return buffer


def test_signed_colormap_is_transparent_at_zero_red_above_blue_below():
    cmap = plots.RED_TRANSPARENT_BLUE
    assert cmap(0.5)[3] == 0
    red, green, blue, alpha = cmap(1.0)
    assert alpha == plots.MAP_OPACITY and red > 0.9 and blue < 0.5
    red, green, blue, alpha = cmap(0.0)
    assert alpha == plots.MAP_OPACITY and blue > 0.8 and red < 0.2
    # Opacity grows with |value|, the same on both sides, short of hiding the image.
    assert 0 < cmap(0.75)[3] < plots.MAP_OPACITY < 1
    assert cmap(0.75)[3] == pytest.approx(cmap(0.25)[3], abs=0.01)
    # The sequential ones: clear at 0, darker and more opaque away from it.
    reds, blues = plots.TRANSPARENT_REDS, plots.TRANSPARENT_BLUES
    assert reds(0.0)[3] == 0 and reds(1.0)[3] == plots.MAP_OPACITY
    assert blues(1.0)[3] == 0 and blues(0.0)[3] == plots.MAP_OPACITY
    assert sum(reds(1.0)[:3]) < sum(reds(0.5)[:3]) and reds(1.0)[0] > reds(1.0)[2]
    assert sum(blues(0.0)[:3]) < sum(blues(0.5)[:3]) and blues(0.0)[2] > blues(0.0)[0]


def test_panels_are_ordered_by_confidence_and_titled_with_it(image, maps):
    answer = plots.Answer(CONFIDENCES, predicted=1, true=3)
    fig = plots.all_classes_figure(image, maps, NAMES, "image 7", answer)
    titles = [ax.get_title() for ax in class_panels(fig, 5)]
    assert [t.split()[0] for t in titles] == ["1", "3", "0", "4", "2"]
    assert titles[0] == "1  0.60\n(predicted)"
    assert titles[1] == "3  0.30\n(true)"
    assert titles[2] == "0  0.05"
    assert fig.axes[0].get_title() == "image"
    assert fig.get_suptitle() == "image 7"


def test_true_class_framed_green_wrong_prediction_framed_red(image, maps):
    fig = plots.all_classes_figure(image, maps, NAMES, "t",
                                   plots.Answer(CONFIDENCES, predicted=1, true=3))
    frames = {ax.get_title().split()[0]: ax.patches[0] for ax in class_panels(fig, 5)}
    assert frames["1"].get_visible() and to_hex(frames["1"].get_edgecolor()) == plots.WRONG_COLOUR
    assert frames["3"].get_visible() and to_hex(frames["3"].get_edgecolor()) == plots.TRUE_COLOUR
    assert not any(frames[name].get_visible() for name in ("0", "2", "4"))
    # Right: one panel, both marks, green.
    title, frame = plots.panel_title("1", 1, plots.Answer(CONFIDENCES, predicted=1, true=1))
    assert title == "1  0.60\n(true, predicted)" and frame == plots.TRUE_COLOUR


def test_top_classes_keeps_the_true_class(image, maps):
    answer = plots.Answer(CONFIDENCES, predicted=1, true=2)  # the least confident class
    assert plots.shown_columns(5, answer, top_classes=2) == [1, 3, 2]
    assert plots.shown_columns(5, plots.Answer(CONFIDENCES, 1, 3), top_classes=2) == [1, 3]
    assert plots.shown_columns(5, answer, top_classes=0) == [1, 3, 0, 4, 2]
    fig = plots.all_classes_figure(image, maps, NAMES, "t", answer, plots.PictureStyle(
        top_classes=2))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["image", "1  0.60\n(predicted)", "3  0.30", "2  0.02\n(true)"]


def test_all_classes_means_at_most_ten_and_no_confidence_means_class_order():
    confidences = np.linspace(0, 1, 12)
    assert plots.shown_columns(12, plots.Answer(confidences)) == list(range(11, 1, -1))
    assert plots.shown_columns(12, plots.Answer(confidences, 11, 0)) == [
        *range(11, 1, -1), 0]
    assert plots.shown_columns(12, plots.Answer(confidences), top_classes=12) == list(
        range(11, -1, -1))
    assert plots.shown_columns(4, plots.Answer(true=2)) == [0, 1, 2, 3]  # a mean map
    # A mean map of a confusion cell beyond the first ten: both its classes kept.
    assert plots.shown_columns(12, plots.Answer(None, 11, 10)) == [*range(10), 11, 10]
    assert plots.panel_title("2", 2, plots.Answer(true=2)) == ("2\n(true)", plots.TRUE_COLOUR)


def test_shared_scale_is_symmetric_and_the_largest_value_of_the_panels_shown(image, maps):
    answer = plots.Answer(CONFIDENCES, 1, 3)
    fig = plots.all_classes_figure(image, maps, NAMES, "t", answer)
    norms = {(overlay(ax).norm.vmin, overlay(ax).norm.vmax) for ax in class_panels(fig, 5)}
    assert norms == {(-5.0, 5.0)}  # class 4's map reaches 5, not the fixed 1
    # Only the panels shown count: classes 1 and 3 reach 2 and 4.
    fig = plots.all_classes_figure(image, maps, NAMES, "t", answer,
                                   plots.PictureStyle(top_classes=2))
    assert {overlay(ax).norm.vmax for ax in class_panels(fig, 2)} == {4.0}
    assert plots.color_scales([maps[1], maps[3]]) == [4.0, 4.0]
    assert plots.color_scales([np.zeros((2, 2))]) == [1.0]


def test_per_class_scale_gives_each_panel_its_own(image, maps):
    fig = plots.all_classes_figure(image, maps, NAMES, "t", plots.Answer(CONFIDENCES, 1, 3),
                                   plots.PictureStyle(scale="per_class"))
    panels = class_panels(fig, 5)
    tops = {ax.get_title().split()[0]: overlay(ax).norm.vmax for ax in panels}
    assert tops == {"0": 1.0, "1": 2.0, "2": 3.0, "3": 4.0, "4": 5.0}
    assert all(overlay(ax).norm.vmin == -overlay(ax).norm.vmax for ax in panels)
    assert "±4" in panels[1].get_title()  # the scale is in the title
    assert "own scale" in fig.axes[-1].get_xlabel()
    with pytest.raises(ValueError, match="picture scale"):
        plots.PictureStyle(scale="global")


def test_colour_bar_says_what_the_colours_mean(image, maps):
    fig = plots.all_classes_figure(image, maps, NAMES, "t", plots.Answer(CONFIDENCES, 1, 3))
    label = fig.axes[-1].get_xlabel()
    assert "raises (red)" in label and "lowers (blue)" in label and "confidence" in label
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert ticks == ["−5", "0", "5"]
    # A non-negative map of the whole prediction: from transparent to red, from 0.
    whole = np.abs(maps[:1]) / 10
    fig = plots.all_classes_figure(image, whole, ["prediction"], "t",
                                   meaning=plots.OCCLUDING)
    (panel,) = class_panels(fig, 1)
    assert overlay(panel).get_cmap().name == "transparent_reds"
    assert overlay(panel).norm.vmin == 0 and overlay(panel).norm.vmax == pytest.approx(0.1)
    assert "changes the model's prediction" in fig.axes[-1].get_xlabel()
    assert "every value ≥ 0: a scale from 0" in fig.axes[-1].get_xlabel()
    # MC-RISE's maps: what filling a region with a colour does.
    fig = plots.all_classes_figure(image, maps, NAMES, "t", meaning=plots.FILLING)
    assert "filling a region with this colour" in fig.axes[-1].get_xlabel()


def panel_pixels(fig, ax) -> np.ndarray:
    """The RGB pixels the figure draws inside `ax` (a pixel's margin left off)."""
    fig.canvas.draw()
    drawn = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    x0, y0, x1, y1 = np.round(ax.get_window_extent().extents).astype(int)
    return drawn[drawn.shape[0] - y1 + 1:drawn.shape[0] - y0 - 1, x0 + 1:x1 - 1]


def coloured_scene(size: int) -> np.ndarray:
    """A yellow disk on a dark green and blue checkered ground, `[size, size, 3]`."""
    rows, cols = np.mgrid[:size, :size] / size
    image = np.zeros((size, size, 3))
    image[..., 1] = 0.1 + 0.2 * ((rows * 8).astype(int) % 2)
    image[..., 2] = 0.1 + 0.4 * ((cols * 8).astype(int) % 2)
    disk = (rows - 0.5) ** 2 + (cols - 0.5) ** 2 < 0.09
    image[disk] = [0.9, 0.8, 0.1]
    return image


@pytest.mark.parametrize("size", [8, 32, 224])
def test_a_colour_image_shows_in_grey_under_every_map(size):
    """The panel is the image's grey blended with the map, as Captum's blended heat map: the
    image's structure is there where the map is 0 and where it is at its strongest."""
    image = coloured_scene(size)
    strong = np.zeros((2, size, size))
    strong[:, :, : size // 2] = 1.0  # the left half at the top of the scale, the right at 0
    strong[1] *= -1
    fig = plots.all_classes_figure(image, strong, ["up", "down"], "t")
    background = class_panels(fig, 1)[0].images[0].get_array()
    np.testing.assert_array_equal(background[..., 0], background[..., 2])  # grey
    luma = image @ plots.LUMA
    for ax in class_panels(fig, 2):
        drawn = panel_pixels(fig, ax)
        rows = np.arange(drawn.shape[0]) * size // drawn.shape[0]
        cols = np.arange(drawn.shape[1]) * size // drawn.shape[1]
        expected = luma[np.ix_(rows, cols)]
        shown = drawn @ plots.LUMA
        for half in (cols < size // 2, cols >= size // 2):  # under the map, and beside it
            assert np.corrcoef(shown[:, half].ravel(), expected[:, half].ravel())[0, 1] > 0.8
        # The map still shows: red over the left half of the first class, blue of the second.
        red, _, blue = drawn[:, cols < size // 2].reshape(-1, 3).mean(axis=0)
        assert (red > blue + 0.15) if ax.get_title() == "up" else (blue > red + 0.15)


def test_a_faint_image_is_stretched_to_its_range_under_the_maps(maps):
    dark = np.zeros((6, 6, 3))
    dark[2:4, 2:4] = [0.1, 0.3, 0.1]  # a dark green square on black
    fig = plots.all_classes_figure(dark, maps, NAMES, "t")
    background = class_panels(fig, 1)[0].images[0].get_array()[..., 0]
    assert background.min() == pytest.approx(1 - plots.IMAGE_STRENGTH)
    assert background.max() == pytest.approx(1.0)


def test_write_pictures_draws_what_the_figures_draw(tmp_path, image, maps):
    """The fast path (figures kept between calls, per-class pictures blitted) gives the same
    pixels as the figures, for two images in a row."""
    answer = plots.Answer(CONFIDENCES, 1, 3)
    style = plots.PictureStyle(top_classes=3)
    for index, (picture, title) in enumerate(((image, "first"), (image[::-1], "second"))):
        folder = tmp_path / str(index)
        plots.write_pictures(folder, picture, maps, NAMES, title, answer, style,
                             prefix="p_")
        assert sorted(p.name for p in folder.iterdir()) == [
            "p_all_classes.png", "p_class_0.png", "p_class_1.png", "p_class_3.png"]
        expected = plots.all_classes_figure(picture, maps, NAMES, title, answer, style)
        np.testing.assert_array_equal(pixels(folder / "p_all_classes.png"),
                                      pixels(png(expected)))
        for column, fig in plots.class_overlay_figures(picture, maps, NAMES, title, answer,
                                                       style):
            np.testing.assert_array_equal(pixels(folder / f"p_class_{column}.png"),
                                          pixels(png(fig)), err_msg=f"class {column}")
    plots.write_pictures(tmp_path / "one", image, maps, NAMES, "t", answer,
                         plots.PictureStyle("combined"))
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["all_classes.png"]


@pytest.fixture
def one_signed_maps():
    """As random_grid's on digits: the predicted class's map all positive (0.75 to 1), the
    other classes' all negative."""
    rng = np.random.default_rng(3)
    maps = -rng.uniform(0.4, 0.9, size=(5, 6, 6))
    maps[1] = rng.uniform(0.75, 1.0, size=(6, 6))
    return maps / maps.max()  # reaching 1, as xaitk's do


def test_a_picture_whose_maps_share_a_sign_gets_a_sequential_scale_from_0(image,
                                                                         one_signed_maps):
    answer = plots.Answer(CONFIDENCES, 1, 1)
    top = float(one_signed_maps[1].max())
    fig = plots.all_classes_figure(image, one_signed_maps, NAMES, "t", answer,
                                   plots.PictureStyle(top_classes=1))
    (panel,) = class_panels(fig, 1)
    assert overlay(panel).get_cmap().name == "transparent_reds"
    assert (overlay(panel).norm.vmin, overlay(panel).norm.vmax) == (0.0, top)  # to the data
    bar = fig.axes[-1]
    assert [t.get_text() for t in bar.get_xticklabels()] == ["0", f"{top / 2:.2g}",
                                                             f"{top:.2g}"]
    assert "every value ≥ 0: a scale from 0" in bar.get_xlabel()
    # All negative: from the lowest value up to 0, in blues.
    fig = plots.all_classes_figure(image, -np.abs(one_signed_maps), NAMES, "t", answer)
    negatives = class_panels(fig, 5)
    assert {overlay(ax).get_cmap().name for ax in negatives} == {"transparent_blues"}
    assert {(overlay(ax).norm.vmin, overlay(ax).norm.vmax) for ax in negatives} == {
        (-float(np.abs(one_signed_maps).max()), 0.0)}
    assert "every value ≤ 0" in fig.axes[-1].get_xlabel()
    # Panels that share a scale share the decision: both signs in the picture, diverging.
    fig = plots.all_classes_figure(image, one_signed_maps, NAMES, "t", answer)
    assert {overlay(ax).get_cmap().name for ax in class_panels(fig, 5)} == {
        "red_transparent_blue"}
    assert all(overlay(ax).norm.vmin == -overlay(ax).norm.vmax for ax in class_panels(fig, 5))
    assert "every value" not in fig.axes[-1].get_xlabel()


def test_each_per_class_picture_decides_by_its_own_map(image, one_signed_maps):
    answer = plots.Answer(CONFIDENCES, 1, 1)
    seen = {}
    for column, fig in plots.class_overlay_figures(image, one_signed_maps, NAMES, "t", answer):
        shown = fig.axes[1].images[1]
        (bar,) = [ax for ax in fig.axes[2:] if ax.get_visible()]
        seen[column] = (shown.get_cmap().name, shown.norm.vmin, shown.norm.vmax,
                        bar.get_xlabel().count("every value ≥ 0"),
                        [t.get_text() for t in bar.get_xticklabels()])
    top = float(np.abs(one_signed_maps).max())  # the classes' shared scale
    ticks = [f"{t:.2g}".replace("-", "−") for t in (0, top / 2, top)]
    assert seen[1] == ("transparent_reds", 0.0, top, 1, ticks)
    assert all(seen[c] == ("transparent_blues", -top, 0.0, 0,
                           ["−" + t for t in ticks[:0:-1]] + ["0"]) for c in (0, 2, 3, 4))


def test_the_fast_path_draws_what_the_figures_draw_as_the_scale_changes(
        tmp_path, image, one_signed_maps):
    """Per-class pictures whose scales change from class to class (sequential red, blue,
    diverging), one after the other in one reused figure, as the figures draw them."""
    maps = np.concatenate([one_signed_maps, [np.where(image > 0.5, 1.0, -1.0) * 0.5]])
    names = [*NAMES, "mixed"]
    answer = plots.Answer(np.append(CONFIDENCES, 0.4) / 1.4, 1, 5)
    plots.write_pictures(tmp_path, image, maps, names, "t", answer)
    for column, fig in plots.class_overlay_figures(image, maps, names, "t", answer):
        np.testing.assert_array_equal(pixels(tmp_path / f"class_{names[column]}.png"),
                                      pixels(png(fig)), err_msg=f"class {column}")


def test_colour_bars_stay_clear_at_0_whatever_their_scale(image, maps):
    """The bar shows the colormap's transparency on any scale (not only ±1): clear at 0, the
    colour fading in toward the ends, not one solid colour each side of 0."""
    for column, fig in plots.class_overlay_figures(image, maps, NAMES, "t",
                                                   plots.Answer(CONFIDENCES, 1, 3)):
        (bar,) = [ax for ax in fig.axes[2:] if ax.get_visible()]
        drawn = panel_pixels(fig, bar)
        strip = drawn[len(drawn) // 2]
        width = len(strip)
        assert strip[width // 2].min() > 0.9  # 0: clear, the white under the bar
        red, _, blue = strip[width // 4]  # halfway to the bottom: half-faded blue
        assert blue > red + 0.15 and red > 0.4, (column, strip[width // 4])


def test_sign_of_and_scale_limits():
    assert plots.sign_of([np.array([0.0, 0.75, 1.0])]) == "positive"
    assert plots.sign_of(np.array([[-0.2, 0.0]])) == "negative"
    assert plots.sign_of([np.array([0.5]), np.array([-0.5])]) == "diverging"
    assert plots.sign_of([np.zeros(3)]) == "diverging"  # no sign to show
    assert plots.sign_of([np.array([np.nan, 2.0])]) == "positive"
    # Any scale, not only xaitk's ±1: e.g. a confidence's change of 0.03.
    assert plots.scale_limits(0.03, "positive") == (0.0, 0.03)
    assert plots.scale_limits(0.03, "negative") == (-0.03, 0.0)
    assert plots.scale_limits(0.03, "diverging") == (-0.03, 0.03)


def test_long_titles_are_wrapped_to_fit_the_figure(image, maps):
    title = ("the first 12 of 40 maps by random_grid(n=1000, cell_size=2,2, p1=0.5, seed=0): "
             "the predicted class, and the true class where it differs")
    figures = [plots.rows_figure([(image, "7: true 1", {"predicted 1": maps[1]})], title),
               plots.class_overlay_figure(image, maps, NAMES, title, 0),
               plots.all_classes_figure(image, maps, NAMES, title)]
    for fig in figures:
        fig.canvas.draw()
        head = fig.get_suptitle()
        assert head.replace("\n", " ") == title
        extent = fig._suptitle.get_window_extent()
        assert extent.x0 > 0 and extent.x1 < fig.bbox.width and extent.y1 <= fig.bbox.height
        # Its room was made for its lines: it ends above the panels' titles.
        assert extent.y0 > max(ax.title.get_window_extent().y1 for ax in fig.axes[:-1])
    assert "\n" in figures[0].get_suptitle() and "\n" in figures[1].get_suptitle()
    assert plots.wrapped_title("short", 2) == "short"


def test_fill_colours_are_named():
    assert plots.fill_colour_name(0) == "black (0)"
    assert plots.fill_colour_name([1.0]) == "white (1)"
    assert plots.fill_colour_name((1, 0, 0)) == "red (1,0,0)"
    assert plots.fill_colour_name((0.5, 0.5, 0.5)) == "grey (0.5,0.5,0.5)"
    assert plots.fill_colour_name((0.2, 0.4, 0.6)) == "(0.2,0.4,0.6)"
    assert plots.fill_colour_name(0.25) == "(0.25)"


def test_comparison_shares_one_scale_over_the_figure(image, maps):
    fig = plots.comparison_figure(image, {"predicted class 1": {"a": maps[1], "b": maps[0]},
                                          "true class 3": {"a": maps[3], "b": maps[2]}}, "t")
    norms = {(img.norm.vmin, img.norm.vmax) for ax in fig.axes for img in ax.images[1:]}
    assert norms == {(-4.0, 4.0)}


def test_a_summary_has_a_row_per_image_with_its_own_image_and_one_scale(image, maps):
    other = 1 - image
    fig = plots.rows_figure([(image, "7: true 1", {"predicted 1": maps[1]}),
                             (other, "9: true 3", {"predicted 2": maps[2], "true 3": maps[3]})],
                            "summary", plots.meaning_of(maps))
    panels = [ax for ax in fig.axes if ax.images]
    shown = [ax.images[0].get_array() for ax in panels if ax.get_title().startswith("image")]
    assert len(shown) == 2 and not np.allclose(shown[0], shown[1])
    titles = [ax.get_title() for ax in panels]
    assert titles == ["image\n7: true 1", "predicted 1", "image\n9: true 3", "predicted 2",
                      "true 3"]
    norms = {(img.norm.vmin, img.norm.vmax) for ax in panels for img in ax.images[1:]}
    assert norms == {(-4.0, 4.0)}
    assert plots.meaning_of(maps[0]) is plots.OCCLUDING
    assert plots.meaning_of(maps[np.newaxis]) is plots.FILLING


def test_confusion_matrix_shows_counts_rates_and_accuracy():
    truth = np.array([0] * 8 + [1] * 4 + [2] * 3)
    predicted = np.array([0] * 7 + [2] + [1] * 3 + [0] + [2] * 3)
    fig = plots.confusion_matrix_figure(truth, predicted, ["cat", "dog", "owl"])
    ax = fig.axes[0]
    cells = {t.get_text() for t in ax.texts}
    assert {"7\n88%", "1\n12%", "3\n75%", "1\n25%", "3\n100%"} <= cells
    assert not any(text.startswith("0\n") for text in cells)  # zeros are blank
    assert ax.get_title() == "Confusion matrix: 15 samples, accuracy 86.7%\n"
    # Errors in red, correct answers in blue, zeros white.
    colours = ax.images[0].get_array()
    red, green, blue = colours[0, 2, :3]
    assert red > 0.6 and blue < 0.5
    red, green, blue = colours[0, 0, :3]
    assert blue > red
    np.testing.assert_array_equal(colours[0, 1, :3], [1, 1, 1])


def test_pictures_benchmark_runs_on_tiny_sizes():
    import subprocess
    import sys

    from tests.conftest import PROJECT_DIR

    result = subprocess.run([sys.executable, "benchmarks/pictures_benchmark.py", "--images", "1",
                             "--epochs", "3", "--repeats", "1"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ours / naive:" in result.stdout and "pictures/s" in result.stdout


def test_causal_curves_draw_road_beside_deletion_and_insertion():
    from steps.core.metrics import score_map
    from steps.core.road import FRACTIONS

    rng = np.random.default_rng(4)
    weights = rng.random((10, 64))

    def predict(images):
        logits = np.asarray(images).reshape(len(images), -1) @ weights.T
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    image = rng.random((8, 8))
    scores = score_map(rng.random((10, 8, 8)), image, predict, 3, None)
    fig = plots.causal_curves_figure(scores.curves, scores.metrics)
    deletion, insertion, road = fig.axes
    assert road.get_title().startswith("ROAD")
    assert [line.get_label().split()[0] for line in road.get_lines()] == ["MORF", "LERF"]
    np.testing.assert_allclose(road.get_lines()[0].get_xdata(), FRACTIONS)
    np.testing.assert_allclose(road.get_lines()[1].get_ydata(), scores.curves["Road_lerf_auc"])
    assert len(deletion.get_lines()) == 2 and len(insertion.get_lines()) == 2  # map, random
    without = {k: v for k, v in scores.curves.items() if not k.startswith("Road_")}
    assert len(plots.causal_curves_figure(without, scores.metrics).axes) == 2
