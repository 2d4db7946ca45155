"""A shard worker's recent windows: a ring buffer of each owned series' newest `length` steps,
kept in memory between cycles so that a cycle reads from the database only the samples newer
than the buffer's end, not every series' whole context window again.

The database stays the checkpoint: the buffer only caches stored samples. A fresh or restarted
worker, a shard new to the worker, a change of the target's query or step, a model with another
context length, a watermark that went back or jumped past the whole window: each fills the
buffer (those shards of it) from the database again, so the windows handed to the forecast are
the ones `models.service` would read itself, row for row. This relies on what ingest
guarantees: samples at or before a target's watermark are never written again (ingest inserts
only steps after it, in the transaction that advances it, and replaces a target's samples only
when its query or step changes, which changes the watermark's digest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.database import fetch_tuples
from ingest.tables import SampleRow, SeriesRow, WatermarkRow
from prognos.engine.shards import series_filter

Windows = tuple[list[int], np.ndarray]


@dataclass
class WindowBuffer:
    """The windows of one target's series in the shards a worker owns, all ending at `end`:
    row i of `values` is series `ids[i]` (ascending) from `end - (length - 1) * step` to `end`,
    NaN where nothing is stored, and `last[i]` its newest sample's time. Memory: `length` x
    series x 8 bytes, plus 18 bytes a series."""

    target: str = ""
    meaning: tuple[str, int, int] = ("", 0, 0)  #: (query digest, step, length)
    end: int = 0
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    shard: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    last: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    filled: set[int] = field(default_factory=set)  #: shards whose series the buffer holds
    rows_read: int = 0  #: samples read from the database, in total

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.ids.nbytes + self.shard.nbytes + self.last.nbytes)

    def windows(
        self,
        db_session: Session,
        *,
        target: str,
        shards: Sequence[int],
        owned: Sequence[int],
        end: int,
        length: int,
    ) -> Windows:
        """The windows ending at `end` of the series of `shards` (some of the worker's `owned`
        shards) seen in that span, as `models.service._windows` reads them."""
        mark = db_session.get(WatermarkRow, target)
        if mark is None:  # nothing stored: the caller does not ask (its cycle is a no-op)
            return [], np.empty((0, length))
        step = int(mark.step)
        meaning = (mark.query_digest, step, length)
        if (
            target != self.target
            or meaning != self.meaning
            or end < self.end
            or end - self.end >= length * step
            or (end - self.end) % step
        ):
            self._reset(target, meaning, end)
        self._keep(set(owned))
        if end > self.end:
            self._advance(db_session, end, step)
        missing = sorted(set(shards) - self.filled)
        if missing:
            self._fill(db_session, missing, step)
        rows = np.isin(self.shard, np.asarray(sorted(set(shards)), dtype=np.int16))
        return [int(i) for i in self.ids[rows]], self.values[rows]  # a copy: rows is a mask

    def _reset(self, target: str, meaning: tuple[str, int, int], end: int) -> None:
        self.target, self.meaning, self.end = target, meaning, end
        self.ids = np.empty(0, np.int64)
        self.shard = np.empty(0, np.int16)
        self.last = np.empty(0, np.int64)
        self.values = np.empty((0, meaning[2]))
        self.filled = set()

    def _keep(self, owned: set[int]) -> None:
        """Forget the shards the worker no longer owns (taken again later, they are refilled)."""
        if self.filled <= owned:
            return
        self.filled &= owned
        self._select(np.isin(self.shard, np.asarray(sorted(owned), dtype=np.int16)))

    def _select(self, rows: np.ndarray) -> None:
        self.ids, self.shard, self.last = self.ids[rows], self.shard[rows], self.last[rows]
        self.values = self.values[rows]

    def _advance(self, db_session: Session, end: int, step: int) -> None:
        """Shift every window to `end` and write in the samples after the old end: one query
        over the filled shards. Series no longer seen in the window are dropped."""
        # Read first: a failed read leaves the buffer as it was, at its old end.
        rows = self._read(db_session, sorted(self.filled), self.end, end) if self.filled else []
        shift = (end - self.end) // step
        length = self.values.shape[1]
        values = np.full_like(self.values, np.nan)
        values[:, : length - shift] = self.values[:, shift:]
        self.end, self.values = end, values
        self._merge(rows, step)
        self._select(self.last >= end - (length - 1) * step)

    def _fill(self, db_session: Session, shards: list[int], step: int) -> None:
        """Read the whole windows of `shards`' series (the buffer holds none of them)."""
        length = self.values.shape[1]
        start = self.end - (length - 1) * step
        self._merge(self._read(db_session, shards, start - 1, self.end), step)
        self.filled.update(shards)

    def _read(
        self, db_session: Session, shards: list[int], after: int, end: int
    ) -> list[tuple[int, str, int, float]]:
        query = (
            sa.select(
                SampleRow.series_id,
                sa.func.substr(SeriesRow.key, 1, 2),
                SampleRow.ts,
                SampleRow.value,
            )
            .join(SeriesRow, SeriesRow.id == SampleRow.series_id)
            .where(SeriesRow.target == self.target, SampleRow.ts > after, SampleRow.ts <= end)
        )
        condition = series_filter(shards)
        if condition is not None:
            query = query.where(condition)
        rows = fetch_tuples(db_session, query)
        self.rows_read += len(rows)
        return rows

    def _merge(self, rows: list[tuple[int, str, int, float]], step: int) -> None:
        """Write samples into their series' rows, adding the series the buffer lacks."""
        if not rows:
            return
        series_col, head_col, ts_col, value_col = zip(*rows, strict=True)
        series = np.asarray(series_col, dtype=np.int64)
        new, first = np.unique(series, return_index=True)
        fresh = ~np.isin(new, self.ids)
        if fresh.any():
            heads = [int(head_col[i], 16) for i in first[fresh]]
            ids = np.concatenate([self.ids, new[fresh]])
            order = np.argsort(ids, kind="stable")
            blank = np.full((int(fresh.sum()), self.values.shape[1]), np.nan)
            self.ids = ids[order]
            self.shard = np.concatenate([self.shard, np.asarray(heads, np.int16)])[order]
            self.last = np.concatenate([self.last, np.full(len(heads), np.iinfo(np.int64).min)])[
                order
            ]
            self.values = np.concatenate([self.values, blank])[order]
        length = self.values.shape[1]
        start = self.end - (length - 1) * step
        row = np.searchsorted(self.ids, series)
        ts = np.asarray(ts_col, dtype=np.int64)
        self.values[row, (ts - start) // step] = np.asarray(value_col, dtype=np.float64)
        np.maximum.at(self.last, row, ts)
