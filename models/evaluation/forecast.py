"""Rolling-origin forecast accuracy: every model forecasts 1..H steps from data before each origin;
MASE (in-sample one-step naive MAE scale) and p10-p90 coverage per model and horizon."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.domain import SeriesKey
from models.domain import QUANTILES, ContextBatch, History
from models.errors import ModelInputError
from models.evaluation.backtest import regular_grid
from models.evaluation.nab import read_data_file
from models.forecasters.lstm import GlobalLSTMForecaster
from models.forecasters.registry import build
from models.registry import family_for

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str], None]

MODELS: tuple[str, ...] = ("lstm", "naive", "seasonal_naive", "ets")
#: What the global LSTM is trained with unless `ForecastEvalConfig.lstm` says otherwise.
LSTM_DEFAULTS: dict[str, Any] = {
    "context_length": 48,
    "hidden_size": 32,
    "max_epochs": 8,
    "windows_per_epoch": 4096,
    "batch_size": 256,
    "patience": 3,
    "seed": 0,
}


class ForecastEvalConfig(BaseModel):
    """The protocol (origins, horizons) and each model's settings; steps are grid steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[str, ...] = MODELS
    horizon: int = Field(6, ge=1, description="forecast steps 1..H at every origin")
    report_horizons: tuple[int, ...] = (1, 3, 6)
    origin_every: int = Field(12, ge=1, description="grid steps between origins")
    warmup_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="no origin in this share")
    max_origins: int | None = Field(
        None, ge=1, description="at most this many origins per series, evenly spread (None: all)"
    )
    quantiles: tuple[float, ...] = QUANTILES
    # naive / seasonal naive
    naive_context: int = Field(288, ge=6, description="steps whose differences size the band")
    season_seconds: int = Field(86_400, ge=1)
    # ETS(A,Ad,N), refitted at every origin
    ets_window: int = Field(500, ge=10, description="newest grid steps each ETS fit sees")
    ets_min_points: int = Field(30, ge=10)
    # global LSTM
    lstm: dict[str, Any] = Field(default_factory=dict, description="overrides of LSTM_DEFAULTS")
    retrain_every: int = Field(288, ge=1, description="grid steps between LSTM refits")
    train_window: int = Field(2016, ge=2, description="newest grid steps of each series trained on")
    warm_start: bool = True
    warm_epochs: int = Field(3, ge=1, description="max epochs of a warm-started refit")
    # resources
    workers: int = Field(1, ge=1, description="processes for the per-series models")
    num_threads: int | None = Field(None, ge=1, description="torch threads for the LSTM")

    @model_validator(mode="after")
    def _check(self) -> ForecastEvalConfig:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct names from {', '.join(MODELS)}")
        if any(not 1 <= h <= self.horizon for h in self.report_horizons):
            raise ValueError(f"report_horizons must lie in 1..{self.horizon}")
        if 0.5 not in self.quantiles or len(self.quantiles) < 3:
            raise ValueError("quantiles need 0.5 and a band around it")
        return self

    def lstm_config(self) -> dict[str, Any]:
        return {**LSTM_DEFAULTS, **self.lstm, "horizon": self.horizon, "quantiles": self.quantiles}


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True, slots=True)
class GridSeries:
    """One series on its regular grid: values[i] at start + i * step (NaN = gap)."""

    name: str
    values: FloatArray
    step: int
    start: int
    rows: int = 0

    def __len__(self) -> int:
        return len(self.values)


def load_series(path: str | Path, name: str | None = None) -> GridSeries:
    """A NAB-style CSV (`timestamp,value`) on its regular grid (see `regular_grid`)."""
    p = Path(path)
    timestamps, values = read_data_file(p)
    seconds = (timestamps - np.datetime64("1970-01-01")) // np.timedelta64(1, "s")
    grid, step, start, _ = regular_grid(np.asarray(seconds, dtype=np.int64), values)
    return GridSeries(name or p.stem, grid, step, start, rows=len(values))


