"""The driver: train -> evaluate -> query -> saliency, each step an `mlflow.run` nested in this run.

Run it as `mlflow run .` (entry point `main`). Steps hand each other a model URI (the train
step's logged or registered model, or the user's own `-P model_uri=...`, which skips training),
the query selects the images to explain with `mlflow.search_runs`, and its result is logged
here. With `-P compare=...` the saliency step runs once per algorithm configuration and a
compare step measures how far their maps agree. A step whose stored run matches (same
parameters, code version, data digest and upstream runs) is reused instead of run again, unless
`-P use_cache=false`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
from mlflow.entities import Run
from mlflow.exceptions import ExecutionException, MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENV

from steps import options, store_names
from steps.core.code_version import code_version
from steps.core.agreement import Configuration
from steps.core.image_dataset import ALL
from steps.core.parameters import text_items
from steps.core.model_input import flags_of
from steps.report import log_report
from steps.tracking import lifecycle, runs
from steps.tracking.inputs import (absolute_dataset, dataset_digest, load_data, load_model_inputs,
                                  refuse_training_images)
from steps.tracking.model_loading import ResolvedModel, resolve_model_uri
from steps.tracking.query import query_samples
from steps.tracking.step_cache import find_reusable_run
from steps.tracking.store_check import (TrackingStoreError, check_server_if_any, local_path,
                                        scheme_of, stop_retrying, unreachable_server)

PROJECT_DIR = Path(__file__).resolve().parent
NO_RUN_ID = "0" * 32


class StepFailed(click.ClickException):
    exit_code = 1

    def __init__(self, message: str, reported: bool = False) -> None:
        super().__init__(message)
        #: The step printed its own `Error:` line; the driver's line is then plain.
        self.reported = reported


def server_gone(entry_point: str) -> StepFailed:
    """The step stopped because the tracking server or database went away (the step said so);
    the driver's own clean-up stops retrying."""
    stop_retrying()
    return StepFailed(f"The {entry_point} step stopped: the tracking store is gone (above).",
                      reported=True)


def step_failure(entry_point: str, run) -> StepFailed | None:
    """Wait for a launched step; None if it succeeded, else why not, with its run settled
    (KILLED or FAILED, results hidden)."""
    if run.wait():
        return None
    try:
        check_server_if_any()
    except TrackingStoreError:
        return server_gone(entry_point)
    settled = lifecycle.settle(run.run_id)
    tags = settled.data.tags
    again = "run the same command again to continue: finished steps are reused"
    resume = resume_hint(entry_point, run.run_id)
    if store_names.ERROR_TAG in tags:
        return StepFailed(f"The {entry_point} step (run {run.run_id}) failed; its error is "
                          f"above. Fix it and {again}.{resume}", reported=True)
    how = (f"was interrupted by {tags[store_names.INTERRUPTED_TAG]}" if store_names.INTERRUPTED_TAG in tags
           else "was killed before it could end its runs (SIGKILL, out of memory, or lost)")
    return StepFailed(f"the {entry_point} step (run {run.run_id}) {how}; its runs are ended "
                      f"KILLED and its unfinished results deleted; {again}.{resume}")


def resume_hint(entry_point: str, run_id: str) -> str:
    """` To finish ... : <command>; ...` for a step run that can be resumed, else ''; the
    command runs the project as the main run was launched."""
    if not runs.resumable(run_id):
        return ""
    command = runs.resume_command(entry_point, run_id,
                                  MlflowClient().get_run(mlflow.active_run().info.run_id))
    return (f" To finish the {entry_point} step's run without redoing what it wrote: {command}"
            "; then the same command again reuses it.")


@dataclass
class Ended:
    """A step run that ran in this process: already ended, `succeeded` or not."""

    run_id: str
    succeeded: bool

    def wait(self) -> bool:
        return self.succeeded

    def cancel(self) -> None:
        pass


def launched_since(entry_point: str, experiment_id: str, began_ms: int) -> list[str]:
    """The runs of `entry_point` nested under the active (main) run started since `began_ms`,
    newest first."""
    parent = mlflow.active_run().info.run_id
    return [run.info.run_id for run in MlflowClient().search_runs(
        [experiment_id], f"tags.`{store_names.PARENT_RUN_TAG}` = '{parent}' AND "
        f"tags.`{store_names.ENTRY_POINT_TAG}` = '{entry_point}' AND "
        f"attributes.start_time >= {began_ms - 1000}",
        order_by=["attributes.start_time DESC"])]


