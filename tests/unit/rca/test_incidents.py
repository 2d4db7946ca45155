"""Alarms grouped into incidents by time and call graph, diagnosed from the span store, closed
when quiet, and served over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.settings import RcaSettings
from ingest.span_store import store_spans
from rca import incidents
from rca.incidents import group_alarms, list_incidents
from sim.traces import Fault, System

ONSET = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SYSTEM = System.generate(8, seed=3)
SETTINGS = RcaSettings()


@dataclass(frozen=True)
class Alarm:
    series_id: int
    service: str | None
    ts: int
    score: float


def at(minutes: float) -> int:
    return int((ONSET + timedelta(minutes=minutes)).timestamp())


def store_traffic(sessions: sessionmaker[Session], culprit: str) -> None:
    onset_ns = int(ONSET.timestamp()) * 10**9
    fault = Fault("slow", culprit, SYSTEM.operations[culprit][0], start_ns=onset_ns)
    spans = SYSTEM.traces(
        start_ns=onset_ns - 30 * 60 * 10**9,
        end_ns=onset_ns + 3 * 60 * 10**9,
        requests=1500,
        fault=fault,
    )
    with sessions() as session:
        store_spans(session, spans)
        session.commit()


def test_connected_alarms_make_one_incident_whose_report_names_the_culprit(
    sessions: sessionmaker[Session],
) -> None:
    store_traffic(sessions, "svc06")
    now = ONSET + timedelta(minutes=3)
    alarms = [
        Alarm(1, "frontend", at(1), 6.0),  # the symptom at the entry
        Alarm(2, "svc06", at(2), 5.0),  # connected through the call graph: joins
        Alarm(3, "batch-job", at(2), 7.0),  # no spans connect it: an incident of its own
    ]
    with sessions() as session:
        result = group_alarms(session, alarms, now=now, settings=SETTINGS)
        session.commit()
        assert len(result.opened) == 2 and not result.closed
        rows = {r.services[0]: r for r in list_incidents(session, status="open")}
        shop, batch = rows["frontend"], rows["batch-job"]
        assert shop.services == ["frontend", "svc06"] and shop.series == [1, 2]
        assert shop.top_suspect == "svc06"
        assert shop.report is not None and shop.report["suspects"][0]["path"][-1] == "svc06"
        assert "svc06" in (shop.markdown or "") and "<table>" in (shop.html or "")
        assert batch.services == ["batch-job"] and batch.top_suspect == "batch-job"

        # Still firing a minute later: nothing new opens.
        again = group_alarms(
            session,
            [Alarm(2, "svc06", at(3), 5.5)],
            now=now + timedelta(minutes=1),
            settings=SETTINGS,
        )
        session.commit()
        assert again.opened == [] and again.closed == []

        # Quiet for longer than clear_after: both close.
        later = now + SETTINGS.clear_after + timedelta(minutes=2)
        closed = group_alarms(session, [], now=later, settings=SETTINGS)
        session.commit()
        assert sorted(closed.closed) == sorted([shop.id, batch.id])
        assert list_incidents(session, status="open") == []
        assert [r.id for r in list_incidents(session, service="svc06")] == [shop.id]


def test_alarms_too_far_apart_open_separate_incidents(sessions: sessionmaker[Session]) -> None:
    now = ONSET + timedelta(minutes=30)
    alarms = [Alarm(1, "cart", at(0), 6.0), Alarm(1, "cart", at(20), 6.0)]
    with sessions() as session:
        result = group_alarms(session, alarms, now=now, settings=SETTINGS)
        session.commit()
        assert len(result.opened) == 2


def test_diagnosis_reads_a_bounded_window_however_long_the_incident_is_open(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_traffic(sessions, "svc06")
    reads: list[tuple[int, int]] = []
    real = incidents.read_spans

    def spy(session: Session, start_ns: int, end_ns: int, *args: object) -> pd.DataFrame:
        reads.append((start_ns, end_ns))
        return real(session, start_ns, end_ns)

    monkeypatch.setattr(incidents, "read_spans", spy)
    now = ONSET + timedelta(hours=6)  # a long open incident, its alarm still joining
    with sessions() as session:
        group_alarms(session, [Alarm(2, "svc06", at(1), 5.0)], now=now, settings=SETTINGS)
        session.commit()
        (row,) = list_incidents(session, status="open")
        assert row.top_suspect == "svc06"
    diagnosis = reads[-1]
    near = int((ONSET + timedelta(minutes=1) - SETTINGS.alarm_lead).timestamp()) * 10**9
    assert diagnosis[0] == near - int(SETTINGS.baseline.total_seconds()) * 10**9
    reach = SETTINGS.onset_search + SETTINGS.incident
    assert diagnosis[1] <= near + int(reach.total_seconds() * 10**9)


def test_a_pod_metric_that_rises_names_its_service_when_the_spans_say_little(
    sessions: sessionmaker[Session],
) -> None:
    """The daemon's diagnosis reads the stored metrics of the services in the spans, with a
    reference hours long: a CPU series that jumps at the onset names its service."""
    import math

    from ingest import service as ingest_service
    from tests.unit.fakes import FakeSeries, FakeSource, make_target

    onset_ns = int(ONSET.timestamp()) * 10**9
    spans = SYSTEM.traces(
        start_ns=onset_ns - 30 * 60 * 10**9, end_ns=onset_ns + 3 * 60 * 10**9, requests=1500
    )  # no fault in the spans
    onset_s = int(ONSET.timestamp())

    def cpu(service: str):  # type: ignore[no-untyped-def]
        def value(ts: int) -> float:
            base = 0.3 + 0.02 * math.sin(ts * 12.9898 + len(service))
            return base + (0.5 if service == "svc05" and ts >= onset_s else 0.0)

        return value

    source = FakeSource(
        [FakeSeries("cpu", {"service": s, "pod": f"{s}-0"}, value=cpu(s)) for s in SYSTEM.services]
    )
    with sessions() as session:
        store_spans(session, spans)
        ingest_service.ingest_target(
            session,
            source=source,
            target=make_target("cpu", lookback=timedelta(hours=6)),
            now=ONSET + timedelta(minutes=3),
            lag=timedelta(0),
            max_catchup=timedelta(days=1),
        )
        session.commit()
        group_alarms(
            session,
            [Alarm(1, "frontend", at(1), 5.0)],
            now=ONSET + timedelta(minutes=3),
            settings=SETTINGS,
        )
        session.commit()
        (row,) = list_incidents(session, status="open")
    assert row.top_suspect == "svc05"
    named = row.report["suspects"][0]
    assert "metric" in str(named)


def test_listing_by_service_is_cut_in_the_database_and_matches_names_exactly(
    sessions: sessionmaker[Session],
) -> None:
    from rca.tables import IncidentRow

    names = [["cart_db"], ["cartXdb"], ["pay%", "cart_db"], ["front"], ["cart_db2"]]
    with sessions() as session:
        for i, services in enumerate(names):
            t = ONSET + timedelta(minutes=i)
            session.add(
                IncidentRow(
                    status="open",
                    opened_at=t,
                    updated_at=t,
                    last_alarm_at=t,
                    services=services,
                    series=[],
                    symptom="x",
                    top_suspect=None,
                )
            )
        session.commit()
        found = list_incidents(session, service="cart_db", limit=10)
        assert [r.services for r in found] == [["pay%", "cart_db"], ["cart_db"]]  # newest first
        assert [r.services for r in list_incidents(session, service="pay%")] == [
            ["pay%", "cart_db"]
        ]
        page = list_incidents(session, service="cart_db", limit=1, offset=1)
        assert [r.services for r in page] == [["cart_db"]]
