"""Alerting rules become forecast targets, and their forecasts become "will this rule fire".

Each supported rule (`models.rules.promql.classify`) becomes a derived target: the series side
of its comparison as the query, the rule's constant as the breach threshold, so a rule's series
go through the very same ingest -> forecast -> breach-prediction path as configured targets.
A rule fires `for:` after its condition starts holding, so its firing ETA is the crossing ETA
plus the rule's `for:`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.settings import BreachSettings, RulesSettings, TargetSettings
from ingest.errors import IngestError
from ingest.tables import SampleRow, SeriesRow
from models.rules.domain import AlertRule, RuleSet, RuleTarget, SeriesForecast
from models.rules.promql import Comparison, classify
from models.tables import BreachRow

#: Target names are stored in 128-character columns; the suffix takes 7 of them.
_NAME_ROOM = 120


def target_name(rule: AlertRule) -> str:
    """`rule_<group>_<alert>`, with anything but letters, digits and `_` made `_`."""
    raw = f"rule_{rule.group}_{rule.name}"
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", raw)).strip("_")[:_NAME_ROOM]


def derive(
    rules: Sequence[AlertRule], *, settings: RulesSettings, taken: Collection[str] = ()
) -> tuple[RuleTarget, ...]:
    """Each rule with its derived target, or the reason it has none. Names already `taken`
    (configured targets) and names two rules would share get a suffix from the rule's own
    expression and `for:`, so a rule keeps its name whatever the other rules are."""
    include = [re.compile(p) for p in settings.include]
    exclude = [re.compile(p) for p in settings.exclude]
    used = set(taken)
    out = []
    for rule in rules:
        if include and not any(p.search(rule.path) for p in include):
            out.append(RuleTarget(rule, None, None, "not matched by rules.include"))
            continue
        if any(p.search(rule.path) for p in exclude):
            out.append(RuleTarget(rule, None, None, "matched by rules.exclude"))
            continue
        found = classify(rule.expr)
        if not isinstance(found, Comparison):
            out.append(RuleTarget(rule, None, None, found.reason))
            continue
        name = target_name(rule)
        if name in used:
            digest = hashlib.sha256(f"{rule.expr}\n{rule.for_seconds}".encode()).hexdigest()
            name = f"{name}_{digest[:6]}"
        if name in used:
            out.append(RuleTarget(rule, found, None, "the same rule is listed twice"))
            continue
        used.add(name)
        target = TargetSettings(
            name=name,
            query=found.query,
            step=settings.step,
            lookback=settings.lookback,
            description=f"alerting rule {rule.path}: {rule.expr}",
            # The rule fires only if its condition holds for `for:` (rules.hold_for).
            breach=BreachSettings(
                threshold=found.threshold,
                direction=found.direction,
                hold=timedelta(seconds=rule.for_seconds if settings.hold_for else 0),
            ),
        )
        out.append(RuleTarget(rule, found, target))
    return tuple(out)


def refresh(
    previous: RuleSet | None,
    *,
    read: Callable[[], list[AlertRule]],
    settings: RulesSettings,
    taken: Collection[str],
    now: datetime,
) -> RuleSet:
    """The rules read now; if Prometheus cannot list them, the last known ones, with why."""
    try:
        rules = read()
    except IngestError as exc:
        kept = previous or RuleSet()
        return RuleSet(kept.rules, kept.read_at, now, exc.message)
    return RuleSet(derive(rules, settings=settings, taken=taken), now, now, None)


def forecasts(db_session: Session, targets: Collection[str]) -> dict[str, list[SeriesForecast]]:
    """The newest breach prediction of every series of the given rule targets, by target;
    the firing ETA is left to the caller (it knows the rule's `for:`)."""
    if not targets:
        return {}
    query = (
        sa.select(SeriesRow.target, SeriesRow.labels, BreachRow, SampleRow.value)
        .join(BreachRow, BreachRow.series_id == SeriesRow.id)
        .outerjoin(
            SampleRow,
            sa.and_(SampleRow.series_id == SeriesRow.id, SampleRow.ts == BreachRow.made_at),
        )
        .where(SeriesRow.target.in_(list(targets)))
        .order_by(SeriesRow.target, BreachRow.probability.desc(), SeriesRow.id)
    )
    out: dict[str, list[SeriesForecast]] = {}
    for target, labels, b, value in db_session.execute(query).all():
        out.setdefault(target, []).append(
            SeriesForecast(
                series_id=b.series_id,
                labels=dict(labels),
                value=value,
                threshold=b.threshold,
                direction=b.direction,
                probability=b.probability,
                crossing_eta=b.eta,
                firing_eta=None,
                warning=b.warning,
                warning_since=b.warning_since,
                made_at=b.made_at,
                model=b.model,
            )
        )
    return out


def rule_forecasts(
    db_session: Session, rule_set: RuleSet
) -> list[tuple[RuleTarget, list[SeriesForecast]]]:
    """Every rule with its series' forecasts (none for a rule that is not forecast), each
    with its firing ETA (`_firing`)."""
    found = forecasts(db_session, [t.name for t in rule_set.targets])
    out = []
    for rule in rule_set.rules:
        series = found.get(rule.target.name, []) if rule.target is not None else []
        out.append((rule, [_firing(rule.rule, s) for s in series]))
    return out


def _firing(rule: AlertRule, series: SeriesForecast) -> SeriesForecast:
    """The series' firing ETA: while the condition holds (an alert Prometheus reports pending
    or firing), its start + `for:`; else the predicted crossing + `for:`."""
    alert = rule.active(series.labels)
    if alert is not None:
        return replace(series, firing_eta=alert.active_at + rule.for_seconds, state=alert.state)
    eta = series.crossing_eta
    return replace(series, firing_eta=None if eta is None else eta + rule.for_seconds)
