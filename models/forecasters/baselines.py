"""Classical baselines: naive (last value), seasonal naive, and the robust median band.

They learn nothing, so they serve cold starts and give every learned model a yardstick. All
work on the whole batch at once with numpy; gaps (NaN) are skipped, never filled with invented
values, and a series with too little data gets a NaN forecast (the caller decides what to do).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Self

import numpy as np
from pydantic import Field, model_validator

from models.domain import ContextBatch, History
from models.errors import ModelInputError
from models.forecasters.base import (
    EpochCallback,
    FitReport,
    Forecaster,
    ForecasterConfig,
    robust_location_scale,
    sorted_quantiles,
)


class BaselineConfig(ForecasterConfig):
    """What every baseline shares: a usable window, ordered quantiles, a data minimum.

    `min_points` is the fewest observations (or differences) a band is estimated from.
    """

    min_points: int = Field(5, ge=2)


class NaiveConfig(BaselineConfig):
    @model_validator(mode="after")
    def _check_context(self) -> Self:
        if self.context_length <= self.min_points:
            raise ValueError(
                f"context_length ({self.context_length}) must exceed min_points "
                f"({self.min_points}) to hold that many one-step differences"
            )
        return self


class SeasonalNaiveConfig(BaselineConfig):
    """`season` in steps (1440 is a day at a 60 s step); the context holds one season plus at
    least `min_points` more steps, so that seasonal differences exist to size the band."""

    season: int = Field(1440, ge=1)
    context_length: int = 2880

    @model_validator(mode="after")
    def _check_season(self) -> Self:
        if self.context_length < self.season + self.min_points:
            raise ValueError(
                f"context_length ({self.context_length}) must be at least season ({self.season})"
                f" + min_points ({self.min_points})"
            )
        return self


class MedianBandConfig(BaselineConfig):
    """`window`: how many of the newest *observed* points count; None = the whole context."""

    window: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        window = self.context_length if self.window is None else self.window
        if window > self.context_length:
            raise ValueError(
                f"window ({window}) cannot exceed context_length ({self.context_length})"
            )
        if window < self.min_points:
            raise ValueError(f"window ({window}) must be at least min_points ({self.min_points})")
        return self


class _Baseline(Forecaster):
    """Shared plumbing: no training, the newest `context_length` steps, ordered output."""

    config: BaselineConfig

    def _fit(self, histories: Sequence[History], on_epoch: EpochCallback | None) -> FitReport:
        # Nothing is learned; the base class has checked that all series share one step.
        if self.step is None or self.step <= 0:
            raise ModelInputError(f"{self.name}: the step must be a positive number of seconds")
        return FitReport()

    def _context(self, batch: ContextBatch) -> np.ndarray:
        return _recent(batch.values, self.context_length)

    def _z(self) -> np.ndarray:
        return np.array([NormalDist().inv_cdf(q) for q in self.quantiles])

    def _difference_band(self, context: np.ndarray, diffs: np.ndarray) -> np.ndarray:
        """[N, Q] offsets from the point forecast for one unit of horizon.

        The empirical quantiles of the differences, centred on their median so that the median
        stays the point forecast. A series with fewer than `min_points` differences falls back
        to the spread of its levels (a normal band, as `MedianBandForecaster`); one with fewer
        than `min_points` observations at all gets NaN.
        """
        qs, counts = _row_quantiles(diffs, (*self.quantiles, 0.5))
        offsets = qs[:, :-1] - qs[:, -1:]
        few = counts < self.config.min_points
        if few.any():
            offsets[few] = _level_band(context[few], self._z(), self.config.min_points)[1]
        return offsets


class NaiveForecaster(_Baseline):
    """The last observed value for every horizon (a random walk).

    Band: the empirical quantiles of the one-step differences in the context, scaled by
    sqrt(h + a), where `a` is how many steps ago the last observation was (a random walk's
    spread grows with the square root of the time since its last known value).
    """

    name = "naive"
    config_class = NaiveConfig
    config: NaiveConfig

    def __init__(self, config: NaiveConfig | None = None) -> None:
        super().__init__(config)

    def _predict(self, batch: ContextBatch) -> np.ndarray:
        context = self._context(batch)
        length = context.shape[1]
        last_index = _newest_index(context)
        point = _gather(context, last_index)
        age = np.where(last_index >= 0, length - 1 - last_index, 0)
        offsets = self._difference_band(context, np.diff(context, axis=1))
        steps = np.arange(1, self.horizon + 1)[None, :] + age[:, None]
        out = point[:, None, None] + offsets[:, None, :] * np.sqrt(steps)[:, :, None]
        return _ordered(out)


class SeasonalNaiveForecaster(_Baseline):
    """The value one season before the target time (k seasons for horizons beyond a season).

    A gap there falls back to the last value observed before it, never to a later one; with
    nothing observed before it, NaN. Band: the empirical quantiles of the seasonal differences
    y[t] - y[t - season] over the context window, centred on their median and scaled by
    sqrt(k), k = ceil(h / season), the number of seasons the forecast reaches back.
    """

    name = "seasonal_naive"
    config_class = SeasonalNaiveConfig
    config: SeasonalNaiveConfig

    def __init__(self, config: SeasonalNaiveConfig | None = None) -> None:
        super().__init__(config)

    def _predict(self, batch: ContextBatch) -> np.ndarray:
        season = self.config.season
        context = self._context(batch)
        length = context.shape[1]
        h = np.arange(1, self.horizon + 1)
        seasons_back = -(-h // season)  # ceil(h / season)
        source = length - 1 + h - seasons_back * season  # the context index of each target
        point = _gather(context, _last_observed_index(context)[:, source])
        offsets = self._difference_band(context, context[:, season:] - context[:, :-season])
        out = point[:, :, None] + offsets[:, None, :] * np.sqrt(seasons_back)[None, :, None]
        return _ordered(out)


class MedianBandForecaster(_Baseline):
    """The robust cold-start band: median ± z_q · scale of the newest `window` observed points.

    The scale follows `robust_location_scale` (the larger of 1.4826·MAD and half the standard
    deviation, with a small floor), so a flat series gets a tiny but non-zero band. Constant
    over the horizon; fewer than `min_points` observations give a NaN forecast.
    """

    name = "median_band"
    config_class = MedianBandConfig
    config: MedianBandConfig

    def __init__(self, config: MedianBandConfig | None = None) -> None:
        super().__init__(config)

    def _predict(self, batch: ContextBatch) -> np.ndarray:
        window = self.config.window or self.context_length
        recent = _newest_observed(self._context(batch), window)
        location, offsets = _level_band(recent, self._z(), self.config.min_points)
        out = location[:, None] + offsets
        return _ordered(np.repeat(out[:, None, :], self.horizon, axis=1))


# ---------------------------------------------------------------------- vectorised helpers


def _recent(values: np.ndarray, length: int) -> np.ndarray:
    """The newest `length` steps as float64; a shorter context is padded with older gaps."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[1] >= length:
        return values[:, values.shape[1] - length :]
    pad = np.full((values.shape[0], length - values.shape[1]), np.nan)
    return np.concatenate([pad, values], axis=1)


