"""Saliency pictures per second, two ways side by side, in one process, on the same maps.

- naive: what a first version does: a new matplotlib figure for every picture
  (`plt.subplots`), laid out by `tight_layout`, saved by `savefig` with matplotlib's defaults;
- ours: `plots.write_pictures`, as the saliency step makes them: the per-class pictures from
  one figure redrawn, every figure laid out by hand (no `tight_layout`), titles placed rather
  than measured.

Both draw the same pictures of RISE maps of digits test images (the image and all its classes
in one grid, and one picture per class: eleven an image with `--mode both`, the step's
default) into PNG files in a temporary folder, in turns; the fastest pass of each counts.
With `--mlflow` it also times making and logging our pictures into a fresh SQLite store in a
temporary folder, one run per image, three ways: each figure by `mlflow.log_figure` (as the
step did; no redrawing only what changes), our files by one `mlflow.log_artifact` call each,
and our files by one `mlflow.log_artifacts` call per image (as the step does).

    python benchmarks/pictures_benchmark.py [--images 10 --repeats 3 --mode both --mlflow]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's `steps` package

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from steps.core import plots  # noqa: E402
from digits_setup import digits_setup  # noqa: E402

plt = plots.plt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10, help="test images to picture")
    parser.add_argument("--mode", choices=("both", "combined", "per_class"), default="both",
                        help="which pictures, as the step's picture_mode")
    parser.add_argument("--top-classes", type=int, default=0, help="as the step's top_classes")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes of each way, in turns; the fastest counts")
    parser.add_argument("--epochs", type=int, default=50, help="MLP training epochs")
    parser.add_argument("--mlflow", action="store_true",
                        help="also time logging the pictures to a temporary SQLite store")
    return parser.parse_args(argv)


def fastest(passes: dict, repeats: int) -> dict[str, float]:
    """Each timed pass `repeats` times, taking turns: by name, the shortest time."""
    best = {name: float("inf") for name in passes}
    for _ in range(repeats):
        for name, timed_pass in passes.items():
            start = time.perf_counter()
            timed_pass()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _naive_overlay(ax, image, saliency, top, text, frame):
    ax.imshow(1 - plots.IMAGE_STRENGTH * (1 - np.repeat(image[..., np.newaxis], 3, axis=2)))
    shown = ax.imshow(saliency, cmap=plots.RED_TRANSPARENT_BLUE, vmin=-top, vmax=top)
    ax.contour(image, levels=[(image.min() + image.max()) / 2], colors="#222222",
               linewidths=0.9)
    ax.set_title(text, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        spine.set_edgecolor(frame or "black")
        spine.set_linewidth(3.5)
    return shown


def naive_pictures(folder: Path, image, maps, class_names, title, answer, style) -> None:
    """The same pictures, each from a new figure laid out by `tight_layout`."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = plots.shown_columns(len(maps), answer, style.top_classes)
    tops = plots.color_scales([maps[c] for c in columns], style.scale)
    if style.mode in ("both", "combined"):
        panels = len(columns) + 1
        cols = min(panels, 6)
        rows = int(np.ceil(panels / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.3 * rows + 0.8),
                                 squeeze=False)
        flat = axes.ravel()
        flat[0].imshow(image, cmap="gray", vmin=0, vmax=1)
        flat[0].set_title("image", fontsize=9)
        flat[0].axis("off")
        for ax, column, top in zip(flat[1:], columns, tops):
            text, frame = plots.panel_title(class_names[column], column, answer)
            shown = _naive_overlay(ax, image, maps[column], top, text, frame)
        for ax in flat[panels:]:
            ax.axis("off")
        fig.colorbar(shown, ax=list(flat), orientation="horizontal", fraction=0.04,
                     label=plots.SHOWING.label)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(folder / "all_classes.png")
        plt.close(fig)
    if style.mode in ("both", "per_class"):
        for column, top in zip(columns, tops):
            fig, (left, right) = plt.subplots(1, 2, figsize=(4.2, 3.7))
            left.imshow(image, cmap="gray", vmin=0, vmax=1)
            left.set_title("image", fontsize=9)
            left.axis("off")
            text, frame = plots.panel_title(class_names[column], column, answer)
            shown = _naive_overlay(right, image, maps[column], top, text, frame)
            fig.colorbar(shown, ax=[left, right], orientation="horizontal", fraction=0.05,
                         label=plots.SHOWING.label)
            fig.suptitle(title)
            fig.tight_layout()
            fig.savefig(folder / f"class_{class_names[column]}.png")
            plt.close(fig)


