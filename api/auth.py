"""Bearer tokens: `pgn_<id>_<secret>`, shown once, stored as a SHA-256 of the secret.

The secret is 256 random bits, so a fast hash is enough (no password stretching needed); the
lookup uses the public id, and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.tables import ApiTokenRow
from core.errors import ErrorKind, NotFoundError, PrognosError

PREFIX = "pgn"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"
    INGEST = "ingest"
    ALERTS = "alerts"


# Which roles satisfy a requirement; admin may do everything, ingest only span intake, alerts
# only Alertmanager's webhook.
_GRANTS: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.ADMIN}),
    Role.APPROVER: frozenset({Role.APPROVER, Role.ADMIN}),
    Role.ADMIN: frozenset({Role.ADMIN}),
    Role.INGEST: frozenset({Role.INGEST, Role.ADMIN}),
    Role.ALERTS: frozenset({Role.ALERTS, Role.ADMIN}),
}


class AuthError(PrognosError):
    code = "unauthorized"
    kind = ErrorKind.UNAUTHORIZED


class ForbiddenError(PrognosError):
    code = "forbidden"
    kind = ErrorKind.FORBIDDEN


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name is the identity recorded in audits and approvals."""

    token_id: str
    name: str
    role: Role
    last_used_at: datetime | None = None  #: as recorded before this request

    def allows(self, required: Role) -> bool:
        return self.role in _GRANTS[required]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    db_session: Session, *, role: Role, name: str, now: datetime
) -> tuple[ApiTokenRow, str]:
    """Store a new token and return it with its plaintext, which is never stored or shown again."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiTokenRow(
        token_id=token_id,
        secret_hash=_hash(secret),
        name=name,
        role=role.value,
        created_at=now,
    )
    db_session.add(row)
    db_session.flush()
    return row, f"{PREFIX}_{token_id}_{secret}"


def authenticate(db_session: Session, *, token: str, now: datetime) -> Principal:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthError("malformed bearer token: expected pgn_<id>_<secret>")
    _, token_id, secret = parts
    row = db_session.scalar(sa.select(ApiTokenRow).where(ApiTokenRow.token_id == token_id))
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise AuthError("unknown or wrong bearer token")
    if row.revoked_at is not None:
        raise AuthError("this token was revoked")
    # Authentication only reads: a read request must never queue behind another writer.
    return Principal(row.token_id, row.name, Role(row.role), row.last_used_at)


#: A token's last use is recorded at most this often (`record_use`).
USE_RECORDED_EVERY = timedelta(minutes=5)


def needs_recording(principal: Principal, now: datetime) -> bool:
    last = principal.last_used_at
    return last is None or now - last >= USE_RECORDED_EVERY


def record_use(db_session: Session, *, token_id: str, now: datetime) -> None:
    """Set a token's last use, unless another request did within `USE_RECORDED_EVERY`."""
    db_session.execute(
        sa.update(ApiTokenRow)
        .where(
            ApiTokenRow.token_id == token_id,
            sa.or_(
                ApiTokenRow.last_used_at.is_(None),
                ApiTokenRow.last_used_at <= now - USE_RECORDED_EVERY,
            ),
        )
        .values(last_used_at=now)
    )


def list_tokens(db_session: Session) -> list[ApiTokenRow]:
    return list(db_session.scalars(sa.select(ApiTokenRow).order_by(ApiTokenRow.id)))


def revoke_token(db_session: Session, *, token_id: str, now: datetime) -> ApiTokenRow:
    row = db_session.scalar(sa.select(ApiTokenRow).where(ApiTokenRow.token_id == token_id))
    if row is None:
        raise NotFoundError(f"no token with id {token_id!r} (see `prognos token list`)")
    if row.revoked_at is None:
        row.revoked_at = now
    return row