def load_folder(root: str | Path, folder: str | None = None) -> list[GridSeries]:
    """Every `*.csv` of `root/data/<folder>`, `root/<folder>` or `root` itself, sorted by name;
    without a folder and no CSV directly under `root/data` or `root`, every `*.csv` one folder
    down (`root/data/*/` first, then `root/*/`), each named `<folder>/<file stem>`."""
    base = Path(root)
    candidates = [base / "data" / folder, base / folder] if folder else [base / "data", base]
    for directory in candidates:
        files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
        if files:
            return [load_series(f) for f in files]
    if not folder:
        for directory in (base / "data", base):
            files = sorted(directory.glob("*/*.csv")) if directory.is_dir() else []
            if files:
                return [load_series(f, f"{f.parent.name}/{f.stem}") for f in files]
    raise ModelInputError(f"no *.csv files under {base} (folder {folder!r})")


def step_families(series: Sequence[GridSeries]) -> dict[str, list[GridSeries]]:
    """The series grouped as the service keeps its models: one family per step
    (`models.registry.family_for`), families in order of step, series in their given order."""
    out: dict[str, list[GridSeries]] = {}
    for s in sorted(series, key=lambda s: s.step):
        out.setdefault(family_for(s.step), []).append(s)
    return out


# ------------------------------------------------------------------------------ protocol


def first_origin(n: int, warmup_fraction: float) -> int:
    """The first origin: after the first `warmup_fraction` of the grid (at least 2 steps)."""
    return max(2, math.ceil(warmup_fraction * n))


def origins(n: int, config: ForecastEvalConfig) -> IntArray:
    """Grid indices of the origins; a forecast at origin o targets o, o+1, .., o+H-1. With
    `max_origins`, a longer list is thinned to that many, evenly spread over it (the first and
    the last kept)."""
    every = np.arange(
        first_origin(n, config.warmup_fraction), n, config.origin_every, dtype=np.int64
    )
    cap = config.max_origins
    if cap is None or len(every) <= cap:
        return every
    if cap == 1:
        return every[:1]
    keep = np.unique(np.round(np.linspace(0, len(every) - 1, cap)).astype(np.int64))
    return every[keep]


def mase_scale(values: FloatArray, end: int) -> float:
    """In-sample one-step naive MAE of values[:end]; pairs with a gap are skipped. NaN if none
    or zero (a flat start: MASE undefined)."""
    head = np.asarray(values[:end], dtype=np.float64)
    diffs = np.abs(np.diff(head))
    diffs = diffs[np.isfinite(diffs)]
    scale = float(diffs.mean()) if len(diffs) else math.nan
    return scale if scale > 0 else math.nan


def targets(values: FloatArray, at: IntArray, horizon: int) -> FloatArray:
    """[K, H]: the actual at origin + h - 1 (NaN beyond the end or in a gap)."""
    index = at[:, None] + np.arange(horizon)[None, :]
    inside = index < len(values)
    return np.where(inside, values[np.minimum(index, len(values) - 1)], np.nan)


def contexts(values: FloatArray, at: IntArray, length: int) -> FloatArray:
    """[K, L]: the `length` steps before each origin (NaN before the series starts)."""
    index = at[:, None] + np.arange(-length, 0)[None, :]
    return np.where(index >= 0, values[np.maximum(index, 0)], np.nan)


def mase(actual: FloatArray, p50: FloatArray, scale: float) -> FloatArray:
    """[H]: mean |actual - p50| / scale over the rows where both are finite (NaN if none)."""
    err = np.abs(actual - p50)
    ok = np.isfinite(err)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(ok, err, 0.0).sum(axis=0) / ok.sum(axis=0) / scale)


