"""Tables of the self-metrics: running totals (never decreasing) and the newest check results."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime


class CycleStageRow(Base):
    """Per daemon cycle stage (and `cycle`, the whole): runs, their seconds, failures."""

    __tablename__ = "cycle_stages"

    stage: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    runs: Mapped[int] = mapped_column(sa.BigInteger)
    seconds: Mapped[float] = mapped_column(sa.Float(precision=53))  #: summed over the runs
    failures: Mapped[int] = mapped_column(sa.BigInteger)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CycleBucketRow(Base):
    """Runs of a stage whose duration fell in the bucket ending at `le` (and above the one
    before): a row per bucket makes each observation one atomic increment."""

    __tablename__ = "cycle_stage_buckets"

    stage: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    le: Mapped[float] = mapped_column(sa.Float(precision=53), primary_key=True)
    runs: Mapped[int] = mapped_column(sa.BigInteger)


class OtlpTotalRow(Base):
    """`POST /v1/traces` requests and spans by outcome (`accepted`, `rejected`)."""

    __tablename__ = "otlp_totals"

    outcome: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    requests: Mapped[int] = mapped_column(sa.BigInteger)
    spans: Mapped[int] = mapped_column(sa.BigInteger)


class ServiceCheckRow(Base):
    """The newest result of one of the daemon's checks (`audit`, `vault`). `value` is the
    check's number (the Vault token's TTL); `detail` a short reason, never a secret."""

    __tablename__ = "service_checks"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    ok: Mapped[bool] = mapped_column(sa.Boolean)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    detail: Mapped[str | None] = mapped_column(sa.Text)


class HighWaterRow(Base):
    """The highest value a count derived from rows ever had (e.g. the newest incident id), so
    that pruning rows never makes its counter go down."""

    __tablename__ = "high_water_marks"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger)
