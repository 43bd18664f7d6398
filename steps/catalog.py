"""Names of what the project offers (datasets, solvers, algorithms), importable without loading
scikit-learn or xaitk, so the CLIs can check parameters before any heavy import."""

DATASETS = ("digits",)
SOLVERS = ("adam", "sgd", "lbfgs")
ALGORITHMS = ("rise", "sliding_window")
PICTURE_MODES = ("both", "combined", "per_class")
