"""Liveness, readiness (database and metric source) and the Prometheus exposition."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Role
from api.deps import ContextDep, authorize, bearer_token, get_session
from api.metrics import CONTENT_TYPE, render
from api.problems import problem
from core.database import check_database
from core.errors import DatabaseUnavailableError, PrognosError
from models.errors import ModelArtifactError

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready when the database answers and is sound; other parts failing is 'degraded'",
    responses={503: {"description": "not ready: the database is down or damaged"}},
)
def readyz(context: ContextDep, request: Request) -> JSONResponse:
    """The database decides readiness: without it nothing works. The metric source and the
    models failing leave the API and the approvals page useful: "degraded", still 200."""
    checks: dict[str, dict[str, str]] = {}
    for name, probe in (
        ("database", lambda: _database(context)),
        ("source", context.source.check),
        ("models", lambda: _models(context)),
    ):
        try:
            probe()
            checks[name] = {"status": "ok"}
        except PrognosError as exc:
            checks[name] = {"status": "failed", "error": exc.message}
        except Exception:
            log.exception("readiness check %s failed unexpectedly", name)
            checks[name] = {"status": "failed", "error": "unexpected error; see the service log"}
    if checks["database"]["status"] != "ok":
        return problem(
            503,
            detail="not ready: database failing",
            code="not_ready",
            instance=request.url.path,
            checks=checks,
        )
    failing = [n for n, c in checks.items() if c["status"] != "ok"]
    status = "degraded" if failing else "ready"
    return JSONResponse({"status": status, "checks": checks})


def _database(context: ContextDep) -> None:
    check_database(context.engine)
    if context.integrity:  # found at start: a full check per request would read the whole file
        raise DatabaseUnavailableError(context.integrity)


def _models(context: ContextDep) -> None:
    failures = context.models.failures()
    if failures:
        raise ModelArtifactError(
            "; ".join(f"{family} {problem}" for family, problem in sorted(failures.items()))
        )


@router.get(
    "/metrics",
    summary="Prometheus exposition of Prognos' own state",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, context: ContextDep) -> Response:
    if context.settings.api.metrics_require_token:

        def _authorise() -> None:
            session_iter = get_session(context)
            session = next(session_iter)
            try:
                authorize(request, context, session, Role.VIEWER)
            finally:
                session.close()

        bearer_token(request)
        await run_in_threadpool(_authorise)
    body = await run_in_threadpool(render, request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE)
