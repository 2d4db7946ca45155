"""The daemon's group stage with predicted breaches: a breach and the alarms it causes make one
incident and one proposal set for its top suspect, whose evidence names the incident and the
breach; a breach no longer proposes on its own."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.settings import Settings
from prognos import jobs
from prognos.context import ServiceContext
from remediation.tables import ProposalRow
from tests.unit.fakes import FakeSource, make_target
from tests.unit.rca import leak_data
from tests.unit.rca.leak_data import NEWEST, NOW, STEP, Leak, store_alarms, store_breach, store_leak
from tests.unit.remediation.helpers import command_playbook


def _context(engine: Engine, sessions: sessionmaker[Session]) -> ServiceContext:
    return ServiceContext(
        settings=Settings(),
        engine=engine,
        sessions=sessions,
        source=FakeSource([]),
        targets=[make_target("memory", lookback=timedelta(minutes=10))],
        clock=FixedClock(NOW),
        playbooks={
            "restart": command_playbook("restart", kinds=["incident"], suspects=True),
            "scale": command_playbook("scale", kinds=["breach"]),
            "clear": command_playbook("clear", kinds=["alarm"]),
        },
    )


def test_a_breach_and_its_alarms_give_one_incident_and_one_proposal_set(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        ids = store_leak(session, Leak())
        memory, latency = ids[("cart", "memory")], ids[("frontend", "latency")]
        store_alarms(session, latency, 1, 3)  # the caller's latency alarms, a connected service
        session.commit()
    context = _context(engine, sessions)

    result = jobs.group_incidents(context)
    assert len(result.opened) == 1
    (incident_id,) = result.opened
    # The next cycles: both still fire, the incident holds them, nothing is proposed again.
    for minutes in (1, 2):
        assert isinstance(context.clock, FixedClock)
        context.clock.advance(timedelta(minutes=1))
        with sessions() as session:
            store_breach(session, memory, made_at=NEWEST + minutes * STEP, since=NEWEST - STEP)
            session.commit()
        assert jobs.group_incidents(context).opened == []

    with sessions() as session:
        proposals = session.scalars(sa.select(ProposalRow).order_by(ProposalRow.id)).all()
    # Every playbook once, for the top suspect (the leaking service, not the alarming caller):
    # "incident", and the kinds of its triggers ("breach", "alarm").
    assert sorted((p.playbook, p.target) for p in proposals) == [
        ("clear", "cart"),
        ("restart", "cart"),
        ("scale", "cart"),
    ]
    for proposal in proposals:
        evidence = proposal.evidence
        assert evidence["incident_id"] == incident_id
        assert evidence["breach"]["series_id"] == memory
        assert evidence["breach"]["probability"] == 0.83
        assert evidence["breach"]["eta"] == NEWEST + 24 * 60


def test_a_breach_alone_proposes_for_its_incident_not_on_its_own(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        ids = leak_data.store_metrics(session, Leak(), hours=2)
        store_breach(session, ids[("cart", "memory")])
        session.commit()
    context = _context(engine, sessions)
    jobs.cycle(context)  # ingest (nothing to pull), forecast (no model), group, expire
    with sessions() as session:
        proposals = session.scalars(sa.select(ProposalRow)).all()
    # No alarm in this incident: the alarm-only playbook stays out.
    assert sorted((p.playbook, p.target) for p in proposals) == [
        ("restart", "cart"),
        ("scale", "cart"),
    ]
    assert all(p.evidence["symptom"].startswith("cart memory{pod=cart-0}") for p in proposals)
    assert not hasattr(jobs, "propose_for_breaches")
