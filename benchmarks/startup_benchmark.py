"""Where a small pipeline's time goes, read from its step runs' `Duration_<phase>_s` metrics, and
what the pinned model requirements and the quick exit save, each measured side by side.

1. `mlflow run <project> --env-manager local` with small `-P` values into a fresh SQLite store
   in a temporary directory: wall time, each step's phases (start-up, load, compute, write,
   pictures) and the share of the wall time outside the steps' work (Python start-up, imports,
   shutdown of every process, the driver's own work); then the same command again, unchanged
   (every step reused).
2. `mlflow.sklearn.log_model` of the train step's classifier with its pinned requirements (as
   the step logs it) and with MLflow inferring them in a subprocess (as before), in turns.
3. The evaluate step's CLI as it is (it ends with `gc.freeze()`) and with `gc.freeze` made a
   no-op in the child (as before), in turns: the time from its last line to its exit.
4. The floor, what the pipeline's processes pay before any of its code runs: `mlflow run` of a
   project whose entry point is `python -c pass`, and a bare process that imports MLflow and
   opens the store, as the driver and each step must; the pipeline's floor is the first plus
   one of the second per process, and no change inside the project goes below it.

    python benchmarks/startup_benchmark.py            # --help for sizes: --epochs, --n, ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from steps import store_names  # noqa: E402
from steps.core.image_dataset import flatten, load_dataset  # noqa: E402
from steps.core.image_models import ModelParams, train_classifier  # noqa: E402
from steps.train import log_classifier  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_benchmark import project_command  # noqa: E402

#: The step runs of a pipeline, by entry point, in the order they run.
STEPS = {"train": store_names.TRAIN_EXPERIMENT, "evaluate": store_names.EVALUATION_EXPERIMENT,
         "saliency": store_names.SALIENCY_EXPERIMENT}
WORK_PHASES = tuple(p for p in store_names.PHASES if p != store_names.STARTUP_PHASE)
#: A child process that runs a step's CLI as `python -m` would, with `gc.freeze` a no-op.
WITHOUT_QUICK_EXIT = ("import gc, runpy, sys; gc.freeze = lambda: None; "
                      "sys.argv[0] = 'steps.evaluate'; "
                      "runpy.run_module('steps.evaluate', run_name='__main__', alter_sys=True)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50, help="the pipeline's -P epochs")
    parser.add_argument("--num-samples", type=int, default=100,
                        help="the pipeline's -P num_samples (0: the whole test split)")
    parser.add_argument("--n", type=int, default=500, help="the pipeline's -P n (RISE masks)")
    parser.add_argument("--max-images", type=int, default=3, help="the pipeline's -P max_images")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of each side-by-side comparison (parts 2 and 3)")
    return parser.parse_args(argv)


def pipeline(store_dir: Path, uri: str, params: dict[str, object]) -> float:
    """Run the pipeline as a user would; its wall time in seconds."""
    return timed(project_command("main", params), store_dir, uri, "the pipeline")


def child_env(uri: str) -> dict[str, str]:
    """This environment without MLflow's run variables, the store `uri`, this Python first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def step_phases(client: MlflowClient) -> dict[str, dict[str, float]]:
    """Each step run's seconds per phase, by entry point (the newest run of each)."""
    found = {}
    for entry_point, experiment in STEPS.items():
        (run,) = client.search_runs(
            [client.get_experiment_by_name(experiment).experiment_id],
            f"tags.`{store_names.ENTRY_POINT_TAG}` = '{entry_point}'", max_results=1,
            order_by=["attributes.start_time DESC"])
        found[entry_point] = {p: run.data.metrics.get(store_names.duration_metric(p), 0.0)
                              for p in store_names.PHASES}
    return found


def main_run_seconds(client: MlflowClient) -> float:
    """How long the newest pipeline's main run was open (the driver's work, steps included)."""
    (run,) = client.search_runs(["0"], f"tags.`{store_names.ENTRY_POINT_TAG}` = 'main'",
                                max_results=1, order_by=["attributes.start_time DESC"])
    return (run.info.end_time - run.info.start_time) / 1000


