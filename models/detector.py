"""The anomaly detector: one configured object that turns a series' new points into z-like scores
and alarms, carrying a small per-series state from one call to the next.

The daemon's cycle, `POST /v1/forecasts`, `prognos backtest nab` and the notebooks all call
`Detector.update` with the same configuration, so a number measured on a benchmark is a number
the service produces. Scoring a whole file at once and scoring it a few points per cycle give the
same scores and alarms (each step's score depends only on the rows before it, in order).

Method (chosen by leave-one-folder-out on nab-dev + cmd-dev, see docs/forecasting.md):

* **level z**: how far a value lies from the mean of the previous `window` rows, in units of a
  scale that mixes the local standard deviation with the long-run one (an exponentially weighted
  standard deviation of the whole history, weight `long_weight`). The long-run part keeps a quiet
  stretch from turning ordinary noise into huge z's; the local part keeps a noisy stretch quiet.
* **alarm rule**: a step alarms when its z reaches `threshold` *and* is a new high: above every z
  of the previous `novelty_rows` rows. The tail of an excursion then alarms once, at its rise, not
  on every row after it.
* **fatigue** (adaptive sensitivity): each series counts its recent excursions (new highs at or
  above `threshold`, before fatigue), decayed with a half-life of `fatigue_halflife_s` seconds.
  Beyond `fatigue_free` of them, z is divided by 1 + `fatigue_gain` * (count - free): a series
  that keeps alarming needs a larger excursion to alarm again, which is what noisy, bursty series
  (NAB's AWS files) want and quiet ones (cmd-dev) never notice.
* **spatial** (HTM's spatial rule, causal): a value beyond the range seen so far by
  `spatial_margin` times that range alarms on its own, whatever its z or the fatigue. The range is
  a running min/max from the series' first value, shrinking toward its middle with a half-life of
  `spatial_halflife_s` seconds; the rule waits `spatial_warmup_rows` values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import ModelInputError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: z given to a change from a history with no spread at all (a flat line that moves).
Z_CAP = 1000.0
#: Per-series state budget, in bytes of its JSON form (tested): the state must stay small enough
#: to be stored each cycle and held in memory for a million series.
STATE_BUDGET_BYTES = 16 * 1024
STATE_FORMAT = 2


class DetectorConfig(BaseModel):
    """Everything that decides a detector's scores and alarms; saved with each model version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(default=72, ge=2, le=400, description="rows of the local mean and std")
    long_halflife: float = Field(
        default=1000.0, gt=0, description="rows: half-life of the long-run standard deviation"
    )
    long_weight: float = Field(
        default=0.8, ge=0, description="weight of the long-run std inside the scale"
    )
    threshold: float = Field(default=2.83, gt=0, description="z at which a new high alarms")
    warmup_rows: int = Field(
        default=72, ge=0, description="observed values a series needs before it may alarm"
    )
    novelty_rows: int = Field(
        default=6, ge=0, le=100, description="an alarm's z must exceed the previous N rows' z"
    )
    fatigue_gain: float = Field(
        default=2.0,
        ge=0,
        description="z is divided by 1 + gain * (recent excursions - free); 0: off",
    )
    fatigue_free: float = Field(
        default=2.0, ge=0, description="recent excursions a series may have before fatigue starts"
    )
    fatigue_halflife_s: float = Field(
        default=43200.0, gt=0, description="seconds: half-life of the recent-excursion count"
    )
    spatial_margin: float = Field(
        default=0.05,
        ge=0,
        description="fraction of the range seen so far beyond which a value "
        "alarms on its own (the spatial rule); 0: off",
    )
    spatial_halflife_s: float = Field(
        default=0.0, ge=0, description="seconds: half-life of the range's shrinking; 0: never"
    )
    spatial_warmup_rows: int = Field(
        default=288, ge=0, description="observed values the spatial rule waits for"
    )


def detector_config(
    base: Mapping[str, Any] | None = None, override: Mapping[str, Any] | None = None
) -> DetectorConfig:
    """The detector's defaults, overridden by `base` (models.detector) then by `override` (a
    target's detector); a bad key or value is refused naming it."""
    merged = {**(base or {}), **(override or {})}
    try:
        return DetectorConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'detector'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelInputError(f"invalid detector settings: {problems}") from exc


