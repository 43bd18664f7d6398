"""Pictures: the confusion matrix and saliency maps overlaid on their image.

Each function returns a matplotlib Figure; the steps hand it to `mlflow.log_figure` and close it.
"""

from __future__ import annotations

from typing import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

SALIENCY_CMAP = "jet"


def confusion_matrix_figure(
    true_labels: np.ndarray, predicted_labels: np.ndarray, class_names: list[str]
) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 6))
    ConfusionMatrixDisplay.from_predictions(
        true_labels,
        predicted_labels,
        labels=list(range(len(class_names))),
        display_labels=class_names,
        ax=ax,
        colorbar=False,
    )
    ax.set_title(f"Confusion matrix ({len(true_labels)} samples)")
    fig.tight_layout()
    return fig


def _overlay(ax, image: np.ndarray, saliency: np.ndarray, title: str):
    ax.imshow(image, cmap="gray")
    shown = ax.imshow(saliency, cmap=SALIENCY_CMAP, alpha=0.5, vmin=-1, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return shown


def class_overlay_figure(image: np.ndarray, saliency: np.ndarray, title: str) -> Figure:
    """The image beside the image with one class's map over it."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3))
    left.imshow(image, cmap="gray")
    left.set_title("image", fontsize=9)
    left.axis("off")
    shown = _overlay(right, image, saliency, title)
    fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def class_overlay_figures(image: np.ndarray, maps: np.ndarray,
                          titles: list[str]) -> Iterator[Figure]:
    """`class_overlay_figure` for each class's map in turn, as one figure redrawn.

    Only the map and the title change from class to class; building and laying out a new
    figure for each took more than half of its time. Save (log) each before taking the next.
    The figure is closed at the end.
    """
    fig = class_overlay_figure(image, maps[0], titles[0])
    right = fig.axes[1]
    shown = right.images[-1]
    try:
        for saliency, title in zip(maps, titles):
            shown.set_data(saliency)
            right.set_title(title, fontsize=9)
            yield fig
    finally:
        plt.close(fig)


def all_classes_figure(
    image: np.ndarray, maps: np.ndarray, class_names: list[str], suptitle: str
) -> Figure:
    """The image followed by its map for every class, in one grid."""
    panels = len(class_names) + 1
    cols = min(panels, 6)
    rows = int(np.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    flat = axes.ravel()
    flat[0].imshow(image, cmap="gray")
    flat[0].set_title("image", fontsize=9)
    flat[0].axis("off")
    shown = None
    for ax, name, saliency in zip(flat[1:], class_names, maps):
        shown = _overlay(ax, image, saliency, f"class {name}")
    for ax in flat[panels:]:
        ax.axis("off")
    if shown is not None:
        fig.colorbar(shown, ax=list(flat), fraction=0.02, pad=0.02)
    fig.suptitle(suptitle)
    return fig


def comparison_figure(image: np.ndarray, rows: dict[str, dict[str, np.ndarray]],
                      suptitle: str) -> Figure:
    """One row per class (`rows`: row title -> label -> `[H, W]` map): the image, then each
    configuration's map of that class, side by side on one scale."""
    columns = 1 + max(len(maps) for maps in rows.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(2 * columns, 2.3 * len(rows)),
                             squeeze=False)
    shown = None
    for row_axes, (row_title, maps) in zip(axes, rows.items()):
        row_axes[0].imshow(image, cmap="gray")
        row_axes[0].set_title(f"image\n{row_title}", fontsize=9)
        row_axes[0].axis("off")
        for ax, (label, saliency) in zip(row_axes[1:], maps.items()):
            shown = _overlay(ax, image, saliency, label)
    fig.colorbar(shown, ax=list(axes.ravel()), fraction=0.02, pad=0.02)
    fig.suptitle(suptitle)
    return fig


def causal_curves_figure(curves: dict[str, np.ndarray], metrics: dict[str, float]) -> Figure:
    """Deletion and insertion curves: the class probability against the fraction of pixels
    deleted or inserted, the map's beside the random map's, areas in the legend."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
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
    fig.tight_layout()
    return fig
