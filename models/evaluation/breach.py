"""Breach-warning evaluation: replay labelled scenarios as a deployed daemon would see them.

For every scenario, from its warmup (one day) on, every `every` steps, the forecaster forecasts
from the data up to that step only (the last `context_length` steps, gaps as NaN), the forecast
becomes a breach probability for the scenario's threshold (`models.breach.predict_breach`), and a
warning is on where `BreachConfig.consecutive` forecasts in a row reach `BreachConfig.probability`.

Measured, per DESIGN.md's lead time (crossing time - time of the first warning for it):

- a warning counts for a crossing at index c if it is on at a forecast step t with
  c - `window` ≤ t < c, and the series has not been at or above the threshold since its warning
  episode began (a warning still on from an earlier excursion is not credited to the next one);
  its lead is (c - t) · step for the first such t, so at most `window`; a crossing without one
  is missed;
- **share warned ≥ `min_lead`** (15 min) over all crossings, and the **median lead** of the warned
  ones;
- **false warnings**: a warning episode is a run of consecutive forecasts with the warning on; it
  is false when none of its steps lies in a crossing's credited window or while the series is in
  breach (from a crossing to its excursion's last sample at or above the threshold). Reported per
  series-day of evaluated time, on normal scenarios (where every episode is false), on breach
  scenarios (early or spurious warnings) and on NAB's artificialNoAnomaly files.

A learned model must be trained on other seeds than the evaluated ones, or on the scenarios' early
parts only (`histories(..., early_only=True)` cuts each series at its warmup).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field

from models.breach import BreachConfig, predict_breach, warning_mask
from models.domain import ContextBatch, History
from models.evaluation.backtest import regular_grid
from models.evaluation.nab import read_data_file
from models.forecasters.base import FitReport, Forecaster
from sim import scenarios as scenario_module
from sim.scenarios import REARM, Scenario, crossings, sre_threshold

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NAB_NO_ANOMALY = "artificialNoAnomaly"


class BreachEvalConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    breach: BreachConfig = BreachConfig()
    every: int = Field(1, ge=1, description="steps between forecasts (1: every step)")
    window: int = Field(3600, ge=1, description="seconds before a crossing a warning counts")
    min_lead: int = Field(900, ge=0, description="seconds of lead a warning must have")
    rearm: int = Field(REARM, ge=0, description="seconds below before a new crossing counts")
    batch_size: int = Field(8192, ge=1, description="context windows per predict call")
    history: bool = Field(
        True,
        description="give predict_breach each series' recent values (its seasonal check); "
        "False: the forecast alone",
    )


@dataclass(frozen=True, slots=True)
class SeriesOutcome:
    name: str
    kind: str
    breach: bool
    days: float  #: evaluated time (forecast steps x every x step)
    crossings: tuple[int, ...]  #: indices of the evaluated crossings
    leads: tuple[float, ...]  #: seconds per crossing; NaN = missed (no credited warning)
    false_episodes: int
    warning_steps: int
    forecasts: int


@dataclass(slots=True)
class BreachReport:
    model: str
    outcomes: list[SeriesOutcome] = field(default_factory=list)
    min_lead: int = 900
    seconds: float = 0.0

    @property
    def leads(self) -> FloatArray:
        return np.array([lead for o in self.outcomes for lead in o.leads], dtype=np.float64)

    @property
    def crossings(self) -> int:
        return len(self.leads)

    def share_warned(self, min_lead: float | None = None) -> float:
        """Share of crossings warned at least `min_lead` seconds ahead (default: the config's)."""
        leads = self.leads
        if not len(leads):
            return math.nan
        need = self.min_lead if min_lead is None else min_lead
        return float(np.mean(np.nan_to_num(leads, nan=-1.0) >= max(need, 1e-9)))

    @property
    def median_lead_minutes(self) -> float:
        """Median lead of the warned crossings, in minutes (NaN if none was warned)."""
        warned = self.leads[np.isfinite(self.leads)]
        return float(np.median(warned)) / 60.0 if len(warned) else math.nan

    def false_per_day(self, breach: bool = False) -> float:
        """False-warning episodes per series-day, on normal (or on breach) scenarios."""
        chosen = [o for o in self.outcomes if o.breach == breach]
        days = sum(o.days for o in chosen)
        return sum(o.false_episodes for o in chosen) / days if days else math.nan

    def by_kind(self) -> dict[str, dict[str, float]]:
        kinds: dict[str, list[SeriesOutcome]] = {}
        for o in self.outcomes:
            kinds.setdefault(o.kind, []).append(o)
        out = {}
        for kind, chosen in kinds.items():
            sub = BreachReport(self.model, chosen, self.min_lead)
            days = sum(o.days for o in chosen)
            out[kind] = {
                "series": len(chosen),
                "crossings": sub.crossings,
                "warned_min_lead": sub.share_warned() if sub.crossings else math.nan,
                "warned_any": sub.share_warned(0.0) if sub.crossings else math.nan,
                "median_lead_minutes": sub.median_lead_minutes,
                "false_episodes": sum(o.false_episodes for o in chosen),
                "series_days": days,
                "false_per_day": sum(o.false_episodes for o in chosen) / days if days else math.nan,
            }
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "crossings": self.crossings,
            "warned_min_lead": self.share_warned(),
            "warned_any": self.share_warned(0.0),
            "median_lead_minutes": self.median_lead_minutes,
            "false_per_day_normal": self.false_per_day(False),
            "false_per_day_breach_series": self.false_per_day(True),
            "normal_series_days": sum(o.days for o in self.outcomes if not o.breach),
            "seconds": self.seconds,
            "by_kind": self.by_kind(),
        }


