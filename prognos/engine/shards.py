"""Virtual shards: every series belongs to one of `SHARDS` shards, decided by the first byte of
its identity's digest (`SeriesRow.key`, sha256 of the target and sorted labels), so the same
series lands in the same shard in every process, on every machine, across restarts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.database import fetch_tuples
from ingest.tables import SeriesRow

#: Virtual shards. A shard is the series whose key starts with one byte (two hex digits), so a
#: run of consecutive shards is one range of keys, which the database reads by its index.
SHARDS = 256


def shard_of(key: str) -> int:
    """The shard of a series from its stored key (a lowercase hex digest)."""
    return int(key[:2], 16)


def runs(shards: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive shards as half-open ranges [first, last + 1)."""
    ordered = sorted(set(shards))
    out: list[tuple[int, int]] = []
    for _, group in itertools.groupby(enumerate(ordered), key=lambda p: p[1] - p[0]):
        members = [s for _, s in group]
        out.append((members[0], members[-1] + 1))
    return out


def series_filter(shards: Iterable[int]) -> sa.ColumnElement[bool] | None:
    """The condition on `SeriesRow` that selects the series of `shards` (None: every shard, no
    condition at all). Keys are lowercase hex of one length, so ranges of their first byte are
    ranges of the strings in any collation that orders 0-9 before a-f."""
    ranges = runs(shards)
    if ranges == [(0, SHARDS)]:
        return None
    parts: list[sa.ColumnElement[bool]] = []
    for first, stop in ranges:
        low = SeriesRow.key >= f"{first:02x}"
        parts.append(low if stop == SHARDS else sa.and_(low, SeriesRow.key < f"{stop:02x}"))
    return sa.or_(*parts) if parts else sa.false()


def assign(workers: int, *, shards: int = SHARDS) -> list[list[int]]:
    """Shards split among `workers` into contiguous blocks as even as they go."""
    if workers < 1:
        raise ValueError("at least one worker")
    bounds = [round(i * shards / workers) for i in range(workers + 1)]
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds)]


def shard_counts(db_session: Session, *, target: str) -> dict[int, int]:
    """Series of `target` per shard (shards without any are absent)."""
    head = sa.func.substr(SeriesRow.key, 1, 2)
    rows = fetch_tuples(
        db_session,
        sa.select(head, sa.func.count()).where(SeriesRow.target == target).group_by(head),
    )
    return {int(prefix, 16): int(count) for prefix, count in rows}


def batches(shards: Sequence[int], counts: dict[int, int], *, limit: int) -> list[list[int]]:
    """`shards` in order, cut into consecutive groups of at most `limit` series each (a shard
    larger than `limit` is a group of its own): what one transaction of a worker takes."""
    out: list[list[int]] = []
    current: list[int] = []
    size = 0
    for shard in sorted(shards):
        n = counts.get(shard, 0)
        if current and size + n > limit:
            out.append(current)
            current, size = [], 0
        current.append(shard)
        size += n
    if current:
        out.append(current)
    return out
