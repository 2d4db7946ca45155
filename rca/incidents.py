"""Incidents: alarms and predicted-breach warnings grouped by time and call graph, each with its
root-cause report.

A trigger (a detector alarm, or an active breach warning: `rca.breaches`) joins an open incident
when its service is connected in the call graph (seen in the spans of the last `rca.baseline`)
to one of the incident's services, or is one of them, and the incident's last trigger is at
most `rca.join_within` old; otherwise it opens a new incident. An incident closes once none of
its triggers has fired for `rca.clear_after` (a breach warning that clears stops firing).
Whenever an incident opens, gains a service or gains a breach, its report is recomputed from a
bounded read of the span store. The onset: with a breach, the start of the breaching series'
trend (`rca.trend`, the earliest of the incident's breaches); otherwise the change in the spans
within `rca.onset_search` of the first alarm less `rca.alarm_lead` (`rca.windows.detect_onset`).
The reference runs from `rca.baseline` before that to `rca.guard` before the onset, the incident
at most `rca.incident` from the onset (the windows of `rca.windows.onset_windows`, the same rules
as `rca-eval`), with the alarms' scores as model evidence and the breaching series' trend as
breach evidence per service, and the stored metrics of the services in the spans (their
reference reaching `rca.metric_reference` back) as metric evidence. The report's JSON also says
what opened the incident (`origin`), its onset and where it came from, and the breaches it
holds. Everything happens in the caller's transaction: an incident is written whole or not at
all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.database import fetch_tuples
from core.settings import RcaSettings
from ingest.service import Reference, delete_selected, unreferenced
from ingest.span_store import read_spans
from ingest.tables import SampleRow, SeriesRow
from rca.analysis import annotate, call_edges, gather, rank
from rca.breaches import BreachWarning, breach_onset, breach_record, trend_evidence
from rca.findings import RcaReport, render_html, render_markdown
from rca.tables import IncidentRow
from rca.windows import DETECT_ONSET, detect_onset, onset_windows

OPEN, CLOSED = "open", "closed"
ALARM, BREACH = "alarm", "breach"


class AlarmLike(Protocol):
    """What grouping needs of an alarm (models.service.Alarm has it)."""

    @property
    def series_id(self) -> int: ...
    @property
    def service(self) -> str | None: ...
    @property
    def ts(self) -> int: ...
    @property
    def score(self) -> float: ...


@dataclass(frozen=True)
class GroupingResult:
    opened: list[int]
    updated: list[int]
    closed: list[int]


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 1e9)


def _ns_of(span: timedelta) -> int:
    return int(span.total_seconds() * 1e9)


def _components(edges: set[tuple[str, str]]) -> dict[str, int]:
    """Connected components of the undirected service graph: service -> component id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    roots: dict[str, int] = {}
    return {s: roots.setdefault(find(s), len(roots)) for s in list(parent)}


def group_alarms(
    db_session: Session, alarms: Sequence[AlarmLike], *, now: datetime, settings: RcaSettings
) -> GroupingResult:
    """`group_triggers` with alarms only."""
    return group_triggers(db_session, alarms, (), now=now, settings=settings)


@dataclass
class _Trigger:
    at: datetime  #: the newest evidence (an alarm's step, a breach's newest forecast)
    since: datetime  #: when it began (an incident it opens opens then)
    series_id: int
    service: str
    symptom: str
    breach: BreachWarning | None = None


def alarm_symptom(alarm: AlarmLike, service: str) -> str:
    """What an alarm says in an incident's symptom: the series' target and which of the
    detector's components raised it, with the numbers it was judged by when its evidence has
    them (e.g. "cart memory: 8.1e+08 above its range so far [3.2e+08, 6.4e+08]"). A trigger
    that says its own symptom (an Alertmanager alert's summary) is taken at its word."""
    own = getattr(alarm, "symptom", None)
    if isinstance(own, str) and own:
        return own
    target = getattr(alarm, "target", None)
    what = f"{service} {target}" if target else service
    evidence = getattr(alarm, "evidence", None) or {}
    value = evidence.get("value")
    if evidence.get("component") == "spatial" and value is not None and evidence.get("range"):
        low, high = evidence["range"]
        side = "above" if value >= high else "below"
        return f"{what}: {value:.3g} {side} its range so far [{low:.3g}, {high:.3g}]"
    if value is not None and evidence.get("mean") is not None:
        raw = evidence.get("raw_z", alarm.score)
        return (
            f"{what}: {value:.3g} {evidence.get('direction', 'away from')} its recent mean "
            f"{evidence['mean']:.3g} (z {raw:.1f})"
        )
    return f"{what}: anomaly score {alarm.score:.1f}"


