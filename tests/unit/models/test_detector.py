"""The one detector: incremental, bounded, and the same whether fed at once or a step at a time."""

from __future__ import annotations

import numpy as np
import pytest

from models.detector import (
    STATE_BUDGET_BYTES,
    Detector,
    DetectorConfig,
    DetectorState,
    config_digest,
    detector_config,
)
from models.errors import ModelInputError

STEP = 60
T0 = 1_767_225_600


def series(n: int = 2000, seed: int = 1, spikes: tuple[int, ...] = (1500,)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100 + 10 * np.sin(np.arange(n) / 50) + rng.normal(0, 1, n)
    for at in spikes:
        x[at] += 40
    return x


def ts(n: int) -> np.ndarray:
    return T0 + STEP * np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_split_into_calls_gives_the_same_scores_and_alarms(seed: int) -> None:
    x = series(seed=seed)
    x[[100, 700, 701]] = np.nan  # gaps are skipped, whichever call they fall in
    detector = Detector()
    whole = detector.update(None, ts(len(x)), x)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=60, replace=False))
    state: DetectorState | None = None
    scores, alarms = [], []
    for part in np.split(np.arange(len(x)), cuts):
        out = detector.update(state, ts(len(x))[part], x[part])
        state = DetectorState.from_json(out.state.to_json())  # as stored between cycles
        scores.append(out.score)
        alarms.append(out.alarm)
    np.testing.assert_allclose(np.concatenate(scores), whole.score, rtol=1e-12)
    assert np.concatenate(alarms).tolist() == whole.alarm.tolist()
    assert len(whole) == len(x) - 3


def test_steps_already_scored_are_skipped_so_a_retry_scores_nothing_twice() -> None:
    x = series(300, spikes=())
    detector = Detector()
    first = detector.update(None, ts(200), x[:200])
    again = detector.update(first.state, ts(300), x)  # the caller re-sends the whole window
    assert again.ts[0] == ts(300)[200] and len(again) == 100


def test_a_spike_alarms_once_with_evidence_and_its_tail_does_not() -> None:
    x = series(spikes=(1500,))
    x[1501:1504] += 35  # the excursion lasts a few steps
    out = Detector().update(None, ts(len(x)), x)
    alarmed = np.flatnonzero(out.alarm)
    assert alarmed.tolist() == [1500]
    evidence = out.evidence(1500)
    assert evidence["component"] == "level" and evidence["direction"] == "above"
    assert evidence["z"] >= DetectorConfig().threshold


def test_no_alarm_during_warm_up_and_none_on_clean_noise() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 5000)
    x[3] = 50  # would be huge, but the series is too young to judge
    out = Detector().update(None, ts(len(x)), x)
    assert not out.alarm[:72].any()
    # Gaussian noise: the alarm rule fires rarely (new highs beyond the threshold).
    assert out.alarm.mean() < 0.01


def test_a_flat_line_that_moves_is_an_anomaly() -> None:
    x = np.full(300, 5.0)
    x[250] = 6.0
    out = Detector().update(None, ts(300), x)
    assert np.flatnonzero(out.alarm).tolist() == [250]


def test_state_stays_within_its_budget_with_the_largest_settings() -> None:
    config = DetectorConfig(window=400, novelty_rows=100)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 3000) * 1e-7 + np.pi * 1e12  # long float reprs
    out = Detector(config).update(None, ts(len(x)), x)
    assert out.state.nbytes() <= STATE_BUDGET_BYTES
    assert len(out.state.values) == 400 and len(out.state.recent_z) == 100


def test_bad_input_and_bad_state_are_refused_clearly() -> None:
    detector = Detector()
    with pytest.raises(ModelInputError, match="increase"):
        detector.update(None, np.array([2, 1]), np.array([1.0, 2.0]))
    with pytest.raises(ModelInputError, match="timestamps for"):
        detector.update(None, np.array([1, 2]), np.array([1.0]))
    with pytest.raises(ModelInputError, match="detector state"):
        DetectorState.from_json('{"values": []}')


def test_settings_override_defaults_and_name_the_bad_key() -> None:
    config = detector_config({"threshold": 4.0}, {"novelty_rows": 12})
    assert (config.threshold, config.novelty_rows, config.window) == (4.0, 12, 72)
    assert config_digest(config) != config_digest(DetectorConfig())
    with pytest.raises(ModelInputError, match="window"):
        detector_config({"window": 1})
    with pytest.raises(ModelInputError, match="thresold"):
        detector_config({"thresold": 3.0})


def test_many_series_at_once_match_each_series_alone() -> None:
    """The cycle scores all series of a target together; that must change no result."""
    detector = Detector()
    rng = np.random.default_rng(7)
    n_series, steps = 40, 200
    data = rng.normal(0, 1, (n_series, steps)).cumsum(axis=1)
    data[3, 150] += 30  # an anomaly in one series
    data[5, 120] = np.nan  # a gap in another
    alone = [detector.update(None, ts(steps), row) for row in data]
    states: list[DetectorState | None] = [None] * n_series
    together: list[list[tuple[float, bool]]] = [[] for _ in range(n_series)]
    # First a history of uneven length (some series are young), then one step per cycle.
    first = 100 + np.arange(n_series) % 7
    outs = detector.update_many(
        states, [ts(steps)[:k] for k in first], [row[:k] for row, k in zip(data, first)]
    )
    for i, out in enumerate(outs):
        states[i] = out.state
        together[i] += list(zip(out.score.tolist(), out.alarm.tolist(), strict=True))
    for step in range(int(first.min()), steps):
        outs = detector.update_many(
            states, [ts(steps)[step : step + 1]] * n_series, list(data[:, step : step + 1])
        )
        for i, out in enumerate(outs):
            states[i] = DetectorState.from_json(out.state.to_json())
            together[i] += list(zip(out.score.tolist(), out.alarm.tolist(), strict=True))
    for i in range(n_series):
        np.testing.assert_allclose([s for s, _ in together[i]], alone[i].score, rtol=1e-12)
        assert [a for _, a in together[i]] == alone[i].alarm.tolist()
    assert alone[3].alarm.any()
