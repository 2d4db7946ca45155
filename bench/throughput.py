#!/usr/bin/env python
"""Forecast + score throughput and LSTM training cost, against baselines measured in the same run.

Generated data only (numpy, fixed seed, 60 s step, a daily cycle + noise per series, levels from
5 to 5,000); no database, no Prometheus: the context windows are already in memory.

1. Training (first, so that its peak RSS is not the throughput part's): the global LSTM on
   `--train-series` x `--train-days` with the default training schedule (`windows_per_epoch`
   windows per epoch, drawn series-first, early stopping); seconds, epochs, seconds/epoch,
   windows/s, peak RSS (`resource.getrusage().ru_maxrss`). `--max-epochs` caps the epochs for a
   quick run; the table then extrapolates from the measured seconds/epoch.
2. Throughput, for each N in `--series`: one serving cycle = the model's forward pass over a
   ContextBatch [N, context_length] (horizon 30) PLUS the scoring of each series' newest
   observation against the previous cycle's forecast (step-1 quantiles): `residual_z` of [N]
   observations, the EWMA of |z| as `CalibratorBank.score` does it, then
   `models.scoring.Calibrator.observe` per series (the production calibrator is per series and
   Python-level). Models: the LSTM (the weights from part 1 when they fit, else untrained: the
   cost of a forward pass does not depend on the weights) and, as baselines, `median_band` and
   `naive`, interleaved within every repeat. Median of `--repeats`.
   What-ifs (not production code, measured alongside): the scoring as `models.service`'s
   forecast_cycle loop does it per series, a vectorised calibrator prototype (`VectorCalibrator`
   below, checked against `Calibrator` before timing), the LSTM with `predict_batch_size=1024`,
   in bfloat16 autocast, and on 1 thread.

Ratios are series/s divided by the median_band cycle's series/s of the same N and run (machines
are noisy; compare ratios across machines, not seconds).

Exit status: 0 ok, 1 the vectorised calibrator prototype or a forecast failed its check.

    .venv/bin/python bench/throughput.py [--series 1000,10000] [--repeats 5] [--hidden 48]
        [--train-series 1000] [--train-days 7] [--max-epochs N] [--no-train] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, sys.path[0] is bench/, where bench/ingest.py would shadow the `ingest`
# package (which models imports): drop bench/ and put the repository root first.
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from core.settings import ModelSettings  # noqa: E402
from ingest.domain import SeriesKey  # noqa: E402
from models.domain import ContextBatch, History  # noqa: E402
from models.forecasters.base import EpochReport, Forecaster  # noqa: E402
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig, build_inputs  # noqa: E402
from models.forecasters.registry import build  # noqa: E402
from models.scoring import Calibrator, ScoringConfig, residual_z  # noqa: E402

SEED = 20240603
STEP = 60
HORIZON = 30
CONTEXT_LENGTH = 120
DATA_END = 1_717_372_800  # 2024-06-03T00:00:00Z: the same data set on every run
TARGET_SERIES_PER_SECOND = 10_000
TARGET_TRAIN_SECONDS = 600
DEFAULT_OUT = ROOT / "bench" / "results" / "throughput.json"
MODELS = ("lstm", "median_band", "naive")

console = Console(width=None if sys.stdout.isatty() else 132)


# ----------------------------------------------------------------------------- data


def generate(n_series: int, n_steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, T] strictly positive values (daily cycle + noise, varied levels) and [T] epoch times."""
    timestamps = DATA_END - STEP * np.arange(n_steps - 1, -1, -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    level = rng.uniform(5.0, 5000.0, n_series)[:, None]
    amplitude = rng.uniform(0.05, 0.4, n_series)[:, None]
    phase = rng.uniform(0.0, 2 * np.pi, n_series)[:, None]
    noise_level = rng.uniform(0.01, 0.05, n_series)[:, None]
    day = 2 * np.pi * (timestamps % 86_400)[None, :] / 86_400
    noise = rng.normal(0.0, 1.0, (n_series, n_steps)) * noise_level
    values = np.abs(level * (1 + amplitude * np.sin(day + phase) + noise)) + 1e-3
    return values, timestamps


def magnitude_history(n_series: int, n_steps: int, alpha: float, seed: int) -> np.ndarray:
    """[N, T] past smoothed |z| magnitudes, as a calibrator reservoir holds them."""
    rng = np.random.default_rng(seed + 1)
    z = np.abs(rng.standard_t(5, (n_series, n_steps)))
    out = np.empty_like(z)
    acc = z[:, 0]
    for i in range(n_steps):
        acc = alpha * z[:, i] + (1 - alpha) * acc
        out[:, i] = acc
    return out


def rss_mb() -> float:
    """Current resident set size (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def peak_rss_mb() -> float:
    """ru_maxrss: the process' peak RSS so far (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- calibration


def ndtri(p: np.ndarray) -> np.ndarray:
    """The standard normal quantile function, vectorised (torch: scipy is no dependency)."""
    return torch.special.ndtri(torch.from_numpy(np.asarray(p, dtype=np.float64))).numpy()


def fill_calibrators(history: np.ndarray, config: ScoringConfig) -> list[Calibrator]:
    """One production `Calibrator` per row, in the state `observe()` of every finite value of the
    row (oldest first) would leave. Bench shortcut: sets the private `_fifo`/`_sorted` lists
    directly (the gate checks it against real `observe()` calls), because 10,000 x 5,000
    `observe()` calls would take minutes."""
    keep = config.calibration_size
    bank = []
    for row in history:
        fifo = row[np.isfinite(row)][-keep:].tolist()
        calibrator = Calibrator(config)
        calibrator._fifo = deque(fifo)
        calibrator._sorted = sorted(fifo)  # the same float objects, as insort() shares them
        bank.append(calibrator)
    return bank


class VectorCalibrator:
    """Bench-only PROTOTYPE of a vectorised `models.scoring.Calibrator` for N series at once;
    the same outputs (checked by the gate), no Python loop per series.

    State: `ring` [N, K] holds each series' newest K finite scores (K = calibration_size; +inf
    in unused slots), so it always IS the current reservoir; `sorted` [N, K] is a sorted
    snapshot of it taken at the last merge; `new` / `gone` [N, B] hold the scores inserted /
    evicted since then (NaN-padded). The rank of a score is a batched binary search in the
    snapshot (log2 K vectorised steps over N, the row-wise `np.searchsorted`) corrected by
    O(N x B) comparisons with the pending buffers. Every B observations the snapshot is rebuilt
    with one `np.sort` of [N, K] (amortised: `merge_seconds / B` per cycle). The rare scores
    above everything seen take the tail formula from their own row of `ring`.
    """

    def __init__(self, history: np.ndarray, config: ScoringConfig, merge_every: int = 64) -> None:
        self.config = config
        n = len(history)
        k = config.calibration_size
        self.k = k
        self.b = min(merge_every, k)  # B <= K: an evicted score is always in the snapshot
        finite = np.isfinite(history)
        if history.shape[1] >= k and finite.all():  # the bench's steady state: a full reservoir
            self.ring = np.ascontiguousarray(history[:, -k:], dtype=np.float64)
            kept = np.full(n, k, np.int64)
        elif history.shape[1] == 0:
            self.ring = np.full((n, k), np.inf)
            kept = np.zeros(n, np.int64)
        else:  # per row: the newest K finite values, oldest first, in slots 0..kept-1
            counts = finite.sum(axis=1)
            order = np.argsort(~finite, axis=1, kind="stable")  # finite first, in time order
            packed = np.take_along_axis(history, order, axis=1)
            kept = np.minimum(counts, k)
            cols = np.minimum(
                (counts - kept)[:, None] + np.arange(k)[None, :], history.shape[1] - 1
            )
            valid = np.arange(k)[None, :] < kept[:, None]
            self.ring = np.where(valid, np.take_along_axis(packed, cols, axis=1), np.inf)
        self.count = kept.astype(np.int64)
        self.head = self.count % k
        self.rows = np.arange(n)
        self.new = np.full((n, self.b), np.nan)
        self.gone = np.full((n, self.b), np.nan)
        self.n_new = np.zeros(n, np.int64)
        self.n_gone = np.zeros(n, np.int64)
        self.merges = 0
        self.merge_seconds: list[float] = []
        self.sorted = np.sort(self.ring, axis=1)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ring, self.sorted, self.new, self.gone))

    def _bound(self, s: np.ndarray, right: bool) -> np.ndarray:
        """Per row: how many snapshot values are < s (right: <= s). Batched binary search."""
        n, k = self.sorted.shape
        flat = self.sorted.ravel()
        base = self.rows * k
        lo = np.zeros(n, np.int64)
        hi = np.full(n, k, np.int64)
        for _ in range(k.bit_length()):
            mid = (lo + hi) >> 1
            v = flat[base + np.minimum(mid, k - 1)]
            go = v <= s if right else v < s
            active = lo < hi
            lo = np.where(active & go, mid + 1, lo)
            hi = np.where(active & ~go, mid, hi)
        return lo

    def transform(self, s: np.ndarray) -> np.ndarray:
        cfg = self.config
        m = self.count
        s_col = s[:, None]
        with np.errstate(invalid="ignore"):
            lo = (
                self._bound(s, right=False)
                - (self.gone < s_col).sum(axis=1)
                + (self.new < s_col).sum(axis=1)
            )
            hi = (
                self._bound(s, right=True)
                - (self.gone <= s_col).sum(axis=1)
                + (self.new <= s_col).sum(axis=1)
            )
        out = np.full(len(s), np.nan)
        ok = (m >= cfg.calibration_min) & np.isfinite(s)
        inner = ok & (hi < m)
        if inner.any():
            mi = m[inner]
            p = (lo[inner] + hi[inner]) / 2 / mi
            p = np.minimum(np.maximum(p, 0.5 / mi), 1 - 0.5 / mi)
            out[inner] = np.maximum(0.0, ndtri(p))
        z90 = float(ndtri(np.array([0.9]))[0])
        for r in np.flatnonzero(ok & ~inner):  # above everything seen: rare, one row at a time
            mr = int(m[r])
            seen = self.ring[r, :mr] if mr < self.k else self.ring[r]
            q90 = float(np.partition(seen, int(0.9 * (mr - 1)))[int(0.9 * (mr - 1))])
            top = float(seen.max())
            z_top = float(ndtri(np.array([1 - 0.5 / mr]))[0])
            slope = (z_top - z90) / max(top - q90, cfg.scale_floor)
            out[r] = max(0.0, z_top + (float(s[r]) - top) * slope)
        return out

    def update(self, s: np.ndarray) -> None:
        r = self.rows[np.isfinite(s)]
        if len(r) == 0:
            return
        full = r[self.count[r] == self.k]
        self.gone[full, self.n_gone[full]] = self.ring[full, self.head[full]]
        self.n_gone[full] += 1
        self.ring[r, self.head[r]] = s[r]
        self.head[r] = (self.head[r] + 1) % self.k
        self.count[r] = np.minimum(self.count[r] + 1, self.k)
        self.new[r, self.n_new[r]] = s[r]
        self.n_new[r] += 1
        if self.n_new.max() >= self.b:
            self.merge()

    def merge(self) -> None:
        started = time.perf_counter()
        self.sorted = np.sort(self.ring, axis=1)
        self.new.fill(np.nan)
        self.gone.fill(np.nan)
        self.n_new.fill(0)
        self.n_gone.fill(0)
        self.merges += 1
        self.merge_seconds.append(time.perf_counter() - started)

    def observe(self, s: np.ndarray) -> np.ndarray:
        calibrated = self.transform(s)
        self.update(s)
        return calibrated


