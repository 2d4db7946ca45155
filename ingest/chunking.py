"""Step alignment and splitting long ranges into requests under Prometheus' point limit.

Prometheus refuses a range query whose (end - start) / step exceeds 11,000; each chunk here
holds at most `max_points` aligned timestamps and chunks neither overlap nor leave holes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from ingest.domain import SeriesData, SeriesKey, Window

PROMETHEUS_MAX_POINTS = 11_000


def align_down(ts: int, step: int) -> int:
    return ts - (ts % step)


def align_up(ts: int, step: int) -> int:
    return -((-ts) // step) * step


def aligned_window(start: int, end: int, step: int) -> Window:
    """The step-grid timestamps inside [start, end] (epoch-aligned, as Prometheus steps are)."""
    return Window(align_up(start, step), align_down(end, step), step)


def plan_chunks(window: Window, max_points: int) -> list[Window]:
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    chunks = []
    span = (max_points - 1) * window.step
    start = window.start
    while start <= window.end:
        end = min(start + span, window.end)
        chunks.append(Window(start, end, window.step))
        start = end + window.step
    return chunks


def merge_series(parts: Iterable[SeriesData]) -> list[SeriesData]:
    """Join one series' pieces from consecutive chunks; a series may be absent from some chunks."""
    by_key: dict[SeriesKey, list[SeriesData]] = {}
    for part in parts:
        by_key.setdefault(part.key, []).append(part)
    merged = []
    for key, pieces in by_key.items():
        if len(pieces) == 1:
            merged.append(pieces[0])
            continue
        ts = np.concatenate([p.timestamps for p in pieces])
        values = np.concatenate([p.values for p in pieces])
        filled = [p for p in pieces if len(p)]
        if all(a.timestamps[-1] < b.timestamps[0] for a, b in itertools.pairwise(filled)):
            # consecutive chunks in order: nothing to sort or drop
            merged.append(
                SeriesData(
                    key, ts, values, dropped_non_finite=sum(p.dropped_non_finite for p in pieces)
                )
            )
            continue
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        keep = np.ones(ts.shape[0], dtype=bool)
        keep[1:] = ts[1:] != ts[:-1]
        merged.append(
            SeriesData(
                key,
                ts[keep],
                values[keep],
                dropped_non_finite=sum(p.dropped_non_finite for p in pieces),
            )
        )
    return merged
