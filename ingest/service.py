"""Ingest service functions: pull a target's new steps, store them, advance its watermark.

Each function takes a `db_session` and leaves committing to the caller (one place commits), so
samples, series, watermark and the run record of a cycle land together or not at all.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.clock import from_epoch, to_epoch
from core.database import dialect_insert, upsert
from core.errors import PrognosError
from core.settings import TargetSettings
from ingest.chunking import aligned_window, merge_series, plan_chunks
from ingest.domain import (
    FloatArray,
    IntArray,
    PullResult,
    SeriesData,
    Source,
    Window,
    query_digest,
)
from ingest.errors import IngestError
from ingest.tables import IngestRunRow, IngestRunTotalRow, SampleRow, SeriesRow, WatermarkRow

log = logging.getLogger(__name__)

ChunkCallback = Callable[[Window, int], None]
# Rows per INSERT statement (multi-row VALUES: a third of the per-row cost of executemany on
# SQLite) at most, within the driver's limit of bound parameters (SQLite's oldest: 999), and rows
# per batch of such statements.
_ROWS_PER_STATEMENT = 2_000
_ROWS_PER_BATCH = 100_000
# PostgreSQL's binary COPY: a header, then per row a field count and length-prefixed fields.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("id_len", ">i4"),
        ("series_id", ">i4"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("value_len", ">i4"),
        ("value", ">f8"),
    ]
)


@dataclass(frozen=True, slots=True)
class IngestSummary:
    target: str
    status: str
    window: Window | None
    series: int = 0
    new_series: int = 0
    points: int = 0
    dropped_non_finite: int = 0
    seconds: float = 0.0
    error: str | None = None


def pull(
    source: Source,
    target: TargetSettings,
    window: Window,
    *,
    on_chunk: ChunkCallback | None = None,
) -> PullResult:
    """Read a whole window in chunks under the source's point limit and join them per series."""
    parts: list[SeriesData] = []
    for chunk in plan_chunks(window, source.max_points_per_request):
        result = source.query_range(target, chunk.start, chunk.end, chunk.step)
        parts.extend(result.series)
        if on_chunk is not None:
            on_chunk(chunk, result.points)
    return PullResult(merge_series(parts))


def next_window(
    db_session: Session,
    *,
    target: TargetSettings,
    now: datetime,
    lag: timedelta,
    max_catchup: timedelta,
) -> Window:
    """The steps not yet stored: from one step after the watermark up to `now - lag`."""
    step = target.step_seconds
    end = to_epoch(now - lag)
    newest = aligned_window(end, end, step).end
    mark = _watermark(db_session, target)
    if mark is None:
        start = newest - int(target.lookback.total_seconds()) + step
    else:
        start = mark + step
        oldest = newest - int(max_catchup.total_seconds()) + step
        if start < oldest:
            log.warning(
                "target %s: %s behind; pulling only the last %s (older steps stay a gap)",
                target.name,
                timedelta(seconds=newest - mark),
                max_catchup,
            )
            start = oldest
    return Window(start, newest, step)


def ingest_target(
    db_session: Session,
    *,
    source: Source,
    target: TargetSettings,
    now: datetime,
    lag: timedelta,
    max_catchup: timedelta,
) -> IngestSummary:
    """One incremental cycle for one target. Raises IngestError; the caller records failures."""
    started = time.perf_counter()
    if _meaning_changed(db_session, target):
        # Samples stored under the old query or step mean something else: drop them rather than
        # splice two meanings into one series. The series identities stay.
        log.warning(
            "target %s: query or step changed; its stored samples are replaced", target.name
        )
        series_ids = sa.select(SeriesRow.id).where(SeriesRow.target == target.name)
        db_session.execute(sa.delete(SampleRow).where(SampleRow.series_id.in_(series_ids)))
        db_session.execute(sa.delete(WatermarkRow).where(WatermarkRow.target == target.name))
    window = next_window(db_session, target=target, now=now, lag=lag, max_catchup=max_catchup)
    if window.points == 0:
        return IngestSummary(target.name, "noop", window)
    result = pull(source, target, window)
    new_series = store(db_session, target=target, series=result.series, seen_at=now)
    _set_watermark(db_session, target, window.end, now)
    summary = IngestSummary(
        target.name,
        "ok",
        window,
        series=len(result.series),
        new_series=new_series,
        points=result.points,
        dropped_non_finite=result.dropped_non_finite,
        seconds=time.perf_counter() - started,
    )
    db_session.add(_run_row(summary, kind="cycle", started_at=now))
    return summary


