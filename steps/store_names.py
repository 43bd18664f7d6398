"""Every experiment, tag, parameter-as-logged and artifact name the project writes or reads.

One place, so a name a user searches for (`tags.Image_id = '...'`) is spelled the same by every
step, the driver, the tests and the README. Importable with no dependency at all.
"""

# Experiments, one per stage.
TRAIN_EXPERIMENT = "Train"
EVALUATION_EXPERIMENT = "Evaluation"
SALIENCY_EXPERIMENT = "Saliency Map Generation"
EXPLAINER_EXPERIMENT = "Explainers"

# MLflow's own tags.
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
ENTRY_POINT_TAG = "mlflow.project.entryPoint"
#: A run's or an experiment's description, shown by the MLflow UI (Markdown).
NOTE_TAG = "mlflow.note.content"

#: What each stage experiment holds, as its description in the MLflow UI: plain text, what
#: it is first, since the experiment list shows the first few words as they are written.
EXPERIMENT_DESCRIPTIONS = {
    "Train": "Trained classifiers: one run each, with its parameters, data, loss curve and "
             "model (saliency-flow's train step).",
    "Evaluation": "Evaluations: a parent run per evaluation (metrics, confusion matrix, curves, "
                  "the results.json table) and, under it, one run per test image (Image_id, "
                  "GT_class, Predicted_class, Correct, class confidences); find them with "
                  "tags.Evaluation_parent_run_id = '<run ID>' (saliency-flow's evaluate step).",
    "Saliency Map Generation": "Saliency maps: a run per algorithm configuration (summary "
                               "grid, metric averages) and, under it, one run per explained "
                               "image (map, pictures, faithfulness metrics, the configuration "
                               "that regenerates it); compare runs measure how far "
                               "configurations agree (saliency-flow's saliency step).",
    "Explainers": "Explainer models: one run per explainer logged from a saliency run (the "
                  "classifier, the stored configuration, class names and input convention as "
                  "one pyfunc model that mlflow models serve serves); Explainer_source_run_id "
                  "names the saliency run (saliency-flow's explainer step).",
}
#: The driver's (main) run: its name, and the description of its experiment if it has none.
PIPELINE_RUN_NAME = "pipeline"
PIPELINE_DESCRIPTION = ("Pipelines (mlflow run .): each run links its train, evaluate and "
                        "saliency runs by tags and holds report.html, the pipeline's results "
                        "on one page (saliency-flow).")

#: Run names say what a run is at a glance in the UI's runs table: parts joined by this, the
#: outcome early (the table's name column shows the first 25 or so characters; the run's page
#: and a wider column show all), each name at most RUN_NAME_WIDTH characters.
RUN_NAME_JOIN = " · "
RUN_NAME_WIDTH = 48


def shortened(text: str, width: int) -> str:
    """`text` cut in the middle with an ellipsis to at most `width` characters."""
    if len(text) <= width:
        return text
    keep = width - 1
    return f"{text[:keep - keep // 2]}…{text[len(text) - keep // 2:]}"


def run_name(*parts: str, head: str = "") -> str:
    """`head · part · part`, the longest part shortened where the whole would be too wide."""
    texts = [text for text in (head, *map(str, parts)) if text]
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    over = len(RUN_NAME_JOIN.join(texts)) - RUN_NAME_WIDTH
    if over > 0:
        texts[longest] = shortened(texts[longest], max(8, len(texts[longest]) - over))
    return RUN_NAME_JOIN.join(texts)


def image_run_name(image_id: str, predicted: str, correct: bool) -> str:
    """`image-circle/019.png · square ✗`: an evaluation sample's or a map's run."""
    return run_name(f"image-{image_id}", f"{predicted} {'✓' if correct else '✗'}")


def evaluation_run_name(images: int, accuracy: float) -> str:
    """`evaluate · 97.6% · 450 images`."""
    return run_name(f"{accuracy:.1%}", f"{images} images", head="evaluate")


def saliency_run_name(algorithm: str, beating: int | None = None, maps: int = 0) -> str:
    """`saliency · 3/5 beat random · rise(n=1000)`; `saliency · rise(n=1000)` before the maps
    are made."""
    if beating is None:
        return run_name(algorithm, head="saliency")
    return run_name(f"{beating}/{maps} beat random", algorithm, head="saliency")


# An image's identity and outcome, on every per-sample and per-map run.
IMAGE_ID_TAG = "Image_id"
GT_CLASS_TAG = "GT_class"
PREDICTED_CLASS_TAG = "Predicted_class"
CORRECT_TAG = "Correct"
PREDICTED_CONF_METRIC = "Predicted_class_conf"
#: Which part of the dataset's train/test split (the run's `test_fraction`, `split_seed`) the
#: image is in: `test` for every evaluation sample; on a map run `train` means the model was
#: explained on an image it was trained on.
SPLIT_TAG = "Split"
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


