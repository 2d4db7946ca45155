"""Proposals for incidents: `match.targets` picks playbooks by the metrics behind an incident,
and a grown incident whose top suspect changed supersedes its open proposals for the old one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from ingest.tables import SeriesRow
from rca.tables import IncidentRow
from remediation import flows
from remediation.playbooks import load_playbooks, match_playbooks
from remediation.tables import AuditRow, ProposalRow
from tests.unit.remediation.helpers import command_playbook

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DEMO = Path(__file__).resolve().parents[3] / "deploy" / "demo" / "playbooks"


def test_targets_match_by_glob_and_unknown_targets_only_match_the_default() -> None:
    errors = command_playbook("errors", targets=["errors", "cpu*"])
    anything = command_playbook("anything")
    playbooks = [errors, anything]

    def names(targets: list[str] | None) -> set[str]:
        return {p.name for p in match_playbooks(playbooks, "alarm", "cart", True, targets)}

    assert names(["errors"]) == {"errors", "anything"}
    assert names(["memory", "cpu_seconds"]) == {"errors", "anything"}
    assert names(["memory"]) == {"anything"}
    assert names(None) == {"anything"}  # a manual proposal: its targets are unknown


def test_the_demo_restarts_before_a_breach_or_on_errors_not_on_any_memory_anomaly() -> None:
    playbooks = load_playbooks(DEMO).values()

    def names(kind: str, targets: list[str]) -> set[str]:
        return {p.name for p in match_playbooks(playbooks, kind, "cart", True, targets)}

    assert names("alarm", ["memory"]) == set()
    assert names("breach", ["memory"]) == {"restart-service"}
    assert names("alarm", ["errors", "latency_p99"]) == {"restart-on-errors"}


def _incident(session: Session, suspect: str, series: list[int]) -> IncidentRow:
    row = IncidentRow(
        status="open",
        opened_at=NOW - timedelta(minutes=5),
        updated_at=NOW,
        last_alarm_at=NOW,
        services=["frontend", "cart"],
        series=series,
        symptom="frontend: anomaly score 4.0",
        top_suspect=suspect,
        report={"suspects": [{"service": suspect}]},
    )
    session.add(row)
    session.flush()
    return row


def test_a_changed_top_suspect_supersedes_the_open_proposals_once(
    sessions: sessionmaker[Session],
) -> None:
    playbooks = {"restart": command_playbook("restart", kinds=["incident"], suspects=True)}
    clock = FixedClock(NOW)
    with sessions() as session:
        series = SeriesRow(
            target="latency", key="k", labels={}, service="frontend", first_seen=NOW, last_seen=NOW
        )
        session.add(series)
        session.flush()
        incident = _incident(session, "frontend", [series.id])
        session.commit()
        incident_id = incident.id

        def propose() -> int:
            return flows.propose_for_incidents(
                session, [incident_id], playbooks=playbooks, clock=clock
            )

        assert (propose(), propose()) == (1, 0)  # the same suspect next cycle: nothing new
        # A breach joined: the report now points at cart.
        row = session.get(IncidentRow, incident_id)
        assert row is not None
        row.top_suspect = "cart"
        session.commit()
        assert (propose(), propose()) == (1, 0)
        proposals = session.execute(
            sa.select(ProposalRow.target, ProposalRow.status, ProposalRow.reason).order_by(
                ProposalRow.id
            )
        ).all()
        assert [(p.target, p.status) for p in proposals] == [
            ("frontend", "cancelled"),
            ("cart", "proposed"),
        ]
        assert (
            proposals[0].reason == f"superseded: incident {incident_id}'s top suspect is now cart"
        )
        cancels = session.scalars(sa.select(AuditRow.actor).where(AuditRow.action == "cancel"))
        assert list(cancels) == ["daemon"]