@dataclass
class Driver:
    """Runs or reuses steps inside the main run and records what it did there."""

    env_manager: str
    use_cache: bool
    version: str
    #: Tags a stored step run must carry to stand in for a new one (the data's digest).
    required_tags: dict[str, str]

    def _stored(self, entry_point: str, experiment_id: str, parameters: dict[str, str]):
        """The ID of a stored run that can stand in for this one, if reuse is on and one exists."""
        if not self.use_cache:
            return None
        matching = {k: v for k, v in parameters.items() if k not in options.EXECUTION_ONLY}
        stored = find_reusable_run(experiment_id, entry_point, matching, self.version,
                                   self.required_tags)
        if stored is None:
            return None
        click.echo(f"=== {entry_point}: reusing FINISHED run {stored.info.run_id} "
                   "(same parameters, code version, data and upstream runs) ===")
        return stored.info.run_id

    def _launch(self, entry_point: str, experiment_id: str, parameters: dict[str, str],
                alone: bool):
        """Start the step. Alone, it runs in this process's `mlflow.run` (in the driver's
        process group, with no `mlflow run` process of its own between them) and is done when
        this returns; otherwise it starts in the background."""
        click.echo(f"=== {entry_point} ===")
        if not alone:
            return mlflow.run(str(PROJECT_DIR), entry_point, parameters=parameters,
                              experiment_id=experiment_id, env_manager=self.env_manager,
                              synchronous=False)
        began = int(time.time() * 1000)
        try:
            run = mlflow.run(str(PROJECT_DIR), entry_point, parameters=parameters,
                             experiment_id=experiment_id, env_manager=self.env_manager)
            return Ended(run.run_id, True)
        except ExecutionException as error:
            launched = launched_since(entry_point, experiment_id, began)
            if not launched:
                raise StepFailed(f"the {entry_point} step could not start ({error})") from None
            return Ended(launched[0], False)
        except MlflowException as error:  # `mlflow.run` could not record the step's end
            if not unreachable_server(error):
                raise
            raise server_gone(entry_point) from None

    def step(self, entry_point: str, experiment: str, parameters: dict[str, str]) -> str:
        """The run ID of the step: a matching stored run, or a new nested `mlflow.run`."""
        return self.steps(entry_point, experiment, [parameters])[0]

    def steps(self, entry_point: str, experiment: str, parameter_sets: list[dict[str, str]]
              ) -> list[str]:
        """Runs of one entry point, all started at once (e.g. one per configuration); waits
        for all.

        Each is reused when a matching stored run exists. A failed run fails the step, after
        every other run has finished. Interrupted, the driver stops its step processes (they
        end their runs KILLED) and settles their runs before it ends.
        """
        experiment_id = runs.experiment_id(experiment)
        stored = [self._stored(entry_point, experiment_id, p) for p in parameter_sets]
        alone = sum(run_id is None for run_id in stored) == 1
        run_ids, submitted = [], []
        began = int(time.time() * 1000)
        try:
            for parameters, stored_id in zip(parameter_sets, stored):
                if stored_id is None:
                    run = self._launch(entry_point, experiment_id, parameters, alone)
                    submitted.append(run)
                run_ids.append(stored_id or run.run_id)
            failures = [failure for run in submitted
                        if (failure := step_failure(entry_point, run)) is not None]
        except BaseException as error:
            for run in submitted:
                run.cancel()  # SIGTERM; waits for the step to end its runs
            lifecycle.note_failure(error)
            try:
                for run_id in launched_since(entry_point, experiment_id, began):
                    lifecycle.settle(run_id)
                    if hint := resume_hint(entry_point, run_id):
                        lifecycle.note_resume_hint(hint.strip())
            except MlflowException:
                pass  # the store is what failed; the next start settles them
            raise
        if failures:
            # One a step did not report itself first: its line is the only word of it.
            raise min(failures, key=lambda failure: failure.reported)
        reused = [run_id for run_id in stored if run_id is not None]
        if reused:
            mlflow.set_tag(f"{store_names.REUSED_TAG_PREFIX}{entry_point}", ",".join(reused))
        return run_ids

    def resume(self, entry_point: str, run_id: str) -> str:
        click.echo(f"=== {entry_point}: starting from stored run {run_id} ===")
        mlflow.set_tag(f"{store_names.RESUMED_TAG_PREFIX}{entry_point}", run_id)
        return run_id


