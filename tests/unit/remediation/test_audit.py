"""The audit chain: every kind of tampering is detected; concurrent appends never fork."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from remediation import audit
from remediation.domain import ReasonRequiredError
from remediation.tables import AuditHeadRow, AuditRow
from tests.unit.remediation.helpers import audit_approvals, later

Sessions = sessionmaker[Session]


@pytest.fixture
def head(tmp_path: Path) -> Path:
    return tmp_path / "anchor" / "audit-head"


def fill(sessions: Sessions, head: Path, count: int = 5) -> None:
    audit_approvals(
        sessions,
        head,
        count,
        data=lambda i: {"digest": f"{i:064x}", "n": i, "nested": {"b": 1, "a": [1.5, None]}},
        now=later,
    )


def check(sessions: Sessions, head: Path) -> audit.VerifyResult:
    with sessions() as session:
        return audit.verify(session, head)


def test_an_untouched_chain_verifies_and_the_checkpoint_follows_the_head(
    sessions: Sessions, head: Path
) -> None:
    fill(sessions, head)
    result = check(sessions, head)
    assert result.ok, result.problems
    assert result.entries == 5 and result.head_seq == 5 and result.unanchored == 0
    assert json.loads(head.read_text())["seq"] == 5
    assert result.checkpoint is not None and result.checkpoint.hash == result.head_hash


def test_an_edited_entry_is_detected(sessions: Sessions, head: Path) -> None:
    fill(sessions, head)
    with sessions() as session:
        session.execute(sa.update(AuditRow).where(AuditRow.seq == 3).values(actor="mallory"))
        session.commit()
    result = check(sessions, head)
    assert not result.ok
    assert any("entry 3" in p and "edited" in p for p in result.problems)


def test_a_removed_entry_is_detected(sessions: Sessions, head: Path) -> None:
    fill(sessions, head)
    with sessions() as session:
        session.execute(sa.delete(AuditRow).where(AuditRow.seq == 2))
        session.commit()
    result = check(sessions, head)
    assert not result.ok
    assert any("missing" in p for p in result.problems)


def test_reordered_entries_are_detected(sessions: Sessions, head: Path) -> None:
    fill(sessions, head)
    with sessions() as session:
        for old, new in ((2, 100), (3, 2), (100, 3)):
            session.execute(sa.update(AuditRow).where(AuditRow.seq == old).values(seq=new))
        session.commit()
    result = check(sessions, head)
    assert not result.ok
    assert any("entry 2" in p for p in result.problems)


def test_a_truncated_tail_is_detected_by_the_checkpoint(sessions: Sessions, head: Path) -> None:
    fill(sessions, head)
    with sessions() as session:
        session.execute(sa.delete(AuditRow).where(AuditRow.seq >= 4))
        session.commit()
    result = check(sessions, head)
    assert not result.ok
    assert any("removed from the tail" in p for p in result.problems)


def test_a_fully_rewritten_chain_is_detected_by_the_checkpoint(
    sessions: Sessions, head: Path
) -> None:
    fill(sessions, head)
    with sessions() as session:  # a careful attacker recomputes every hash
        rows = list(session.execute(sa.select(AuditRow).order_by(AuditRow.seq)).scalars())
        prev = audit.GENESIS
        for row in rows:
            row.actor = "mallory"
            row.prev_hash = prev
            row.hash = audit.entry_hash(
                seq=row.seq,
                ts=row.ts,
                actor=row.actor,
                action=row.action,
                subject=row.subject,
                data=row.data,
                prev_hash=prev,
            )
            prev = row.hash
        session.commit()
    result = check(sessions, head)
    assert not result.ok
    assert len(result.problems) == 1
    assert result.problems[0].startswith(
        "entry 5 differs from the checkpoint's hash: the chain was rewritten"
    )


def test_a_missing_checkpoint_is_reported(sessions: Sessions, head: Path) -> None:
    fill(sessions, head)
    head.unlink()
    assert not check(sessions, head).ok


def test_a_rolled_back_append_does_not_move_the_checkpoint(sessions: Sessions, head: Path) -> None:
    fill(sessions, head, count=2)
    with sessions() as session:
        audit.append(session, actor="x", action="y", subject="z", checkpoint=head)
        session.rollback()
    assert json.loads(head.read_text())["seq"] == 2
    assert check(sessions, head).ok


def test_concurrent_appends_form_one_chain(sessions: Sessions, head: Path) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        barrier.wait()
        try:
            for i in range(5):
                with sessions() as session:
                    audit.append(
                        session,
                        actor=name,
                        action="step",
                        subject="execution:1",
                        data={"i": i},
                        checkpoint=head,
                    )
                    session.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert errors == []
    result = check(sessions, head)
    assert result.ok, result.problems
    assert result.entries == 20 and result.head_seq == 20
    assert json.loads(head.read_text())["seq"] == 20


def test_the_session_can_name_the_checkpoint(sessions: Sessions, head: Path) -> None:
    with sessions() as session:
        session.info[audit.CHECKPOINT_INFO_KEY] = head
        audit.append(session, actor="executor", action="step.start", subject="execution:1")
        session.commit()
    assert json.loads(head.read_text())["seq"] == 1


def test_a_session_factory_can_be_anchored_once(sessions: Sessions, head: Path) -> None:
    audit.anchor_sessions(sessions, head)
    with sessions() as session:
        audit.append(session, actor="executor", action="outcome", subject="execution:1")
        session.commit()
    assert json.loads(head.read_text())["seq"] == 1
    assert check(sessions, head).ok


def truncate(sessions: Sessions, keep: int) -> None:
    """What restoring an older backup does to the chain: its newest entries are gone."""
    with sessions() as session:
        session.execute(sa.delete(AuditRow).where(AuditRow.seq > keep))
        last = session.execute(sa.select(AuditRow).where(AuditRow.seq == keep)).scalar_one()
        session.execute(sa.update(AuditHeadRow).values(seq=keep, hash=last.hash))
        session.commit()


def test_reanchoring_moves_the_anchor_back_and_is_itself_in_the_chain(
    sessions: Sessions, head: Path
) -> None:
    fill(sessions, head)
    old = audit.read_checkpoint(head)
    truncate(sessions, keep=3)
    with sessions() as session:
        kept = session.execute(sa.select(AuditRow.hash).where(AuditRow.seq == 3)).scalar_one()
        done = audit.reanchor(session, head, actor="cli:root", reason="restored Monday's backup")
    assert done.old_anchor == old and done.chain_head == audit.Checkpoint(3, kept)
    assert done.entry.seq == 4 and done.entry.action == "reanchor"
    assert done.entry.data == {
        "reason": "restored Monday's backup",
        "old_anchor": {"seq": 5, "hash": old.hash if old else None},
        "new_anchor": {"seq": 3, "hash": kept},
    }
    assert audit.read_checkpoint(head) == audit.Checkpoint(4, done.entry.hash)
    result = check(sessions, head)
    assert result.ok, result.problems
    fill(sessions, head, count=1)  # the anchor follows new entries again
    assert audit.read_checkpoint(head).seq == 5  # type: ignore[union-attr]


def test_new_entries_after_a_restore_do_not_carry_the_anchor_past_the_lost_ones(
    sessions: Sessions, head: Path
) -> None:
    fill(sessions, head)
    truncate(sessions, keep=2)
    fill(sessions, head, count=4)  # seq 3..6: past the anchor at 5, but a different chain
    assert audit.read_checkpoint(head).seq == 5  # type: ignore[union-attr]
    result = check(sessions, head)
    assert not result.ok
    assert "entry 5 differs from the checkpoint's hash" in result.problems[0]
    assert "prognos audit reanchor --reason" in result.problems[0]
    with sessions() as session:
        audit.reanchor(session, head, actor="cli:root", reason="restore drill")
    assert check(sessions, head).ok


def test_reanchoring_is_refused_for_a_damaged_chain_an_agreeing_anchor_or_no_reason(
    sessions: Sessions, head: Path
) -> None:
    with sessions() as session, pytest.raises(audit.NothingToReanchorError, match="no entries"):
        audit.reanchor(session, head, actor="cli:root", reason="empty")
    fill(sessions, head)
    with sessions() as session, pytest.raises(audit.NothingToReanchorError):
        audit.reanchor(session, head, actor="cli:root", reason="why not")
    truncate(sessions, keep=3)
    with sessions() as session, pytest.raises(ReasonRequiredError):
        audit.reanchor(session, head, actor="cli:root", reason="  ")
    with sessions() as session:
        session.execute(sa.update(AuditRow).where(AuditRow.seq == 2).values(actor="mallory"))
        session.commit()
    with sessions() as session, pytest.raises(audit.AuditChainError, match="entry 2"):
        audit.reanchor(session, head, actor="cli:root", reason="cover it up")
    assert audit.read_checkpoint(head).seq == 5  # type: ignore[union-attr]
