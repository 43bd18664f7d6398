"""saliency-flow's steps: their CLIs, processing (`core`) and MLflow wiring (`tracking`)."""

# First of all: its import time stands for the process's start where /proc does not say it.
from steps import phases  # noqa: F401
