"""Bodies are never read for a caller without a valid token, nor past api.max_body_bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role
from prognos.context import ServiceContext
from tests.unit.api.helpers import MakeContext, assert_problem, bearer

CHUNK = b"x" * 65536


def call(
    context: ServiceContext,
    path: str,
    *,
    headers: dict[str, str],
    chunks: int,
    content_length: bool = True,
) -> tuple[int, int, dict[str, Any]]:
    """Send a POST of `chunks` 64 KiB chunks straight to the ASGI app; return (status, chunks
    the app pulled from the client, the JSON answer)."""
    app = create_app(context)
    pulled = 0
    answer: dict[str, Any] = {"status": 0, "body": b""}
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if content_length:
        raw.append((b"content-length", str(chunks * len(CHUNK)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *raw],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "app": app,
    }

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < chunks:
            pulled += 1
            return {"type": "http.request", "body": CHUNK, "more_body": pulled < chunks}
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    return answer["status"], pulled, json.loads(answer["body"] or b"{}")


def test_without_a_valid_token_not_a_byte_of_the_body_is_read(
    context: ServiceContext,
) -> None:
    for headers in ({}, {"Authorization": "Bearer pgn_nope_nope"}):
        status, pulled, body = call(context, "/v1/forecasts", headers=headers, chunks=2400)
        assert (status, pulled) == (401, 0), headers  # a 150 MB body, never read
        assert body["code"] == "unauthorized"


def test_a_body_over_the_limit_is_refused_before_or_while_it_streams_in(
    context: ServiceContext, issue: Callable[[Role], str]
) -> None:
    token = bearer(issue(Role.OPERATOR))
    status, pulled, body = call(context, "/v1/forecasts", headers=token, chunks=64)
    assert (status, pulled) == (413, 0) and "api.max_body_bytes" in body["detail"]
    # Without a Content-Length: read only up to the limit (2 MiB = 32 chunks), then refused.
    status, pulled, _ = call(
        context, "/v1/forecasts", headers=token, chunks=64, content_length=False
    )
    assert status == 413 and pulled <= 33


def test_bodies_within_the_limit_still_reach_their_route(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = make_context(api={"max_body_bytes": 4096})
    with TestClient(create_app(context)) as client:
        operator = bearer(issue(Role.OPERATOR))
        good = {"values": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "step_seconds": 60}
        assert client.post("/v1/forecasts", json=good, headers=operator).status_code == 200
        big = {**good, "values": [1.0] * 2000}
        assert_problem(client.post("/v1/forecasts", json=big, headers=operator), 413)
