"""Forecasters: the contract every registered model keeps, then each model's own behaviour."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from ingest.domain import SeriesKey
from models.domain import ContextBatch, History
from models.errors import ModelInputError, ModelNotFittedError
from models.forecasters.base import Forecaster, robust_location_scale
from models.forecasters.registry import FORECASTERS, build

STEP = 60
START = 1_700_000_040  # a multiple of STEP
PERIOD = 12
CONTEXT = 24
HORIZON = 6
TINY: dict[str, object] = {"context_length": CONTEXT, "horizon": HORIZON}
# One small configuration per registered forecaster; the first test makes sure none is missing.
CONFIGS: dict[str, dict[str, object]] = {
    "lstm": {
        **TINY,
        "hidden_size": 8,
        "max_epochs": 2,
        "windows_per_epoch": 256,
        "batch_size": 64,
    },
    "naive": TINY,
    "seasonal_naive": {**TINY, "season": PERIOD},
    "median_band": TINY,
}
NAMES = sorted(FORECASTERS)


def sine_histories(
    n: int = 3, length: int = 240, *, noise: float = 0.2, gaps: bool = True, seed: int = 7
) -> list[History]:
    """A sine with a 12-step period per series (own level and phase), noise and NaN gaps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.arange(length)
        values = 10.0 * (i + 1) + 3.0 * np.sin(2 * np.pi * t / PERIOD + rng.uniform(0, 2 * np.pi))
        values = values + noise * rng.normal(size=length)
        if gaps:
            values[40:46] = np.nan
            values[rng.random(length) < 0.03] = np.nan
        out.append(History(SeriesKey.of("m", {"i": str(i)}), STEP, START, values))
    return out


def batch_of(rows: Sequence[np.ndarray] | np.ndarray, *, step: int = STEP) -> ContextBatch:
    """A batch whose windows all end at the same (arbitrary) time."""
    values = np.asarray(rows, dtype=np.float32)
    end = np.full(len(values), START + 10_000 * STEP, dtype=np.int64)
    return ContextBatch(values, end, step)


def context_batch(histories: Sequence[History], length: int = CONTEXT) -> ContextBatch:
    """The last `length` steps of each history."""
    values = np.stack([h.values[-length:] for h in histories]).astype(np.float32)
    end = np.array([h.timestamps[-1] for h in histories], dtype=np.int64)
    return ContextBatch(values, end, STEP)


def clean_context(n: int = 4, length: int = CONTEXT, seed: int = 3) -> ContextBatch:
    return context_batch(sine_histories(n, length, gaps=False, seed=seed), length)


def gappy_context() -> ContextBatch:
    batch = clean_context()
    values = batch.values.copy()
    values[:, 3:7] = np.nan  # early
    values[:, 13:16] = np.nan  # where seasonal naive looks (one season before the targets)
    values[:, -2:] = np.nan  # the newest steps: the last value is older
    return ContextBatch(values, batch.end, batch.step)


@pytest.fixture(scope="module")
def histories() -> list[History]:
    return sine_histories()


@pytest.fixture(scope="module", params=NAMES)
def fitted(request: pytest.FixtureRequest, histories: list[History]) -> Forecaster:
    forecaster = build(request.param, CONFIGS[request.param])
    forecaster.fit(histories)
    return forecaster


def assert_ordered(values: np.ndarray) -> None:
    steps = np.diff(values, axis=2)
    assert (steps[np.isfinite(steps)] >= 0).all(), "quantiles cross"


# ---------------------------------------------------------------------- registry


def test_every_registered_forecaster_is_under_contract() -> None:
    assert set(CONFIGS) == set(FORECASTERS)
    for name, cls in FORECASTERS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", NAMES)
def test_build_with_defaults_gives_an_unfitted_forecaster_of_that_name(name: str) -> None:
    first, second = build(name, None), build(name, {})
    assert isinstance(first, FORECASTERS[name])
    assert first is not second
    assert first.name == name
    assert first.config == FORECASTERS[name].config_class()


def test_build_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelInputError) as caught:
        build("prophet", None)
    for name in FORECASTERS:
        assert name in caught.value.message


