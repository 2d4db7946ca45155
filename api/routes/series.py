"""Series Prognos has seen, their stored samples and chart, and the ingest targets with their
runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, StringConstraints

from api.deps import ContextDep, RowId, SessionDep, UtcTime, Viewer
from core.clock import from_epoch, to_epoch
from core.errors import ErrorKind, NotFoundError, PrognosError
from ingest import service as ingest_service
from ingest.tables import IngestRunRow, SeriesRow, WatermarkRow
from models import service as model_service

router = APIRouter(prefix="/v1", tags=["series"])
#: A label filter, `name=value` (the value may be empty): a pattern, so that the schema refuses
#: what the route refuses.
LabelMatcher = Annotated[str, StringConstraints(pattern=r"^[^=]+=")]


class InvalidQueryError(PrognosError):
    code = "query_parameter_invalid"
    kind = ErrorKind.INVALID


class SeriesRead(BaseModel):
    id: int
    target: str
    labels: dict[str, str]
    service: str | None
    first_seen: datetime
    last_seen: datetime


class SeriesPage(BaseModel):
    items: list[SeriesRead]
    next_cursor: int | None


class SamplesRead(BaseModel):
    series: SeriesRead
    points: list[tuple[datetime, float]]


class TargetRead(BaseModel):
    name: str
    query: str
    step_seconds: int
    service_label: str
    watermark: datetime | None
    last_run_status: str | None
    last_run_at: datetime | None
    last_error: str | None


class IngestRunRead(BaseModel):
    id: int
    target: str
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime
    window_start: datetime | None
    window_end: datetime | None
    series_count: int
    new_series: int
    points: int
    dropped_non_finite: int
    error_code: str | None
    error_message: str | None


def _series(row: SeriesRow) -> SeriesRead:
    return SeriesRead(
        id=row.id,
        target=row.target,
        labels=row.labels,
        service=row.service,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
    )


@router.get("/series", response_model=SeriesPage, summary="List series, filtered and paginated")
def list_series(
    _: Viewer,
    session: SessionDep,
    target: str | None = None,
    service: str | None = None,
    label: Annotated[list[LabelMatcher] | None, Query(description="name=value, repeatable")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[RowId | None, Query(description="next_cursor of the previous page")] = None,
) -> SeriesPage:
    query = sa.select(SeriesRow).order_by(SeriesRow.id)
    if target is not None:
        query = query.where(SeriesRow.target == target)
    if service is not None:
        query = query.where(SeriesRow.service == service)
    if cursor is not None:
        query = query.where(SeriesRow.id > cursor)
    matchers = []
    for item in label or []:
        name, value = item.split("=", 1)
        matchers.append((name, value))
    rows: list[SeriesRow] = []
    # Label filters run in Python so that they behave the same on SQLite and PostgreSQL JSON;
    # the scan goes on in id order until a page (plus one, to know there is more) is full.
    batch = limit + 1 if not matchers else max(500, limit * 10)
    while len(rows) <= limit:
        scanned = list(session.scalars(query.limit(batch)))
        rows.extend(r for r in scanned if all(r.labels.get(n) == v for n, v in matchers))
        if len(scanned) < batch:
            break
        query = query.where(SeriesRow.id > scanned[-1].id)
    more = len(rows) > limit
    rows = rows[:limit]
    return SeriesPage(
        items=[_series(r) for r in rows], next_cursor=rows[-1].id if more and rows else None
    )


@router.get(
    "/series/{series_id}/samples",
    response_model=SamplesRead,
    summary="Stored samples of one series (gaps are simply absent)",
)
def series_samples(
    series_id: RowId,
    _: Viewer,
    session: SessionDep,
    start: UtcTime | None = None,
    end: UtcTime | None = None,
    limit: Annotated[int, Query(ge=1, le=11_000)] = 11_000,
) -> SamplesRead:
    row = session.get(SeriesRow, series_id)
    if row is None:
        raise NotFoundError(f"no series with id {series_id}")
    points = ingest_service.read_samples(
        session,
        series_id=series_id,
        start=int(start.timestamp()) if start else None,
        end=int(end.timestamp()) if end else None,
    )[-limit:]
    return SamplesRead(series=_series(row), points=[(from_epoch(t), v) for t, v in points])


#: The widest span one chart covers (the samples' default retention), and the default one.
CHART_SPAN_MAX = timedelta(days=7)
CHART_SPAN_DEFAULT = timedelta(hours=6)


class BandPoint(BaseModel):
    at: datetime = Field(description="the step forecast")
    made_at: datetime = Field(description="the forecast's last observed step")
    p10: float
    p50: float
    p90: float


class ChartAnomaly(BaseModel):
    at: datetime
    score: float | None
    alarm: bool = Field(description="the detector alarmed on this step")


class ChartLimit(BaseModel):
    threshold: float
    direction: str = Field(description="above or below: the side the series must stay on")


class ChartBreach(BaseModel):
    probability: float = Field(description="P(crossing the limit within the horizon)")
    eta: datetime | None = Field(description="estimated time of the crossing")
    warning: bool
    warning_since: datetime | None
    forecast_made_at: datetime


class ChartRead(BaseModel):
    series: SeriesRead
    since: datetime
    until: datetime
    step_seconds: int | None = Field(description="the target's step (None: no such target now)")
    actual: list[tuple[datetime, float]] = Field(description="stored values, oldest first")
    band: list[BandPoint] = Field(
        description="for each step, the p10-p90 band forecast about 15 minutes before it "
        "(kept for models.forecast_history_retention)"
    )
    ahead: list[BandPoint] = Field(
        description="the newest forecast, every step of its horizon, if made within the span"
    )
    anomalies: list[ChartAnomaly] = Field(
        description="scored steps that alarmed or scored at least min_score"
    )
    limit: ChartLimit | None = Field(
        description="the breach limit: the one the newest prediction used, else the target's"
    )
    breach: ChartBreach | None = Field(description="the newest predicted-breach state")
    truncated: bool = Field(description="some part had more than `limit` rows: the newest kept")


@router.get(
    "/series/{series_id}/chart",
    response_model=ChartRead,
    summary="One series for a chart: actual values against the band forecast 15 minutes "
    "earlier, anomalies, the breach limit and the newest forecast",
)
def series_chart(
    series_id: RowId,
    _: Viewer,
    session: SessionDep,
    context: ContextDep,
    since: Annotated[UtcTime | None, Query(description="default: `until` less 6 hours")] = None,
    until: Annotated[UtcTime | None, Query(description="default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=11_000, description="rows per part, newest kept")] = 2000,
    min_score: Annotated[
        float, Query(ge=0, le=1e6, description="scores shown besides alarms")
    ] = 3.0,
) -> ChartRead:
    row = session.get(SeriesRow, series_id)
    if row is None:
        raise NotFoundError(f"no series with id {series_id}")
    end = until or context.clock.now()
    try:
        start = since or end - CHART_SPAN_DEFAULT
    except OverflowError:  # `until` within 6 hours of the year 1
        raise InvalidQueryError("give since: until leaves no room for the default span") from None
    if start >= end:
        raise InvalidQueryError("since must be before until")
    if end - start > CHART_SPAN_MAX:
        raise InvalidQueryError(f"a chart spans at most {CHART_SPAN_MAX.days} days")
    data = model_service.chart(
        session,
        series_id=series_id,
        since=to_epoch(start),
        until=to_epoch(end),
        limit=limit,
        min_score=min_score,
    )
    target = next((t for t in context.targets if t.name == row.target), None)
    b = data.breach
    limit_row = None
    if b is not None:  # the limit the shown probability and ETA were predicted against
        limit_row = ChartLimit(threshold=b.threshold, direction=b.direction)
    elif target is not None and target.breach is not None:
        limit_row = ChartLimit(threshold=target.breach.threshold, direction=target.breach.direction)
    made = data.ahead_made_at
    return ChartRead(
        series=_series(row),
        since=start,
        until=end,
        step_seconds=None if target is None else target.step_seconds,
        actual=[(from_epoch(t), v) for t, v in data.actual],
        band=[
            BandPoint(at=from_epoch(t), made_at=from_epoch(m), p10=lo, p50=mid, p90=hi)
            for t, m, lo, mid, hi in data.band
        ],
        ahead=[
            BandPoint(at=from_epoch(t), made_at=from_epoch(made), p10=lo, p50=mid, p90=hi)
            for t, lo, mid, hi in data.ahead
            if made is not None
        ],
        anomalies=[
            ChartAnomaly(at=from_epoch(t), score=score, alarm=alarm)
            for t, score, alarm in data.anomalies
        ],
        limit=limit_row,
        breach=None
        if b is None
        else ChartBreach(
            probability=b.probability,
            eta=None if b.eta is None else from_epoch(b.eta),
            warning=b.warning,
            warning_since=None if b.warning_since is None else from_epoch(b.warning_since),
            forecast_made_at=from_epoch(b.made_at),
        ),
        truncated=data.truncated,
    )


@router.get(
    "/targets", response_model=list[TargetRead], summary="Configured targets and their state"
)
def list_targets(_: Viewer, session: SessionDep, context: ContextDep) -> list[TargetRead]:
    out = []
    for target in context.targets:
        mark = session.get(WatermarkRow, target.name)
        last = session.scalar(
            sa.select(IngestRunRow)
            .where(IngestRunRow.target == target.name)
            .order_by(IngestRunRow.id.desc())
            .limit(1)
        )
        out.append(
            TargetRead(
                name=target.name,
                query=target.query,
                step_seconds=target.step_seconds,
                service_label=target.service_label,
                watermark=from_epoch(mark.watermark) if mark else None,
                last_run_status=last.status if last else None,
                last_run_at=last.finished_at if last else None,
                last_error=last.error_message if last else None,
            )
        )
    return out


@router.get("/ingest/runs", response_model=list[IngestRunRead], summary="Recent ingest runs")
def ingest_runs(
    _: Viewer,
    session: SessionDep,
    target: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[IngestRunRead]:
    return [
        IngestRunRead(
            id=r.id,
            target=r.target,
            kind=r.kind,
            status=r.status,
            started_at=r.started_at,
            finished_at=r.finished_at,
            window_start=from_epoch(r.window_start) if r.window_start is not None else None,
            window_end=from_epoch(r.window_end) if r.window_end is not None else None,
            series_count=r.series_count,
            new_series=r.new_series,
            points=r.points,
            dropped_non_finite=r.dropped_non_finite,
            error_code=r.error_code,
            error_message=r.error_message,
        )
        for r in ingest_service.latest_runs(session, target=target, limit=limit)
    ]