def check_vector_calibrator(seed: int) -> list[str]:
    """Gate: VectorCalibrator == Calibrator (and the fill shortcut == observe()) on awkward data:
    short and empty reservoirs, gaps (NaN), ties, evictions, merges, scores above the top."""
    problems: list[str] = []
    config = ScoringConfig(calibration_min=20, calibration_size=48)
    rng = np.random.default_rng(seed + 7)
    n, fill, cycles = 300, 70, 200
    history = np.round(np.abs(rng.normal(size=(n, fill))), 1)  # rounded: many ties
    history[rng.random((n, fill)) < 0.1] = np.nan
    history[: n // 5, : fill - 15] = np.nan  # some reservoirs below calibration_min
    history[n // 5 : n // 5 + 5] = np.nan  # some empty
    bank = fill_calibrators(history, config)
    for i in range(20):  # the shortcut against real observe() calls
        real = Calibrator(config)
        for v in history[i]:
            real.observe(float(v))
        if real._sorted != bank[i]._sorted or real._fifo != bank[i]._fifo:
            problems.append(f"fill shortcut differs from observe() on row {i}")
            break
    vector = VectorCalibrator(history, config, merge_every=16)
    worst = 0.0
    for c in range(cycles):
        s = np.round(np.abs(rng.normal(size=n)) * (3.0 if c % 25 == 0 else 1.0), 1)
        s[rng.random(n) < 0.05] = np.nan
        expected = np.array([cal.observe(float(v)) for cal, v in zip(bank, s, strict=True)])
        got = vector.observe(s)
        if not np.array_equal(np.isnan(expected), np.isnan(got)):
            problems.append(f"cycle {c}: NaN pattern differs from Calibrator")
            break
        both = np.isfinite(expected)
        if both.any():
            worst = max(worst, float(np.max(np.abs(expected[both] - got[both]))))
    if worst > 1e-9:
        problems.append(f"VectorCalibrator differs from Calibrator by up to {worst:.3g}")
    if vector.merges == 0:
        problems.append("the gate never exercised a merge")
    return problems


# ----------------------------------------------------------------------------- measurements


@dataclass
class Timing:
    label: str
    series: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def series_per_second(self) -> float:
        return self.series / self.median if self.median > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "series": self.series,
            "seconds_median": self.median,
            "seconds_min": min(self.seconds),
            "seconds_max": max(self.seconds),
            "seconds_all": self.seconds,
            "series_per_second": self.series_per_second,
        }


def profile(label: str, fn: Callable[[], Any], limit: int = 18) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    return f"--- cProfile: {label} (sorted by tottime) ---\n{out.getvalue()}"


def lstm_config(args: argparse.Namespace, **update: Any) -> LSTMConfig:
    fields: dict[str, Any] = {
        "context_length": args.context_length,
        "horizon": HORIZON,
        "hidden_size": args.hidden,
        "seed": 0,
    }
    if args.max_epochs is not None:
        fields["max_epochs"] = args.max_epochs
    fields.update(update)
    return LSTMConfig(**fields)


# ----------------------------------------------------------------------------- 2. training


def run_training(args: argparse.Namespace) -> tuple[dict[str, Any], GlobalLSTMForecaster, str]:
    n_steps = args.train_days * 86_400 // STEP
    t0 = time.perf_counter()
    values, timestamps = generate(args.train_series, n_steps, args.seed)
    histories = [
        History(SeriesKey.of("bench", {"series": f"s{i:05d}"}), STEP, int(timestamps[0]), values[i])
        for i in range(args.train_series)
    ]
    del values
    generate_seconds = time.perf_counter() - t0
    cfg = lstm_config(args)
    forecaster = GlobalLSTMForecaster(cfg)
    rss_before = rss_mb()
    peak_before = peak_rss_mb()
    marks: list[float] = []
    epochs: list[EpochReport] = []

    def on_epoch(entry: EpochReport) -> None:
        marks.append(time.perf_counter())
        epochs.append(entry)
        console.print(
            f"  epoch {entry.epoch}/{entry.max_epochs}: train {entry.train_loss:.4f} "
            f"val {entry.val_loss:.4f}{' *' if entry.best else ''} "
            f"({marks[-1] - started:.1f}s)"
        )

    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = forecaster.fit(histories, on_epoch=on_epoch)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    peak_after = peak_rss_mb()
    rss_after = rss_mb()
    steps_per_epoch = max(1, cfg.windows_per_epoch // cfg.batch_size)
    windows_per_epoch = steps_per_epoch * cfg.batch_size
    val_windows = min(4096, cfg.windows_per_epoch // 2)
    # The first epoch also holds fit()'s setup (window index, validation sample).
    epoch_seconds = [b - a for a, b in zip([started, *marks[:-1]], marks, strict=True)]
    per_epoch = statistics.median(epoch_seconds) if epoch_seconds else float("nan")
    shipped = ModelSettings().config
    shipped_epochs = int(shipped.get("max_epochs", LSTMConfig().max_epochs))
    default_epochs = LSTMConfig().max_epochs
    capped = args.max_epochs is not None and args.max_epochs < default_epochs
    early_stopped = report.epochs < cfg.max_epochs

    def projected(epochs: int) -> float:
        # Same seed, same draws: a run that stopped early stops at the same epoch uncapped; a
        # capped one gets the remaining epochs at the median seconds/epoch (an upper bound:
        # early stopping may end it sooner).
        if early_stopped and report.epochs <= epochs:
            return seconds
        return seconds + per_epoch * (epochs - report.epochs)

    result = {
        "series": args.train_series,
        "days": args.train_days,
        "steps_per_series": n_steps,
        "points": args.train_series * n_steps,
        "generate_seconds": generate_seconds,
        "seconds": seconds,
        "fit_loop_seconds": report.seconds,
        "epochs": report.epochs,
        "max_epochs": cfg.max_epochs,
        "default_max_epochs": default_epochs,
        "shipped_max_epochs": shipped_epochs,
        "capped": capped,
        "early_stopped": early_stopped,
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch_median": per_epoch,
        "windows_per_epoch": windows_per_epoch,
        "batches_per_epoch": steps_per_epoch,
        "batch_size": cfg.batch_size,
        "validation_windows_per_epoch": val_windows,
        "train_windows_available": report.train_windows,
        "val_windows_available": report.val_windows,
        "windows_per_second": windows_per_epoch * report.epochs / report.seconds,
        "windows_per_second_incl_validation": (windows_per_epoch + val_windows)
        * report.epochs
        / report.seconds,
        "best_val_loss": report.best_val_loss,
        "history": [
            {"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss, "best": e.best}
            for e in epochs
        ],
        "rss_mb_before_fit": rss_before,
        "rss_mb_after_fit": rss_after,
        "peak_rss_mb_before_fit": peak_before,
        "peak_rss_mb": peak_after,
        "projected_seconds_default_max_epochs": projected(default_epochs),
        "projected_seconds_shipped_max_epochs": projected(shipped_epochs),
        "shipped_config": shipped,
        "memory_note": "peak RSS is resource.getrusage(RUSAGE_SELF).ru_maxrss after fit (process "
        "lifetime peak: training runs before the throughput part). tracemalloc is not used: "
        "torch allocates tensor memory in its own C++ allocator, which tracemalloc does not see.",
        "sampling_note": f"each epoch draws {steps_per_epoch} batches x {cfg.batch_size} = "
        f"{windows_per_epoch} training windows (context {cfg.context_length} + horizon "
        f"{cfg.horizon}), series-first (series uniform, then a window start uniform within the "
        f"series' training part; windows under min_observed skipped), then evaluates a fixed "
        f"sample of {val_windows} validation windows from each series' newest "
        f"{cfg.validation_fraction:.0%} of window starts; early stopping after {cfg.patience} "
        "epochs without improvement, best weights restored",
    }
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        text = f"--- cProfile: LSTM fit ({report.epochs} epochs, by tottime) ---\n{out.getvalue()}"
    return result, forecaster, text


# ----------------------------------------------------------------------------- 1. throughput


@dataclass
class Cycle:
    batch: ContextBatch
    observed: np.ndarray  # [N] the newest value of each window (what gets scored)


def make_cycles(n_series: int, length: int, cycles: int, seed: int) -> list[Cycle]:
    values, timestamps = generate(n_series, length + cycles - 1, seed)
    out = []
    for c in range(cycles):
        window = values[:, c : c + length]
        end = np.full(n_series, timestamps[c + length - 1], dtype=np.int64)
        out.append(Cycle(ContextBatch(window.astype(np.float32), end, STEP), window[:, -1].copy()))
    return out


def score_production(
    observed: np.ndarray,
    previous: np.ndarray,
    last: np.ndarray,
    bank: Sequence[Calibrator],
    config: ScoringConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """residual_z of [N] vs the previous forecast's step-1 quantiles [N, Q=(.1,.5,.9)], the EWMA
    as CalibratorBank.score, then the production Calibrator per series (Python loop)."""
    z = residual_z(observed, previous[:, 0], previous[:, 1], previous[:, 2], config.scale_floor)
    a = config.ewma_alpha
    magnitude = np.where(np.isfinite(last), a * np.abs(z) + (1 - a) * last, np.abs(z))
    magnitude = np.where(np.isfinite(z), magnitude, last)  # an unscored series keeps its state
    scores = np.array(
        [cal.observe(m) for cal, m in zip(bank, magnitude.tolist(), strict=True)], dtype=np.float64
    )
    return magnitude, scores


def score_vectorised(
    observed: np.ndarray,
    previous: np.ndarray,
    last: np.ndarray,
    vector: VectorCalibrator,
    config: ScoringConfig,
) -> tuple[np.ndarray, np.ndarray]:
    z = residual_z(observed, previous[:, 0], previous[:, 1], previous[:, 2], config.scale_floor)
    a = config.ewma_alpha
    magnitude = np.where(np.isfinite(last), a * np.abs(z) + (1 - a) * last, np.abs(z))
    magnitude = np.where(np.isfinite(z), magnitude, last)
    return magnitude, vector.observe(magnitude)


def score_service_loop(
    observed: np.ndarray,
    previous_rows: list[list[list[float]]],
    quantiles: Sequence[float],
    last: np.ndarray,
    bank: Sequence[Calibrator],
    config: ScoringConfig,
) -> int:
    """The per-series scoring loop of models.service.forecast_cycle, without the database: a dict
    of the step-1 quantiles, residual_z of 1-element arrays, CalibratorBank.score's EWMA + observe.
    `previous_rows` are the forecasts as ForecastRow.values hold them (lists, read untimed)."""
    scored = 0
    alpha = config.ewma_alpha
    for i, calibrator in enumerate(bank):
        value = observed[i]
        q = dict(zip(quantiles, previous_rows[i][0], strict=True))
        if not np.isfinite(value) or not all(
            np.isfinite(q.get(k, np.nan)) for k in (0.1, 0.5, 0.9)
        ):
            continue
        z = float(
            residual_z(
                np.array([value]), np.array([q[0.1]]), np.array([q[0.5]]), np.array([q[0.9]])
            )[0]
        )
        prior = last[i]
        magnitude = abs(z) if not np.isfinite(prior) else alpha * abs(z) + (1 - alpha) * prior
        score = calibrator.observe(magnitude)
        last[i] = magnitude
        scored += int(not np.isnan(score))
    return scored


def predict_bf16(forecaster: GlobalLSTMForecaster, batch: ContextBatch) -> np.ndarray:
    """`GlobalLSTMForecaster._predict` under bfloat16 autocast (bench copy: the production
    `_predict` calls `pred.numpy()`, which fails on a bfloat16 tensor; it would need `.float()`).
    Assumes the batch is exactly context_length long and fully observed, as the bench's are."""
    cfg = forecaster.config
    values = batch.values.astype(np.float64)
    out = np.empty((len(values), cfg.horizon, len(cfg.quantiles)))
    forecaster.net.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for lo in range(0, len(values), cfg.predict_batch_size):
            hi = lo + cfg.predict_batch_size
            features, last, location, scale = build_inputs(
                values[lo:hi], batch.end[lo:hi], batch.step
            )
            pred = forecaster.net(torch.from_numpy(features), torch.from_numpy(last)[:, None])
            out[lo:hi] = pred.float().numpy() * scale[:, None, None] + location[:, None, None]
    return out


def run_throughput(
    args: argparse.Namespace, n_series: int, trained: GlobalLSTMForecaster | None
) -> tuple[dict[str, Any], list[str], list[str]]:
    problems: list[str] = []
    profiles: list[str] = []
    scoring = ScoringConfig()
    length = args.context_length
    cycles = make_cycles(n_series, length, args.repeats + 2, args.seed + n_series)

    lstm = GlobalLSTMForecaster(lstm_config(args))
    weights = "untrained (random init)"
    if trained is not None and trained.config.hidden_size == args.hidden:
        lstm.net = trained.net
        weights = "trained in part 2 of this run"
    lstm.mark_fitted(STEP)
    lstm_1024 = GlobalLSTMForecaster(lstm_config(args, predict_batch_size=1024))
    lstm_1024.net = lstm.net
    lstm_1024.mark_fitted(STEP)
    models: dict[str, Forecaster] = {"lstm": lstm}
    for name in ("median_band", "naive"):
        models[name] = build(name, {"context_length": length, "horizon": HORIZON})
        models[name].mark_fitted(STEP)
    quantiles = lstm.quantiles
    if tuple(quantiles) != (0.1, 0.5, 0.9):
        raise SystemExit(f"this bench expects the quantiles (0.1, 0.5, 0.9), got {quantiles}")

    # Calibration state as in steady state: --calibration-fill past magnitudes per series.
    fill = args.calibration_fill
    history = magnitude_history(n_series, fill, scoring.ewma_alpha, args.seed)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    bank = fill_calibrators(history, scoring)
    bank_build = time.perf_counter() - t0
    bank_mb = rss_mb() - rss0
    t0 = time.perf_counter()
    vector = VectorCalibrator(history, scoring)
    vector_build = time.perf_counter() - t0
    last0 = history[:, -1].copy()
    del history
    console.print(
        f"  N={n_series:,}: calibrator bank ({fill} scores/series) built in {bank_build:.1f}s, "
        f"+{bank_mb:,.0f} MB RSS; vector prototype {vector.nbytes / 2**20:,.0f} MB, "
        f"{vector_build:.1f}s; LSTM weights: {weights}"
    )

    last = {name: last0.copy() for name in MODELS}
    last_vector = last0.copy()
    last_service = last0.copy()
    previous: dict[str, np.ndarray] = {}
    # Cycle 0 makes the first forecasts; cycle 1 is an untimed warm-up of everything.
    for name, model in models.items():
        previous[name] = model.predict(cycles[0].batch).values[:, 0, :]
    bf16_gap: list[float] = []
    results: dict[str, Timing] = {}

    def timing(key: str, label: str) -> Timing:
        return results.setdefault(key, Timing(label, n_series))

    for c in range(1, len(cycles)):
        cycle = cycles[c]
        timed = c >= 2
        lstm_predict = 0.0
        for name, model in models.items():
            t_a = time.perf_counter()
            forecast = model.predict(cycle.batch).values
            t_b = time.perf_counter()
            last[name], _ = score_production(
                cycle.observed, previous[name], last[name], bank, scoring
            )
            t_c = time.perf_counter()
            if name == "lstm":
                lstm_predict = t_b - t_a
                lstm_previous = previous[name]
            previous[name] = forecast[:, 0, :]
            if not np.isfinite(forecast).all() or forecast.shape != (n_series, HORIZON, 3):
                problems.append(f"N={n_series} {name}: forecast not finite or mis-shaped")
            if timed:
                timing(f"{name}_cycle", f"{name}: forecast + score").seconds.append(t_c - t_a)
                timing(f"{name}_predict", f"{name}: forecast only").seconds.append(t_b - t_a)
                timing(f"{name}_score", f"{name}: score only (Calibrator)").seconds.append(
                    t_c - t_b
                )
        # What-if: the vectorised calibrator prototype on the LSTM's residuals.
        t_a = time.perf_counter()
        last_vector, _ = score_vectorised(
            cycle.observed, lstm_previous, last_vector, vector, scoring
        )
        t_vec = time.perf_counter() - t_a
        # What-if: forecast_cycle's per-series loop (lists as ForecastRow.values holds them).
        rows = [[q] for q in lstm_previous.tolist()]
        t_a = time.perf_counter()
        score_service_loop(cycle.observed, rows, quantiles, last_service, bank, scoring)
        t_service = time.perf_counter() - t_a
        # What-ifs for the forward pass: smaller predict batches, bfloat16, one thread.
        t_a = time.perf_counter()
        small = lstm_1024.predict(cycle.batch).values
        t_1024 = time.perf_counter() - t_a
        t_a = time.perf_counter()
        half = predict_bf16(lstm_1024, cycle.batch)
        t_bf16 = time.perf_counter() - t_a
        t_one = None
        if args.threads > 1:
            torch.set_num_threads(1)
            t_a = time.perf_counter()
            lstm_1024.predict(cycle.batch)
            t_one = time.perf_counter() - t_a
            torch.set_num_threads(args.threads)
        reference = models["lstm"].predict(cycle.batch).values if not timed else None
        if reference is not None:
            if not np.allclose(reference, small, rtol=1e-4, atol=1e-4 * np.abs(reference).max()):
                problems.append(f"N={n_series}: predict_batch_size=1024 changes the forecast")
            band = np.maximum(reference[:, :, 2] - reference[:, :, 0], 1e-9)
            bf16_gap.append(float(np.max(np.abs(half[:, :, 1] - reference[:, :, 1]) / band)))
        if timed:
            timing("score_vectorised", "what-if: score only, VectorCalibrator").seconds.append(
                t_vec
            )
            timing(
                "lstm_cycle_vectorised", "what-if: lstm forecast + VectorCalibrator score"
            ).seconds.append(lstm_predict + t_vec)
            timing(
                "score_service_loop", "what-if: score only, forecast_cycle per-series loop"
            ).seconds.append(t_service)
            timing("lstm_predict_b1024", "what-if: lstm forecast, predict_batch_size=1024")
            results["lstm_predict_b1024"].seconds.append(t_1024)
            timing("lstm_predict_b1024_bf16", "what-if: lstm forecast, b1024 + bf16 autocast")
            results["lstm_predict_b1024_bf16"].seconds.append(t_bf16)
            if t_one is not None:
                timing("lstm_predict_b1024_1thread", "what-if: lstm forecast, b1024, 1 thread")
                results["lstm_predict_b1024_1thread"].seconds.append(t_one)
            timing(
                "lstm_cycle_b1024_vectorised",
                "what-if: lstm b1024 forecast + VectorCalibrator score",
            ).seconds.append(t_1024 + t_vec)

    # A merge happens every B cycles; charge it pro rata (the run is shorter than B cycles).
    vector.merge()
    merge_seconds = vector.merge_seconds[-1]
    amortised = merge_seconds / vector.b
    for key in ("score_vectorised", "lstm_cycle_vectorised", "lstm_cycle_b1024_vectorised"):
        results[key].seconds = [s + amortised for s in results[key].seconds]

    if args.profile and n_series == max(args.series):
        cycle = cycles[-1]

        def one_cycle() -> None:
            lstm.predict(cycle.batch)
            score_production(cycle.observed, previous["lstm"], last["lstm"].copy(), bank, scoring)

        profiles.append(profile(f"lstm forecast + score, N={n_series:,}", one_cycle))

    base = results["median_band_cycle"].series_per_second
    ratios = {f"{key}/median_band_cycle": t.series_per_second / base for key, t in results.items()}
    ratios["lstm_cycle/median_band_cycle"] = results["lstm_cycle"].series_per_second / base
    report = {
        "series": n_series,
        "lstm_weights": weights,
        "calibration_fill": fill,
        "calibrator_bank_build_seconds": bank_build,
        "calibrator_bank_rss_mb": bank_mb,
        "calibrator_bank_bytes_per_score": bank_mb
        * 2**20
        / max(1, n_series * min(fill, scoring.calibration_size)),
        "vector_calibrator_mb": vector.nbytes / 2**20,
        "vector_calibrator_merge_seconds": merge_seconds,
        "vector_calibrator_merge_every": vector.b,
        "bf16_max_p50_shift_over_band": max(bf16_gap) if bf16_gap else None,
        "results": {key: t.to_json() for key, t in results.items()},
        "ratios": ratios,
        "meets_target": results["lstm_cycle"].series_per_second >= TARGET_SERIES_PER_SECOND,
    }
    return report, problems, profiles


# ----------------------------------------------------------------------------- main


def parse_series(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("series counts must be positive")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Forecast + score throughput (LSTM vs median_band and naive, same run) and "
        "LSTM training time / peak memory, on generated data.",
    )
    parser.add_argument(
        "--series", type=parse_series, default=[1000, 10000], help="N per cycle (1000,10000)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed cycles per N (5)")
    parser.add_argument("--hidden", type=int, default=48, help="LSTM hidden size (48)")
    parser.add_argument(
        "--context-length", type=int, default=CONTEXT_LENGTH, help="context steps (120)"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (os.cpu_count())"
    )
    parser.add_argument(
        "--calibration-fill",
        type=int,
        default=ScoringConfig().calibration_size,
        help="past scores per series in the calibrators; the default, calibration_size (5000), "
        "is the steady state (about 2.5 GB of Python lists at 10,000 series)",
    )
    parser.add_argument("--train-series", type=int, default=1000, help="training series (1000)")
    parser.add_argument("--train-days", type=int, default=7, help="training days at 60 s (7)")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help=f"cap the LSTM's epochs (default: LSTMConfig's {LSTMConfig().max_epochs}); the "
        "table extrapolates from seconds/epoch",
    )
    parser.add_argument("--no-train", action="store_true", help="skip the training part")
    parser.add_argument("--seed", type=int, default=SEED, help=f"numpy seed ({SEED})")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON results (bench/results/throughput.json)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print cProfile of the training and of one LSTM cycle at the largest N",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.hidden < 1 or args.threads < 1 or args.context_length < 2:
        parser.error("--repeats, --hidden, --threads must be positive, --context-length >= 2")
    if args.calibration_fill < 0 or args.train_series < 1 or args.train_days < 1:
        parser.error("--calibration-fill >= 0, --train-series and --train-days positive")
    if args.max_epochs is not None and args.max_epochs < 1:
        parser.error("--max-epochs must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    started = time.perf_counter()
    console.print(
        f"[bold]throughput bench[/]: {os.cpu_count()} cpus ({cpu_model()}), torch "
        f"{torch.__version__} on {torch.get_num_threads()} threads (OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}); load average at start "
        f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}"
    )
    problems = check_vector_calibrator(args.seed)
    if problems:
        console.print("[red bold]CHECK FAILURE[/]: the vectorised calibrator prototype is wrong")
        for problem in problems:
            console.print(f"  - {problem}")
        return 1
    console.print("gate: VectorCalibrator == models.scoring.Calibrator (ties, gaps, evictions)")

    training: dict[str, Any] | None = None
    trained: GlobalLSTMForecaster | None = None
    profiles: list[str] = []
    if not args.no_train:
        console.print(
            f"[bold]training[/] LSTM on {args.train_series:,} series x {args.train_days} days "
            f"at {STEP}s (hidden {args.hidden}, max_epochs "
            f"{args.max_epochs or LSTMConfig().max_epochs})"
        )
        training, trained, text = run_training(args)
        if text:
            profiles.append(text)

    throughput: dict[str, Any] = {}
    failures: list[str] = []
    for n_series in args.series:
        console.print(f"[bold]throughput[/] N={n_series:,}, {args.repeats} repeats")
        report, issues, texts = run_throughput(args, n_series, trained)
        throughput[str(n_series)] = report
        failures.extend(issues)
        profiles.extend(texts)
    load_end = os.getloadavg()
    total_seconds = time.perf_counter() - started

    order = (
        "lstm_cycle",
        "median_band_cycle",
        "naive_cycle",
        "lstm_predict",
        "median_band_predict",
        "naive_predict",
        "lstm_score",
        "score_service_loop",
        "score_vectorised",
        "lstm_predict_b1024",
        "lstm_predict_b1024_bf16",
        "lstm_predict_b1024_1thread",
        "lstm_cycle_vectorised",
        "lstm_cycle_b1024_vectorised",
    )
    table = Table(
        title=f"forecast + score throughput (median of {args.repeats}; {args.threads} torch "
        f"threads, {os.cpu_count()} cpus; context {args.context_length}, horizon {HORIZON}, "
        f"hidden {args.hidden})"
    )
    for column in ("N", "measurement", "seconds (median)", "min-max", "series/s"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    table.add_column("ratio vs median_band cycle", justify="right")
    for key_n, report in throughput.items():
        for key in order:
            if key not in report["results"]:
                continue
            t = report["results"][key]
            table.add_row(
                f"{int(key_n):,}",
                t["label"],
                f"{t['seconds_median']:.4f}",
                f"{t['seconds_min']:.4f}-{t['seconds_max']:.4f}",
                f"{t['series_per_second']:,.0f}",
                f"{report['ratios'][f'{key}/median_band_cycle']:.3f}x",
            )
        table.add_section()
    console.print(table)
    for key_n, report in throughput.items():
        lstm = report["results"]["lstm_cycle"]
        console.print(
            f"N={int(key_n):,}: LSTM forecast + score {lstm['series_per_second']:,.0f} series/s "
            f"(target {TARGET_SERIES_PER_SECOND:,}: "
            f"{'met' if report['meets_target'] else 'NOT met'}); LSTM / median_band = "
            f"{report['ratios']['lstm_cycle/median_band_cycle']:.3f}x; calibrator bank "
            f"+{report['calibrator_bank_rss_mb']:,.0f} MB RSS "
            f"({report['calibrator_bank_bytes_per_score']:.0f} B/score), prototype "
            f"{report['vector_calibrator_mb']:,.0f} MB (merge "
            f"{report['vector_calibrator_merge_seconds']:.3f}s "
            f"every {report['vector_calibrator_merge_every']} cycles, charged pro rata); bf16 "
            f"p50 shift <= {report['bf16_max_p50_shift_over_band'] or float('nan'):.3f} band widths"
        )

    if training is not None:
        tt = Table(title="LSTM training (generated data, default schedule)")
        for column in ("quantity", "value"):
            tt.add_column(column, justify="left" if column == "quantity" else "right")
        tt.add_row("data", f"{training['series']:,} series x {training['days']} d at {STEP}s")
        tt.add_row("seconds (fit)", f"{training['seconds']:.1f}")
        stop = "early stop" if training["early_stopped"] else "max_epochs reached"
        tt.add_row("epochs run / max", f"{training['epochs']} / {training['max_epochs']} ({stop})")
        tt.add_row("seconds / epoch (median)", f"{training['seconds_per_epoch_median']:.1f}")
        tt.add_row(
            "windows / epoch (train + val)",
            f"{training['windows_per_epoch']:,} + {training['validation_windows_per_epoch']:,}",
        )
        tt.add_row("train windows / s", f"{training['windows_per_second']:,.0f}")
        tt.add_row("train windows available", f"{training['train_windows_available']:,}")
        tt.add_row(
            f"projected: {training['default_max_epochs']} epochs (LSTMConfig default)",
            f"{training['projected_seconds_default_max_epochs']:.0f} s",
        )
        tt.add_row(
            f"projected: {training['shipped_max_epochs']} epochs (core.settings' max_epochs, "
            f"hidden {args.hidden})",
            f"{training['projected_seconds_shipped_max_epochs']:.0f} s",
        )
        tt.add_row("peak RSS (ru_maxrss)", f"{training['peak_rss_mb']:,.0f} MB")
        tt.add_row("RSS before fit", f"{training['rss_mb_before_fit']:,.0f} MB")
        console.print(tt)
        console.print(training["sampling_note"])
        console.print(training["memory_note"])
        within = training["projected_seconds_default_max_epochs"] <= TARGET_TRAIN_SECONDS
        console.print(
            f"training target <= {TARGET_TRAIN_SECONDS}s: measured {training['seconds']:.0f}s "
            f"for {training['epochs']} epochs; at most "
            f"{training['projected_seconds_default_max_epochs']:.0f}s for "
            f"{training['default_max_epochs']} ({'within' if within else 'OVER'} the target "
            "if no early stop)"
        )
    console.print(
        f"load average at end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f}; "
        f"whole run {total_seconds:.0f}s"
    )
    for text in profiles:
        console.print(text, markup=False, highlight=False)

    result = {
        "config": {
            "series": args.series,
            "repeats": args.repeats,
            "context_length": args.context_length,
            "horizon": HORIZON,
            "hidden_size": args.hidden,
            "step": STEP,
            "seed": args.seed,
            "calibration_fill": args.calibration_fill,
            "scoring": ScoringConfig().model_dump(),
            "lstm": lstm_config(args).model_dump(),
            "train_series": None if args.no_train else args.train_series,
            "train_days": None if args.no_train else args.train_days,
            "max_epochs_cap": args.max_epochs,
            "targets": {
                "series_per_second": TARGET_SERIES_PER_SECOND,
                "train_seconds": TARGET_TRAIN_SECONDS,
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_start": load_start,
            "load_average_end": load_end,
        },
        "training": training,
        "throughput": throughput,
        "total_seconds": total_seconds,
        "correct": not failures,
        "failures": failures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    if failures:
        console.print("[red bold]CHECK FAILURE[/]:")
        for failure in failures:
            console.print(f"  - {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
