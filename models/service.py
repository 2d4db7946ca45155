"""Serving: load the active model, forecast every series of a target in one batch, score each
newest observation against the forecast made before it, and keep the newest forecast.

Plus training: fit a new version on history, compare it with the active one on held-out recent
data, register it, and promote it only if it is better.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.clock import from_epoch
from core.database import among, fetch_tuples, upsert
from core.settings import BreachSettings, TargetSettings
from ingest.tables import SampleRow, SeriesRow, WatermarkRow
from models import registry
from models.artifacts import ArtifactMetadata
from models.breach import BreachConfig, SeasonalWindow, next_streak, predict_breach
from models.detector import Detector, DetectorConfig, DetectorState, config_digest
from models.domain import ContextBatch, History, QuantileForecast
from models.errors import AnomalyNotFoundError, ModelArtifactError, ModelError, ModelInputError
from models.forecasters.base import EpochCallback, Forecaster
from models.forecasters.parallel import Launcher, fit_parallel
from models.forecasters.registry import build
from models.tables import (
    AnomalyFeedbackRow,
    AnomalyScoreRow,
    BreachRow,
    DetectorStateRow,
    ForecastHistoryRow,
    ForecastRow,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- models in use


class ServingModels:
    """The forecaster each step size is served by: the active registry version, else the
    cold-start band. A version whose artifact fails to load is skipped with an error, and the
    model that was serving keeps serving."""

    def __init__(self, *, cold_start: str, cold_config: dict[str, Any]) -> None:
        self.cold_start = cold_start
        self.cold_config = cold_config
        self._loaded: dict[int, tuple[int | None, Forecaster]] = {}
        self._detector: dict[int, dict[str, Any]] = {}
        self._failed: dict[str, str] = {}  #: family -> why its active version does not load

    def for_step(self, db_session: Session, step: int) -> Forecaster:
        family = registry.family_for(step)
        row = registry.active_model(db_session, family)
        cached = self._loaded.get(step)
        if row is not None and (cached is None or cached[0] != row.id):
            try:
                forecaster, metadata = registry.load_artifact(db_session, row.path)
                self._loaded[step] = (row.id, forecaster)
                self._detector[step] = dict(metadata.detector or {})
                self._failed.pop(family, None)
                log.info("serving %s v%d (%s)", family, row.version, row.forecaster)
                if metadata.detector is None:
                    log.info(
                        "%s v%d was saved without detector settings (an older artifact): "
                        "its series are scored with the detector's defaults",
                        family,
                        row.version,
                    )
            except ModelArtifactError as exc:
                self._failed[family] = f"v{row.version}: {exc.message}"
                log.error(
                    "active model %s v%d cannot be loaded, keeping the previous one: %s",
                    family,
                    row.version,
                    exc.message,
                )
        if step not in self._loaded:
            self._loaded[step] = (None, self.cold(step))
        return self._loaded[step][1]

    def verify(self, db_session: Session) -> dict[str, str]:
        """Load every family's active version once (as a cycle would), so that a lost or
        damaged artifact is known at start; returns `failures()`."""
        for row in registry.list_models(db_session):
            if row.status == "active":
                self.for_step(db_session, row.step)
        return self.failures()

    def failures(self) -> dict[str, str]:
        """Families whose active version could not be loaded the last time it was tried."""
        return dict(self._failed)

    def detector_settings(self, step: int) -> dict[str, Any]:
        """The detector settings saved with the model serving `step` ({}: the defaults)."""
        return dict(self._detector.get(step, {}))

    def cold(self, step: int) -> Forecaster:
        forecaster = build(self.cold_start, self.cold_config)
        forecaster.mark_fitted(step)
        return forecaster


@dataclass(frozen=True, slots=True)
class CycleSummary:
    target: str
    status: str
    end: int | None = None
    series: int = 0
    scored: int = 0
    anomalies: int = 0
    cold_start: int = 0
    model: str = ""
    seconds: float = 0.0
    warnings: int = 0  #: series whose predicted-breach warning is on after this cycle


def forecast_cycle(
    db_session: Session,
    *,
    target: TargetSettings,
    models: ServingModels,
    detector: DetectorConfig,
    now: datetime,
    max_catchup: int = 1440,
    series: sa.ColumnElement[bool] | None = None,
    windows: Callable[[int, int], tuple[list[int], np.ndarray]] | None = None,
    held: HeldStates | None = None,
) -> CycleSummary:
    """Score every stored step of every series of `target` not scored yet (a missed cycle is
    caught up, at most `max_catchup` steps back), then forecast from the newest step. `series`
    (a condition on `SeriesRow`, e.g. a shard's keys) limits the cycle to the series it selects.
    `windows(end, length)`, if given, supplies the context windows `_windows` would read (the
    same series, same values; e.g. a shard worker's buffer) instead of reading them here;
    `held`, the detector states a shard worker keeps (`HeldStates`).

    Scores, alarms and each series' detector state are written in the caller's transaction, so
    a rolled-back cycle leaves no trace and the retry scores the same steps again. Idempotent
    per step: a second call for the same newest step does nothing.
    """
    started = time.perf_counter()
    step = target.step_seconds
    mark = db_session.get(WatermarkRow, target.name)
    if mark is None:
        return CycleSummary(target.name, "noop")
    end = mark.watermark
    forecaster = models.for_step(db_session, step)
    length = forecaster.context_length
    if windows is not None:
        ids, context = windows(end, length)
    else:
        ids, context = _windows(
            db_session, target=target.name, end=end, step=step, length=length, series=series
        )
    if not ids:
        return CycleSummary(target.name, "noop", end)

    # 1. Score what is new since each series' last scored step.
    scored, anomalies = score_new_points(
        db_session,
        series_ids=ids,
        end=end,
        step=step,
        detector=detector,
        max_catchup=max_catchup,
        now=now,
        held=held,
    )
    made = dict(
        fetch_tuples(
            db_session,
            sa.select(ForecastRow.series_id, ForecastRow.made_at).where(
                among(db_session, ForecastRow.series_id, ids)
            ),
        )
    )
    if not scored and len(made) == len(ids) and all(m >= end for m in made.values()):
        return CycleSummary(target.name, "noop", end)

    # 2. Forecast from the newest step: the model where history suffices, else the cold band.
    forecast, cold = predict_windows(models, forecaster, context, end, step)
    model_name = forecaster.version
    # Each row's values as a float64 array: core.database.json_dumps writes it (no per-float
    # Python objects). Rounded in the model's dtype, then widened exactly; rows with a
    # non-finite value are not stored.
    finite = np.isfinite(forecast).all(axis=tuple(range(1, forecast.ndim))).tolist()
    stored = forecast.round(9).astype(np.float64)
    quantiles = list(forecaster.quantiles)
    rows = [
        {
            "series_id": series_id,
            "made_at": end,
            "step": step,
            "model": models.cold_start if cold[row_index] else model_name,
            "quantiles": quantiles,
            "values": stored[row_index],
            "created_at": now,
        }
        for row_index, series_id in enumerate(ids)
        if finite[row_index]
    ]
    _upsert_forecasts(db_session, rows)
    _record_history(db_session, rows)
    warnings = 0
    if target.breach is not None and rows:
        warnings = update_breaches(db_session, target.breach, rows, now=now)
    return CycleSummary(
        target.name,
        "ok",
        end,
        len(ids),
        scored,
        anomalies,
        int(cold.sum()),
        model_name,
        time.perf_counter() - started,
        warnings,
    )


@dataclass
class HeldStates:
    """Detector states a shard worker keeps in memory between cycles: series id -> (the
    settings' digest, the state after the newest step it scored). The database stays the
    checkpoint: a held state is used only while the stored row still names the same settings
    and the same newest step; otherwise (another worker scored the series, a cycle rolled back,
    the settings changed, a restart) the stored state is read, as without it."""

    states: dict[int, tuple[str, DetectorState]] = field(default_factory=dict)

    def clear(self) -> None:
        self.states.clear()


def _stored_states(
    db_session: Session, series_ids: Sequence[int], digest: str, held: HeldStates | None
) -> tuple[dict[int, DetectorState], list[tuple[int, str, str]]]:
    """The held states still current, and the stored rows (id, JSON, digest) of the others."""
    current: dict[int, DetectorState] = {}
    others = list(series_ids)
    if held is not None:
        marks = sa.select(
            DetectorStateRow.series_id, DetectorStateRow.last_ts, DetectorStateRow.config
        ).where(among(db_session, DetectorStateRow.series_id, others))
        others = []
        for series_id, last_ts, config in fetch_tuples(db_session, marks):
            entry = held.states.get(series_id)
            if entry is not None and entry[0] == config == digest and entry[1].last_ts == last_ts:
                current[series_id] = entry[1]
            else:
                others.append(series_id)
        if not others:
            return current, []
    columns = (DetectorStateRow.series_id, DetectorStateRow.state, DetectorStateRow.config)
    return current, fetch_tuples(
        db_session, sa.select(*columns).where(among(db_session, DetectorStateRow.series_id, others))
    )


def score_new_points(
    db_session: Session,
    *,
    series_ids: Sequence[int],
    end: int,
    step: int,
    detector: DetectorConfig,
    max_catchup: int,
    now: datetime,
    held: HeldStates | None = None,
) -> tuple[int, int]:
    """Run the detector over every stored point of the series newer than its state, up to `end`,
    and store the scores, the alarms (with their evidence) and the new states. A state saved
    under another detector configuration is started afresh. Returns (scored, alarms).

    `held`, a shard worker's states kept from its previous cycles, saves reading and parsing
    each state's JSON (the stored row is still checked to be the one it wrote) and receives
    the new states; the rows written are the same with or without it."""
    digest = config_digest(detector)
    model = f"detector-{digest}"
    states, stored = _stored_states(db_session, series_ids, digest, held)
    written: dict[int, int] = {}  #: a fresh state warms up on steps already scored, unwritten
    for series_id, text, config in stored:
        try:
            state = DetectorState.from_json(text)
        except ModelInputError as exc:
            log.error("series %d: %s; starting a fresh state", series_id, exc.message)
            continue
        if config == digest:
            states[series_id] = state
        elif state.last_ts is not None:
            log.info("detector settings changed: series %d starts a fresh state", series_id)
            written[series_id] = state.last_ts
    floor = end - max_catchup * step
    # A new series' detector warms up on the history already stored (at most `max_catchup`
    # steps: e.g. the lookback its first ingest pulled), so its long-run scale has seen the
    # daily cycle before it may alarm; only its last window of scores is written.
    warmup = floor
    for series_id in series_ids:
        if series_id not in states:
            written.setdefault(series_id, end - detector.window * step)
    lower = min(
        (max(states[s].last_ts or floor, floor) for s in series_ids if s in states),
        default=warmup,
    )
    if len(states) < len(series_ids):
        lower = min(lower, warmup)
    rows = fetch_tuples(
        db_session,
        sa.select(SampleRow.series_id, SampleRow.ts, SampleRow.value)
        .where(
            among(db_session, SampleRow.series_id, list(series_ids)),
            SampleRow.ts > lower,
            SampleRow.ts <= end,
        )
        .order_by(SampleRow.series_id, SampleRow.ts),
    )
    if not rows:
        return 0, 0
    series_col, ts_col, value_col = (np.asarray(c) for c in zip(*rows, strict=True))
    bounds = np.flatnonzero(np.r_[True, series_col[1:] != series_col[:-1], True])
    ids: list[int] = []
    batch_states: list[DetectorState | None] = []
    batch_ts: list[np.ndarray] = []
    batch_values: list[np.ndarray] = []
    for a, b in itertools.pairwise(bounds):
        series_id = int(series_col[a])
        current = states.get(series_id)
        ts = ts_col[a:b].astype(np.int64)
        keep = ts > (floor if current is not None else warmup)
        ids.append(series_id)
        batch_states.append(current)
        batch_ts.append(ts[keep])
        batch_values.append(value_col[a:b].astype(np.float64)[keep])
    outputs = Detector(detector).update_many(batch_states, batch_ts, batch_values)
    score_rows: list[dict[str, Any]] = []
    state_rows: list[dict[str, Any]] = []
    alarms = 0
    for series_id, out in zip(ids, outputs, strict=True):
        if not len(out):
            continue
        novel = out.novel().tolist()
        score = out.score.tolist()
        above = (out.values >= out.mean).tolist()
        after = written.get(series_id, -1)
        for i, ts_i in enumerate(out.ts.tolist()):
            if ts_i <= after:
                continue
            alarm = bool(out.alarm[i])
            alarms += alarm
            score_rows.append(
                {
                    "series_id": series_id,
                    "ts": ts_i,
                    "z": score[i] if above[i] else -score[i],
                    "magnitude": novel[i],
                    "score": score[i],
                    "model": model,
                    "alarm": alarm,
                    "evidence": out.evidence(i) if alarm else None,
                }
            )
        if held is not None:
            held.states[series_id] = (digest, out.state)
        state_rows.append(
            {
                "series_id": series_id,
                "state": out.state.to_json(),
                "config": digest,
                "updated_at": now,
                "last_ts": int(out.ts[-1]),
                "last_score": score[-1],
                "last_alarm": bool(out.alarm[-1]),
            }
        )
    upsert(db_session, AnomalyScoreRow.__table__, score_rows, key=("series_id", "ts"))
    upsert(
        db_session,
        DetectorStateRow.__table__,
        state_rows,
        key=("series_id",),
        update=("state", "config", "updated_at", "last_ts", "last_score", "last_alarm"),
    )
    return len(score_rows), alarms


@dataclass(frozen=True, slots=True)
class Alarm:
    """A series whose detector raised an alarm recently."""

    series_id: int
    target: str
    service: str | None
    labels: dict[str, str]
    ts: int  #: epoch seconds of the newest alarm
    score: float  #: that alarm's score
    since: int  #: epoch seconds of the first alarm in the period looked at
    evidence: dict[str, Any] | None = None


def firing_alarms(db_session: Session, *, since: int) -> list[Alarm]:
    """Alarms firing now: series whose detector raised an alarm after `since`. The alarm rule
    itself lives in the detector (models.detector); this only reads what it decided."""
    rows = db_session.execute(
        sa.select(
            AnomalyScoreRow.series_id,
            AnomalyScoreRow.ts,
            AnomalyScoreRow.score,
            AnomalyScoreRow.evidence,
        )
        .where(AnomalyScoreRow.ts > since, AnomalyScoreRow.alarm.is_(True))
        .order_by(AnomalyScoreRow.series_id, AnomalyScoreRow.ts)
    ).all()
    firing: dict[int, list[tuple[int, float, dict[str, Any] | None]]] = {}
    for series_id, ts, score, evidence in rows:
        firing.setdefault(series_id, []).append((ts, float(score or 0.0), evidence))
    if not firing:
        return []
    series = {
        s.id: s
        for s in db_session.scalars(sa.select(SeriesRow).where(SeriesRow.id.in_(list(firing))))
    }
    return [
        Alarm(
            series_id=series_id,
            target=series[series_id].target,
            service=series[series_id].service,
            labels=dict(series[series_id].labels),
            ts=hits[-1][0],
            score=hits[-1][1],
            since=hits[0][0],
            evidence=hits[-1][2],
        )
        for series_id, hits in sorted(firing.items())
        if series_id in series
    ]


#: Forecast crossing probability below which the cycle skips the breach check's seasonal test
#: (it can only lower a probability; reading the season costs a read per series).
SEASONAL_CHECK_FROM = 1e-3


def update_breaches(
    db_session: Session, limit: BreachSettings, rows: Sequence[dict[str, Any]], *, now: datetime
) -> int:
    """Predicted breach of each freshly forecast series (`rows` as stored in `forecasts`):
    probability of crossing `limit` within the horizon, the ETA, and the warning streak carried
    over from the previous cycle. Returns how many series are warning now. A series whose stored
    state already comes from this step's forecast keeps it: a retried step (a worker restarted
    after it committed) never counts the same forecast twice in a streak."""
    config = BreachConfig(
        probability=limit.probability,
        consecutive=limit.consecutive,
        hold=int(limit.hold.total_seconds()),
    )
    ids = [int(r["series_id"]) for r in rows]
    stored = sa.select(
        BreachRow.series_id,
        BreachRow.made_at,
        BreachRow.streak,
        BreachRow.warning,
        BreachRow.warning_since,
    ).where(among(db_session, BreachRow.series_id, ids))
    previous = {int(row[0]): _Streak(*row[1:]) for row in fetch_tuples(db_session, stored)}
    kept = [previous[int(r["series_id"])] for r in rows if _breach_done(previous, r)]
    rows = [r for r in rows if not _breach_done(previous, r)]
    out = []
    # Rows of one cycle share quantiles; the cold band and the model may differ in horizon.
    groups: dict[tuple[int, tuple[float, ...]], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((len(r["values"]), tuple(r["quantiles"])), []).append(r)
    for (_, quantiles), group in groups.items():
        forecast = QuantileForecast(
            values=np.array([r["values"] for r in group], dtype=np.float64),
            quantiles=quantiles,
            end=np.array([r["made_at"] for r in group], dtype=np.int64),
            step=int(group[0]["step"]),
            model="",
        )
        prediction = predict_breach(forecast, limit.threshold, limit.direction, config)
        # The seasonal check can only lower a probability: only series whose forecast alone
        # gives a crossing a real chance read the stored season it needs.
        near = np.flatnonzero(np.nan_to_num(prediction.probability) > SEASONAL_CHECK_FROM)
        history = _seasonal_window(
            db_session,
            [int(group[i]["series_id"]) for i in near],
            end=int(group[0]["made_at"]),
            step=forecast.step,
            horizon=forecast.values.shape[1],
            config=config,
        )
        if history is not None:
            subset = dataclasses.replace(
                forecast, values=forecast.values[near], end=forecast.end[near]
            )
            checked = predict_breach(
                subset, limit.threshold, limit.direction, config, history=history
            )
            combined = prediction.probability.copy()
            combined[near] = checked.probability
            prediction = dataclasses.replace(prediction, probability=combined)
        before = [previous.get(r["series_id"]) for r in group]
        streak, warn = next_streak([b.streak if b else 0 for b in before], prediction, config)
        eta = prediction.eta
        for i, r in enumerate(group):
            probability = float(prediction.probability[i])
            if not np.isfinite(probability):
                continue
            was = before[i]
            since = None
            if warn[i]:
                since = was.warning_since if was is not None and was.warning else r["made_at"]
            out.append(
                {
                    "series_id": r["series_id"],
                    "made_at": r["made_at"],
                    "threshold": limit.threshold,
                    "direction": limit.direction,
                    "probability": probability,
                    "eta": int(eta[i]) if np.isfinite(eta[i]) else None,
                    "streak": int(streak[i]),
                    "warning": bool(warn[i]),
                    "warning_since": since,
                    "model": r["model"],
                    "updated_at": now,
                }
            )
    if out:
        columns = [c for c in out[0] if c != "series_id"]
        upsert(db_session, BreachRow.__table__, out, key=("series_id",), update=columns)
    return sum(1 for o in out if o["warning"]) + sum(1 for b in kept if b.warning)


class _Streak(NamedTuple):
    """What the next cycle carries over from a series' stored breach state (plain columns:
    no ORM object per series)."""

    made_at: int
    streak: int
    warning: bool
    warning_since: int | None


def _breach_done(previous: dict[int, _Streak], row: dict[str, Any]) -> bool:
    """The series' stored breach state already comes from this forecast's step (or a later)."""
    before = previous.get(int(row["series_id"]))
    return before is not None and before.made_at >= int(row["made_at"])


def _seasonal_window(
    db_session: Session,
    series_ids: Sequence[int],
    *,
    end: int,
    step: int,
    horizon: int,
    config: BreachConfig,
) -> SeasonalWindow | None:
    """The stored values the breach check's seasonal test reads (the newest trend window, and
    the same window plus the horizon one season earlier), or None when the test is off."""
    offsets = config.seasonal_offsets(step, horizon)
    if offsets is None or not series_ids:
        return None
    recent, before = offsets
    return SeasonalWindow(
        recent=_grid(
            db_session, series_ids, start=end + recent.start * step, length=len(recent), step=step
        ),
        before=_grid(
            db_session, series_ids, start=end + before.start * step, length=len(before), step=step
        ),
    )


def _grid(
    db_session: Session, series_ids: Sequence[int], *, start: int, length: int, step: int
) -> np.ndarray:
    """[N, length] stored values of the series (in the order given) on the step grid from
    `start`; NaN where nothing is stored."""
    out = np.full((len(series_ids), length), np.nan)
    rows = fetch_tuples(
        db_session,
        sa.select(SampleRow.series_id, SampleRow.ts, SampleRow.value).where(
            among(db_session, SampleRow.series_id, list(series_ids)),
            SampleRow.ts >= start,
            SampleRow.ts <= start + (length - 1) * step,
        ),
    )
    if not rows:
        return out
    index = {s: i for i, s in enumerate(series_ids)}
    series_col, ts_col, value_col = zip(*rows, strict=True)
    offsets = np.asarray(ts_col, dtype=np.int64) - start
    on_grid = offsets % step == 0
    row_of = np.array([index[s] for s in series_col])
    out[row_of[on_grid], offsets[on_grid] // step] = np.asarray(value_col, dtype=np.float64)[
        on_grid
    ]
    return out


def predict_windows(
    models: ServingModels,
    forecaster: Forecaster,
    windows: np.ndarray,
    end: int | np.ndarray,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Forecast [N, H, Q] from context windows [N, L] ending at `end`: the model where at least
    half the window is observed, else the cold-start band. Returns (values, cold mask [N])."""
    ends = np.broadcast_to(np.asarray(end, dtype=np.int64), (len(windows),)).copy()
    batch = ContextBatch(windows.astype(np.float32), ends, step)
    forecast = forecaster.predict(batch).values
    cold = np.isfinite(windows).mean(axis=1) < 0.5
    if cold.any() and forecaster.name != models.cold_start:
        fallback = models.cold(step).predict(batch).values
        forecast[cold] = fallback[cold]
    return forecast, cold


