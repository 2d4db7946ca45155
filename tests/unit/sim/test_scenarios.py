"""Labelled scenarios: deterministic per seed, and their labels tell the truth."""

from __future__ import annotations

import numpy as np
import pytest

from sim.scenarios import (
    BREACH_KINDS,
    DAY,
    KINDS,
    NORMAL_KINDS,
    REARM,
    STEP,
    crossings,
    generate,
    sre_threshold,
    suite,
)

SEEDS = range(10)  # development seeds only; the bench evaluates on 100-119


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_gives_the_same_scenario(kind: str) -> None:
    a, b = generate(kind, 3), generate(kind, 3)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert (a.start, a.step, a.threshold, a.crossings) == (
        b.start,
        b.step,
        b.threshold,
        b.crossings,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_other_seeds_give_other_scenarios(kind: str) -> None:
    a, b = generate(kind, 1), generate(kind, 2)
    assert len(a) == len(b)
    assert not np.array_equal(a.values, b.values, equal_nan=True)
    assert a.threshold != b.threshold


def test_kinds_use_separate_random_streams() -> None:
    assert generate("daily", 5).start != generate("gaps", 5).start


@pytest.mark.parametrize("kind", BREACH_KINDS)
def test_breach_kinds_cross_at_the_labelled_index(kind: str) -> None:
    for seed in SEEDS:
        s = generate(kind, seed)
        assert s.breach and s.crossings, s.name
        above = np.nan_to_num(s.values, nan=-np.inf) >= s.threshold
        first = s.crossings[0]
        assert first == int(np.flatnonzero(above)[0]), s.name  # the first index >= threshold
        assert first >= DAY // s.step, f"{s.name}: less than a day of history"
        for c in s.crossings:
            assert above[c], s.name
            assert not above[max(0, c - REARM // s.step) : c].any(), s.name  # a fresh crossing


@pytest.mark.parametrize("kind", NORMAL_KINDS)
def test_normal_kinds_never_reach_their_threshold(kind: str) -> None:
    for seed in SEEDS:
        s = generate(kind, seed)
        assert not s.breach and s.crossings == ()
        assert np.nanmax(s.values) < s.threshold, s.name
        assert s.threshold == sre_threshold(s.values)


def test_the_grid_and_the_gaps() -> None:
    s = generate("gaps", 0)
    assert s.step == STEP and s.start % STEP == 0
    assert len(s) == 3 * DAY // STEP
    assert np.isnan(s.values).sum() > 5  # NaN stretches are kept as gaps
    assert s.history().values.shape == s.values.shape
    assert len(s.history(s.warmup)) == s.warmup
    assert np.diff(s.timestamps).tolist() == [STEP] * (len(s) - 1)


def test_a_restarted_leak_drops_and_leaves_a_scrape_gap() -> None:
    leaks = [generate("memory_leak", seed) for seed in SEEDS]
    restarted = [s for s in leaks if np.isnan(s.values).any()]
    assert restarted, "a leak that restarts is the common case"
    s = restarted[0]
    gap = int(np.flatnonzero(np.isnan(s.values))[-1])
    assert s.values[gap + 1] < 0.8 * s.threshold  # back near the baseline after the restart


def test_suite_is_seed_major_and_other_steps_keep_durations() -> None:
    scenarios = suite([0, 1], ("daily", "memory_leak"))
    assert [s.name for s in scenarios] == ["daily-0", "memory_leak-0", "daily-1", "memory_leak-1"]
    coarse = generate("queue_saturation", 0, step=300)
    assert coarse.step == 300 and len(coarse) == 3 * DAY // 300
    assert coarse.crossings[0] >= DAY // 300


def test_unknown_kind_and_bad_step_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario kind"):
        generate("meteor", 0)
    with pytest.raises(ValueError, match="step"):
        generate("daily", 0, step=7)


def test_crossings_merge_excursions_closer_than_rearm() -> None:
    values = np.zeros(40)
    values[[5, 6, 9, 30]] = 2.0
    values[7] = np.nan
    assert crossings(values, 1.0, rearm=5) == (5, 30)
    assert crossings(values, 1.0, rearm=1) == (5, 9, 30)
    assert crossings(values, 3.0, rearm=5) == ()


def test_sre_threshold_sits_above_every_value_even_when_flat() -> None:
    assert sre_threshold(np.full(100, 45.0)) == pytest.approx(45.0 * 1.05)
    rng = np.random.default_rng(0)
    noisy = 10 + rng.normal(0, 1, 2000)
    assert sre_threshold(noisy) >= noisy.max() + 3.5
