"""Tables owned by ingest: series identities, their samples, per-target watermarks and runs."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime


class SeriesRow(Base):
    """One series = a target plus the exact label set Prometheus returned for it."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(sa.String(128), index=True)
    key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    labels: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    service: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)


class SampleRow(Base):
    """A stored point; absent rows are gaps. `ts` is epoch seconds (UTC), aligned to the step."""

    __tablename__ = "samples"
    # On SQLite the primary key is the storage order: ~10% faster inserts, ~40% less disk.
    __table_args__ = {"sqlite_with_rowid": False}

    # No foreign key to series: PostgreSQL's per-row check of it made the binary COPY of
    # samples 5x slower (migration 0014). ingest.service keeps every sample's series: a run
    # writes its series first (re-creating one deleted meanwhile), and the idle-series prune
    # deletes only a series with no sample, checked again in its DELETE.
    series_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(sa.Float(precision=53))


class WatermarkRow(Base):
    """The last step of a target that is fully stored; the next cycle starts one step later."""

    __tablename__ = "ingest_watermarks"

    target: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    query_digest: Mapped[str] = mapped_column(sa.String(64))
    step: Mapped[int] = mapped_column(sa.Integer)
    watermark: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IngestRunRow(Base):
    """What one ingest cycle or backfill did for one target, including failures."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(sa.String(128), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    window_start: Mapped[int | None] = mapped_column(sa.BigInteger)
    window_end: Mapped[int | None] = mapped_column(sa.BigInteger)
    series_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    new_series: Mapped[int] = mapped_column(sa.Integer, default=0)
    points: Mapped[int] = mapped_column(sa.Integer, default=0)
    dropped_non_finite: Mapped[int] = mapped_column(sa.Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    error_message: Mapped[str | None] = mapped_column(sa.Text)


class IngestRunTotalRow(Base):
    """What the ingest runs pruned so far counted, per target and outcome: the /metrics
    counters are these plus the runs still stored, so pruning never makes them go down."""

    __tablename__ = "ingest_run_totals"

    target: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    runs: Mapped[int] = mapped_column(sa.BigInteger)
    points: Mapped[int] = mapped_column(sa.BigInteger)


class SpanRow(Base):
    """One span as received (OTLP) or imported; times are epoch nanoseconds (UTC)."""

    __tablename__ = "spans"
    __table_args__ = (sa.Index("ix_spans_start_ns", "start_ns"),)

    trace_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    span_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    parent_id: Mapped[str] = mapped_column(sa.String(64))
    service: Mapped[str] = mapped_column(sa.String(255))
    operation: Mapped[str] = mapped_column(sa.String(512))
    start_ns: Mapped[int] = mapped_column(sa.BigInteger)
    end_ns: Mapped[int] = mapped_column(sa.BigInteger)
    error: Mapped[bool] = mapped_column(sa.Boolean)
