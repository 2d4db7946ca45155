"""Reading what ingest stored: series with filters and cursor pages, samples, targets, runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role
from ingest.errors import QueryError
from prognos.context import ServiceContext
from tests.unit.api.helpers import MakeContext, assert_problem, bearer, ingest_once
from tests.unit.fakes import FakeSeries, FakeSource

NEWEST = datetime(2026, 1, 5, 11, 59, tzinfo=UTC)  # NOW - lag, on the minute grid


@pytest.fixture
def viewer(context: ServiceContext, issue: Any) -> dict[str, str]:
    ingest_once(context)
    return bearer(issue(Role.VIEWER))


def pods(client: TestClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = client.get("/v1/series", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return sorted(f"{s['target']}/{s['labels']['pod']}" for s in response.json()["items"])


def test_a_viewer_lists_series_with_their_labels(
    client: TestClient, viewer: dict[str, str]
) -> None:
    body = client.get("/v1/series", headers=viewer).json()
    assert body["next_cursor"] is None
    assert len(body["items"]) == 4
    item = next(s for s in body["items"] if s["labels"]["pod"] == "checkout-1")
    assert item["target"] == "cpu"
    assert item["service"] == "checkout"
    assert item["labels"] == {"service": "checkout", "pod": "checkout-1"}
    assert datetime.fromisoformat(item["first_seen"]) == datetime(2026, 1, 5, 12, 0, 17, tzinfo=UTC)


def test_filters(client: TestClient, viewer: dict[str, str]) -> None:
    assert pods(client, viewer, target="memory") == ["memory/cart-0"]
    assert pods(client, viewer, service="checkout") == ["cpu/checkout-0", "cpu/checkout-1"]
    assert pods(client, viewer, label="pod=cart-0") == ["cpu/cart-0", "memory/cart-0"]
    assert pods(client, viewer, target="cpu", label=["service=cart", "pod=cart-0"]) == [
        "cpu/cart-0"
    ]
    assert pods(client, viewer, label="pod=nope") == []
    assert pods(client, viewer, service="nope") == []


@pytest.mark.parametrize("bad", ["pod", "=cart-0"])
def test_a_malformed_label_filter_is_a_422_problem(
    client: TestClient, viewer: dict[str, str], bad: str
) -> None:
    body = assert_problem(client.get("/v1/series", headers=viewer, params={"label": bad}), 422)
    assert body["errors"][0]["loc"] == ["query", "label", 0]
    assert "pattern" in body["errors"][0]["msg"]


def test_cursor_pagination_walks_every_series_once(
    client: TestClient, viewer: dict[str, str]
) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        body = client.get("/v1/series", headers=viewer, params=params).json()
        seen.extend(s["id"] for s in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == 3
    assert pages == 2
    assert len(seen) == len(set(seen)) == 4
    # Exactly one page: no dangling cursor to an empty page.
    assert (
        client.get("/v1/series", headers=viewer, params={"limit": 4}).json()["next_cursor"] is None
    )


def test_a_selective_label_filter_finds_matches_beyond_the_first_rows(
    make_context: MakeContext, issue: Any
) -> None:
    source = FakeSource(
        [FakeSeries("cpu", {"service": "web", "pod": f"web-{i:02d}"}) for i in range(25)]
        + [FakeSeries("cpu", {"service": "db", "pod": "db-0"})]
    )
    context = make_context(source)
    ingest_once(context)
    headers = bearer(issue(Role.VIEWER))
    with TestClient(create_app(context)) as client:
        found = pods(client, headers, label="pod=db-0", limit=2)
    assert found == ["cpu/db-0"]


def test_limit_is_validated_as_a_problem(client: TestClient, viewer: dict[str, str]) -> None:
    body = assert_problem(client.get("/v1/series", headers=viewer, params={"limit": 0}), 422)
    assert body["code"] == "request_invalid"
    assert body["errors"][0]["loc"][-1] == "limit"


def test_samples_of_a_series(client: TestClient, viewer: dict[str, str]) -> None:
    series = client.get("/v1/series", headers=viewer, params={"target": "memory"}).json()
    series_id = series["items"][0]["id"]
    body = client.get(f"/v1/series/{series_id}/samples", headers=viewer).json()
    assert body["series"]["id"] == series_id
    times = [datetime.fromisoformat(t) for t, _ in body["points"]]
    assert len(times) == 30  # 30 minutes of lookback at 60 s
    assert times[-1] == NEWEST
    assert times == sorted(times)
    assert body["points"][-1][1] == NEWEST.timestamp() / 1000.0

    start = (NEWEST - timedelta(minutes=4)).isoformat()
    end = (NEWEST - timedelta(minutes=2)).isoformat()
    window = client.get(
        f"/v1/series/{series_id}/samples", headers=viewer, params={"start": start, "end": end}
    ).json()
    assert len(window["points"]) == 3
    newest_two = client.get(
        f"/v1/series/{series_id}/samples", headers=viewer, params={"limit": 2}
    ).json()
    assert [datetime.fromisoformat(t) for t, _ in newest_two["points"]] == times[-2:]


def test_samples_of_an_unknown_series_is_a_404_problem(
    client: TestClient, viewer: dict[str, str]
) -> None:
    body = assert_problem(client.get("/v1/series/9999/samples", headers=viewer), 404)
    assert "9999" in body["detail"]


def test_targets_show_their_watermark_and_last_run(make_context: MakeContext, issue: Any) -> None:
    context = make_context()
    ingest_once(context)
    context.source.fail_with = QueryError("target 'memory': parse error", target="memory")
    context.clock.advance(timedelta(minutes=5))
    from prognos.jobs import ingest_cycle

    ingest_cycle(context)
    headers = bearer(issue(Role.VIEWER))
    with TestClient(create_app(context)) as client:
        targets = {t["name"]: t for t in client.get("/v1/targets", headers=headers).json()}
        runs = client.get("/v1/ingest/runs", headers=headers, params={"target": "memory"}).json()
    assert set(targets) == {"cpu", "memory"}
    memory = targets["memory"]
    assert memory["step_seconds"] == 60
    assert memory["query"] == "container_memory_working_set_bytes"
    assert datetime.fromisoformat(memory["watermark"]) == NEWEST  # unchanged by the failure
    assert memory["last_run_status"] == "failed"
    assert memory["last_error"] == "target 'memory': parse error"
    assert [r["status"] for r in runs] == ["failed", "ok"]
    assert runs[0]["error_code"] == "query_invalid"
    assert runs[1]["points"] == 30
    assert datetime.fromisoformat(runs[1]["window_end"]) == NEWEST
