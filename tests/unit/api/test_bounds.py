"""Out-of-range input is a 4xx problem, never a 500: ids and cursors beyond the id columns
(32-bit INTEGER on PostgreSQL), offsets beyond 64 bits, times at the ends of the calendar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth import Role
from tests.unit.api.helpers import assert_problem, bearer

INT4 = 2**31  # one past the largest id PostgreSQL's INTEGER holds
BIG = 2**63  # one past the largest integer SQLite holds
HUGE = 2**70
SMALL = -(2**63) - 1

READS = [
    "/v1/incidents?offset={n}",
    "/v1/incidents/{n}",
    "/v1/incidents/{n}/report.md",
    "/v1/incidents/{n}/report.html",
    "/v1/forecasts?series_id={n}",
    "/v1/forecasts?cursor={n}",
    "/v1/anomalies?series_id={n}",
    "/v1/breaches?series_id={n}",
    "/v1/breaches?offset={n}",
    "/v1/series?cursor={n}",
    "/v1/series/{n}/samples",
    "/v1/remediations?before={n}",
    "/v1/remediations/{n}",
    "/v1/executions/{n}",
    "/v1/audit?after={n}",
]

WRITES: list[tuple[str, Role, dict[str, Any] | None]] = [
    ("/v1/models/{n}/promote", Role.ADMIN, None),
    ("/v1/remediations/{n}/approve", Role.APPROVER, {"digest": "0" * 64}),
    ("/v1/remediations/{n}/reject", Role.APPROVER, {"reason": "no"}),
    ("/v1/remediations/{n}/cancel", Role.OPERATOR, None),
]


@pytest.mark.parametrize("n", [INT4, BIG, HUGE, SMALL])
def test_integers_beyond_the_columns_are_refused_on_every_route(
    client: TestClient, issue: Callable[[Role], str], n: int
) -> None:
    viewer = bearer(issue(Role.VIEWER))
    for shape in READS:
        if "offset=" in shape and 0 <= n < BIG:
            continue  # a 64-bit offset past the end is a valid, empty page
        path = shape.format(n=n)
        response = client.get(path, headers=viewer)
        assert response.status_code in (404, 422), (path, response.status_code, response.text)
        assert_problem(response, response.status_code)
    for shape, role, body in WRITES:
        path = shape.format(n=n)
        response = client.post(path, json=body, headers=bearer(issue(role)))
        assert response.status_code in (404, 422), (path, response.status_code, response.text)
        assert_problem(response, response.status_code)


def test_an_in_range_id_that_names_nothing_is_still_a_404(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    viewer = bearer(issue(Role.VIEWER))
    for path in ("/v1/incidents/{n}", "/v1/remediations/{n}", "/v1/series/{n}/samples"):
        assert_problem(client.get(path.format(n=INT4 - 1), headers=viewer), 404)


@pytest.mark.parametrize(
    ("end", "values", "step"),
    [
        ("9999-12-31T23:59:00Z", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 60),  # the horizon passes 9999
        ("9999-12-15T00:00:00Z", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 86_400),
        ("9999-12-31T20:00:00-05:00", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 60),  # 10000 in UTC
        ("0001-01-02T00:00:00Z", [1.0] * 50 + [90.0] + [1.0] * 9, 86_400),  # starts before year 1
    ],
)
def test_a_forecast_past_the_calendar_is_a_422_naming_end(
    client: TestClient, issue: Callable[[Role], str], end: str, values: list[float], step: int
) -> None:
    body = {"values": values, "step_seconds": step, "end": end}
    response = client.post("/v1/forecasts", json=body, headers=bearer(issue(Role.OPERATOR)))
    problem = assert_problem(response, 422)
    assert "end" in str(problem), problem


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59",
        "0001-01-01",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:00:00-05:00",
    ],
)
def test_time_filters_at_the_ends_of_the_calendar_answer(
    client: TestClient, issue: Callable[[Role], str], when: str
) -> None:
    viewer = bearer(issue(Role.VIEWER))
    for path in ("/v1/anomalies", "/v1/incidents"):
        for name in ("since", "until"):
            response = client.get(path, params={name: when}, headers=viewer)
            assert response.status_code in (200, 422), (path, name, response.text)
    for name in ("start", "end"):
        response = client.get("/v1/series/1/samples", params={name: when}, headers=viewer)
        assert response.status_code in (404, 422), (name, response.text)


@pytest.mark.parametrize("anomaly", [f"{2**31}-1700000000", "1-999999999999999999"])
def test_feedback_on_a_step_that_cannot_exist_is_not_found(
    client: TestClient, issue: Callable[[Role], str], anomaly: str
) -> None:
    response = client.post(
        f"/v1/anomalies/{anomaly}/feedback",
        json={"verdict": "false_alarm"},
        headers=bearer(issue(Role.OPERATOR)),
    )
    assert_problem(response, 404)
