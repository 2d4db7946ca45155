"""A small generated system for breach-born incidents: frontend calling cart and users, each
with a pod's memory and CPU, and a memory leak in one service from a known minute. Stored the
way ingest stores them (series rows, samples on the minute grid, spans), plus breach rows the
way the forecast cycle leaves them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ingest.span_store import store_spans
from ingest.tables import SampleRow, SeriesRow
from models.tables import AnomalyScoreRow, BreachRow

NOW = datetime(2026, 1, 5, 12, 0, 17, tzinfo=UTC)
STEP = 60
#: the newest stored step (what the forecast cycle saw last)
NEWEST = int(NOW.timestamp()) // STEP * STEP - STEP
SERVICES = ("frontend", "cart", "users")
CALLS = {"frontend": ("cart", "users")}
MS = 1_000_000


@dataclass(frozen=True)
class Leak:
    service: str = "cart"
    start: int = NEWEST - 40 * STEP  #: the first step of the leak
    per_step: float = 1e7  #: bytes a minute
    base: float = 4e8


def memory(leak: Leak, service: str, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    level = {"frontend": 3e8, "cart": leak.base, "users": 2.5e8}[service]
    values = level + rng.normal(0, 2e6, len(times))
    # a slow daily shape, so the reference is not a flat line
    values += 1e7 * np.sin(2 * np.pi * times / 86_400 + len(service))
    if service == leak.service:
        values += np.clip((times - leak.start) / STEP, 0, None) * leak.per_step
    return values


def store_series(
    session: Session,
    *,
    target: str,
    service: str,
    labels: dict[str, str],
    times: np.ndarray,
    values: np.ndarray,
) -> int:
    at = datetime.fromtimestamp(int(times[0]), UTC)
    row = SeriesRow(
        target=target,
        key=f"{target}:{service}:{sorted(labels.items())}",
        labels={"service": service, **labels},
        service=service,
        first_seen=at,
        last_seen=datetime.fromtimestamp(int(times[-1]), UTC),
    )
    session.add(row)
    session.flush()
    session.execute(
        sa.insert(SampleRow),
        [
            {"series_id": row.id, "ts": int(t), "value": float(v)}
            for t, v in zip(times, values, strict=True)
        ],
    )
    return row.id


def store_metrics(
    session: Session, leak: Leak, *, hours: float = 6, caller_slowdown: float = 0.2, seed: int = 1
) -> dict[tuple[str, str], int]:
    """Memory and CPU of one pod per service and the frontend's latency, `hours` up to NEWEST;
    the frontend's latency rises by `caller_slowdown` from the leak's start. Returns
    (service, target) -> series id."""
    rng = np.random.default_rng(seed)
    times = np.arange(NEWEST - int(hours * 3600), NEWEST + 1, STEP, dtype=np.int64)
    ids = {}
    for service in SERVICES:
        values = {
            "memory": memory(leak, service, times, rng),
            "cpu": 0.3 + rng.normal(0, 0.01, len(times)),
        }
        for target, series in values.items():
            ids[(service, target)] = store_series(
                session,
                target=target,
                service=service,
                labels={"pod": f"{service}-0"},
                times=times,
                values=series,
            )
    latency = 0.12 + rng.normal(0, 0.004, len(times))
    latency *= np.where(times >= leak.start, 1 + caller_slowdown, 1.0)
    ids[("frontend", "latency")] = store_series(
        session, target="latency", service="frontend", labels={}, times=times, values=latency
    )
    return ids


def spans(
    leak: Leak, *, start: int, end: int, caller_slowdown: float = 0.2, seed: int = 2
) -> pd.DataFrame:
    """One request every 2 s from `start` to `end` (epoch seconds): frontend's handler calls
    cart then users. From the leak's start the frontend's own time rises by `caller_slowdown`
    (the caller's latency rose a little); the leaking service's spans do not change."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, t in enumerate(range(start, end, 2)):
        begin = t * 10**9 + int(rng.integers(0, 1000)) * MS
        trace = f"{n:032x}"
        own = rng.normal(20, 1.5) * (1 + (caller_slowdown if t >= leak.start else 0.0))
        cursor = begin + int(own / 2 * MS)
        children = []
        for i, callee in enumerate(CALLS["frontend"]):
            took = int(max(rng.normal(15 if callee == "cart" else 10, 1.0), 1) * MS)
            children.append((f"{n:012x}{i + 1:04x}", callee, cursor, cursor + took))
            cursor += took
        finish = cursor + int(own / 2 * MS)
        rows.append((trace, f"{n:012x}0000", "", "frontend", "GET /cart", begin, finish, False))
        for span_id, callee, s, e in children:
            operation = "GetCart" if callee == "cart" else "GetUser"
            rows.append((trace, span_id, f"{n:012x}0000", callee, operation, s, e, False))
    columns = ["trace_id", "span_id", "parent_id", "service", "operation", "start_ns", "end_ns"]
    return pd.DataFrame(rows, columns=[*columns, "error"])


def store_traffic(session: Session, leak: Leak, *, caller_slowdown: float = 0.2) -> None:
    """Spans from 40 minutes before the leak's start (the spans' reference is 30) up to NOW."""
    start, end = leak.start - 40 * 60, int(NOW.timestamp())
    store_spans(session, spans(leak, start=start, end=end, caller_slowdown=caller_slowdown))


def store_breach(
    session: Session,
    series_id: int,
    *,
    made_at: int = NEWEST,
    warning: bool = True,
    eta_min: float = 24,
    probability: float = 0.83,
    threshold: float = 1e9,
    since: int | None = None,
) -> None:
    """The breach row of a series as the forecast cycle writes it (replaced each forecast)."""
    row = session.get(BreachRow, series_id) or BreachRow(series_id=series_id)
    row.made_at = made_at
    row.threshold = threshold
    row.direction = "above"
    row.probability = probability
    row.eta = made_at + int(eta_min * 60)
    row.streak = 3 if warning else 0
    row.warning = warning
    row.warning_since = (since if since is not None else made_at - 2 * STEP) if warning else None
    row.model = "lstm v1"
    row.updated_at = datetime.fromtimestamp(made_at, UTC) + timedelta(seconds=17)
    session.add(row)
    session.flush()


def store_leak(session: Session, leak: Leak, *, traffic: bool = True) -> dict[tuple[str, str], int]:
    """Metrics (6 h), spans when `traffic`, and the leaking memory's breach warning on."""
    ids = store_metrics(session, leak)
    if traffic:
        store_traffic(session, leak)
    store_breach(session, ids[(leak.service, "memory")])
    return ids


def store_alarms(session: Session, series_id: int, *steps_ago: int, score: float = 6.0) -> None:
    """The detector's alarms on a series, `steps_ago` steps before NEWEST."""
    session.add_all(
        AnomalyScoreRow(
            series_id=series_id,
            ts=NEWEST - k * STEP,
            z=score,
            magnitude=score,
            score=score,
            model="t",
            alarm=True,
        )
        for k in steps_ago
    )
    session.flush()