def class_conf_metric(class_name: str) -> str:
    """`Class_<name>_conf`, the name made safe for an MLflow metric key."""
    return f"Class_{metric_safe(class_name)}_conf"


def metric_safe(name: str) -> str:
    """`name` with every character MLflow does not allow in a metric key replaced by `_`."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(name))


# Lineage: which runs a result came from.
CODE_VERSION_TAG = "Code_version"
TRAIN_RUN_TAG = "Train_run_id"
MODEL_URI_TAG = "Model_uri"
MODEL_VERSION_TAG = "Model_version"
MODEL_ALIAS_TAG = "Model_alias"
REGISTERED_MODEL_TAG = "Registered_model"
DATASET_TAG = "Dataset"
DATASET_DIGEST_TAG = "Dataset_digest"
IMAGE_SHAPE_TAG = "Image_shape"
# The model's input convention as resolved (steps/core/model_input.py), on every evaluation,
# saliency and map run; `Input_convention_from` says where each fact came from.
INPUT_LAYOUT_TAG = "Input_layout"
INPUT_SCALE_TAG = "Input_scale"
INPUT_MEAN_TAG = "Input_mean"
INPUT_STD_TAG = "Input_std"
MODEL_OUTPUT_TAG = "Model_output"
INPUT_SOURCES_TAG = "Input_convention_from"
#: The key of a map's stored configuration that holds the convention it was made with.
MODEL_INPUT_CONFIG_KEY = "model_input"
#: ... and the one that holds how its metrics were computed (baselines resolved to values).
METRICS_CONFIG_KEY = "map_metrics"


def image_shape_tag(shape) -> str:
    """`8x8` or `64x64x3`: height, width and channels as the `Image_shape` tag gives them."""
    return "x".join(map(str, shape))
EVALUATION_RUN_TAG = "Evaluation_run_id"
EVALUATION_PARENT_TAG = "Evaluation_parent_run_id"
SALIENCY_RUN_TAG = "Saliency_run_id"
SALIENCY_PARENT_TAG = "Saliency_parent_run_id"
#: On an evaluation run: "true" when each of its sample runs carries the tag
#: `sample_key(<its run ID>)` = "true", which the query between evaluation and saliency searches
#: by (a tag key is indexed, a tag value is not: steps/tracking/query.py).
SAMPLES_KEYED_TAG = "Samples_keyed"


def sample_key(evaluation_run_id: str) -> str:
    """`Sample_of_<evaluation run ID>`: the key of the tag that names a sample run's evaluation."""
    return f"Sample_of_{evaluation_run_id}"

STEP_RUN_TAG = "Step_run_id"

# The process that writes a step or driver run: what tells later that it is gone.
PROCESS_HOST_TAG = "Process_host"
PROCESS_ID_TAG = "Process_id"
PROCESS_START_TAG = "Process_start"
#: Why a run did not finish: the signal that stopped it, or its error's first line.
INTERRUPTED_TAG = "Interrupted_by"
ERROR_TAG = "Error"
#: On a step run that did not finish: how many of its sample or map runs were soft-deleted.
RESULTS_DELETED_TAG = "Unfinished_results_deleted"
#: On a step run resumed with `-P resume_run_id`: how many times.
RESUME_COUNT_TAG = "Resumed"
# A step's work on a Dask cluster (steps/tracking/cluster.py): on each sample or map run, the
# partition it belongs to and the worker that wrote it; on the step run, the cluster.
PARTITION_TAG = "Partition"
WORKER_TAG = "Dask_worker"
CLUSTER_TAG = "Dask_cluster"
#: The step run's artifact folder where each worker writes a file (named after its address)
#: before any partition, to prove it can write into the artifact store the step reads.
WORKERS_DIR = "dask_workers"
#: On a step run: the token of its current attempt, replaced by each attempt on a cluster and
#: by each resume; on each sample or map run a cluster wrote, the attempt that wrote it. A
#: partition writes only while its attempt is the step run's (steps/tracking/cluster.py).
ATTEMPT_TAG = "Dask_attempt"

# Where a step run's process spent its time: each phase as metric `Duration_<phase>_s`
# (seconds): `Duration_startup_s` (from the process's start to the step's own work: Python,
# imports, the tracking-store check), `Duration_load_s` (data, model, stored runs),
# `Duration_compute_s`, `Duration_write_s` (MLflow records and artifacts), `Duration_pictures_s`.
STARTUP_PHASE = "startup"
LOAD_PHASE = "load"
COMPUTE_PHASE = "compute"
WRITE_PHASE = "write"
PICTURES_PHASE = "pictures"
PHASES = (STARTUP_PHASE, LOAD_PHASE, COMPUTE_PHASE, WRITE_PHASE, PICTURES_PHASE)


