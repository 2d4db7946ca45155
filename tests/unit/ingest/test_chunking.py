"""Long ranges split under Prometheus' point limit: every step read once, no chunk too big."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ingest.chunking import (
    PROMETHEUS_MAX_POINTS,
    align_down,
    align_up,
    aligned_window,
    merge_series,
    plan_chunks,
)
from ingest.domain import SeriesData, SeriesKey, Window


@pytest.mark.parametrize(
    ("ts", "step", "down", "up"),
    [
        (0, 60, 0, 0),
        (59, 60, 0, 60),
        (60, 60, 60, 60),
        (61, 60, 60, 120),
        (1_736_726_401, 60, 1_736_726_400, 1_736_726_460),
        (1_736_726_400, 86_400, 1_736_726_400, 1_736_726_400),
        (7, 1, 7, 7),
        (-30, 60, -60, 0),
    ],
)
def test_align(ts: int, step: int, down: int, up: int) -> None:
    assert align_down(ts, step) == down
    assert align_up(ts, step) == up
    assert align_down(ts, step) % step == 0 and align_up(ts, step) % step == 0


def test_aligned_window_keeps_only_grid_points_inside() -> None:
    window = aligned_window(1001, 1299, 60)
    assert (window.start, window.end, window.step) == (1020, 1260, 60)
    assert window.points == 5
    assert aligned_window(1001, 1019, 60).points == 0  # no grid point inside


def grid(window: Window) -> list[int]:
    return list(range(window.start, window.end + 1, window.step)) if window.points else []


STARTS = [0, 1, 59, 1_736_726_400, 1_736_726_437]
SPANS = [0, 1, 59, 60, 61, 3_599, 86_400, 7 * 86_400 + 13]
STEPS = [1, 15, 60, 300, 3600]
MAX_POINTS = [1, 2, 3, 7, 100, 1_440, PROMETHEUS_MAX_POINTS]


def test_chunks_cover_every_aligned_timestamp_exactly_once() -> None:
    cases = 0
    for start, span, step, max_points in itertools.product(STARTS, SPANS, STEPS, MAX_POINTS):
        window = aligned_window(start, start + span, step)
        if window.points > 5_000 * max_points:
            continue  # keep the loop fast: a week of 1 s steps in 1-point chunks adds nothing
        chunks = plan_chunks(window, max_points)
        context = f"start={start} span={span} step={step} max={max_points}"
        if window.points == 0:
            assert chunks == [], context
            continue
        # Contiguous and disjoint: first starts at the window, each next one a step later.
        assert chunks[0].start == window.start, context
        assert chunks[-1].end == window.end, context
        for before, after in itertools.pairwise(chunks):
            assert after.start == before.end + step, context
        assert all(1 <= c.points <= max_points for c in chunks), context
        assert all(c.step == step and c.start % step == 0 for c in chunks), context
        assert sum(c.points for c in chunks) == window.points, context
        # No wasted requests: only the last chunk may be short.
        assert len(chunks) == -(-window.points // max_points), context
        if window.points <= 2_000:  # spell it out on the smaller cases
            assert [ts for c in chunks for ts in grid(c)] == grid(window), context
        cases += 1
    assert cases > 1000


def test_an_empty_window_needs_no_request() -> None:
    assert plan_chunks(Window(120, 60, 60), 100) == []


def test_max_points_must_be_positive() -> None:
    with pytest.raises(ValueError):
        plan_chunks(Window(0, 600, 60), 0)


def series(key: SeriesKey, ts: list[int], values: list[float], dropped: int = 0) -> SeriesData:
    return SeriesData(
        key, np.array(ts, dtype=np.int64), np.array(values, dtype=np.float64), dropped
    )


def test_merge_series_joins_pieces_in_time_order_without_duplicates() -> None:
    a = SeriesKey.of("cpu", {"service": "checkout"})
    b = SeriesKey.of("cpu", {"service": "cart"})
    merged = merge_series(
        [
            series(a, [180, 240], [3.0, 4.0], dropped=1),
            series(b, [60], [10.0]),
            series(a, [0, 60, 120, 180], [0.0, 1.0, 2.0, 3.0], dropped=2),
        ]
    )
    by_key = {s.key: s for s in merged}
    assert set(by_key) == {a, b}
    assert by_key[a].timestamps.tolist() == [0, 60, 120, 180, 240]
    assert by_key[a].values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert by_key[a].dropped_non_finite == 3
    assert by_key[b].timestamps.tolist() == [60]


def test_merge_series_keeps_series_absent_from_some_chunks() -> None:
    early = SeriesKey.of("q", {"queue": "q3"})
    late = SeriesKey.of("q", {"queue": "q2"})
    merged = merge_series([series(early, [0], [1.0]), series(late, [600], [2.0])])
    assert {s.key for s in merged} == {early, late}


def test_series_key_identity_ignores_label_order() -> None:
    one = SeriesKey.of("cpu", {"service": "a", "pod": "p"})
    two = SeriesKey.of("cpu", {"pod": "p", "service": "a"})
    assert one == two and one.digest == two.digest
    assert SeriesKey.of("mem", {"service": "a", "pod": "p"}).digest != one.digest
    assert str(one) == 'cpu{pod="p",service="a"}'
    assert one.service("service") == "a"


def test_merge_series_in_order_pieces_are_joined_and_an_empty_one_hides_no_disorder() -> None:
    a = SeriesKey.of("cpu", {"service": "checkout"})
    in_order = merge_series([series(a, [0, 60], [0.0, 1.0]), series(a, [120], [2.0])])
    assert in_order[0].timestamps.tolist() == [0, 60, 120]
    shuffled = merge_series(
        [series(a, [120, 180], [2.0, 3.0]), series(a, [], []), series(a, [0, 60], [0.0, 1.0])]
    )
    assert shuffled[0].timestamps.tolist() == [0, 60, 120, 180]
    assert shuffled[0].values.tolist() == [0.0, 1.0, 2.0, 3.0]
