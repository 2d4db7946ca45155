"""Scoring: residual z, smoothing, calibration to a comparable scale, alarm aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from models.scoring import (
    AlarmConfig,
    Calibrator,
    ScoringConfig,
    alarms,
    ewma,
    residual_z,
    score_series,
)


def test_residual_z_counts_predicted_sigmas() -> None:
    # p10..p90 = ±1.2816 sigma, so a band of width 2.5631 is one sigma each side of 1.2816.
    z = residual_z(np.array([13.0]), np.array([8.7184]), np.array([10.0]), np.array([11.2816]))
    assert z[0] == pytest.approx(3.0, rel=1e-4)


def test_ewma_carries_over_gaps() -> None:
    out = ewma(np.array([np.nan, 2.0, np.nan, 4.0]), 0.5)
    assert np.isnan(out[0])
    assert out[1:].tolist() == [2.0, 2.0, 3.0]


@pytest.mark.parametrize("dist", ["normal", "lognormal", "exponential"])
def test_calibrated_scores_mean_the_same_on_every_series(dist: str) -> None:
    """Whatever the residuals' shape and size, ~0.13 % of normal steps score above 3."""
    rng = np.random.default_rng(7)
    n = 20_000
    raw = {
        "normal": rng.normal(0, 5, n),
        "lognormal": rng.lognormal(0, 1.5, n),
        "exponential": rng.exponential(1000, n),
    }[dist]
    scores = score_series(raw, ScoringConfig(ewma_alpha=1.0))
    above = np.nanmean(scores > 3)
    assert 0.0003 < above < 0.004
    assert 0.3 < np.nanmean(scores == 0) < 0.7  # at or below the median maps to 0


def test_calibration_is_causal_and_waits_for_enough_history() -> None:
    calibrator = Calibrator(ScoringConfig(calibration_min=10))
    assert all(np.isnan(calibrator.observe(float(v))) for v in range(10))
    assert np.isfinite(calibrator.observe(5.0))


def test_a_score_beyond_everything_seen_keeps_growing() -> None:
    calibrator = Calibrator(ScoringConfig(calibration_min=10))
    for v in np.random.default_rng(0).normal(size=500):
        calibrator.observe(abs(float(v)))
    assert calibrator.transform(10.0) > calibrator.transform(5.0) > 3.0


def test_calibration_forgets_old_scores() -> None:
    calibrator = Calibrator(ScoringConfig(calibration_min=10, calibration_size=100))
    for _ in range(100):
        calibrator.observe(100.0)
    for v in np.linspace(0, 1, 100):
        calibrator.observe(float(v))
    assert len(calibrator) == 100
    assert calibrator.transform(50.0) > 3.0  # the old regime of 100s is gone


def test_alarm_needs_k_hits_and_then_stays_quiet() -> None:
    scores = np.array([0, 5, 0, 5, 5, 5, 5, 0, 0, 5, 0], dtype=float)
    assert alarms(scores, AlarmConfig(threshold=4)).tolist() == [
        0,
        1,
        0,
        1,
        1,
        1,
        1,
        0,
        0,
        1,
        0,
    ]
    assert alarms(scores, AlarmConfig(threshold=4, hits=2, window=3)).tolist() == [
        0,
        0,
        0,
        1,
        1,
        1,
        1,
        0,
        0,
        0,
        0,
    ]
    assert alarms(scores, AlarmConfig(threshold=4, hits=2, window=3, suppress=4)).tolist() == [
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
