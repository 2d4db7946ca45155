"""Anomaly scoring, kept apart from the models: residual → interval-scaled z → smoothing →
calibration to a comparable z-like score (0 normal, ~3 rare) → threshold and alarm aggregation.

Calibration follows Merlion's idea: map each series' raw scores through their own empirical
distribution onto the standard normal, so a 3 means "as rare as a 3-sigma event" on every
series; beyond the largest score seen, the upper tail continues linearly.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.domain import FloatArray

_NORMAL = NormalDist()
_Z80 = _NORMAL.inv_cdf(0.9)  # p10..p90 spans ±1.2816 sigma of a normal


class ScoringConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ewma_alpha: float = Field(default=0.5, gt=0, le=1, description="1 = no smoothing")
    calibration_min: int = Field(default=50, ge=5, description="scores seen before calibrating")
    calibration_size: int = Field(default=5000, ge=10, description="newest scores kept")
    scale_floor: float = Field(default=1e-9, gt=0)


def residual_z(
    observed: FloatArray, p10: FloatArray, p50: FloatArray, p90: FloatArray, floor: float = 1e-9
) -> FloatArray:
    """How many predicted sigmas the observation lies from the median forecast."""
    sigma = np.maximum((np.asarray(p90) - np.asarray(p10)) / (2 * _Z80), floor)
    return (np.asarray(observed) - np.asarray(p50)) / sigma


def ewma(values: FloatArray, alpha: float) -> FloatArray:
    """Exponentially weighted mean along the last axis; NaN steps carry the previous value."""
    out = np.empty_like(values, dtype=np.float64)
    acc: float | None = None
    for i, value in enumerate(np.asarray(values, dtype=np.float64)):
        if np.isfinite(value):
            acc = value if acc is None else alpha * value + (1 - alpha) * acc
        out[i] = np.nan if acc is None else acc
    return out


class Calibrator:
    """Online calibration of one series' raw scores onto a z-like scale.

    `observe(s)` returns the calibrated value of `s` against the scores seen *before* it, then
    remembers it, so a backtest stays strictly causal.
    """

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self._sorted: list[float] = []
        self._fifo: deque[float] = deque()

    def __len__(self) -> int:
        return len(self._sorted)

    def transform(self, score: float) -> float:
        seen = self._sorted
        m = len(seen)
        if m < self.config.calibration_min or not np.isfinite(score):
            return float("nan")
        lo = bisect.bisect_left(seen, score)
        hi = bisect.bisect_right(seen, score)
        if hi < m:
            p = (lo + hi) / 2 / m  # mid-rank of the score among those seen
            p = min(max(p, 0.5 / m), 1 - 0.5 / m)
            return max(0.0, _NORMAL.inv_cdf(p))
        # Above everything seen: continue the upper tail linearly through the top decile.
        z_top = _NORMAL.inv_cdf(1 - 0.5 / m)
        q90 = seen[int(0.9 * (m - 1))]
        top = seen[-1]
        slope = (z_top - _NORMAL.inv_cdf(0.9)) / max(top - q90, self.config.scale_floor)
        return max(0.0, z_top + (score - top) * slope)

    def observe(self, score: float) -> float:
        calibrated = self.transform(score)
        if np.isfinite(score):
            bisect.insort(self._sorted, score)
            self._fifo.append(score)
            if len(self._fifo) > self.config.calibration_size:
                old = self._fifo.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, old)]
        return calibrated


def score_series(z: FloatArray, config: ScoringConfig | None = None) -> FloatArray:
    """Causal scores for one series from its residual z's: |z|, smoothed, then calibrated."""
    config = config or ScoringConfig()
    raw = ewma(np.abs(np.asarray(z, dtype=np.float64)), config.ewma_alpha)
    calibrator = Calibrator(config)
    return np.array([calibrator.observe(float(s)) for s in raw])


class AlarmConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=4.0, description="calibrated score that counts as a hit")
    hits: int = Field(default=1, ge=1, description="k hits ...")
    window: int = Field(default=1, ge=1, description="... within this many steps raise an alarm")
    suppress: int = Field(default=0, ge=0, description="steps without a new alarm after one")


@dataclass(frozen=True, slots=True)
class AlarmRun:
    start: int
    end: int
    peak: float


def alarms(scores: FloatArray, config: AlarmConfig) -> FloatArray:
    """0/1 per step: k-of-n hits raise an alarm, then alarms stay quiet for `suppress` steps."""
    hits = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0) >= config.threshold
    out = np.zeros(len(hits))
    quiet_until = -1
    for i in range(len(hits)):
        lo = max(0, i - config.window + 1)
        if hits[i] and hits[lo : i + 1].sum() >= config.hits and i > quiet_until:
            out[i] = 1.0
            quiet_until = i + config.suppress
    return out
