"""Forecasts, anomaly scores and the model registry over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Admin, ContextDep, SessionDep, Viewer
from core.clock import from_epoch
from ingest.tables import SeriesRow
from models import registry
from models.tables import AnomalyScoreRow, ForecastRow, ModelRow

router = APIRouter(prefix="/v1", tags=["predictions"])


class QuantilePoint(BaseModel):
    at: datetime
    quantiles: dict[str, float]


class ForecastRead(BaseModel):
    series_id: int
    target: str
    service: str | None
    labels: dict[str, str]
    made_at: datetime
    model: str
    points: list[QuantilePoint]


class ForecastPage(BaseModel):
    items: list[ForecastRead]
    next_cursor: int | None


class AnomalyRead(BaseModel):
    series_id: int
    target: str
    service: str | None
    labels: dict[str, str]
    at: datetime
    score: float | None
    z: float
    model: str


class ModelRead(BaseModel):
    id: int
    family: str
    version: int
    forecaster: str
    step_seconds: int
    status: str
    created_at: datetime
    activated_at: datetime | None
    train_start: datetime
    train_end: datetime
    series_count: int
    metrics: dict[str, float | None]
    note: str | None


def _series_filter(
    query: sa.Select, target: str | None, service: str | None, series_id: int | None
) -> sa.Select:
    if target is not None:
        query = query.where(SeriesRow.target == target)
    if service is not None:
        query = query.where(SeriesRow.service == service)
    if series_id is not None:
        query = query.where(SeriesRow.id == series_id)
    return query


@router.get(
    "/forecasts",
    response_model=ForecastPage,
    summary="Each series' newest forecast: quantiles for every step of the horizon",
)
def list_forecasts(
    _: Viewer,
    session: SessionDep,
    target: str | None = None,
    service: str | None = None,
    series_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: int | None = None,
) -> ForecastPage:
    query = sa.select(ForecastRow, SeriesRow).join(SeriesRow, SeriesRow.id == ForecastRow.series_id)
    query = _series_filter(query, target, service, series_id).order_by(ForecastRow.series_id)
    if cursor is not None:
        query = query.where(ForecastRow.series_id > cursor)
    rows = session.execute(query.limit(limit + 1)).all()
    items = [
        ForecastRead(
            series_id=f.series_id,
            target=s.target,
            service=s.service,
            labels=s.labels,
            made_at=from_epoch(f.made_at),
            model=f.model,
            points=[
                QuantilePoint(
                    at=from_epoch(f.made_at + (h + 1) * f.step),
                    quantiles={
                        f"p{round(q * 100)}": v for q, v in zip(f.quantiles, values, strict=True)
                    },
                )
                for h, values in enumerate(f.values)
            ],
        )
        for f, s in rows[:limit]
    ]
    more = len(rows) > limit
    return ForecastPage(items=items, next_cursor=items[-1].series_id if more and items else None)


@router.get(
    "/anomalies",
    response_model=list[AnomalyRead],
    summary="Scored observations, newest first; by default those at or above the threshold",
)
def list_anomalies(
    _: Viewer,
    session: SessionDep,
    context: ContextDep,
    target: str | None = None,
    service: str | None = None,
    series_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_score: Annotated[
        float | None, Query(description="default: models.anomaly_threshold")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AnomalyRead]:
    threshold = context.settings.models.anomaly_threshold if min_score is None else min_score
    start = since or (context.clock.now() - timedelta(days=1))
    query = (
        sa.select(AnomalyScoreRow, SeriesRow)
        .join(SeriesRow, SeriesRow.id == AnomalyScoreRow.series_id)
        .where(AnomalyScoreRow.ts >= int(start.timestamp()))
        .order_by(AnomalyScoreRow.ts.desc(), AnomalyScoreRow.series_id)
    )
    if threshold > 0:
        query = query.where(AnomalyScoreRow.score >= threshold)
    if until is not None:
        query = query.where(AnomalyScoreRow.ts <= int(until.timestamp()))
    query = _series_filter(query, target, service, series_id)
    return [
        AnomalyRead(
            series_id=a.series_id,
            target=s.target,
            service=s.service,
            labels=s.labels,
            at=from_epoch(a.ts),
            score=a.score,
            z=a.z,
            model=a.model,
        )
        for a, s in session.execute(query.limit(limit)).all()
    ]


def _model(row: ModelRow) -> ModelRead:
    return ModelRead(
        id=row.id,
        family=row.family,
        version=row.version,
        forecaster=row.forecaster,
        step_seconds=row.step,
        status=row.status,
        created_at=row.created_at,
        activated_at=row.activated_at,
        train_start=row.train_start,
        train_end=row.train_end,
        series_count=row.series_count,
        metrics=row.metrics,
        note=row.note,
    )


@router.get("/models", response_model=list[ModelRead], summary="Model versions and their state")
def list_models(_: Viewer, session: SessionDep, family: str | None = None) -> list[ModelRead]:
    return [_model(row) for row in registry.list_models(session, family)]


@router.post(
    "/models/{model_id}/promote",
    response_model=ModelRead,
    summary="Make a version active (its artifact must load)",
)
def promote_model(
    model_id: int, principal: Admin, session: SessionDep, context: ContextDep
) -> ModelRead:
    row = registry.promote(
        session, model_id=model_id, now=context.clock.now(), note=f"promoted by {principal.name}"
    )
    session.commit()
    return _model(row)


@router.post(
    "/models/{family}/rollback",
    response_model=ModelRead,
    summary="Back to the newest earlier version that still loads",
)
def rollback_model(family: str, _: Admin, session: SessionDep, context: ContextDep) -> ModelRead:
    row = registry.rollback(session, family=family, now=context.clock.now())
    session.commit()
    return _model(row)