def trained_model(train_run_id: str) -> ResolvedModel:
    """The model a Train run made: its registered version if it registered one, else its
    logged model."""
    tags = MlflowClient().get_run(train_run_id).data.tags
    if store_names.REGISTERED_MODEL_TAG in tags:
        return resolve_model_uri(f"models:/{tags[store_names.REGISTERED_MODEL_TAG]}")
    if store_names.MODEL_URI_TAG not in tags:
        raise click.BadParameter(f"train run {train_run_id} has no {store_names.MODEL_URI_TAG} tag",
                                 param_hint="'--train_run_id'")
    return resolve_model_uri(tags[store_names.MODEL_URI_TAG], "train_run_id")


@dataclass
class StartingPoint:
    """What the user asked to start from: a model, a stored train run or a stored evaluation."""

    model: ResolvedModel | None
    train_run_id: str | None
    evaluation_run_id: str | None


def starting_point(model_uri, train_run_id, evaluation_run_id) -> StartingPoint:
    """Check the model and stored runs the user gave, and that they agree with each other."""
    if model_uri and train_run_id:
        raise click.BadParameter("give model_uri or train_run_id, not both",
                                 param_hint="'--model_uri'")
    model = resolve_model_uri(model_uri) if model_uri else None
    if train_run_id:
        runs.require_run(train_run_id, store_names.TRAIN_EXPERIMENT, "train_run_id")
        model = trained_model(train_run_id)
    if evaluation_run_id:
        evaluation = runs.require_run(evaluation_run_id, store_names.EVALUATION_EXPERIMENT,
                                      "evaluation_run_id")
        tags = evaluation.data.tags
        if store_names.EVALUATION_PARENT_TAG in tags:
            raise click.BadParameter(
                f"run {evaluation_run_id} is one image's sample run; give its evaluation "
                f"(parent) run {tags[store_names.EVALUATION_PARENT_TAG]}",
                param_hint="'--evaluation_run_id'")
        evaluated = tags.get(store_names.MODEL_URI_TAG)
        if model is not None and model.uri != evaluated:
            raise click.BadParameter(
                f"evaluation run {evaluation_run_id} evaluated model {evaluated}, not "
                f"{model.uri}", param_hint="'--evaluation_run_id'")
        model = resolve_model_uri(evaluated, "evaluation_run_id")
        train_run_id = tags.get(store_names.TRAIN_RUN_TAG)
    return StartingPoint(model, train_run_id, evaluation_run_id)


def saliency_parameter_sets(values: dict) -> list[dict[str, str]]:
    """The saliency step's parameters for each configuration to run: `-P compare=...`'s, or
    `algorithm` alone. Only the parameters the algorithm uses are passed, so a stored run
    stands in whatever the others are."""
    making = options.values_of(options.MAP_MAKING + options.MAP_SCORING, values)
    if values[options.REGISTER_EXPLAINER.name]:  # passed only when set: stored runs stand in
        making.update(options.values_of([options.REGISTER_EXPLAINER], values))
    return [{**{k: options.as_param(v) for k, v in algorithm.used_params().items()}, **making}
            for algorithm in saliency_configurations(values)]


def saliency_configurations(values: dict) -> list:
    """The algorithms to explain with: `-P compare=...`'s, or `algorithm` alone."""
    configurations = values["compare"] or (Configuration(values["algorithm"]),)
    return [configuration.algorithm(values) for configuration in configurations]


def headline_metrics(evaluation_id: str, saliency_ids: list[str]) -> dict[str, float]:
    """The evaluation's accuracy and, of the first saliency run, how many maps it made and how
    far they can be trusted."""
    client = MlflowClient()
    metrics = {store_names.TEST_ACCURACY_METRIC: client.get_run(evaluation_id).data.metrics["accuracy"]}
    if not saliency_ids:
        return {**metrics, store_names.MAPS_EXPLAINED_METRIC: 0}
    saliency = client.get_run(saliency_ids[0]).data
    explained = len(text_items(saliency.tags[store_names.IMAGE_IDS_TAG]))
    return {**metrics, store_names.MAPS_EXPLAINED_METRIC: explained,
            **{name: saliency.metrics[name] for name in store_names.HEADLINE_MAP_METRICS
               if name in saliency.metrics}}


