"""Predicted breaches and open incidents reach a real Alertmanager through the daemon's cycle
stage, are re-sent, and resolve when the warning clears or the incident closes; an
Alertmanager that is down does not stop the one that is up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.settings import Settings
from ingest.tables import SeriesRow
from models.tables import BreachRow
from prognos import jobs
from prognos.context import ServiceContext
from rca.alertmanager.tables import SentAlertRow
from rca.tables import IncidentRow
from tests.conftest import need_server
from tests.support.servers import AlertmanagerServer, ServerMissing, free_port, start_alertmanager
from tests.unit.fakes import FakeSource, make_target

pytestmark = pytest.mark.timeout(120)

PUBLIC = "https://prognos.example"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerServer]:
    try:
        server = start_alertmanager(tmp_path_factory.mktemp("alertmanager"))
    except ServerMissing as exc:
        need_server(exc)
    yield server
    server.stop()


def _context(engine: Engine, sessions: sessionmaker[Session], urls: list[str]) -> ServiceContext:
    # Alertmanager drops alerts that ended in the past: the clock is the wall clock's now.
    return ServiceContext(
        settings=Settings(alertmanager={"urls": urls, "public_url": PUBLIC}),
        engine=engine,
        sessions=sessions,
        source=FakeSource([]),
        targets=[make_target("memory")],
        clock=FixedClock(datetime.now(UTC).replace(microsecond=0)),
        playbooks={},
    )


def _breach(session: Session, *, now: datetime, pod: str) -> int:
    series = SeriesRow(
        target="memory",
        key=f"memory-{pod}",
        labels={"service": "cart", "pod": pod},
        service="cart",
        first_seen=now - timedelta(hours=1),
        last_seen=now,
    )
    session.add(series)
    session.flush()
    made_at = int(now.timestamp()) - 60
    session.add(
        BreachRow(
            series_id=series.id,
            made_at=made_at,
            threshold=1e9,
            direction="above",
            probability=0.83,
            eta=made_at + 24 * 60,
            streak=3,
            warning=True,
            warning_since=made_at - 120,
            model="lstm v1",
            updated_at=now,
        )
    )
    session.commit()
    return series.id


def _incident(session: Session, *, now: datetime) -> int:
    row = IncidentRow(
        status="open",
        opened_at=now - timedelta(minutes=3),
        updated_at=now,
        last_alarm_at=now,
        services=["checkout", "cart"],
        series=[],
        symptom="checkout latency: 0.9 above its recent mean 0.2 (z 7.0)",
        top_suspect="cart",
    )
    session.add(row)
    session.commit()
    return row.id


def test_a_breach_warning_and_an_incident_fire_in_alertmanager_and_resolve(
    engine: Engine, sessions: sessionmaker[Session], alertmanager: AlertmanagerServer
) -> None:
    pod = f"cart-{free_port()}"  # one Alertmanager serves both databases' runs
    context = _context(engine, sessions, [alertmanager.url])
    clock = context.clock
    assert isinstance(clock, FixedClock)
    with sessions() as session:
        series_id = _breach(session, now=clock.now(), pod=pod)
        incident_id = _incident(session, now=clock.now())

    jobs.alertmanager_cycle(context)

    (breach,) = alertmanager.alerts(alertname="PrognosBreachPredicted", pod=pod)
    assert breach["labels"] == {
        "alertname": "PrognosBreachPredicted",
        "severity": "warning",
        "service": "cart",
        "target": "memory",
        "pod": pod,
    }
    annotations = breach["annotations"]
    assert annotations["summary"].startswith(f"cart memory{{pod={pod}}}: predicted to cross 1e9")
    assert "probability 83%" in annotations["description"]
    assert "in ~24 min" in annotations["description"]
    assert annotations["runbook_url"] == f"{PUBLIC}/ui#proposals"
    assert breach["generatorURL"] == f"{PUBLIC}/ui?series={series_id}#series"
    assert breach["status"]["state"] == "active"
    ends = datetime.fromisoformat(breach["endsAt"].replace("Z", "+00:00"))
    assert ends > clock.now() + timedelta(minutes=3)  # 4 resends ahead: it outlives a cycle

    incidents = alertmanager.alerts(alertname="PrognosIncident", incident=str(incident_id))
    assert [a["labels"]["service"] for a in incidents] == ["checkout"]
    assert incidents[0]["labels"]["severity"] == "critical"
    assert incidents[0]["annotations"]["top_suspect"] == "cart"

    # Within `resend_every` nothing is posted again; after it, everything firing is.
    clock.advance(timedelta(seconds=30))
    jobs.alertmanager_cycle(context)
    with sessions() as session:
        sent = {r.key: r.sent_at for r in session.query(SentAlertRow)}
    assert sent[f"breach:{series_id}"] == clock.now() - timedelta(seconds=30)
    clock.advance(timedelta(seconds=31))
    jobs.alertmanager_cycle(context)
    with sessions() as session:
        assert session.get(SentAlertRow, f"breach:{series_id}").sent_at == clock.now()  # type: ignore[union-attr]

    # The warning clears and the incident closes: both resolve (endsAt now), and are gone
    # from Alertmanager's active alerts.
    with sessions() as session:
        session.get(BreachRow, series_id).warning = False  # type: ignore[union-attr]
        session.get(IncidentRow, incident_id).status = "closed"  # type: ignore[union-attr]
        session.commit()
    clock.advance(timedelta(seconds=1))
    context.clock = FixedClock(datetime.now(UTC))  # resolved at the wall clock's now
    jobs.alertmanager_cycle(context)
    assert alertmanager.alerts(alertname="PrognosBreachPredicted", pod=pod) == []
    assert alertmanager.alerts(alertname="PrognosIncident", incident=str(incident_id)) == []
    with sessions() as session:
        assert session.query(SentAlertRow).count() == 0  # delivered: nothing left to resolve


def test_an_alertmanager_that_is_down_is_retried_and_does_not_stop_the_other(
    engine: Engine,
    sessions: sessionmaker[Session],
    alertmanager: AlertmanagerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pod = f"cart-{free_port()}"
    down = f"http://127.0.0.1:{free_port()}"
    context = _context(engine, sessions, [down, alertmanager.url])
    with sessions() as session:
        series_id = _breach(session, now=context.clock.now(), pod=pod)

    jobs.alertmanager_cycle(context)  # never raises: the cycle's later stages still run

    assert len(alertmanager.alerts(alertname="PrognosBreachPredicted", pod=pod)) == 1
    assert f"Alertmanager {down} unreachable" in caplog.text
    with sessions() as session:  # not accepted by both: re-sent next cycle, whatever the cadence
        assert session.get(SentAlertRow, f"breach:{series_id}").sent_at is None  # type: ignore[union-attr]


def test_without_alertmanager_urls_nothing_is_remembered(
    engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    context = _context(engine, sessions, [])
    with sessions() as session:
        _breach(session, now=context.clock.now(), pod="cart-0")
    jobs.alertmanager_cycle(context)
    with sessions() as session:
        assert session.query(SentAlertRow).count() == 0