def ours_logged_per_figure(image, maps, class_names, title, answer, style) -> None:
    """Our figures, each logged by `mlflow.log_figure` (which saves it to a temporary file)."""
    import mlflow

    if style.mode in ("both", "combined"):
        fig = plots.all_classes_figure(image, maps, class_names, title, answer, style)
        mlflow.log_figure(fig, "pictures/all_classes.png")
        plt.close(fig)
    if style.mode in ("both", "per_class"):
        for column, fig in plots.class_overlay_figures(image, maps, class_names, title, answer,
                                                       style):
            mlflow.log_figure(fig, f"pictures/class_{class_names[column]}.png")


def ours_logged_per_file(image, maps, class_names, title, answer, style) -> None:
    """Our pictures written to a temporary folder, each logged by `mlflow.log_artifact`."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        plots.write_pictures(tmp, image, maps, class_names, title, answer, style)
        for path in sorted(Path(tmp).iterdir()):
            mlflow.log_artifact(str(path), "pictures")


def ours_logged_per_image(image, maps, class_names, title, answer, style) -> None:
    """Our pictures written to a temporary folder, logged by one `mlflow.log_artifacts`."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        plots.write_pictures(tmp, image, maps, class_names, title, answer, style)
        mlflow.log_artifacts(tmp, "pictures")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*tight_layout.*")
    setup = digits_setup(args.epochs, args.images)
    data, classifier, engine = setup.data, setup.classifier, setup.engine
    rows, images, labels = setup.rows, setup.images, setup.labels
    confidences = classifier.classify_array(images)
    class_names = list(data.class_names)
    style = plots.PictureStyle(args.mode, args.top_classes)
    with threadpool_limits(1):
        maps = [engine(image, classifier) for image in images]
    cases = [(image, image_maps, class_names,
              f"image {row}: true {class_names[label]}, predicted "
              f"{class_names[int(conf.argmax())]}",
              plots.Answer(conf, int(conf.argmax()), int(label)), style)
             for image, image_maps, row, label, conf in zip(images, maps, rows, labels,
                                                            confidences)]
    per_image = len(plots.shown_columns(10, plots.Answer(), args.top_classes)) * (
        args.mode != "combined") + (args.mode != "per_class")
    count = len(cases) * per_image

    with tempfile.TemporaryDirectory() as tmp:
        def run(name, write):
            def timed_pass():
                for index, case in enumerate(cases):
                    write(Path(tmp, name, str(index)), *case)
            return timed_pass

        best = fastest({"naive": run("naive", naive_pictures),
                        "ours": run("ours", plots.write_pictures)}, args.repeats)
        sizes = {name: np.mean([p.stat().st_size for p in Path(tmp, name).rglob("*.png")])
                 for name in best}

    print(f"Pictures benchmark: {len(cases)} digits test images, RISE maps, picture_mode "
          f"{args.mode}, top_classes {args.top_classes}: {count} pictures a pass "
          f"({per_image} an image), best of {args.repeats}")
    for name, label in (("naive", "naive  new figure + tight_layout each"),
                        ("ours", "ours   plots.write_pictures")):
        print(f"{label:40s} {count / best[name]:7.1f} pictures/s {len(cases) / best[name]:6.2f}"
              f" images/s {1e3 * best[name] / count:7.1f} ms/picture")
    print(f"ours / naive: {best['naive'] / best['ours']:.2f}x; mean PNG size ours "
          f"{sizes['ours'] / 1024:.0f} KiB, naive {sizes['naive'] / 1024:.0f} KiB")
    if args.mlflow:
        log_benchmark(cases, args.repeats)
    return 0


def log_benchmark(cases, repeats: int) -> None:
    """Logging our pictures into a fresh SQLite store: per figure against per image."""
    import mlflow

    from steps.tracking.console import quiet_run_links

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        experiment = mlflow.create_experiment("pictures", artifact_location=Path(tmp).as_uri())

        def run(way):
            def timed_pass():
                for case in cases:
                    with quiet_run_links(), mlflow.start_run(experiment_id=experiment):
                        way(*case)
            return timed_pass

        run(ours_logged_per_image)()  # the store's tables made, outside the timings
        best = fastest({"figure": run(ours_logged_per_figure),
                        "file": run(ours_logged_per_file),
                        "image": run(ours_logged_per_image)}, repeats)
    print(f"made and logged to a SQLite store, {len(cases)} images, best of {repeats}:")
    for name, label in (("figure", "our figures, mlflow.log_figure each"),
                        ("file", "our files, mlflow.log_artifact each"),
                        ("image", "our files, one mlflow.log_artifacts an image")):
        print(f"  {label:46s} {len(cases) / best[name]:6.2f} images/s "
              f"{1e3 * best[name] / len(cases):7.1f} ms/image")
    print(f"  one log_artifacts an image / log_figure each: "
          f"{best['figure'] / best['image']:.2f}x; / log_artifact each: "
          f"{best['file'] / best['image']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
