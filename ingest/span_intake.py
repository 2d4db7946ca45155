"""An OTLP export taken whole: inflated, decoded and stored in one call that needs nothing but
picklable arguments, so the API can run it in a worker process for large exports (decoding and
building the rows of 16 MB hold the GIL for about a second; in the serving process that would
stall every other request). The worker opens its own engine on the same database, once."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from core.database import create_engine, session_factory, session_scope
from ingest import otlp
from ingest.span_store import store_spans

_SESSIONS: dict[str, sessionmaker[Session]] = {}


def take(
    database_url: str, body: bytes, encoding: str | None, kind: str, limit: int
) -> tuple[int, str, int]:
    """`take_into` a session factory of its own on `database_url` (made once per process)."""
    sessions = _SESSIONS.get(database_url)
    if sessions is None:
        sessions = _SESSIONS[database_url] = session_factory(create_engine(database_url))
    return take_into(sessions, body, encoding, kind, limit)


def take_into(
    sessions: sessionmaker[Session], body: bytes, encoding: str | None, kind: str, limit: int
) -> tuple[int, str, int]:
    """Inflate, decode and store one export, all of its spans or none: (rejected spans, the
    reason they were rejected, spans stored). OTLP errors raise `otlp.OtlpError`."""
    decoded = otlp.inflate_and_decode(body, encoding, kind, limit)
    with session_scope(sessions) as session:
        stored = store_spans(session, decoded.spans)
        session.commit()
    return decoded.rejected, decoded.reason, stored
