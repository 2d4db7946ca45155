"""Predicted-breach warnings as incident triggers: which are active, what they say, when their
trend began, and what they add to the root-cause evidence.

A warning is active while its series' newest breach row has `warning` set and that forecast is
recent (the same recency as alarms); it stops counting for an incident the cycle it clears, like
an alarm that stops firing. Its onset is the start of the trend in the stored samples
(`rca.trend`), not the warning time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.database import fetch_tuples
from ingest.tables import SampleRow, SeriesRow
from models.tables import BreachRow
from rca.analysis import robust_z
from rca.findings import Evidence
from rca.trend import trend_onset


@dataclass(frozen=True)
class BreachWarning:
    """An active predicted-breach warning of one series."""

    series_id: int
    service: str | None
    target: str
    labels: dict[str, str]
    threshold: float
    direction: str  #: "above" or "below"
    probability: float
    eta: int | None  #: epoch seconds of the predicted crossing
    ts: int  #: epoch seconds: the last observed step of the newest forecast that warned
    since: int  #: epoch seconds: the first forecast of this warning

    @property
    def series_name(self) -> str:
        """`target{labels}`, the service label left out (it is said separately)."""
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if k != "service" and v)
        return self.target + (f"{{{extra}}}" if extra else "")

    def prediction(self) -> str:
        """E.g. "predicted to cross 1e9 above in ~24 min (p=0.83)"."""
        when = (
            f"in ~{max(0, round((self.eta - self.ts) / 60))} min"
            if self.eta is not None
            else "within the forecast horizon"
        )
        return (
            f"predicted to cross {_number(self.threshold)} {self.direction} {when} "
            f"(p={self.probability:.2f})"
        )

    def symptom(self) -> str:
        """E.g. "cart memory{pod=cart-0}: predicted to cross 1e9 above in ~24 min (p=0.83)"."""
        who = f"{self.service} " if self.service else ""
        return f"{who}{self.series_name}: {self.prediction()}"


def _number(x: float) -> str:
    text = f"{x:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def active_breaches(db_session: Session, *, since: int) -> list[BreachWarning]:
    """Every breach warning that is on in its series' newest forecast, made after `since`
    (epoch seconds), ordered by series id."""
    rows = db_session.execute(
        sa.select(BreachRow, SeriesRow.service, SeriesRow.target, SeriesRow.labels)
        .join(SeriesRow, SeriesRow.id == BreachRow.series_id)
        .where(BreachRow.warning.is_(True), BreachRow.made_at > since)
        .order_by(BreachRow.series_id)
    ).all()
    return [
        BreachWarning(
            series_id=row.series_id,
            service=service,
            target=target,
            labels=dict(labels or {}),
            threshold=float(row.threshold),
            direction=row.direction,
            probability=float(row.probability),
            eta=row.eta,
            ts=int(row.made_at),
            since=int(row.warning_since if row.warning_since is not None else row.made_at),
        )
        for row, service, target, labels in rows
    ]


def series_samples(
    db_session: Session, series_id: int, *, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, values) of one series' stored samples in [start, end]."""
    rows = fetch_tuples(
        db_session,
        sa.select(SampleRow.ts, SampleRow.value)
        .where(SampleRow.series_id == series_id, SampleRow.ts >= start, SampleRow.ts <= end)
        .order_by(SampleRow.ts),
    )
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    ts, values = zip(*rows, strict=True)
    return np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=np.float64)


def breach_onset(db_session: Session, breach: BreachWarning, *, look_back: int) -> int | None:
    """Epoch seconds at which the breaching series' trend toward its limit began, from its
    samples up to the warning, at most `look_back` seconds back; None when they show none."""
    ts, values = series_samples(
        db_session, breach.series_id, start=breach.ts - look_back, end=breach.ts
    )
    return trend_onset(ts, values, rising=breach.direction != "below")


def breach_record(breach: BreachWarning, *, onset: int, onset_found: bool) -> dict[str, Any]:
    """What an incident keeps of a breach that opened or joined it (JSON)."""
    return {
        "series_id": breach.series_id,
        "service": breach.service,
        "series": breach.series_name,
        "threshold": breach.threshold,
        "direction": breach.direction,
        "probability": breach.probability,
        "eta": breach.eta,
        "warning_since": breach.since,
        "made_at": breach.ts,
        "prediction": breach.prediction(),
        "onset": onset,
        "onset_from": "trend" if onset_found else "warning",
    }


#: the z of a breach whose series has no samples before its trend to compare with: the
#: warning alone still names its service, weakly
UNMEASURED_Z = 1.0


def trend_evidence(
    db_session: Session, record: dict[str, Any], *, start: int, guard: int, end: int
) -> Evidence:
    """The breaching series as evidence of kind "breach": robust z of its mean since the
    trend's onset against its samples from `start` to `guard` seconds before the onset, signed
    toward the limit (`UNMEASURED_Z` when there are fewer than 3 such samples)."""
    onset = int(record["onset"])
    ts, values = series_samples(db_session, int(record["series_id"]), start=start, end=end)
    reference = values[(ts < onset - guard) & np.isfinite(values)]
    after = values[(ts >= onset) & np.isfinite(values)]
    detail = f"breach {record['prediction']}"
    if len(reference) < 3 or len(after) == 0:
        latest = float(values[np.isfinite(values)][-1]) if np.isfinite(values).any() else None
        return Evidence(
            "breach", str(record["series"]), None, latest, UNMEASURED_Z, f"{detail}; no reference"
        )
    sign = -1.0 if record["direction"] == "below" else 1.0
    mean = float(after.mean())
    return Evidence(
        "breach",
        str(record["series"]),
        float(np.median(reference)),
        mean,
        sign * robust_z(mean, reference),
        f"{detail}; mean since the trend began vs the reference median",
    )
