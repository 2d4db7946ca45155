"""Components the dev protocol measured and did not adopt still do what they claim."""

from __future__ import annotations

import numpy as np

from models.detector import Detector, DetectorConfig
from models.evaluation.candidates import new_highs, phase_memory

STEP = 300
T0 = 1_767_225_600  # midnight UTC
DAY_ROWS = 86400 // STEP


def test_pattern_memory_discounts_a_burst_that_recurs_at_the_same_time_of_day() -> None:
    n = 4 * DAY_ROWS
    x = np.random.default_rng(2).normal(0, 1, n)
    daily = [d * DAY_ROWS + 120 for d in range(1, 4)]  # 10:00 every day from day 2
    once = 2 * DAY_ROWS + 200  # 16:40 on day 3 only
    x[daily] += 12
    x[once] += 12
    out = Detector(DetectorConfig(fatigue_gain=0)).update(None, T0 + STEP * np.arange(n), x)
    score = phase_memory(out, tolerance=1.5)  # the same burst: z varies a little by day
    assert score[daily[0]] == out.score[daily[0]]  # the first time is news
    assert (score[daily[1:]] < 0.6 * out.score[daily[1:]]).all()  # then it is known
    assert score[once] == out.score[once]  # another time of day stays news


def test_new_highs_are_above_every_one_of_the_previous_rows() -> None:
    z = np.array([1.0, 3.0, 2.0, 2.5, 4.0, 4.0])
    assert new_highs(z, rows=2).tolist() == [True, True, False, False, True, False]
