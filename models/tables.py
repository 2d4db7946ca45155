"""Tables owned by models: the model registry, each series' latest forecast and a bounded
history of what was forecast 15 minutes ahead, anomaly scores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.database import Base, UTCDateTime


class ModelRow(Base):
    """One trained model version of a family (one family per step size)."""

    __tablename__ = "models"
    __table_args__ = (sa.UniqueConstraint("family", "version", name="uq_models_family_version"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    family: Mapped[str] = mapped_column(sa.String(64), index=True)
    version: Mapped[int] = mapped_column(sa.Integer)
    forecaster: Mapped[str] = mapped_column(sa.String(32))
    step: Mapped[int] = mapped_column(sa.Integer)
    path: Mapped[str] = mapped_column(sa.Text)
    # candidate -> active -> retired; candidate -> rejected (lost to the active model)
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    train_start: Mapped[datetime] = mapped_column(UTCDateTime)
    train_end: Mapped[datetime] = mapped_column(UTCDateTime)
    series_count: Mapped[int] = mapped_column(sa.Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    note: Mapped[str | None] = mapped_column(sa.Text)


class ForecastRow(Base):
    """The newest forecast of a series: quantiles for steps 1..H after `made_at`."""

    __tablename__ = "forecasts"

    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    made_at: Mapped[int] = mapped_column(sa.BigInteger)
    step: Mapped[int] = mapped_column(sa.Integer)
    model: Mapped[str] = mapped_column(sa.String(96))
    quantiles: Mapped[list[float]] = mapped_column(sa.JSON)
    values: Mapped[list[list[float]]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AnomalyScoreRow(Base):
    """The detector's verdict on one observation (models.detector): the signed z, the score
    (|z|: 0 normal, ~3 rare), the new-high score the alarm rule looks at (`magnitude`, 0 when
    the step is no new high), whether it alarmed and, for alarms, the evidence."""

    __tablename__ = "anomaly_scores"

    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    z: Mapped[float] = mapped_column(sa.Float(precision=53))
    magnitude: Mapped[float] = mapped_column(sa.Float(precision=53))
    score: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    model: Mapped[str] = mapped_column(sa.String(96))
    alarm: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    evidence: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class DetectorStateRow(Base):
    """Each series' detector state (models.detector.DetectorState as JSON), written in the same
    transaction as the scores it led to, so a restart or a rolled-back cycle resumes exactly."""

    __tablename__ = "detector_states"

    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(sa.Text)
    config: Mapped[str] = mapped_column(sa.String(64))  #: digest of the detector's config
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: the newest scored step, its score and whether it alarmed: what /metrics exports, without
    #: grouping over every stored score
    last_ts: Mapped[int] = mapped_column(sa.BigInteger)
    last_score: Mapped[float] = mapped_column(sa.Float(precision=53))
    last_alarm: Mapped[bool] = mapped_column(sa.Boolean)


class AnomalyFeedbackRow(Base):
    """An operator's verdict on an alarm (false alarm or confirmed), kept for later tuning."""

    __tablename__ = "anomaly_feedback"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[int] = mapped_column(sa.BigInteger)
    verdict: Mapped[str] = mapped_column(sa.String(16))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    author: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BreachRow(Base):
    """The newest predicted-breach state of a series with a configured limit: the probability
    of crossing within the horizon, the ETA, and the warning streak the daemon keeps."""

    __tablename__ = "breaches"

    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    made_at: Mapped[int] = mapped_column(sa.BigInteger)  #: the forecast's last observed step
    threshold: Mapped[float] = mapped_column(sa.Float(precision=53))
    direction: Mapped[str] = mapped_column(sa.String(8))
    probability: Mapped[float] = mapped_column(sa.Float(precision=53))
    eta: Mapped[int | None] = mapped_column(sa.BigInteger)  #: epoch seconds of the crossing
    streak: Mapped[int] = mapped_column(sa.Integer)
    warning: Mapped[bool] = mapped_column(sa.Boolean)
    #: epoch seconds of the first forecast of the current warning (lead time starts here)
    warning_since: Mapped[int | None] = mapped_column(sa.BigInteger)
    model: Mapped[str] = mapped_column(sa.String(96))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ForecastHistoryRow(Base):
    """What each cycle forecast for the step about 15 minutes ahead (the horizon step nearest
    `models.service.HISTORY_LEAD`): the page draws it against what then happened. One row per
    series and target step; kept for `models.forecast_history_retention`."""

    __tablename__ = "forecast_history"

    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    target_ts: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)  #: forecast step
    made_at: Mapped[int] = mapped_column(sa.BigInteger)  #: the forecast's last observed step
    p10: Mapped[float] = mapped_column(sa.Float(precision=53))
    p50: Mapped[float] = mapped_column(sa.Float(precision=53))
    p90: Mapped[float] = mapped_column(sa.Float(precision=53))


class ModelArtifactRow(Base):
    """A model version's artifact files, for `models.artifact_store: database`: every host on
    the database loads the same bytes, checked on load against the checksums in the metadata
    (models.artifacts), as a folder's files are."""

    __tablename__ = "model_artifacts"

    family: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    config_json: Mapped[bytes] = mapped_column(sa.LargeBinary)
    weights_pt: Mapped[bytes | None] = mapped_column(sa.LargeBinary)  #: None: no weights
    metadata_json: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
