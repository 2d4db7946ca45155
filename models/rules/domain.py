"""Alerting rules as Prognos sees them: the rule Prometheus reports, what Prognos forecasts for
it (or why it cannot), and each series' forecast against the rule's threshold."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.settings import TargetSettings
from models.rules.promql import Comparison


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """A series for which the rule's condition holds now, as Prometheus reports it."""

    labels: dict[str, str]  #: the series' labels, the rule's labels and `alertname`
    state: str  #: pending (holding, `for:` not yet over) or firing
    active_at: int  #: epoch seconds: when the condition began to hold


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alerting rule as `/api/v1/rules` reports it."""

    group: str
    name: str
    expr: str
    for_seconds: int  #: the rule's `for:`: how long the condition must hold before it fires
    file: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    state: str = "inactive"  #: Prometheus' own: inactive, pending or firing
    alerts: tuple[ActiveAlert, ...] = ()

    def active(self, labels: dict[str, str]) -> ActiveAlert | None:
        """The alert of the series with these labels, if the condition holds for it now."""
        for alert in self.alerts:
            own = {
                k: v
                for k, v in alert.labels.items()
                if k != "alertname" and self.labels.get(k) != v
            }
            # an alert never carries the metric name that a plain selector's series do
            if own == {k: v for k, v in labels.items() if k != "__name__"}:
                return alert
        return None

    @property
    def path(self) -> str:
        """`<group>/<alert>`: what rules.include / rules.exclude match."""
        return f"{self.group}/{self.name}"


@dataclass(frozen=True, slots=True)
class RuleTarget:
    """A rule and what Prognos does with it: a derived target with the rule's threshold, or
    the reason it is not forecast."""

    rule: AlertRule
    comparison: Comparison | None
    target: TargetSettings | None
    reason: str | None = None

    @property
    def supported(self) -> bool:
        return self.target is not None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules last read from Prometheus. A failed read keeps the rules of the last good one
    and says why (`error`); `tried_at` paces the next read."""

    rules: tuple[RuleTarget, ...] = ()
    read_at: datetime | None = None  #: the last successful read
    tried_at: datetime | None = None  #: the last attempt, successful or not
    error: str | None = None  #: why the last attempt failed (None: it did not)

    @property
    def targets(self) -> list[TargetSettings]:
        return [r.target for r in self.rules if r.target is not None]


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    """One series of a rule's expression: its newest value and the predicted crossing of the
    rule's threshold; the rule fires `for_seconds` after the crossing if it holds."""

    series_id: int
    labels: dict[str, str]
    value: float | None  #: the newest stored value (None: that sample is gone)
    threshold: float
    direction: str
    probability: float  #: P(crossing within the forecast horizon)
    crossing_eta: int | None  #: epoch seconds of the predicted crossing
    #: when the rule fires for this series: the crossing ETA + the rule's `for:`, or, while
    #: the condition already holds (Prometheus: pending or firing), its start + `for:`
    firing_eta: int | None
    warning: bool
    warning_since: int | None
    made_at: int  #: the forecast's newest observed step
    model: str
    state: str = "inactive"  #: Prometheus' state of the rule for this series
