"""Vault / OpenBao credentials for executions: AppRole login, one child token per execution,
dynamic secrets read with that token and revoked when the execution ends.

Every request passes its token explicitly (hvac would otherwise read VAULT_TOKEN or
~/.vault-token). Failures are mapped at one boundary (`VaultClient.request`) to typed errors
whose messages name the operation and never a token or secret value.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import hvac
import hvac.exceptions
import requests

from core.errors import ErrorKind, PrognosError
from core.settings import VaultSettings
from remediation.playbooks import SecretSpec, VaultSpec
from remediation.redact import is_sensitive_name

log = logging.getLogger(__name__)

# Token and lease TTLs: the playbook's total timeouts plus this margin.
TTL_MARGIN = timedelta(seconds=60)
# Renew the service token once less than this share of its TTL is left.
RENEW_FRACTION = 1 / 3


class VaultError(PrognosError):
    """Root of Vault failures; an execution that meets one fails before any step runs."""

    code = "vault_error"
    kind = ErrorKind.UNAVAILABLE


class VaultUnavailable(VaultError):
    """Vault cannot be reached (connection refused, timeout, 5xx)."""

    code = "vault_unavailable"


class VaultSealed(VaultUnavailable):
    code = "vault_sealed"


class VaultDenied(VaultError):
    """Vault refused the token (403): revoked, expired or missing a policy."""

    code = "vault_denied"
    kind = ErrorKind.FORBIDDEN


class VaultConfigError(VaultError):
    code = "vault_not_configured"
    kind = ErrorKind.INVALID


@dataclass(frozen=True)
class IssuedCredentials:
    """What one execution received. `env` and `secrets` hold values: never log this object."""

    execution_id: int
    token_accessor: str
    lease_ids: list[str]
    env: dict[str, str] = field(repr=False)
    secrets: list[str] = field(repr=False)  # every value issued, for redaction

    def __repr__(self) -> str:
        return (
            f"IssuedCredentials(execution_id={self.execution_id}, "
            f"token_accessor={self.token_accessor!r}, leases={len(self.lease_ids)}, "
            f"env={sorted(self.env)})"
        )


def credential_ttl(total: timedelta, margin: timedelta = TTL_MARGIN) -> timedelta:
    """The child token's TTL (and explicit max TTL): the run's longest duration plus a margin."""
    return total + margin


class VaultClient:
    """One hvac client with no token of its own; every call names the token it acts with."""

    def __init__(self, settings: VaultSettings) -> None:
        if not settings.url:
            raise VaultConfigError("vault.url is not configured")
        self.url = settings.url.rstrip("/")
        verify: bool | str = settings.verify
        if settings.verify and settings.ca_file is not None:
            verify = str(settings.ca_file)
        # token="" (not None): hvac would otherwise read VAULT_TOKEN or ~/.vault-token.
        self._hvac = hvac.Client(
            url=self.url,
            token="",
            verify=verify,
            timeout=max(1, int(settings.timeout.total_seconds())),
            namespace=settings.namespace,
        )
        self._hvac.token = ""

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        json: Mapping[str, Any] | None = None,
        what: str | None = None,
    ) -> dict[str, Any]:
        """One call; the response's JSON ({} when empty). Errors never echo tokens or bodies."""
        label = what or f"{method} {path}"
        headers = {"X-Vault-Token": token} if token else {}
        try:
            response = self._hvac.adapter.request(
                method, f"/v1/{path.lstrip('/')}", headers=headers, json=dict(json or {})
            )
        except hvac.exceptions.VaultDown:
            raise VaultSealed(f"Vault at {self.url} is sealed ({label})") from None
        except hvac.exceptions.Forbidden:
            raise VaultDenied(f"Vault denied {label} (permission denied)") from None
        except hvac.exceptions.Unauthorized:
            raise VaultDenied(f"Vault denied {label} (unauthorized)") from None
        except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway) as exc:
            raise VaultUnavailable(
                f"Vault at {self.url} failed {label} (HTTP {_status(exc)})"
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"Vault refused {label} (HTTP {_status(exc)})") from None
        except requests.exceptions.Timeout:
            raise VaultUnavailable(f"Vault at {self.url} timed out ({label})") from None
        except requests.exceptions.RequestException:
            raise VaultUnavailable(f"cannot reach Vault at {self.url} ({label})") from None
        if isinstance(response, dict):
            return response
        return {}

    def health(self) -> None:
        """Raise VaultSealed / VaultUnavailable unless Vault is initialised and unsealed."""
        try:
            response = self._hvac.adapter.request(
                "GET",
                "/v1/sys/health",
                raise_exception=False,
                params={"standbyok": "true", "sealedcode": 200, "uninitcode": 200},
            )
        except requests.exceptions.RequestException:
            raise VaultUnavailable(f"cannot reach Vault at {self.url} (health)") from None
        body = response if isinstance(response, dict) else _json(response)
        if body.get("sealed"):
            raise VaultSealed(f"Vault at {self.url} is sealed")
        if body.get("initialized") is False:
            raise VaultUnavailable(f"Vault at {self.url} is not initialised")
        if not body:
            raise VaultUnavailable(f"Vault at {self.url} gave no health status")


