"""Ingest's domain types: series identity, a pulled series, a time window on a step grid."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from core.settings import TargetSettings

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Series identity: the target plus the sorted label set the source returned."""

    target: str
    labels: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, target: str, labels: Mapping[str, str]) -> SeriesKey:
        return cls(target, tuple(sorted((str(k), str(v)) for k, v in labels.items())))

    @property
    def digest(self) -> str:
        canonical = json.dumps([self.target, self.labels], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def service(self, label: str) -> str | None:
        return self.label_dict.get(label)

    def __str__(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.target}{{{inner}}}"


@dataclass(slots=True)
class SeriesData:
    """Points of one series; timestamps in epoch seconds, ascending, no duplicates, no NaN."""

    key: SeriesKey
    timestamps: IntArray
    values: FloatArray
    dropped_non_finite: int = 0

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


@dataclass(frozen=True, slots=True)
class Window:
    """An inclusive range of step-aligned timestamps [start, end]."""

    start: int
    end: int
    step: int

    @property
    def points(self) -> int:
        return 0 if self.end < self.start else (self.end - self.start) // self.step + 1


@dataclass(slots=True)
class PullResult:
    """What one target's read returned: its series, and how much was thrown away as invalid."""

    series: list[SeriesData] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(s) for s in self.series)

    @property
    def dropped_non_finite(self) -> int:
        return sum(s.dropped_non_finite for s in self.series)


class Source(Protocol):
    """Where series come from. Prometheus in production, a file replay otherwise."""

    kind: str

    def describe(self) -> str:
        """Where it reads from, safe to print (no credentials)."""
        ...

    def check(self) -> None:
        """Raise SourceUnavailableError if the source cannot answer now."""
        ...

    def query_range(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult:
        """One range read; `end - start` stays within the source's per-request point limit."""
        ...

    @property
    def max_points_per_request(self) -> int: ...


def query_digest(target: TargetSettings) -> str:
    """Changes when what a target means changes (query or step); keys caches and watermarks."""
    text = f"{target.query}\x00{target.step_seconds}"
    return hashlib.sha256(text.encode()).hexdigest()