# ---------------------------------------------------------------------------- frozen scenarios

#: The constants of `sim.scenarios` that set a scenario's threshold (with `sre_threshold`).
THRESHOLD_RULE = (
    "MARGIN_NOISE_SIGMAS",
    "MARGIN_RANGE_FRACTION",
    "MARGIN_LEVEL_FRACTION",
    "MEMORY_LIMITS_MIB",
    "LATENCY_SLO_NOISE_SIGMAS",
    "LATENCY_SLO_HEADROOM",
    "QUEUE_ALERT",
    "REARM",
)


def scenario_digest() -> dict[str, Any]:
    """What the generated figures depend on: sha256 of the scenario generators' module source,
    and of the threshold rule (its parameters and `sre_threshold`'s source). A bench prints them
    so a figure can be tied to the generators it was measured on."""
    source = inspect.getsource(scenario_module)
    rule = {name: getattr(scenario_module, name) for name in THRESHOLD_RULE}
    rule_text = json.dumps(rule, sort_keys=True) + inspect.getsource(sre_threshold)
    return {
        "module": scenario_module.__name__,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "threshold_rule": rule,
        "threshold_rule_sha256": hashlib.sha256(rule_text.encode()).hexdigest(),
    }


# ---------------------------------------------------------------------------- training


def histories(scenarios: Sequence[Scenario], *, early_only: bool = False) -> list[History]:
    """The scenarios as training histories; `early_only` keeps only what precedes the warmup
    (no evaluated step, no crossing), so the same scenarios can then be evaluated."""
    return [s.history(s.warmup if early_only else None) for s in scenarios]


def train(
    forecaster: Forecaster, scenarios: Sequence[Scenario], *, early_only: bool = False
) -> FitReport:
    return forecaster.fit(histories(scenarios, early_only=early_only))


# ---------------------------------------------------------------------------- replay


def forecast_probabilities(
    forecaster: Forecaster,
    values: FloatArray,
    start: int,
    step: int,
    threshold: float,
    indices: IntArray,
    config: BreachEvalConfig,
) -> tuple[FloatArray, FloatArray]:
    """P(crossing within the horizon) of the forecast made at each of `indices` from the data up
    to and including that index (the newest `context_length` steps; older ones as gaps): with
    the seasonal check over the newest `BreachConfig.history_length` steps, and from the
    forecast alone."""
    values = np.asarray(values, dtype=np.float64)
    length = forecaster.context_length
    windows = _windows(values, length)  # row t = values[t - length + 1 .. t]
    past = config.breach.history_length(step)
    history = _windows(values, past) if past else None
    checked = np.empty(len(indices))
    alone = np.empty(len(indices))
    for lo in range(0, len(indices), config.batch_size):
        chosen = indices[lo : lo + config.batch_size]
        batch = ContextBatch(
            windows[chosen].astype(np.float32), start + chosen.astype(np.int64) * step, step
        )
        forecast = forecaster.predict(batch)
        prediction = predict_breach(
            forecast,
            threshold,
            "above",
            config.breach,
            history=None if history is None else history[chosen],
        )
        checked[lo : lo + len(chosen)] = prediction.probability
        own = prediction.forecast_probability
        alone[lo : lo + len(chosen)] = prediction.probability if own is None else own
    return checked, alone


def _windows(values: FloatArray, length: int) -> FloatArray:
    """Row t: values[t - length + 1 .. t], NaN before the series starts."""
    padded = np.concatenate([np.full(length - 1, np.nan), values])
    return np.asarray(sliding_window_view(padded, length))


