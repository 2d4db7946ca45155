"""NAB backtest: each data file is a fresh deployment scored row by row, using only its own past.

A file is put on a regular grid inside the detector (its median step; duplicates keep the last
row of a bucket), a forecaster is (re)trained on a capped recent window on a cadence, each row
is compared with the one-step forecast made before it, and the residuals become calibrated
scores (models.scoring). One output row per input row, in the input's order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ingest.domain import SeriesKey
from models.domain import ContextBatch, History
from models.errors import ModelInputError
from models.evaluation.nab import label_rows, load_windows, read_data_file, write_results
from models.scoring import ScoringConfig, residual_z, score_series

#: Forecaster settings behind the detector when only its name is chosen (`--forecaster`). The
#: LSTM is the small one of the forecast benchmark, one thread per file, warm-started refits.
DETECTOR_FORECASTERS: dict[str, dict[str, Any]] = {
    "median_band": {"context_length": 1500},
    "lstm": {
        "context_length": 48,
        "hidden_size": 32,
        "max_epochs": 8,
        "windows_per_epoch": 4096,
        "batch_size": 256,
        "patience": 3,
        "seed": 0,
        "num_threads": 1,
    },
}


class NabDetectorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Defaults chosen on nab-dev (see docs/forecasting.md): a long robust band (~5 days at
    # NAB's 5-minute step), calibration over the newest ~3.5 days of scores, and only new
    # highs over the last 12 hours may alarm.
    forecaster: str = "median_band"
    forecaster_config: dict[str, Any] = Field(default_factory=lambda: {"context_length": 1500})
    retrain_every: int = Field(default=288, ge=1, description="grid steps between refits")
    train_window: int = Field(default=2016, ge=10, description="newest grid steps trained on")
    warm_start: bool = Field(default=True, description="an LSTM refit starts from the last one")
    warm_epochs: int = Field(default=3, ge=1, description="max epochs of a warm-started refit")
    scoring: ScoringConfig = ScoringConfig(calibration_size=1000, calibration_min=200)
    centre: float = Field(default=3.0, description="calibrated score mapped to 0.5")
    alarm_level: float = Field(default=4.0, description="calibrated score treated as an alarm")
    suppress_rows: int = Field(
        default=0, ge=0, description="after an alarm, rows whose scores are held down"
    )
    novelty_rows: int = Field(
        default=144,
        ge=0,
        description=(
            "a score stands only when it is the highest of the last N rows; others read 0, so "
            "one excursion alarms once at its rise, whatever the threshold (0: off)"
        ),
    )


@dataclass(frozen=True, slots=True)
class FileResult:
    relpath: str
    rows: int
    seconds: float
    path: Path


def regular_grid(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray]:
    """(grid values with NaN gaps, step, start, bucket of each row); the last row wins a bucket."""
    unique = np.unique(ts)
    step = int(np.median(np.diff(unique))) if len(unique) > 1 else 60
    step = max(step, 1)
    start = int(ts[0])
    bucket = np.rint((ts - start) / step).astype(np.int64)
    bucket = np.maximum.accumulate(np.maximum(bucket, 0))  # never step back in time
    grid = np.full(int(bucket[-1]) + 1, np.nan)
    grid[bucket] = values  # later rows overwrite earlier ones in the same bucket
    return grid, step, start, bucket


def one_step_forecasts(ts: np.ndarray, values: np.ndarray, config: NabDetectorConfig) -> np.ndarray:
    """[rows, 3] p10/p50/p90 of each row, forecast one grid step ahead from the rows before it
    by a model refitted every `retrain_every` steps on the newest `train_window` steps (an LSTM
    refit starts from the previous weights when `warm_start`). NaN before the first fit."""
    from models.forecasters.lstm import GlobalLSTMForecaster
    from models.forecasters.registry import build

    grid, step, start, bucket = regular_grid(ts, values)
    n = len(grid)
    key = SeriesKey.of("nab", {})
    out = np.full((n, 3), np.nan)
    probe = build(config.forecaster, config.forecaster_config)
    context = probe.context_length
    first = max(5, min(context, n // 10))
    previous: Any = None
    for seg_start in range(first, n, config.retrain_every):
        seg_end = min(n, seg_start + config.retrain_every)
        lo = max(0, seg_start - config.train_window)
        history = History(key, step, start + lo * step, grid[lo:seg_start])
        if config.warm_start and isinstance(previous, GlobalLSTMForecaster):
            settings = dict(config.forecaster_config)
            settings["max_epochs"] = min(config.warm_epochs, int(settings.get("max_epochs", 30)))
            forecaster = build(config.forecaster, settings)
            assert isinstance(forecaster, GlobalLSTMForecaster)
            forecaster.net.load_state_dict(previous.net.state_dict())
        else:
            forecaster = build(config.forecaster, config.forecaster_config)
        try:
            forecaster.fit([history])
        except ModelInputError:  # too little history for this model yet: no forecasts here
            continue
        previous = forecaster
        # Contexts for every bucket of the segment, each ending one step before it.
        idx = np.arange(seg_start, seg_end)
        offsets = np.arange(-context, 0)
        gather = idx[:, None] + offsets[None, :]
        windows = np.where(gather >= 0, grid[np.clip(gather, 0, None)], np.nan)
        ends = start + (idx - 1) * step
        fc = forecaster.predict(ContextBatch(windows.astype(np.float32), ends, step))
        out[idx] = fc.values[:, 0, :3]
    return out[bucket]


def detect(ts: np.ndarray, values: np.ndarray, config: NabDetectorConfig) -> np.ndarray:
    """Anomaly scores in [0, 1], one per row, each from rows up to and including it."""
    band = one_step_forecasts(ts, values, config)
    z = residual_z(values, band[:, 0], band[:, 1], band[:, 2], config.scoring.scale_floor)
    calibrated = score_series(z, config.scoring)
    if config.suppress_rows:
        calibrated = _suppress(calibrated, config.alarm_level, config.suppress_rows)
    if config.novelty_rows:
        calibrated = novel_highs(calibrated, config.novelty_rows)
    squashed = 1.0 / (1.0 + np.exp(-(np.nan_to_num(calibrated, nan=0.0) - config.centre)))
    return np.where(np.isfinite(calibrated), squashed, 0.0)


def novel_highs(scores: np.ndarray, rows: int) -> np.ndarray:
    """Keep a score only where it exceeds every score of the previous `rows` rows; else 0.

    Alarm aggregation without a level: a calibrated score stays high for a while after an
    anomaly, and each row of that tail would be a separate alarm at any threshold below it.
    Only the rise of an excursion, and a later higher peak, can alarm.
    """
    x = np.nan_to_num(scores, nan=-np.inf)
    padded = np.concatenate([np.full(rows, -np.inf), x])
    previous = np.lib.stride_tricks.sliding_window_view(padded, rows)[:-1].max(axis=1)
    return np.where(x > previous, scores, np.where(np.isfinite(scores), 0.0, scores))


def _suppress(scores: np.ndarray, level: float, rows: int) -> np.ndarray:
    """Alarm aggregation inside the detector: one alarm, then quiet for `rows` rows."""
    out = scores.copy()
    quiet_until = -1
    for i, value in enumerate(scores):
        if i <= quiet_until:
            out[i] = min(value, level - 1e-6) if np.isfinite(value) else value
        elif np.isfinite(value) and value >= level:
            quiet_until = i + rows
    return out


def _run_file(args: tuple[str, str, str, str, dict[str, Any]]) -> FileResult:
    import time

    import torch

    torch.set_num_threads(1)  # one file per core
    data_dir, relpath, out_dir, detector, config_dict = args
    config = NabDetectorConfig.model_validate(config_dict)
    started = time.perf_counter()
    timestamps, values = read_data_file(Path(data_dir) / relpath)
    ts = (timestamps - np.datetime64("1970-01-01")) // np.timedelta64(1, "s")
    scores = detect(np.asarray(ts, dtype=np.int64), values, config)
    windows = _WINDOWS.get(relpath, []) if _WINDOWS else []
    path = write_results(
        out_dir, detector, relpath, timestamps, values, scores, label_rows(timestamps, windows)
    )
    return FileResult(relpath, len(values), time.perf_counter() - started, path)


_WINDOWS: dict[str, Any] = {}


def _init_worker(windows: dict[str, Any]) -> None:
    _WINDOWS.clear()
    _WINDOWS.update(windows)


def run_nab_backtest(
    root: Path,
    out_dir: Path,
    *,
    config: NabDetectorConfig | None = None,
    detector: str = "prognos",
    folders: Sequence[str] | None = None,
    workers: int | None = None,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Run the detector over every `<root>/data/<folder>/<file>.csv`; write NAB results files."""
    config = config or NabDetectorConfig()
    data_dir = root / "data"
    relpaths = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))
    if folders:
        relpaths = [r for r in relpaths if r.split("/", 1)[0] in set(folders)]
    labels = root / "labels"
    windows = load_windows(labels) if labels.exists() else {}
    jobs = [
        (str(data_dir), r, str(out_dir), detector, config.model_dump(mode="json")) for r in relpaths
    ]
    results: list[FileResult] = []
    with ProcessPoolExecutor(
        max_workers=workers or os.cpu_count() or 1, initializer=_init_worker, initargs=(windows,)
    ) as pool:
        for result in pool.map(_run_file, jobs):
            results.append(result)
            if on_file is not None:
                on_file(result)
    return results
