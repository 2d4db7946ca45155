"""The FastAPI app factory: one app, wired to the context the composition root builds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import problems
from api.context import AppContext
from api.limits import BodyGuard
from api.metrics import build_registry
from api.routes import (
    alerts,
    health,
    incidents,
    predictions,
    remediations,
    rules,
    series,
    traces,
    ui,
)


def _version() -> str:
    try:
        return version("prognos")
    except PackageNotFoundError:
        return "0+unknown"


#: Open without a token (`/metrics` unless api.metrics_require_token).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/ui"})


def create_app(context: AppContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for start in context.on_start:
            start()
        try:
            yield
        finally:
            for stop in reversed(context.on_stop):
                stop()

    app = FastAPI(
        title="Prognos",
        version=_version(),
        description=(
            "Forecasts Prometheus metrics, warns before breaches, names root causes and runs "
            "approved playbooks. Authenticate with `Authorization: Bearer <token>` "
            "(`prognos token create --role viewer`)."
        ),
        lifespan=lifespan,
    )
    app.state.context = context
    app.state.registry = build_registry(context, _version())
    problems.install(app)
    app.add_middleware(BodyGuard, context=context)
    app.include_router(health.router)
    app.include_router(series.router)
    app.include_router(predictions.router)
    app.include_router(remediations.router)
    app.include_router(traces.router)
    app.include_router(incidents.router)
    app.include_router(alerts.router)
    app.include_router(rules.router)
    app.include_router(ui.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = problems.document(
                schema, public=PUBLIC_PATHS, own_errors=frozenset({"/v1/traces"})
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