@pytest.mark.parametrize(
    ("name", "config", "field"),
    [
        ("naive", {"horizon": "soon"}, "horizon"),
        ("naive", {"colour": "blue"}, "colour"),
        ("lstm", {"hidden_size": "big", "max_epochs": "many"}, "max_epochs"),
        ("seasonal_naive", {"season": 12, "context_length": 14}, "season"),
        ("median_band", {"window": 100, "context_length": 60}, "window"),
        ("median_band", {"quantiles": [0.9, 0.1]}, "quantiles"),
    ],
)
def test_build_invalid_config_is_one_readable_line(
    name: str, config: dict[str, object], field: str
) -> None:
    with pytest.raises(ModelInputError) as caught:
        build(name, config)
    message = caught.value.message
    assert "\n" not in message
    assert name in message and field in message
    assert "blue" not in message  # the offending input is not echoed


# ---------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", NAMES)
def test_predict_before_fit_raises(name: str) -> None:
    with pytest.raises(ModelNotFittedError):
        build(name, CONFIGS[name]).predict(clean_context())


@pytest.mark.parametrize("name", NAMES)
def test_fit_needs_series_of_one_step(name: str, histories: list[History]) -> None:
    forecaster = build(name, CONFIGS[name])
    other = History(histories[0].key, STEP * 5, START, histories[0].values)
    with pytest.raises(ModelInputError, match="step"):
        forecaster.fit([*histories, other])
    with pytest.raises(ModelInputError):
        forecaster.fit([])
    with pytest.raises(ModelNotFittedError):
        forecaster.predict(clean_context())


def test_forecast_has_one_row_per_series_and_every_horizon_and_quantile(
    fitted: Forecaster,
) -> None:
    batch = clean_context(n=5)
    forecast = fitted.predict(batch)
    assert forecast.values.shape == (5, HORIZON, len(fitted.quantiles))
    assert forecast.quantiles == fitted.quantiles
    assert forecast.step == STEP
    assert forecast.model == fitted.version
    np.testing.assert_array_equal(forecast.end, batch.end)


@pytest.mark.parametrize("context", [clean_context, gappy_context], ids=["clean", "gaps"])
def test_quantiles_are_ordered_and_finite_where_the_context_has_data(
    fitted: Forecaster, context: Callable[[], ContextBatch]
) -> None:
    values = fitted.predict(context()).values
    assert np.isfinite(values).all()  # gaps in the context never turn into NaN forecasts
    assert_ordered(values)


def test_a_batch_at_another_step_is_refused(fitted: Forecaster) -> None:
    batch = clean_context()
    with pytest.raises(ModelInputError, match="step"):
        fitted.predict(ContextBatch(batch.values, batch.end, STEP * 2))


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_context_is_refused(fitted: Forecaster, bad: float) -> None:
    values = clean_context().values.copy()
    values[1, 5] = bad
    with pytest.raises(ModelInputError, match="finite"):
        fitted.predict(batch_of(values))


def test_a_longer_context_uses_its_newest_steps(fitted: Forecaster) -> None:
    long = clean_context(length=CONTEXT + 16)
    newest = ContextBatch(long.values[:, -CONTEXT:], long.end, long.step)
    np.testing.assert_allclose(
        fitted.predict(long).values, fitted.predict(newest).values, rtol=1e-6, atol=1e-9
    )


