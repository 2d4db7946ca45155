"""The one detector: incremental, bounded, and the same whether fed at once or a step at a time."""

from __future__ import annotations

import json

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


#: Settings under which every component acts within a short test series: the spatial rule
#: after 50 values and with a shrinking range, fatigue from the first excursion.
BUSY = DetectorConfig(spatial_warmup_rows=50, spatial_halflife_s=3600, fatigue_free=0.0)


@pytest.mark.parametrize(("seed", "config"), [(0, None), (1, None), (2, BUSY), (3, BUSY)])
def test_any_split_into_calls_gives_the_same_scores_and_alarms(
    seed: int, config: DetectorConfig | None
) -> None:
    x = series(seed=seed, spikes=(300, 1500))
    x[900] += 100  # beyond any range seen
    x[[100, 700, 701]] = np.nan  # gaps are skipped, whichever call they fall in
    detector = Detector(config)
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
    assert whole.spatial.any() and (whole.fatigue > 1).any()  # both components were exercised


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


@pytest.mark.parametrize("config", [None, BUSY])
def test_many_series_at_once_match_each_series_alone(config: DetectorConfig | None) -> None:
    """The cycle scores all series of a target together; that must change no result."""
    detector = Detector(config)
    rng = np.random.default_rng(7)
    n_series, steps = 40, 200
    data = rng.normal(0, 1, (n_series, steps)).cumsum(axis=1)
    data[3, 150] += 30  # an anomaly in one series
    data[:, 170:] += 40 * (np.arange(n_series) % 3 == 0)[:, None]  # a level beyond the range
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
    if config is BUSY:
        assert any(out.spatial.any() for out in alone)
        assert any((out.fatigue > 1).any() for out in alone)


def test_a_burst_that_keeps_recurring_stops_alarming_and_a_quiet_day_restores_it() -> None:
    """Fatigue: after a few alarms within hours, the same excursion no longer alarms; half a day
    without one, it alarms again. Without fatigue every burst alarms."""
    n = 3000
    x = np.random.default_rng(3).normal(0, 1, n)
    bursts = [*range(300, 600, 30), 2500]  # every 30 min for 5 h, then once a day later
    x[bursts] += 8
    with_fatigue = Detector().update(None, ts(n), x)
    without = Detector(DetectorConfig(fatigue_gain=0)).update(None, ts(n), x)
    assert without.alarm[bursts].all()
    fired = with_fatigue.alarm[bursts]
    assert fired[:2].all() and not fired[4:-1].any() and fired[-1]
    assert with_fatigue.evidence(bursts[4])["fatigue"] > 1


def test_a_value_beyond_the_range_seen_so_far_alarms_as_spatial() -> None:
    """HTM's spatial rule: beyond the range by 5 % of it alarms, though the level rule's z
    (wide noise) stays under its threshold; with the rule off it does not alarm."""
    n = 600
    x = np.random.default_rng(4).uniform(0, 10, n)
    x[500] = 10.8  # 8 % beyond the range [0, 10]
    on = Detector().update(None, ts(n), x)
    off = Detector(DetectorConfig(spatial_margin=0)).update(None, ts(n), x)
    assert on.raw[500] < DetectorConfig().threshold
    assert on.alarm[500] and not off.alarm[500]
    evidence = on.evidence(500)
    assert evidence["component"] == "spatial"
    assert evidence["range"][1] < 10.0 <= evidence["range"][1] * 1.01 and evidence["range"][0] > 0
    assert not on.alarm[: DetectorConfig().spatial_warmup_rows].any()  # the rule waits


def test_a_state_of_the_previous_format_resumes() -> None:
    x = series(400, spikes=())
    out = Detector().update(None, ts(400), x)
    old = json.loads(out.state.to_json())
    for key in ("fatigue", "low", "high"):
        del old[key]
    old["format"] = 1
    state = DetectorState.from_json(json.dumps(old))
    assert state.fatigue == 0.0
    assert (state.low, state.high) == (float(state.values.min()), float(state.values.max()))
    assert len(Detector().update(state, ts(401)[-1:], x[-1:] + 1)) == 1
