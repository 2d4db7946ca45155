"""`GET /v1/rules/forecast`: which of Prometheus' alerting rules will fire, when, and how likely
(docs/rules.md). Every alerting rule is listed: the supported ones with their series' forecasts,
the others with the reason they are not forecast."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ContextDep, SessionDep, Viewer
from core.clock import from_epoch
from models.rules.domain import RuleTarget, SeriesForecast
from models.rules.service import rule_forecasts

router = APIRouter(prefix="/v1/rules", tags=["rules"])

Direction = Literal["above", "below"]


class RuleSeriesRead(BaseModel):
    """One series of a rule's expression, forecast against the rule's threshold."""

    series_id: int
    labels: dict[str, str]
    value: float | None = Field(description="the newest stored value of the expression")
    threshold: float
    direction: Direction = Field(description="above: the rule holds at > / >= the threshold")
    probability: float = Field(
        ge=0.0, le=1.0, description="P(the expression crosses the threshold within the horizon)"
    )
    crossing_eta: datetime | None = Field(description="estimated time of the crossing")
    firing_eta: datetime | None = Field(
        description="estimated time the rule fires for this series: the crossing plus the "
        "rule's `for:`, or, while the condition already holds, its start plus `for:`"
    )
    state: str = Field(description="Prometheus' state of the rule for this series")
    warning: bool = Field(description="the warning is on (probability held long enough)")
    warning_since: datetime | None = Field(description="first forecast of this warning")
    forecast_made_at: datetime
    model: str


class RuleRead(BaseModel):
    group: str
    name: str = Field(description="the alert's name")
    file: str = Field(description="the rule file Prometheus loaded it from")
    expr: str
    for_seconds: int = Field(ge=0, description="the rule's `for:`")
    labels: dict[str, str]
    state: str = Field(description="Prometheus' own state: inactive, pending or firing")
    supported: bool = Field(description="the rule is forecast")
    reason: str | None = Field(description="why the rule is not forecast (None: it is)")
    target: str | None = Field(description="the derived target its series are stored under")
    query: str | None = Field(description="the series side of the comparison, forecast")
    threshold: float | None
    direction: Direction | None
    warning: bool = Field(description="a warning is on for at least one series")
    firing_eta: datetime | None = Field(description="the earliest firing ETA of a warned series")
    series: list[RuleSeriesRead]


class RuleForecastRead(BaseModel):
    enabled: bool = Field(description="rules.enabled and a Prometheus source: rules are read")
    read_at: datetime | None = Field(description="the last successful read of the rules")
    error: str | None = Field(
        description="why the last read failed; the rules listed are those read at read_at"
    )
    rules: list[RuleRead]


@router.get(
    "/forecast",
    response_model=RuleForecastRead,
    summary="Prometheus' alerting rules with the forecast of their expressions: which will "
    "fire, when (crossing ETA + `for:`) and how likely",
)
def forecast_rules(
    _: Viewer, context: ContextDep, session: SessionDep, warning_only: bool = False
) -> RuleForecastRead:
    rule_set = context.refresh_rules()
    if rule_set is None:
        return RuleForecastRead(enabled=False, read_at=None, error=None, rules=[])
    rules = [_rule(rule, series) for rule, series in rule_forecasts(session, rule_set)]
    return RuleForecastRead(
        enabled=True,
        read_at=rule_set.read_at,
        error=rule_set.error,
        rules=[r for r in rules if r.warning or not warning_only],
    )


def _rule(rule: RuleTarget, series: list[SeriesForecast]) -> RuleRead:
    read = [_series(s) for s in series]
    warned = [s.firing_eta for s in read if s.warning and s.firing_eta is not None]
    comparison = rule.comparison if rule.supported else None
    return RuleRead(
        group=rule.rule.group,
        name=rule.rule.name,
        file=rule.rule.file,
        expr=rule.rule.expr,
        for_seconds=rule.rule.for_seconds,
        labels=rule.rule.labels,
        state=rule.rule.state,
        supported=rule.supported,
        reason=rule.reason,
        target=rule.target.name if rule.target else None,
        query=comparison.query if comparison else None,
        threshold=comparison.threshold if comparison else None,
        direction=comparison.direction if comparison else None,
        warning=any(s.warning for s in read),
        firing_eta=min(warned) if warned else None,
        series=read,
    )


def _series(s: SeriesForecast) -> RuleSeriesRead:
    return RuleSeriesRead(
        series_id=s.series_id,
        labels=s.labels,
        value=s.value,
        threshold=s.threshold,
        direction="below" if s.direction == "below" else "above",
        probability=s.probability,
        crossing_eta=None if s.crossing_eta is None else from_epoch(s.crossing_eta),
        firing_eta=None if s.firing_eta is None else from_epoch(s.firing_eta),
        warning=s.warning,
        warning_since=None if s.warning_since is None else from_epoch(s.warning_since),
        forecast_made_at=from_epoch(s.made_at),
        model=s.model,
        state=s.state,
    )