def forecast_values(
    db_session: Session, models: ServingModels, values: Sequence[float], *, step: int, end: int
) -> tuple[QuantileForecast, str]:
    """An ad-hoc forecast of one series given as values at `step` seconds, the last at `end`:
    the active model for that step (the cold-start band if there is none or too little data)."""
    forecaster = models.for_step(db_session, step)
    length = forecaster.context_length
    window = np.full(length, np.nan)
    tail = np.asarray(values, dtype=np.float64)[-length:]
    window[length - len(tail) :] = tail
    forecast, cold = predict_windows(models, forecaster, window[None, :], end, step)
    name = models.cold_start if cold[0] else forecaster.version
    if not np.isfinite(forecast).all():
        # A forecaster answers NaN where it has too little data to size a band: say what is
        # missing rather than hand back quantiles that are not numbers.
        observed = int(np.isfinite(window).sum())
        used = models.cold(step) if cold[0] else forecaster
        needed = getattr(used.config, "min_points", None)
        if needed is not None and observed < needed:
            raise ModelInputError(
                f"too few values to forecast: {used.name} needs at least {needed} observed "
                f"values, {observed} were given"
            )
        raise ModelInputError(f"the model {name} cannot forecast from these {observed} values")
    result = QuantileForecast(
        values=forecast.astype(np.float64),
        quantiles=tuple(forecaster.quantiles),
        end=np.array([end], dtype=np.int64),
        step=step,
        model=name,
    )
    return result, name


