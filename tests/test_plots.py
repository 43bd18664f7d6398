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
    assert alpha == 1 and red > 0.9 and blue < 0.5
    red, green, blue, alpha = cmap(0.0)
    assert alpha == 1 and blue > 0.8 and red < 0.2
    # Opacity grows with |value|, the same on both sides.
    assert 0 < cmap(0.75)[3] < 1 and cmap(0.75)[3] == pytest.approx(cmap(0.25)[3], abs=0.01)
    assert plots.TRANSPARENT_RED(0.0)[3] == 0 and plots.TRANSPARENT_RED(1.0)[3] == 1


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
    assert overlay(panel).get_cmap().name == "transparent_red"
    assert overlay(panel).norm.vmin == 0 and overlay(panel).norm.vmax == pytest.approx(0.1)
    assert "changes the model's prediction" in fig.axes[-1].get_xlabel()
    # MC-RISE's maps: what filling a region with a colour does.
    fig = plots.all_classes_figure(image, maps, NAMES, "t", meaning=plots.FILLING)
    assert "filling a region with this colour" in fig.axes[-1].get_xlabel()


def test_colour_images_are_faded_in_their_colours(maps):
    colour = np.zeros((6, 6, 3))
    colour[..., 0] = 1  # red
    fig = plots.all_classes_figure(colour, maps, NAMES, "t")
    background = class_panels(fig, 1)[0].images[0].get_array()
    assert background.shape == (6, 6, 3)
    np.testing.assert_allclose(background[0, 0], [1, 1 - plots.IMAGE_STRENGTH,
                                                  1 - plots.IMAGE_STRENGTH])


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
