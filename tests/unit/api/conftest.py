"""An app wired by hand: a real (migrated) database, an in-memory source, a pinned clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import Role, create_token
from core.clock import FixedClock
from core.settings import Settings
from prognos.context import ServiceContext
from tests.unit.api.helpers import NOW, TARGETS, MakeContext, shop_source


@pytest.fixture
def make_context(engine: Engine, sessions: sessionmaker[Session]) -> MakeContext:
    def make(source: Any = None, **settings: Any) -> ServiceContext:
        return ServiceContext(
            settings=Settings(**settings),
            engine=engine,
            sessions=sessions,
            source=source or shop_source(),
            targets=list(TARGETS),
            clock=FixedClock(NOW),
        )

    return make


@pytest.fixture
def context(make_context: MakeContext) -> ServiceContext:
    return make_context()


@pytest.fixture
def client(context: ServiceContext) -> Iterator[TestClient]:
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def issue(sessions: sessionmaker[Session]) -> Callable[[Role], str]:
    """Create a token of a role and return its plaintext."""

    def make(role: Role = Role.VIEWER, name: str | None = None) -> str:
        with sessions() as session:
            _, plaintext = create_token(session, role=role, name=name or role.value, now=NOW)
            session.commit()
        return plaintext

    return make
