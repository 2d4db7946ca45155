"""Helpers for the API tests: the shop's series, tokens in headers, problem documents."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prognos.context import ServiceContext
from tests.unit.fakes import FakeSeries, FakeSource, make_target

NOW = datetime(2026, 1, 5, 12, 0, 17, tzinfo=UTC)
TARGETS = [
    make_target("cpu", lookback=timedelta(minutes=30)),
    make_target("memory", "container_memory_working_set_bytes", lookback=timedelta(minutes=30)),
]


def shop_source() -> FakeSource:
    return FakeSource(
        [
            FakeSeries("cpu", {"service": "checkout", "pod": "checkout-0"}),
            FakeSeries("cpu", {"service": "checkout", "pod": "checkout-1"}),
            FakeSeries("cpu", {"service": "cart", "pod": "cart-0"}),
            FakeSeries("memory", {"service": "cart", "pod": "cart-0"}),
        ]
    )


MakeContext = Callable[..., ServiceContext]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """An RFC 9457 problem document with the given status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def ingest_once(context: Any) -> None:
    """One ingest cycle over the context's targets, as the scheduler runs it."""
    from prognos.jobs import ingest_cycle

    summaries = ingest_cycle(context)
    assert all(s.status == "ok" for s in summaries), summaries
