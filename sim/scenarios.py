"""Labelled scenarios for breach prediction: series that cross a limit, and series that never do.

Every scenario is one series on a regular grid (60 s by default), three days long, with its
threshold and, for the breach kinds, the true crossing index(es). Generation is deterministic per
(kind, seed, step); every parameter is drawn from a range fixed below, in units of time (seconds)
or of the series' own level, so the same kind looks the same at another step.

Breach kinds (threshold = the limit the incident crosses):

- ``memory_leak``: a process whose memory grows linearly or slightly faster until it reaches its
  limit; usually (``MEMORY_RESTART_PROBABILITY``) it is then killed and restarts after a short
  scrape gap at its baseline and leaks again (so later crossings can follow); otherwise it stays
  pinned at the limit.
- ``latency_creep``: a latency with a daily cycle and multiplicative noise that creeps up over
  1-6 h until it crosses its SLO threshold; mitigated 10-60 min later.
- ``queue_saturation``: a queue that is nearly empty until arrivals exceed the service rate; the
  backlog accumulates (accelerating), saturates towards the queue's capacity (tanh) and crosses the
  alert level (a fraction of the capacity); drained some time later.

Normal kinds (threshold = `sre_threshold`: the series' maximum plus a margin, as an SRE would set
it above the normal range): ``daily`` (daily cycle + autocorrelated noise), ``level_shift``
(sudden steps up or down), ``gaps`` (NaN stretches from minutes to hours) and ``spiky``
(heavy-tailed noise and short spikes).

A crossing is the first index where the value is >= the threshold after the series has been below
it for at least ``REARM`` (so noise around the limit makes one crossing, not several). Every
crossing comes after at least ``WARMUP`` (one day) of history.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.domain import SeriesKey
from models.domain import History

FloatArray = npt.NDArray[np.float64]
Range = tuple[float, float]

STEP = 60
MINUTE = 60
HOUR = 3_600
DAY = 86_400

LENGTH = 3 * DAY  #: every scenario covers three days
WARMUP = DAY  #: history before the first evaluated step; every crossing comes later
FIRST_CROSSING: Range = (1.25 * DAY, 2.4 * DAY)  #: when the first crossing is planned
REARM = 30 * MINUTE  #: below the threshold this long before a new crossing counts
EPOCH_BASE = 1_704_067_200  #: 2024-01-01T00:00:00Z; starts fall within the year after it
START_DAYS = 365

BREACH_KINDS: tuple[str, ...] = ("memory_leak", "latency_creep", "queue_saturation")
NORMAL_KINDS: tuple[str, ...] = ("daily", "level_shift", "gaps", "spiky")
KINDS: tuple[str, ...] = BREACH_KINDS + NORMAL_KINDS

# -- shared shape -------------------------------------------------------------------------------
PEAK_HOUR: Range = (9.0, 21.0)  #: UTC hour of the daily maximum
SECOND_HARMONIC: Range = (0.0, 0.3)  #: relative weight of a 12-hour component
NOISE_AR: Range = (0.0, 0.7)  #: lag-one autocorrelation of the noise (per step)

# -- normal-kind thresholds (`sre_threshold`) ---------------------------------------------------
MARGIN_NOISE_SIGMAS = 4.0  #: margin >= this many noise sigmas (from one-step differences)
MARGIN_RANGE_FRACTION = 0.1  #: margin >= this share of the normal range (p0.5 .. p99.5)
MARGIN_LEVEL_FRACTION = 0.05  #: margin >= this share of |max| (flat series)

# -- memory_leak (MiB) --------------------------------------------------------------------------
MEMORY_LIMITS_MIB: tuple[float, ...] = (512.0, 1024.0, 2048.0, 4096.0)
MEMORY_BASELINE: Range = (0.35, 0.6)  #: steady usage, share of the limit
MEMORY_DAILY: Range = (0.0, 0.04)  #: daily amplitude, share of the limit
MEMORY_NOISE: Range = (0.002, 0.01)  #: noise sigma, share of the limit
MEMORY_RAMP: Range = (2 * HOUR, 16 * HOUR)  #: from leak start to the limit
MEMORY_ACCELERATION: Range = (0.0, 0.6)  #: growth (1 - a) u + a u^2 of the ramp fraction u
MEMORY_RESTART_PROBABILITY = 0.75  #: otherwise the process stays pinned at its limit
MEMORY_HOLD: Range = (0.0, 3 * MINUTE)  #: at the limit before the kill
MEMORY_RESTART_GAP: Range = (1 * MINUTE, 3 * MINUTE)  #: no samples while it restarts
MEMORY_NEXT_RAMP: Range = (0.8, 1.25)  #: the next leak's ramp, relative to the last one

# -- latency_creep (ms) -------------------------------------------------------------------------
LATENCY_BASE_MS: Range = (80.0, 400.0)
LATENCY_DAILY: Range = (0.1, 0.3)  #: relative daily amplitude
LATENCY_NOISE: Range = (0.02, 0.06)  #: sigma of the log-noise
LATENCY_SLO_NOISE_SIGMAS = 6.0  #: the SLO sits this many log-sigmas above the daily peak ...
LATENCY_SLO_HEADROOM: Range = (1.1, 1.4)  #: ... times this headroom
LATENCY_CREEP: Range = (1 * HOUR, 6 * HOUR)  #: duration of the creep up to the planned crossing
LATENCY_CREEP_POWER: Range = (1.0, 2.0)  #: creep factor 1 + r u^p
LATENCY_OVERSHOOT: Range = (1.05, 1.2)  #: the creep's level at its end, relative to the SLO
LATENCY_MITIGATION: Range = (10 * MINUTE, 60 * MINUTE)  #: after the crossing, until rollback
LATENCY_RECOVERY: Range = (5 * MINUTE, 20 * MINUTE)  #: the rollback's duration

# -- queue_saturation (items) -------------------------------------------------------------------
QUEUE_LEVEL: Range = (5.0, 50.0)  #: normal depth
QUEUE_DAILY: Range = (0.2, 0.6)
QUEUE_NOISE: Range = (0.5, 1.5)  #: sigma = this x sqrt(level) (Poisson-like)
QUEUE_CAPACITY: Range = (1_000.0, 20_000.0)
QUEUE_ALERT: Range = (0.5, 0.8)  #: alert level as a share of the capacity
QUEUE_OVERLOAD: Range = (30 * MINUTE, 4 * HOUR)  #: from overload start to the planned crossing
QUEUE_POWER: Range = (1.0, 1.8)  #: backlog before saturation grows as u^p
QUEUE_OVERSHOOT: Range = (1.02, 1.1)  #: level reached at the planned crossing / alert level
QUEUE_BACKLOG_NOISE: Range = (0.005, 0.02)  #: extra noise, share of the backlog
QUEUE_SATURATED: Range = (20 * MINUTE, 2 * HOUR)  #: after the crossing, until it drains
QUEUE_DRAIN: Range = (10 * MINUTE, 60 * MINUTE)

# -- normal kinds -------------------------------------------------------------------------------
NORMAL_LEVEL_LOG10: Range = (1.0, 3.0)  #: level between 10 and 1000
NORMAL_DAILY: Range = (0.1, 0.6)
NORMAL_NOISE: Range = (0.01, 0.08)  #: noise sigma, share of the level
SHIFT_COUNT: tuple[int, int] = (1, 3)
SHIFT_SIZE: Range = (0.1, 0.4)  #: relative step of the whole series, up or down
SHIFT_WINDOW: Range = (0.3 * DAY, 2.9 * DAY)
GAP_COUNT: tuple[int, int] = (2, 6)
GAP_LENGTH: Range = (5 * MINUTE, 3 * HOUR)
GAP_SCATTER = 0.01  #: share of single missing samples
SPIKY_DAILY: Range = (0.0, 0.2)
SPIKY_NOISE: Range = (0.03, 0.1)
SPIKY_DF: Range = (2.5, 5.0)  #: Student-t degrees of freedom of the noise
SPIKE_RATE: Range = (2.0, 12.0)  #: spikes per day
SPIKE_HEIGHT: Range = (3.0, 12.0)  #: in noise sigmas
SPIKE_WIDTH: tuple[int, int] = (1, 3)  #: samples
SPIKE_UP_SHARE = 0.8


@dataclass(frozen=True, slots=True, eq=False)
class Scenario:
    """One labelled series: values on a grid (NaN = gap), its threshold and true crossings."""

    kind: str
    seed: int
    values: FloatArray
    step: int
    start: int
    threshold: float
    crossings: tuple[int, ...]

    @property
    def breach(self) -> bool:
        return self.kind in BREACH_KINDS

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.seed}"

    @property
    def key(self) -> SeriesKey:
        return SeriesKey.of("scenario", {"kind": self.kind, "seed": str(self.seed)})

    @property
    def timestamps(self) -> npt.NDArray[np.int64]:
        return self.start + np.arange(len(self.values), dtype=np.int64) * self.step

    @property
    def warmup(self) -> int:
        """Index of the first step an evaluation forecasts from (one day of history before)."""
        return WARMUP // self.step

    def history(self, until: int | None = None) -> History:
        """The series (up to index `until`, exclusive) as a model `History`."""
        return History(self.key, self.step, self.start, self.values[:until].copy())

    def __len__(self) -> int:
        return len(self.values)


def generate(kind: str, seed: int, step: int = STEP) -> Scenario:
    """The scenario of `kind` for `seed` (deterministic; other kinds use other random streams)."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown scenario kind {kind!r}; known: {', '.join(KINDS)}")
    if step <= 0 or DAY % step:
        raise ValueError(f"step must divide a day; got {step}")
    rng = np.random.default_rng([zlib.crc32(kind.encode()), int(seed), int(step)])
    start_day = int(rng.integers(0, START_DAYS))
    start = EPOCH_BASE + start_day * DAY + int(rng.integers(0, DAY // step)) * step
    n = LENGTH // step
    grid = _Grid(rng, step, start, n)
    values, threshold = _GENERATORS[kind](grid)
    if kind in BREACH_KINDS:
        found = crossings(values, threshold, REARM // step)
        if not found or found[0] < WARMUP // step:  # a generator bug, never the caller's
            raise RuntimeError(f"{kind}-{seed}: first crossing {found[:1]} before the warmup")
    else:
        found = ()
        if np.nanmax(values) >= threshold:
            raise RuntimeError(f"{kind}-{seed}: a normal scenario reaches its threshold")
    return Scenario(kind, int(seed), values, step, start, float(threshold), found)


def suite(seeds: Iterable[int], kinds: Sequence[str] = KINDS, step: int = STEP) -> list[Scenario]:
    """Every kind for every seed, seed-major (seed 0 all kinds, then seed 1, ...)."""
    return [generate(kind, seed, step) for seed in seeds for kind in kinds]


def crossings(values: FloatArray, threshold: float, rearm: int) -> tuple[int, ...]:
    """Indices where `values` reach `threshold` (>=) after >= `rearm` steps without doing so.

    Steps below the threshold and gaps (NaN) both count as "without"; an excursion interrupted
    by fewer than `rearm` such steps stays one crossing.
    """
    above = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= threshold)
    if above.size == 0:
        return ()
    starts = above[np.concatenate([[True], np.diff(above) > max(rearm, 1)])]
    return tuple(int(i) for i in starts)


def sre_threshold(values: FloatArray) -> float:
    """A threshold comfortably above a normal series: its maximum plus the largest of
    `MARGIN_NOISE_SIGMAS` noise sigmas (robust, from one-step differences),
    `MARGIN_RANGE_FRACTION` of its p0.5-p99.5 range and `MARGIN_LEVEL_FRACTION` of |max|."""
    observed = values[np.isfinite(values)]
    if observed.size == 0:
        raise ValueError("no observed values to set a threshold from")
    top = float(observed.max())
    diffs = np.diff(values)
    diffs = diffs[np.isfinite(diffs)]
    noise = 0.0
    if diffs.size:
        noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2.0)
    lo, hi = np.percentile(observed, [0.5, 99.5])
    margin = max(
        MARGIN_NOISE_SIGMAS * noise,
        MARGIN_RANGE_FRACTION * float(hi - lo),
        MARGIN_LEVEL_FRACTION * abs(top),
        1e-9,
    )
    return top + margin


# ------------------------------------------------------------------------------- generators


@dataclass(frozen=True, slots=True)
class _Grid:
    rng: np.random.Generator
    step: int
    start: int
    n: int

    @property
    def seconds(self) -> FloatArray:
        """Seconds since the scenario's start, per index."""
        return np.arange(self.n, dtype=np.float64) * self.step

    def u(self, low_high: Range) -> float:
        return float(self.rng.uniform(*low_high))

    def index(self, seconds: float) -> int:
        return int(np.clip(round(seconds / self.step), 0, self.n))

    def steps(self, low_high: Range, minimum: int = 0) -> int:
        return max(minimum, round(self.u(low_high) / self.step))

    def daily(self) -> FloatArray:
        """A daily shape in [-1, 1] peaking at a random UTC hour, with a 12-hour component."""
        ts = self.start + self.seconds
        peak = self.u(PEAK_HOUR) * HOUR
        weight = self.u(SECOND_HARMONIC)
        shift = self.rng.uniform(0, DAY / 2)
        phase = 2 * np.pi * (ts - peak) / DAY
        shape = np.cos(phase) + weight * np.cos(2 * phase - 4 * np.pi * shift / DAY)
        return shape / np.abs(shape).max()

    def noise(self, sigma: float | FloatArray) -> FloatArray:
        """AR(1) Gaussian noise with marginal sigma `sigma` and a random lag-one correlation."""
        phi = self.u(NOISE_AR)
        shocks = (self.rng.normal(size=self.n) * math.sqrt(1 - phi * phi)).tolist()
        level = float(self.rng.normal())
        out = []
        for shock in shocks:
            level = phi * level + shock
            out.append(level)
        return np.asarray(out) * sigma


def _memory_leak(g: _Grid) -> tuple[FloatArray, float]:
    limit = float(g.rng.choice(MEMORY_LIMITS_MIB))
    base = limit * g.u(MEMORY_BASELINE)
    usage = base + limit * g.u(MEMORY_DAILY) * g.daily() + g.noise(limit * g.u(MEMORY_NOISE))
    ramp = g.u(MEMORY_RAMP)
    accel = g.u(MEMORY_ACCELERATION)
    values = usage.copy()
    pos = g.index(g.u(FIRST_CROSSING) - ramp)
    while pos < g.n:
        u = np.arange(g.n - pos) * g.step / ramp
        segment = usage[pos:] + (limit - base) * ((1 - accel) * u + accel * u * u)
        hits = np.flatnonzero(segment >= limit)
        if hits.size == 0:
            values[pos:] = segment
            break
        cross = pos + int(hits[0])
        values[pos:cross] = segment[: cross - pos]
        if g.rng.random() >= MEMORY_RESTART_PROBABILITY:
            values[cross:] = limit  # pinned at the limit (reclaim / throttling) until the end
            break
        killed = min(g.n, cross + 1 + g.steps(MEMORY_HOLD))
        values[cross:killed] = limit
        restarted = min(g.n, killed + g.steps(MEMORY_RESTART_GAP, minimum=1))
        values[killed:restarted] = np.nan
        pos = restarted
        ramp *= g.u(MEMORY_NEXT_RAMP)
    return values, limit


def _latency_creep(g: _Grid) -> tuple[FloatArray, float]:
    base = g.u(LATENCY_BASE_MS)
    amp = g.u(LATENCY_DAILY)
    sigma = g.u(LATENCY_NOISE)
    level = base * (1 + amp * g.daily())
    noisy = level * np.exp(g.noise(sigma))
    slo = base * (1 + amp) * math.exp(LATENCY_SLO_NOISE_SIGMAS * sigma)
    slo = math.ceil(slo * g.u(LATENCY_SLO_HEADROOM) / 5.0) * 5.0  # a round SLO, in 5 ms
    end = g.u(FIRST_CROSSING)
    duration = g.u(LATENCY_CREEP)
    power = g.u(LATENCY_CREEP_POWER)
    target = slo * g.u(LATENCY_OVERSHOOT)
    rate = target / level[min(g.n - 1, g.index(end))] - 1.0
    u = np.clip((g.seconds - (end - duration)) / duration, 0.0, None)
    factor = 1.0 + rate * u**power
    values = noisy * factor
    first = crossings(values, slo, REARM // g.step)
    mitigate = min(g.n - 1, first[0] + g.steps(LATENCY_MITIGATION))
    recovery = g.steps(LATENCY_RECOVERY, minimum=1)
    fade = np.clip(1.0 - (np.arange(g.n - mitigate) / recovery), 0.0, 1.0)
    factor[mitigate:] = 1.0 + (factor[mitigate] - 1.0) * fade
    return noisy * factor, slo


def _queue_saturation(g: _Grid) -> tuple[FloatArray, float]:
    level = g.u(QUEUE_LEVEL)
    normal = level * (1 + g.u(QUEUE_DAILY) * g.daily())
    normal = normal + g.noise(g.u(QUEUE_NOISE) * np.sqrt(normal))
    capacity = g.u(QUEUE_CAPACITY)
    alert = round(capacity * g.u(QUEUE_ALERT), -1)
    end = g.u(FIRST_CROSSING)
    duration = g.u(QUEUE_OVERLOAD)
    power = g.u(QUEUE_POWER)
    reach = math.atanh(min(0.99, alert * g.u(QUEUE_OVERSHOOT) / capacity)) * capacity
    u = np.clip((g.seconds - (end - duration)) / duration, 0.0, None)
    backlog = capacity * np.tanh(reach * u**power / capacity)
    wobble = 1.0 + g.noise(g.u(QUEUE_BACKLOG_NOISE))
    first = crossings(np.maximum(normal + backlog * wobble, 0.0), alert, REARM // g.step)
    drain_from = min(g.n - 1, first[0] + g.steps(QUEUE_SATURATED))
    drain = g.steps(QUEUE_DRAIN, minimum=1)
    fade = np.clip(1.0 - (np.arange(g.n - drain_from) / drain), 0.0, 1.0)
    backlog[drain_from:] = backlog[drain_from] * fade
    return np.asarray(np.round(np.maximum(normal + backlog * wobble, 0.0)), dtype=np.float64), alert


def _normal_base(g: _Grid, daily: Range = NORMAL_DAILY) -> tuple[FloatArray, float]:
    level = 10 ** g.u(NORMAL_LEVEL_LOG10)
    values = level * (1 + g.u(daily) * g.daily())
    return values, level


def _daily(g: _Grid) -> tuple[FloatArray, float]:
    values, level = _normal_base(g)
    values = values + g.noise(level * g.u(NORMAL_NOISE))
    return values, sre_threshold(values)


def _level_shift(g: _Grid) -> tuple[FloatArray, float]:
    values, level = _normal_base(g)
    values = values + g.noise(level * g.u(NORMAL_NOISE))
    for _ in range(int(g.rng.integers(SHIFT_COUNT[0], SHIFT_COUNT[1] + 1))):
        at = g.index(g.u(SHIFT_WINDOW))
        values[at:] *= 1.0 + g.rng.choice([-1.0, 1.0]) * g.u(SHIFT_SIZE)
    return values, sre_threshold(values)


def _gaps(g: _Grid) -> tuple[FloatArray, float]:
    values, level = _normal_base(g)
    values = values + g.noise(level * g.u(NORMAL_NOISE))
    for _ in range(int(g.rng.integers(GAP_COUNT[0], GAP_COUNT[1] + 1))):
        length = g.steps(GAP_LENGTH, minimum=1)
        at = int(g.rng.integers(0, g.n - length))
        values[at : at + length] = np.nan
    values[g.rng.random(g.n) < GAP_SCATTER] = np.nan
    return values, sre_threshold(values)


def _spiky(g: _Grid) -> tuple[FloatArray, float]:
    values, level = _normal_base(g, SPIKY_DAILY)
    sigma = level * g.u(SPIKY_NOISE)
    values = values + sigma * g.rng.standard_t(g.u(SPIKY_DF), size=g.n)
    count = g.rng.poisson(g.u(SPIKE_RATE) * g.n * g.step / DAY)
    for _ in range(int(count)):
        at = int(g.rng.integers(0, g.n))
        width = int(g.rng.integers(SPIKE_WIDTH[0], SPIKE_WIDTH[1] + 1))
        sign = 1.0 if g.rng.random() < SPIKE_UP_SHARE else -1.0
        values[at : at + width] += sign * g.u(SPIKE_HEIGHT) * sigma
    return values, sre_threshold(values)


_GENERATORS: dict[str, Callable[[_Grid], tuple[FloatArray, float]]] = {
    "memory_leak": _memory_leak,
    "latency_creep": _latency_creep,
    "queue_saturation": _queue_saturation,
    "daily": _daily,
    "level_shift": _level_shift,
    "gaps": _gaps,
    "spiky": _spiky,
}

__all__ = [
    "BREACH_KINDS",
    "KINDS",
    "NORMAL_KINDS",
    "STEP",
    "Scenario",
    "crossings",
    "generate",
    "sre_threshold",
    "suite",
]