def print_breakdown(wall: float, spent: dict[str, dict[str, float]], main_run: float) -> float:
    """Prints the phases by step and the share outside the steps' work; returns its seconds."""
    header = f"{'step':10}" + "".join(f"{p:>10}" for p in store_names.PHASES) + f"{'sum':>10}"
    print(header)
    for step, phases in spent.items():
        print(f"{step:10}" + "".join(f"{phases[p]:10.2f}" for p in store_names.PHASES)
              + f"{sum(phases.values()):10.2f}")
    work = sum(phases[p] for phases in spent.values() for p in WORK_PHASES)
    print(f"pipeline wall time {wall:.1f} s; the steps' work (load, compute, write, pictures) "
          f"{work:.1f} s; outside the work {wall - work:.1f} s = {(wall - work) / wall:.0%} "
          "(start-up, imports and shutdown of every process, the driver)")
    print(f"the main run was open {main_run:.1f} s: {wall - main_run:.1f} s went to `mlflow run`'s "
          "own process and the driver's start-up and exit")
    return wall - work


def log_model_side_by_side(rounds: int) -> tuple[float, float]:
    """Mean seconds of the train step's `log_model` with pinned and with inferred
    requirements, logged in turns into a fresh store."""
    data = load_dataset("digits")
    classifier = train_classifier(ModelParams(epochs=20, hidden_layer_sizes=(32,)),
                                  data.images[:1000], data.labels[:1000]).classifier
    features = flatten(data.images[:5])
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp, 'mlflow.db')}")
        for _ in range(rounds):
            for infer in (False, True):
                with mlflow.start_run():
                    began = time.perf_counter()
                    log_classifier(classifier, "model", features, infer_requirements=infer)
                    times[infer].append(time.perf_counter() - began)
        mlflow.set_tracking_uri(None)
    return statistics.mean(times[False]), statistics.mean(times[True])


def exit_time(uri: str, args: list[str], code: list[str]) -> tuple[float, float]:
    """Seconds from the child's last line to its exit, and its wall time."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, *code, *args], cwd=PROJECT_DIR, env=child_env(uri),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = began
    for _ in child.stdout:
        last = time.perf_counter()
    if child.wait():
        sys.exit(f"the evaluate step failed (exit code {child.returncode})")
    ended = time.perf_counter()
    return ended - last, ended - began


def quick_exit_side_by_side(uri: str, rounds: int) -> dict[str, tuple]:
    """The evaluate step alone on the pipeline's model, as it is and without the quick exit."""
    client = MlflowClient(uri)
    train = client.search_runs([client.get_experiment_by_name(STEPS["train"]).experiment_id],
                               max_results=1)[0]
    args = ["--model_uri", train.data.tags[store_names.MODEL_URI_TAG], "--num_samples", "20"]
    ways = {"as is (gc.freeze)": ["-m", "steps.evaluate"],
            "without gc.freeze": ["-c", WITHOUT_QUICK_EXIT]}
    times = {way: [] for way in ways}
    for _ in range(rounds):
        for way, code in ways.items():
            times[way].append(exit_time(uri, args, code))
    return {way: tuple(map(statistics.mean, zip(*measured))) for way, measured in times.items()}


#: A process that imports MLflow and opens the store, as every process of the pipeline does,
#: then exits as quickly as the steps do (`gc.freeze`).
BARE_PROCESS = ("import gc, mlflow, sys; from mlflow.tracking import MlflowClient; "
                "MlflowClient(sys.argv[1]).search_experiments(max_results=1); gc.freeze()")
#: A project whose one entry point does nothing: `mlflow run`'s own cost.
EMPTY_PROJECT = "name: empty\nentry_points:\n  main:\n    command: \"python -c pass\"\n"


