"""Predicted breaches: how likely a series is to cross its threshold within the forecast horizon,
and when.

From a quantile forecast, each horizon step's distribution is rebuilt as a **piecewise normal**:
between two neighbouring quantiles the CDF is linear in normal-score space (z = Φ⁻¹(F)), and
beyond the outer quantiles the nearest segment's slope continues. With p10/p50/p90 this is the
split normal that passes exactly through all three quantiles: a normal with sigma
(p50 - p10)/1.2816 below the median and (p90 - p50)/1.2816 above it. Hence

    P(X_h ≥ thr) = 1 - Φ((thr - p50) / sigma_up)     for thr ≥ p50   (0.5 at p50, 0.1 at p90)

and likewise with sigma_down below the median. A horizon step whose quantiles all coincide (a flat
band) gives a step CDF: probability 1 if thr ≤ the value, else 0.

The probability of crossing **within** the horizon is the **maximum** over the horizon steps of
these per-step probabilities. That is a lower bound on the true first-passage probability (exact
when the paths are perfectly correlated across steps, which a forecast of quantiles cannot tell
apart from any other dependence); a ramp towards the limit, the case that matters, has strongly
correlated steps. The ETA is the first horizon step whose probability reaches
`BreachConfig.eta_probability` (0.5 by default: the median forecast reaches the threshold).

A warning is raised when the probability reaches `BreachConfig.probability` in `consecutive`
forecasts in a row (`warning_mask` over a sequence of forecasts, `next_streak` for a daemon
that keeps one counter per series).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import ndtr

from ingest.domain import SeriesKey
from models.domain import QuantileForecast
from models.errors import ModelInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Direction = Literal["above", "below"]


class BreachConfig(BaseModel):
    """When a predicted breach becomes a warning.

    The default warning probability, 0.3, was chosen on development scenario seeds 20-49
    (bench/breach.py, global LSTM, 2 consecutive forecasts): the max-over-horizons probability
    is a lower bound on P(cross within H), and warning at 0.5 let too many crossings through:
    70-77 % warned >= 15 min ahead against 90-91 % at 0.3 (three trainings), for 0.004-0.03
    false warnings per normal series-day at 0.5 and 0.04-0.09 at 0.3. The evaluation seeds
    (100-119) were not used to choose it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probability: float = Field(
        0.3, gt=0.0, lt=1.0, description="warn when P(cross within horizon) reaches this"
    )
    consecutive: int = Field(2, ge=1, description="forecasts in a row that must reach it")
    horizon: int | None = Field(
        None, ge=1, description="horizon steps looked at; None = the whole forecast"
    )
    eta_probability: float = Field(
        0.5, gt=0.0, lt=1.0, description="a horizon step's probability that sets the ETA"
    )


@dataclass(frozen=True, slots=True)
class Breach:
    """A predicted breach of one series (the contract in DESIGN.md)."""

    series: SeriesKey
    threshold: float
    direction: Direction
    probability: float
    #: epoch seconds (UTC) of the estimated crossing; None when no horizon step reaches the
    #: ETA probability (a crossing is possible but not the median outcome)
    eta: int | None
    #: the forecast it came from: the epoch time of its last observed step, and its model
    forecast_end: int
    model: str

    @property
    def eta_seconds(self) -> int | None:
        """Seconds from the forecast's last step to the estimated crossing."""
        return None if self.eta is None else self.eta - self.forecast_end


@dataclass(frozen=True, slots=True)
class BreachPrediction:
    """`predict_breach` for a batch of N series: arrays in the forecast's series order."""

    probability: FloatArray  #: [N] P(cross within the horizon); NaN without a forecast
    exceed: FloatArray  #: [N, H] P(beyond the threshold) at each horizon step
    eta_steps: FloatArray  #: [N] first horizon step (1-based) reaching the ETA probability; NaN
    threshold: FloatArray  #: [N]
    direction: Direction
    end: IntArray  #: [N] epoch seconds of each forecast's last observed step
    step: int
    model: str

    def __len__(self) -> int:
        return len(self.probability)

    @property
    def eta(self) -> FloatArray:
        """[N] epoch seconds of the estimated crossing (NaN where there is none)."""
        return self.end + self.eta_steps * self.step

    @property
    def eta_seconds(self) -> FloatArray:
        return self.eta_steps * self.step

    def warns(self, config: BreachConfig) -> BoolArray:
        """[N] this forecast alone reaches the warning probability (see `next_streak`)."""
        return _reaches(self.probability, config.probability)

    def breaches(self, keys: Sequence[SeriesKey], min_probability: float = 0.0) -> list[Breach]:
        """One `Breach` per series whose probability is at least `min_probability`."""
        if len(keys) != len(self):
            raise ModelInputError(f"{len(keys)} series keys for {len(self)} predictions")
        out = []
        for i, key in enumerate(keys):
            p = float(self.probability[i])
            if not math.isfinite(p) or p < min_probability:
                continue
            eta = self.eta[i]
            out.append(
                Breach(
                    series=key,
                    threshold=float(self.threshold[i]),
                    direction=self.direction,
                    probability=p,
                    eta=int(eta) if math.isfinite(eta) else None,
                    forecast_end=int(self.end[i]),
                    model=self.model,
                )
            )
        return out


