"""The daemon's Vault check against a real OpenBao: up with the service token's TTL, down when
Vault is sealed or stopped, refused with a bad secret_id; never a token in what is recorded."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from core.selfmetrics.service import checks
from core.settings import VaultSettings
from remediation import selfchecks
from remediation.vault import CredentialBroker
from tests.integration.remediation.conftest import VaultEnv

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def check(sessions: sessionmaker[Session], settings: VaultSettings, now: datetime) -> None:
    """What the daemon's self_checks stage does for Vault when it is due."""
    with sessions() as session:
        if not selfchecks.vault_due(session, settings=settings, now=now):
            return
    status = selfchecks.vault_status(settings)
    with sessions() as session:
        selfchecks.record_vault(session, status, now=now)
        session.commit()


def recorded(sessions: sessionmaker[Session]) -> tuple[bool, float | None, str | None]:
    with sessions() as session:
        row = checks(session)[selfchecks.VAULT_CHECK]
        return row.ok, row.value, row.detail


def test_vault_up_with_the_service_token_ttl_then_throttled(
    vault_env: VaultEnv, sessions: sessionmaker[Session]
) -> None:
    settings = vault_env.settings().model_copy(update={"check_every": timedelta(minutes=1)})
    check(sessions, settings, NOW)
    ok, ttl, detail = recorded(sessions)
    assert ok and detail is None
    assert ttl is not None and 500 < ttl <= 600  # the AppRole's token_ttl is 10m
    check(sessions, settings, NOW + timedelta(seconds=30))  # not due: nothing is asked
    assert recorded(sessions) == (ok, ttl, None)


def test_a_revoked_service_token_is_replaced_by_a_new_login(vault_env: VaultEnv) -> None:
    settings = vault_env.settings()
    broker = selfchecks.broker_for(settings)
    token = broker.service_token()
    vault_env.root("POST", "auth/token/revoke", {"token": token})
    status = selfchecks.vault_status(settings)
    assert status.ok and status.ttl and status.ttl > 0
    assert broker.service_token() != token


def test_a_refused_secret_id_is_recorded_as_down_without_the_secret(
    vault_env: VaultEnv, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "not-a-secret-id-" + "x" * 8
    settings = vault_env.settings().model_copy(update={"secret_id": SecretStr(secret)})
    caplog.set_level(logging.WARNING)
    check(sessions, settings, NOW)
    ok, ttl, detail = recorded(sessions)
    assert (ok, ttl, detail) == (False, None, "vault_denied")
    assert secret not in caplog.text


def test_a_sealed_then_stopped_vault_is_down(own_vault: VaultEnv) -> None:
    settings = own_vault.settings()
    assert selfchecks.vault_status(settings).ok
    own_vault.root("PUT", "sys/seal")
    sealed = selfchecks.vault_status(settings)
    assert sealed == selfchecks.VaultStatus(ok=False, detail="vault_sealed")
    own_vault.server.stop()
    status = selfchecks.vault_status(settings)
    assert status == selfchecks.VaultStatus(ok=False, detail="vault_unavailable")


def test_a_wrapped_secret_id_is_left_to_the_executor(vault_env: VaultEnv) -> None:
    """Its one unwrap belongs to the executor's login: the check asks Vault's health only."""
    settings = vault_env.settings(wrapped=True)
    assert selfchecks.vault_status(settings) == selfchecks.VaultStatus(ok=True)
    broker = CredentialBroker(settings)  # the executor's: the wrapping token still unwraps
    assert broker.service_token()
