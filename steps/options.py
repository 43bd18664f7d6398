"""Every user-facing parameter, declared once, with the check MLflow does not make.

MLflow passes `-P` values through unchecked, so each parameter here has a click type that
rejects bad values with a message naming the parameter and what it accepts. The step CLIs and
the driver (`main.py`) build their options from these declarations; the MLproject defaults
must equal the ones here (tests/test_project_files.py checks).
"""

from __future__ import annotations

import re
import sys
from typing import Callable

import click

from steps.catalog import ALGORITHMS, DATASETS, PICTURE_MODES, SOLVERS
from steps.store_check import check_tracking_store

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


class IntList(click.ParamType):
    """Comma-separated integers such as `64,32`, each at least `minimum`, optionally of fixed length."""

    name = "int_list"

    def __init__(self, minimum: int = 0, length: int | None = None, allow_empty: bool = False):
        self.minimum = minimum
        self.length = length
        self.allow_empty = allow_empty

    def describe(self) -> str:
        what = f"integers >= {self.minimum}"
        count = f"{self.length} comma-separated" if self.length else "comma-separated"
        example = ",".join(["2"] * (self.length or 2))
        return f"{count} {what}, e.g. {example}"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if not text and self.allow_empty:
            return ()
        try:
            numbers = tuple(int(part) for part in text.split(","))
        except ValueError:
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)
        if any(n < self.minimum for n in numbers) or (self.length and len(numbers) != self.length):
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)
        return numbers


class RunIdList(click.ParamType):
    """Comma-separated MLflow run IDs (32 hex characters each); empty means none."""

    name = "run_id_list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if not text:
            return ()
        ids = tuple(part.strip() for part in text.split(","))
        for run_id in ids:
            if not RUN_ID_PATTERN.match(run_id):
                self.fail(f"{run_id!r} is not an MLflow run ID (32 hexadecimal characters)", param, ctx)
        return ids


class RunId(RunIdList):
    """One MLflow run ID; with `optional`, an empty value means none (None)."""

    name = "run_id"

    def __init__(self, optional: bool = False):
        self.optional = optional

    def convert(self, value, param, ctx):
        ids = super().convert(value, param, ctx)
        if not ids and self.optional:
            return None
        if len(ids) != 1:
            self.fail(f"{value!r} is not one MLflow run ID (32 hexadecimal characters)", param, ctx)
        return ids[0]


def option(name: str, default, type_, help_: str, required: bool = False):
    """A click option `--name` whose value arrives as `name`; the decorator keeps its `name`."""
    decorator = click.option(
        f"--{name}", name, default=default, type=type_, help=help_, required=required,
        show_default=not required,
    )
    decorator.name = name
    return decorator


TRAIN = [
    option("dataset", "digits", click.Choice(DATASETS), "Dataset to train and evaluate on."),
    option("test_fraction", 0.25, click.FloatRange(0, 1, min_open=True, max_open=True),
            "Fraction of the dataset held out as the test split."),
    option("split_seed", 0, click.IntRange(min=0), "Seed of the train/test split."),
    option("hidden_layer_sizes", "64", IntList(minimum=1), "Hidden layer sizes, e.g. 64,32."),
    option("learning_rate", 0.001, click.FloatRange(min=0, min_open=True),
            "Initial learning rate (MLPClassifier learning_rate_init)."),
    option("epochs", 200, click.IntRange(min=1), "Maximum epochs (MLPClassifier max_iter)."),
    option("solver", "adam", click.Choice(SOLVERS), "Optimizer."),
    option("alpha", 0.0001, click.FloatRange(min=0), "L2 penalty."),
    option("batch_size", 64, click.IntRange(min=1), "Minibatch size."),
    option("random_state", 0, click.IntRange(min=0), "Seed of weight initialisation and shuffling."),
]

EVALUATE = [
    option("num_samples", 0, click.IntRange(min=0),
            "How many test images to evaluate, one run each (0 = the whole test split)."),
]