def pipeline_run_name(values: dict) -> str:
    """`pipeline · digits · rise`: the data and the algorithms, for the UI's runs table."""
    algorithms = " vs ".join(str(algorithm) for algorithm in saliency_configurations(values))
    return store_names.run_name(Path(values["dataset"]).name, algorithms,
                          head=store_names.PIPELINE_RUN_NAME)


def check_before_any_run(values: dict, image_shape: tuple[int, ...] | None) -> None:
    """Settings that cannot work, refused before any run: algorithm settings that do not fit
    the images (when their shape is known here; the saliency step checks them at its start
    anyway)."""
    if image_shape is not None:
        for algorithm in saliency_configurations(values):
            algorithm.check_image(image_shape)


def describe_experiment(experiment_id: str) -> None:
    """Say what the pipeline's runs are in the main run's experiment and give it the results
    view, unless it has them already."""
    client = MlflowClient()
    runs.describe_experiment(client, client.get_experiment(experiment_id),
                             store_names.PIPELINE_DESCRIPTION, store_names.PIPELINE_VIEW_COLUMNS)


def write_report(main_run_id: str) -> None:
    """Log the pipeline's report; a failure to write it is a warning, not a lost pipeline."""
    try:
        log_report(main_run_id, status="FINISHED")  # its last act: the run ends with it
    except Exception as error:  # noqa: BLE001 - the results are safe in their runs
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        click.echo(f"Warning: could not write {store_names.REPORT_ARTIFACT} ({first_line}); rebuild "
                   f"it with: mlflow run . -e report -P main_run_id={main_run_id}", err=True)


def report_location(run: Run, tracking_uri: str) -> str:
    """Where to open the main run's report: its file when the artifacts are on this machine,
    its page in the MLflow UI of a tracking server, else how to download it."""
    local = local_path(run.info.artifact_uri)
    if local is not None:
        return str(Path(local[0]) / store_names.REPORT_ARTIFACT)
    if scheme_of(tracking_uri) in ("http", "https"):
        return (f"{tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/"
                f"{run.info.run_id}/artifactPath/{store_names.REPORT_ARTIFACT}")
    return (f"{store_names.REPORT_ARTIFACT} in the main run: mlflow artifacts download -r "
            f"{run.info.run_id} -a {store_names.REPORT_ARTIFACT}")


#: Where `mlflow ui` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_hint(tracking_uri: str) -> str:
    if is_server(tracking_uri):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def results_view_address(run: Run, tracking_uri: str) -> str:
    """The main run's experiment's runs table in the results view (`describe_experiment`), in
    the tracking server's UI, or in `mlflow ui` at its default address."""
    ui = tracking_uri.rstrip("/") if is_server(tracking_uri) else LOCAL_UI
    return (f"{ui}/#/experiments/{run.info.experiment_id}/runs?viewStateShareKey="
            f"{store_names.RESULTS_VIEW}")


def checked_data(values: dict, start) -> tuple[str, tuple | None]:
    """The dataset's digest and image shape, once the data and the starting model are checked.

    Bad data, or a model that does not take it, is one line before any step run exists: the
    images are decoded here, unless a finished step already read this very content."""
    if start.model is not None:
        inputs = load_model_inputs(None, values["dataset"], values["image_size"], start.model,
                                   input_flags=flags_of(values))
        if values["eval_split"] == ALL:
            refuse_training_images(inputs)
        return inputs.data.digest, inputs.data.dataset.image_shape
    digest = dataset_digest(values["dataset"], values["image_size"])
    seen = runs.finished_run_tagged([store_names.TRAIN_EXPERIMENT,
                                     store_names.EVALUATION_EXPERIMENT],
                                    store_names.DATASET_DIGEST_TAG, digest)
    if seen is None:
        return digest, load_data(values["dataset"], values["image_size"]).dataset.image_shape
    shape = seen.data.tags.get(store_names.IMAGE_SHAPE_TAG)
    return digest, tuple(map(int, shape.split("x"))) if shape else None


