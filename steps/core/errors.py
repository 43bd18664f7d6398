"""The errors the core raises: bad data, a bad model, a bad parameter.

The core knows nothing of the command line; each error names the parameter that fixes it
(`param`, without dashes) where there is one, and the step CLIs (`steps/options.py`) turn it
into click's one-line `Error: Invalid value for '--param': ...`.
"""

from __future__ import annotations


class SaliencyFlowError(ValueError):
    """Input the pipeline cannot use; `param` names the parameter that fixes it, if any."""

    default_param: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param if param is not None else self.default_param


class DataError(SaliencyFlowError):
    """Data that cannot be used; the message names the file or the fix."""

    default_param = "dataset"


class ModelError(SaliencyFlowError):
    """A model that cannot explain this data, or an input convention that cannot hold for it."""

    default_param = "model_uri"


class NotRandomisable(ModelError):
    """A model whose learned weights cannot be redrawn, so the model-randomisation sanity check
    cannot be run on it; the message says why."""


class ParameterError(SaliencyFlowError):
    """A parameter's value that is not accepted, or does not fit the data."""
