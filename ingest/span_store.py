"""The span store: span frames in, span frames out, bounded retention.

Writes go straight to the driver (executemany) with `ON CONFLICT DO NOTHING` on (trace id,
span id), so a retried export stores nothing twice; reads come back as plain tuples into a
span frame. A batch is written inside the caller's transaction: all of it or none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.database import fetch_tuples
from ingest.spans import SPAN_COLUMNS, empty_spans, normalize_spans
from ingest.tables import SpanRow

_INSERT_QMARK = (
    "INSERT INTO spans (trace_id, span_id, parent_id, service, operation, start_ns, end_ns, "
    "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trace_id, span_id) DO NOTHING"
)
_INSERT_PYFORMAT = _INSERT_QMARK.replace("?", "%s")


def store_spans(db_session: Session, spans: pd.DataFrame) -> int:
    """Insert a span frame; returns how many rows it held (duplicates are ignored)."""
    frame = normalize_spans(spans)
    if frame.empty:
        return 0
    connection = db_session.connection()
    pyformat = connection.dialect.paramstyle in ("format", "pyformat")
    rows = list(
        zip(
            frame["trace_id"].tolist(),
            frame["span_id"].tolist(),
            frame["parent_id"].tolist(),
            frame["service"].tolist(),
            frame["operation"].tolist(),
            frame["start_ns"].tolist(),
            frame["end_ns"].tolist(),
            [bool(x) for x in frame["error"].tolist()],
            strict=True,
        )
    )
    connection.exec_driver_sql(_INSERT_PYFORMAT if pyformat else _INSERT_QMARK, rows)
    return len(rows)


def read_spans(
    db_session: Session, start_ns: int, end_ns: int, services: Sequence[str] | None = None
) -> pd.DataFrame:
    """Spans that started in [start_ns, end_ns), optionally of some services only."""
    query = sa.select(*(getattr(SpanRow, c) for c in SPAN_COLUMNS)).where(
        SpanRow.start_ns >= start_ns, SpanRow.start_ns < end_ns
    )
    if services:
        query = query.where(SpanRow.service.in_(list(services)))
    rows = fetch_tuples(db_session, query)
    if not rows:
        return empty_spans()
    frame = pd.DataFrame.from_records(rows, columns=list(SPAN_COLUMNS))
    frame["error"] = frame["error"].astype(bool)
    frame["start_ns"] = frame["start_ns"].astype(np.int64)
    frame["end_ns"] = frame["end_ns"].astype(np.int64)
    return frame


def prune_spans(db_session: Session, before_ns: int) -> int:
    """Delete spans that started before `before_ns`; returns how many."""
    result = db_session.execute(sa.delete(SpanRow).where(SpanRow.start_ns < before_ns))
    return int(getattr(result, "rowcount", 0) or 0)


def span_count(db_session: Session) -> int:
    return int(db_session.scalar(sa.select(sa.func.count()).select_from(SpanRow)) or 0)