def config_digest(config: DetectorConfig) -> str:
    """A short digest of a configuration: a stored state is only resumed under the same one."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pack(values: FloatArray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode()


def _unpack(text: str) -> FloatArray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8").astype(np.float64)


@dataclass(slots=True)
class DetectorState:
    """One series' memory between calls: JSON-serialisable (floats exactly, as base64 of
    little-endian float64 or as JSON numbers, which round-trip) and bounded
    (`STATE_BUDGET_BYTES`)."""

    #: the newest observed values, oldest first (at most `window`)
    values: FloatArray = field(default_factory=lambda: np.zeros(0))
    #: raw z of the newest rows, oldest first (at most `novelty_rows`)
    recent_z: FloatArray = field(default_factory=lambda: np.zeros(0))
    long_mean: float = 0.0
    long_var: float = 0.0
    count: int = 0  #: observed values seen
    last_ts: int | None = None  #: epoch seconds of the newest row scored
    fatigue: float = 0.0  #: recent excursions, decayed to `last_ts`
    low: float | None = None  #: the spatial rule's range as of `last_ts` (None: nothing seen)
    high: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "values": _pack(self.values),
                "recent_z": _pack(self.recent_z),
                "long_mean": self.long_mean,
                "long_var": self.long_var,
                "count": self.count,
                "last_ts": self.last_ts,
                "fatigue": self.fatigue,
                "low": self.low,
                "high": self.high,
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DetectorState:
        """A stored state; one of the previous format (no fatigue, no range) resumes with no
        recent excursion and the range of the values it kept."""
        try:
            raw = json.loads(text)
            if raw["format"] not in (1, STATE_FORMAT):
                raise ValueError(f"format {raw['format']!r}, expected {STATE_FORMAT}")
            values = _unpack(raw["values"])
            if raw["format"] == 1:
                seen = len(values) > 0
                raw |= {
                    "fatigue": 0.0,
                    "low": float(values.min()) if seen else None,
                    "high": float(values.max()) if seen else None,
                }
            return cls(
                values=values,
                recent_z=_unpack(raw["recent_z"]),
                long_mean=float(raw["long_mean"]),
                long_var=float(raw["long_var"]),
                count=int(raw["count"]),
                last_ts=None if raw["last_ts"] is None else int(raw["last_ts"]),
                fatigue=float(raw["fatigue"]),
                low=None if raw["low"] is None else float(raw["low"]),
                high=None if raw["high"] is None else float(raw["high"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ModelInputError(f"unreadable detector state: {exc}") from exc

    def nbytes(self) -> int:
        return len(self.to_json().encode())


@dataclass(frozen=True, slots=True)
class DetectorOutput:
    """What one `update` produced, one entry per newly scored row (finite values only)."""

    ts: npt.NDArray[np.int64]
    values: FloatArray
    score: FloatArray  #: z-like after fatigue: 0 normal, ~3 rare
    alarm: BoolArray
    eligible: BoolArray  #: new highs, the level rule without its threshold
    mean: FloatArray  #: the local mean each value was compared with
    scale: FloatArray  #: the scale its distance was divided by
    state: DetectorState
    raw: FloatArray  #: z before fatigue
    fatigue: FloatArray  #: what z was divided by (1: no fatigue)
    level: BoolArray  #: the level rule alarmed (a new high at or above the threshold)
    spatial: BoolArray  #: the spatial rule alarmed (beyond the range seen so far, after warm-up)
    low: FloatArray  #: the range each value was judged by (NaN before anything was seen)
    high: FloatArray

    def __len__(self) -> int:
        return len(self.ts)

    def novel(self) -> FloatArray:
        """Scores that are new highs (the level rule without its threshold), else 0; `Z_CAP`
        where the spatial rule fired (it alarms whatever the threshold)."""
        return np.where(self.spatial, Z_CAP, np.where(self.eligible, self.score, 0.0))

    def evidence(self, i: int) -> dict[str, Any]:
        """Why row `i` scored as it did: the component that raised it (`spatial` when the
        spatial rule alone alarmed, else `level`), the value and what it was judged by."""
        spatial_only = bool(self.spatial[i]) and not self.level[i]
        out: dict[str, Any] = {
            "component": "spatial" if spatial_only else "level",
            "value": float(self.values[i]),
            "mean": float(self.mean[i]),
            "scale": float(self.scale[i]),
            "z": float(self.score[i]),
            "raw_z": float(self.raw[i]),
            "fatigue": float(self.fatigue[i]),
            "direction": "above" if self.values[i] >= self.mean[i] else "below",
        }
        if self.spatial[i]:
            out["range"] = [float(self.low[i]), float(self.high[i])]
        return out


class Detector:
    """`update(state, timestamps, values) -> DetectorOutput`, the one scoring path of Prognos."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._alpha = 1.0 - math.exp(-math.log(2.0) / self.config.long_halflife)
        self._fatigue_rate = math.log(2.0) / self.config.fatigue_halflife_s
        halflife = self.config.spatial_halflife_s
        self._range_rate = math.log(2.0) / halflife if halflife else 0.0

    def initial_state(self) -> DetectorState:
        return DetectorState()

    def update(
        self,
        state: DetectorState | None,
        timestamps: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> DetectorOutput:
        """Score every finite value newer than the state's last scored step, in time order.

        Rows at or before `state.last_ts` were scored already and are skipped, so a caught-up
        call after missed cycles scores each step once; missing values (NaN) are skipped and
        leave the state as it was.
        """
        cfg = self.config
        state = state or self.initial_state()
        ts = np.asarray(timestamps, dtype=np.int64).reshape(-1)
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(ts) != len(x):
            raise ModelInputError(f"{len(ts)} timestamps for {len(x)} values")
        if len(ts) > 1 and (np.diff(ts) <= 0).any():
            raise ModelInputError("timestamps must increase")
        keep = np.isfinite(x)
        if state.last_ts is not None:
            keep &= ts > state.last_ts
        ts, x = ts[keep], x[keep]
        k = len(x)
        if k == 0:
            return _empty(state)

        # Local mean and std of the previous `window` values for each new row (NaN-padded while
        # the series is young): every window is computed on its own, so the split of the rows
        # into calls cannot change a result.
        w = cfg.window
        history = np.asarray(state.values, dtype=np.float64)
        full = np.concatenate([np.full(w, np.nan), history, x])
        windows = np.lib.stride_tricks.sliding_window_view(full, w)[len(history) : len(history) + k]
        seen = np.isfinite(windows).sum(axis=1)
        filled = np.where(np.isfinite(windows), windows, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = filled.sum(axis=1) / seen
            centred = np.where(np.isfinite(windows), windows - mean[:, None], 0.0)
            local_var = (centred * centred).sum(axis=1) / seen

        # Long-run exponentially weighted variance, as it stood before each row.
        long_var = np.empty(k)
        m, v, a = state.long_mean, state.long_var, self._alpha
        count = state.count
        for i, value in enumerate(x.tolist()):
            long_var[i] = v
            if count == 0:
                m = value
            else:
                diff = value - m
                incr = a * diff
                m += incr
                v = (1.0 - a) * (v + diff * incr)
            count += 1

        scale = np.sqrt(local_var + (cfg.long_weight**2) * long_var)
        distance = np.abs(x - mean)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(scale > 0, distance / scale, np.where(distance > 0, Z_CAP, 0.0))
        young = seen < 2
        z = np.where(young, 0.0, np.minimum(z, Z_CAP))
        mean = np.where(young, x, mean)
        scale = np.where(young, 0.0, scale)

        # New highs: above every z of the previous `novelty_rows` rows.
        n = cfg.novelty_rows
        if n:
            recent = np.concatenate([np.full(n - len(state.recent_z), -np.inf), state.recent_z])
            past = np.concatenate([recent, z])
            previous = np.lib.stride_tricks.sliding_window_view(past, n)[:k]
            eligible = z > previous.max(axis=1)
        else:
            eligible = np.ones(k, dtype=bool)
        seen_before = state.count + np.arange(k)  # values observed before each row

        # Fatigue and the spatial range, as they stood before each row (decayed to its time).
        excursion = (eligible & (z >= cfg.threshold)).tolist()
        fatigue = np.empty(k)
        low = np.empty(k)
        high = np.empty(k)
        c = state.fatigue
        lo = math.inf if state.low is None else state.low
        hi = -math.inf if state.high is None else state.high
        last = state.last_ts
        for i, (t, value) in enumerate(zip(ts.tolist(), x.tolist(), strict=True)):
            if last is not None:
                c *= math.exp(-self._fatigue_rate * (t - last))
                if self._range_rate and hi >= lo:
                    shrink = math.exp(-self._range_rate * (t - last))
                    mid = 0.5 * (hi + lo)
                    hi, lo = mid + (hi - mid) * shrink, mid - (mid - lo) * shrink
            last = t
            fatigue[i] = c
            low[i], high[i] = lo, hi
            c += excursion[i]
            hi, lo = max(hi, value), min(lo, value)
        rules = self._rules(x, z, eligible, seen_before, fatigue, low, high)
        new_state = DetectorState(
            values=np.concatenate([history, x])[-w:].copy(),
            recent_z=np.concatenate([state.recent_z, z])[-n:].copy() if n else np.zeros(0),
            long_mean=float(m),
            long_var=float(v),
            count=count,
            last_ts=int(ts[-1]),
            fatigue=float(c),
            low=None if math.isinf(lo) else float(lo),
            high=None if math.isinf(hi) else float(hi),
        )
        return DetectorOutput(
            ts, x, eligible=eligible, mean=mean, scale=scale, state=new_state, raw=z, **rules
        )

    def _rules(
        self,
        x: FloatArray,
        z: FloatArray,
        eligible: BoolArray,
        seen_before: npt.NDArray[np.int64],
        fatigue: FloatArray,
        low: FloatArray,
        high: FloatArray,
    ) -> dict[str, Any]:
        """The alarm rules, from each row's raw z, fatigue count and range (shared by `update`
        and its vectorised copy, so both decide alike): the `DetectorOutput` fields they give."""
        cfg = self.config
        divisor = 1.0 + cfg.fatigue_gain * np.maximum(fatigue - cfg.fatigue_free, 0.0)
        score = z / divisor
        level = eligible & (score >= cfg.threshold) & (seen_before >= cfg.warmup_rows)
        with np.errstate(invalid="ignore"):  # nothing seen yet: an infinite, empty range
            width = high - low
            margin = cfg.spatial_margin * width
            beyond = (width > 0) & ((x > high + margin) | (x < low - margin))
        spatial = beyond & (cfg.spatial_margin > 0) & (seen_before >= cfg.spatial_warmup_rows)
        return {
            "score": score,
            "alarm": level | spatial,
            "fatigue": divisor,
            "level": level,
            "spatial": spatial,
            "low": np.where(np.isinf(low), np.nan, low),
            "high": np.where(np.isinf(high), np.nan, high),
        }

    def update_many(
        self,
        states: Sequence[DetectorState | None],
        timestamps: Sequence[npt.ArrayLike],
        values: Sequence[npt.ArrayLike],
    ) -> list[DetectorOutput]:
        """`update` for many series: the same results, series by series. The serving cycle's
        usual case, one new value for a series whose state is full, is computed for all such
        series at once; any other series goes through `update`."""
        cfg = self.config
        w, n = cfg.window, cfg.novelty_rows
        outputs: list[DetectorOutput | None] = [None] * len(states)
        fast: list[int] = []
        for i, (state, ts, x) in enumerate(zip(states, timestamps, values, strict=True)):
            t_arr = np.asarray(ts, dtype=np.int64).reshape(-1)
            x_arr = np.asarray(x, dtype=np.float64).reshape(-1)
            if (
                state is not None
                and len(t_arr) == 1
                and len(x_arr) == 1
                and state.last_ts is not None
                and t_arr[0] > state.last_ts
                and math.isfinite(x_arr[0])
                and len(state.values) == w
                and len(state.recent_z) == n
            ):
                fast.append(i)
            else:
                outputs[i] = self.update(state, t_arr, x_arr)
        if fast:
            for i, out in zip(fast, self._step_full(fast, states, timestamps, values), strict=True):
                outputs[i] = out
        return [o for o in outputs if o is not None]

    def _step_full(
        self,
        rows: list[int],
        states: Sequence[DetectorState | None],
        timestamps: Sequence[npt.ArrayLike],
        values: Sequence[npt.ArrayLike],
    ) -> list[DetectorOutput]:
        """One new value for each of many full states, vectorised across series with the very
        operations `update` applies along a series."""
        cfg = self.config
        full = [s for i in rows if (s := states[i]) is not None]
        x = np.array([float(np.asarray(values[i]).reshape(-1)[0]) for i in rows])
        ts = np.array([int(np.asarray(timestamps[i]).reshape(-1)[0]) for i in rows])
        history = np.stack([s.values for s in full])
        mean = history.sum(axis=1) / cfg.window
        centred = history - mean[:, None]
        local_var = (centred * centred).sum(axis=1) / cfg.window
        long_mean = np.array([s.long_mean for s in full])
        long_var = np.array([s.long_var for s in full])
        diff = x - long_mean
        incr = self._alpha * diff
        new_mean = long_mean + incr
        new_var = (1.0 - self._alpha) * (long_var + diff * incr)
        scale = np.sqrt(local_var + (cfg.long_weight**2) * long_var)
        distance = np.abs(x - mean)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(scale > 0, distance / scale, np.where(distance > 0, Z_CAP, 0.0))
        z = np.minimum(z, Z_CAP)
        if cfg.novelty_rows:
            recent = np.stack([s.recent_z for s in full])
            eligible = z > recent.max(axis=1)
            new_recent = np.concatenate([recent[:, 1:], z[:, None]], axis=1)
        else:
            eligible = np.ones(len(full), dtype=bool)
            new_recent = np.zeros((len(full), 0))
        counts = np.array([s.count for s in full])
        elapsed = ts - np.array([s.last_ts for s in full])
        fatigue = np.array([s.fatigue for s in full]) * np.exp(-self._fatigue_rate * elapsed)
        low = np.array([s.low for s in full], dtype=np.float64)
        high = np.array([s.high for s in full], dtype=np.float64)
        if self._range_rate:
            shrink = np.exp(-self._range_rate * elapsed)
            mid = 0.5 * (high + low)
            high, low = mid + (high - mid) * shrink, mid - (mid - low) * shrink
        new_fatigue = fatigue + (eligible & (z >= cfg.threshold))
        new_low, new_high = np.minimum(low, x), np.maximum(high, x)
        new_history = np.concatenate([history[:, 1:], x[:, None]], axis=1)
        rules = self._rules(x, z, eligible, counts, fatigue, low, high)
        # One-row views and Python floats, made once for all series (the cycle's hot loop).
        views = [list(a.reshape(-1, 1)) for a in (ts, x, eligible, mean, scale, z)]
        rule_views = {key: list(value.reshape(-1, 1)) for key, value in rules.items()}
        floats: list[list[float]] = [
            a.tolist() for a in (new_mean, new_var, new_fatigue, new_low, new_high)
        ]
        out = []
        for j, (count, last_ts) in enumerate(zip(counts.tolist(), ts.tolist(), strict=True)):
            state = DetectorState(
                values=new_history[j],
                recent_z=new_recent[j],
                long_mean=floats[0][j],
                long_var=floats[1][j],
                count=count + 1,
                last_ts=last_ts,
                fatigue=floats[2][j],
                low=floats[3][j],
                high=floats[4][j],
            )
            out.append(
                DetectorOutput(
                    views[0][j],
                    views[1][j],
                    eligible=views[2][j],
                    mean=views[3][j],
                    scale=views[4][j],
                    state=state,
                    raw=views[5][j],
                    score=rule_views["score"][j],
                    alarm=rule_views["alarm"][j],
                    fatigue=rule_views["fatigue"][j],
                    level=rule_views["level"][j],
                    spatial=rule_views["spatial"][j],
                    low=rule_views["low"][j],
                    high=rule_views["high"][j],
                )
            )
        return out


def _empty(state: DetectorState) -> DetectorOutput:
    none = np.zeros(0)
    never = np.zeros(0, dtype=bool)
    return DetectorOutput(
        np.zeros(0, dtype=np.int64),
        none,
        score=none,
        alarm=never,
        eligible=never,
        mean=none,
        scale=none,
        state=state,
        raw=none,
        fatigue=none,
        level=never,
        spatial=never,
        low=none,
        high=none,
    )


def unit_score(z: npt.ArrayLike) -> FloatArray:
    """A z-like score squashed into [0, 1) by z / (1 + z), for outputs that need a probability
    scale (NAB's results files); monotone, so thresholds carry over."""
    arr = np.maximum(np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0), 0.0)
    return np.asarray(arr / (1.0 + arr), dtype=np.float64)


def threshold_from_unit(unit: float) -> float:
    """The z threshold equivalent to a threshold on `unit_score`."""
    if not 0.0 <= unit < 1.0:
        raise ModelInputError(f"a unit-scale threshold must lie in [0, 1), got {unit}")
    return unit / (1.0 - unit)