def _last_observed_index(values: np.ndarray) -> np.ndarray:
    """[N, L]: the index of the last observation at or before each step; -1 if none."""
    steps = np.arange(values.shape[1], dtype=np.int32)  # int32 halves the scan's time
    index = np.where(np.isfinite(values), steps[None, :], np.int32(-1))
    return np.maximum.accumulate(index, axis=1)


def _newest_index(values: np.ndarray) -> np.ndarray:
    """[N]: the index of each row's newest observation; -1 if none."""
    observed = np.isfinite(values[:, ::-1])
    return np.where(observed.any(axis=1), values.shape[1] - 1 - observed.argmax(axis=1), -1)


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[n, index[n, ...]] with NaN where the index is -1."""
    flat = index.reshape(len(values), -1)
    picked = np.take_along_axis(values, np.maximum(flat, 0), axis=1)
    return np.where(flat >= 0, picked, np.nan).reshape(index.shape)


def _row_quantiles(values: np.ndarray, quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row quantiles ignoring NaN ([N, Q], linear interpolation as numpy's default) and the
    number of observations per row. One sort for the whole batch: `np.nanquantile` loops over
    rows in Python, which is far too slow for 10,000 series."""
    counts = np.isfinite(values).sum(axis=1)
    return sorted_quantiles(np.sort(values, axis=1), counts, quantiles), counts


def _newest_observed(values: np.ndarray, window: int) -> np.ndarray:
    """[N, min(window, L)]: each row's newest `window` observations (skipping gaps), sorted
    ascending, NaN-padded on the right. Their order in time is dropped: only their
    distribution matters to the callers."""
    observed = np.isfinite(values)
    rank = np.cumsum(observed[:, ::-1], axis=1, dtype=np.int32)[:, ::-1]  # newest = 1
    kept = np.where(observed & (rank <= window), values, np.nan)
    return np.sort(kept, axis=1)[:, :window]  # NaN sorts last, so nothing kept is cut


def _level_band(
    values: np.ndarray, z: np.ndarray, min_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row median and z·scale offsets [N, Q]; NaN for rows under `min_points` points."""
    location, scale = robust_location_scale(values)
    offsets = z[None, :] * scale[:, None]
    few = np.isfinite(values).sum(axis=1) < min_points
    location = np.where(few, np.nan, location)
    offsets[few] = np.nan
    return location, offsets


def _ordered(values: np.ndarray) -> np.ndarray:
    """Guard against quantiles crossing by a rounding error (NaN rows stay NaN)."""
    return np.maximum.accumulate(values, axis=-1)


__all__ = [
    "BaselineConfig",
    "MedianBandConfig",
    "MedianBandForecaster",
    "NaiveConfig",
    "NaiveForecaster",
    "SeasonalNaiveConfig",
    "SeasonalNaiveForecaster",
]
