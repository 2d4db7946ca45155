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

The probability of crossing **within** the horizon combines these per-step probabilities
(`BreachConfig.combine`):

- ``"independent"`` (default): 1 - Π_h (1 - p_h), the first-passage probability if the steps'
  errors were independent. Noise around a slowly rising level crosses at its first high draw, and
  the per-step quantiles cannot say how the steps co-vary; this is the upper end.
- ``"max"``: max_h p_h, exact when the paths are perfectly correlated across steps, a lower
  bound otherwise. It warned too late on slow creeps (50 % of latency creeps warned ≥ 15 min).

**Seasonal check** (when the caller passes the series' recent `history`, at least
`BreachConfig.history_length(step)` steps up to the forecast's last one, and `season` is set): a
second, history-based forecast judges whether the rise is new. Yesterday's path at this time of
day (one `season` ago) is shifted by today's difference from yesterday, extrapolated along that
difference's least-squares trend over the last `trend_window` (at least `trend_points` steps),
with the line's prediction interval. A daily peak that yesterday also reached stays below the
limit there (the difference has no trend); a leak, a creep or a filling queue is a trend in the
difference. The crossing probability is then the smaller of the forecast's and this one's (both
must see a crossing); without enough history (the first season of a series, or gaps), the
forecast's alone. The check reads only two short stretches of each series
(`BreachConfig.seasonal_offsets`): the newest trend window, and the trend window plus the horizon
one season earlier; a caller holding many series can pass just those (`SeasonalWindow`) instead
of a whole day.

**Holding** (`BreachConfig.hold`, e.g. an alert rule's `for:`): a crossing counts only when the
series stays beyond the threshold for `run_steps` consecutive steps inside the horizon, and the
per-step probabilities are combined into the probability of such a run (`combine_steps`). A
series that sits just under a threshold touches it now and then; it is a rule that fires only
if it stays there.

The ETA is the first horizon step whose forecast probability reaches
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
Combine = Literal["independent", "max"]


class BreachConfig(BaseModel):
    """When a predicted breach becomes a warning.

    The defaults were chosen on development scenario seeds 20-49 (bench/breach.py's generated
    scenarios, global LSTM trained on seeds 0-19) and, for false warnings on periodic series, on
    NAB's artificialWithAnomaly and realAWSCloudwatch files (threshold above every value, so
    every warning is false). Neither the evaluation seeds (100-119) nor NAB's
    artificialNoAnomaly files were used. On those development data: the old rule (max over the
    horizon, p >= 0.3, 2 in a row, no seasonal check) warned 91.7 % of crossings >= 15 min ahead
    (latency creep 67 %) for 0.74 false warnings per series-day on artificialWithAnomaly; the
    independent combination alone 99 % for 0.5-2; with the seasonal check (trend window 20 min,
    p >= 0.5, 4 in a row) 96.2 % for 0.025 per normal series-day, 0 on artificialWithAnomaly and
    0.079 on realAWSCloudwatch (trend window 30 min: 94.0 %; 3 in a row: 97.0 % for 0.061 on
    artificialWithAnomaly).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probability: float = Field(
        0.5, gt=0.0, lt=1.0, description="warn when P(cross within horizon) reaches this"
    )
    consecutive: int = Field(4, ge=1, description="forecasts in a row that must reach it")
    horizon: int | None = Field(
        None, ge=1, description="horizon steps looked at; None = the whole forecast"
    )
    eta_probability: float = Field(
        0.5, gt=0.0, lt=1.0, description="a horizon step's probability that sets the ETA"
    )
    combine: Combine = Field(
        "independent",
        description="per-step probabilities -> P(cross within horizon): 'independent' "
        "(1 - prod(1 - p)) or 'max' (a lower bound)",
    )
    hold: int = Field(
        0,
        ge=0,
        description="seconds the series must stay beyond the threshold for the crossing to "
        "count (an alert rule's `for:`); 0: reaching it once",
    )
    run_combine: Combine = Field(
        "max",
        description="per-step probabilities -> P(beyond for `hold`): 'max' (paths that move "
        "together: the best window's smallest probability) or 'independent' (a lower bound)",
    )
    season: int | None = Field(
        86_400, ge=1, description="seconds; the seasonal check's period (None: no check)"
    )
    trend_window: int = Field(
        1200, ge=1, description="seconds of the difference from a season ago fitted by a line"
    )
    trend_points: int = Field(12, ge=3, description="at least this many steps in that window")
    min_observed: float = Field(
        0.5, gt=0.0, le=1.0, description="share of the trend window that must be observed"
    )

    def run_steps(self, step: int) -> int:
        """Consecutive steps beyond the threshold that make a crossing: 1, or those that span
        `hold` (a rule evaluated every step fires at the evaluation `for:` after its first
        holding one)."""
        return 1 + math.ceil(self.hold / step)

    def combine_for(self, run: int) -> Combine:
        """How per-step probabilities combine for runs of `run` steps (`combine` for one)."""
        return self.combine if run == 1 else self.run_combine

    def trend_steps(self, step: int) -> int:
        """Steps of the seasonal check's trend window at this step."""
        return max(self.trend_window // step, self.trend_points)

    def season_steps(self, step: int) -> int | None:
        return None if self.season is None else max(1, round(self.season / step))

    def history_length(self, step: int) -> int:
        """Newest steps of history the seasonal check reads (0: none, the check is off)."""
        season = self.season_steps(step)
        return 0 if season is None else season + self.trend_steps(step)

    def seasonal_offsets(self, step: int, horizon: int) -> tuple[range, range] | None:
        """Steps, relative to a forecast's last one (0), that the seasonal check reads: the
        newest trend window, and the trend window + `horizon` one season earlier (None: off)."""
        season = self.season_steps(step)
        if season is None or season < horizon:
            return None
        w = self.trend_steps(step)
        return range(-w + 1, 1), range(-season - w + 1, -season + horizon + 1)


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
    #: [N] the forecast's own P(cross within the horizon), before the seasonal check
    forecast_probability: FloatArray | None = None
    #: [N] the seasonal check's P(cross within the horizon); NaN where it has no opinion
    seasonal_probability: FloatArray | None = None

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
    history: npt.ArrayLike | SeasonalWindow | None = None,
) -> BreachPrediction:
    """Per series: P(crossing within the horizon), the per-step probabilities combined as
    `config.combine` says and, given `history` ([N, L]: each series' newest L values up to and
    including the forecast's last step, NaN = gap; or just the stretches the check reads, a
    `SeasonalWindow`), checked against the seasonal forecast (module docstring); the ETA = the
    first step whose probability reaches the ETA probability."""
    config = config or BreachConfig()
    exceed = exceed_probability(forecast, threshold, direction)
    if config.horizon is not None:
        exceed = exceed[:, : config.horizon]
    n, h = exceed.shape
    run = config.run_steps(forecast.step)
    own = combine_steps(exceed, config.combine_for(run), run)
    probability = own
    seasonal = None
    window = history
    if history is not None and not isinstance(history, SeasonalWindow):
        window = SeasonalWindow.of(history, forecast.step, h, config)
    if isinstance(window, SeasonalWindow) and config.season is not None:
        seasonal = seasonal_probability(window, threshold, direction, h, config, run)
        if len(seasonal) != n:
            raise ModelInputError(f"history has {len(seasonal)} series for {n} forecasts")
        probability = np.where(np.isfinite(seasonal), np.fmin(own, seasonal), own)
    filled = np.nan_to_num(exceed, nan=-1.0)
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
        forecast_probability=own,
        seasonal_probability=seasonal,
    )


def combine_steps(exceed: npt.ArrayLike, how: Combine = "independent", run: int = 1) -> FloatArray:
    """[N, H] per-step probabilities -> [N] P(beyond at some step): 1 - Π(1 - p) ("independent")
    or max p ("max"), over the finite steps; NaN where no step is finite. With `run` > 1 it is
    P(beyond at `run` consecutive steps somewhere in the horizon, a run still going at its last
    step counting as complete: the forecast sees no further): for "independent" the exact
    probability of such a run when the steps are independent (a recursion over the length of
    the current run), for "max" the best window's smallest probability. A step that is not
    finite breaks a run."""
    p = np.asarray(exceed, dtype=np.float64)
    if p.ndim != 2:
        raise ModelInputError("per-step probabilities must be [series, horizon]")
    if run < 1:
        raise ModelInputError(f"a run is at least one step, not {run}")
    finite = np.isfinite(p)
    if run > 1:
        out = _run_probability(np.where(finite, np.clip(p, 0.0, 1.0), 0.0), run, how)
    elif how == "max":
        out = np.where(finite, p, -1.0).max(axis=1) if p.shape[1] else np.full(len(p), -1.0)
    elif how == "independent":
        out = 1.0 - np.where(finite, 1.0 - np.clip(p, 0.0, 1.0), 1.0).prod(axis=1)
    else:
        raise ModelInputError(f"combine must be 'independent' or 'max', not {how!r}")
    return np.asarray(np.where(finite.any(axis=1), out, np.nan), dtype=np.float64)


def _run_probability(p: FloatArray, run: int, how: Combine) -> FloatArray:
    """[N, H] probabilities in [0, 1] -> [N] P(`run` consecutive steps beyond)."""
    n, h = p.shape
    if how == "max":
        if h == 0:
            return np.zeros(n)
        # A run still going at the horizon's end counts: the forecast sees no further.
        padded = np.concatenate([p, np.full((n, run - 1), np.inf)], axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(padded, run, axis=1)
        return np.asarray(windows.min(axis=2).max(axis=1), dtype=np.float64)
    if how != "independent":
        raise ModelInputError(f"combine must be 'independent' or 'max', not {how!r}")
    # state[:, j]: P(no completed run yet and the current run is j steps long)
    state = np.zeros((n, run))
    state[:, 0] = 1.0
    done = np.zeros(n)
    for k in range(h):
        q = p[:, k : k + 1]
        done = done + state[:, -1] * q[:, 0]
        grown = state[:, :-1] * q
        state = np.concatenate([state.sum(axis=1, keepdims=True) * (1.0 - q), grown], axis=1)
    return done + state[:, 1:].sum(axis=1)  # a run still going at the end counts


@dataclass(frozen=True, slots=True)
class SeasonalWindow:
    """What the seasonal check reads of N series (`BreachConfig.seasonal_offsets`): `recent`
    [N, W], the newest W values up to the forecast's last step, and `before` [N, W + H], the
    values one season before those W steps and the H after them. NaN = gap."""

    recent: FloatArray
    before: FloatArray

    @classmethod
    def of(
        cls, history: npt.ArrayLike, step: int, horizon: int, config: BreachConfig
    ) -> SeasonalWindow | None:
        """From each series' newest values [N, L] (a shorter history counts as gaps before
        it); None when the check is off."""
        offsets = config.seasonal_offsets(step, horizon)
        y = np.asarray(history, dtype=np.float64)
        if y.ndim != 2:
            raise ModelInputError("history must be [series, steps]")
        if offsets is None:
            return None
        recent, before = offsets
        need = 1 - before.start
        if y.shape[1] < need:
            y = np.concatenate([np.full((len(y), need - y.shape[1]), np.nan), y], axis=1)
        last = y.shape[1] - 1
        return cls(y[:, last + recent.start :], y[:, last + before.start : last + before.stop])


def seasonal_probability(
    window: SeasonalWindow,
    threshold: float | npt.ArrayLike,
    direction: Direction,
    horizon: int,
    config: BreachConfig,
    run: int = 1,
) -> FloatArray:
    """[N] P(cross within `horizon` steps) by the seasonal check (module docstring); with
    `run` > 1, P(`run` consecutive steps beyond) (`combine_steps`). NaN where
    it has no opinion: fewer than `min_observed` of the trend window's differences from a
    season before are observed, or no value a season before any horizon step is."""
    recent = np.asarray(window.recent, dtype=np.float64)
    before = np.asarray(window.before, dtype=np.float64)
    n, w = recent.shape
    if before.shape != (n, w + horizon) or horizon < 1:
        raise ModelInputError(
            f"a seasonal window needs [N, W] and [N, W + H] values; got {recent.shape} and "
            f"{before.shape} for H = {horizon}"
        )
    centre, spread, count = linear_extrapolation(recent - before[:, :w], horizon)
    enough = count >= max(3, math.ceil(config.min_observed * w))
    path = before[:, w:] + centre  # [N, H]
    seen = np.concatenate([recent, before], axis=1)
    top = np.max(np.abs(np.where(np.isfinite(seen), seen, 0.0)), axis=1, keepdims=True)
    spread = np.maximum(np.nan_to_num(spread, nan=0.0), 1e-12 * np.maximum(top, 1.0))
    with np.errstate(invalid="ignore"):
        z = (_thresholds(threshold, n)[:, None] - path) / spread
    exceed = ndtr(-z) if direction == "above" else ndtr(z)
    exceed = np.where(np.isfinite(path), exceed, np.nan)
    combined = combine_steps(exceed, config.combine_for(run), run)
    return np.asarray(np.where(enough, combined, np.nan), dtype=np.float64)


def linear_extrapolation(
    values: npt.ArrayLike, horizon: int
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Per row of `values` [N, W] (oldest first, NaN = gap): the least-squares line through the
    observed points, extrapolated 1..`horizon` steps past the last column ([N, H]), its
    prediction standard deviation there (residual sigma x sqrt(1 + 1/n + (x - mean x)^2 / Sxx),
    [N, H]) and the number n of observed points ([N]). NaN where fewer than 3 are observed."""
    y = np.asarray(values, dtype=np.float64)
    w = y.shape[1]
    x = np.arange(w, dtype=np.float64)
    seen = np.isfinite(y)
    count = seen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(seen, x, 0.0).sum(axis=1) / count
        ym = np.where(seen, y, 0.0).sum(axis=1) / count
        dx = np.where(seen, x - xm[:, None], 0.0)
        dy = np.where(seen, y - ym[:, None], 0.0)
        sxx = (dx * dx).sum(axis=1)
        slope = (dx * dy).sum(axis=1) / sxx
        resid = np.where(seen, dy - slope[:, None] * dx, 0.0)
        sigma = np.sqrt((resid * resid).sum(axis=1) / np.maximum(count - 2, 1))
        xh = (w - 1) + np.arange(1, horizon + 1, dtype=np.float64)
        centre = ym[:, None] + slope[:, None] * (xh[None, :] - xm[:, None])
        spread = sigma[:, None] * np.sqrt(
            1.0 + 1.0 / count[:, None] + (xh[None, :] - xm[:, None]) ** 2 / sxx[:, None]
        )
    few = count < 3
    centre[few] = np.nan
    spread[few] = np.nan
    return centre, spread, count.astype(np.int64)


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
    "SeasonalWindow",
    "combine_steps",
    "exceed_probability",
    "linear_extrapolation",
    "next_streak",
    "predict_breach",
    "seasonal_probability",
    "warning_mask",
]
