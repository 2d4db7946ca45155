"""The simulated clock: rate, changes of rate without a jump, pause, waits, wall durations."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.clock import FixedClock, ScaledClock, SystemClock, wall_seconds

START = datetime(2026, 1, 5, tzinfo=UTC)


class Wall:
    """A hand-moved wall clock (monotonic seconds)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_runs_rate_times_faster_and_changes_rate_without_a_jump() -> None:
    wall = Wall()
    clock = ScaledClock(START, 60, wall=wall)
    wall.t += 2
    assert clock.now() == START + timedelta(minutes=2)
    clock.set_rate(1)
    assert clock.now() == START + timedelta(minutes=2)
    wall.t += 5
    assert clock.now() == START + timedelta(minutes=2, seconds=5)


def test_pause_holds_time_still_and_resume_restores_the_rate() -> None:
    wall = Wall()
    clock = ScaledClock(START, 60, wall=wall)
    wall.t += 1
    clock.pause()
    wall.t += 100
    assert clock.now() == START + timedelta(minutes=1)
    clock.resume()
    assert clock.rate == 60
    wall.t += 1
    assert clock.now() == START + timedelta(minutes=2)


def test_rejects_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(START, 0)
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(START, 2).set_rate(-1)


def test_wait_until_sleeps_in_wall_time_and_stops_when_told() -> None:
    clock = ScaledClock(START, 600)  # ten simulated minutes per wall second
    assert clock.wait_until(clock.now() + timedelta(seconds=30))  # ~0.05 s
    assert clock.now() >= START + timedelta(seconds=30)
    stop = threading.Event()
    stop.set()
    assert not clock.wait_until(clock.now() + timedelta(hours=5), stop)


def test_wall_seconds_converts_only_on_a_scaled_clock() -> None:
    assert wall_seconds(ScaledClock(START, 60), 120) == 2
    assert wall_seconds(SystemClock(), 120) == 120
    assert wall_seconds(FixedClock(START), 120) == 120
