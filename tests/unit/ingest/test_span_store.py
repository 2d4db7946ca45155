"""The span store on both databases: round trip, idempotent re-delivery, windows, pruning."""

from __future__ import annotations

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from ingest.span_store import prune_spans, read_spans, span_count, store_spans
from sim.traces import System

T0 = 1_700_000_000 * 10**9
MIN = 60 * 10**9


def test_spans_round_trip_and_a_retry_stores_nothing_twice(
    sessions: sessionmaker[Session],
) -> None:
    spans = System.generate(5, seed=2).traces(start_ns=T0, end_ns=T0 + 2 * MIN, requests=50)
    spans.loc[spans.index[:3], "error"] = True
    with sessions() as session:
        assert store_spans(session, spans) == len(spans)
        session.commit()
    with sessions() as session:
        store_spans(session, spans)  # the exporter retried: nothing new
        session.commit()
        assert span_count(session) == len(spans)
        back = read_spans(session, T0, T0 + 2 * MIN)
    key = ["trace_id", "span_id"]
    left = spans.sort_values(key).reset_index(drop=True)
    right = back.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
    assert right["error"].sum() == 3


def test_windows_services_and_pruning(sessions: sessionmaker[Session]) -> None:
    system = System.generate(5, seed=2)
    spans = system.traces(start_ns=T0, end_ns=T0 + 10 * MIN, requests=200)
    with sessions() as session:
        store_spans(session, spans)
        session.commit()
        first = read_spans(session, T0, T0 + 5 * MIN)
        assert len(first) == int((spans["start_ns"] < T0 + 5 * MIN).sum())
        front = read_spans(session, T0, T0 + 10 * MIN, services=["frontend"])
        assert set(front["service"]) == {"frontend"}
        assert read_spans(session, 0, 1).empty
        removed = prune_spans(session, T0 + 5 * MIN)
        session.commit()
        assert removed == len(first)
        assert span_count(session) == len(spans) - len(first)
