"""The simulated platform API the demo's playbooks act on: restart or scale a deployment of the
shop, or read its status. Only a caller holding the admin token may (the demo keeps that token in
OpenBao, so a playbook acts only with what Vault issued for its run).

HTTP (JSON; errors as RFC 9457 problems; every route needs `Authorization: Bearer <admin token>`):

- `POST /v1/deployments/{name}/restart` -> {deployment, restarted_at}
- `POST /v1/deployments/{name}/scale` with {"replicas": 1..20} -> {deployment, replicas, scaled_at}
- `GET /v1/deployments/{name}` -> `Platform.status`
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.clock import Clock, to_epoch
from core.errors import ErrorKind
from sim.errors import SimError, SimInputError
from sim.lifecycle import Lifecycle
from sim.shop import LATENCY_SLO, MEMORY_LIMIT, Shop

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_ROUTE = re.compile(r"^/v1/deployments/([^/]{1,100})(/restart|/scale)?$")
_STATUS = {
    ErrorKind.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorKind.INVALID: HTTPStatus.BAD_REQUEST,
}


class Platform:
    """The deployments of a shop, changed at the clock's now; `actions` records each change."""

    def __init__(self, shop: Shop, clock: Clock) -> None:
        self.shop = shop
        self.clock = clock
        self.actions: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def restart(self, deployment: str, *, who: str = "admin") -> dict[str, Any]:
        with self._lock:
            at = to_epoch(self.clock.now())
            self.shop.restart(deployment, at)
            self.actions.append({"who": who, "what": f"restart {deployment}", "when": at})
        return {"deployment": deployment, "restarted_at": at}

    def scale(self, deployment: str, replicas: int, *, who: str = "admin") -> dict[str, Any]:
        with self._lock:
            at = to_epoch(self.clock.now())
            self.shop.scale(deployment, replicas, at)
            self.actions.append(
                {"who": who, "what": f"scale {deployment} to {replicas}", "when": at}
            )
        return {"deployment": deployment, "replicas": replicas, "scaled_at": at}

    def status(self, deployment: str) -> dict[str, Any]:
        """Replicas, restarts and the worst pod's memory and p99 latency now; healthy when every
        pod is under both limits."""
        with self._lock:
            now = to_epoch(self.clock.now())
            memory = self.shop.at("memory", deployment, now)
            latency = self.shop.at("latency_p99", deployment, now)
            restarts = list(self.shop.restarts[deployment])
        return {
            "deployment": deployment,
            "replicas": len(memory),
            "restarts": restarts,
            "memory_bytes": max(memory.values()),
            "memory_limit_bytes": MEMORY_LIMIT,
            "latency_p99_seconds": max(latency.values()),
            "latency_slo_seconds": LATENCY_SLO,
            "healthy": all(m < MEMORY_LIMIT for m in memory.values())
            and all(v < LATENCY_SLO for v in latency.values()),
            "at": now,
        }

    def metrics_text(self) -> str:
        """Every pod's metrics now in Prometheus' text format (`/metrics`): what a Prometheus
        scraping the platform sees, e.g. to verify that a restart brought memory down."""
        lines = []
        with self._lock:
            now = to_epoch(self.clock.now())
            for target, (name, help_text) in _EXPORTED.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                for service in self.shop.services:
                    for pod, value in self.shop.at(target, service, now).items():
                        lines.append(f'{name}{{service="{service}",pod="{pod}"}} {value!r}')
        return "\n".join(lines) + "\n"


#: shop target -> (exported metric, help)
_EXPORTED = {
    "memory": ("shop_memory_bytes", "resident memory of the pod"),
    "latency_p99": ("shop_latency_p99_seconds", "p99 request latency of the pod"),
    "cpu": ("shop_cpu_ratio", "CPU used by the pod, share of its limit"),
    "errors": ("shop_errors_ratio", "share of the pod's requests that failed"),
}


class PlatformServer(Lifecycle):
    """`Platform` over HTTP on loopback (a daemon thread); `url` once started."""

    def __init__(
        self, platform: Platform, *, admin_token: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if not admin_token:
            raise SimInputError("the platform needs an admin token")
        self.platform = platform
        self._token = admin_token.encode()
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise SimError("the platform server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PlatformServer:
        if self._server is None:
            self._server = ThreadingHTTPServer(self._address, self._handler())
            self._server.daemon_threads = True
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="sim-platform", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                if method == "GET" and self.path.split("?", 1)[0] == "/metrics":
                    # What an exporter shows anyone who can reach it: read-only, no token.
                    text = server.platform.metrics_text().encode()
                    self.send_response(HTTPStatus.OK)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                if not server._authorized(self.headers.get("Authorization")):
                    self._problem(HTTPStatus.UNAUTHORIZED, "a valid admin bearer token is needed")
                    return
                route = _ROUTE.match(self.path.split("?", 1)[0])
                if route is None:
                    self._problem(HTTPStatus.NOT_FOUND, "no such route")
                    return
                name, action = route.group(1), route.group(2)
                allowed = "POST" if action else "GET"
                if method != allowed:
                    self._problem(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}", allow=allowed)
                    return
                try:
                    body = self._body() if method == "POST" else {}
                    if action == "/restart":
                        answer = server.platform.restart(name)
                    elif action == "/scale":
                        replicas = body.get("replicas")
                        if type(replicas) is not int or not 1 <= replicas <= 20:
                            raise SimInputError("replicas must be an integer 1..20")
                        answer = server.platform.scale(name, replicas)
                    else:
                        answer = server.platform.status(name)
                except _BodyTooLarge:
                    self._problem(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes"
                    )
                    return
                except SimError as exc:
                    status = _STATUS.get(exc.kind, HTTPStatus.INTERNAL_SERVER_ERROR)
                    self._problem(status, exc.message)
                    return
                self._send(HTTPStatus.OK, answer, "application/json")

            def _body(self) -> dict[str, Any]:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    raise SimInputError("Content-Length is not a number") from None
                if length > MAX_BODY:
                    raise _BodyTooLarge()
                raw = self.rfile.read(length) if length > 0 else b""
                if not raw:
                    return {}
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise SimInputError("the body is not JSON") from None
                if not isinstance(body, dict):
                    raise SimInputError("the body must be a JSON object")
                return body

            def _problem(self, status: HTTPStatus, detail: str, allow: str | None = None) -> None:
                problem = {
                    "type": "about:blank",
                    "title": status.phrase,
                    "status": int(status),
                    "detail": detail,
                }
                extra = {"Allow": allow} if allow else {}
                if status == HTTPStatus.UNAUTHORIZED:
                    extra["WWW-Authenticate"] = "Bearer"
                # Whatever is left unread of the request is not worth keeping the connection for.
                extra["Connection"] = "close"
                self._send(status, problem, "application/problem+json", extra)

            def _send(
                self,
                status: HTTPStatus,
                body: dict[str, Any],
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                if headers and headers.get("Connection") == "close":
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                # The request line only (never headers: they carry the token).
                log.debug("platform: " + format, *args)

        return Handler


class _BodyTooLarge(Exception):
    pass