def coverage(actual: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """[H]: share of finite actuals with lower <= actual <= upper (NaN where none is scored)."""
    ok = np.isfinite(actual) & np.isfinite(lower) & np.isfinite(upper)
    inside = ok & (actual >= lower) & (actual <= upper)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(inside.sum(axis=0) / ok.sum(axis=0))


# ------------------------------------------------------------------------------ models


@dataclass(slots=True)
class ModelRun:
    """One model's forecasts [K, H, Q] per series (NaN = none made) and its cost."""

    model: str
    forecasts: dict[str, FloatArray] = field(default_factory=dict)
    seconds: float = 0.0
    fits: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def forecasts_made(self) -> int:
        return sum(int(np.isfinite(f[:, 0, :]).all(axis=1).sum()) for f in self.forecasts.values())


def ets_forecast(
    window: FloatArray, horizon: int, quantiles: Sequence[float], min_points: int = 30
) -> FloatArray:
    """[H, Q] from statsmodels' ETS(A,Ad,N) fitted on the observed points of `window`.

    Gaps are dropped (the observations are fitted as consecutive points, nothing is filled);
    when the newest steps are gaps, the forecast reaches that many steps further. Each window is
    standardised before the fit. Quantiles: the point forecast plus z_q times the exact ETS
    forecast standard deviation (statsmodels' analytic variance, residual MSE x Hyndman's
    relative variance for AAdN), i.e. normal intervals. NaN if the fit fails.
    """
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    out = np.full((horizon, len(quantiles)), np.nan)
    observed = np.flatnonzero(np.isfinite(window))
    if len(observed) < min_points:
        return out
    y = window[observed]
    reach = len(window) - 1 - int(observed[-1]) + horizon
    location = float(np.median(y))
    spread = float(np.std(y))
    if spread <= 1e-12 * max(1.0, abs(location)):
        out[:] = y[-1]  # a constant window: nothing to fit, no spread to show
        return out
    z = (y - location) / spread
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            fitted = ETSModel(pd.Series(z), error="add", trend="add", damped_trend=True).fit(
                disp=False
            )
            prediction = fitted.get_prediction(start=len(z), end=len(z) + reach - 1)
            mean = np.asarray(prediction.predicted_mean, dtype=np.float64)[-horizon:]
            var = np.asarray(prediction.var_pred_mean, dtype=np.float64)[-horizon:]
    except (ValueError, np.linalg.LinAlgError, OverflowError):
        return out
    zq = np.array([NormalDist().inv_cdf(q) for q in quantiles])
    band = mean[:, None] + np.sqrt(np.maximum(var, 0.0))[:, None] * zq[None, :]
    return np.asarray(band * spread + location)


def _key(name: str) -> SeriesKey:
    return SeriesKey.of("forecast-eval", {"series": name})


def _baseline_forecaster(model: str, s: GridSeries, config: ForecastEvalConfig) -> Any:
    if model == "naive":
        settings: dict[str, Any] = {"context_length": config.naive_context}
    else:
        season = max(1, round(config.season_seconds / s.step))
        settings = {"season": season, "context_length": 2 * season}
    return build(model, {**settings, "horizon": config.horizon, "quantiles": config.quantiles})


def local_forecasts(
    s: GridSeries, at: IntArray, models: Sequence[str], config: ForecastEvalConfig
) -> dict[str, tuple[FloatArray, float, int]]:
    """The per-series models (naive, seasonal naive, ETS) at origins `at`: forecasts, seconds,
    fits. Each forecast reads only `values[:origin]`."""
    out: dict[str, tuple[FloatArray, float, int]] = {}
    q = len(config.quantiles)
    for model in models:
        started = time.perf_counter()
        forecasts = np.full((len(at), config.horizon, q), np.nan)
        fits = 0
        if model == "ets":
            for k, o in enumerate(at):
                window = s.values[max(0, int(o) - config.ets_window) : int(o)]
                forecasts[k] = ets_forecast(
                    window, config.horizon, config.quantiles, config.ets_min_points
                )
                fits += 1
        elif len(at):
            forecaster = _baseline_forecaster(model, s, config)
            # Baselines learn nothing; fit only records the step. Give it the warm-up only.
            forecaster.fit([History(_key(s.name), s.step, s.start, s.values[: int(at[0])])])
            fits = 1
            batch = ContextBatch(
                contexts(s.values, at, forecaster.context_length).astype(np.float32),
                (s.start + (at - 1) * s.step).astype(np.int64),
                s.step,
            )
            forecasts = np.asarray(forecaster.predict(batch).values, dtype=np.float64)
        out[model] = (forecasts, time.perf_counter() - started, fits)
    return out


def _local_job(
    args: tuple[GridSeries, IntArray, tuple[str, ...], dict[str, Any]],
) -> dict[str, tuple[FloatArray, float, int]]:
    s, at, models, config = args
    return local_forecasts(s, at, models, ForecastEvalConfig.model_validate(config))


def lstm_forecasts(
    series: Sequence[GridSeries],
    at: Mapping[str, IntArray],
    config: ForecastEvalConfig,
    on_progress: Progress | None = None,
) -> ModelRun:
    """The global LSTM, refitted on a wall-clock cadence across all series.

    Refit times are T_j = T_0 + j * retrain_every * step, T_0 the earliest first origin of any
    series. The model of refit j is trained on every series' grid points with timestamp < T_j,
    at most the newest `train_window` steps of each (series without `context + horizon` such
    steps are left out), and forecasts every origin whose time lies in [T_j, T_j+1): all its
    inputs precede the origin. A refit starts from the previous refit's weights (when
    `warm_start`, with at most `warm_epochs` epochs); the first one from scratch. Refits happen
    only where some origin needs them; if one cannot train, the previous model serves.
    """
    run = ModelRun("lstm")
    live = [s for s in series if len(at[s.name])]
    for s in series:
        run.forecasts[s.name] = np.full(
            (len(at[s.name]), config.horizon, len(config.quantiles)), np.nan
        )
    if not live:
        return run
    steps = {s.step for s in live}
    if len(steps) != 1:
        raise ModelInputError(f"the global LSTM needs one step for all series; got {sorted(steps)}")
    step = steps.pop()
    settings = config.lstm_config()
    cold = build("lstm", settings)
    context = cold.context_length
    span = context + config.horizon
    cadence = config.retrain_every * step
    times = {s.name: s.start + at[s.name] * step for s in live}
    anchor = min(int(t[0]) for t in times.values())
    segment = {name: (t - anchor) // cadence for name, t in times.items()}
    wanted = sorted({int(j) for seg in segment.values() for j in seg})

    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    model: GlobalLSTMForecaster | None = None
    try:
        for n_done, j in enumerate(wanted):
            started = time.perf_counter()
            cutoff = anchor + j * cadence
            histories = []
            for s in live:
                hi = min(len(s), max(0, -((s.start - cutoff) // step)))  # times < cutoff
                lo = max(0, hi - config.train_window)
                if hi - lo >= span and np.isfinite(s.values[lo:hi]).sum() >= span:
                    histories.append(
                        History(_key(s.name), step, s.start + lo * step, s.values[lo:hi])
                    )
            if histories:
                if model is not None and config.warm_start:
                    candidate = build(
                        "lstm",
                        {**settings, "max_epochs": min(config.warm_epochs, settings["max_epochs"])},
                    )
                    assert isinstance(candidate, GlobalLSTMForecaster)
                    candidate.net.load_state_dict(model.net.state_dict())
                else:
                    candidate = build("lstm", settings)
                    assert isinstance(candidate, GlobalLSTMForecaster)
                try:
                    candidate.fit(histories)
                    model = candidate
                    run.fits += 1
                except ModelInputError as exc:
                    run.notes.append(f"refit at {cutoff} skipped: {exc}")
            if model is None:
                run.seconds += time.perf_counter() - started
                continue
            members = [(s, np.flatnonzero(segment[s.name] == j)) for s in live]
            members = [(s, rows) for s, rows in members if len(rows)]
            values = np.concatenate(
                [contexts(s.values, at[s.name][r], context) for s, r in members]
            )
            ends = np.concatenate([s.start + (at[s.name][r] - 1) * step for s, r in members])
            predicted = model.predict(
                ContextBatch(values.astype(np.float32), ends.astype(np.int64), step)
            ).values
            offset = 0
            for s, rows in members:
                run.forecasts[s.name][rows] = predicted[offset : offset + len(rows)]
                offset += len(rows)
            run.seconds += time.perf_counter() - started
            if on_progress is not None and (n_done + 1) % 10 == 0:
                on_progress(f"lstm: {n_done + 1}/{len(wanted)} refits, {run.seconds:.0f}s")
    finally:
        torch.set_num_threads(previous_threads)
    return run


# ------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True, slots=True)
class HorizonScore:
    """One model at one horizon, over series: MASE of the p50, coverage of the outer band."""

    model: str
    horizon: int
    minutes: float
    mase_mean: float
    mase_median: float
    coverage_mean: float
    series: int
    points: int


@dataclass(slots=True)
class ForecastEvaluation:
    """Forecasts and scores of one run. Every model is scored on the same targets: those
    observed (not a gap, inside the series) where every model of the run made a forecast."""

    config: ForecastEvalConfig
    series: list[GridSeries]
    origins: dict[str, IntArray]
    scales: dict[str, float]
    runs: dict[str, ModelRun]
    mase: dict[str, dict[str, FloatArray]] = field(default_factory=dict)  # model -> series -> [H]
    coverage: dict[str, dict[str, FloatArray]] = field(default_factory=dict)
    points: dict[str, IntArray] = field(default_factory=dict)  # series -> [H]
    missing: dict[str, int] = field(default_factory=dict)  # model -> observed targets unforecast

    def score(self, model: str, horizon: int) -> HorizonScore:
        h = horizon - 1
        m = np.array([v[h] for v in self.mase[model].values()])
        c = np.array([v[h] for v in self.coverage[model].values()])
        m, c = m[np.isfinite(m)], c[np.isfinite(c)]
        step = self.series[0].step if self.series else 60
        return HorizonScore(
            model,
            horizon,
            horizon * step / 60.0,
            float(np.mean(m)) if len(m) else math.nan,
            float(np.median(m)) if len(m) else math.nan,
            float(np.mean(c)) if len(c) else math.nan,
            len(m),
            int(sum(int(p[h]) for p in self.points.values())),
        )

    def seconds_per_forecast(self, model: str) -> float:
        run = self.runs[model]
        made = run.forecasts_made
        return run.seconds / made if made else math.nan

    def to_json(self) -> dict[str, Any]:
        horizons = range(1, self.config.horizon + 1)
        models: dict[str, Any] = {}
        for model, run in self.runs.items():
            models[model] = {
                "seconds_total": run.seconds,
                "fits": run.fits,
                "forecasts": run.forecasts_made,
                "seconds_per_forecast": self.seconds_per_forecast(model),
                "seconds_per_fit": run.seconds / run.fits if run.fits else None,
                "missing_forecasts": self.missing.get(model, 0),
                "notes": run.notes,
                "horizons": {str(h): _nan_to_none(asdict(self.score(model, h))) for h in horizons},
                "per_series": {
                    name: {
                        "mase": _floats(self.mase[model][name]),
                        "coverage": _floats(self.coverage[model][name]),
                    }
                    for name in self.mase[model]
                },
            }
        return {
            "config": self.config.model_dump(mode="json"),
            "series": [
                {
                    "name": s.name,
                    "rows": s.rows,
                    "grid_steps": len(s),
                    "gaps": int(np.isnan(s.values).sum()),
                    "step": s.step,
                    "origins": len(self.origins[s.name]),
                    "mase_scale": _none_if_nan(self.scales[s.name]),
                    "points": [int(p) for p in self.points[s.name]],
                }
                for s in self.series
            ],
            "models": models,
        }


def _none_if_nan(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _floats(values: FloatArray) -> list[float | None]:
    return [_none_if_nan(float(v)) for v in values]


def _nan_to_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _none_if_nan(v) if isinstance(v, float) else v for k, v in d.items()}


def evaluate(
    series: Sequence[GridSeries],
    config: ForecastEvalConfig | None = None,
    on_progress: Progress | None = None,
) -> ForecastEvaluation:
    """Run every model of `config` over `series` and score it.

    Per series: origins every `origin_every` grid steps after the first `warmup_fraction`; at
    each origin every model forecasts horizons 1..H from the grid values before it. MASE of the
    p50 is scaled by the series' one-step naive MAE before its first origin; coverage is the
    share of actuals inside the outer quantiles (p10-p90). Gaps are never filled: they are
    skipped as targets, in the scale and by the models (each model's own gap handling).

    The per-series models run in `config.workers` processes; ETS leans on BLAS, so run with
    OMP_NUM_THREADS=1 (bench/forecast.py sets it): its tiny fits are far slower multi-threaded.
    """
    config = config or ForecastEvalConfig()
    names = [s.name for s in series]
    if len(set(names)) != len(names):
        raise ModelInputError("series names must be unique")
    at = {s.name: origins(len(s), config) for s in series}
    scales = {
        s.name: mase_scale(s.values, first_origin(len(s), config.warmup_fraction)) for s in series
    }
    runs: dict[str, ModelRun] = {m: ModelRun(m) for m in config.models}
    local = tuple(m for m in config.models if m != "lstm")
    if local:
        jobs = [(s, at[s.name], local, config.model_dump()) for s in series]
        if config.workers > 1 and len(series) > 1:
            with ProcessPoolExecutor(max_workers=config.workers) as pool:
                results = list(pool.map(_local_job, jobs))
        else:
            results = [_local_job(job) for job in jobs]
        for s, result in zip(series, results, strict=True):
            for model, (forecasts, seconds, fits) in result.items():
                runs[model].forecasts[s.name] = forecasts
                runs[model].seconds += seconds
                runs[model].fits += fits
            if on_progress is not None:
                on_progress(f"{', '.join(local)}: {s.name} done")
    if "lstm" in config.models:
        runs["lstm"] = lstm_forecasts(series, at, config, on_progress)
    return score_runs(config, list(series), at, scales, runs)


def evaluate_families(
    series: Sequence[GridSeries],
    config: ForecastEvalConfig | None = None,
    on_progress: Progress | None = None,
) -> dict[str, ForecastEvaluation]:
    """`evaluate` once per step family (`step_families`): the global LSTM is one model per
    family, as the service keeps one per step, and each family is scored on its own."""
    config = config or ForecastEvalConfig()
    out = {}
    for family, members in step_families(series).items():
        if on_progress is not None:
            on_progress(f"family {family}: {len(members)} series")
        out[family] = evaluate(members, config, on_progress)
    return out


def score_runs(
    config: ForecastEvalConfig,
    series: list[GridSeries],
    at: dict[str, IntArray],
    scales: dict[str, float],
    runs: dict[str, ModelRun],
) -> ForecastEvaluation:
    """MASE and coverage per model, series and horizon on the targets every model forecast."""
    lo, mid, hi = 0, config.quantiles.index(0.5), len(config.quantiles) - 1
    result = ForecastEvaluation(config, series, at, scales, runs)
    result.missing = dict.fromkeys(runs, 0)
    for model in runs:
        result.mase[model] = {}
        result.coverage[model] = {}
    for s in series:
        actual = targets(s.values, at[s.name], config.horizon)
        observed = np.isfinite(actual)
        common = observed.copy()
        for model, run in runs.items():
            made = np.isfinite(run.forecasts[s.name]).all(axis=2)
            result.missing[model] += int((observed & ~made).sum())
            common &= made
        result.points[s.name] = common.sum(axis=0).astype(np.int64)
        scored = np.where(common, actual, np.nan)
        for model, run in runs.items():
            f = run.forecasts[s.name]
            result.mase[model][s.name] = mase(scored, f[:, :, mid], scales[s.name])
            result.coverage[model][s.name] = coverage(scored, f[:, :, lo], f[:, :, hi])
    return result
