"""The NAB backtest: one score per row, causal, spikes stand out, NAB's file layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from models.detector import DetectorConfig
from models.evaluation.backtest import detect, regular_grid
from prognos.cli import app


def _series(n: int = 1200, spike_at: int = 900) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ts = 1_600_000_000 + np.arange(n, dtype=np.int64) * 300
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    values[spike_at] += 80
    return ts, values


def test_grid_keeps_each_row_and_the_last_of_duplicates() -> None:
    ts = np.array([0, 300, 300, 600, 1500, 1560], dtype=np.int64)
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    grid, step, start, bucket = regular_grid(ts, values)
    assert (step, start) == (300, 0)
    assert bucket.tolist() == [0, 1, 1, 2, 5, 5]
    assert np.isnan(grid[3]) and np.isnan(grid[4])  # a gap stays a gap
    assert grid[1] == 3.0


def test_one_score_per_row_in_range_and_the_spike_stands_out() -> None:
    ts, values = _series()
    scores = detect(ts, values, DetectorConfig())
    assert scores.shape == values.shape
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[900] == scores[200:].max()
    assert scores[900] > 0.9  # z > 9: far beyond the local and the long-run spread


def test_scores_use_only_the_past() -> None:
    ts, values = _series()
    changed = values.copy()
    changed[1000:] += 500  # a different future
    before = detect(ts, values, DetectorConfig())
    after = detect(ts, changed, DetectorConfig())
    np.testing.assert_array_equal(before[:1000], after[:1000])


def test_cli_writes_nab_layout_and_scores_it(tmp_path: Path) -> None:
    ts, values = _series()
    data = tmp_path / "corpus" / "data" / "generated"
    data.mkdir(parents=True)
    stamps = pd.to_datetime(ts, unit="s").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(data / "spiky.csv", index=False)
    labels = tmp_path / "corpus" / "labels"
    labels.mkdir()
    window = [stamps[880], stamps[920]]
    (labels / "combined_windows.json").write_text(
        json.dumps({"generated/spiky.csv": [[w + ".000000" for w in window]]})
    )
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "backtest",
            "nab",
            "--data",
            str(tmp_path / "corpus"),
            "--out",
            str(out),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "prognos" / "generated" / "prognos_spiky.csv")
    assert list(written.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(written) == len(values)
    report = tmp_path / "score.json"
    result = runner.invoke(
        app,
        [
            "nab-score",
            "--data",
            str(tmp_path / "corpus"),
            "--results",
            str(out / "prognos"),
            "--json",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "standard" in result.output
    scores = json.loads(report.read_text())
    assert scores["profiles"]["standard"]["normalized_score"] > 50


def test_duplicate_timestamps_keep_one_score_per_row() -> None:
    ts, values = _series(400, 300)
    ts[10] = ts[9]  # real files repeat a timestamp now and then
    scores = detect(ts, values, DetectorConfig())
    assert scores.shape == values.shape
    assert scores[300] == scores.max()
