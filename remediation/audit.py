"""The audit trail: a hash chain in the database, its head anchored in a second sink (a file).

Each entry's hash is sha256 over the canonical JSON of (seq, ts, actor, action, subject, data,
prev_hash). Editing, removing or reordering entries breaks the chain; truncating the tail or
rewriting the whole chain is caught by comparing with the checkpoint file, which is replaced
atomically after every commit that appended entries and only ever moves forward, and only from
a chain that still holds the anchored entry. The one way back is `reanchor`, an explicit admin
step (after restoring an older backup) that is itself an entry of the chain.
Entries never carry secret values (a Vault token's accessor, never the token).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from core.database import dialect_insert
from core.errors import ErrorKind
from core.settings import Settings
from remediation.domain import AuditEntry, ReasonRequiredError, RemediationError
from remediation.playbooks import canonical_json
from remediation.tables import AuditHeadRow, AuditRow

GENESIS = "0" * 64
CHECKPOINT_INFO_KEY = "audit_checkpoint"  # session.info key naming the checkpoint file
_PENDING_KEY = "_audit_pending_head"
_HOOKED_KEY = "_audit_hooked"
_MAX_PROBLEMS = 50
REANCHOR_ACTION = "reanchor"
REANCHOR_SUBJECT = "audit"
log = logging.getLogger(__name__)


class AuditChainError(RemediationError):
    """The chain itself is damaged (an entry edited, removed or reordered): no re-anchoring."""

    code = "audit_chain_damaged"
    kind = ErrorKind.CONFLICT


class NothingToReanchorError(RemediationError):
    code = "audit_anchor_agrees"
    kind = ErrorKind.CONFLICT


def checkpoint_for(settings: Settings) -> Path:
    """The anchor file: remediation.audit_checkpoint, else <data_dir>/audit-head."""
    configured = settings.remediation.audit_checkpoint
    return configured if configured is not None else settings.data_dir / "audit-head"


def anchor_sessions(sessions: sessionmaker[Session], path: Path) -> None:
    """Make every session of this factory write the checkpoint after appending (composition)."""
    info = dict(sessions.kw.get("info") or {})
    info[CHECKPOINT_INFO_KEY] = path
    sessions.configure(info=info)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    seq: int,
    ts: datetime,
    actor: str,
    action: str,
    subject: str,
    data: Mapping[str, Any],
    prev_hash: str,
) -> str:
    payload = {
        "seq": seq,
        "ts": format_ts(ts),
        "actor": actor,
        "action": action,
        "subject": subject,
        "data": dict(data),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def _row_hash(row: AuditRow) -> str:
    return entry_hash(
        seq=row.seq,
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        data=row.data,
        prev_hash=row.prev_hash,
    )


def _lock_head(session: Session) -> None:
    """Take the chain's write lock: a row lock on PostgreSQL, the write lock on SQLite."""
    touch = sa.update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=AuditHeadRow.seq)
    if session.execute(touch).rowcount == 0:  # type: ignore[attr-defined]
        insert = dialect_insert(session, AuditHeadRow.__table__).values(id=1, seq=0, hash=GENESIS)
        session.execute(insert.on_conflict_do_nothing(index_elements=["id"]))
        session.execute(touch)


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    data: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    checkpoint: Path | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction; concurrent appends queue, never fork.

    The checkpoint file (argument, else ``session.info["audit_checkpoint"]``) is written after
    the transaction commits, so a rolled-back append never moves the anchor.
    """
    ts = (now or datetime.now(UTC)).astimezone(UTC)
    # Round-trip through canonical JSON so what is stored is exactly what was hashed.
    clean: dict[str, Any] = json.loads(canonical_json(dict(data or {})))
    _lock_head(session)
    last = session.execute(
        sa.select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    digest = entry_hash(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        subject=subject,
        data=clean,
        prev_hash=prev_hash,
    )
    row = AuditRow(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        subject=subject,
        data=clean,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(row)
    session.execute(
        sa.update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=seq, hash=digest)
    )
    session.flush()
    target = checkpoint or session.info.get(CHECKPOINT_INFO_KEY)
    if target is not None and _extends_anchor(session, Path(target), seq):
        _checkpoint_after_commit(session, Path(target), seq, digest)
    return AuditEntry.from_row(row)


def _extends_anchor(session: Session, path: Path, seq: int) -> bool:
    """Whether this chain still holds the anchored entry, so moving the anchor to `seq` extends
    what was anchored. After an older backup is restored, new entries must not carry the anchor
    past the lost ones and hide them: the anchor stays put until an admin re-anchors."""
    anchored = read_checkpoint(path)
    if anchored is None or anchored.seq <= 0 or anchored.seq >= seq:
        return True  # nothing anchored yet, or write_checkpoint leaves it as it is anyway
    stored = session.scalar(sa.select(AuditRow.hash).where(AuditRow.seq == anchored.seq))
    if stored == anchored.hash:
        return True
    log.error(
        "audit entry %d appended, but the chain no longer holds the anchored entry %d: the "
        "anchor stays where it is; `prognos audit verify` says what happened",
        seq,
        anchored.seq,
    )
    return False


def _checkpoint_after_commit(session: Session, path: Path, seq: int, digest: str) -> None:
    pending = session.info.get(_PENDING_KEY)
    if pending is None or pending[1] < seq:
        session.info[_PENDING_KEY] = (path, seq, digest)
    if session.info.get(_HOOKED_KEY):
        return
    session.info[_HOOKED_KEY] = True

    def committed(sess: Session) -> None:
        head = sess.info.pop(_PENDING_KEY, None)
        if head is not None:
            write_checkpoint(head[0], head[1], head[2])

    def rolled_back(sess: Session, *_: Any) -> None:
        sess.info.pop(_PENDING_KEY, None)

    event.listen(session, "after_commit", committed)
    event.listen(session, "after_rollback", rolled_back)


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str


def read_checkpoint(path: Path) -> Checkpoint | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Checkpoint(seq=int(raw["seq"]), hash=str(raw["hash"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Checkpoint(seq=-1, hash="unreadable")


def write_checkpoint(path: Path, seq: int, digest: str, *, backwards: bool = False) -> None:
    """Atomically replace the anchor with (seq, hash), unless it already points further on
    (`backwards=True`, for `reanchor` alone, replaces it wherever it points)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = read_checkpoint(path)
            if current is not None and current.seq >= seq and not backwards:
                return
            fd, tmp = tempfile.mkstemp(prefix=".audit-head.", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump({"seq": seq, "hash": digest}, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str | None
    checkpoint: Checkpoint | None
    problems: list[str] = field(default_factory=list)
    # Entries appended after the checkpoint was last written (not yet anchored).
    unanchored: int = 0

    def summary(self) -> str:
        if self.ok:
            anchored = (
                f", anchored at seq {self.checkpoint.seq}" if self.checkpoint is not None else ""
            )
            return f"audit chain intact: {self.entries} entries{anchored}"
        return f"audit chain TAMPERED: {len(self.problems)} problem(s)"


@dataclass
class _Walk:
    """The chain read in order: its own problems, its head, and the anchored entry's hash."""

    entries: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    anchor_hash: str | None = None  # the stored hash of the entry the checkpoint names
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == _MAX_PROBLEMS:
            self.problems.append("… more problems not shown")


def _walk(session: Session, checkpoint: Checkpoint | None) -> _Walk:
    walk = _Walk()
    expected_seq, prev_hash = 1, GENESIS
    rows = session.execute(sa.select(AuditRow).order_by(AuditRow.seq)).scalars()
    for row in rows:
        walk.entries += 1
        if row.seq != expected_seq:
            missing = row.seq - expected_seq
            if missing > 0:
                walk.problem(f"entries {expected_seq}..{row.seq - 1} are missing (removed)")
            else:
                walk.problem(f"entry {row.seq} is out of order")
        if row.prev_hash != prev_hash:
            walk.problem(
                f"entry {row.seq}: prev_hash does not match the previous entry's hash "
                "(an entry before it was removed, reordered or edited)"
            )
        if _row_hash(row) != row.hash:
            walk.problem(f"entry {row.seq}: contents do not match its hash (edited)")
        if checkpoint is not None and row.seq == checkpoint.seq:
            walk.anchor_hash = row.hash
        expected_seq, prev_hash = row.seq + 1, row.hash
        walk.head_seq, walk.head_hash = row.seq, row.hash
        session.expunge(row)
    return walk


_RESTORED_HINT = (
    "If an older backup of the database was restored on purpose, an admin re-anchors the chain "
    "with `prognos audit reanchor --reason TEXT` (recorded in the chain); otherwise treat this as "
    "tampering."
)


def _anchor_problem(walk: _Walk, checkpoint: Checkpoint | None, path: Path) -> str | None:
    """What is wrong between the chain's head and its anchor, if anything."""
    if checkpoint is None:
        return (
            f"no checkpoint at {path}: the chain's tail cannot be proven" if walk.entries else None
        )
    if checkpoint.seq < 0:
        return f"checkpoint {path} is unreadable"
    if checkpoint.seq > 0 and walk.anchor_hash is None:
        last = walk.head_seq or 0
        lost = (
            f"entry {checkpoint.seq} was"
            if last + 1 == checkpoint.seq
            else f"entries {last + 1}..{checkpoint.seq} were"
        )
        return (
            f"the chain is behind its anchor: the checkpoint says it reaches entry "
            f"{checkpoint.seq} but it ends at entry {last}, so {lost} removed from the tail, "
            "or an older backup was restored. " + _RESTORED_HINT
        )
    if checkpoint.seq > 0 and walk.anchor_hash != checkpoint.hash:
        return (
            f"entry {checkpoint.seq} differs from the checkpoint's hash: the chain was "
            "rewritten, or an older backup was restored and entries were appended since. "
            + _RESTORED_HINT
        )
    return None


def verify(session: Session, checkpoint_path: Path | None) -> VerifyResult:
    """Walk the chain and compare its head with the checkpoint."""
    checkpoint = read_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    walk = _walk(session, checkpoint)
    problems = list(walk.problems)
    unanchored = 0
    if checkpoint_path is not None:
        anchor_problem = _anchor_problem(walk, checkpoint, checkpoint_path)
        if anchor_problem is not None:
            problems.append(anchor_problem)
        elif checkpoint is not None and walk.head_seq is not None:
            unanchored = walk.head_seq - checkpoint.seq
    return VerifyResult(
        ok=not problems,
        entries=walk.entries,
        head_seq=walk.head_seq,
        head_hash=walk.head_hash,
        checkpoint=checkpoint,
        problems=problems,
        unanchored=unanchored,
    )


@dataclass(frozen=True)
class Reanchored:
    old_anchor: Checkpoint | None
    chain_head: Checkpoint  # the restored head the anchor was moved back to
    entry: AuditEntry  # the re-anchor entry, which follows that head and is anchored itself


def reanchor_plan(session: Session, checkpoint_path: Path) -> tuple[Checkpoint | None, Checkpoint]:
    """(the anchor, the chain's head) that `reanchor` would replace and keep; refused when the
    chain itself is damaged or already agrees with its anchor."""
    checkpoint = read_checkpoint(checkpoint_path)
    walk = _walk(session, checkpoint)
    if walk.problems:
        raise AuditChainError(
            "the audit chain itself is damaged, so it cannot be re-anchored: "
            + "; ".join(walk.problems[:5])
            + ". Restore an intact backup (`prognos db restore`) first."
        )
    if _anchor_problem(walk, checkpoint, checkpoint_path) is None:
        where = "no entries yet" if checkpoint is None else f"entry {checkpoint.seq}"
        raise NothingToReanchorError(
            f"the audit chain and its anchor agree ({where}): nothing to re-anchor"
        )
    head = Checkpoint(seq=walk.head_seq or 0, hash=walk.head_hash or GENESIS)
    return (checkpoint if checkpoint is not None and checkpoint.seq >= 0 else None), head


def reanchor(
    session: Session,
    checkpoint_path: Path,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> Reanchored:
    """Move the anchor back to the chain's head, e.g. after restoring an older backup: an entry
    naming who, why, the old anchor and the head is appended and committed, then the anchor is
    replaced with that entry. The chain's own links must be intact."""
    if not reason.strip():
        raise ReasonRequiredError("re-anchoring needs a reason (--reason TEXT): it is audited")
    _lock_head(session)  # no append slips in between the check and the re-anchor entry
    old, head = reanchor_plan(session, checkpoint_path)
    entry = append(
        session,
        actor=actor,
        action=REANCHOR_ACTION,
        subject=REANCHOR_SUBJECT,
        data={
            "reason": reason.strip(),
            "old_anchor": None if old is None else {"seq": old.seq, "hash": old.hash},
            "new_anchor": {"seq": head.seq, "hash": head.hash},
        },
        now=now,
    )
    session.commit()
    write_checkpoint(checkpoint_path, entry.seq, entry.hash, backwards=True)
    return Reanchored(old_anchor=old, chain_head=head, entry=entry)


def entries(
    session: Session,
    *,
    subject: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries in chain order, optionally for one subject, after a sequence number."""
    query = sa.select(AuditRow).order_by(AuditRow.seq).limit(limit)
    if subject is not None:
        query = query.where(AuditRow.subject == subject)
    if after is not None:
        query = query.where(AuditRow.seq > after)
    return [AuditEntry.from_row(r) for r in session.execute(query).scalars()]