def model_stage(driver: Driver, start, train_run_id: str | None, values: dict,
                summary: dict) -> ResolvedModel:
    """The model to explain: given, taken from a stored Train run, or trained."""
    model = start.model
    if start.train_run_id:
        train_id = (driver.resume("train", start.train_run_id) if train_run_id
                    else start.train_run_id)
    elif model is None:
        train_id = driver.step("train", store_names.TRAIN_EXPERIMENT,
                               options.values_of(options.TRAIN, values))
        model = trained_model(train_id)
    else:
        train_id = None
    if train_id:
        mlflow.set_tag(store_names.TRAIN_RUN_TAG, train_id)
        summary["Train run"] = train_id
    mlflow.set_tags(model.lineage_tags())
    summary["Model"] = model.uri + (f" (version {model.version})" if model.version else "")
    return model


def evaluation_stage(driver: Driver, start, model: ResolvedModel, values: dict,
                     data_params: dict, summary: dict) -> tuple[str, dict]:
    """The evaluation's run ID (stored, resumed or new) and the split parameters of its
    samples."""
    split_params = options.values_of(options.SPLIT, values)
    if start.evaluation_run_id:
        evaluation_id = driver.resume("evaluate", start.evaluation_run_id)
        # Its samples are the test images of its own split: the maps' `Split` tags say so.
        stored = MlflowClient().get_run(start.evaluation_run_id).data.params
        split_params = {k: stored.get(k, v) for k, v in split_params.items()}
    else:
        evaluation_id = driver.step("evaluate", store_names.EVALUATION_EXPERIMENT, {
            "model_uri": model.uri, **data_params,
            **options.values_of(options.SPLIT + options.EVALUATE, values)})
    mlflow.set_tag(store_names.EVALUATION_RUN_TAG, evaluation_id)
    summary["Evaluation run"] = evaluation_id
    return evaluation_id, split_params


def queried_samples(evaluation_id: str, values: dict):
    """The evaluation samples the query selects, and the values with the query that selected
    them: when the default query finds no mistake, the least confident correct answers."""
    samples = query_samples(evaluation_id, values["query"], values["order_by"],
                            values["max_images"])
    if samples.empty and values["query"] == options.DEFAULT_QUERY:
        samples = query_samples(evaluation_id, options.FALLBACK_QUERY,
                                options.FALLBACK_ORDER, values["max_images"])
        click.echo(f"The model got every evaluated image right: explaining the "
                   f"{len(samples)} it is least confident about instead (query "
                   f"{options.FALLBACK_QUERY}, order {options.FALLBACK_ORDER})")
        values = {**values, "query": options.FALLBACK_QUERY,
                  "order_by": options.FALLBACK_ORDER}
        mlflow.set_tags({store_names.QUERY_TAG: values["query"],
                         store_names.ORDER_BY_TAG: values["order_by"]})
    mlflow.log_text(samples.to_csv(index=False), store_names.QUERY_RESULT_ARTIFACT)
    mlflow.set_tag(store_names.QUERY_MATCHES_TAG, len(samples))
    return samples, values


def saliency_stage(driver: Driver, evaluation_id: str, samples, values: dict,
                   step_inputs: dict, summary: dict) -> list[str]:
    """The saliency step runs of the queried images (one per configuration compared), and
    their comparison when there are several."""
    if samples.empty:
        click.echo(f"The query {values['query']!r} matched no evaluation sample of run "
                   f"{evaluation_id}; no saliency maps made. Try a broader -P query=...")
        return []
    image_ids = options.as_param(tuple(samples[f"tags.{store_names.IMAGE_ID_TAG}"]))
    click.echo(f"Query {values['query']!r} selected images {image_ids}")
    mlflow.set_tag(store_names.QUERIED_IMAGES_TAG, image_ids)
    inputs = {**step_inputs, "image_ids": image_ids,
              "evaluation_run_ids": ",".join(samples["run_id"]),
              **options.values_of([options.CLUSTER], values)}
    saliency_ids = driver.steps("saliency", store_names.SALIENCY_EXPERIMENT, [
        {**inputs, **parameters} for parameters in saliency_parameter_sets(values)])
    mlflow.set_tag(store_names.SALIENCY_RUN_TAG, ",".join(saliency_ids))
    summary["Saliency run" if len(saliency_ids) == 1 else "Saliency runs"] = \
        ",".join(saliency_ids)
    if len(saliency_ids) > 1:
        comparison_id = driver.step("compare", store_names.SALIENCY_EXPERIMENT,
                                    {"saliency_run_ids": ",".join(saliency_ids)})
        mlflow.set_tag(store_names.COMPARISON_RUN_TAG, comparison_id)
        summary["Comparison run"] = comparison_id
    return saliency_ids


