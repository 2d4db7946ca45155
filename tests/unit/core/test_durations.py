"""Durations as users write them in the config: 60s, 5m, 1h30m, 7d, or plain seconds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60),
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1y", 365 * 86400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("500ms", 0.5),
        ("  5m ", 300),
        ("120", 120),
        ("0", 0),
    ],
)
def test_prometheus_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("value", "seconds"), [(60, 60), (0, 0), (1.5, 1.5)])
def test_numbers_are_seconds(value: float, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


def test_timedelta_passes_through() -> None:
    assert parse_duration(timedelta(minutes=3)) == timedelta(minutes=3)


@pytest.mark.parametrize(
    "bad", ["", "   ", "abc", "5x", "1.5h", "-5m", "5 m", "m5", "1h30", "5M", "h"]
)
def test_bad_strings_are_refused_with_an_example(bad: str) -> None:
    with pytest.raises(ValueError, match=r"60s, 5m"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [-1, -0.5, True, False, None, [60], {"s": 60}])
def test_negative_numbers_and_other_types_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (60, "1m"), (90, "1m30s"), (5400, "1h30m"), (7 * 86400, "7d"), (86461, "1d1m1s")],
)
def test_format_is_the_shortest_spelling_and_round_trips(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    assert parse_duration(text) == timedelta(seconds=seconds)