def record_failure(
    db_session: Session,
    *,
    target: str,
    kind: str,
    window: Window | None,
    error: BaseException,
    started_at: datetime,
) -> IngestSummary:
    """Store a failed run; its message is the typed error's (safe) text, never a traceback."""
    if isinstance(error, PrognosError):
        code, message = error.code, error.message
    else:
        code, message = "internal", f"unexpected {type(error).__name__}; see the service log"
    summary = IngestSummary(target, "failed", window, error=message)
    row = _run_row(summary, kind=kind, started_at=started_at)
    row.error_code = code
    row.error_message = message
    db_session.add(row)
    return summary


def store(
    db_session: Session, *, target: TargetSettings, series: Sequence[SeriesData], seen_at: datetime
) -> int:
    """Upsert series identities and insert their samples; a re-run inserts nothing twice."""
    ids, created = _series_ids(db_session, target, series, seen_at)
    present = [s for s in series if len(s)]
    if not present:
        return created
    series_ids = np.repeat(
        np.array([ids[s.key.digest] for s in present], np.int64), [len(s) for s in present]
    )
    timestamps = np.concatenate([s.timestamps for s in present])
    values = np.concatenate([s.values for s in present])
    connection = db_session.connection()
    # Straight to the driver: SQLAlchemy's per-row parameter handling costs more than the insert.
    if connection.dialect.name == "postgresql":
        _copy_samples(connection, series_ids, timestamps, values)
    else:
        _insert_samples(connection, series_ids, timestamps, values)
    return created


