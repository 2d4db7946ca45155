"""The approval workflow endpoint: roles, four eyes, digests, expiry, problems, the audit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role
from core.clock import FixedClock
from ingest.tables import SeriesRow
from models.tables import BreachRow
from prognos.context import ServiceContext
from remediation import audit
from tests.unit.api.helpers import MakeContext, assert_problem, bearer
from tests.unit.remediation.helpers import make_playbook

Issue = Callable[..., str]


@pytest.fixture
def woken() -> list[int]:
    return []


@pytest.fixture
def rem_context(make_context: MakeContext, tmp_path: Path, woken: list[int]) -> ServiceContext:
    context = make_context(data_dir=tmp_path)
    context.playbooks = {
        "restart": make_playbook("restart", expires_after="30m"),
        "careful": make_playbook("careful", quorum=2, roles=["admin"]),
    }
    context.wake_executor = lambda: woken.append(1)
    return context


@pytest.fixture
def api(rem_context: ServiceContext) -> Iterator[TestClient]:
    with TestClient(create_app(rem_context), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def tokens(issue: Issue) -> dict[str, dict[str, str]]:
    return {
        "viewer": bearer(issue(Role.VIEWER, name="vera")),
        "olga": bearer(issue(Role.OPERATOR, name="olga")),
        "alice": bearer(issue(Role.APPROVER, name="alice")),
        "alice2": bearer(issue(Role.APPROVER, name="alice")),  # a second token, same person
        "bob": bearer(issue(Role.APPROVER, name="bob")),
        "root": bearer(issue(Role.ADMIN, name="root")),
        "ana": bearer(issue(Role.ADMIN, name="ana")),
    }


def propose(api: TestClient, tokens: dict[str, dict[str, str]], **body: Any) -> dict[str, Any]:
    payload = {"playbook": "restart", "target": "cart", "params": {"deployment": "cart"}}
    payload.update(body)
    response = api.post("/v1/remediations", json=payload, headers=tokens["olga"])
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_propose_approve_creates_a_pending_execution_and_wakes_the_executor(
    api: TestClient, tokens: dict[str, dict[str, str]], woken: list[int]
) -> None:
    created = propose(api, tokens, evidence={"incident_id": 12})
    assert created["status"] == "proposed" and created["params"]["replicas"] == 1
    assert len(created["digest"]) == 64

    approved = api.post(
        f"/v1/remediations/{created['id']}/approve",
        json={"digest": created["digest"]},
        headers=tokens["alice"],
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert body["approvals"][0]["principal"] == "alice"
    assert body["approvals"][0]["digest"] == created["digest"]
    assert body["execution"]["status"] == "pending" and body["execution"]["steps"] == []
    assert woken == [1]

    shown = api.get(f"/v1/remediations/{created['id']}", headers=tokens["viewer"]).json()
    assert shown["evidence"] == {"incident_id": 12}
    execution = api.get(f"/v1/executions/{shown['execution']['id']}", headers=tokens["viewer"])
    assert execution.status_code == 200 and execution.json()["proposal_id"] == created["id"]


def test_roles_are_enforced(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    payload = {"playbook": "restart", "target": "cart", "params": {"deployment": "cart"}}
    assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["viewer"]), 403)
    assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["alice"]), 403)
    assert_problem(api.post("/v1/remediations", json=payload), 401)
    created = propose(api, tokens)
    url = f"/v1/remediations/{created['id']}"
    digest = {"digest": created["digest"]}
    assert_problem(api.post(f"{url}/approve", json=digest, headers=tokens["olga"]), 403)
    assert_problem(api.post(f"{url}/approve", json=digest, headers=tokens["viewer"]), 403)
    assert_problem(api.post(f"{url}/reject", json={"reason": "no"}, headers=tokens["olga"]), 403)
    assert_problem(api.post(f"{url}/cancel", headers=tokens["alice"]), 403)
    assert api.get("/v1/remediations", headers=tokens["viewer"]).status_code == 200


def test_the_proposer_cannot_approve_their_own_proposal(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    created = api.post(
        "/v1/remediations",
        json={"playbook": "restart", "target": "cart", "params": {"deployment": "cart"}},
        headers=tokens["root"],
    ).json()
    body = assert_problem(
        api.post(
            f"/v1/remediations/{created['id']}/approve",
            json={"digest": created["digest"]},
            headers=tokens["root"],
        ),
        409,
    )
    assert body["code"] == "four_eyes"


def test_quorum_two_counts_one_person_once_and_checks_the_role(
    api: TestClient, tokens: dict[str, dict[str, str]], woken: list[int]
) -> None:
    created = propose(api, tokens, playbook="careful")
    url = f"/v1/remediations/{created['id']}/approve"
    digest = {"digest": created["digest"]}
    body = assert_problem(api.post(url, json=digest, headers=tokens["alice"]), 403)
    assert body["code"] == "approver_role"  # this playbook wants admins
    assert api.post(url, json=digest, headers=tokens["root"]).json()["status"] == "proposed"
    assert woken == []
    again = assert_problem(api.post(url, json=digest, headers=tokens["root"]), 409)
    assert again["code"] == "already_approved_by_you"
    done = api.post(url, json=digest, headers=tokens["ana"]).json()
    assert done["status"] == "approved" and done["execution"]["status"] == "pending"
    assert woken == [1]


def test_same_person_with_two_tokens_counts_once(
    api: TestClient, tokens: dict[str, dict[str, str]], rem_context: ServiceContext
) -> None:
    assert rem_context.playbooks is not None
    rem_context.playbooks["pair"] = make_playbook("pair", quorum=2)
    created = propose(api, tokens, playbook="pair")
    url = f"/v1/remediations/{created['id']}/approve"
    digest = {"digest": created["digest"]}
    assert api.post(url, json=digest, headers=tokens["alice"]).status_code == 200
    assert_problem(api.post(url, json=digest, headers=tokens["alice2"]), 409)


def test_a_wrong_digest_is_refused(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    created = propose(api, tokens)
    body = assert_problem(
        api.post(
            f"/v1/remediations/{created['id']}/approve",
            json={"digest": "0" * 64},
            headers=tokens["alice"],
        ),
        409,
    )
    assert body["code"] == "digest_mismatch"
    assert_problem(
        api.post(f"/v1/remediations/{created['id']}/approve", json={}, headers=tokens["alice"]),
        422,
    )


def test_expired_proposals_are_denied(
    api: TestClient, tokens: dict[str, dict[str, str]], rem_context: ServiceContext
) -> None:
    created = propose(api, tokens)
    assert isinstance(rem_context.clock, FixedClock)
    rem_context.clock.advance(timedelta(minutes=31))
    body = assert_problem(
        api.post(
            f"/v1/remediations/{created['id']}/approve",
            json={"digest": created["digest"]},
            headers=tokens["alice"],
        ),
        409,
    )
    assert body["code"] == "proposal_expired"
    shown = api.get(f"/v1/remediations/{created['id']}", headers=tokens["viewer"]).json()
    assert shown["status"] == "expired"


def test_reject_needs_a_reason_and_blocks_later_approvals(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    created = propose(api, tokens)
    url = f"/v1/remediations/{created['id']}"
    assert_problem(api.post(f"{url}/reject", json={"reason": ""}, headers=tokens["bob"]), 422)
    assert_problem(api.post(f"{url}/reject", json={"reason": "   "}, headers=tokens["bob"]), 422)
    rejected = api.post(f"{url}/reject", json={"reason": "wrong service"}, headers=tokens["bob"])
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert rejected.json()["reason"] == "wrong service"
    body = assert_problem(
        api.post(f"{url}/approve", json={"digest": created["digest"]}, headers=tokens["alice"]),
        409,
    )
    assert body["code"] == "proposal_already_decided"


def test_cancel_by_an_operator(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    created = propose(api, tokens)
    response = api.post(
        f"/v1/remediations/{created['id']}/cancel",
        json={"reason": "fixed by hand"},
        headers=tokens["olga"],
    )
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert_problem(
        api.post(f"/v1/remediations/{created['id']}/cancel", headers=tokens["olga"]), 409
    )


def test_not_found_and_bad_input(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    assert_problem(api.get("/v1/remediations/999", headers=tokens["viewer"]), 404)
    assert_problem(api.get("/v1/executions/999", headers=tokens["viewer"]), 404)
    assert_problem(
        api.post(
            "/v1/remediations/999/approve", json={"digest": "0" * 64}, headers=tokens["alice"]
        ),
        404,
    )
    payload = {"playbook": "nope", "target": "cart"}
    assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["olga"]), 404)
    payload = {"playbook": "restart", "target": "cart", "params": {"deployment": "Cart; rm"}}
    body = assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["olga"]), 422)
    assert body["code"] == "params_invalid"
    payload = {"playbook": "restart", "target": "cart", "params": {}, "extra": 1}
    assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["olga"]), 422)


def test_list_filters_and_pages(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    for target in ("a", "b", "c"):
        propose(api, tokens, target=target)
    first = api.get("/v1/remediations?limit=2", headers=tokens["viewer"]).json()
    assert [p["target"] for p in first["items"]] == ["c", "b"]
    second = api.get(
        f"/v1/remediations?limit=2&before={first['next_cursor']}", headers=tokens["viewer"]
    ).json()
    assert [p["target"] for p in second["items"]] == ["a"] and second["next_cursor"] is None
    only = api.get("/v1/remediations?target=b&status=proposed", headers=tokens["viewer"]).json()
    assert [p["target"] for p in only["items"]] == ["b"]
    assert_problem(api.get("/v1/remediations?status=bogus", headers=tokens["viewer"]), 422)


def test_playbooks_and_audit_are_readable_and_the_chain_verifies(
    api: TestClient, tokens: dict[str, dict[str, str]], rem_context: ServiceContext
) -> None:
    playbooks = api.get("/v1/playbooks", headers=tokens["viewer"]).json()
    assert [p["name"] for p in playbooks] == ["careful", "restart"]
    assert playbooks[1]["steps"][0]["argv"][0] == "kubectl"
    created = propose(api, tokens)
    api.post(
        f"/v1/remediations/{created['id']}/approve",
        json={"digest": created["digest"]},
        headers=tokens["alice"],
    )
    page = api.get("/v1/audit?limit=2", headers=tokens["viewer"]).json()
    assert [e["action"] for e in page["items"]] == ["propose", "approve"]
    rest = api.get(f"/v1/audit?after={page['next_cursor']}", headers=tokens["viewer"]).json()
    assert [e["action"] for e in rest["items"]] == ["approved"]
    assert rest["items"][0]["prev_hash"] == page["items"][1]["hash"]
    assert_problem(api.get("/v1/audit"), 401)
    with rem_context.sessions() as session:
        result = audit.verify(session, rem_context.settings.data_dir / "audit-head")
    assert result.ok and result.entries == 3 and result.unanchored == 0


def test_a_breach_named_as_evidence_is_attached_as_a_snapshot(
    api: TestClient, tokens: dict[str, dict[str, str]], rem_context: ServiceContext
) -> None:
    now = rem_context.clock.now()
    with rem_context.sessions() as session:
        series = SeriesRow(
            target="memory",
            key="k" * 64,
            labels={"service": "cart", "pod": "cart-0"},
            service="cart",
            first_seen=now,
            last_seen=now,
        )
        session.add(series)
        session.flush()
        session.add(
            BreachRow(
                series_id=series.id,
                made_at=1_700_000_000,
                threshold=0.95,
                direction="above",
                probability=0.8,
                eta=1_700_000_600,
                streak=2,
                warning=True,
                warning_since=1_699_999_940,
                model="lstm-v3",
                updated_at=now,
            )
        )
        session.commit()
        series_id = series.id
    created = propose(api, tokens, evidence={"breach_series_id": series_id})
    shown = api.get(f"/v1/remediations/{created['id']}", headers=tokens["viewer"]).json()
    breach = shown["evidence"]["breach"]
    assert breach["service"] == "cart" and breach["probability"] == 0.8
    assert breach["eta"] == 1_700_000_600 and breach["model"] == "lstm-v3"
    payload = {
        "playbook": "restart",
        "target": "cart",
        "params": {"deployment": "cart"},
        "evidence": {"breach_series_id": 999},
    }
    assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["olga"]), 404)


def test_evidence_is_bounded_and_kept_out_of_lists(
    api: TestClient, tokens: dict[str, dict[str, str]], rem_context: ServiceContext
) -> None:
    """Evidence over 64 KB (8 MB used to be accepted, stored twice and sent in every list) is
    refused with a problem naming the field; lists and the audit trail leave it out."""
    payload = {"playbook": "restart", "target": "cart", "params": {"deployment": "cart"}}
    huge = {**payload, "evidence": {"log": "x" * 70_000}}
    body = assert_problem(api.post("/v1/remediations", json=huge, headers=tokens["olga"]), 422)
    assert "evidence" in body["detail"] and "65536" in body["detail"].replace(",", "")
    assert api.get("/v1/remediations", headers=tokens["viewer"]).json()["items"] == []

    kept = {"log": "y" * 60_000, "incident_id": 3}
    created = propose(api, tokens, evidence=kept)
    listed = api.get("/v1/remediations", headers=tokens["viewer"]).json()["items"]
    assert [p["id"] for p in listed] == [created["id"]]
    assert "evidence" not in listed[0]
    shown = api.get(f"/v1/remediations/{created['id']}", headers=tokens["viewer"]).json()
    assert shown["evidence"] == kept
    entries = api.get("/v1/audit", headers=tokens["viewer"]).json()["items"]
    assert entries[0]["action"] == "propose" and "y" * 100 not in str(entries[0]["data"])
    assert len(entries[0]["data"]["evidence_sha256"]) == 64
    with rem_context.sessions() as session:
        result = audit.verify(session, rem_context.settings.data_dir / "audit-head")
    assert result.ok


def test_evidence_that_is_not_json_is_refused(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    """NaN and Infinity parse (Python's JSON reader takes them) but are not JSON: a 422."""
    for bad in ("NaN", "Infinity", "-Infinity"):
        raw = (
            '{"playbook": "restart", "target": "cart", "params": {"deployment": "cart"}, '
            f'"evidence": {{"score": {bad}}}}}'
        )
        response = api.post(
            "/v1/remediations",
            content=raw,
            headers={**tokens["olga"], "content-type": "application/json"},
        )
        body = assert_problem(response, 422)
        assert "evidence" in body["detail"], body
    assert api.get("/v1/remediations", headers=tokens["viewer"]).json()["items"] == []


@pytest.mark.parametrize("series_id", [2**31, 2**63, 2**70])
def test_a_breach_named_by_a_series_id_past_the_column_is_not_found(
    api: TestClient, tokens: dict[str, dict[str, str]], series_id: int
) -> None:
    payload = {
        "playbook": "restart",
        "target": "cart",
        "params": {"deployment": "cart"},
        "evidence": {"breach_series_id": series_id},
    }
    assert_problem(api.post("/v1/remediations", json=payload, headers=tokens["olga"]), 404)
