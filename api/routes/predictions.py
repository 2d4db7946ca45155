"""Forecasts, anomaly scores and the model registry over HTTP."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.deps import (
    ROW_ID_MAX,
    Admin,
    ContextDep,
    Offset,
    Operator,
    RowId,
    SessionDep,
    UtcTime,
    Viewer,
)
from api.problems import declare
from core.clock import from_epoch, to_epoch
from ingest.tables import SeriesRow
from models import registry
from models.breach import BreachConfig, predict_breach
from models.detector import Detector, detector_config
from models.errors import AnomalyNotFoundError
from models.forecasters.baselines import BaselineConfig
from models.service import forecast_values, record_feedback
from models.tables import AnomalyScoreRow, BreachRow, ForecastRow, ModelRow

router = APIRouter(prefix="/v1", tags=["predictions"])

#: The epoch seconds a datetime can hold (years 1 to 9999): times past them cannot be answered.
_EPOCH_MIN = to_epoch(datetime.min.replace(tzinfo=UTC))
_EPOCH_MAX = to_epoch(datetime.max.replace(tzinfo=UTC))


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
    id: str = Field(description="`<series_id>-<epoch seconds>`: where feedback is posted")
    series_id: int
    target: str
    service: str | None
    labels: dict[str, str]
    at: datetime
    score: float | None
    z: float
    model: str
    alarm: bool
    evidence: dict[str, Any] | None = None


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
    series_id: RowId | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: RowId | None = None,
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
    summary="Scored observations, newest first; by default the detector's alarms only",
)
def list_anomalies(
    _: Viewer,
    session: SessionDep,
    context: ContextDep,
    target: str | None = None,
    service: str | None = None,
    series_id: RowId | None = None,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    min_score: Annotated[
        float | None, Query(description="every score at or above this (default: alarms only)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AnomalyRead]:
    start = since or (context.clock.now() - timedelta(days=1))
    query = (
        sa.select(AnomalyScoreRow, SeriesRow)
        .join(SeriesRow, SeriesRow.id == AnomalyScoreRow.series_id)
        .where(AnomalyScoreRow.ts >= int(start.timestamp()))
        .order_by(AnomalyScoreRow.ts.desc(), AnomalyScoreRow.series_id)
    )
    if min_score is None:
        query = query.where(AnomalyScoreRow.alarm.is_(True))
    elif min_score > 0:
        query = query.where(AnomalyScoreRow.score >= min_score)
    if until is not None:
        query = query.where(AnomalyScoreRow.ts <= int(until.timestamp()))
    query = _series_filter(query, target, service, series_id)
    return [
        AnomalyRead(
            id=f"{a.series_id}-{a.ts}",
            series_id=a.series_id,
            target=s.target,
            service=s.service,
            labels=s.labels,
            at=from_epoch(a.ts),
            score=a.score,
            z=a.z,
            model=a.model,
            alarm=a.alarm,
            evidence=a.evidence,
        )
        for a, s in session.execute(query.limit(limit)).all()
    ]


class AnomalyFeedbackCreate(BaseModel):
    verdict: Literal["false_alarm", "true_alarm", "missed"] = Field(
        description="false_alarm / true_alarm for an alarm; missed for a step that should have"
    )
    note: str = Field(default="", max_length=2000)


class AnomalyFeedbackRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    series_id: int
    ts: int
    verdict: str
    note: str
    author: str
    created_at: datetime


@router.post(
    "/anomalies/{anomaly_id}/feedback",
    response_model=AnomalyFeedbackRead,
    status_code=201,
    summary="Mark a scored step: a false or true alarm, or an anomaly the detector missed",
)
def anomaly_feedback(
    anomaly_id: Annotated[str, Path(pattern=r"^\d{1,18}-\d{1,18}$", max_length=40)],
    body: AnomalyFeedbackCreate,
    principal: Operator,
    session: SessionDep,
    context: ContextDep,
) -> AnomalyFeedbackRead:
    series_id, ts = (int(part) for part in anomaly_id.split("-"))
    if series_id > ROW_ID_MAX or not _EPOCH_MIN <= ts <= _EPOCH_MAX:
        raise AnomalyNotFoundError(f"no scored step {anomaly_id}: no such series or time")
    row = record_feedback(
        session,
        series_id=series_id,
        ts=ts,
        verdict=body.verdict,
        note=body.note,
        author=principal.name,
        now=context.clock.now(),
    )
    session.commit()
    return AnomalyFeedbackRead.model_validate(row)


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
    responses=declare(409),
)
def promote_model(
    model_id: RowId, principal: Admin, session: SessionDep, context: ContextDep
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
    responses=declare(409),
)
def rollback_model(family: str, _: Admin, session: SessionDep, context: ContextDep) -> ModelRead:
    row = registry.rollback(session, family=family, now=context.clock.now())
    session.commit()
    return _model(row)


class BreachRead(BaseModel):
    series_id: int
    target: str
    service: str | None
    labels: dict[str, str]
    threshold: float
    direction: str
    probability: float = Field(description="P(crossing the threshold within the horizon)")
    eta: datetime | None = Field(description="estimated time of the crossing")
    eta_seconds: int | None = Field(description="seconds from the forecast to the crossing")
    warning: bool = Field(description="the warning is on (probability held long enough)")
    warning_since: datetime | None = Field(description="first forecast of this warning")
    forecast_made_at: datetime
    model: str


@router.get(
    "/breaches",
    response_model=list[BreachRead],
    summary="Predicted breaches of configured limits; by default only warnings that are on",
)
def list_breaches(
    _: Viewer,
    session: SessionDep,
    target: str | None = None,
    service: str | None = None,
    series_id: RowId | None = None,
    warning_only: bool = True,
    min_probability: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[Offset, Query()] = 0,
) -> list[BreachRead]:
    query = (
        sa.select(BreachRow, SeriesRow)
        .join(SeriesRow, SeriesRow.id == BreachRow.series_id)
        .where(BreachRow.probability >= min_probability)
        .order_by(BreachRow.probability.desc(), BreachRow.series_id)
    )
    if warning_only:
        query = query.where(BreachRow.warning.is_(True))
    query = _series_filter(query, target, service, series_id)
    return [
        BreachRead(
            series_id=b.series_id,
            target=s.target,
            service=s.service,
            labels=s.labels,
            threshold=b.threshold,
            direction=b.direction,
            probability=b.probability,
            eta=None if b.eta is None else from_epoch(b.eta),
            eta_seconds=None if b.eta is None else b.eta - b.made_at,
            warning=b.warning,
            warning_since=None if b.warning_since is None else from_epoch(b.warning_since),
            forecast_made_at=from_epoch(b.made_at),
            model=b.model,
        )
        for b, s in session.execute(query.offset(offset).limit(limit)).all()
    ]


MAX_ADHOC_POINTS = 20_000
#: The fewest observed values a forecast is made from: the cold-start band's minimum. (A service
#: whose band is configured to need more answers a 422 that names the number.)
MIN_OBSERVED: int = BaselineConfig.model_fields["min_points"].default
#: The models compute in float32: a larger magnitude is infinite to them.
MAX_ADHOC_MAGNITUDE = float(np.finfo(np.float32).max)
AdhocValue = Annotated[float, Field(ge=-MAX_ADHOC_MAGNITUDE, le=MAX_ADHOC_MAGNITUDE)]


class AdhocLimit(BaseModel):
    threshold: float
    direction: Literal["above", "below"] = "above"

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value


#: `end` as the schema states it: a date-time whose year is 1970..9998
END_YEARS = r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"


class AdhocForecastRequest(BaseModel):
    """One series, oldest first, at a fixed step; `null` marks a missing point."""

    values: list[AdhocValue | None] = Field(
        min_length=MIN_OBSERVED,
        max_length=MAX_ADHOC_POINTS,
        # The schema says how many must be numbers, so that what it calls valid is forecast.
        json_schema_extra={"contains": {"type": "number"}, "minContains": MIN_OBSERVED},
    )
    step_seconds: int = Field(ge=1, le=86_400, description="seconds between values")
    end: datetime | None = Field(
        None,
        description="time of the last value, with its time zone, in the years 1970 to 9998; "
        "default: now, aligned to the step",
        # The schema states the range, so that every end it calls valid puts the first value
        # (at most 30 years of values before it) and the forecast (after it) in the calendar.
        json_schema_extra={"pattern": END_YEARS},
    )
    limit: AdhocLimit | None = Field(None, description="also predict a breach of this limit")

    @field_validator("values")
    @classmethod
    def _values(cls, values: list[float | None]) -> list[float | None]:
        bad = [i for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"values must be finite numbers or null for a missing point; "
                f"index {bad[0]} is not ({len(bad)} such values)"
            )
        if sum(v is not None for v in values) < MIN_OBSERVED:
            raise ValueError(f"at least {MIN_OBSERVED} observed (non-null) values are needed")
        return values

    @field_validator("end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
        if not 1970 <= value.year <= 9998:
            raise ValueError("must fall in the years 1970 to 9998")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is outside the years 1 to 9999 once taken to UTC") from None

    @model_validator(mode="after")
    def _starts_in_the_calendar(self) -> Self:
        if self.end is not None:
            first = to_epoch(self.end) - (len(self.values) - 1) * self.step_seconds
            if first < _EPOCH_MIN:
                raise ValueError("end puts the first of the values before the year 1")
        return self


class AdhocBreach(BaseModel):
    threshold: float
    direction: str
    probability: float
    eta: datetime | None


class AdhocAlarm(BaseModel):
    at: datetime
    score: float
    evidence: dict[str, Any]


class AdhocForecastResponse(BaseModel):
    model: str
    made_at: datetime
    step_seconds: int
    points: list[QuantilePoint]
    breach: AdhocBreach | None
    alarms: list[AdhocAlarm] = Field(
        description="the service's detector (models.detector settings) run over the values"
    )


@router.post(
    "/forecasts",
    response_model=AdhocForecastResponse,
    summary="Forecast a series given in the request body with the active model for its step",
)
def adhoc_forecast(
    body: AdhocForecastRequest, _: Operator, session: SessionDep, context: ContextDep
) -> AdhocForecastResponse:
    step = body.step_seconds
    end = to_epoch(context.clock.now()) // step * step if body.end is None else to_epoch(body.end)
    values = [math.nan if v is None else v for v in body.values]
    forecast, model = forecast_values(session, context.models, values, step=step, end=end)
    if end + forecast.values.shape[1] * step > _EPOCH_MAX:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "end"),
                    "msg": "end puts the forecast's horizon past the year 9999",
                }
            ]
        )
    stamps = end - step * np.arange(len(values) - 1, -1, -1, dtype=np.int64)
    detected = Detector(detector_config(context.settings.models.detector)).update(
        None, stamps, np.asarray(values, dtype=np.float64)
    )
    breach = None
    if body.limit is not None:
        # Given a day or more of values, the check's seasonal test knows yesterday's path.
        prediction = predict_breach(
            forecast,
            body.limit.threshold,
            body.limit.direction,
            BreachConfig(),
            history=np.asarray(values, dtype=np.float64)[None, :],
        )
        eta = float(prediction.eta[0])
        breach = AdhocBreach(
            threshold=body.limit.threshold,
            direction=body.limit.direction,
            probability=float(prediction.probability[0]),
            eta=from_epoch(int(eta)) if math.isfinite(eta) else None,
        )
    return AdhocForecastResponse(
        model=model,
        made_at=from_epoch(end),
        step_seconds=step,
        points=[
            QuantilePoint(
                at=from_epoch(end + (h + 1) * step),
                quantiles={
                    f"p{round(q * 100)}": float(v)
                    for q, v in zip(forecast.quantiles, row, strict=True)
                },
            )
            for h, row in enumerate(forecast.values[0])
        ],
        breach=breach,
        alarms=[
            AdhocAlarm(
                at=from_epoch(int(detected.ts[i])),
                score=float(detected.score[i]),
                evidence=detected.evidence(int(i)),
            )
            for i in np.flatnonzero(detected.alarm)
        ],
    )