def duration_metric(phase: str) -> str:
    """`Duration_<phase>_s`: the metric of a step run's time in one phase, in seconds."""
    return f"Duration_{phase}_s"


# Driver (main run) tags.
QUERIED_IMAGES_TAG = "Queried_image_ids"
QUERY_MATCHES_TAG = "Query_matches"
#: The query and its order as the user typed them (MLflow logs string params shell-quoted).
QUERY_TAG = "Query"
ORDER_BY_TAG = "Order_by"
#: On a run of the `report` entry point: the pipeline whose report it rebuilt.
REPORT_OF_TAG = "Report_of_run_id"
REUSED_TAG_PREFIX = "Reused_"
RESUMED_TAG_PREFIX = "Resumed_"

# Saliency runs.
ALGORITHM_TAG = "Algorithm"
IMAGE_IDS_TAG = "Image_ids"
REPRODUCED_TAG = "Reproduced_from"
#: Read only, of runs amended by older versions (whose `Image_id` then named the newest added
#: image): every image the run had held, its own first.
HISTORY_TAG = "Image_id_history"
UPDATES_TAG = "Update_count"
#: An amended map run keeps its identity tags on its own image; the images added to it are
#: listed here (comma-separated, in order) and described by `Update_<k>_...` tags and metrics.
ADDED_IMAGES_TAG = "Added_image_ids"
UPDATE_IMAGE_ID = "image_id"
UPDATES_DIR = "updates"
MODIFIED_TAG = "Modified_run"
MODIFIED_BY_TAG = "Modified_by_run_id"
UPDATED_RUN_TAG = "Updated_run_id"
MAX_DIFFERENCE_METRIC = "Max_abs_difference"
BEATING_RANDOM_METRIC = "Maps_beating_random"
#: An MC-RISE map run's fill colour whose map is the most faithful (insertion minus deletion).
MOST_FAITHFUL_FILL_TAG = "Most_faithful_fill"
#: The main run's headline metrics, so the pipelines' runs table compares pipelines: the
#: evaluation's accuracy, how many maps were made and, of the (first) saliency run, the share
#: beating a random map and the mean deletion and insertion areas.
TEST_ACCURACY_METRIC = "Test_accuracy"
MAPS_EXPLAINED_METRIC = "Maps_explained"
HEADLINE_MAP_METRICS = (BEATING_RANDOM_METRIC, "Deletion_auc_mean", "Insertion_auc_mean")


def mean_metric(name: str) -> str:
    """`<name>_mean`: a step run's mean over its maps of map metric `name`."""
    return f"{name}_mean"


#: The MLflow UI's saved views of a runs table (the table's "Views" menu), which MLflow's UI
#: keeps as experiment tags under this prefix. The table's own default columns show no metric
#: and no tag, so each experiment gets a view showing the columns that tell its runs' outcomes
#: apart, opened from that menu or by the address `?viewStateShareKey=<RESULTS_VIEW>`.
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
RESULTS_VIEW = "saliency-flow-results"
RESULTS_VIEW_NAME = "Results (saliency-flow)"


def metric_column(name: str) -> str:
    """A metric's column in the MLflow UI's runs table (its key in a saved view)."""
    return f"metrics.`{name}`"


def tag_column(name: str) -> str:
    return f"tags.`{name}`"


#: The results view's columns: of the pipelines' experiment, then of each stage's.
PIPELINE_VIEW_COLUMNS = tuple(map(metric_column, (TEST_ACCURACY_METRIC, MAPS_EXPLAINED_METRIC,
                                                  *HEADLINE_MAP_METRICS)))
RESULTS_VIEW_COLUMNS = {
    TRAIN_EXPERIMENT: tuple(map(metric_column, ("train_accuracy", "test_accuracy"))),
    EVALUATION_EXPERIMENT: (*map(tag_column, (GT_CLASS_TAG, PREDICTED_CLASS_TAG, CORRECT_TAG)),
                            *map(metric_column, (PREDICTED_CONF_METRIC, "accuracy"))),
    SALIENCY_EXPERIMENT: (*map(tag_column, (GT_CLASS_TAG, PREDICTED_CLASS_TAG)),
                          *map(metric_column, ("Deletion_auc", "Insertion_auc",
                                               "Deletion_random_percentile",
                                               "Insertion_random_percentile",
                                               BEATING_RANDOM_METRIC))),
}