def _triggers(alarms: Sequence[AlarmLike], breaches: Sequence[BreachWarning]) -> list[_Trigger]:
    out = []
    for alarm in alarms:
        at = datetime.fromtimestamp(alarm.ts, UTC)
        service = alarm.service or f"series-{alarm.series_id}"
        out.append(_Trigger(at, at, alarm.series_id, service, alarm_symptom(alarm, service)))
    for breach in breaches:
        at = datetime.fromtimestamp(breach.ts, UTC)
        since = min(at, datetime.fromtimestamp(breach.since, UTC))
        service = breach.service or f"series-{breach.series_id}"
        out.append(_Trigger(at, since, breach.series_id, service, breach.symptom(), breach))
    return sorted(out, key=lambda t: (t.at, t.series_id))


def group_triggers(
    db_session: Session,
    alarms: Sequence[AlarmLike],
    breaches: Sequence[BreachWarning] = (),
    *,
    now: datetime,
    settings: RcaSettings,
) -> GroupingResult:
    """Open, join and close incidents with the alarms firing now and the breach warnings
    active now; diagnose the incidents that opened or gained a service or a breach."""
    window_start = now - settings.baseline
    recent = read_spans(db_session, _ns(window_start), _ns(now) + 1)
    component = _components(call_edges(annotate(recent))) if len(recent) else {}

    def connected(a: str, b: str) -> bool:
        return a == b or (a in component and component.get(a) == component.get(b))

    open_rows = list(db_session.scalars(sa.select(IncidentRow).where(IncidentRow.status == OPEN)))
    opened: list[IncidentRow] = []
    changed: set[int] = set()
    #: per incident (by id()): what opened it, and the breaches it gained this time
    origin: dict[int, str] = {}
    gained: dict[int, list[dict[str, Any]]] = {}
    for trigger in _triggers(alarms, breaches):
        service, at = trigger.service, trigger.at
        home = next(
            (
                row
                for row in [*open_rows, *opened]
                if row.last_alarm_at >= at - settings.join_within
                and any(connected(service, s) for s in row.services)
            ),
            None,
        )
        if home is None:
            home = IncidentRow(
                status=OPEN,
                opened_at=trigger.since,
                updated_at=now,
                last_alarm_at=at,
                services=[service],
                series=[trigger.series_id],
                symptom=trigger.symptom,
            )
            db_session.add(home)
            opened.append(home)
            origin[id(home)] = BREACH if trigger.breach is not None else ALARM
        if service not in home.services:
            home.services = [*home.services, service]
            changed.add(id(home))
        if trigger.series_id not in home.series:
            home.series = [*home.series, trigger.series_id]
        if trigger.breach is not None:
            held = {b["series_id"] for b in [*breach_records(home), *gained.get(id(home), [])]}
            if trigger.breach.series_id not in held:
                gained.setdefault(id(home), []).append(
                    _record(db_session, trigger.breach, settings=settings)
                )
                changed.add(id(home))
        home.last_alarm_at = max(home.last_alarm_at, at)
        home.updated_at = now
    db_session.flush()
    scores: dict[str, float] = {}
    for alarm in alarms:
        name = alarm.service or f"series-{alarm.series_id}"
        scores[name] = max(scores.get(name, 0.0), float(alarm.score))
    for row in [*opened, *(r for r in open_rows if id(r) in changed)]:
        _diagnose(
            db_session,
            row,
            now=now,
            settings=settings,
            scores=scores,
            origin=origin.get(id(row)),
            gained=gained.get(id(row), []),
        )
    closed = []
    for row in open_rows:
        if row.last_alarm_at < now - settings.clear_after:
            row.status, row.closed_at, row.updated_at = CLOSED, now, now
            closed.append(row.id)
    db_session.flush()
    return GroupingResult(
        opened=[r.id for r in opened],
        updated=[r.id for r in open_rows if id(r) in changed],
        closed=closed,
    )


