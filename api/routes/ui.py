"""The web page: series charts, predicted breaches, incidents with their report, proposals to
approve and executions step by step. One static file; all data comes from the JSON API with the
bearer token the user enters (kept in the tab's sessionStorage, never in a URL)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])

#: The page's own inline script and style only; no other origin, no framing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def _page() -> str:
    return (files("api") / "static" / "ui.html").read_text(encoding="utf-8")


@router.get("/ui", response_class=HTMLResponse, summary="The web page (for people)")
def ui() -> HTMLResponse:
    return HTMLResponse(_page(), headers=HEADERS)
