"""Every experiment, tag, parameter-as-logged and artifact name the project writes or reads.

One place, so a name a user searches for (`tags.Image_id = '...'`) is spelled the same by every
step, the driver, the tests and the README. Importable with no dependency at all.
"""

# Experiments, one per stage.
TRAIN_EXPERIMENT = "Train"
EVALUATION_EXPERIMENT = "Evaluation"
SALIENCY_EXPERIMENT = "Saliency Map Generation"

# MLflow's own tags.
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
ENTRY_POINT_TAG = "mlflow.project.entryPoint"

# An image's identity and outcome, on every per-sample and per-map run.
IMAGE_ID_TAG = "Image_id"
GT_CLASS_TAG = "GT_class"
PREDICTED_CLASS_TAG = "Predicted_class"
CORRECT_TAG = "Correct"
PREDICTED_CONF_METRIC = "Predicted_class_conf"


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


def image_shape_tag(shape) -> str:
    """`8x8` or `64x64x3`: height, width and channels as the `Image_shape` tag gives them."""
    return "x".join(map(str, shape))
EVALUATION_RUN_TAG = "Evaluation_run_id"
EVALUATION_PARENT_TAG = "Evaluation_parent_run_id"
SALIENCY_RUN_TAG = "Saliency_run_id"
SALIENCY_PARENT_TAG = "Saliency_parent_run_id"
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

# Driver (main run) tags.
QUERIED_IMAGES_TAG = "Queried_image_ids"
QUERY_MATCHES_TAG = "Query_matches"
REUSED_TAG_PREFIX = "Reused_"
RESUMED_TAG_PREFIX = "Resumed_"

# Saliency runs.
ALGORITHM_TAG = "Algorithm"
IMAGE_IDS_TAG = "Image_ids"
REPRODUCED_TAG = "Reproduced_from"
HISTORY_TAG = "Image_id_history"
UPDATES_TAG = "Update_count"
MODIFIED_TAG = "Modified_run"
MODIFIED_BY_TAG = "Modified_by_run_id"
UPDATED_RUN_TAG = "Updated_run_id"
MAX_DIFFERENCE_METRIC = "Max_abs_difference"
BEATING_RANDOM_METRIC = "Maps_beating_random"

# Comparison runs (several algorithm configurations on the same images).
COMPARED_RUNS_TAG = "Compared_saliency_run_ids"
COMPARISON_RUN_TAG = "Comparison_run_id"
CONFIGURATIONS_TAG = "Compared_configurations"


def agreement_metric(measure: str, first: str, second: str, image_id: str | None = None) -> str:
    """`<Measure>_<first>_vs_<second>`, for one image `..._image_<Image_id>`, metric-key safe."""
    name = f"{measure}_{first}_vs_{second}"
    return metric_safe(name if image_id is None else f"{name}_image_{image_id}")


# Artifacts.
MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "generator_config.json"
MAP_ARTIFACT = "saliency_map.npy"
CONFUSION_MATRIX_ARTIFACT = "confusion_matrix.png"
QUERY_RESULT_ARTIFACT = "query/query_result.csv"
ENVIRONMENT_ARTIFACT_DIR = "environment"
PICTURES_DIR = "pictures"
METRICS_DIR = "metrics"
AVERAGES_DIR = "averages"
CURVES_ARTIFACT = "causal_curves.npz"
CURVES_PICTURE = "causal_curves.png"
COMPARISON_DIR = "comparison"
AGREEMENT_TABLE = "comparison/agreement.json"
CONFIGURATIONS_ARTIFACT = "comparison/configurations.json"

# Input-dataset contexts (mlflow.log_input).
TRAINING_CONTEXT = "training"
EVALUATION_CONTEXT = "evaluation"