def print_summary(summary: dict, main_run: Run) -> None:
    uri = mlflow.get_tracking_uri()
    click.echo("\nPipeline finished.")
    for label, run_id in summary.items():
        click.echo(f"  {label + ':':18}{run_id}")
    click.echo(f"  {'Tracking URI:':18}{uri}")
    click.echo(f"  {'Report:':18}{report_location(main_run, uri)}")
    click.echo(f"  {'Open the UI:':18}{ui_hint(uri)}")
    click.echo(f"  {'Results table:':18}{results_view_address(main_run, uri)}")


@click.command(help=__doc__)
@options.with_options(options.ENTRY_POINTS["main"])
def main(use_cache, model_uri, train_run_id, evaluation_run_id, **values):
    # Fail on a bad filter string, data or starting point now, not after training.
    query_samples(NO_RUN_ID, values["query"], values["order_by"], 1)
    values["dataset"] = absolute_dataset(values["dataset"])
    start = starting_point(model_uri, train_run_id, evaluation_run_id)
    if values["eval_split"] == ALL and (start.model is None or start.train_run_id):
        raise click.BadParameter("eval_split=all evaluates every image, which leaves none to "
                                 "train on; give a model_uri trained elsewhere, or eval_split="
                                 "test", param_hint="'--eval_split'")
    digest, image_shape = checked_data(values, start)
    check_before_any_run(values, image_shape)

    os.environ[lifecycle.DRIVER_PID_ENV] = str(os.getpid())  # the steps watch this process
    with lifecycle.run_context(tags={**lifecycle.process_tags(),
                                     store_names.RUN_NAME_TAG: pipeline_run_name(values),
                                     store_names.QUERY_TAG: values["query"],
                                     store_names.ORDER_BY_TAG: values["order_by"]}) as main_run:
        mlflow.log_dict(options.as_typed(options.ENTRY_POINTS["main"], sys.argv[1:]),
                        store_names.PARAMETERS_ARTIFACT)
        describe_experiment(main_run.info.experiment_id)
        # MLflow does not pass its environment manager on to nested `mlflow.run` calls.
        driver = Driver(env_manager=main_run.data.tags.get(MLFLOW_PROJECT_ENV, "local"),
                        use_cache=use_cache, version=code_version(),
                        required_tags={store_names.DATASET_DIGEST_TAG: digest})
        mlflow.set_tag(store_names.DATASET_DIGEST_TAG, digest)
        summary = {"Main run": main_run.info.run_id}

        model = model_stage(driver, start, train_run_id, values, summary)
        data_params = {**options.values_of(options.MODEL_INPUT, values),
                       **options.values_of(options.DATA, values)}
        evaluation_id, split_params = evaluation_stage(driver, start, model, values,
                                                       data_params, summary)
        samples, values = queried_samples(evaluation_id, values)
        saliency_ids = saliency_stage(driver, evaluation_id, samples, values,
                                      {"model_uri": model.uri, **data_params, **split_params},
                                      summary)
        mlflow.log_metrics(headline_metrics(evaluation_id, saliency_ids))
        runs.describe("Pipeline: " + ", ".join(f"{label.lower()} `{value}`"
                                                for label, value in summary.items()
                                                if label != "Main run")
                      + f". Results on one page: `{store_names.REPORT_ARTIFACT}`.")
        write_report(main_run.info.run_id)
    print_summary(summary, main_run)


if __name__ == "__main__":
    options.run_cli(main, failed_name=lambda typed: store_names.run_name(
        Path(typed["dataset"]).name, typed["compare"] or typed["algorithm"],
        head=store_names.PIPELINE_RUN_NAME))
