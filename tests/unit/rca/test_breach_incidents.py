"""Predicted-breach warnings open or join incidents: the onset is the start of the trend, the
leaking service is the top suspect, a warning that clears closes its incident like a quiet
alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from core.settings import ModelSettings, RcaSettings
from rca.flows import incidents_from_triggers
from rca.incidents import breach_records, list_incidents, trigger_kinds
from rca.trend import trend_onset
from tests.unit.rca.leak_data import (
    NEWEST,
    NOW,
    STEP,
    Leak,
    store_alarms,
    store_breach,
    store_leak,
    store_metrics,
)

SETTINGS = RcaSettings()


def group(session: Session, now: datetime = NOW):  # type: ignore[no-untyped-def]
    result = incidents_from_triggers(
        session, models=ModelSettings(), rca=SETTINGS, longest_step=STEP, now=now
    )
    session.commit()
    return result


def test_the_onset_of_a_generated_leak_is_within_a_few_steps_of_its_start() -> None:
    """6 h of a noisy series with a daily shape and a few spikes; a leak of 20 to 100 steps
    before the warning. Also with an unrelated level step hours earlier: the onset is the
    last change toward the limit, not the first."""
    for old_step in (0.0, 60.0):
        misses = []
        for seed in range(12):
            rng = np.random.default_rng(seed)
            n = 360
            times = np.arange(n, dtype=np.int64) * STEP + 1_767_600_000
            start = n - int(rng.integers(20, 100))
            i = np.arange(n)
            values = (
                500
                + 40 * np.sin(2 * np.pi * times / 86_400 + seed)
                + rng.normal(0, 3, n)
                + np.clip(i - start, 0, None) * rng.uniform(1.0, 3.0)
                + np.where(i >= 100, old_step, 0.0)
            )
            values[rng.integers(0, n, 3)] += 200  # scrape spikes
            found = trend_onset(times, values)
            assert found is not None
            misses.append(abs(found - int(times[start])) // STEP)
        assert max(misses) <= 5 and sorted(misses)[len(misses) // 2] <= 2, (old_step, misses)
    # Falling toward a limit below: mirrored.
    times = np.arange(200, dtype=np.int64) * STEP
    values = 100 - np.clip(np.arange(200) - 150, 0, None) * 2.0
    assert trend_onset(
        times, values + np.random.default_rng(0).normal(0, 1, 200), rising=False
    ) in {int(times[150 + d]) for d in range(-2, 3)}
    # No trend at all: none.
    flat = 100 + np.random.default_rng(1).normal(0, 1, 200)
    assert trend_onset(times, flat) is None


def test_a_breach_opens_an_incident_at_the_trend_start_naming_the_leaking_service(
    sessions: sessionmaker[Session],
) -> None:
    leak = Leak()
    with sessions() as session:
        ids = store_leak(session, leak)
        session.commit()
        result = group(session)
        assert len(result.opened) == 1
        (row,) = list_incidents(session, status="open")
    assert (
        row.symptom == "cart memory{pod=cart-0}: predicted to cross 1e9 above in ~24 min (p=0.83)"
    )
    assert row.services == ["cart"] and row.series == [ids[("cart", "memory")]]
    report = row.report
    assert report is not None and report["origin"] == "breach"
    assert trigger_kinds(row) == ["breach"]
    (breach,) = breach_records(row)
    assert breach["onset_from"] == "trend" and breach["probability"] == 0.83
    # The onset is the leak's start, not the warning (38 minutes later).
    onset = datetime.fromisoformat(report["started_at"])
    assert abs(onset.timestamp() - leak.start) <= 3 * STEP, (onset, leak.start)
    assert report["onset"]["from"] == "breach trend"
    # The leaking leaf service is the top suspect, ahead of its caller whose latency rose too;
    # its call-graph neighbours are candidates; each suspect lists its evidence.
    assert row.top_suspect == "cart", [(s["service"], s["score"]) for s in report["suspects"]]
    suspects = {s["service"]: s for s in report["suspects"]}
    assert {"frontend", "users"} <= set(suspects)
    top = report["suspects"][0]
    kinds = {e["kind"] for e in top["evidence"]}
    assert {"breach", "metric"} <= kinds and {"breach", "metric"} <= set(top["named_by"])
    model = next(e for e in top["evidence"] if e["kind"] == "breach")
    assert model["subject"] == "memory{pod=cart-0}" and "p=0.83" in model["detail"]
    # The caller's own time rose by a fifth from the same minute: seen, and still second.
    assert "self_time" in suspects["frontend"]["named_by"]
    assert top["path"] == ["frontend", "cart"]


def test_a_breach_and_alarms_on_connected_services_make_one_incident(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        ids = store_leak(session, Leak())
        latency = ids[("frontend", "latency")]
        store_alarms(session, latency, 2)  # the caller's latency alarms too
        session.commit()
        result = group(session)
        assert len(result.opened) == 1
        (row,) = list_incidents(session, status="open")
        assert sorted(row.services) == ["cart", "frontend"]
        assert sorted(row.series) == sorted([latency, ids[("cart", "memory")]])
        assert sorted(trigger_kinds(row)) == ["alarm", "breach"]
        # The alarm came first and opened it; the breach joined and set the onset.
        assert row.report is not None and row.report["origin"] == "alarm"
        assert row.report["onset"]["from"] == "breach trend"
        assert row.top_suspect == "cart"
        # A cycle later both still fire: nothing new opens.
        again = group(session, NOW + timedelta(minutes=1))
        assert again.opened == [] and again.closed == []


def test_a_breach_that_clears_closes_its_incident_after_clear_after(
    sessions: sessionmaker[Session],
) -> None:
    leak = Leak()
    with sessions() as session:
        ids = store_metrics(session, leak, hours=2)
        memory = ids[("cart", "memory")]
        store_breach(session, memory)
        session.commit()
        (opened,) = group(session).opened
        # Still warning a minute later: it joins, stays open.
        store_breach(session, memory, made_at=NEWEST + STEP, since=NEWEST - 2 * STEP)
        session.commit()
        later = NOW + timedelta(minutes=1)
        assert group(session, later).opened == []
        # The warning clears (a restart, a forecast that no longer crosses).
        store_breach(session, memory, made_at=NEWEST + 2 * STEP, warning=False)
        session.commit()
        last_warned = datetime.fromtimestamp(NEWEST + STEP, UTC)
        almost = last_warned + SETTINGS.clear_after - timedelta(seconds=1)
        assert group(session, almost).closed == []
        assert group(session, last_warned + SETTINGS.clear_after + timedelta(minutes=1)).closed == [
            opened
        ]
        assert list_incidents(session, status="open") == []


def test_a_stale_warning_opens_nothing(sessions: sessionmaker[Session]) -> None:
    """A warning whose newest forecast is older than the alarms' recency (forecasting stopped)
    is not a trigger: it would reopen an incident that closed."""
    with sessions() as session:
        ids = store_metrics(session, Leak(), hours=1)
        store_breach(session, ids[("cart", "memory")], made_at=NEWEST - 30 * STEP)
        session.commit()
        assert group(session).opened == []
