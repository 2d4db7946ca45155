"""Dependency aliases for routes: the context, a session, the calling principal by role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.auth import AuthError, ForbiddenError, Principal, Role, authenticate
from api.context import AppContext


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


def require(role: Role) -> Callable[..., Principal]:
    def dependency(request: Request, context: ContextDep, session: SessionDep) -> Principal:
        principal = authenticate(session, token=bearer_token(request), now=context.clock.now())
        session.commit()  # records last_used_at
        if not principal.allows(role):
            raise ForbiddenError(
                f"role {principal.role.value!r} may not do this; needs {role.value!r}"
            )
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Approver = Annotated[Principal, Depends(require(Role.APPROVER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
