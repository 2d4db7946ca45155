"""A real OpenBao dev server wired to the real PostgreSQL: AppRole for the service, a
`readonly` dynamic database role, a KV v2 secret and an SSH OTP role for the playbooks.

One session-wide server serves most tests; tests that seal or stop Vault start their own.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from core.settings import VaultSettings
from tests.conftest import need_server
from tests.support.servers import OpenBaoServer, PostgresServer, ServerMissing, start_openbao

SERVICE_POLICY = """
path "auth/token/create" { capabilities = ["create", "update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"""
# What one execution may do; the service token carries it only to hand it down.
EXEC_POLICY = """
path "database/creds/readonly" { capabilities = ["read"] }
path "secret/data/app" { capabilities = ["read"] }
path "ssh/creds/otp_role" { capabilities = ["create", "update"] }
"""
KV_VALUE = "kv-" + uuid.uuid4().hex


@dataclass
class VaultEnv:
    server: OpenBaoServer
    postgres: PostgresServer
    role_id: str

    def root(self, method: str, path: str, json: dict[str, Any] | None = None, **kw: Any) -> Any:
        return _call(self.server, method, path, json, **kw)

    def secret_id(self, *, wrapped: bool = False, num_uses: int = 0) -> str:
        headers = {"X-Vault-Wrap-TTL": "120s"} if wrapped else {}
        body = self.root(
            "POST",
            "auth/approle/role/prognos/secret-id",
            {"num_uses": num_uses},
            headers=headers,
        )
        if wrapped:
            return str(body["wrap_info"]["token"])
        return str(body["data"]["secret_id"])

    def settings(self, *, wrapped: bool = False, num_uses: int = 0) -> VaultSettings:
        return VaultSettings(
            url=self.server.url,
            role_id=self.role_id,
            secret_id=SecretStr(self.secret_id(wrapped=wrapped, num_uses=num_uses)),
            secret_id_wrapped=wrapped,
        )

    def pg_roles(self) -> set[str]:
        import psycopg

        with psycopg.connect(self.postgres.admin_url, autocommit=True) as conn:
            rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'")
            return {r[0] for r in rows}

    def accessor_alive(self, accessor: str) -> bool:
        response = requests.post(
            f"{self.server.url}/v1/auth/token/lookup-accessor",
            json={"accessor": accessor},
            headers={"X-Vault-Token": self.server.root_token},
            timeout=10,
        )
        return response.status_code == 200

    def lease_alive(self, lease_id: str) -> bool:
        response = requests.put(
            f"{self.server.url}/v1/sys/leases/lookup",
            json={"lease_id": lease_id},
            headers={"X-Vault-Token": self.server.root_token},
            timeout=10,
        )
        return response.status_code == 200


def _call(
    server: OpenBaoServer,
    method: str,
    path: str,
    json: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> Any:
    response = requests.request(
        method,
        f"{server.url}/v1/{path}",
        json=json,
        headers={"X-Vault-Token": server.root_token, **(headers or {})},
        timeout=30,
    )
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
    return response.json() if response.content else {}


def configure(server: OpenBaoServer, postgres: PostgresServer) -> VaultEnv:
    """AppRole `prognos`, the database engine on PostgreSQL, KV v2 and SSH OTP."""
    _call(server, "POST", "sys/auth/approle", {"type": "approle"})
    _call(server, "PUT", "sys/policies/acl/prognos-service", {"policy": SERVICE_POLICY})
    _call(server, "PUT", "sys/policies/acl/remediate-db", {"policy": EXEC_POLICY})
    _call(
        server,
        "POST",
        "auth/approle/role/prognos",
        {
            "token_policies": ["prognos-service", "remediate-db"],
            "token_ttl": "10m",
            "token_max_ttl": "1h",
        },
    )
    role_id = _call(server, "GET", "auth/approle/role/prognos/role-id")["data"]["role_id"]
    _call(server, "POST", "sys/mounts/database", {"type": "database"})
    _call(
        server,
        "POST",
        "database/config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{postgres.port}"
                "/postgres?sslmode=disable"
            ),
            "username": "postgres",
            "password": "unused-trust-auth",
            "allowed_roles": "readonly",
        },
    )
    _call(
        server,
        "POST",
        "database/roles/readonly",
        {
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                "VALID UNTIL '{{expiration}}';",
                'GRANT pg_read_all_data TO "{{name}}";',
            ],
            "default_ttl": "1h",
            "max_ttl": "2h",
        },
    )
    _call(server, "POST", "secret/data/app", {"data": {"api_key": KV_VALUE}})
    _call(server, "POST", "sys/mounts/ssh", {"type": "ssh"})
    _call(
        server,
        "POST",
        "ssh/roles/otp_role",
        {"key_type": "otp", "default_user": "remediator", "cidr_list": "127.0.0.0/8"},
    )
    return VaultEnv(server=server, postgres=postgres, role_id=role_id)


def start_configured(postgres: PostgresServer) -> VaultEnv:
    home = Path(tempfile.mkdtemp(prefix="prognos-bao-"))
    try:
        server = start_openbao(home)
    except ServerMissing as exc:
        shutil.rmtree(home, ignore_errors=True)
        need_server(exc)
        raise
    try:
        return configure(server, postgres)
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="session")
def vault_env(postgres_server: PostgresServer) -> Iterator[VaultEnv]:
    env = start_configured(postgres_server)
    yield env
    env.server.stop()
    shutil.rmtree(env.server.home, ignore_errors=True)


@pytest.fixture
def own_vault(postgres_server: PostgresServer) -> Iterator[VaultEnv]:
    """A Vault of this test's own, to seal or stop."""
    env = start_configured(postgres_server)
    yield env
    env.server.stop()
    shutil.rmtree(env.server.home, ignore_errors=True)
