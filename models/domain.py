"""Model-side types: a series' history on its step grid, context batches, quantile forecasts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.domain import SeriesKey

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)


@dataclass(frozen=True, slots=True)
class History:
    """One series on a regular step grid starting at `start`; NaN marks a gap."""

    key: SeriesKey
    step: int
    start: int
    values: FloatArray

    @classmethod
    def from_points(
        cls, key: SeriesKey, timestamps: IntArray, values: FloatArray, step: int
    ) -> History:
        """Place points on the grid; missing steps become NaN (never filled)."""
        if len(timestamps) == 0:
            return cls(key, step, 0, np.empty(0))
        ts = np.asarray(timestamps, dtype=np.int64)
        start = int(ts[0] - ts[0] % step)
        index = (ts - start) // step
        grid = np.full(int(index[-1]) + 1, np.nan)
        grid[index] = values
        return cls(key, step, start, grid)

    @property
    def timestamps(self) -> IntArray:
        return self.start + np.arange(len(self.values), dtype=np.int64) * self.step

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class ContextBatch:
    """The last L steps of N series (NaN = gap) and the epoch time of each window's last step."""

    values: npt.NDArray[np.float32]
    end: IntArray
    step: int

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def length(self) -> int:
        return int(self.values.shape[1])


@dataclass(frozen=True, slots=True)
class QuantileForecast:
    """values[n, h, q]: quantile q of series n, h + 1 steps after end[n]."""

    values: FloatArray
    quantiles: tuple[float, ...]
    end: IntArray
    step: int
    model: str

    def quantile(self, q: float) -> FloatArray:
        return self.values[:, :, self.quantiles.index(q)]

    @property
    def horizon(self) -> int:
        return int(self.values.shape[1])