def timed(args: list[str], cwd: Path, uri: str, what: str) -> float:
    """Wall seconds of a command (`what` it is, for its failure) that must succeed."""
    began = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=child_env(uri), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{what} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - began


def floor_side_by_side(store_dir: Path, uri: str, rounds: int) -> tuple[float, float]:
    """Mean seconds of `mlflow run` of an empty project and of a bare MLflow process, in turns,
    against the pipeline's store."""
    project = store_dir / "empty_project"
    project.mkdir()
    (project / "MLproject").write_text(EMPTY_PROJECT)
    empty_run = project_command("main", {}, project)
    bare = [sys.executable, "-c", BARE_PROCESS, uri]
    times = {"run": [], "bare": []}
    for _ in range(rounds):
        times["run"].append(timed(empty_run, store_dir, uri, "mlflow run of an empty project"))
        times["bare"].append(timed(bare, store_dir, uri, "a bare MLflow process"))
    return statistics.mean(times["run"]), statistics.mean(times["bare"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = {"epochs": args.epochs, "num_samples": args.num_samples, "n": args.n,
              "max_images": args.max_images}
    command = "mlflow run . --env-manager local " + " ".join(f"-P {k}={v}"
                                                              for k, v in params.items())
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp)
        uri = f"sqlite:///{store_dir / 'mlflow.db'}"
        print(f"1. {command}, into a fresh SQLite store")
        client = MlflowClient(uri)
        first = pipeline(store_dir, uri, params)
        outside = print_breakdown(first, step_phases(client), main_run_seconds(client))
        again = pipeline(store_dir, uri, params)
        print(f"the same again, unchanged (every step reused): {again:.1f} s "
              f"({again / first:.2f} of the first; its main run open "
              f"{main_run_seconds(client):.1f} s)\n")

        print(f"2. log_model of the train step's classifier, {args.rounds} turns each")
        pinned, inferred = log_model_side_by_side(args.rounds)
        print(f"pinned requirements (the step) {pinned:.2f} s; inferred by MLflow (before) "
              f"{inferred:.2f} s: {inferred / pinned:.1f}x, {inferred - pinned:.1f} s saved\n")

        print(f"3. the evaluate step alone (20 samples), {args.rounds} turns each")
        exits = quick_exit_side_by_side(uri, args.rounds)
        for way, (after_last_line, wall) in exits.items():
            print(f"{way:20} last line to exit {after_last_line:.2f} s, wall {wall:.2f} s")
        (new_exit, _), (old_exit, _) = exits.values()
        print(f"without / with gc.freeze: {old_exit / new_exit:.1f}x at exit, "
              f"{old_exit - new_exit:.2f} s saved a process\n")

        print(f"4. the floor, {args.rounds} turns each")
        empty_run, bare = floor_side_by_side(store_dir, uri, args.rounds)
        floor, floor_again = empty_run + (1 + len(STEPS)) * bare, empty_run + bare
        print(f"`mlflow run` of an empty project {empty_run:.2f} s; a process that imports "
              f"MLflow and opens the store {bare:.2f} s")
        print(f"the pipeline's floor (`mlflow run`, then the driver and {len(STEPS)} steps): "
              f"{floor:.1f} s = {floor / first:.0%} of its wall time; of the {outside:.1f} s "
              f"outside the work, {outside - floor:.1f} s are above it")
        print(f"unchanged (`mlflow run` and the driver): floor {floor_again:.1f} s = "
              f"{floor_again / again:.0%} of its wall time\n")

    processes = 1 + len(STEPS)  # the driver and the steps end through run_cli
    before = first + (inferred - pinned) + processes * (old_exit - new_exit)
    print(f"The pipeline before both (estimated: part 1 plus what parts 2 and 3 save, "
          f"{processes} processes): {before:.1f} s; now {first:.1f} s: {before / first:.2f}x")


if __name__ == "__main__":
    main()