def _windows(
    db_session: Session,
    *,
    target: str,
    end: int,
    step: int,
    length: int,
    series: sa.ColumnElement[bool] | None = None,
) -> tuple[list[int], np.ndarray]:
    """The last `length` steps up to `end` of every series of the target seen in that span
    (of those `series` selects, if given)."""
    start = end - (length - 1) * step
    series_ids = sa.select(SeriesRow.id).where(SeriesRow.target == target)
    if series is not None:
        series_ids = series_ids.where(series)
    query = sa.select(SampleRow.series_id, SampleRow.ts, SampleRow.value).where(
        SampleRow.series_id.in_(series_ids), SampleRow.ts >= start, SampleRow.ts <= end
    )
    rows = fetch_tuples(db_session, query)  # plain tuples: Row objects cost seconds here
    if not rows:
        return [], np.empty((0, length))
    series_col, ts_col, value_col = zip(*rows, strict=True)
    ids, inverse = np.unique(np.asarray(series_col, dtype=np.int64), return_inverse=True)
    windows = np.full((len(ids), length), np.nan)
    column = (np.asarray(ts_col, dtype=np.int64) - start) // step
    windows[inverse.reshape(-1), column] = np.asarray(value_col, dtype=np.float64)
    return [int(i) for i in ids], windows


