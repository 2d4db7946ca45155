"""The root of every Prognos error: a stable code plus a kind that the API maps to HTTP."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What sort of failure this is; `api/` maps each kind to one HTTP status."""

    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    EXPIRED = "expired"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class PrognosError(Exception):
    """Base class. Messages must be safe to show a user: never a secret, never a raw traceback."""

    code: str = "prognos_error"
    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class ConfigError(PrognosError):
    """The configuration file or an environment override is unusable."""

    code = "config_invalid"
    kind = ErrorKind.INVALID


class DatabaseUnavailableError(PrognosError):
    """The database cannot be reached or refused the connection."""

    code = "database_unavailable"
    kind = ErrorKind.UNAVAILABLE


class NotFoundError(PrognosError):
    code = "not_found"
    kind = ErrorKind.NOT_FOUND
