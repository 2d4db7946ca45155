"""RFC 9457 problem responses: one table from error kind to HTTP status, nothing leaks."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ErrorKind, PrognosError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.EXPIRED: 410,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.INVALID: 422,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Content too large",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem(
    status: int, *, detail: str, code: str, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://prognos.dev/problems/{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


#: The schema of every problem document, for the OpenAPI description.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "stable error code"},
        "instance": {"type": "string"},
    },
}
_DESCRIBED = {
    400: "the request body could not be read (not UTF-8 JSON)",
    401: "missing, unknown or revoked bearer token",
    403: "the token's role may not do this",
    404: "no such resource",
    409: "conflicts with the resource's state",
    413: "the request body is too large",
    422: "the request is not valid (which field, and why)",
    503: "a part the answer needs is unavailable",
}


def declare(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the problems it gives beyond those every operation may."""
    return {code: {"description": _DESCRIBED[code]} for code in codes}


def document(
    schema: dict[str, Any], *, public: frozenset[str], own_errors: frozenset[str]
) -> dict[str, Any]:
    """Add to an OpenAPI document: the bearer scheme on every operation that needs a token,
    and the problem responses each such operation may give, as application/problem+json
    (`own_errors`: operations that answer errors their own way, e.g. OTLP's). Every operation
    may answer 401/403/422, one with a body 400/413, one on a path with an id 404; others (a
    409, a 503) a route declares in its `responses`, and they are documented as problems too."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "`prognos token create --role ROLE` prints one (pgn_<id>_<secret>)",
    }
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            if path not in public:
                operation.setdefault("security", [{"bearerAuth": []}])
            if path in own_errors:
                continue
            responses = operation.setdefault("responses", {})
            codes = {c for c in _DESCRIBED if str(c) in responses}
            if path not in public:
                codes |= {401, 403, 422}
                if method in ("post", "put", "patch"):
                    codes.add(413)
                if "requestBody" in operation:
                    # FastAPI's own answer to a body it cannot decode (bytes that are not
                    # UTF-8; a JSON syntax error is a 422).
                    codes.add(400)
                if "{" in path:
                    codes.add(404)
            for code in sorted(codes):
                entry = responses.setdefault(str(code), {"description": _DESCRIBED[code]})
                content = entry.setdefault("content", {})
                content.pop("application/json", None)
                content[PROBLEM_JSON] = {"schema": ref}
    return schema


def install(app: FastAPI) -> None:
    @app.exception_handler(PrognosError)
    async def _prognos(request: Request, exc: PrognosError) -> JSONResponse:
        status = STATUS_BY_KIND.get(exc.kind, 500)
        if status == 500:
            log.error("request %s failed: %s (%s)", request.url.path, exc.code, exc.message)
            return problem(
                500,
                detail="internal error; see the service log",
                code="internal",
                instance=request.url.path,
            )
        return problem(status, detail=exc.message, code=exc.code, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem(
            422,
            detail="the request is not valid",
            code="request_invalid",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(
            exc.status_code,
            detail=str(exc.detail),
            code=f"http_{exc.status_code}",
            instance=request.url.path,
        )
        for name, value in (exc.headers or {}).items():  # e.g. Allow on a 405
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(
            500,
            detail="internal error; see the service log",
            code="internal",
            instance=request.url.path,
        )