SHARD = [
    option("shard_index", 0, click.IntRange(min=0), "Which slice of the samples this run evaluates."),
    option("num_shards", 1, click.IntRange(min=1), "How many slices the samples are cut into."),
]

QUERY = [
    option("query", "tags.Correct = 'false'", str,
            "mlflow.search_runs filter string selecting evaluation samples to explain."),
    option("order_by", "metrics.Predicted_class_conf ASC", str,
            "Order of the query's results (comma-separated search_runs order_by clauses)."),
    option("max_images", 5, click.IntRange(min=1), "Largest number of images the query passes on."),
]

SALIENCY = [
    option("algorithm", "rise", click.Choice(ALGORITHMS), "Saliency algorithm."),
    option("n", 1000, click.IntRange(min=1), "RISE: number of random masks."),
    option("s", 4, click.IntRange(min=1), "RISE: grid resolution of the masks."),
    option("p1", 0.5, click.FloatRange(0, 1), "RISE: probability that a grid cell is kept."),
    option("seed", 0, click.IntRange(min=0), "RISE: seed of the masks."),
    option("debiased", True, click.BOOL, "RISE: debias the scores by p1 (true/false)."),
    option("window_size", "2,2", IntList(minimum=1, length=2),
            "Sliding window: window height,width in pixels."),
    option("stride", "1,1", IntList(minimum=1, length=2), "Sliding window: step height,width."),
    option("fill", 0.0, click.FloatRange(0, 1), "Value occluded pixels take (images are in [0, 1])."),
    option("picture_mode", "both", click.Choice(PICTURE_MODES),
            "Pictures: one file per class, one combined file, or both."),
    option("predict_batch_size", 256, click.IntRange(min=1),
            "How many perturbed images the classifier scores per call."),
]

DRIVER = [
    option("use_cache", True, click.BOOL,
           "Reuse a FINISHED step run with the same parameters, code version and upstream runs."),
    option("train_run_id", "", RunId(optional=True),
           "Start from this stored Train run instead of training (empty: train or reuse)."),
    option("evaluation_run_id", "", RunId(optional=True),
           "Start from this stored evaluation (its parent run) instead of evaluating."),
    option("shards", 1, click.IntRange(min=1),
           "Evaluate in this many concurrent evaluate runs, each over its own slice."),
]

TRAIN_RUN_ID = option("train_run_id", None, RunId(), "ID of a run of the Train experiment.", True)

SALIENCY_INPUTS = [
    option("train_run_id", "", RunId(optional=True),
           "ID of a run of the Train experiment (with image_ids)."),
    option("image_ids", "", IntList(minimum=0, allow_empty=True),
           "Comma-separated image IDs to explain (or to add, with update_run_id)."),
    option("evaluation_run_ids", "", RunIdList(),
           "Evaluation sample run IDs, one per image ID (optional)."),
    option("reproduce_run_id", "", RunId(optional=True),
           "Regenerate this stored saliency map run from its stored configuration."),
    option("update_run_id", "", RunId(optional=True),
           "Add the maps of image_ids to this stored saliency map run."),
]


def as_param(value) -> str:
    """A click-converted value back in the string form the MLproject parameters take."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def with_options(options: list[Callable]) -> Callable:
    """Apply a list of click options to a command, in declaration order."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def run_cli(command: click.Command, args: list[str] | None = None) -> None:
    """Run a click command so that any bad input ends in one `Error: ...` line and exit code 2.

    Click's standalone mode prints a usage block before the error; users of `mlflow run` never
    typed those flags, so the usage only hides the line that matters. A tracking store the
    process cannot use ends it the same way, up front (exit code 1, steps/store_check.py).
    """
    try:
        if "--help" not in (sys.argv[1:] if args is None else args):
            check_tracking_store()
        command.main(args=args, standalone_mode=False)
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
