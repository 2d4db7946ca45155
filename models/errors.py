"""Typed model errors: bad input windows, unusable artifacts, unfitted models."""

from __future__ import annotations

from core.errors import ErrorKind, PrognosError


class ModelError(PrognosError):
    code = "model_error"
    kind = ErrorKind.INTERNAL


class ModelInputError(ModelError):
    """A context window or training set that a model cannot use (too short, wrong step, NaN)."""

    code = "model_input_invalid"
    kind = ErrorKind.INVALID


class ModelNotFittedError(ModelError):
    code = "model_not_fitted"
    kind = ErrorKind.CONFLICT


class ModelArtifactError(ModelError):
    """A model folder that is missing, corrupt or made for another version/config."""

    code = "model_artifact_invalid"
    kind = ErrorKind.INVALID


class AnomalyNotFoundError(ModelError):
    """Feedback for a step the detector never scored."""

    code = "anomaly_not_found"
    kind = ErrorKind.NOT_FOUND