def test_a_series_without_data_does_not_change_the_others(fitted: Forecaster) -> None:
    batch = clean_context()
    values = batch.values.copy()
    values[0] = np.nan
    alone = fitted.predict(ContextBatch(batch.values[1:], batch.end[1:], STEP)).values
    together = fitted.predict(ContextBatch(values, batch.end, STEP)).values
    np.testing.assert_allclose(together[1:], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_forecast(name: str, histories: list[History]) -> None:
    batch = gappy_context()
    runs = []
    for _ in range(2):
        forecaster = build(name, CONFIGS[name])
        forecaster.fit(histories)
        runs.append(forecaster.predict(batch).values)
    np.testing.assert_array_equal(runs[0], runs[1])


# ---------------------------------------------------------------------- seasonal naive


def fitted_baseline(name: str, **config: object) -> Forecaster:
    forecaster = build(name, config)
    forecaster.fit(sine_histories(1, 40))
    return forecaster


def test_seasonal_naive_repeats_a_periodic_series_exactly_with_no_band() -> None:
    pattern = np.random.default_rng(0).normal(size=PERIOD).astype(np.float32).astype(float)
    series = np.tile(pattern, 6)  # 72 steps: a 36-step context, then a 30-step horizon
    model = fitted_baseline("seasonal_naive", season=PERIOD, context_length=36, horizon=30)
    forecast = model.predict(batch_of([series[:36]]))
    np.testing.assert_array_equal(forecast.quantile(0.5)[0], series[36:66])
    band = forecast.quantile(0.9) - forecast.quantile(0.1)
    np.testing.assert_allclose(band, 0.0, atol=1e-12)


def test_seasonal_naive_gap_falls_back_to_the_value_before_it_never_after() -> None:
    model = fitted_baseline("seasonal_naive", season=PERIOD, context_length=24, horizon=3)
    context = np.arange(24, dtype=float)
    context[12:14] = np.nan  # one season before horizons 1 and 2
    p50 = model.predict(batch_of([context])).quantile(0.5)[0]
    np.testing.assert_array_equal(p50, [11.0, 11.0, 14.0])
    context[:14] = np.nan  # nothing observed before them at all
    p50 = model.predict(batch_of([context])).quantile(0.5)[0]
    assert np.isnan(p50[:2]).all() and p50[2] == 14.0


def test_seasonal_naive_band_comes_from_seasonal_differences_and_widens_per_season() -> None:
    model = fitted_baseline("seasonal_naive", season=PERIOD, context_length=240, horizon=30)
    rng = np.random.default_rng(5)
    context = np.tile(np.linspace(0, 50, PERIOD), 20) + rng.normal(size=240)
    forecast = model.predict(batch_of([context]))
    half = (forecast.quantile(0.9) - forecast.quantile(0.1))[0] / 2
    diffs = context[PERIOD:] - context[:-PERIOD]
    expected = (np.quantile(diffs, 0.9) - np.quantile(diffs, 0.1)) / 2
    np.testing.assert_allclose(half[:PERIOD], expected, rtol=1e-4)
    np.testing.assert_allclose(half[PERIOD : 2 * PERIOD], expected * np.sqrt(2), rtol=1e-4)
    np.testing.assert_allclose(half[2 * PERIOD :], expected * np.sqrt(3), rtol=1e-4)


# ---------------------------------------------------------------------- naive


def test_naive_on_a_constant_series_predicts_the_constant() -> None:
    model = fitted_baseline("naive", context_length=30, horizon=10)
    forecast = model.predict(batch_of([np.full(30, 42.5)]))
    np.testing.assert_array_equal(forecast.values, 42.5)


def test_naive_carries_the_last_observation_and_widens_like_a_random_walk() -> None:
    model = fitted_baseline("naive", context_length=200, horizon=4)
    walk = np.cumsum(np.random.default_rng(2).normal(size=197))
    fresh = model.predict(batch_of([walk]))  # shorter than the context: older steps are gaps
    np.testing.assert_allclose(fresh.quantile(0.5)[0], np.float32(walk[-1]))
    half = (fresh.quantile(0.9) - fresh.quantile(0.1))[0] / 2
    np.testing.assert_allclose(half / half[0], np.sqrt([1, 2, 3, 4]), rtol=1e-6)
    # Three steps stale: the same point, with the band of horizons 4..7.
    stale = model.predict(batch_of([np.concatenate([walk, [np.nan] * 3])]))
    np.testing.assert_allclose(stale.quantile(0.5)[0], np.float32(walk[-1]))
    stale_half = (stale.quantile(0.9) - stale.quantile(0.1))[0] / 2
    np.testing.assert_allclose(stale_half[0], half[3], rtol=1e-6)


# ---------------------------------------------------------------------- median band


def test_median_band_covers_eighty_percent_of_normal_noise() -> None:
    model = fitted_baseline("median_band", context_length=2000, horizon=1)
    rng = np.random.default_rng(11)
    noise = 5.0 + 2.0 * rng.normal(size=4000)
    forecast = model.predict(batch_of([noise[:2000]]))
    low, high = forecast.quantile(0.1)[0, 0], forecast.quantile(0.9)[0, 0]
    future = noise[2000:]
    coverage = float(((future >= low) & (future <= high)).mean())
    assert 0.74 <= coverage <= 0.86


def test_median_band_on_a_flat_series_is_tiny_but_not_zero() -> None:
    model = fitted_baseline("median_band", **TINY)
    forecast = model.predict(batch_of([np.full(CONTEXT, 1000.0)]))
    width = forecast.quantile(0.9) - forecast.quantile(0.1)
    assert (width > 0).all() and (width < 1e-2).all()
    np.testing.assert_array_equal(forecast.quantile(0.5), 1000.0)


def test_median_band_needs_min_points_observations() -> None:
    model = fitted_baseline("median_band", **TINY)  # min_points defaults to 5
    sparse = np.full((2, CONTEXT), np.nan)
    sparse[0, [1, 5, 9, 13]] = 3.0  # four points: too few
    sparse[1, [1, 5, 9, 13, 17]] = 3.0  # five: enough
    values = model.predict(batch_of(sparse)).values
    assert np.isnan(values[0]).all()
    assert np.isfinite(values[1]).all()


def test_median_band_uses_the_newest_observed_points_of_its_window() -> None:
    model = fitted_baseline("median_band", window=5, **TINY)
    context = np.full(CONTEXT, 100.0)
    context[-9:] = [1.0, 2.0, np.nan, 3.0, np.nan, np.nan, 4.0, 5.0, np.nan]
    forecast = model.predict(batch_of([context]))
    np.testing.assert_array_equal(forecast.quantile(0.5), 3.0)  # median of 1..5, skipping gaps


def _reference_location_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, written the slow obvious way with numpy's NaN-aware reductions."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(values, axis=1)
        mad = np.nanmedian(np.abs(values - median[:, None]), axis=1) * 1.4826
        std = np.nanstd(values, axis=1)
    median = np.where(np.isfinite(median), median, 0.0)
    scale = np.fmax(mad, 0.5 * np.where(np.isfinite(std), std, 0.0))
    floor = 1e-6 * np.maximum(1.0, np.abs(median))
    return median, np.where(np.isfinite(scale) & (scale > floor), scale, floor)


def test_robust_location_scale_matches_its_definition() -> None:
    rng = np.random.default_rng(4)
    values = rng.standard_t(3, size=(50, 700)) * 10 + 100
    values[rng.random(values.shape) < 0.2] = np.nan
    values[0] = np.nan
    values[1] = 7.0
    values[2, :-1] = np.nan
    for got, want in zip(
        robust_location_scale(values), _reference_location_scale(values), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("name", ["naive", "median_band"])
def test_baselines_handle_ten_thousand_day_long_series_in_one_batch(name: str) -> None:
    # Speed is measured in bench/throughput.py; this checks the batch is handled whole and sane.
    model = fitted_baseline(name, context_length=1440, horizon=60)
    rng = np.random.default_rng(9)
    values = rng.normal(size=(10_000, 1440)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan
    forecast = model.predict(batch_of(values))
    assert forecast.values.shape == (10_000, 60, 3)
    assert np.isfinite(forecast.values).all()
    assert (np.diff(forecast.values, axis=2) >= 0).all()


# ---------------------------------------------------------------------- LSTM


def test_lstm_beats_naive_on_a_clean_sine() -> None:
    train = sine_histories(4, 400, noise=0.0, gaps=False, seed=1)
    config = {**TINY, "hidden_size": 32, "max_epochs": 5, "windows_per_epoch": 4096}
    lstm = build("lstm", config)
    lstm.fit(train)
    naive = build("naive", TINY)
    naive.fit(train)
    test = sine_histories(64, CONTEXT + HORIZON, noise=0.0, gaps=False, seed=2)
    batch = context_batch([History(h.key, h.step, h.start, h.values[:CONTEXT]) for h in test])
    truth = np.stack([h.values[CONTEXT:] for h in test])[:, 2]
    lstm_mae = np.abs(lstm.predict(batch).quantile(0.5)[:, 2] - truth).mean()
    naive_mae = np.abs(naive.predict(batch).quantile(0.5)[:, 2] - truth).mean()
    assert lstm_mae < 0.5 * naive_mae, (lstm_mae, naive_mae)
