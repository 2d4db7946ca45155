"""The daemon's checks on the service itself, recorded for /metrics: the audit chain verified
against its checkpoint, Vault's health and the TTL of the service's own token, and the
high-water mark of incident ids (so that pruning incidents never lowers their counter)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.selfmetrics import service as selfmetrics
from core.settings import VaultSettings
from rca.tables import IncidentRow
from remediation import audit
from remediation.vault import CredentialBroker, VaultDenied, VaultError

log = logging.getLogger(__name__)

AUDIT_CHECK = "audit"
VAULT_CHECK = "vault"
INCIDENTS_OPENED = "incidents_opened"


def verify_audit(
    db_session: Session, *, checkpoint: Path, every: timedelta, now: datetime
) -> audit.VerifyResult | None:
    """Verify the audit chain if the last verification is `every` old (None: not due yet)."""
    if not selfmetrics.check_due(db_session, name=AUDIT_CHECK, every=every, now=now):
        return None
    result = audit.verify(db_session, checkpoint)
    selfmetrics.record_check(
        db_session,
        name=AUDIT_CHECK,
        ok=result.ok,
        now=now,
        value=float(result.entries),
        detail=result.summary(),
    )
    return result


@functools.lru_cache(maxsize=4)
def broker_for(settings: VaultSettings) -> CredentialBroker:
    """One broker (one AppRole login, renewed) per Vault configuration, kept between checks."""
    return CredentialBroker(settings)


def vault_due(db_session: Session, *, settings: VaultSettings, now: datetime) -> bool:
    """Whether Vault is configured and its last check is `vault.check_every` old."""
    return bool(settings.url) and selfmetrics.check_due(
        db_session, name=VAULT_CHECK, every=settings.check_every, now=now
    )


@dataclass(frozen=True)
class VaultStatus:
    ok: bool
    ttl: float | None = None  #: seconds left on the service token (0: it never expires)
    detail: str | None = None  #: the error's code when not ok; never a token


def vault_status(settings: VaultSettings) -> VaultStatus:
    """Vault's health and the TTL of the service token (logging in with the AppRole first if
    needed). With a response-wrapped secret_id only the health is checked: its single unwrap
    belongs to the executor's login."""
    try:
        broker = broker_for(settings)
        broker.client.health()
        if settings.secret_id_wrapped:
            return VaultStatus(ok=True)
        return VaultStatus(ok=True, ttl=_token_ttl(broker))
    except VaultError as exc:
        log.warning("vault check failed: %s", exc.message)
        return VaultStatus(ok=False, detail=exc.code)


def record_vault(db_session: Session, status: VaultStatus, *, now: datetime) -> None:
    selfmetrics.record_check(
        db_session, name=VAULT_CHECK, ok=status.ok, now=now, value=status.ttl, detail=status.detail
    )


def _token_ttl(broker: CredentialBroker) -> float:
    """Seconds left on the service token (`auth/token/lookup-self`; 0: it never expires).
    A token Vault no longer knows is replaced by a new login once."""

    def lookup() -> dict[str, Any]:
        return broker.client.request(
            "GET",
            "auth/token/lookup-self",
            token=broker.service_token(),
            what="look up the service token",
        )

    try:
        body = lookup()
    except VaultDenied:
        broker.login()
        body = lookup()
    return float((body.get("data") or {}).get("ttl") or 0)


def mark_incidents_opened(db_session: Session) -> None:
    """Raise the incident high-water mark to the newest incident id (ids only grow, but the
    newest incident may be pruned)."""
    newest = db_session.scalar(sa.select(sa.func.max(IncidentRow.id)))
    if newest is not None:
        selfmetrics.raise_high_water(db_session, name=INCIDENTS_OPENED, value=int(newest))