def exceed_probability(
    forecast: QuantileForecast,
    threshold: float | npt.ArrayLike,
    direction: Direction = "above",
) -> FloatArray:
    """[N, H]: P(value ≥ threshold) (or ≤ for "below") at each horizon step, from the quantiles
    by the piecewise normal described in the module docstring. NaN where the forecast is NaN.
    `threshold`: one number, or one per series ([N])."""
    values = np.asarray(forecast.values, dtype=np.float64)
    if values.ndim != 3 or values.shape[2] != len(forecast.quantiles):
        raise ModelInputError("forecast values must be [series, horizon, quantiles]")
    if len(forecast.quantiles) < 2:
        raise ModelInputError("a breach probability needs at least two quantiles")
    if direction not in ("above", "below"):
        raise ModelInputError(f"direction must be 'above' or 'below', not {direction!r}")
    thr = _thresholds(threshold, values.shape[0])[:, None]  # [N, 1]
    z_q = np.array([NormalDist().inv_cdf(q) for q in forecast.quantiles])
    v = np.maximum.accumulate(values, axis=2)  # quantiles must not cross
    width = np.diff(v, axis=2)  # [N, H, Q-1]
    # Degenerate segments (equal quantiles) get a tiny width: a near-vertical CDF there.
    tiny = 1e-12 * np.maximum(1.0, np.abs(v).max(axis=2, keepdims=True))
    flat = width <= tiny
    slope = np.diff(z_q)[None, None, :] / np.where(flat, tiny, width)
    # Segment of each threshold: 0 below/at the first quantile's segment ... Q-2 at the last.
    seg = np.clip((v[:, :, 1:-1] < thr[..., None]).sum(axis=2), 0, len(z_q) - 2)
    v0 = np.take_along_axis(v, seg[..., None], axis=2)[..., 0]
    s0 = np.take_along_axis(slope, seg[..., None], axis=2)[..., 0]
    z = z_q[seg] + (thr - v0) * s0
    point = flat.all(axis=2)  # all quantiles equal: a point mass at v0
    if direction == "above":
        out = np.where(point, (v[:, :, 0] >= thr).astype(np.float64), ndtr(-z))
    else:
        out = np.where(point, (v[:, :, 0] <= thr).astype(np.float64), ndtr(z))
    out = np.where(np.isfinite(values).all(axis=2), out, np.nan)
    return np.asarray(out, dtype=np.float64)


def predict_breach(
    forecast: QuantileForecast,
    threshold: float | npt.ArrayLike,
    direction: Direction = "above",
    config: BreachConfig | None = None,
) -> BreachPrediction:
    """Per series: P(crossing within the horizon) = max over horizon steps of the per-step
    probability, and the ETA = the first step whose probability reaches the ETA probability."""
    config = config or BreachConfig()
    exceed = exceed_probability(forecast, threshold, direction)
    if config.horizon is not None:
        exceed = exceed[:, : config.horizon]
    n, h = exceed.shape
    filled = np.nan_to_num(exceed, nan=-1.0)
    probability = filled.max(axis=1) if h else np.full(n, -1.0)
    probability = np.where(probability < 0.0, np.nan, probability)
    reached = filled >= config.eta_probability
    eta = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1.0, np.nan)
    return BreachPrediction(
        probability=probability,
        exceed=exceed,
        eta_steps=eta,
        threshold=_thresholds(threshold, n),
        direction=direction,
        end=np.asarray(forecast.end, dtype=np.int64),
        step=forecast.step,
        model=forecast.model,
    )


def warning_mask(probability: npt.ArrayLike, config: BreachConfig) -> BoolArray:
    """Along the last axis (successive forecasts of a series): warn where the probability has
    reached `config.probability` in the last `config.consecutive` forecasts (NaN never does)."""
    hit = _reaches(np.asarray(probability, dtype=np.float64), config.probability)
    k = config.consecutive
    if k == 1:
        return hit
    counts = np.cumsum(hit, axis=-1, dtype=np.int64)
    shifted = np.zeros_like(counts)
    shifted[..., k:] = counts[..., :-k]
    return np.asarray((counts - shifted) >= k)


def next_streak(
    streak: npt.ArrayLike, prediction: BreachPrediction, config: BreachConfig
) -> tuple[IntArray, BoolArray]:
    """A daemon's per-series counters: (new streak, warn now). The streak counts forecasts in a
    row that reached the warning probability; a warning is on while it is ≥ `consecutive`."""
    previous = np.asarray(streak, dtype=np.int64)
    new = np.where(prediction.warns(config), previous + 1, 0)
    return new, new >= config.consecutive


def _reaches(probability: FloatArray, level: float) -> BoolArray:
    return np.asarray(np.nan_to_num(probability, nan=-1.0) >= level)


def _thresholds(threshold: float | npt.ArrayLike, n: int) -> FloatArray:
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim == 0:
        return np.full(n, float(thr))
    if thr.shape != (n,):
        raise ModelInputError(
            f"threshold must be one number or one per series ({n}); got {thr.shape}"
        )
    if not np.isfinite(thr).all():
        raise ModelInputError("thresholds must be finite")
    return thr


__all__ = [
    "Breach",
    "BreachConfig",
    "BreachPrediction",
    "exceed_probability",
    "next_streak",
    "predict_breach",
    "warning_mask",
]
