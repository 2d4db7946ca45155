"""Retention of anomaly scores: old steps go in batches, steps an operator judged stay, and
each series' detector state (what the detector resumes from) is untouched."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ingest.tables import SeriesRow
from models.service import prune_scores
from models.tables import AnomalyFeedbackRow, AnomalyScoreRow, DetectorStateRow

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
STEP = 60


def test_old_scores_go_but_judged_ones_and_the_detector_state_stay(
    sessions: sessionmaker[Session],
) -> None:
    now = int(NOW.timestamp())
    cutoff = now - 7 * 86400
    old = [cutoff - STEP * i for i in range(1, 6)]  # five steps past the retention
    recent = [cutoff, now - STEP]
    with sessions() as session:
        series = SeriesRow(
            target="cpu", key="k", labels={}, service="a", first_seen=NOW, last_seen=NOW
        )
        session.add(series)
        session.flush()
        for ts in old + recent:
            session.add(
                AnomalyScoreRow(
                    series_id=series.id, ts=ts, z=4.0, magnitude=4.0, score=4.0, model="m",
                    alarm=True, evidence={"z": 4.0},
                )
            )  # fmt: skip
        session.add(
            AnomalyFeedbackRow(
                series_id=series.id,
                ts=old[2],
                verdict="false_alarm",
                note="deploy",
                author="olga",
                created_at=NOW,
            )
        )
        session.add(
            DetectorStateRow(
                series_id=series.id,
                state="{}",
                config="c",
                updated_at=NOW,
                last_ts=recent[-1],
                last_score=4.0,
                last_alarm=True,
            )
        )
        session.commit()
    with sessions() as session:
        assert prune_scores(session, before=cutoff, limit=3) == 3
        assert prune_scores(session, before=cutoff, limit=3) == 1  # short batch: done
        assert prune_scores(session, before=cutoff, limit=3) == 0
        session.commit()
        kept = set(session.scalars(sa.select(AnomalyScoreRow.ts)))
        state = session.get(DetectorStateRow, series.id)
    assert kept == {old[2], *recent}
    assert state is not None and state.last_ts == recent[-1]