def judge_warnings(
    warn: BoolArray,
    indices: IntArray,
    values: FloatArray,
    threshold: float,
    step: int,
    config: BreachEvalConfig,
) -> tuple[tuple[int, ...], tuple[float, ...], int]:
    """(crossings after the first forecast, their leads in seconds (NaN = missed), number of
    false warning episodes) for warnings `warn[i]` on at forecast steps `indices[i]`."""
    indices = np.asarray(indices, dtype=np.int64)
    warn = np.asarray(warn, dtype=bool)
    above = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= threshold)
    all_crossings = crossings(values, threshold, config.rearm // step)
    first = int(indices[0]) if len(indices) else 0
    window = max(1, config.window // step)
    justified = np.zeros(len(indices), dtype=bool)
    # The series index at which each warning's episode (run of consecutive warnings) began.
    began = warn & np.concatenate([[True], ~warn[:-1]])
    firsts = np.concatenate([indices[began], [-1]])  # -1: a placeholder when there is none
    episode_start = np.where(warn, firsts[np.maximum(np.cumsum(began) - 1, 0)], -1)
    evaluated: list[int] = []
    leads: list[float] = []
    for k, c in enumerate(all_crossings):
        earlier = above[above < c]
        since = int(earlier[-1]) + 1 if len(earlier) else 0
        credited = (indices >= max(c - window, since)) & (indices < c)
        nxt = all_crossings[k + 1] if k + 1 < len(all_crossings) else len(values)
        excursion_end = int(above[above < nxt][-1])
        justified |= credited | ((indices >= c) & (indices <= excursion_end))
        if c <= first:
            continue  # crossed before the evaluation began: nothing to warn about
        evaluated.append(int(c))
        hits = np.flatnonzero(credited & warn & (episode_start >= since))
        leads.append(float((c - indices[hits[0]]) * step) if len(hits) else math.nan)
    return tuple(evaluated), tuple(leads), false_episodes(warn, justified)


def false_episodes(warn: BoolArray, justified: BoolArray) -> int:
    """Runs of consecutive warnings none of whose steps is justified."""
    warn = np.asarray(warn, dtype=bool)
    if not warn.any():
        return 0
    edges = np.diff(np.concatenate([[0], warn.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    good = np.concatenate([[0], np.cumsum(np.asarray(justified, dtype=np.int64))])
    return int(np.sum(good[stops] - good[starts] == 0))


@dataclass(frozen=True, slots=True, eq=False)
class Replay:
    """The breach probabilities of one series' forecasts: enough to judge any warning rule."""

    name: str
    kind: str
    breach: bool
    model: str  #: the forecaster's version
    values: FloatArray
    step: int
    threshold: float
    indices: IntArray  #: the series index each forecast was made at (its newest data)
    probability: FloatArray  #: P(cross within the horizon) of each of those forecasts
    every: int
    #: the same from the forecast alone (no seasonal check); None: the same as `probability`
    forecast_probability: FloatArray | None = None

    @property
    def days(self) -> float:
        return len(self.indices) * self.every * self.step / 86_400


def replay_series(
    forecaster: Forecaster,
    values: FloatArray,
    start: int,
    step: int,
    threshold: float,
    first: int,
    config: BreachEvalConfig,
    *,
    name: str = "",
    kind: str = "",
    breach: bool = False,
) -> Replay:
    """Forecast from index `first` on, every `config.every` steps, as a daemon would."""
    indices = np.arange(first, len(values), config.every, dtype=np.int64)
    probability, alone = forecast_probabilities(
        forecaster, values, start, step, threshold, indices, config
    )
    return Replay(
        name,
        kind,
        breach,
        forecaster.version,
        values,
        step,
        threshold,
        indices,
        probability,
        config.every,
        alone,
    )


def judge(replay: Replay, config: BreachEvalConfig) -> SeriesOutcome:
    """Apply `config.breach`'s warning rule to a replay and score the warnings (with the
    seasonal check's probabilities, or without them when `config.history` is False)."""
    probability = replay.probability
    if not config.history and replay.forecast_probability is not None:
        probability = replay.forecast_probability
    warn = warning_mask(probability, config.breach)
    found, leads, false = judge_warnings(
        warn, replay.indices, replay.values, replay.threshold, replay.step, config
    )
    return SeriesOutcome(
        name=replay.name,
        kind=replay.kind,
        breach=replay.breach,
        days=replay.days,
        crossings=found,
        leads=leads,
        false_episodes=false,
        warning_steps=int(warn.sum()),
        forecasts=len(replay.indices),
    )


def replay(
    forecaster: Forecaster,
    scenarios: Sequence[Scenario],
    config: BreachEvalConfig | None = None,
) -> list[Replay]:
    """Every scenario forecast from its warmup on with a fitted forecaster."""
    config = config or BreachEvalConfig()
    return [
        replay_series(
            forecaster,
            s.values,
            s.start,
            s.step,
            s.threshold,
            s.warmup,
            config,
            name=s.name,
            kind=s.kind,
            breach=s.breach,
        )
        for s in scenarios
    ]


def report(
    replays: Sequence[Replay], config: BreachEvalConfig, model: str, seconds: float = 0.0
) -> BreachReport:
    """A `BreachReport` of replays under one warning rule (cheap: no forecasting)."""
    return BreachReport(model, [judge(r, config) for r in replays], config.min_lead, seconds)


def evaluate(
    forecaster: Forecaster,
    scenarios: Sequence[Scenario],
    config: BreachEvalConfig | None = None,
) -> BreachReport:
    """Replay every scenario with a fitted forecaster and score its warnings."""
    config = config or BreachEvalConfig()
    started = time.perf_counter()
    replays = replay(forecaster, scenarios, config)
    return report(replays, config, forecaster.version, time.perf_counter() - started)


# ---------------------------------------------------------------------------- NAB


@dataclass(slots=True)
class NabWarningReport:
    model: str
    outcomes: list[SeriesOutcome] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def days(self) -> float:
        return sum(o.days for o in self.outcomes)

    @property
    def false_episodes(self) -> int:
        return sum(o.false_episodes for o in self.outcomes)

    @property
    def false_per_day(self) -> float:
        return self.false_episodes / self.days if self.days else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "files": len(self.outcomes),
            "series_days": self.days,
            "false_episodes": self.false_episodes,
            "false_per_day": self.false_per_day,
            "seconds": self.seconds,
            "per_file": {
                o.name: {
                    "threshold": self.thresholds[o.name],
                    "days": o.days,
                    "false_episodes": o.false_episodes,
                    "warning_steps": o.warning_steps,
                    "crossings": len(o.crossings),
                }
                for o in self.outcomes
            },
        }


def replay_nab(
    make_forecaster: Callable[[int], Forecaster],
    root: Path,
    config: BreachEvalConfig | None = None,
    *,
    folder: str = NAB_NO_ANOMALY,
) -> list[Replay]:
    """NAB files as fresh deployments: each on its own grid (its median step) with a fitted
    forecaster for that step from `make_forecaster(step)`, threshold = `sre_threshold` (the
    file's max + a margin), forecasts from the first full context on."""
    config = config or BreachEvalConfig()
    files = sorted((Path(root) / "data" / folder).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no NAB files under {Path(root) / 'data' / folder}")
    out = []
    for path in files:
        timestamps, raw = read_data_file(path)
        ts = (timestamps - np.datetime64("1970-01-01")) // np.timedelta64(1, "s")
        grid, step, start, _ = regular_grid(np.asarray(ts, dtype=np.int64), raw)
        forecaster = make_forecaster(step)
        out.append(
            replay_series(
                forecaster,
                grid,
                start,
                step,
                sre_threshold(grid),
                min(len(grid) - 1, forecaster.context_length - 1),
                config,
                name=f"{folder}/{path.name}",
                kind=folder,
            )
        )
    return out


def nab_report(
    replays: Sequence[Replay], config: BreachEvalConfig, model: str, seconds: float = 0.0
) -> NabWarningReport:
    result = NabWarningReport(model, seconds=seconds)
    for r in replays:
        result.outcomes.append(judge(r, config))
        result.thresholds[r.name] = r.threshold
    return result


def evaluate_nab(
    make_forecaster: Callable[[int], Forecaster],
    root: Path,
    config: BreachEvalConfig | None = None,
    *,
    folder: str = NAB_NO_ANOMALY,
) -> NabWarningReport:
    """The scenarios' warning logic on NAB files without anomalies (`replay_nab`). Every
    warning episode there is false: the threshold is above every value."""
    config = config or BreachEvalConfig()
    started = time.perf_counter()
    replays = replay_nab(make_forecaster, root, config, folder=folder)
    return nab_report(replays, config, replays[0].model, time.perf_counter() - started)


__all__ = [
    "BreachEvalConfig",
    "BreachReport",
    "NabWarningReport",
    "Replay",
    "SeriesOutcome",
    "evaluate",
    "evaluate_nab",
    "false_episodes",
    "forecast_probabilities",
    "histories",
    "judge",
    "judge_warnings",
    "nab_report",
    "replay",
    "replay_nab",
    "replay_series",
    "report",
    "scenario_digest",
    "train",
]