def _upsert_forecasts(db_session: Session, rows: list[dict[str, Any]]) -> None:
    upsert(
        db_session,
        ForecastRow.__table__,
        rows,
        key=("series_id",),
        update=("made_at", "step", "model", "quantiles", "values", "created_at"),
    )


#: How far ahead the forecast kept in `forecast_history` looks: the page draws the band made
#: this long before each point against what then happened (the lead a warning must have).
HISTORY_LEAD = 900
HISTORY_QUANTILES = (0.1, 0.5, 0.9)


def band_columns(quantiles: Sequence[float]) -> list[int]:
    """Where the quantiles nearest p10, p50 and p90 stand in a forecast's `quantiles`."""
    levels = np.asarray(quantiles)
    return [int(np.abs(levels - q).argmin()) for q in HISTORY_QUANTILES]


def _record_history(db_session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Keep, per freshly forecast series, its p10/p50/p90 for the horizon step nearest
    HISTORY_LEAD (the quantiles nearest those levels): one bulk insert per cycle. A step
    already recorded keeps its first forecast (a re-run cycle writes nothing twice)."""
    out = []
    picks: dict[tuple[int, int, tuple[float, ...]], tuple[int, list[int]]] = {}
    for r in rows:
        key = (len(r["values"]), int(r["step"]), tuple(r["quantiles"]))
        if key not in picks:
            horizon, step, quantiles = key
            h = min(max(round(HISTORY_LEAD / step), 1), horizon) - 1
            picks[key] = (h, band_columns(quantiles))
        h, (low, mid, high) = picks[key]
        values = r["values"][h]
        out.append(
            {
                "series_id": r["series_id"],
                "target_ts": int(r["made_at"]) + (h + 1) * int(r["step"]),
                "made_at": r["made_at"],
                "p10": float(values[low]),
                "p50": float(values[mid]),
                "p90": float(values[high]),
            }
        )
    upsert(db_session, ForecastHistoryRow.__table__, out, key=("series_id", "target_ts"))


def prune_forecast_history(db_session: Session, *, before: int, limit: int) -> int:
    """Delete at most `limit` kept forecasts for steps before `before` (epoch seconds). Returns
    how many went; fewer than `limit` means nothing older is left."""
    key = (ForecastHistoryRow.series_id, ForecastHistoryRow.target_ts)
    return _delete_some(db_session, key, ForecastHistoryRow.target_ts < before, limit=limit)


def _delete_some(
    db_session: Session, key: Sequence[InstrumentedAttribute[int]], *where: Any, limit: int
) -> int:
    """Delete at most `limit` rows of the table whose primary key is `key` matching `where`."""
    doomed = sa.select(*key).where(*where).limit(limit)
    table = key[0].class_.__table__
    result = db_session.execute(sa.delete(table).where(sa.tuple_(*key).in_(doomed)))
    return int(getattr(result, "rowcount", 0) or 0)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    family: str
    model_id: int
    version: int
    promoted: bool
    candidate_loss: float
    active_loss: float | None
    seconds: float
    epochs: int


def holdout_loss(
    forecaster: Forecaster, histories: Sequence[History], *, origins: int = 20
) -> float:
    """Mean pinball loss, per series scale, over evenly spaced origins of each history's end."""
    qs = np.asarray(forecaster.quantiles)
    length, horizon = forecaster.context_length, forecaster.horizon
    contexts, actuals, ends, scales = [], [], [], []
    for history in histories:
        n = len(history)
        last_origin = n - horizon
        if last_origin <= length:
            continue
        for origin in np.linspace(
            length, last_origin, num=min(origins, last_origin - length + 1), dtype=int
        ):
            contexts.append(history.values[origin - length : origin])
            actuals.append(history.values[origin : origin + horizon])
            ends.append(history.start + (origin - 1) * history.step)
            steps = np.abs(np.diff(history.values[:origin]))
            steps = steps[np.isfinite(steps)]
            scale = float(steps.mean()) if steps.size else 1.0
            scales.append(scale if np.isfinite(scale) and scale > 0 else 1.0)
    if not contexts:
        return float("nan")
    step = histories[0].step
    forecast = forecaster.predict(
        ContextBatch(np.array(contexts, dtype=np.float32), np.array(ends, dtype=np.int64), step)
    ).values
    actual = np.array(actuals)[:, :, None]
    diff = actual - forecast
    loss = np.maximum(qs * diff, (qs - 1) * diff) / np.array(scales)[:, None, None]
    return float(np.nanmean(loss))


def train_model(
    db_session: Session,
    *,
    histories: Sequence[History],
    forecaster_name: str,
    forecaster_config: dict[str, Any],
    holdout: float,
    store: registry.ArtifactStore,
    targets: Sequence[str],
    now: datetime,
    on_epoch: EpochCallback | None = None,
    detector: DetectorConfig | None = None,
    workers: int = 1,
    launcher: Launcher | None = None,
) -> TrainingOutcome:
    """Fit a new version, compare it with the active one on the held-out tail, keep its
    artifact in `store`, register it, and promote it only if its held-out loss is lower (or
    nothing is active yet). `workers` > 1 trains the LSTM data-parallel in that many processes
    (models.forecasters.parallel), the others started by `launcher` (spawn on this host by
    default); this process is rank 0 and does all the rest."""
    if not histories:
        raise ModelError("no history to train on: run `prognos backfill` or let ingest run first")
    started = time.perf_counter()
    step = histories[0].step
    cut = [max(1, int(len(h) * (1 - holdout))) for h in histories]
    train = [
        History(h.key, h.step, h.start, h.values[:c]) for h, c in zip(histories, cut, strict=True)
    ]
    forecaster = build(forecaster_name, forecaster_config)
    report = fit_parallel(forecaster, train, workers, on_epoch=on_epoch, launcher=launcher)
    # Score both on the held-out tail, each with the context just before it.
    tail = [
        History(
            h.key,
            h.step,
            h.start + (c - forecaster.context_length) * h.step,
            h.values[max(0, c - forecaster.context_length) :],
        )
        for h, c in zip(histories, cut, strict=True)
    ]
    candidate_loss = holdout_loss(forecaster, tail)
    family = registry.family_for(step)
    current = registry.active_model(db_session, family)
    active_loss = None
    if current is not None:
        try:
            active, _ = registry.load_artifact(db_session, current.path)
            active_loss = holdout_loss(active, tail)
        except ModelArtifactError as exc:
            log.error("the active model cannot be loaded for comparison: %s", exc.message)
    version = registry.next_version(db_session, family)
    starts = [h.start for h in histories]
    ends = [h.start + (len(h) - 1) * h.step for h in histories]
    metadata = ArtifactMetadata(
        name=family,
        version=str(version),
        train_start=from_epoch(min(starts)),
        train_end=from_epoch(max(ends)),
        series_count=len(histories),
        targets=tuple(targets),
        metrics={
            "holdout_pinball": candidate_loss,
            "best_val_loss": report.best_val_loss,
            "epochs": float(report.epochs),
        },
        detector=(detector or DetectorConfig()).model_dump(mode="json"),
    )
    path = store.save(db_session, forecaster, family=family, version=version, metadata=metadata)
    row = registry.register(
        db_session,
        family=family,
        forecaster=forecaster_name,
        step=step,
        path=path,
        metadata=metadata,
        version=version,
        now=now,
    )
    better = active_loss is None or (np.isfinite(candidate_loss) and candidate_loss < active_loss)
    if better:
        registry.promote(
            db_session,
            model_id=row.id,
            now=now,
            note=f"held-out pinball {candidate_loss:.4g} vs {active_loss}",
        )
    else:
        registry.reject(
            db_session,
            model_id=row.id,
            reason=f"held-out pinball {candidate_loss:.4g} ≥ active {active_loss:.4g}",
        )
    return TrainingOutcome(
        family,
        row.id,
        version,
        better,
        candidate_loss,
        active_loss,
        time.perf_counter() - started,
        report.epochs,
    )


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Chart:
    """What the page draws for one series over a span (epoch seconds throughout): each part
    the newest `limit` rows of the span, oldest first."""

    actual: list[tuple[int, float]]  #: (ts, value)
    #: (target_ts, made_at, p10, p50, p90): the band forecast HISTORY_LEAD before each step
    band: list[tuple[int, int, float, float, float]]
    #: the newest forecast when it was made within the span: (ts, p10, p50, p90) per step ahead
    ahead: list[tuple[int, float, float, float]]
    ahead_made_at: int | None
    anomalies: list[tuple[int, float | None, bool]]  #: (ts, score, alarm)
    breach: BreachRow | None  #: the newest predicted-breach state, if the series has a limit
    truncated: bool  #: some part had more than `limit` rows in the span


def chart(
    db_session: Session, *, series_id: int, since: int, until: int, limit: int, min_score: float
) -> Chart:
    """The series' stored values, the kept forecast band and the scored steps that alarmed or
    scored at least `min_score`, from `since` to `until` inclusive; and its newest forecast and
    predicted-breach state."""

    def newest(query: Any, ts: Any) -> list[tuple[Any, ...]]:
        rows = fetch_tuples(
            db_session, query.where(ts >= since, ts <= until).order_by(ts.desc()).limit(limit + 1)
        )
        cut.append(len(rows) > limit)
        return rows[:limit][::-1]

    cut: list[bool] = []
    actual = newest(
        sa.select(SampleRow.ts, SampleRow.value).where(SampleRow.series_id == series_id),
        SampleRow.ts,
    )
    h = ForecastHistoryRow
    band = newest(
        sa.select(h.target_ts, h.made_at, h.p10, h.p50, h.p90).where(h.series_id == series_id),
        h.target_ts,
    )
    a = AnomalyScoreRow
    anomalies = newest(
        sa.select(a.ts, a.score, a.alarm).where(
            a.series_id == series_id, sa.or_(a.alarm.is_(True), a.score >= min_score)
        ),
        a.ts,
    )
    ahead: list[tuple[int, float, float, float]] = []
    made_at = None
    forecast = db_session.get(ForecastRow, series_id)
    if forecast is not None and since <= forecast.made_at <= until:
        made_at = forecast.made_at
        low, mid, high = band_columns(forecast.quantiles)
        ahead = [
            (made_at + (i + 1) * forecast.step, v[low], v[mid], v[high])
            for i, v in enumerate(forecast.values)
        ]
    return Chart(
        actual=[(int(t), float(v)) for t, v in actual],
        band=[(int(t), int(m), float(p10), float(p50), float(p90)) for t, m, p10, p50, p90 in band],
        ahead=ahead,
        ahead_made_at=made_at,
        anomalies=[(int(t), None if s is None else float(s), bool(al)) for t, s, al in anomalies],
        breach=db_session.get(BreachRow, series_id),
        truncated=any(cut),
    )


# ----------------------------------------------------------------------------- feedback

FEEDBACK_VERDICTS = ("false_alarm", "true_alarm", "missed")


def record_feedback(
    db_session: Session,
    *,
    series_id: int,
    ts: int,
    verdict: str,
    note: str,
    author: str,
    now: datetime,
) -> AnomalyFeedbackRow:
    """Keep an operator's verdict on a scored step (an alarm judged false or true, or a step
    the detector missed) for later tuning. The step must have been scored."""
    if verdict not in FEEDBACK_VERDICTS:
        raise ModelInputError(f"verdict must be one of {', '.join(FEEDBACK_VERDICTS)}")
    scored = db_session.get(AnomalyScoreRow, (series_id, ts))
    if scored is None:
        raise AnomalyNotFoundError(
            f"series {series_id} has no score at {from_epoch(ts).isoformat()}",
            detail={"series_id": series_id, "ts": ts},
        )
    row = AnomalyFeedbackRow(
        series_id=series_id, ts=ts, verdict=verdict, note=note, author=author, created_at=now
    )
    db_session.add(row)
    db_session.flush()
    return row


def prune_scores(db_session: Session, *, before: int, limit: int) -> int:
    """Delete at most `limit` anomaly scores of steps before `before` (epoch seconds), except
    the steps an operator gave feedback on (kept with their verdict for tuning). The detector
    resumes from `detector_states`, never from old scores. Returns how many went; fewer than
    `limit` means nothing older is left."""
    judged = sa.exists().where(
        AnomalyFeedbackRow.series_id == AnomalyScoreRow.series_id,
        AnomalyFeedbackRow.ts == AnomalyScoreRow.ts,
    )
    key = (AnomalyScoreRow.series_id, AnomalyScoreRow.ts)
    return _delete_some(db_session, key, AnomalyScoreRow.ts < before, ~judged, limit=limit)
