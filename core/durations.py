"""Prometheus-style durations ("90s", "5m", "1h30m", "7d") parsed into whole seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


_MAX_SECONDS = 100 * 365 * 86_400  # a century: anything longer is a typo


def parse_duration(value: object) -> timedelta:
    """Accept a timedelta, a number of seconds or a Prometheus duration string."""
    delta = _parse(value)
    if delta.total_seconds() > _MAX_SECONDS:
        raise ValueError(f"duration {value!r} is too large (at most 100 years)")
    return delta


def _parse(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60s, 5m or 1h")
    if isinstance(value, int | float):
        if value != value or value < 0:  # NaN or negative
            raise ValueError("a duration cannot be negative or NaN")
        if value > _MAX_SECONDS:
            raise ValueError(f"duration {value!r} is too large (at most 100 years)")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 60s, 5m or 1h")
    text = value.strip()
    if text.isdigit():
        return _parse(int(text))
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
        if total > _MAX_SECONDS:
            raise ValueError(f"duration {value!r} is too large (at most 100 years)")
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use e.g. 60s, 5m, 1h30m or 7d")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """The shortest Prometheus-style spelling of a whole number of seconds."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