def _secret_field(name: str) -> bool:
    return is_sensitive_name(name) and not name.lower().endswith(("_type", "_ttl", "_id"))


def _status(exc: hvac.exceptions.VaultError) -> str:
    code = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    return str(code) if code else "error"


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


class CredentialBroker:
    """The service's Vault identity (AppRole) and the per-execution credentials it hands out."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        client: VaultClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.role_id or settings.secret_id is None:
            raise VaultConfigError("vault.role_id and vault.secret_id are required")
        self._settings = settings
        self.client = client or VaultClient(settings)
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._token: str | None = None
        self._ttl_s = 0.0
        self._renewable = False
        self._obtained_at = 0.0
        # A wrapped secret_id unwraps once; the unwrapped value is kept for re-logins.
        self._secret_id: str | None = None

    # -- the service token --------------------------------------------------------------------

    def login(self) -> None:
        """AppRole login (unwrapping a response-wrapped secret_id first)."""
        with self._lock:
            try:
                secret_id = self._plain_secret_id()
                body = self.client.request(
                    "POST",
                    f"auth/{self._settings.approle_mount}/login",
                    token=None,
                    json={"role_id": self._settings.role_id, "secret_id": secret_id},
                    what="AppRole login",
                )
            except VaultUnavailable:
                raise
            except VaultError as exc:
                # 400 from AppRole: a spent, expired or wrong secret_id (or wrapping token).
                raise VaultDenied(f"{exc.message}: check role_id / secret_id") from None
            auth = body.get("auth") or {}
            token = auth.get("client_token")
            if not token:
                raise VaultDenied("AppRole login returned no token")
            self._token = str(token)
            self._ttl_s = float(auth.get("lease_duration") or 0)
            self._renewable = bool(auth.get("renewable"))
            self._obtained_at = self._monotonic()
            log.info(
                "vault login ok (accessor %s, ttl %ss)", auth.get("accessor"), int(self._ttl_s)
            )

    def _plain_secret_id(self) -> str:
        if self._secret_id is not None:
            return self._secret_id
        assert self._settings.secret_id is not None
        value = self._settings.secret_id.get_secret_value()
        if self._settings.secret_id_wrapped:
            # The wrapping token authenticates its own unwrap; it works exactly once.
            body = self.client.request(
                "POST", "sys/wrapping/unwrap", token=value, what="unwrap secret_id"
            )
            inner = (body.get("data") or {}).get("secret_id")
            if not inner:
                raise VaultDenied("the wrapped secret_id held no secret_id")
            value = str(inner)
        self._secret_id = value
        return value

    def service_token(self) -> str:
        """A live service token: login if none, renew-self when < 1/3 of its TTL is left,
        log in again when renewal fails."""
        with self._lock:
            if self._token is None:
                self.login()
            elif self._ttl_s > 0:
                left = self._ttl_s - (self._monotonic() - self._obtained_at)
                if left < self._ttl_s * RENEW_FRACTION:
                    self._renew_or_login()
            assert self._token is not None
            return self._token

    def _renew_or_login(self) -> None:
        if self._renewable and self._token is not None:
            try:
                body = self.client.request(
                    "POST", "auth/token/renew-self", token=self._token, what="renew service token"
                )
                auth = body.get("auth") or {}
                self._ttl_s = float(auth.get("lease_duration") or self._ttl_s)
                self._obtained_at = self._monotonic()
                return
            except VaultSealed:
                raise
            except VaultError as exc:
                log.warning("vault token renewal failed (%s); logging in again", exc.code)
        self.login()

    def _with_service_token(self, call: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        """Run a call with the service token; on 403 log in again once (a revoked token)."""
        token = self.service_token()
        try:
            return call(token)
        except VaultDenied:
            with self._lock:
                if self._token == token:
                    self._token = None
            log.warning("vault denied the service token; logging in again")
            return call(self.service_token())

    # -- per execution ------------------------------------------------------------------------

    def issue(self, execution_id: int, spec: VaultSpec, ttl: timedelta) -> IssuedCredentials:
        """A child token with only the playbook's policies, then its dynamic secrets.

        On any failure whatever was issued so far is revoked before the error propagates.
        """
        self.client.health()
        seconds = max(1, int(ttl.total_seconds()))
        payload = {
            "policies": list(spec.policies),
            "no_parent": False,
            "no_default_policy": True,
            "ttl": f"{seconds}s",
            "explicit_max_ttl": f"{seconds}s",
            "num_uses": 0,
            "renewable": False,
            "display_name": f"prognos-exec-{execution_id}",
            "meta": {"execution_id": str(execution_id)},
        }
        body = self._with_service_token(
            lambda token: self.client.request(
                "POST", "auth/token/create", token=token, json=payload, what="create child token"
            )
        )
        auth = body.get("auth") or {}
        child, accessor = auth.get("client_token"), auth.get("accessor")
        if not child or not accessor:
            raise VaultError("Vault returned no child token")
        child, accessor = str(child), str(accessor)
        env: dict[str, str] = {}
        secrets: list[str] = [child]
        leases: list[str] = []
        try:
            for secret in spec.secrets:
                data, lease_id = self._read_secret(secret, child)
                if lease_id:
                    leases.append(lease_id)
                for var, key in secret.env.items():
                    if key not in data:
                        raise VaultError(f"secret {secret.path} has no field {key!r} for {var}")
                    value = data[key]
                    text = value if isinstance(value, str) else str(value)
                    env[var] = text
                    secrets.append(text)
                # Secret-looking fields are redacted too, even when not handed over.
                secrets += [
                    v
                    for k, v in data.items()
                    if isinstance(v, str) and len(v) >= 4 and _secret_field(str(k))
                ]
        except BaseException:
            self.revoke_leftovers([accessor], leases)
            raise
        log.info(
            "vault credentials issued for execution %s (accessor %s, %d lease(s))",
            execution_id,
            accessor,
            len(leases),
        )
        return IssuedCredentials(
            execution_id=execution_id,
            token_accessor=accessor,
            lease_ids=leases,
            env=env,
            secrets=sorted(set(secrets), key=len, reverse=True),
        )

    def _read_secret(self, secret: SecretSpec, token: str) -> tuple[dict[str, Any], str | None]:
        path = secret.path.strip("/")
        what = f"read {secret.engine} secret {path}"
        if secret.engine == "ssh_otp":
            body = self.client.request(
                "POST", path, token=token, json=dict(secret.params), what=what
            )
        else:
            body = self.client.request("GET", path, token=token, what=what)
        data = body.get("data") or {}
        if secret.engine == "kv" and isinstance(data.get("data"), dict):
            data = data["data"]  # kv v2 nests the secret under data.data
        lease_id = body.get("lease_id") or None
        return dict(data), (str(lease_id) if lease_id else None)

    def revoke(self, issued: IssuedCredentials) -> list[str]:
        """Revoke the execution's leases and child token; returns problems (empty when clean)."""
        return self.revoke_leftovers([issued.token_accessor], issued.lease_ids)

    def revoke_leftovers(
        self, token_accessors: Iterable[str], lease_ids: Iterable[str]
    ) -> list[str]:
        """Revoke leases explicitly, then the tokens by accessor (which revokes their leases).

        Already revoked / expired ones count as done. Returns what could not be revoked.
        """
        problems: list[str] = []
        for lease_id in lease_ids:
            problem = self._revoke_one(
                "sys/leases/revoke", {"lease_id": lease_id}, f"revoke lease {lease_id}"
            )
            if problem:
                problems.append(problem)
        for accessor in token_accessors:
            problem = self._revoke_one(
                "auth/token/revoke-accessor",
                {"accessor": accessor},
                f"revoke token accessor {accessor}",
            )
            if problem:
                problems.append(problem)
        return problems

    def _revoke_one(self, path: str, body: dict[str, str], what: str) -> str | None:
        try:
            self._with_service_token(
                lambda token: self.client.request("PUT", path, token=token, json=body, what=what)
            )
        except VaultDenied as exc:
            return exc.message
        except VaultUnavailable as exc:
            return exc.message
        except VaultError:
            return None  # 400: unknown or already revoked / expired
        return None

    def accessor_alive(self, accessor: str) -> bool:
        """Whether a token accessor still names a live token (for checks and tests)."""
        try:
            self._with_service_token(
                lambda token: self.client.request(
                    "POST",
                    "auth/token/lookup-accessor",
                    token=token,
                    json={"accessor": accessor},
                    what="lookup accessor",
                )
            )
        except VaultDenied:
            raise
        except VaultUnavailable:
            raise
        except VaultError:
            return False
        return True
