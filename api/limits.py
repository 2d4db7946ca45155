"""Before any route reads a request body: the caller must hold a valid token (for `/v1/`) and
the body must fit `api.max_body_bytes`, so a client without a token cannot make the service read,
parse or hold a large body. `POST /v1/traces` answers these as OTLP prescribes, on its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AuthError, authenticate
from api.context import AppContext
from api.problems import problem

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Routes that check their own callers and bodies (OTLP answers with google.rpc.Status).
OWN_LIMITS = frozenset({"/v1/traces"})


class BodyGuard:
    """ASGI middleware: for requests that carry a body, refuse a missing or unknown token (401)
    and a body over the limit (413, from Content-Length or while it streams in) before the
    route reads it; the body that passes is handed to the route as received."""

    def __init__(self, app: ASGIApp, *, context: AppContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in BODY_METHODS
            or scope["path"] in OWN_LIMITS
        ):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.context.settings.api.max_body_bytes
        if path.startswith("/v1/"):
            refused = await run_in_threadpool(self._token_problem, headers, path)
            if refused is not None:
                await refused(scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _too_large(limit, path)(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > limit:
                await _too_large(limit, path)(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _token_problem(self, headers: dict[str, str], path: str) -> Any:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return problem(
                401,
                detail="missing bearer token: send `Authorization: Bearer <token>` (create one "
                "with `prognos token create --role viewer`)",
                code="unauthorized",
                instance=path,
            )
        try:
            with self.context.sessions() as session:
                authenticate(session, token=token.strip(), now=self.context.clock.now())
        except AuthError as exc:
            return problem(401, detail=exc.message, code=exc.code, instance=path)
        return None


def _too_large(limit: int, path: str) -> Any:
    return problem(
        413,
        detail=f"the request body exceeds {limit} bytes (api.max_body_bytes)",
        code="payload_too_large",
        instance=path,
    )


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[MutableMapping[str, Any]]]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as a server would

    return replay
