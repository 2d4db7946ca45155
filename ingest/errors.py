"""Typed ingest failures; each message names the target or source and what to do next."""

from __future__ import annotations

from core.errors import ErrorKind, PrognosError


class IngestError(PrognosError):
    code = "ingest_error"
    kind = ErrorKind.INTERNAL


class SourceUnavailableError(IngestError):
    """The source cannot be reached, timed out or answered with a server error."""

    code = "source_unavailable"
    kind = ErrorKind.UNAVAILABLE


class SourceTimeoutError(SourceUnavailableError):
    code = "source_timeout"


class SourceAuthError(IngestError):
    """The source refused our credentials; retrying will not help."""

    code = "source_auth"
    kind = ErrorKind.UNAVAILABLE


class QueryError(IngestError):
    """The target's query is wrong (PromQL syntax, too many points, bad result type)."""

    code = "query_invalid"
    kind = ErrorKind.INVALID

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message, detail={"target": target} if target else None)
        self.target = target


class ReplayDataError(IngestError):
    """A replay folder or file is unusable."""

    code = "replay_data_invalid"
    kind = ErrorKind.INVALID


class HistoryCacheError(IngestError):
    code = "history_cache_invalid"
    kind = ErrorKind.INVALID
