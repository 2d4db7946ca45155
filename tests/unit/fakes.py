"""In-memory stand-ins for unit tests: a metric source with scripted series and failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from core.settings import TargetSettings
from ingest.domain import PullResult, SeriesData, SeriesKey

NEVER = 2**62


def default_value(ts: int) -> float:
    return ts / 1000.0


@dataclass
class FakeSeries:
    """One series of a target, present at every step in [start, end]."""

    target: str
    labels: dict[str, str]
    start: int = -NEVER
    end: int = NEVER
    value: Callable[[int], float] = default_value


@dataclass
class FakeSource:
    """A Source whose series are scripted; it records every range read it serves."""

    series: list[FakeSeries] = field(default_factory=list)
    max_points: int = 11_000
    fail_with: BaseException | None = None
    check_error: BaseException | None = None
    calls: list[tuple[str, int, int, int]] = field(default_factory=list)
    kind: str = "fake"

    @property
    def max_points_per_request(self) -> int:
        return self.max_points

    def describe(self) -> str:
        return "fake source"

    def check(self) -> None:
        if self.check_error is not None:
            raise self.check_error

    def query_range(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult:
        assert (end - start) // step + 1 <= self.max_points, "a chunk exceeded the point limit"
        self.calls.append((target.name, start, end, step))
        if self.fail_with is not None:
            raise self.fail_with
        result = PullResult()
        for s in self.series:
            if s.target != target.name:
                continue
            grid = np.arange(start, end + 1, step, dtype=np.int64)
            grid = grid[(grid >= s.start) & (grid <= s.end)]
            if grid.size == 0:
                continue
            values = np.array([s.value(int(t)) for t in grid], dtype=np.float64)
            result.series.append(SeriesData(SeriesKey.of(target.name, s.labels), grid, values))
        return result

    @property
    def points_served(self) -> int:
        return sum((end - start) // step + 1 for _, start, end, step in self.calls)


def make_target(
    name: str = "cpu",
    query: str = "rate(cpu_seconds_total[5m])",
    *,
    step: int = 60,
    lookback: timedelta = timedelta(hours=1),
) -> TargetSettings:
    return TargetSettings(name=name, query=query, step=timedelta(seconds=step), lookback=lookback)