def _insert_samples(
    connection: sa.Connection, series_ids: IntArray, timestamps: IntArray, values: FloatArray
) -> None:
    pyformat = connection.dialect.paramstyle in ("format", "pyformat")
    driver = connection.connection.driver_connection
    limit = 999
    if isinstance(driver, sqlite3.Connection):
        limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per_statement = max(1, min(_ROWS_PER_STATEMENT, limit // 3))
    total = series_ids.shape[0]
    for start in range(0, total, _ROWS_PER_BATCH):
        stop = min(start + _ROWS_PER_BATCH, total)
        flat: list[Any] = [None] * (3 * (stop - start))
        flat[0::3] = series_ids[start:stop].tolist()
        flat[1::3] = timestamps[start:stop].tolist()
        flat[2::3] = values[start:stop].tolist()
        width = 3 * per_statement
        full = len(flat) // width
        if full:
            connection.exec_driver_sql(
                _insert_statement(per_statement, pyformat),
                [tuple(flat[i * width : (i + 1) * width]) for i in range(full)],
            )
        rest = flat[full * width :]
        if rest:
            connection.exec_driver_sql(_insert_statement(len(rest) // 3, pyformat), tuple(rest))


@functools.lru_cache(maxsize=16)
def _insert_statement(rows: int, pyformat: bool) -> str:
    row = "(%s, %s, %s)" if pyformat else "(?, ?, ?)"
    placeholders = ", ".join([row] * rows)  # only placeholders go into the text
    return (
        f"INSERT INTO samples (series_id, ts, value) VALUES {placeholders} "  # noqa: S608
        "ON CONFLICT (series_id, ts) DO NOTHING"
    )


def _copy_samples(
    connection: sa.Connection, series_ids: IntArray, timestamps: IntArray, values: FloatArray
) -> None:
    """PostgreSQL: binary COPY, straight into `samples` when none of these series has a sample
    in this time range yet (an ingest window starts after its watermark), else through a
    temporary table and INSERT ... ON CONFLICT DO NOTHING. A conflict that appears between the
    check and the COPY (another writer) rolls back to a savepoint and takes the second way."""
    rows = np.empty(series_ids.shape[0], _COPY_ROW)
    rows["fields"], rows["id_len"], rows["ts_len"], rows["value_len"] = 3, 4, 8, 8
    rows["series_id"], rows["ts"], rows["value"] = series_ids, timestamps, values
    data = _COPY_HEADER + rows.tobytes() + _COPY_TRAILER
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM samples WHERE series_id = ANY(%s) AND ts BETWEEN %s AND %s LIMIT 1",
            (np.unique(series_ids).tolist(), int(timestamps.min()), int(timestamps.max())),
        )
        if cursor.fetchone() is None:
            try:
                with driver.transaction(), cursor.copy(_COPY_SAMPLES) as copy:
                    copy.write(data)
                return
            except _unique_violation():
                pass
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS prognos_samples_in "
            "(series_id integer, ts bigint, value double precision) ON COMMIT DROP"
        )
        with cursor.copy(
            "COPY prognos_samples_in (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(data)
        cursor.execute(
            "INSERT INTO samples (series_id, ts, value) "
            "SELECT series_id, ts, value FROM prognos_samples_in "
            "ON CONFLICT (series_id, ts) DO NOTHING"
        )
        cursor.execute("DROP TABLE prognos_samples_in")


_COPY_SAMPLES = "COPY samples (series_id, ts, value) FROM STDIN (FORMAT BINARY)"


def _unique_violation() -> type[Exception]:
    from psycopg.errors import UniqueViolation

    return UniqueViolation


def _series_ids(
    db_session: Session, target: TargetSettings, series: Sequence[SeriesData], seen_at: datetime
) -> tuple[dict[str, int], int]:
    """Each series' id (created if new) with its `last_seen` moved to `seen_at`, and how many
    were created. `samples` has no foreign key (migration 0014), so this is what keeps every
    sample attached to a stored series: a series the idle-series prune deleted after its id was
    read here (another process, e.g. `prognos ingest --once` beside the daemon) is found by its
    row not being updated, and created again, so its samples go to the new row."""
    digests = [s.key.digest for s in series]
    wanted = set(digests)
    existing = _ids_for(db_session, digests)
    created = 0
    for _ in range(3):
        missing = [s for s in series if s.key.digest not in existing]
        if missing:
            # ON CONFLICT keeps a second process that found the same new series harmless.
            upsert(
                db_session,
                SeriesRow.__table__,
                [
                    {
                        "target": target.name,
                        "key": s.key.digest,
                        "labels": s.key.label_dict,
                        "service": s.key.service(target.service_label),
                        "first_seen": seen_at,
                        "last_seen": seen_at,
                    }
                    for s in missing
                ],
                key=("key",),
            )
            existing.update(_ids_for(db_session, [s.key.digest for s in missing]))
            created += len(missing)
        # The update waits for a concurrent delete of one of these rows and then skips it: a
        # row count short of the ids means some went since they were read; read them again.
        if _touch(db_session, sorted({existing[d] for d in wanted}), seen_at) == len(wanted):
            return existing, created
        existing = _ids_for(db_session, digests)
    raise IngestError(
        f"target {target.name}: series kept being deleted while this run stored them; "
        "the next cycle stores the same window again"
    )


def _touch(db_session: Session, ids: Sequence[int], seen_at: datetime) -> int:
    """Set `last_seen` of the series `ids`; how many rows there were to update."""
    updated = 0
    for start in range(0, len(ids), 1000):
        result = db_session.execute(
            sa.update(SeriesRow)
            .where(SeriesRow.id.in_(ids[start : start + 1000]))
            .values(last_seen=seen_at)
        )
        updated += int(getattr(result, "rowcount", 0) or 0)
    return updated


def _ids_for(db_session: Session, digests: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(digests), 1000):
        rows = db_session.execute(
            sa.select(SeriesRow.key, SeriesRow.id).where(
                SeriesRow.key.in_(digests[start : start + 1000])
            )
        )
        found.update({key: id_ for key, id_ in rows})
    return found


def _meaning_changed(db_session: Session, target: TargetSettings) -> bool:
    row = db_session.get(WatermarkRow, target.name)
    return row is not None and (
        row.query_digest != query_digest(target) or row.step != target.step_seconds
    )


def _watermark(db_session: Session, target: TargetSettings) -> int | None:
    row = db_session.get(WatermarkRow, target.name)
    if row is None or _meaning_changed(db_session, target):
        return None  # a changed target starts afresh from its lookback
    return row.watermark


def _set_watermark(db_session: Session, target: TargetSettings, mark: int, now: datetime) -> None:
    row = db_session.get(WatermarkRow, target.name)
    if row is None:
        row = WatermarkRow(target=target.name)
        db_session.add(row)
    row.query_digest = query_digest(target)
    row.step = target.step_seconds
    row.watermark = mark
    row.updated_at = now


def _run_row(summary: IngestSummary, *, kind: str, started_at: datetime) -> IngestRunRow:
    window = summary.window
    return IngestRunRow(
        target=summary.target,
        kind=kind,
        status=summary.status,
        started_at=started_at,
        finished_at=started_at + timedelta(seconds=summary.seconds),
        window_start=window.start if window else None,
        window_end=window.end if window else None,
        series_count=summary.series,
        new_series=summary.new_series,
        points=summary.points,
        dropped_non_finite=summary.dropped_non_finite,
    )


def prune(db_session: Session, *, now: datetime, retention: timedelta) -> int:
    """Drop samples older than the retention window; returns how many rows went."""
    cutoff = to_epoch(now - retention)
    result = db_session.execute(sa.delete(SampleRow).where(SampleRow.ts < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def read_samples(
    db_session: Session, *, series_id: int, start: int | None = None, end: int | None = None
) -> list[tuple[int, float]]:
    query = sa.select(SampleRow.ts, SampleRow.value).where(SampleRow.series_id == series_id)
    if start is not None:
        query = query.where(SampleRow.ts >= start)
    if end is not None:
        query = query.where(SampleRow.ts <= end)
    return [(int(ts), float(v)) for ts, v in db_session.execute(query.order_by(SampleRow.ts))]


def latest_runs(
    db_session: Session, *, target: str | None = None, limit: int = 50
) -> list[IngestRunRow]:
    query = sa.select(IngestRunRow).order_by(IngestRunRow.id.desc()).limit(limit)
    if target is not None:
        query = query.where(IngestRunRow.target == target)
    return list(db_session.scalars(query))


def watermark_time(db_session: Session, target: str) -> datetime | None:
    row = db_session.get(WatermarkRow, target)
    return from_epoch(row.watermark) if row else None


# -- retention -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """A column of another table that names rows of a pruned one, so those rows stay: a plain
    id column (`column`), or a JSON column and the path to the id inside it (`path`, e.g.
    proposals' evidence at ("incident_id",)). The higher domain passes it in; the lower one
    never imports the higher one's tables."""

    column: Any
    path: tuple[str, ...] = ()


def unreferenced(id_column: Any, references: Sequence[Reference]) -> list[sa.ColumnElement[bool]]:
    """Conditions that hold for the ids of `id_column` that none of `references` names."""
    conditions: list[sa.ColumnElement[bool]] = []
    for ref in references:
        if not ref.path:
            conditions.append(~sa.exists().where(ref.column == id_column))
            continue
        # A JSON id compares as text (a number or a numeric string both name the row); SQL's
        # NOT IN with a NULL in the list holds for nothing, so NULLs are left out.
        named = sa.cast(ref.column[ref.path].as_string(), sa.String)
        conditions.append(
            sa.cast(id_column, sa.String).not_in(sa.select(named).where(named.is_not(None)))
        )
    return conditions


def delete_selected(db_session: Session, id_column: Any, doomed: sa.Select[Any]) -> int:
    """Delete the rows whose `id_column` the (limited) query `doomed` selects; how many went."""
    ids = list(db_session.scalars(doomed))
    if not ids:
        return 0
    result = db_session.execute(sa.delete(id_column.table).where(id_column.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def prune_runs(db_session: Session, *, before: datetime, limit: int) -> int:
    """Delete at most `limit` ingest runs that started before `before`, never the
    newest run of a target (what the page and the CLI show as its last cycle). Returns how many
    went; fewer than `limit` means nothing older is left."""
    newest = sa.select(sa.func.max(IngestRunRow.id)).group_by(IngestRunRow.target)
    doomed = (
        sa.select(IngestRunRow.id)
        .where(IngestRunRow.started_at < before, IngestRunRow.id.not_in(newest))
        .order_by(IngestRunRow.id)
        .limit(limit)
    )
    ids = list(db_session.scalars(doomed))
    if not ids:
        return 0
    # What they counted goes into the totals first, in the same transaction: the counters
    # /metrics shows (totals + stored runs) never go down.
    counted = db_session.execute(
        sa.select(
            IngestRunRow.target,
            IngestRunRow.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(IngestRunRow.points), 0),
        )
        .where(IngestRunRow.id.in_(ids))
        .group_by(IngestRunRow.target, IngestRunRow.status)
    ).all()
    insert = dialect_insert(db_session, IngestRunTotalRow.__table__)
    for target, status, runs, points in counted:
        db_session.execute(
            insert.values(
                target=target, status=status, runs=runs, points=points
            ).on_conflict_do_update(
                index_elements=["target", "status"],
                set_={
                    "runs": IngestRunTotalRow.runs + runs,
                    "points": IngestRunTotalRow.points + points,
                },
            )
        )
    return delete_selected(
        db_session, IngestRunRow.id, sa.select(IngestRunRow.id).where(IngestRunRow.id.in_(ids))
    )


def prune_series(
    db_session: Session,
    *,
    before: datetime,
    keep: Sequence[Reference] = (),
    limit: int,
) -> int:
    """Forget at most `limit` series last seen before `before`, with no sample left and named
    by none of `keep` (the callers pass what still reads them: scores, feedback, proposals). Their
    one-row-per-series children (forecast, breach, detector state) go with them by ON DELETE
    CASCADE: a series gone that long has nothing current in them. Returns how many went."""
    has_samples = sa.exists().where(SampleRow.series_id == SeriesRow.id)
    idle = (SeriesRow.last_seen < before, ~has_samples)
    doomed = (
        sa.select(SeriesRow.id)
        .where(*idle, *unreferenced(SeriesRow.id, keep))
        .order_by(SeriesRow.id)
        .limit(limit)
    )
    ids = list(db_session.scalars(doomed))
    if not ids:
        return 0
    # The delete checks again that each is idle: an ingest run that saw one of them meanwhile
    # has moved its last_seen (PostgreSQL re-checks a row a concurrent update changed), and a
    # series with samples again is never deleted, its samples are not orphaned.
    result = db_session.execute(sa.delete(SeriesRow).where(SeriesRow.id.in_(ids), *idle))
    return int(getattr(result, "rowcount", 0) or 0)
