"""Typed failures of the simulation: an unknown service or deployment, an unusable input."""

from __future__ import annotations

from core.errors import ErrorKind, PrognosError


class SimError(PrognosError):
    code = "sim_error"
    kind = ErrorKind.INTERNAL


class UnknownServiceError(SimError):
    """No service (deployment) of that name in the simulated shop."""

    code = "unknown_service"
    kind = ErrorKind.NOT_FOUND


class SimInputError(SimError):
    """A fault, target, replica count or time the simulation cannot use."""

    code = "sim_invalid"
    kind = ErrorKind.INVALID
