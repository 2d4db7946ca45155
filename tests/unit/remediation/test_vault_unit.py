"""The credential broker against a scripted loopback stub of the Vault HTTP API: tokens are
always explicit (never VAULT_TOKEN or ~/.vault-token), errors are typed and leak nothing,
the service token is renewed before expiry and re-obtained when renewal fails."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.settings import VaultSettings
from remediation.playbooks import VaultSpec
from remediation.vault import (
    CredentialBroker,
    VaultDenied,
    VaultError,
    VaultSealed,
    VaultUnavailable,
    credential_ttl,
)
from tests.support.servers import free_port

SERVICE_TOKEN = "s.service0000000000000000001"
CHILD_TOKEN = "s.child000000000000000000001"
BOGUS = "s.bogus-from-the-environment-000"
DB_PASSWORD = "A1a-dynamic-password-zz"

Reply = tuple[int, dict[str, Any]]
Handler = Callable[[dict[str, Any], str | None], Reply]


class StubVault:
    """Answers by path from `routes`; records (method, path, token, body) of every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, dict[str, Any]]] = []
        self.routes: dict[str, Handler] = {}
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                token = self.headers.get("X-Vault-Token")
                path = self.path.split("?")[0].removeprefix("/v1/")
                stub.calls.append((self.command, path, token, body))
                handler = stub.routes.get(path)
                status, reply = handler(body, token) if handler else (404, {"errors": []})
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tokens_sent(self) -> set[str | None]:
        return {c[2] for c in self.calls}

    def paths(self) -> list[str]:
        return [c[1] for c in self.calls]


def healthy(body: dict[str, Any], token: str | None) -> Reply:
    return 200, {"initialized": True, "sealed": False}


def login(body: dict[str, Any], token: str | None) -> Reply:
    if body.get("secret_id") != "plain-secret-id":
        return 400, {"errors": ["invalid secret id"]}
    return 200, {
        "auth": {
            "client_token": SERVICE_TOKEN,
            "accessor": "svc-acc",
            "lease_duration": 300,
            "renewable": True,
        }
    }


def create_child(body: dict[str, Any], token: str | None) -> Reply:
    if token != SERVICE_TOKEN:
        return 403, {"errors": ["permission denied"]}
    return 200, {"auth": {"client_token": CHILD_TOKEN, "accessor": "child-acc"}}


def db_creds(body: dict[str, Any], token: str | None) -> Reply:
    if token != CHILD_TOKEN:
        return 403, {"errors": ["permission denied"]}
    return 200, {
        "lease_id": "database/creds/readonly/L1",
        "data": {"username": "v-token-readonly-x", "password": DB_PASSWORD},
    }


def ok(body: dict[str, Any], token: str | None) -> Reply:
    return 200, {}


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StubVault]:
    # A bogus token in both places hvac would look by itself: neither may ever be sent.
    monkeypatch.setenv("VAULT_TOKEN", BOGUS)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".vault-token").write_text(BOGUS)
    vault = StubVault()
    vault.routes.update(
        {
            "sys/health": healthy,
            "auth/approle/login": login,
            "auth/token/create": create_child,
            "database/creds/readonly": db_creds,
            "sys/leases/revoke": ok,
            "auth/token/revoke-accessor": ok,
        }
    )
    yield vault
    vault.server.shutdown()
    vault.server.server_close()


def settings(url: str, **kw: Any) -> VaultSettings:
    values: dict[str, Any] = {
        "url": url,
        "role_id": "role-1",
        "secret_id": SecretStr("plain-secret-id"),
        "timeout": timedelta(seconds=2),
    }
    values.update(kw)
    return VaultSettings(**values)


SPEC = VaultSpec.model_validate(
    {
        "policies": ["remediate-db"],
        "secrets": [
            {
                "engine": "database",
                "path": "database/creds/readonly",
                "env": {"DB_USER": "username", "DB_PASSWORD": "password"},
            }
        ],
    }
)


