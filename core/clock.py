"""Time in one place: UTC only, and a clock that tests can pin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to; for tests and replays."""

    def __init__(self, at: datetime) -> None:
        self._at = ensure_utc(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = ensure_utc(at)

    def advance(self, delta: timedelta) -> None:
        self._at += delta


def ensure_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (SQLite returns them so); aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_epoch(value: datetime) -> int:
    return int(ensure_utc(value).timestamp())


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
