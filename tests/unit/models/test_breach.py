"""Breach prediction from quantiles, the warning rule, and the warning evaluation."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ingest.domain import SeriesKey
from models.breach import (
    Breach,
    BreachConfig,
    Direction,
    SeasonalWindow,
    combine_steps,
    exceed_probability,
    next_streak,
    predict_breach,
    seasonal_probability,
    warning_mask,
)
from models.domain import QuantileForecast
from models.errors import ModelInputError
from models.evaluation.breach import (
    BreachEvalConfig,
    BreachReport,
    SeriesOutcome,
    evaluate,
    evaluate_nab,
    false_episodes,
    forecast_probabilities,
    judge,
    judge_warnings,
    replay_series,
    scenario_digest,
    train,
)
from models.forecasters.base import Forecaster
from models.forecasters.registry import build
from sim.scenarios import generate

ROOT = Path(__file__).resolve().parents[3]
STEP = 60
END = 1_700_000_040
H = 10


def forecast(p50: np.ndarray, spread: float = 1.0, model: str = "test") -> QuantileForecast:
    """p10/p50/p90 = p50 -/+ spread, for rows of p50 [N, H]."""
    p50 = np.atleast_2d(np.asarray(p50, dtype=np.float64))
    values = np.stack([p50 - spread, p50, p50 + spread], axis=-1)
    end = np.full(len(p50), END, dtype=np.int64)
    return QuantileForecast(values, (0.1, 0.5, 0.9), end, STEP, model)


# ------------------------------------------------------------------------ predict_breach


def test_a_median_well_above_from_step_5_gives_certainty_and_eta_5() -> None:
    p50 = np.where(np.arange(1, H + 1) >= 5, 150.0, 50.0)
    pred = predict_breach(forecast(p50), 100.0)
    assert pred.probability[0] == pytest.approx(1.0)
    assert pred.eta_steps[0] == 5
    assert pred.eta[0] == END + 5 * STEP and pred.eta_seconds[0] == 300
    assert pred.exceed[0, :4] == pytest.approx(0.0, abs=1e-9)


def test_a_median_far_below_gives_zero_and_no_eta() -> None:
    pred = predict_breach(forecast(np.full(H, 10.0)), 100.0)
    assert pred.probability[0] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(pred.eta_steps[0]) and math.isnan(pred.eta[0])


def test_the_split_normal_passes_through_the_quantiles() -> None:
    values = np.array([[[8.0, 10.0, 16.0]]])  # skewed: p50 - p10 = 2, p90 - p50 = 6
    fc = QuantileForecast(values, (0.1, 0.5, 0.9), np.array([END]), STEP, "m")
    for thr, p in ((8.0, 0.9), (10.0, 0.5), (16.0, 0.1)):
        assert exceed_probability(fc, thr)[0, 0] == pytest.approx(p)
        assert exceed_probability(fc, thr, "below")[0, 0] == pytest.approx(1 - p)


def test_probabilities_fall_as_the_threshold_rises() -> None:
    rng = np.random.default_rng(0)
    p50 = np.cumsum(rng.normal(0, 1, (20, H)), axis=1)
    fc = forecast(p50, spread=2.0)
    grid = np.linspace(-20, 20, 81)
    above = np.stack([predict_breach(fc, t).probability for t in grid])
    below = np.stack([predict_breach(fc, t, "below").probability for t in grid])
    assert (np.diff(above, axis=0) <= 1e-12).all()
    assert (np.diff(below, axis=0) >= -1e-12).all()
    per_step = np.stack([exceed_probability(fc, t) for t in grid])
    assert (np.diff(per_step, axis=0) <= 1e-12).all()


def test_steps_combine_as_independent_or_by_their_max_and_a_shorter_horizon() -> None:
    p50 = np.linspace(90, 110, H)
    full = predict_breach(forecast(p50), 100.0)
    assert full.probability[0] == pytest.approx(1.0 - np.prod(1.0 - full.exceed[0]))
    assert full.forecast_probability is not None and full.seasonal_probability is None
    wide = forecast(p50 - 15.0, spread=10.0)  # no step is certain
    highest = predict_breach(wide, 100.0, config=BreachConfig(combine="max"))
    assert highest.probability[0] == pytest.approx(highest.exceed[0].max())
    assert highest.probability[0] < predict_breach(wide, 100.0).probability[0] < 1.0
    short = predict_breach(forecast(p50), 100.0, config=BreachConfig(horizon=3))
    assert short.exceed.shape == (1, 3) and short.probability[0] < 0.01


def test_combine_steps_by_hand() -> None:
    p = np.array([[0.5, 0.5, np.nan], [0.1, 0.2, 0.3], [np.nan, np.nan, np.nan]])
    independent = combine_steps(p)
    assert independent[:2] == pytest.approx([0.75, 1 - 0.9 * 0.8 * 0.7])
    assert math.isnan(independent[2])
    highest = combine_steps(p, "max")
    assert highest[:2] == pytest.approx([0.5, 0.3]) and math.isnan(highest[2])
    with pytest.raises(ModelInputError, match="combine"):
        combine_steps(p, "mean")  # type: ignore[arg-type]


def test_runs_of_steps_beyond_by_hand_and_by_enumeration() -> None:
    import itertools

    p = np.array([[0.5, 0.5, 0.5], [0.9, np.nan, 0.9], [0.2, 0.9, 0.8]])
    run2 = combine_steps(p, run=2)
    # A run of two (110, 011, 111) or one still going at the end (001, 101): 5/8; a gap breaks
    # a run, the last step alone still counts; 0.2*0.9*(1-0.8) + 0.9*0.8 + (1-0.9)*0.8.
    assert run2 == pytest.approx([5 / 8, 0.9, 0.2 * 0.9 * 0.2 + 0.9 * 0.8 + 0.1 * 0.8])
    assert combine_steps(p, "max", 2) == pytest.approx([0.5, 0.9, 0.8])
    assert combine_steps(p, run=1)[0] == pytest.approx(combine_steps(p)[0])
    q = np.random.default_rng(3).uniform(0, 1, 8)
    exact = sum(
        np.prod([q[i] if b else 1 - q[i] for i, b in enumerate(bits)])
        for bits in itertools.product((0, 1), repeat=8)
        if "111" in "".join(map(str, bits)) or bits[-1] == 1
    )
    assert combine_steps(q[None, :], run=3)[0] == pytest.approx(exact)
    with pytest.raises(ModelInputError, match="run"):
        combine_steps(p, run=0)


def test_a_series_that_only_touches_its_limit_does_not_hold_beyond_it() -> None:
    near = forecast(np.full(H, 97.0), spread=4.0)  # each step: P(> 100) about 0.23
    touching = predict_breach(near, 100.0).probability[0]
    holding = predict_breach(near, 100.0, config=BreachConfig(hold=5 * 60)).probability[0]
    assert touching > 0.8 and holding == pytest.approx(predict_breach(near, 100.0).exceed[0, 0])
    apart = BreachConfig(hold=5 * 60, run_combine="independent")
    assert predict_breach(near, 100.0, config=apart).probability[0] < 0.3  # < the 0.5 to warn
    assert BreachConfig(hold=5 * 60).run_steps(60) == 6 and BreachConfig().run_steps(60) == 1
    rising = forecast(np.linspace(90, 130, H))  # beyond from mid-horizon on, and stays
    assert predict_breach(rising, 100.0, config=BreachConfig(hold=5 * 60)).probability[0] > 0.99


def test_per_series_thresholds_gaps_and_point_masses() -> None:
    rows = np.array([np.full(H, 50.0), np.full(H, np.nan), np.full(H, 50.0)])
    pred = predict_breach(forecast(rows, spread=0.0), np.array([50.0, 1.0, 50.5]))
    assert pred.probability[0] == 1.0  # a point mass at the threshold reaches it
    assert math.isnan(pred.probability[1])  # no forecast, no probability (and no warning)
    assert pred.probability[2] == 0.0
    assert not pred.warns(BreachConfig())[1]
    with pytest.raises(ModelInputError, match="one per series"):
        predict_breach(forecast(rows), np.array([1.0, 2.0]))
    with pytest.raises(ModelInputError, match="direction"):
        predict_breach(forecast(rows), 1.0, "sideways")  # type: ignore[arg-type]


def test_breaches_carry_series_threshold_eta_and_source() -> None:
    p50 = np.array([np.where(np.arange(1, H + 1) >= 3, 150.0, 50.0), np.full(H, 10.0)])
    keys = [SeriesKey.of("mem", {"service": "order"}), SeriesKey.of("mem", {"service": "cart"})]
    out = predict_breach(forecast(p50, model="lstm@3"), 100.0).breaches(keys, 0.5)
    assert len(out) == 1
    breach = out[0]
    assert isinstance(breach, Breach)
    assert breach.series == keys[0] and breach.threshold == 100.0
    assert breach.eta_seconds == 180 and breach.forecast_end == END and breach.model == "lstm@3"


def test_config_is_frozen_and_validated() -> None:
    config = BreachConfig()
    assert (config.probability, config.consecutive, config.eta_probability) == (0.5, 4, 0.5)
    assert (config.combine, config.season, config.trend_window) == ("independent", 86_400, 1200)
    # 60 s: a day + 20 min of history; 5 min: a day + at least 12 steps (1 h).
    assert config.history_length(60) == 1440 + 20 and config.history_length(300) == 288 + 12
    assert BreachConfig(season=None).history_length(60) == 0
    with pytest.raises(ValidationError):
        BreachConfig(probability=1.5)
    with pytest.raises(ValidationError):
        config.consecutive = 3  # type: ignore[misc]


# ------------------------------------------------------------------------ the seasonal check

DAY_STEPS = 1440


def daily(days: float, peak: float = 100.0, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """A 60 s series with a daily cycle between 0 and `peak` (+ noise), ending 2 h before the
    top of its cycle, on the rise."""
    n = int(days * DAY_STEPS)
    top = n - 1 + 120
    rng = np.random.default_rng(seed)
    cycle = 0.5 * peak * (1 + np.cos(2 * np.pi * (np.arange(n) - top) / DAY_STEPS))
    return cycle + rng.normal(0, noise, n)


def rising_forecast(last: float, slope: float) -> QuantileForecast:
    """A forecast that extrapolates a steep rise: p50 = last + slope * h, band +/- 5."""
    return forecast(last + slope * np.arange(1, H + 1), spread=5.0)


def test_a_daily_rise_seen_yesterday_is_expected_and_a_new_trend_is_not() -> None:
    values = daily(2.0)
    assert values[-1] > values[-1 - 60] + 1.0  # rising, 2 h before the top of the cycle
    threshold = values.max() + 5.0
    # A forecaster that extrapolates wildly says the limit falls within the horizon.
    fc = rising_forecast(threshold - 10.0, 5.0)
    config = BreachConfig()
    history = values[None, -config.history_length(STEP) :]
    alone = predict_breach(fc, threshold, config=config)
    checked = predict_breach(fc, threshold, config=config, history=history)
    assert alone.probability[0] > 0.99
    assert checked.seasonal_probability is not None
    assert checked.seasonal_probability[0] < 1e-6  # yesterday's path stays below the limit
    assert checked.probability[0] == checked.seasonal_probability[0]
    assert checked.forecast_probability is not None
    assert checked.forecast_probability[0] == alone.probability[0]
    assert checked.eta_steps[0] == alone.eta_steps[0]  # the ETA is the forecast's
    # The same day with a leak on top: today rises 1 per step faster than yesterday did.
    leak = values.copy()
    leak[-30:] += np.arange(1, 31) * 1.0
    history = leak[None, -config.history_length(STEP) :]
    threshold = leak[-1] + 5.0  # 5 steps of the leak's extra rise away
    checked = predict_breach(
        rising_forecast(leak[-1], 2.0), threshold, config=config, history=history
    )
    assert checked.seasonal_probability is not None
    assert checked.seasonal_probability[0] > 0.99 and checked.probability[0] > 0.99


def test_without_enough_history_the_forecast_decides_alone() -> None:
    values = daily(2.0)
    threshold = values.max() + 5.0
    fc = rising_forecast(threshold - 10.0, 5.0)
    config = BreachConfig()
    short = values[None, -DAY_STEPS:]  # less than a day + the trend window
    pred = predict_breach(fc, threshold, config=config, history=short)
    assert pred.seasonal_probability is not None and math.isnan(pred.seasonal_probability[0])
    assert pred.probability[0] == pred.forecast_probability[0]  # type: ignore[index]
    gappy = values[None, -config.history_length(STEP) :].copy()
    gappy[0, -15:] = np.nan  # most of the 20-minute trend window missing
    pred = predict_breach(fc, threshold, config=config, history=gappy)
    assert math.isnan(pred.seasonal_probability[0])  # type: ignore[index]
    off = predict_breach(fc, threshold, config=BreachConfig(season=None), history=gappy)
    assert off.seasonal_probability is None
    with pytest.raises(ModelInputError, match="history"):
        predict_breach(fc, threshold, config=config, history=np.vstack([gappy, gappy]))


def test_the_seasonal_check_below_a_limit_and_for_a_perfectly_periodic_series() -> None:
    square = np.tile(np.r_[np.full(720, 10.0), np.full(720, 50.0)], 2)[:-360]  # ends at 50
    config = BreachConfig()
    history = square[None, -config.history_length(STEP) :]
    # It is 50 and stays 50 (yesterday did, and today's difference from yesterday is 0):
    # a point mass at 50.
    cases: list[tuple[float, Direction]] = [(49.0, "above"), (51.0, "above")]
    cases += [(49.0, "below"), (51.0, "below")]
    window = SeasonalWindow.of(history, STEP, H, config)
    assert window is not None
    check = [seasonal_probability(window, t, d, H, config)[0] for t, d in cases]
    assert check == [1.0, 0.0, 0.0, 1.0]
    # Only two short stretches are read: the newest 20 steps, and 20 + H a day before them.
    recent, before = config.seasonal_offsets(STEP, H)  # type: ignore[misc]
    assert (recent.start, recent.stop) == (-19, 1)
    assert (before.start, before.stop) == (-1440 - 19, -1440 + H + 1)
    assert window.recent.shape == (1, 20) and window.before.shape == (1, 20 + H)
    sparse = np.full_like(history, np.nan)
    sparse[0, -20:] = history[0, -20:]
    sparse[0, -1440 - 20 : -1440 + H] = history[0, -1440 - 20 : -1440 + H]
    fc = forecast(np.full(H, 50.0))
    full = predict_breach(fc, 49.0, config=config, history=history)
    assert predict_breach(fc, 49.0, config=config, history=sparse).probability == full.probability
    compact = predict_breach(fc, 49.0, config=config, history=window)
    assert compact.seasonal_probability == full.seasonal_probability
    assert config.seasonal_offsets(STEP, 2000) is None  # a season shorter than the horizon


# ------------------------------------------------------------------------ the warning rule


def test_warnings_need_consecutive_forecasts() -> None:
    p = np.array([0.6, 0.6, 0.1, 0.7, 0.8, 0.9, np.nan, 0.9])
    rule = BreachConfig(probability=0.5, consecutive=2)
    two = warning_mask(p, rule)
    assert two.tolist() == [False, True, False, False, True, True, False, False]
    one = BreachConfig(probability=0.65, consecutive=1)
    assert warning_mask(p, one).tolist() == (np.nan_to_num(p) >= 0.65).tolist()
    streak = np.zeros(1, dtype=np.int64)
    base = predict_breach(forecast(np.full(H, 0.0)), 1.0)
    daemon = []
    for value in p:
        pred = replace(base, probability=np.array([value]))
        streak, warn = next_streak(streak, pred, rule)
        daemon.append(bool(warn[0]))
    assert daemon == two.tolist()


# ------------------------------------------------------------------------ evaluation


def ramp(n: int = 200, cross: int = 150) -> np.ndarray:
    values = np.linspace(0.0, 1.0, n) * (100.0 / (cross / (n - 1)))
    values[cross:] = np.maximum(values[cross:], 100.0)
    return values


def test_lead_time_is_crossing_minus_first_warning_in_the_window() -> None:
    values = ramp()
    assert int(np.flatnonzero(values >= 100.0)[0]) == 150
    indices = np.arange(0, 200)
    warn = np.zeros(200, dtype=bool)
    warn[20:23] = True  # far too early (outside the 60 min window): a false episode
    warn[120:125] = True  # 30 min ahead: the credited one
    warn[140:160] = True  # later warnings do not change the lead
    config = BreachEvalConfig()
    found, leads, false = judge_warnings(warn, indices, values, 100.0, STEP, config)
    assert found == (150,)
    assert leads == (30 * 60.0,)
    assert false == 1
    # Only forecasts every 5 steps: the first warned forecast step sets the lead.
    sparse = np.arange(0, 200, 5)
    found, leads, _ = judge_warnings(warn[sparse], sparse, values, 100.0, STEP, config)
    assert leads == (30 * 60.0,)


def test_a_crossing_without_a_warning_before_it_is_missed() -> None:
    values = ramp()
    warn = np.zeros(200, dtype=bool)
    warn[150:170] = True  # only once it has crossed: in breach, neither lead nor false
    found, leads, false = judge_warnings(
        warn, np.arange(200), values, 100.0, STEP, BreachEvalConfig()
    )
    assert found == (150,) and math.isnan(leads[0]) and false == 0


def test_a_warning_during_an_earlier_excursion_is_not_credited_to_the_next() -> None:
    values = np.zeros(300)
    values[100:110] = 200.0  # first excursion
    values[150:] = 200.0  # a second crossing 40 steps (> 30 min rearm) later
    warn = np.zeros(300, dtype=bool)
    warn[105:112] = True  # on while the first one was still above
    found, leads, false = judge_warnings(
        warn, np.arange(300), values, 100.0, STEP, BreachEvalConfig()
    )
    assert found == (100, 150)
    # Raised after the first crossing, still on at 110-111 when the series was below again:
    # carried over from the first excursion, so not a warning for the second one.
    assert math.isnan(leads[0]) and math.isnan(leads[1])
    assert false == 0  # justified: the series was in breach when it began
    warn[130:133] = True  # a fresh episode 20 min before the second crossing
    _, leads, _ = judge_warnings(warn, np.arange(300), values, 100.0, STEP, BreachEvalConfig())
    assert leads[1] == 20 * 60.0


def test_a_false_warning_episode_counts_once() -> None:
    warn = np.array([0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    assert false_episodes(warn, np.zeros(len(warn), dtype=bool)) == 3
    long = np.ones(500, dtype=bool)
    assert false_episodes(long, np.zeros(500, dtype=bool)) == 1
    justified = np.zeros(len(warn), dtype=bool)
    justified[3] = True
    assert false_episodes(warn, justified) == 2
    values = np.full(len(warn), 1.0)
    _, _, false = judge_warnings(warn, np.arange(len(warn)), values, 10.0, STEP, BreachEvalConfig())
    assert false == 3


def test_report_shares_median_and_rates() -> None:
    report = BreachReport("m", min_lead=900)
    report.outcomes += [
        SeriesOutcome("a", "memory_leak", True, 2.0, (10, 20), (1800.0, 600.0), 0, 5, 10),
        SeriesOutcome("b", "memory_leak", True, 2.0, (30,), (math.nan,), 1, 5, 10),
        SeriesOutcome("c", "daily", False, 2.0, (), (), 1, 3, 10),
        SeriesOutcome("d", "daily", False, 2.0, (), (), 0, 0, 10),
    ]
    assert report.crossings == 3
    assert report.share_warned() == pytest.approx(1 / 3)
    assert report.share_warned(0.0) == pytest.approx(2 / 3)
    assert report.median_lead_minutes == pytest.approx(20.0)
    assert report.false_per_day() == pytest.approx(0.25)
    assert report.false_per_day(breach=True) == pytest.approx(0.25)
    assert report.summary()["by_kind"]["daily"]["false_episodes"] == 1


def test_a_tiny_lstm_trained_on_early_parts_runs_the_daemon_replay() -> None:
    scenarios = [generate("memory_leak", 1), generate("daily", 1)]
    model = build(
        "lstm",
        {
            "context_length": 24,
            "horizon": 6,
            "hidden_size": 8,
            "max_epochs": 1,
            "windows_per_epoch": 256,
            "batch_size": 64,
        },
    )
    train(model, scenarios, early_only=True)
    config = BreachEvalConfig(every=10)
    report = evaluate(model, scenarios, config)
    assert report.model == model.version and report.crossings == len(scenarios[0].crossings)
    leak, daily = report.outcomes
    assert leak.forecasts == len(range(scenarios[0].warmup, len(scenarios[0]), 10))
    assert daily.days == pytest.approx(2.0, rel=0.01) and daily.crossings == ()


def test_nab_false_warnings_on_files_without_anomalies(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "artificialNoAnomaly"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    ts = np.datetime64("2014-04-01T00:00") + np.arange(600) * np.timedelta64(5, "m")
    values = 20 + 5 * np.sin(np.arange(600) * 2 * np.pi / 288) + rng.normal(0, 0.3, 600)
    lines = ["timestamp,value"] + [
        f"{str(t).replace('T', ' ')}:00,{v}" for t, v in zip(ts, values, strict=True)
    ]
    (folder / "art_test.csv").write_text("\n".join(lines) + "\n")
    steps: list[int] = []

    def make(step: int) -> Forecaster:
        steps.append(step)
        model = build("naive", {"context_length": 24, "horizon": 6})
        model.fit([generate("daily", 0, step=step).history()])
        return model

    report = evaluate_nab(make, tmp_path)
    assert steps == [300]
    assert report.thresholds["artificialNoAnomaly/art_test.csv"] > values.max()
    assert report.days == pytest.approx((600 - 23) * 300 / 86_400)
    assert report.false_per_day == 0.0  # the naive median never rises above the max
    assert report.summary()["per_file"]["artificialNoAnomaly/art_test.csv"]["crossings"] == 0


def test_the_replay_keeps_both_probabilities_and_judges_either() -> None:
    s = generate("daily", 3)
    model = build("naive", {"context_length": 24, "horizon": 6})
    model.fit([s.history(s.warmup)])
    config = BreachEvalConfig(every=5)
    threshold = float(np.nanpercentile(s.values, 99))  # low enough to be crossed at peaks
    r = replay_series(model, s.values, s.start, s.step, threshold, s.warmup, config)
    assert r.forecast_probability is not None
    both = np.isfinite(r.probability) & np.isfinite(r.forecast_probability)
    assert both.all()
    assert (r.probability <= r.forecast_probability + 1e-12).all()  # the check only lowers it
    # The first forecasts have fewer than half the 20-minute trend window's differences from a
    # day before (the first one exists at index 1440): the forecast alone.
    early = r.indices < DAY_STEPS + 9
    assert early.any() and (r.probability[early] == r.forecast_probability[early]).all()
    checked = judge(r, config)
    alone = judge(r, config.model_copy(update={"history": False}))
    assert alone.warning_steps > checked.warning_steps
    same, _ = forecast_probabilities(
        model, s.values, s.start, s.step, threshold, r.indices[:50], config
    )
    assert np.array_equal(same, r.probability[:50])


def test_the_scenario_generators_and_threshold_rule_are_as_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_breach", ROOT / "bench" / "breach.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    digest = scenario_digest()
    # The generated breach figures were measured on these generators and thresholds: a change
    # must be deliberate (a new frozen digest in bench/breach.py) and the figures re-measured.
    assert digest["source_sha256"] == bench.FROZEN_SOURCE_SHA256
    assert digest["threshold_rule_sha256"] == bench.FROZEN_RULE_SHA256
    assert digest["threshold_rule"]["MARGIN_NOISE_SIGMAS"] == 4.0
