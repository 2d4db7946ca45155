"""Time in one place: UTC only, a clock that tests can pin, and a simulated clock for demos.

Every duration the service reasons about (cycles, proposal expiry, executor leases, incident
grouping) is measured on its `Clock`. A `ScaledClock` runs faster than the wall clock, so the
same service code plays hours of simulated operation in minutes; what must stay in real time
(sleeps between renewals, network timeouts) converts with `wall_seconds`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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


class ScaledClock:
    """Simulated time: starts at `start` and runs `rate` simulated seconds per wall second.

    `set_rate` changes the speed from now on without a jump (e.g. slow to real time while a
    person is asked to approve). Thread-safe: the API, the cycle and the executor share it."""

    def __init__(
        self, start: datetime, rate: float, *, wall: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._wall = wall
        self._lock = threading.Lock()
        self._base = ensure_utc(start)
        self._wall_base = wall()
        self._rate = float(rate)
        self._paused_rate = self._rate

    @property
    def rate(self) -> float:
        return self._rate

    def now(self) -> datetime:
        with self._lock:
            return self._base + timedelta(seconds=(self._wall() - self._wall_base) * self._rate)

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        with self._lock:
            wall = self._wall()
            self._base += timedelta(seconds=(wall - self._wall_base) * self._rate)
            self._wall_base = wall
            self._rate = float(rate)

    def pause(self) -> None:
        """Hold simulated time still (e.g. while a model trains) until `resume`."""
        with self._lock:
            wall = self._wall()
            self._base += timedelta(seconds=(wall - self._wall_base) * self._rate)
            self._wall_base = wall
            self._paused_rate = self._rate or self._paused_rate
            self._rate = 0.0

    def resume(self) -> None:
        if self._rate == 0.0:
            self.set_rate(self._paused_rate)

    def wait_until(self, at: datetime, stop: threading.Event | None = None) -> bool:
        """Sleep (in wall time) until the simulated time reaches `at`; False if `stop` was set
        first. The rate is re-read every short while, so `set_rate` takes effect mid-wait."""
        while True:
            left = (ensure_utc(at) - self.now()).total_seconds()
            if left <= 0:
                return True
            pause = min(0.25, left / self._rate) if self._rate > 0 else 0.25
            if stop is not None:
                if stop.wait(pause):
                    return False
            else:
                time.sleep(pause)


def wall_seconds(clock: Clock, simulated: float) -> float:
    """How long `simulated` seconds of `clock` last in wall time (the same, except on a
    ScaledClock)."""
    rate = getattr(clock, "rate", 1.0)
    return simulated / rate if isinstance(rate, int | float) and rate > 0 else simulated


def ensure_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (SQLite returns them so); aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_epoch(value: datetime) -> int:
    return int(ensure_utc(value).timestamp())


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
