"""Dependency aliases for routes: the context, a session, the calling principal by role."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request
from pydantic import AfterValidator, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.auth import (
    AuthError,
    ForbiddenError,
    Principal,
    Role,
    authenticate,
    needs_recording,
    record_use,
)
from api.context import AppContext
from core.clock import ensure_utc

log = logging.getLogger(__name__)

# -- bounded input: a number or time the database cannot hold is a 422, never a driver's 500

#: Row ids (and the cursors made of them) are INTEGER columns: 32 bits on PostgreSQL, so a
#: larger id names no row; passed on, it overflows the driver.
ROW_ID_MAX = 2**31 - 1
RowId = Annotated[int, Field(ge=-ROW_ID_MAX - 1, le=ROW_ID_MAX)]
#: Offsets reach SQL as 64-bit integers on every database.
Offset = Annotated[int, Field(ge=0, le=2**63 - 1)]


def _utc(value: datetime) -> datetime:
    try:
        return ensure_utc(value)  # naive is UTC, as everywhere in Prognos
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 once taken to UTC") from None


#: A time given by a client, in UTC.
UtcTime = Annotated[datetime, AfterValidator(_utc)]


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    session = context.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "missing bearer token: send `Authorization: Bearer <token>` "
            "(create one with `prognos token create --role viewer`)"
        )
    return token.strip()


def authorize(
    request: Request,
    context: AppContext,
    session: Session,
    role: Role,
    background: BackgroundTasks | None = None,
) -> Principal:
    """The caller's principal if its token allows `role`. Its use is recorded at most every few
    minutes: after the response when `background` is given, else here."""
    now = context.clock.now()
    principal = authenticate(session, token=bearer_token(request), now=now)
    if not principal.allows(role):
        raise ForbiddenError(f"role {principal.role.value!r} may not do this; needs {role.value!r}")
    if needs_recording(principal, now):
        if background is None:
            remember_use(context, principal.token_id, now)
        else:
            background.add_task(remember_use, context, principal.token_id, now)
    return principal


def require(role: Role) -> Callable[..., Principal]:
    def dependency(
        request: Request, context: ContextDep, session: SessionDep, background: BackgroundTasks
    ) -> Principal:
        return authorize(request, context, session, role, background)

    return dependency


def remember_use(context: AppContext, token_id: str, now: datetime) -> None:
    """Record a token's use after the response, in its own short transaction: bookkeeping that
    may wait for the database's write lock, never the request that used the token."""
    try:
        with context.sessions() as session:
            record_use(session, token_id=token_id, now=now)
            session.commit()
    except OperationalError as exc:  # busy or down: the next use records it
        log.warning("could not record the use of token %s: %s", token_id, type(exc).__name__)


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Approver = Annotated[Principal, Depends(require(Role.APPROVER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