#: A step run's mean ROAD figures (steps/core/metrics.py's `RoadMorf.name`, `RoadLerf.name`,
#: `ROAD_GAP`, spelled out here so this module needs nothing: tests/test_compare.py checks that
#: they match).
ROAD_MORF_MEAN_METRIC = mean_metric("Road_morf_auc")
ROAD_LERF_MEAN_METRIC = mean_metric("Road_lerf_auc")
ROAD_GAP_MEAN_METRIC = mean_metric("Road_lerf_minus_morf")
# The sanity check (`-P sanity_check=true`): does a map change when the model's weights are
# randomised? On each map run the tag `Sanity_check` (`passed`/`failed`) and the similarity of
# the map to the randomised model's (`Sanity_spearman`, `Sanity_ssim`); on the step run their
# means and the share of maps that failed.
SANITY_TAG = "Sanity_check"
SANITY_PASSED = "passed"
SANITY_FAILED = "failed"
#: On a step run whose model cannot be randomised (a pyfunc model, say).
SANITY_UNAVAILABLE = "unavailable"
SANITY_SPEARMAN_METRIC = "Sanity_spearman"
#: The measure the check flags on (steps/core/sanity.py says why).
SANITY_SIGNED_SPEARMAN_METRIC = "Sanity_spearman_signed"
SANITY_SSIM_METRIC = "Sanity_ssim"
FAILING_SANITY_METRIC = "Maps_failing_sanity"

# Comparison runs (several algorithm configurations on the same images).
COMPARED_RUNS_TAG = "Compared_saliency_run_ids"
COMPARISON_RUN_TAG = "Comparison_run_id"
CONFIGURATIONS_TAG = "Compared_configurations"


def rank_metric(label: str) -> str:
    """`Rank_<label>`: a compared configuration's place in the ranking (1 is best)."""
    return metric_safe(f"Rank_{label}")


def update_tag(k: int, name: str) -> str:
    """`Update_<k>_<name>`: a tag or metric of the `k`-th image added to a map run, e.g.
    `Update_1_image_id`, `Update_1_GT_class`, `Update_1_Predicted_class_conf`."""
    return f"Update_{k}_{name}"


def update_prefix(k: int, image_id: str) -> str:
    """`updates/<k>_image_<Image_id>/`: where the `k`-th added image's map and pictures go."""
    return f"{UPDATES_DIR}/{k}_image_{metric_safe(image_id)}/"


def agreement_metric(measure: str, first: str, second: str, image_id: str | None = None) -> str:
    """`<Measure>_<first>_vs_<second>`, for one image `..._image_<Image_id>`, metric-key safe."""
    name = f"{measure}_{first}_vs_{second}"
    return metric_safe(name if image_id is None else f"{name}_image_{image_id}")


# Artifacts.
MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "generator_config.json"
MAP_ARTIFACT = "saliency_map.npy"
#: The map before xaitk's per-class scaling, in the model's confidence units (what the pictures'
#: scale shows); absent where xaitk's own generator made the map (MC-RISE).
RAW_MAP_ARTIFACT = "saliency_map_raw.npy"
CONFUSION_MATRIX_ARTIFACT = "confusion_matrix.png"
RESULTS_TABLE = "results.json"
CURVES_DIR = "curves"
REPORT_ARTIFACT = "report.html"
PARAMETERS_ARTIFACT = "pipeline_parameters.json"
#: A step run's own parameters as `-P` strings: what `-P resume_run_id` reads back.
STEP_PARAMETERS_ARTIFACT = "step_parameters.json"
QUERY_RESULT_ARTIFACT = "query/query_result.csv"
ENVIRONMENT_ARTIFACT_DIR = "environment"
PICTURES_DIR = "pictures"
METRICS_DIR = "metrics"
AVERAGES_DIR = "averages"
SUMMARY_PICTURE = "summary.png"
CURVES_ARTIFACT = "causal_curves.npz"
CURVES_PICTURE = "causal_curves.png"
COMPARISON_DIR = "comparison"
AGREEMENT_TABLE = "comparison/agreement.json"
CONFIGURATIONS_ARTIFACT = "comparison/configurations.json"
#: The compared configurations ranked (steps/core/ranking.py), one row each (`mlflow.load_table`).
RANKING_TABLE = "comparison/ranking.json"

# Explainer models (steps/tracking/explainer_model.py): the logged model's name, and the tags of
# the run that logs it and of its registered version: the saliency run it comes from (a step
# run or one of its map runs), the map run whose stored configuration it carries, and that
# configuration's digest (the classifier's `Model_uri` and `Model_version` as above).
EXPLAINER_MODEL = "explainer"
EXPLAINER_SOURCE_TAG = "Explainer_source_run_id"
EXPLAINER_MAP_RUN_TAG = "Explainer_map_run_id"
CONFIG_DIGEST_TAG = "Config_digest"
#: On a saliency step run (`-P register_explainer`) and an explainer run: `<name>/<version>`.
EXPLAINER_VERSION_TAG = "Explainer_version"

# Input-dataset contexts (mlflow.log_input).
TRAINING_CONTEXT = "training"
EVALUATION_CONTEXT = "evaluation"
SALIENCY_CONTEXT = "saliency"