def _record(db_session: Session, breach: BreachWarning, *, settings: RcaSettings) -> dict[str, Any]:
    """The breach as the incident keeps it, with the onset of its trend (the warning's start
    less `rca.alarm_lead` when the samples show no trend)."""
    look_back = int(settings.metric_reference.total_seconds())
    onset = breach_onset(db_session, breach, look_back=look_back)
    fallback = breach.since - int(settings.alarm_lead.total_seconds())
    return breach_record(
        breach, onset=onset if onset is not None else fallback, onset_found=onset is not None
    )


def breach_records(row: IncidentRow) -> list[dict[str, Any]]:
    """The breaches that opened or joined an incident, as its report keeps them."""
    return list((row.report or {}).get("breaches", []))


def trigger_kinds(row: IncidentRow) -> list[str]:
    """What fired in an incident: "breach" when a breach warning opened or joined it, "alarm"
    when one of its series alarmed (a series that is not a breach's)."""
    breaching = {int(b["series_id"]) for b in breach_records(row)}
    kinds = [BREACH] if breaching else []
    if any(s not in breaching for s in row.series):
        kinds.append(ALARM)
    return kinds


def _diagnose(
    db_session: Session,
    row: IncidentRow,
    *,
    now: datetime,
    settings: RcaSettings,
    scores: Mapping[str, float],
    origin: str | None = None,
    gained: Sequence[dict[str, Any]] = (),
) -> None:
    breaches = [*breach_records(row), *gained]
    if breaches:
        # A breach's incident begins where its trend began: no search in the spans (a slow
        # trend leaves no sharp change there).
        near = min(int(b["onset"]) for b in breaches) * 10**9
    else:
        # An alarm fires some scores after its series moved: look for the change in the spans
        # from the first alarm less that lead, so the reference (which also ends a guard band
        # earlier) holds no spans of the fault.
        near = _ns(row.opened_at - settings.alarm_lead)
    first = near - _ns_of(settings.baseline)
    search_s = settings.onset_search.total_seconds()
    incident_s = settings.incident.total_seconds()
    # A bounded read: the reference and at most `incident` past the latest onset found.
    last = min(_ns(now) + 1, near + int((search_s + incident_s) * 1e9))
    spans = read_spans(db_session, first, last)
    if len(spans):
        spans = annotate(spans)  # once, for the graph, the onset and the analysis
    search = DETECT_ONSET and len(spans) and not breaches
    onset = detect_onset(spans, near, search_s=search_s) if search else near
    reference, incident = onset_windows(
        onset,
        start_ns=first,
        end_ns=last,
        guard_s=settings.guard.total_seconds(),
        incident_s=incident_s,
    )
    if len(spans):
        # Only the part of the call graph the incident's services belong to.
        component = _components(call_edges(spans))
        mine = {component[s] for s in row.services if s in component}
        keep = {s for s, c in component.items() if c in mine}
        spans = spans[spans["service"].isin(keep)]
    relevant = {s: v for s, v in scores.items() if s in row.services}
    # The stored metrics of the same services, over a longer reference than the spans'. A
    # breach's trend runs up to now: its metrics' incident window does too.
    services = sorted(set(spans["service"]) | set(row.services)) if len(spans) else row.services
    metric_start = onset - _ns_of(settings.metric_reference)
    metric_incident = (incident[0], _ns(now) + 1) if breaches else incident
    metrics = metric_frame(db_session, services, start_ns=metric_start, end_ns=metric_incident[1])
    gathered = gather(
        spans if len(spans) else None,
        baseline=reference,
        incident=incident,
        metrics=metrics if len(metrics.columns) else None,
        metric_scores=relevant,
        metric_windows=((metric_start, reference[1]), metric_incident),
    )
    for record in breaches:
        evidence = trend_evidence(
            db_session,
            record,
            start=metric_start // 10**9,
            guard=int(settings.guard.total_seconds()),
            end=int(now.timestamp()),
        )
        service = record["service"] or f"series-{record['series_id']}"
        gathered.evidence.setdefault(service, []).append(evidence)
    report = rank(gathered, symptom=row.symptom)
    previous = row.report or {}
    store_report(
        row,
        report,
        origin=origin or previous.get("origin", ALARM),
        onset={
            "at": datetime.fromtimestamp(onset / 1e9, UTC).isoformat(),
            "from": "breach trend" if breaches else ("spans" if search else "alarm"),
        },
        breaches=breaches,
    )


