"""`POST /v1/traces`: OTLP/HTTP span intake, answering as the OTLP/HTTP specification says
(google.rpc.Status bodies in the request's encoding), not with problem documents."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError

from api.auth import AuthError, Role, authenticate, needs_recording
from api.deps import ContextDep, remember_use
from core.database import session_scope
from core.errors import PrognosError
from core.selfmetrics import service as selfmetrics
from ingest import otlp, span_intake

log = logging.getLogger(__name__)
router = APIRouter(tags=["traces"])


def _answer(kind: str, status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status, media_type=kind, headers=headers)


def _error(kind: str, error: otlp.OtlpError, headers: dict[str, str] | None = None) -> Response:
    body = otlp.status_body(kind, error.rpc_code, error.message)
    return _answer(kind, error.http_status, body, headers)


_STATUS = {
    "description": "a google.rpc.Status, in the request's encoding (OTLP/HTTP specification)"
}
_OTLP_BODY = {
    "required": True,
    "description": "an ExportTraceServiceRequest; `Content-Encoding: gzip` is accepted",
    "content": {
        otlp.PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        otlp.JSON: {"schema": {"type": "object", "description": "OTLP JSON (hex ids)"}},
    },
}


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON); role ingest or admin",
    response_class=Response,
    openapi_extra={
        "requestBody": _OTLP_BODY,
        "responses": {
            "200": {"description": "an ExportTraceServiceResponse (partial success counted)"},
            **{str(code): _STATUS for code in (400, 401, 403, 413, 415, 503)},
        },
    },
)
async def export_traces(request: Request, context: ContextDep) -> Response:
    response, stored, rejected = await _export(request, context)
    await run_in_threadpool(_count, context, response.status_code == 200, stored, rejected)
    return response


def _count(context: ContextDep, accepted: bool, stored: int, rejected: int) -> None:
    """One upsert per export for /metrics (prognos_otlp_*); counting never fails the export."""
    try:
        with session_scope(context.sessions) as session:
            selfmetrics.count_otlp(
                session, accepted=accepted, spans=stored, rejected_spans=rejected
            )
            session.commit()
    except Exception as exc:
        log.warning("could not count an OTLP export for /metrics: %s", type(exc).__name__)


async def _export(request: Request, context: ContextDep) -> tuple[Response, int, int]:
    """The answer, the spans stored and the spans rejected."""
    declared = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    kind = declared if declared in (otlp.PROTOBUF, otlp.JSON) else otlp.JSON
    limit = context.settings.spans.max_request_bytes
    try:
        # Blocking work (the token lookup, inflating, decoding, the store) runs in the thread
        # pool: a large export must not stall every other request on the event loop.
        await run_in_threadpool(_authorize, request, context)  # before reading the body
        kind = otlp.media_type(request.headers.get("content-type"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise otlp.OtlpError(413, otlp.RESOURCE_EXHAUSTED, f"body exceeds {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise otlp.OtlpError(413, otlp.RESOURCE_EXHAUSTED, f"body exceeds {limit} bytes")
        encoding = request.headers.get("content-encoding")
        rejected, reason, stored = await run_in_threadpool(
            _ingest, context, bytes(body), encoding, kind, limit
        )
    except otlp.OtlpError as exc:
        return _error(kind, exc), 0, 0
    except (OperationalError, PrognosError) as exc:
        log.warning("span intake unavailable: %s", type(exc).__name__)
        error = otlp.OtlpError(503, otlp.UNAVAILABLE, "span store unavailable; retry later")
        return _error(kind, error, {"Retry-After": "5"}), 0, 0
    log.debug("stored %d spans (%d rejected)", stored, rejected)
    return _answer(kind, 200, otlp.success_body(kind, rejected, reason)), stored, rejected


#: Exports at least this large are taken whole (inflated, decoded, stored) by a worker process:
#: decoding a 16 MB export and building its rows hold the GIL for about a second, which in this
#: process would stall every other request (`/healthz` included) however many threads serve them.
OFFLOAD_BYTES = 1 << 20


class _Worker:
    """One worker process (spawned on first use, not forked from a threaded server), shared by
    the requests of this process; a worker that died is replaced on the next export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def take(
        self, database_url: str, body: bytes, encoding: str | None, kind: str, limit: int
    ) -> tuple[int, str, int]:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
            pool = self._pool
        try:
            job = pool.submit(span_intake.take, database_url, body, encoding, kind, limit)
            return job.result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            log.error("the span intake worker died; a new one starts with the next export")
            raise otlp.OtlpError(503, otlp.UNAVAILABLE, "span intake restarting; retry") from None


_worker = _Worker()


def _ingest(
    context: ContextDep, body: bytes, encoding: str | None, kind: str, limit: int
) -> tuple[int, str, int]:
    """(rejected spans, why, spans stored): a large export in the worker, on the same database."""
    if len(body) >= OFFLOAD_BYTES:
        url = context.engine.url.render_as_string(hide_password=False)
        return _worker.take(url, body, encoding, kind, limit)
    return span_intake.take_into(context.sessions, body, encoding, kind, limit)


def _authorize(request: Request, context: ContextDep) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise otlp.OtlpError(401, otlp.UNAUTHENTICATED, "send Authorization: Bearer <token>")
    now = context.clock.now()
    with session_scope(context.sessions) as session:
        try:
            principal = authenticate(session, token=token.strip(), now=now)
        except AuthError as exc:
            raise otlp.OtlpError(401, otlp.UNAUTHENTICATED, exc.message) from None
    if not principal.allows(Role.INGEST):
        message = f"role {principal.role.value!r} may not export spans; use an ingest token"
        raise otlp.OtlpError(403, otlp.PERMISSION_DENIED, message)
    if needs_recording(principal, now):
        remember_use(context, principal.token_id, now)
