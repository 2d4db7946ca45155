"""Bearer tokens: shown once, stored only as a hash, refused when wrong, revoked or underpowered."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.auth import AuthError, Principal, Role, authenticate, list_tokens, revoke_token
from api.tables import ApiTokenRow
from core.clock import FixedClock
from core.errors import NotFoundError
from prognos.context import ServiceContext
from tests.unit.api.helpers import NOW, assert_problem, bearer

Issue = Callable[..., str]


def test_without_a_token_v1_answers_401_problem(client: TestClient) -> None:
    for path in ("/v1/series", "/v1/targets", "/v1/ingest/runs", "/v1/series/1/samples"):
        response = client.get(path)
        body = assert_problem(response, 401)
        assert body["title"] == "Unauthorized"
        assert "prognos token create" in body["detail"]
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer not-a-token",
        "Bearer pgn_000000000000_wrongsecret",
        "pgn_abc_def",
    ],
)
def test_malformed_or_unknown_tokens_are_refused(
    client: TestClient, issue: Issue, header: str
) -> None:
    issue(Role.VIEWER)
    assert_problem(client.get("/v1/series", headers={"Authorization": header}), 401)


def test_a_wrong_secret_for_a_known_id_is_refused(client: TestClient, issue: Issue) -> None:
    token = issue(Role.VIEWER)
    prefix, token_id, secret = token.split("_", 2)
    forged = f"{prefix}_{token_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert client.get("/v1/series", headers=bearer(token)).status_code == 200
    body = assert_problem(client.get("/v1/series", headers=bearer(forged)), 401)
    assert secret not in body["detail"]


def test_a_revoked_token_is_refused(
    client: TestClient, issue: Issue, sessions: sessionmaker[Session]
) -> None:
    token = issue(Role.VIEWER)
    assert client.get("/v1/series", headers=bearer(token)).status_code == 200
    with sessions() as session:
        revoke_token(session, token_id=token.split("_")[1], now=NOW)
        session.commit()
    body = assert_problem(client.get("/v1/series", headers=bearer(token)), 401)
    assert "revoked" in body["detail"]


def test_revoking_an_unknown_token_says_so(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(NotFoundError, match="token list"):
        revoke_token(session, token_id="nope", now=NOW)


def test_an_ingest_token_may_not_read_v1(client: TestClient, issue: Issue) -> None:
    body = assert_problem(client.get("/v1/series", headers=bearer(issue(Role.INGEST))), 403)
    assert "'ingest'" in body["detail"] and "'viewer'" in body["detail"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN])
def test_every_reading_role_may_read(role: Role) -> None:
    assert Principal("id", "n", role).allows(Role.VIEWER)


def test_role_grants() -> None:
    assert not Principal("i", "n", Role.VIEWER).allows(Role.OPERATOR)
    assert not Principal("i", "n", Role.APPROVER).allows(Role.OPERATOR)
    assert not Principal("i", "n", Role.OPERATOR).allows(Role.APPROVER)
    assert Principal("i", "n", Role.ADMIN).allows(Role.INGEST)
    assert not Principal("i", "n", Role.INGEST).allows(Role.VIEWER)


def test_tokens_are_stored_only_hashed(issue: Issue, sessions: sessionmaker[Session]) -> None:
    token = issue(Role.ADMIN, name="ci-bot")
    _, token_id, secret = token.split("_", 2)
    assert token.startswith("pgn_") and len(secret) >= 40  # 256 random bits
    with sessions() as session:
        rows = session.execute(sa.text("SELECT * FROM api_tokens")).all()
        stored = " ".join(str(value) for row in rows for value in row)
        assert token_id in stored  # the public part is the lookup key
        assert secret not in stored
        assert token not in stored
        [row] = list_tokens(session)
        assert (row.name, row.role) == ("ci-bot", "admin")


def test_each_token_is_unique(issue: Issue) -> None:
    tokens = {issue(Role.VIEWER) for _ in range(5)}
    assert len(tokens) == 5


def test_use_is_recorded(client: TestClient, issue: Issue, sessions: sessionmaker[Session]) -> None:
    token = issue(Role.VIEWER)
    with sessions() as session:
        assert session.scalars(sa.select(ApiTokenRow)).one().last_used_at is None
    client.get("/v1/series", headers=bearer(token))
    with sessions() as session:
        assert session.scalars(sa.select(ApiTokenRow)).one().last_used_at == NOW


def test_reads_do_not_wait_for_a_writer_to_record_a_token_use(
    client: TestClient,
    context: ServiceContext,
    issue: Issue,
    sessions: sessionmaker[Session],
) -> None:
    """Authenticated reads write nothing while the use was recorded in the last few minutes,
    so they never queue behind another writer (e.g. an ingest cycle)."""
    import threading
    from datetime import timedelta

    assert isinstance(context.clock, FixedClock)
    token = issue(Role.VIEWER)
    assert client.get("/v1/series", headers=bearer(token)).status_code == 200  # recorded
    context.clock.advance(timedelta(minutes=1))
    writer = sessions()
    writer.execute(sa.update(ApiTokenRow).values(name=ApiTokenRow.name))  # holds the write lock
    answers: list[int] = []
    read = threading.Thread(
        target=lambda: answers.append(client.get("/v1/series", headers=bearer(token)).status_code)
    )
    try:
        read.start()
        read.join(timeout=5)
        assert answers == [200], "the read waited for the writer"
    finally:
        writer.rollback()
        writer.close()
        read.join()
    with sessions() as session:
        assert session.scalars(sa.select(ApiTokenRow)).one().last_used_at == NOW
    # Once the last record is old enough, the next use is recorded again (after the response).
    context.clock.advance(timedelta(minutes=5))
    client.get("/v1/series", headers=bearer(token))
    with sessions() as session:
        recorded = session.scalars(sa.select(ApiTokenRow)).one().last_used_at
    assert recorded == NOW + timedelta(minutes=6)


def test_authenticate_returns_who_is_calling(issue: Issue, sessions: sessionmaker[Session]) -> None:
    token = issue(Role.APPROVER, name="alice")
    with sessions() as session:
        principal = authenticate(session, token=token, now=NOW)
        assert (principal.name, principal.role) == ("alice", Role.APPROVER)
        with pytest.raises(AuthError):
            authenticate(session, token=token + "x", now=NOW)
