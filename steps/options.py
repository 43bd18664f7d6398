"""Every user-facing parameter of every entry point, each declared once.

MLflow passes `-P` values through unchecked, so each parameter has a type that rejects bad
values with a message naming the parameter and what it accepts. A saliency algorithm declares
its own parameters (`steps/core/algorithms/`); the rest are declared here. The step CLIs and the
driver (`main.py`) build their options from these lists; MLproject must declare the same names,
types and defaults (tests/test_project_files.py checks).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Callable

import click

from steps import phases
from steps.core.algorithm import ALGORITHMS, PREDICT_BATCH_SIZE, algorithm_parameters
from steps.core.agreement import Configurations
from steps.core.image_dataset import DATA_PARAMETERS, SPLIT_PARAMETERS, split_choice  # noqa: F401
from steps.core.metrics import METRIC_PARAMETERS
from steps.core.model_input import MODEL_INPUT_PARAMETERS
from steps.core.image_models import MLP_PARAMETERS
from steps.core.errors import SaliencyFlowError
from steps.core.parameters import (BOOLEAN, TEXT, Choice, Float, Integer, IntList,  # noqa: F401
                                   Parameter, ParamType, TextList, as_param, values_of)
from steps.tracking import lifecycle
from steps.tracking.cluster import ClusterSpec
from steps.tracking.store_check import (DEBUG_ENV, RUN_ID_ENV, bound_server_retries,
                                        check_tracking_store, disk_error_message,
                                        server_lost_message, unreachable_server)

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
PICTURE_MODES = ("both", "combined", "per_class")
PICTURE_SCALES = ("shared", "per_class")  # as steps/core/plots.py's SCALES
option = Parameter


class RunIdList(TextList):
    """Comma-separated MLflow run IDs (32 hex characters each); empty means none."""

    name = "run_id_list"

    def convert(self, value, param=None, ctx=None):
        ids = super().convert(value, param, ctx)
        for run_id in ids:
            if not RUN_ID_PATTERN.match(run_id):
                self.fail(f"{run_id!r} is not an MLflow run ID (32 hexadecimal characters)", param, ctx)
        return ids


class RunId(RunIdList):
    """One MLflow run ID; with `optional`, an empty value means none (None)."""

    name = "run_id"

    def __init__(self, optional: bool = False):
        self.optional = optional

    def convert(self, value, param=None, ctx=None):
        ids = super().convert(value, param, ctx)
        if not ids and self.optional:
            return None
        if len(ids) != 1:
            self.fail(f"{value!r} is not one MLflow run ID (32 hexadecimal characters)", param, ctx)
        return ids[0]


class ModelUri(ParamType):
    """An MLflow model URI (`runs:/<run ID>/<path>`, `models:/<name>/<version>`,
    `models:/<name>@<alias>`, `models:/<name>/latest`, `models:/<model ID>`); empty means none
    (None)."""

    name = "model_uri"
    SCHEMES = ("runs:/", "models:/")

    def convert(self, value, param=None, ctx=None):
        text = str(value or "").strip()
        if not text:
            return None
        if not text.startswith(self.SCHEMES) or text.rstrip("/") in self.SCHEMES:
            self.fail(f"{text!r} is not an MLflow model URI; give runs:/<run ID>/<path>, "
                      "models:/<name>/<version> or models:/<name>@<alias>", param, ctx)
        return text


DATA = list(DATA_PARAMETERS)
SPLIT = list(SPLIT_PARAMETERS)

MODEL = [
    *MLP_PARAMETERS,
    option("register_as", "", TEXT,
           "Register the trained model under this name in the Model Registry (empty: do not)."),
]

TRAIN = DATA + SPLIT + MODEL

MODEL_URI = option("model_uri", "", ModelUri(),
                   "The model to evaluate and explain: runs:/<run ID>/<path>, "
                   "models:/<name>/<version>, models:/<name>@<alias> or models:/<name>/latest.")
#: How the images become the model's input and its output probabilities.
MODEL_INPUT = list(MODEL_INPUT_PARAMETERS)

class Cluster(ParamType):
    """Where a step's work runs: empty (its own process), local:N or tcp://host:port (Dask)."""

    name = "cluster"

    def convert(self, value, param=None, ctx=None):
        if isinstance(value, ClusterSpec) or value is None:
            return value
        try:
            return ClusterSpec.parse(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


CLUSTER = option("cluster", "", Cluster(),
                 "Run the step's work on a Dask cluster: local:N (N worker processes here) or "
                 "tcp://host:port (a running scheduler); empty: in the step's own process.")
#: Parameters that change where a step runs, not what it finds: a stored run stands in for a
#: new one whatever they were.
EXECUTION_ONLY = ("cluster",)

EVALUATE = [
    option("num_samples", 0, Integer(min=0),
           "How many test images to evaluate, one run each (0 = the whole test split)."),
    CLUSTER,
]


def resume_option(what: str) -> Callable:
    return option("resume_run_id", "", RunId(optional=True),
                  f"Finish this stopped step run: write only its missing {what} into it, with "
                  "its own parameters (only `cluster` may change), and end it FINISHED.")

DEFAULT_QUERY = "tags.Correct = 'false'"
#: What the driver explains when DEFAULT_QUERY finds no mistake: the least confident correct
#: answers.
FALLBACK_QUERY = "tags.Correct = 'true'"
FALLBACK_ORDER = "metrics.Predicted_class_conf ASC"
QUERY = [
    option("query", DEFAULT_QUERY, TEXT,
           "mlflow.search_runs filter string selecting evaluation samples to explain."),
    option("order_by", "metrics.Predicted_class_conf ASC", TEXT,
           "Order of the query's results (comma-separated search_runs order_by clauses)."),
    option("max_images", 5, Integer(min=1), "Largest number of images the query passes on."),
]

ALGORITHM = option("algorithm", "rise", Choice(ALGORITHMS.names()), "Saliency algorithm.")

#: How a saliency step makes and draws its maps, whatever the algorithm.
MAP_MAKING = [
    option("picture_mode", "both", Choice(PICTURE_MODES),
           "Pictures: one file per class, one combined file, or both."),
    option("top_classes", 0, Integer(min=0),
           "Picture the K most confident classes (the panels of all_classes.png, the "
           "class_<k>.png files), most confident first, and the true class after them when it "
           "is not among them (0: all classes, up to 10)."),
    option("picture_scale", "shared", Choice(PICTURE_SCALES),
           "Colour scale of a picture's class panels: one scale shared by all, in the model's "
           "confidence units where the map has them (`shared`), or each panel its own "
           "(`per_class`)."),
    option("predict_batch_size", PREDICT_BATCH_SIZE, Integer(min=1),
           "How many perturbed images the classifier scores per call."),
]

#: How the maps are scored: baselines, steps, random maps, the sanity check.
MAP_SCORING = list(METRIC_PARAMETERS)

#: The saliency step's maps served as an explainer model (steps/tracking/explainer_model.py).
REGISTER_EXPLAINER = option(
    "register_explainer", "", TEXT,
    "At the end of the saliency step, log its classifier and configuration as an explainer "
    "model and register it as a new version of this name (empty: do not); with compare, one "
    "version per configuration.")

SALIENCY = [ALGORITHM, *algorithm_parameters(), *MAP_MAKING, *MAP_SCORING, REGISTER_EXPLAINER]

COMPARE = option(
    "compare", "", Configurations(),
    "Explain each queried image with each of these algorithm configurations and compare the "
    "maps, e.g. rise,sliding_window or rise(s=8),sliding_window(stride=2,2) (empty: only "
    "`algorithm`).")

DRIVER = [
    option("use_cache", True, BOOLEAN,
           "Reuse a FINISHED step run with the same parameters, code version, data and upstream runs."),
    MODEL_URI,
    option("train_run_id", "", RunId(optional=True),
           "Start from this stored Train run's model instead of training (empty: train or reuse)."),
    option("evaluation_run_id", "", RunId(optional=True),
           "Start from this stored evaluation (its parent run) instead of evaluating."),
    COMPARE,
]

SALIENCY_INPUTS = [
    MODEL_URI,
    *MODEL_INPUT,
    *DATA,
    *SPLIT,  # which images the model was trained on: a map run's `Split` tag
    option("image_ids", "", TextList(),
           "Comma-separated image IDs to explain (or to add, with update_run_id)."),
    option("evaluation_run_ids", "", RunIdList(),
           "Evaluation sample run IDs, one per image ID (optional)."),
    option("reproduce_run_id", "", RunId(optional=True),
           "Regenerate this stored saliency map run from its stored configuration."),
    option("update_run_id", "", RunId(optional=True),
           "Add the maps of image_ids to this stored saliency map run."),
]

#: Each entry point's parameters, in MLproject's order.
ENTRY_POINTS = {
    "main": DRIVER + MODEL_INPUT + TRAIN + EVALUATE + QUERY + SALIENCY,
    "train": TRAIN,
    "evaluate": [MODEL_URI, *MODEL_INPUT, *DATA, *SPLIT, *EVALUATE,
                 resume_option("sample runs")],
    "saliency": SALIENCY_INPUTS + [CLUSTER, resume_option("map runs")] + SALIENCY,
    "explainer": [
        option("saliency_run_id", "", RunId(),
               "The saliency run to serve: a saliency step run (one of its map runs' stored "
               "configuration) or one map run."),
        option("register_as", "", TEXT,
               "Register the explainer model as a new version of this name (empty: only log "
               "it)."),
    ],
    "compare": [
        option("saliency_run_ids", "", RunIdList(),
               "Two or more FINISHED saliency step runs of the same model and images."),
    ],
    "report": [
        option("main_run_id", "", RunId(),
               "The main run of the pipeline whose report.html to rebuild (and log in it)."),
    ],
}


def as_typed(declarations, argv: list[str]) -> dict[str, str]:
    """Each declared option's value exactly as the user gave it (`-P name=value`): what the
    shell handed this process, before any conversion. MLflow logs string `-P` values
    shell-quoted, so this is where to read them back as typed."""
    declared = {f"--{d.name}" for d in declarations}
    return {flag[2:]: value for flag, value in zip(argv, argv[1:]) if flag in declared}


class ClickType(click.ParamType):
    """A declared parameter type as click's: its `ParameterError` becomes click's one-line
    error naming the option."""

    def __init__(self, declared: ParamType) -> None:
        self.declared = declared
        self.name = declared.name

    def convert(self, value, param, ctx):
        try:
            return self.declared.convert(value, param, ctx)
        except SaliencyFlowError as error:
            self.fail(str(error), param, ctx)

    def get_metavar(self, param, ctx=None):
        choices = getattr(self.declared, "choices", None)
        return f"[{'|'.join(choices)}]" if choices else None


def click_option(declaration: Parameter) -> Callable:
    """A declaration as a click option `--name` whose value arrives as `name`."""
    return click.option(f"--{declaration.name}", declaration.name, default=declaration.default,
                        type=ClickType(declaration.type), help=declaration.help,
                        required=declaration.required, show_default=not declaration.required)


def with_options(declarations: list[Parameter]) -> Callable:
    """Apply the declarations as click options to a command, in declaration order."""

    def decorate(func):
        for declaration in reversed(declarations):
            func = click_option(declaration)(func)
        return func

    return decorate


def as_click_error(error: SaliencyFlowError) -> click.BadParameter:
    """A core error as click's one line, naming the parameter that fixes it."""
    return click.BadParameter(str(error), param_hint=f"'--{error.param}'" if error.param else None)


def run_cli(command: click.Command, args: list[str] | None = None,
            failed_name: Callable[[dict[str, str]], str] | None = None) -> None:
    """Run a click command so that any failure ends in one `Error: ...` line and a non-zero exit.

    Click's standalone mode prints a usage block before the error; users of `mlflow run` never
    typed those flags, so the usage only hides the line that matters. A tracking store the
    process cannot use ends it the same way, up front (exit code 1, steps/tracking/store_check.py).
    Runs left RUNNING by processes of this host that were killed outright are ended first
    (steps/tracking/lifecycle.py). A signal ends the runs KILLED and says so in one line (a step
    the driver launched leaves the `Error:` line to the driver); an unexpected exception is one
    line too, with its traceback only when SALIENCY_FLOW_DEBUG is set. `failed_name(values)`,
    of the `-P` values as typed (defaults for the others), names the run `mlflow run` made when
    the process fails before naming it.
    """
    argv = sys.argv[1:] if args is None else args
    lifecycle.install_signal_handlers()
    bound_server_retries()
    under_driver = lifecycle.under_driver()
    launched_run_id = os.environ.get(RUN_ID_ENV)  # the command may take it out of the environment
    early_name = None
    if failed_name is not None:
        declared = [p for p in command.params if isinstance(p, click.Option)]
        early_name = failed_name({**{p.name: as_param(p.default) for p in declared},
                                  **as_typed([option(p.name, None, None, "") for p in declared],
                                             argv)})
    try:
        if "--help" not in argv:
            check_tracking_store()
            lifecycle.watch_parent()
            if not under_driver:  # the driver settled the store when it started
                lifecycle.reconcile_dead_runs()
        # Not `command.main`: on an interrupt it prints a blank line and hides the signal.
        with command.make_context(command.name, list(argv)) as context:
            phases.body_begins()
            try:
                command.invoke(context)
            except SaliencyFlowError as error:
                raise as_click_error(error) from None
    except click.exceptions.Exit as done:  # --help
        sys.exit(done.exit_code)
    except click.ClickException as error:
        lifecycle.record_early_failure(error, early_name)
        prefix = "" if getattr(error, "reported", False) else "Error: "
        click.echo(f"{prefix}{error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except (click.Abort, KeyboardInterrupt) as error:
        lifecycle.record_early_failure(error, early_name)
        if not under_driver:
            lifecycle.keep_killed_after_launcher(launched_run_id)
        signal_name = lifecycle.interruption(error) or "SIGINT"
        what = "the pipeline" if command.name == "main" else f"the {command.name} step"
        click.echo(f"{'' if under_driver else 'Error: '}{what} was interrupted by {signal_name}; "
                   "the runs it had opened are ended "
                   "KILLED and their unfinished results deleted (restorable). Run the same "
                   "command again to continue: finished steps are reused."
                   f"{'' if under_driver else lifecycle.resume_hint()}", err=True)
        sys.exit(128 + signal.Signals[signal_name].value)
    except Exception as error:
        lifecycle.record_early_failure(error, early_name)
        if os.environ.get(DEBUG_ENV):
            raise
        lost = unreachable_server(error)
        known = (server_lost_message(lost) if lost else
                 disk_error_message(error, lifecycle.failed_artifact_uri()))
        # The driver gives the resume command itself, but cannot ask a store that is gone.
        hint = lifecycle.resume_hint() if lost or not under_driver else ""
        if known:
            click.echo(f"Error: {known}{hint}", err=True)
            sys.exit(1)
        message = str(error).strip().splitlines()
        click.echo(f"Error: {type(error).__name__}: {message[0] if message else ''} (set "
                   f"{DEBUG_ENV}=1 for the traceback).{hint}", err=True)
        sys.exit(1)
    finally:  # everything is written and every run ended: a quick shutdown
        phases.quick_exit()