def test_issue_uses_only_explicit_tokens_and_a_bounded_child(stub: StubVault) -> None:
    broker = CredentialBroker(settings(stub.url))
    issued = broker.issue(7, SPEC, credential_ttl(timedelta(minutes=5)))
    assert issued.env == {"DB_USER": "v-token-readonly-x", "DB_PASSWORD": DB_PASSWORD}
    assert issued.token_accessor == "child-acc"
    assert issued.lease_ids == ["database/creds/readonly/L1"]
    assert DB_PASSWORD in issued.secrets and CHILD_TOKEN in issued.secrets
    assert DB_PASSWORD not in repr(issued) and CHILD_TOKEN not in repr(issued)
    assert BOGUS not in stub.tokens_sent()
    [create] = [c for c in stub.calls if c[1] == "auth/token/create"]
    assert create[2] == SERVICE_TOKEN
    assert create[3]["policies"] == ["remediate-db"]
    assert create[3]["ttl"] == create[3]["explicit_max_ttl"] == "360s"
    assert create[3]["no_parent"] is False and create[3]["num_uses"] == 0
    assert create[3]["display_name"] == "prognos-exec-7"
    [read] = [c for c in stub.calls if c[1] == "database/creds/readonly"]
    assert read[2] == CHILD_TOKEN  # the secret is read with the child, not the service token

    assert broker.revoke(issued) == []
    revokes = [(c[1], c[3]) for c in stub.calls if "revoke" in c[1]]
    assert revokes == [
        ("sys/leases/revoke", {"lease_id": "database/creds/readonly/L1"}),
        ("auth/token/revoke-accessor", {"accessor": "child-acc"}),
    ]


def test_a_wrapped_secret_id_is_unwrapped_with_its_own_token(stub: StubVault) -> None:
    def unwrap(body: dict[str, Any], token: str | None) -> Reply:
        if token != "s.wrapping-token-00000000001":
            return 400, {"errors": ["wrapping token is not valid or does not exist"]}
        return 200, {"data": {"secret_id": "plain-secret-id"}}

    stub.routes["sys/wrapping/unwrap"] = unwrap
    broker = CredentialBroker(
        settings(
            stub.url,
            secret_id=SecretStr("s.wrapping-token-00000000001"),
            secret_id_wrapped=True,
        )
    )
    assert broker.service_token() == SERVICE_TOKEN
    assert stub.paths()[:2] == ["sys/wrapping/unwrap", "auth/approle/login"]


def test_sealed_vault_is_vault_sealed_before_any_token_is_made(stub: StubVault) -> None:
    stub.routes["sys/health"] = lambda b, t: (503, {"initialized": True, "sealed": True})
    broker = CredentialBroker(settings(stub.url))
    with pytest.raises(VaultSealed):
        broker.issue(1, SPEC, timedelta(minutes=1))
    assert "auth/token/create" not in stub.paths()


def test_refused_connection_is_vault_unavailable() -> None:
    broker = CredentialBroker(settings(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(VaultUnavailable) as caught:
        broker.issue(1, SPEC, timedelta(minutes=1))
    assert "cannot reach Vault" in caught.value.message


def test_denied_is_vault_denied_and_the_message_holds_no_token(stub: StubVault) -> None:
    stub.routes["auth/token/create"] = lambda b, t: (403, {"errors": [f"bad token {t}"]})
    broker = CredentialBroker(settings(stub.url))
    with pytest.raises(VaultDenied) as caught:
        broker.issue(1, SPEC, timedelta(minutes=1))
    assert SERVICE_TOKEN not in str(caught.value) and "plain-secret-id" not in str(caught.value)
    # A denied service token triggers exactly one fresh login before giving up.
    assert stub.paths().count("auth/approle/login") == 2


def test_a_failed_secret_read_revokes_the_child_it_made(stub: StubVault) -> None:
    stub.routes["database/creds/readonly"] = lambda b, t: (500, {"errors": ["db down"]})
    broker = CredentialBroker(settings(stub.url))
    with pytest.raises(VaultError):
        broker.issue(1, SPEC, timedelta(minutes=1))
    assert ("auth/token/revoke-accessor", {"accessor": "child-acc"}) in [
        (c[1], c[3]) for c in stub.calls
    ]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_service_token_is_renewed_when_a_third_of_its_ttl_is_left(stub: StubVault) -> None:
    stub.routes["auth/token/renew-self"] = lambda b, t: (
        200,
        {"auth": {"client_token": t, "lease_duration": 300, "renewable": True}},
    )
    clock = FakeTime()
    broker = CredentialBroker(settings(stub.url), monotonic=clock)
    broker.service_token()
    clock.now += 150  # half the TTL left: no renewal yet
    broker.service_token()
    assert "auth/token/renew-self" not in stub.paths()
    clock.now += 60  # 90 s of 300 left (< 1/3)
    assert broker.service_token() == SERVICE_TOKEN
    assert stub.paths().count("auth/token/renew-self") == 1
    assert stub.paths().count("auth/approle/login") == 1


def test_a_failed_renewal_logs_in_again(stub: StubVault) -> None:
    stub.routes["auth/token/renew-self"] = lambda b, t: (403, {"errors": ["permission denied"]})
    clock = FakeTime()
    broker = CredentialBroker(settings(stub.url), monotonic=clock)
    broker.service_token()
    clock.now += 250
    assert broker.service_token() == SERVICE_TOKEN
    assert stub.paths().count("auth/approle/login") == 2
