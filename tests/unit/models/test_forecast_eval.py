"""Rolling-origin forecast evaluation: MASE and coverage are right, origins see only the past,
gaps are skipped, and the bench writes its table's numbers as JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from models.errors import ModelInputError
from models.evaluation.forecast import (
    ForecastEvalConfig,
    GridSeries,
    ModelRun,
    contexts,
    coverage,
    ets_forecast,
    evaluate,
    evaluate_families,
    load_folder,
    load_series,
    mase_scale,
    origins,
    score_runs,
    step_families,
    targets,
)

STEP = 300
START = 1_400_000_100
ROOT = Path(__file__).resolve().parents[3]
TINY_LSTM = {
    "context_length": 12,
    "hidden_size": 4,
    "max_epochs": 1,
    "windows_per_epoch": 128,
    "batch_size": 64,
    "patience": 1,
}


def _random_walk(n: int, seed: int = 0, name: str = "rw") -> GridSeries:
    rng = np.random.default_rng(seed)
    return GridSeries(name, 100 + np.cumsum(rng.normal(0, 1, n)), STEP, START, rows=n)


def _seasonal(n: int, seed: int, name: str, start: int = START) -> GridSeries:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * t / 288) + np.cumsum(rng.normal(0, 0.3, n))
    return GridSeries(name, values + rng.normal(0, 1, n), STEP, start, rows=n)


# ----------------------------------------------------------------------------- metrics


def test_a_perfect_forecaster_scores_zero_and_covers_everything() -> None:
    s = _random_walk(1995)  # the last origin, 1992, reaches 2 steps past the end
    config = ForecastEvalConfig(models=("naive",))
    at = origins(len(s), config)
    actual = targets(s.values, at, config.horizon)
    perfect = np.repeat(actual[:, :, None], 3, axis=2)
    ev = score_runs(
        config,
        [s],
        {s.name: at},
        {s.name: mase_scale(s.values, int(at[0]))},
        {"perfect": ModelRun("perfect", {s.name: perfect})},
    )
    for h in range(1, config.horizon + 1):
        score = ev.score("perfect", h)
        assert score.mase_mean == 0.0 and score.mase_median == 0.0
        assert score.coverage_mean == 1.0
    # The last origins reach past the end: those targets are not scored.
    assert ev.points[s.name][0] == len(at)
    assert ev.points[s.name][-1] == int(np.isfinite(actual[:, -1]).sum()) < len(at)


def test_naive_on_a_random_walk_scores_one_at_horizon_one() -> None:
    s = _random_walk(20_000, seed=1)  # 3,000 in-sample steps size the scale
    ev = evaluate([s], ForecastEvalConfig(models=("naive",), origin_every=1))
    assert ev.score("naive", 1).mase_mean == pytest.approx(1.0, abs=0.05)
    # A random walk's 3-step error is sqrt(3) times its one-step error.
    assert ev.score("naive", 3).mase_mean == pytest.approx(math.sqrt(3), abs=0.12)
    assert 0.75 <= ev.score("naive", 1).coverage_mean <= 0.85  # an 80 % band


def test_coverage_by_hand() -> None:
    actual = np.array([[1.0], [2.0], [3.0], [4.0], [np.nan]])
    lower = np.array([[0.0], [2.5], [3.0], [5.0], [0.0]])
    upper = np.array([[2.0], [3.0], [3.0], [6.0], [1.0]])
    # 1 in [0, 2]; 2 not in [2.5, 3]; 3 in [3, 3] (bounds count); 4 not in [5, 6]; gap skipped.
    assert coverage(actual, lower, upper).tolist() == [0.5]

    s = GridSeries("hand", np.array([0.0, 1.0, 1.0, 2.0, 4.0, 3.0, 5.0]), STEP, START, rows=7)
    config = ForecastEvalConfig(models=("naive",), horizon=1, report_horizons=(1,))
    at = np.array([3, 4, 5, 6])  # actuals 2, 4, 3, 5
    band = np.array([[[1.0, 1.5, 3.0]], [[4.5, 5.0, 6.0]], [[0.0, 3.0, 3.0]], [[4.0, 4.0, 4.0]]])
    ev = score_runs(config, [s], {"hand": at}, {"hand": 0.5}, {"m": ModelRun("m", {"hand": band})})
    score = ev.score("m", 1)
    assert score.coverage_mean == 0.5  # 2 in [1, 3] and 3 in [0, 3]
    assert score.mase_mean == pytest.approx((0.5 + 1.0 + 0.0 + 1.0) / 4 / 0.5)


def test_max_origins_thins_evenly_and_keeps_the_ends() -> None:
    every = origins(1995, ForecastEvalConfig())
    thinned = origins(1995, ForecastEvalConfig(max_origins=10))
    assert len(thinned) == 10 and thinned[0] == every[0] and thinned[-1] == every[-1]
    assert set(thinned.tolist()) <= set(every.tolist())
    gaps = np.diff(thinned)
    assert gaps.max() - gaps.min() <= 12  # evenly spread, on the origins' own grid
    assert np.array_equal(origins(1995, ForecastEvalConfig(max_origins=1000)), every)
    assert origins(1995, ForecastEvalConfig(max_origins=1)).tolist() == [every[0]]


# ----------------------------------------------------------------------------- gaps


def test_the_scale_skips_pairs_with_a_gap_and_a_flat_start_has_none() -> None:
    values = np.array([0.0, 1.0, np.nan, 5.0, 7.0, 100.0])
    assert mase_scale(values, 5) == pytest.approx(1.5)  # |1-0| and |7-5|; 100 is after
    assert math.isnan(mase_scale(np.ones(10), 10))


def test_gaps_are_skipped_never_filled() -> None:
    s = _random_walk(1500, seed=2)
    values = s.values.copy()
    values[[100, 101, 700, 703, 704, 705, 1200]] = np.nan
    gappy = GridSeries("gappy", values, STEP, START, rows=1493)
    ev = evaluate([gappy], ForecastEvalConfig(models=("naive",)))
    at = ev.origins["gappy"]
    actual = targets(values, at, 6)
    assert ev.missing == {"naive": 0}
    assert ev.points["gappy"].tolist() == np.isfinite(actual).sum(axis=0).tolist()
    f = ev.runs["naive"].forecasts["gappy"][:, :, 1]
    ok = np.isfinite(actual)
    expected = np.abs(actual - f)[ok[:, 0], 0].mean() / ev.scales["gappy"]
    assert ev.mase["naive"]["gappy"][0] == pytest.approx(expected)
    # Origin 705 (225 + 40 x 12) follows the gap at 703-704: naive repeats 702, the last seen;
    # its own target (705) is a gap and is not scored.
    k = int(np.flatnonzero(at == 705)[0])
    assert (f[k] == np.float32(values[702])).all()  # contexts travel as float32
    assert ev.runs["naive"].forecasts["gappy"][k].shape == (6, 3)
    # A context with its newest steps missing still forecasts (further ahead); too few: NaN.
    window = values[600:706]
    assert np.isfinite(ets_forecast(window, 6, (0.1, 0.5, 0.9))).all()
    assert np.isnan(ets_forecast(np.full(50, np.nan), 6, (0.1, 0.5, 0.9))).all()


def test_csv_loading_keeps_gaps_on_the_grid(tmp_path: Path) -> None:
    ts = START + STEP * np.delete(np.arange(40), [10, 11])
    stamps = pd.to_datetime(ts, unit="s").strftime("%Y-%m-%d %H:%M:%S")
    folder = tmp_path / "data" / "gen"
    folder.mkdir(parents=True)
    pd.DataFrame({"timestamp": stamps, "value": np.arange(38.0)}).to_csv(
        folder / "a.csv", index=False
    )
    s = load_series(folder / "a.csv")
    assert (s.name, s.step, s.start, s.rows, len(s)) == ("a", STEP, START, 38, 40)
    assert np.isnan(s.values[[10, 11]]).all() and np.isfinite(np.delete(s.values, [10, 11])).all()
    assert [x.name for x in load_folder(tmp_path, "gen")] == ["a"]
    window = contexts(s.values, np.array([12, 2]), 4)
    assert np.array_equal(window[0], [8.0, 9.0, np.nan, np.nan], equal_nan=True)  # not filled
    assert np.array_equal(window[1], [np.nan, np.nan, 0.0, 1.0], equal_nan=True)  # before start


def _write(folder: Path, name: str, s: GridSeries) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamps = pd.to_datetime(s.start + s.step * np.arange(len(s)), unit="s")
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": s.values})
    frame.to_csv(folder / f"{name}.csv", index=False)


def _hourly(n: int, seed: int, name: str) -> GridSeries:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 20 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, n)
    return GridSeries(name, values, 3600, START - START % 3600, rows=n)


def test_every_folder_loads_and_steps_make_families(tmp_path: Path) -> None:
    _write(tmp_path / "data" / "fast", "a", _seasonal(300, seed=5, name="a"))
    _write(tmp_path / "data" / "slow", "b", _hourly(200, seed=6, name="b"))
    _write(tmp_path / "data" / "slow", "c", _hourly(150, seed=7, name="c"))
    series = load_folder(tmp_path)  # no folder: every folder under data/
    assert [s.name for s in series] == ["fast/a", "slow/b", "slow/c"]
    assert [s.name for s in load_folder(tmp_path, "slow")] == ["b", "c"]
    families = step_families(series)
    assert list(families) == ["step300s", "step3600s"]
    assert [s.name for s in families["step3600s"]] == ["slow/b", "slow/c"]
    with pytest.raises(ModelInputError, match="one step"):
        evaluate(series, ForecastEvalConfig(models=("lstm",), lstm=TINY_LSTM))
    config = ForecastEvalConfig(
        models=("lstm", "naive"), lstm=TINY_LSTM, origin_every=10, max_origins=5, num_threads=1
    )
    out = evaluate_families(series, config)
    assert list(out) == ["step300s", "step3600s"]
    for family, ev in out.items():
        assert {s.step for s in ev.series} == {int(family[4:-1])}
        assert all(len(at) <= 5 for at in ev.origins.values())
        assert ev.runs["lstm"].fits >= 1 and np.isfinite(ev.score("lstm", 1).mase_mean)


# ----------------------------------------------------------------------------- causality


def test_origins_never_use_future_data() -> None:
    a = _seasonal(320, seed=3, name="a")
    b = _seasonal(280, seed=4, name="b", start=START + 2 * 3600)  # a later, overlapping series
    config = ForecastEvalConfig(
        origin_every=40,
        season_seconds=4 * 3600,  # 48 steps, so that short series have seasonal forecasts
        ets_window=100,
        retrain_every=48,
        train_window=200,
        lstm=TINY_LSTM,
        num_threads=1,
    )
    before = evaluate([a, b], config)
    at = before.origins["a"]
    cut = int(at[len(at) // 2])  # perturb everything from this origin on
    changed = a.values.copy()
    changed[cut:] += np.linspace(50, 80, len(changed) - cut)
    after = evaluate([GridSeries("a", changed, STEP, START, rows=a.rows), b], config)
    cut_time = a.start + cut * STEP
    for model in config.models:
        for s in (a, b):
            times = s.start + before.origins[s.name] * STEP
            early = times <= cut_time
            assert early.sum() >= 3
            old = before.runs[model].forecasts[s.name][early]
            new = after.runs[model].forecasts[s.name][early]
            np.testing.assert_array_equal(old, new, err_msg=f"{model} on {s.name}")
            made = np.isfinite(old).all(axis=(1, 2))
            assert made.sum() >= 2, f"{model} made too few forecasts on {s.name}"
        late = at > cut
        assert not np.array_equal(
            before.runs[model].forecasts["a"][late], after.runs[model].forecasts["a"][late]
        ), f"{model}: the perturbation should change later forecasts"
    assert before.runs["lstm"].fits >= 3


# ----------------------------------------------------------------------------- bench


def _run_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> dict[str, Any]:
    """bench/forecast.py's main with `args` (+ a tiny LSTM, one worker); its JSON report."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # the bench only sets them if unset; restored afterwards
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_forecast", ROOT / "bench" / "forecast.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "forecast.json"
    threads = torch.get_num_threads()
    try:
        code = bench.main(
            [*args, "--lstm", json.dumps(TINY_LSTM), "--workers", "1", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_bench_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data" / "gen"
    folder.mkdir(parents=True)
    for i in range(2):
        s = _seasonal(420, seed=10 + i, name=f"s{i}")
        stamps = pd.to_datetime(s.start + STEP * np.arange(len(s)), unit="s")
        frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": s.values})
        frame.to_csv(folder / f"s{i}.csv", index=False)
    report = _run_bench(
        tmp_path,
        monkeypatch,
        [str(tmp_path), "--folder", "gen", "--origin-every", "60", "--ets-window", "100"],
    )
    assert set(report["models"]) == {"lstm", "naive", "seasonal_naive", "ets"}
    for model in report["models"].values():
        for score in model["horizons"].values():
            assert 0.0 <= score["coverage_mean"] <= 1.0
            assert score["mase_mean"] > 0
    assert report["headline"]["horizon"] == 3 and report["headline"]["ratio"] > 0
    assert list(report["families"]) == ["step300s"]
    assert report["families"]["step300s"]["models"] == report["models"]


FAMILY_ARGS = "--models lstm,naive,ets --max-origins 6 --origin-every 20 --ets-window 100"


def test_bench_reports_per_step_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "data" / "fast", "a", _seasonal(420, seed=8, name="a"))
    _write(tmp_path / "data" / "slow", "b", _hourly(200, seed=9, name="b"))
    report = _run_bench(
        tmp_path,
        monkeypatch,
        ["--data", str(tmp_path), *FAMILY_ARGS.split()],
    )
    assert report["folder"] is None and "models" not in report  # two families, no single one
    assert list(report["families"]) == ["step300s", "step3600s"]
    hourly = report["families"]["step3600s"]
    assert hourly["headline"]["ratio"] is None  # 15 minutes is no hourly horizon
    rows = {(r["family"], r["horizon"]): r for r in report["per_family"]}
    assert rows[("step3600s", 1)]["minutes"] == 60.0 and rows[("step300s", 3)]["minutes"] == 15.0
    assert (
        rows[("step300s", 1)]["lstm_over_ets"] > 0 and rows[("step300s", 1)]["lstm_over_naive"] > 0
    )
    assert max(s["origins"] for s in hourly["series"]) <= 6
