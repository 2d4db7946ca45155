#!/usr/bin/env python
"""Forecast + anomaly-scoring throughput, detector state memory and LSTM training cost, against
baselines measured in the same run.

Generated data only (numpy, fixed seed, 60 s step, a daily cycle + noise per series, levels from
5 to 5,000); no database, no Prometheus: the context windows and stored states are in memory.

1. Training (first, so that its peak RSS is not the throughput part's): the global LSTM on
   `--train-series` x `--train-days` with the default training schedule (`windows_per_epoch`
   windows per epoch, drawn series-first, early stopping); seconds, epochs, seconds/epoch,
   windows/s, peak RSS (`resource.getrusage().ru_maxrss`). `--max-epochs` caps the epochs for a
   quick run; the table then extrapolates from the measured seconds/epoch.
2. Throughput, for each N in `--series`: one serving cycle as `models.service.forecast_cycle`
   runs it, without the database. First the scoring of each series' newest observation as
   `score_new_points` does it: each stored `DetectorState` read back with `from_json`, the
   production `models.detector.Detector.update` with that one new step per series, the new state
   written with `to_json`; then the model's forward pass over a ContextBatch [N, context_length]
   (horizon 30). The states are prepared untimed by feeding each series' `--history-steps` past
   values to `Detector.update` once. Models: the LSTM (the weights from part 1 when they fit,
   else untrained: the cost of a forward pass does not depend on the weights) and, as baselines,
   `median_band` and `naive`, interleaved within every repeat, each with its own states. Median
   of `--repeats`. Checked: every update scores exactly its one new step, and a sample of series
   scored cycle by cycle through JSON gets the scores of one `update` over its whole history.
   What-ifs for the forward pass (measured alongside): the LSTM with `predict_batch_size=1024`,
   in bfloat16 autocast, and on 1 thread.
3. Memory of the detector states per 10,000 series: the sum of `DetectorState.nbytes()` (their
   JSON, as the `detector_states` table stores them), the memory they take as `DetectorState`
   objects (as one cycle holds a target's states between reading and writing them; tracemalloc)
   and the RSS they added as they were made.

Ratios are series/s divided by the median_band cycle's series/s of the same N and run (machines
are noisy; compare ratios across machines, not seconds).

Exit status: 0 ok, 1 a forecast or the detector check failed.

    .venv/bin/python bench/throughput.py [--series 1000,10000] [--repeats 5] [--hidden 48]
        [--history-steps 240] [--train-series 1000] [--train-days 7] [--max-epochs N]
        [--no-train] [--profile]
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
import tracemalloc
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
from models.detector import Detector, DetectorState, detector_config  # noqa: E402
from models.domain import ContextBatch, History  # noqa: E402
from models.forecasters.base import EpochReport, Forecaster  # noqa: E402
from models.forecasters.lstm import GlobalLSTMForecaster, LSTMConfig, build_inputs  # noqa: E402
from models.forecasters.registry import build  # noqa: E402

SEED = 20240603
STEP = 60
HORIZON = 30
CONTEXT_LENGTH = 120
HISTORY_STEPS = 240  # past values fed to each series' detector before the timed cycles
CHECK_SERIES = 64  # series whose cycle-by-cycle scores are checked against one whole-history run
PER_SERIES = 10_000  # memory is reported per this many series (the scale-out issue's unit)
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


# ----------------------------------------------------------------------------- 1. training


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


# ----------------------------------------------------------------------------- 2. throughput


@dataclass
class Cycle:
    batch: ContextBatch  # [N, context_length], ending at the newest observation
    ts: np.ndarray  # [1] epoch seconds of the newest observation (the same for every series)
    observed: np.ndarray  # [N] the newest value of each series (what gets scored)


@dataclass
class Data:
    history: np.ndarray  # [N, H] the values the detector states were fed before the cycles
    history_ts: np.ndarray  # [H]
    cycles: list[Cycle]


def make_data(n_series: int, history: int, length: int, cycles: int, seed: int) -> Data:
    """`history` past steps, then `cycles` new steps; cycle c observes step history + c and
    forecasts from the `length` steps ending there (history >= length - 1)."""
    values, timestamps = generate(n_series, history + cycles, seed)
    out = []
    for c in range(cycles):
        t = history + c
        window = values[:, t - length + 1 : t + 1]
        end = np.full(n_series, timestamps[t], dtype=np.int64)
        out.append(
            Cycle(
                ContextBatch(window.astype(np.float32), end, STEP),
                timestamps[t : t + 1].copy(),
                values[:, t].copy(),
            )
        )
    return Data(values[:, :history].copy(), timestamps[:history].copy(), out)


@dataclass
class Scored:
    scores: np.ndarray  # [N] the score of each series' new step (NaN: nothing scored)
    from_json: float  # seconds of each phase
    update: float
    to_json: float

    @property
    def seconds(self) -> float:
        return self.from_json + self.update + self.to_json


def score_newest(
    detector: Detector, stored: list[str], ts: np.ndarray, observed: np.ndarray
) -> Scored:
    """What `models.service.score_new_points` does per series, without the database: read back
    each stored state, `Detector.update` with the series' new step, store the new state (in
    place in `stored`)."""
    t0 = time.perf_counter()
    states = [DetectorState.from_json(text) for text in stored]
    t1 = time.perf_counter()
    outputs = [detector.update(state, ts, observed[i : i + 1]) for i, state in enumerate(states)]
    t2 = time.perf_counter()
    stored[:] = [out.state.to_json() for out in outputs]
    t3 = time.perf_counter()
    scores = np.array([out.score[0] if len(out) == 1 else np.nan for out in outputs])
    return Scored(scores, t1 - t0, t2 - t1, t3 - t2)


@dataclass
class StateMemory:
    texts: list[str]  # each series' state as the detector_states table stores it
    prepare_seconds: float
    json_bytes: int  # sum of DetectorState.nbytes()
    objects_bytes: int  # Python memory the states hold as DetectorState objects (tracemalloc)
    objects_rss_mb: float  # RSS added by the states as they were made


def prepare_states(detector: Detector, history: np.ndarray, history_ts: np.ndarray) -> StateMemory:
    """Feed each series' history to the detector once (untimed for the cycle) and measure what
    the resulting states cost: their JSON bytes, the Python memory they hold as objects once
    read back (tracemalloc: exact, whatever the process freed before), and the RSS they added
    as they were made (reads low where the allocator reuses memory freed earlier, e.g. after
    training)."""
    rss0 = rss_mb()
    t0 = time.perf_counter()
    states = [detector.update(None, history_ts, row).state for row in history]
    seconds = time.perf_counter() - t0
    rss1 = rss_mb()
    texts = [state.to_json() for state in states]
    json_bytes = sum(state.nbytes() for state in states)
    del states
    tracemalloc.start()
    held = [DetectorState.from_json(text) for text in texts]
    objects_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return StateMemory(texts, seconds, json_bytes, objects_bytes, rss1 - rss0)


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
    length = args.context_length
    profiling = args.profile and n_series == max(args.series)
    # One untimed warm-up cycle, the timed repeats, and a fresh step for the profile.
    n_cycles = 1 + args.repeats + int(profiling)
    data = make_data(n_series, args.history_steps, length, n_cycles, args.seed + n_series)
    detector = Detector(detector_config(ModelSettings().detector))

    lstm = GlobalLSTMForecaster(lstm_config(args))
    weights = "untrained (random init)"
    if trained is not None and trained.config.hidden_size == args.hidden:
        lstm.net = trained.net
        weights = "trained in part 1 of this run"
    lstm.mark_fitted(STEP)
    lstm_1024 = GlobalLSTMForecaster(lstm_config(args, predict_batch_size=1024))
    lstm_1024.net = lstm.net
    lstm_1024.mark_fitted(STEP)
    models: dict[str, Forecaster] = {"lstm": lstm}
    for name in ("median_band", "naive"):
        models[name] = build(name, {"context_length": length, "horizon": HORIZON})
        models[name].mark_fitted(STEP)

    memory = prepare_states(detector, data.history, data.history_ts)
    per = PER_SERIES / n_series
    console.print(
        f"  N={n_series:,}: detector states fed {args.history_steps} steps each in "
        f"{memory.prepare_seconds:.1f}s; {memory.json_bytes / n_series:,.0f} B JSON/series, "
        f"per {PER_SERIES:,} series {memory.json_bytes * per / 2**20:,.1f} MB JSON, "
        f"{memory.objects_bytes * per / 2**20:,.1f} MB as objects "
        f"(+{memory.objects_rss_mb * per:,.1f} MB RSS); LSTM weights: {weights}"
    )
    # Each model's cycle scores with its own stored states (strings: the copies share them).
    stored = {name: list(memory.texts) for name in MODELS}
    checked: list[np.ndarray] = []  # the lstm cycles' scores, for the check below
    bf16_gap: list[float] = []
    results: dict[str, Timing] = {}

    def timing(key: str, label: str) -> Timing:
        return results.setdefault(key, Timing(label, n_series))

    for c, cycle in enumerate(data.cycles[: 1 + args.repeats]):
        timed = c >= 1
        for name, model in models.items():
            scored = score_newest(detector, stored[name], cycle.ts, cycle.observed)
            t_a = time.perf_counter()
            forecast = model.predict(cycle.batch).values
            t_predict = time.perf_counter() - t_a
            if np.isnan(scored.scores).any():
                problems.append(f"N={n_series} {name}: a series' new step was not scored")
            if not np.isfinite(forecast).all() or forecast.shape != (n_series, HORIZON, 3):
                problems.append(f"N={n_series} {name}: forecast not finite or mis-shaped")
            if name == "lstm":
                checked.append(scored.scores[:CHECK_SERIES])
            if timed:
                timing(f"{name}_cycle", f"{name}: forecast + score").seconds.append(
                    scored.seconds + t_predict
                )
                timing(f"{name}_predict", f"{name}: forecast only").seconds.append(t_predict)
                timing(f"{name}_score", f"{name}: score only (Detector per series)").seconds.append(
                    scored.seconds
                )
                if name == "lstm":
                    timing("score_update", "score part: Detector.update").seconds.append(
                        scored.update
                    )
                    timing(
                        "score_state_json", "score part: state from_json + to_json"
                    ).seconds.append(scored.from_json + scored.to_json)
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
        if not timed:
            reference = models["lstm"].predict(cycle.batch).values
            if not np.allclose(reference, small, rtol=1e-4, atol=1e-4 * np.abs(reference).max()):
                problems.append(f"N={n_series}: predict_batch_size=1024 changes the forecast")
            band = np.maximum(reference[:, :, 2] - reference[:, :, 0], 1e-9)
            bf16_gap.append(float(np.max(np.abs(half[:, :, 1] - reference[:, :, 1]) / band)))
        else:
            timing("lstm_predict_b1024", "what-if: lstm forecast, predict_batch_size=1024")
            results["lstm_predict_b1024"].seconds.append(t_1024)
            timing("lstm_predict_b1024_bf16", "what-if: lstm forecast, b1024 + bf16 autocast")
            results["lstm_predict_b1024_bf16"].seconds.append(t_bf16)
            if t_one is not None:
                timing("lstm_predict_b1024_1thread", "what-if: lstm forecast, b1024, 1 thread")
                results["lstm_predict_b1024_1thread"].seconds.append(t_one)

    # Scoring a few points per cycle through JSON must give the scores of one whole-history run.
    k = min(n_series, CHECK_SERIES)
    h = args.history_steps
    every_ts = np.concatenate([data.history_ts, [cycle.ts[0] for cycle in data.cycles]])
    for i in range(k):
        values = np.concatenate([data.history[i], [cycle.observed[i] for cycle in data.cycles]])
        whole = detector.update(None, every_ts[: h + len(checked)], values[: h + len(checked)])
        cycled = np.array([scores[i] for scores in checked])
        if not np.allclose(cycled, whole.score[h:], rtol=1e-9, atol=1e-12):
            problems.append(f"N={n_series}: series {i} scored cycle by cycle differs from one run")
            break

    if profiling:
        cycle = data.cycles[-1]

        def one_cycle() -> None:
            score_newest(detector, stored["lstm"], cycle.ts, cycle.observed)
            lstm.predict(cycle.batch)

        profiles.append(profile(f"lstm cycle: score + forecast, N={n_series:,}", one_cycle))

    base = results["median_band_cycle"].series_per_second
    ratios = {f"{key}/median_band_cycle": t.series_per_second / base for key, t in results.items()}
    report = {
        "series": n_series,
        "lstm_weights": weights,
        "history_steps": args.history_steps,
        "detector_states": {
            "prepare_seconds": memory.prepare_seconds,
            "json_bytes": memory.json_bytes,
            "json_bytes_per_series": memory.json_bytes / n_series,
            "objects_bytes": memory.objects_bytes,
            "objects_rss_mb": memory.objects_rss_mb,
            f"objects_mb_per_{PER_SERIES}_series": memory.objects_bytes * per / 2**20,
            f"json_mb_per_{PER_SERIES}_series": memory.json_bytes * per / 2**20,
            f"objects_rss_mb_per_{PER_SERIES}_series": memory.objects_rss_mb * per,
        },
        "detector_check_series": k,
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
        description="Forecast + detector scoring throughput (LSTM vs median_band and naive, same "
        "run), detector state memory, and LSTM training time / peak memory, on generated data.",
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
        "--history-steps",
        type=int,
        default=HISTORY_STEPS,
        help=f"past values fed to each series' detector before the timed cycles ({HISTORY_STEPS}; "
        "a state reaches its steady size after the detector's window, 72)",
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
    if args.history_steps < args.context_length:
        parser.error("--history-steps must be at least --context-length")
    if args.train_series < 1 or args.train_days < 1:
        parser.error("--train-series and --train-days must be positive")
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
        "median_band_score",
        "naive_score",
        "score_update",
        "score_state_json",
        "lstm_predict_b1024",
        "lstm_predict_b1024_bf16",
        "lstm_predict_b1024_1thread",
    )
    table = Table(
        title=f"forecast + detector score throughput (median of {args.repeats}; "
        f"{args.threads} torch threads, {os.cpu_count()} cpus; "
        f"context {args.context_length}, horizon {HORIZON}, hidden {args.hidden})"
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
    mt = Table(
        title=f"detector state memory per {PER_SERIES:,} series (states fed "
        f"{args.history_steps} steps each)"
    )
    for column in (
        "N",
        "JSON B/series",
        "JSON MB (sum nbytes)",
        "MB as objects (tracemalloc)",
        "RSS MB added",
        "prepare s (untimed)",
    ):
        mt.add_column(column, justify="right")
    for key_n, report in throughput.items():
        st = report["detector_states"]
        mt.add_row(
            f"{int(key_n):,}",
            f"{st['json_bytes_per_series']:,.0f}",
            f"{st[f'json_mb_per_{PER_SERIES}_series']:,.1f}",
            f"{st[f'objects_mb_per_{PER_SERIES}_series']:,.1f}",
            f"{st[f'objects_rss_mb_per_{PER_SERIES}_series']:,.1f}",
            f"{st['prepare_seconds']:.1f}",
        )
    console.print(mt)
    for key_n, report in throughput.items():
        lstm = report["results"]["lstm_cycle"]
        console.print(
            f"N={int(key_n):,}: LSTM forecast + score {lstm['series_per_second']:,.0f} series/s "
            f"(target {TARGET_SERIES_PER_SECOND:,}: "
            f"{'met' if report['meets_target'] else 'NOT met'}); LSTM / median_band = "
            f"{report['ratios']['lstm_cycle/median_band_cycle']:.3f}x; bf16 p50 shift <= "
            f"{report['bf16_max_p50_shift_over_band'] or float('nan'):.3f} band widths"
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
            "history_steps": args.history_steps,
            "detector": detector_config(ModelSettings().detector).model_dump(),
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
