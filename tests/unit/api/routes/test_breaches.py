"""Predicted breaches in the serving cycle, on /v1/breaches and /metrics; ad-hoc forecasts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role
from core.clock import FixedClock
from core.settings import BreachSettings, TargetSettings
from prognos.context import ServiceContext
from prognos.jobs import forecast_cycle
from tests.unit.api.helpers import TARGETS, MakeContext, assert_problem, bearer, ingest_once


def _with_limit(
    target: TargetSettings, threshold: float, direction: str = "above"
) -> TargetSettings:
    limit = BreachSettings(threshold=threshold, direction=direction, consecutive=2)  # type: ignore[arg-type]
    return target.model_copy(update={"breach": limit})


def _context(make_context: MakeContext, threshold: float) -> ServiceContext:
    context = make_context()
    # cpu gets a limit every series is already beyond (a certain crossing), memory none.
    targets = [_with_limit(TARGETS[0], threshold), TARGETS[1]]
    return dataclasses.replace(context, targets=targets)


def _cycle(context: ServiceContext) -> None:
    ingest_once(context)
    forecast_cycle(context)
    assert isinstance(context.clock, FixedClock)
    context.clock.advance(timedelta(minutes=1))


def test_a_warning_needs_consecutive_forecasts_and_keeps_its_start(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = _context(make_context, threshold=-1e9)
    token = issue(Role.VIEWER)
    with TestClient(create_app(context)) as client:
        _cycle(context)
        assert client.get("/v1/breaches", headers=bearer(token)).json() == []
        every = client.get(
            "/v1/breaches", params={"warning_only": "false"}, headers=bearer(token)
        ).json()
        assert len(every) == 3 and {b["target"] for b in every} == {"cpu"}
        assert all(b["probability"] == 1.0 and not b["warning"] for b in every)

        _cycle(context)
        warned = client.get("/v1/breaches", headers=bearer(token)).json()
        assert len(warned) == 3
        first = {b["series_id"]: b["warning_since"] for b in warned}
        assert all(b["eta_seconds"] == 60 for b in warned)  # beyond the limit from step 1

        _cycle(context)
        again = client.get("/v1/breaches", params={"service": "cart"}, headers=bearer(token))
        (cart,) = again.json()
        assert cart["warning_since"] == first[cart["series_id"]]  # the same warning goes on

        text = client.get("/metrics").text
        assert "prognos_breach_eta_seconds{" in text
        assert 'service="cart"' in text and 'direction="above"' in text
        assert "prognos_breach_probability{" in text


def test_an_unreachable_limit_never_warns(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    context = _context(make_context, threshold=1e12)
    token = issue(Role.VIEWER)
    with TestClient(create_app(context)) as client:
        for _ in range(3):
            _cycle(context)
        assert client.get("/v1/breaches", headers=bearer(token)).json() == []
        rows = client.get(
            "/v1/breaches", params={"warning_only": "false"}, headers=bearer(token)
        ).json()
        assert rows and all(b["probability"] < 0.01 and b["eta"] is None for b in rows)
        assert "prognos_breach_eta_seconds{" not in client.get("/metrics").text


def test_adhoc_forecast_validates_and_predicts(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    operator = bearer(issue(Role.OPERATOR))
    values = [10.0 + (i % 7) for i in range(300)]
    body = {"values": values, "step_seconds": 60, "end": "2026-01-05T11:00:00Z"}
    response = client.post("/v1/forecasts", json=body, headers=operator)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["made_at"].startswith("2026-01-05T11:00:00")
    assert len(out["points"]) == 30 and out["points"][0]["at"].startswith("2026-01-05T11:01:00")
    for point in out["points"]:
        q = point["quantiles"]
        assert 5 < q["p10"] <= q["p50"] <= q["p90"] < 25
    assert out["breach"] is None

    with_limit = {**body, "limit": {"threshold": 100.0}}
    breach = client.post("/v1/forecasts", json=with_limit, headers=operator).json()["breach"]
    assert breach["probability"] < 0.01 and breach["eta"] is None

    gaps = {**body, "values": [None] * 100 + values}
    assert client.post("/v1/forecasts", json=gaps, headers=operator).status_code == 200


def test_adhoc_forecast_scores_its_values_and_knows_the_season(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    """The body's values go through the service's detector (its alarms come back with their
    evidence), and two days of them give the breach check its season."""
    import math

    operator = bearer(issue(Role.OPERATOR))
    step = 300
    n = 2 * 288 - 30  # two days at 5 min, ending 2.5 h before the daily peak
    values = [100 + 50 * math.sin(2 * math.pi * (i * step % 86400) / 86400) for i in range(n)]
    spiked = list(values)
    spiked[400] += 80
    body = {"values": spiked, "step_seconds": step, "end": "2026-01-05T03:30:00Z"}
    out = client.post("/v1/forecasts", json=body, headers=operator).json()
    assert [a["evidence"]["component"] for a in out["alarms"]] == ["level"]
    assert out["alarms"][0]["at"].startswith("2026-01-04T15:25") and out["alarms"][0]["score"] > 4

    # At the daily trough the cold-start band reaches above 70 (its p90 is ~76); the same half
    # hour yesterday stayed near the trough (~50), so with a day of history it is no trend.
    trough = values[: 288 + 217]  # ends at the daily minimum
    limit = {"threshold": 70.0}
    season = {"values": trough, "step_seconds": step, "limit": limit}
    short = {**season, "values": trough[-150:]}
    with_season = client.post("/v1/forecasts", json=season, headers=operator).json()["breach"]
    without = client.post("/v1/forecasts", json=short, headers=operator).json()["breach"]
    assert without["probability"] > 0.3
    assert with_season["probability"] < 0.05


def test_adhoc_forecast_rejects_bad_input_and_roles(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    operator = bearer(issue(Role.OPERATOR))
    good = {"values": [1.0, 2.0, 3.0, 4.0, 5.0], "step_seconds": 60}
    cases = [
        ({**good, "values": [1.0]}, "values"),
        ({**good, "values": [None, None, 1.0, 2.0, 3.0, 4.0]}, "5 observed"),
        ({**good, "values": [1.0] * 20_001}, "values"),
        ({**good, "step_seconds": 0}, "step_seconds"),
        ({**good, "end": "2026-01-05T11:00:00"}, "time zone"),
    ]
    for body, expected in cases:
        problem = assert_problem(client.post("/v1/forecasts", json=body, headers=operator), 422)
        assert expected in str(problem), (body, problem)
    # NaN and Infinity are not JSON, but some clients send them anyway.
    raw = '{"values": [1.0, NaN, 3.0], "step_seconds": 60}'
    response = client.post(
        "/v1/forecasts", content=raw, headers={**operator, "content-type": "application/json"}
    )
    assert_problem(response, 422)
    viewer = bearer(issue(Role.VIEWER))
    assert_problem(client.post("/v1/forecasts", json=good, headers=viewer), 403)


def test_a_new_breach_warning_opens_an_incident_that_proposes_once(
    make_context: MakeContext, issue: Callable[[Role], str]
) -> None:
    from prognos.jobs import expire_proposals, group_incidents
    from tests.unit.remediation.helpers import make_playbook

    context = _context(make_context, threshold=-1e9)
    breach_only = make_playbook(
        "scale",
        parameters={},
        steps=[{"kind": "command", "name": "scale", "argv": ["true", "{{ target }}"]}],
        match={"services": ["cart"], "kinds": ["breach"]},
    )
    context.playbooks = {"scale": breach_only}
    token = issue(Role.VIEWER)
    with TestClient(create_app(context)) as client:
        _cycle(context)
        assert group_incidents(context).opened == []  # one forecast: no warning yet
        _cycle(context)
        assert group_incidents(context).opened  # the warnings turned on: incidents open
        assert group_incidents(context).opened == []  # the same warnings join them
        _cycle(context)
        assert group_incidents(context).opened == []  # still the same warnings
        incidents = client.get("/v1/incidents", headers=bearer(token)).json()
        assert any("predicted to cross" in i["symptom"] for i in incidents)
        proposals = client.get("/v1/remediations", headers=bearer(token)).json()
        items = proposals["items"] if isinstance(proposals, dict) else proposals
        assert [(p["playbook"], p["target"], p["proposed_by"]) for p in items] == [
            ("scale", "cart", "daemon")
        ]
        assert isinstance(context.clock, FixedClock)
        context.clock.advance(timedelta(hours=2))
        assert len(expire_proposals(context)) == 1


def test_adhoc_forecast_from_too_few_values_says_how_many_are_needed(
    client: TestClient, issue: Callable[[Role], str]
) -> None:
    """2 to 4 values used to answer 200 with every quantile null; the cold-start band needs five
    observations, so the answer is a 422 that says so, and five give real numbers."""
    operator = bearer(issue(Role.OPERATOR))
    for values in ([1.0, 2.0], [1.0, 2.0, 3.0], [None, 1.0, 2.0, 3.0, 4.0]):
        body = {"values": values, "step_seconds": 60, "end": "2026-01-05T11:00:00Z"}
        problem = assert_problem(client.post("/v1/forecasts", json=body, headers=operator), 422)
        # The request's own schema says it now (minItems / minContains), naming the field.
        assert problem["errors"][0]["loc"] == ["body", "values"], problem
        assert "at least 5" in problem["errors"][0]["msg"], problem
    body = {"values": [1.0, 2.0, 3.0, 4.0, 5.0], "step_seconds": 60, "limit": {"threshold": 9.0}}
    response = client.post("/v1/forecasts", json=body, headers=operator)
    assert response.status_code == 200, response.text
    for point in response.json()["points"]:
        q = point["quantiles"]
        assert all(isinstance(v, float) for v in q.values()), q
        assert q["p10"] <= q["p50"] <= q["p90"]