def metric_frame(
    db_session: Session, services: Sequence[str], *, start_ns: int, end_ns: int
) -> pd.DataFrame:
    """The stored samples of the services' series in [start, end) as the wide frame `analyze`
    takes: UTC timestamps by "<service>|<target>{<other labels>}" columns."""
    series = db_session.execute(
        sa.select(SeriesRow.id, SeriesRow.service, SeriesRow.target, SeriesRow.labels).where(
            SeriesRow.service.in_(list(services))
        )
    ).all()
    if not series:
        return pd.DataFrame()
    names = {}
    for series_id, service, target, labels in series:
        extra = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if v != service)
        names[series_id] = f"{service}|{target}" + (f"{{{extra}}}" if extra else "")
    rows = fetch_tuples(
        db_session,
        sa.select(SampleRow.series_id, SampleRow.ts, SampleRow.value).where(
            SampleRow.series_id.in_(list(names)),
            SampleRow.ts >= start_ns // 10**9,
            SampleRow.ts < -(-end_ns // 10**9),
        ),
    )
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows, columns=["series_id", "ts", "value"])
    frame["column"] = frame["series_id"].map(names)
    wide = frame.pivot_table(index="ts", columns="column", values="value", aggfunc="last")
    wide.index = pd.to_datetime(wide.index, unit="s", utc=True)
    return wide


def store_report(row: IncidentRow, report: RcaReport, **about: Any) -> None:
    """The report on the row in its three forms; `about` adds keys to the JSON (what opened
    the incident, its onset, its breaches)."""
    row.report = {**report.to_dict(), **about}
    row.markdown = render_markdown(report)
    row.html = render_html(report)
    row.top_suspect = report.suspects[0].service if report.suspects else None


def list_incidents(
    db_session: Session,
    *,
    status: str | None = None,
    service: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[IncidentRow]:
    query = sa.select(IncidentRow).order_by(IncidentRow.opened_at.desc(), IncidentRow.id.desc())
    if status is not None:
        query = query.where(IncidentRow.status == status)
    if since is not None:
        query = query.where(IncidentRow.opened_at >= since)
    if until is not None:
        query = query.where(IncidentRow.opened_at <= until)
    if service is not None:
        # `services` is a JSON list: match the quoted name in its text (portable across both
        # databases), so that the page is cut in SQL, not after reading every incident.
        quoted = json.dumps(service).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            sa.or_(
                sa.cast(IncidentRow.services, sa.Text).like(f"%{quoted}%", escape="\\"),
                IncidentRow.top_suspect == service,
            )
        )
    return list(db_session.scalars(query.offset(offset).limit(limit)))


def get_incident(db_session: Session, incident_id: int) -> IncidentRow | None:
    return db_session.get(IncidentRow, incident_id)


def prune_incidents(
    db_session: Session, *, before: datetime, keep: Sequence[Reference] = (), limit: int
) -> int:
    """Delete at most `limit` incidents closed before `before`. Open incidents always stay, and
    so do those named by `keep` (the caller passes proposals' evidence: an incident a proposal
    or its execution was made for stays as long as they do). Returns how many went; fewer than
    `limit` means nothing older is left."""
    doomed = (
        sa.select(IncidentRow.id)
        .where(
            IncidentRow.status == CLOSED,
            IncidentRow.closed_at < before,
            *unreferenced(IncidentRow.id, keep),
        )
        .order_by(IncidentRow.id)
        .limit(limit)
    )
    return delete_selected(db_session, IncidentRow.id, doomed)
