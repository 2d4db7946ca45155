"""Recording the self-metrics (each a single atomic upsert, safe from any process) and reading
them back for /metrics."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.database import dialect_insert
from core.selfmetrics.tables import (
    CycleBucketRow,
    CycleStageRow,
    HighWaterRow,
    OtlpTotalRow,
    ServiceCheckRow,
)

#: Upper bounds (seconds) of the cycle duration histogram's buckets; +Inf is the run count.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OTLP_OUTCOMES = ("accepted", "rejected")


def record_stage(
    db_session: Session, *, stage: str, seconds: float, ok: bool, now: datetime
) -> None:
    """Add one run of a cycle stage: its duration to the histogram, a failure if it raised."""
    seconds = max(0.0, seconds)
    insert = dialect_insert(db_session, CycleStageRow.__table__)
    db_session.execute(
        insert.values(
            stage=stage,
            runs=1,
            seconds=seconds,
            failures=0 if ok else 1,
            last_success_at=now if ok else None,
            last_run_at=now,
        ).on_conflict_do_update(
            index_elements=["stage"],
            set_={
                "runs": CycleStageRow.runs + 1,
                "seconds": CycleStageRow.seconds + seconds,
                "failures": CycleStageRow.failures + (0 if ok else 1),
                "last_success_at": now if ok else CycleStageRow.last_success_at,
                "last_run_at": now,
            },
        )
    )
    index = bisect.bisect_left(DURATION_BUCKETS, seconds)
    if index == len(DURATION_BUCKETS):
        return  # slower than every bound: only +Inf (the run count) holds it
    insert = dialect_insert(db_session, CycleBucketRow.__table__)
    db_session.execute(
        insert.values(stage=stage, le=DURATION_BUCKETS[index], runs=1).on_conflict_do_update(
            index_elements=["stage", "le"], set_={"runs": CycleBucketRow.runs + 1}
        )
    )


def count_otlp(db_session: Session, *, accepted: bool, spans: int, rejected_spans: int) -> None:
    """Count one `POST /v1/traces`: the request by its outcome, its stored and rejected spans."""
    rows = [
        {"outcome": "accepted", "requests": int(accepted), "spans": spans},
        {"outcome": "rejected", "requests": int(not accepted), "spans": rejected_spans},
    ]
    insert = dialect_insert(db_session, OtlpTotalRow.__table__)
    db_session.execute(
        insert.values(rows).on_conflict_do_update(
            index_elements=["outcome"],
            set_={
                "requests": OtlpTotalRow.requests + insert.excluded.requests,
                "spans": OtlpTotalRow.spans + insert.excluded.spans,
            },
        )
    )


def record_check(
    db_session: Session,
    *,
    name: str,
    ok: bool,
    now: datetime,
    value: float | None = None,
    detail: str | None = None,
) -> None:
    """Replace the newest result of a check."""
    values = {"ok": ok, "checked_at": now, "value": value, "detail": detail}
    insert = dialect_insert(db_session, ServiceCheckRow.__table__)
    db_session.execute(
        insert.values(name=name, **values).on_conflict_do_update(
            index_elements=["name"], set_=values
        )
    )


def check_due(db_session: Session, *, name: str, every: timedelta, now: datetime) -> bool:
    """Whether a check last made `every` ago or longer (or never) is due again."""
    last = db_session.scalar(
        sa.select(ServiceCheckRow.checked_at).where(ServiceCheckRow.name == name)
    )
    return last is None or now - last >= every


def raise_high_water(db_session: Session, *, name: str, value: int) -> None:
    """Keep the highest value ever seen under `name`."""
    insert = dialect_insert(db_session, HighWaterRow.__table__)
    db_session.execute(
        insert.values(name=name, value=value).on_conflict_do_update(
            index_elements=["name"],
            set_={
                "value": sa.case(
                    (insert.excluded.value > HighWaterRow.value, insert.excluded.value),
                    else_=HighWaterRow.value,
                )
            },
        )
    )


def high_water(db_session: Session, name: str) -> int:
    return int(
        db_session.scalar(sa.select(HighWaterRow.value).where(HighWaterRow.name == name)) or 0
    )


@dataclass(frozen=True)
class StageStats:
    stage: str
    runs: int
    seconds: float
    failures: int
    last_success_at: datetime | None
    #: cumulative (upper bound, runs at most that long), one per DURATION_BUCKETS entry
    buckets: list[tuple[float, int]]


def stage_stats(db_session: Session) -> list[StageStats]:
    """Every stage's histogram, cumulative as Prometheus wants it."""
    per_bucket: dict[str, list[int]] = {}
    for stage, le, runs in db_session.execute(
        sa.select(CycleBucketRow.stage, CycleBucketRow.le, CycleBucketRow.runs)
    ):
        # A bound no longer in the list (changed in code) counts in the next larger one.
        index = min(bisect.bisect_left(DURATION_BUCKETS, le), len(DURATION_BUCKETS) - 1)
        per_bucket.setdefault(stage, [0] * len(DURATION_BUCKETS))[index] += runs
    stats = []
    for row in db_session.scalars(sa.select(CycleStageRow).order_by(CycleStageRow.stage)):
        counts = per_bucket.get(row.stage, [0] * len(DURATION_BUCKETS))
        cumulative, total = [], 0
        for bound, count in zip(DURATION_BUCKETS, counts, strict=True):
            total += count
            cumulative.append((bound, min(total, row.runs)))
        stats.append(
            StageStats(
                stage=row.stage,
                runs=row.runs,
                seconds=row.seconds,
                failures=row.failures,
                last_success_at=row.last_success_at,
                buckets=cumulative,
            )
        )
    return stats


def otlp_totals(db_session: Session) -> dict[str, tuple[int, int]]:
    """outcome -> (requests, spans), every outcome present."""
    totals = {o: (0, 0) for o in OTLP_OUTCOMES}
    for row in db_session.scalars(sa.select(OtlpTotalRow)):
        totals[row.outcome] = (row.requests, row.spans)
    return totals


def checks(db_session: Session) -> dict[str, ServiceCheckRow]:
    return {row.name: row for row in db_session.scalars(sa.select(ServiceCheckRow))}
