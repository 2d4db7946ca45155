"""A shard worker: the unit of work of the forecast/score stage. It owns some virtual shards and,
each cycle, runs the one serving path (`models.service.forecast_cycle`: score the new points
with the `Detector`, forecast, predict breaches) over their series, at most `batch_series`
series per transaction so that its memory stays bounded whatever the fleet's size. It keeps its
series' recent windows in memory (`WindowBuffer`, one per target): each cycle reads only the
samples newer than the buffer's end, not every context window again, and its series'
detector states (`HeldStates`): each cycle checks the stored row's newest step and settings
instead of reading and parsing every state's JSON.

Its checkpoint is the database: each series' detector state (its last scored step), newest
forecast and breach streak are written in the transaction that writes its scores, so a worker
killed anywhere either committed a batch whole or left no trace of it, and its successor
scores exactly the steps after each series' last committed one. The buffer and the held
states are caches of what is stored: a restarted worker reads them from the database and
writes the same rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from core.database import session_scope
from core.settings import TargetSettings
from models import service as model_service
from models.detector import DetectorConfig
from models.service import CycleSummary, HeldStates, ServingModels
from prognos.engine.shards import SHARDS, batches, series_filter, shard_counts
from prognos.engine.window import WindowBuffer


@dataclass
class ShardWorker:
    sessions: sessionmaker[Session]
    models: ServingModels  #: its one loaded copy of each step's model
    batch_series: int = 50_000
    #: False: every cycle reads its windows and detector states from the database
    keep_windows: bool = True
    buffers: dict[str, WindowBuffer] = field(default_factory=dict)  #: target -> its windows
    held: HeldStates = field(default_factory=HeldStates)  #: its series' detector states
    owned: tuple[int, ...] = ()  #: the shards of its last cycle

    def run(
        self,
        target: TargetSettings,
        *,
        shards: Sequence[int] = tuple(range(SHARDS)),
        detector: DetectorConfig,
        now: datetime,
        max_catchup: int,
    ) -> CycleSummary:
        """One cycle of `target` over the series of `shards`; batches are committed one by one
        and an error stops the cycle (the batches left are taken up by the next one)."""
        started = time.perf_counter()
        if tuple(shards) != self.owned:  # states of shards it no longer owns: not kept
            self.held.clear()
            self.owned = tuple(shards)
        with session_scope(self.sessions) as session:
            counts = shard_counts(session, target=target.name)
        parts = []
        buffer = self.buffers.setdefault(target.name, WindowBuffer())
        for group in batches(shards, counts, limit=self.batch_series):
            with session_scope(self.sessions) as session:

                def windows(
                    end: int, length: int, session: Session = session, group: list[int] = group
                ) -> tuple[list[int], np.ndarray]:
                    return buffer.windows(
                        session,
                        target=target.name,
                        shards=group,
                        owned=shards,
                        end=end,
                        length=length,
                    )

                parts.append(
                    model_service.forecast_cycle(
                        session,
                        target=target,
                        models=self.models,
                        detector=detector,
                        now=now,
                        max_catchup=max_catchup,
                        series=series_filter(group),
                        windows=windows if self.keep_windows else None,
                        held=self.held if self.keep_windows else None,
                    )
                )
                session.commit()
        return merge(target.name, parts, seconds=time.perf_counter() - started)


def merge(target: str, parts: Sequence[CycleSummary], *, seconds: float) -> CycleSummary:
    """One summary of a target's cycle from its batches' (or its workers') summaries."""
    done = [p for p in parts if p.status == "ok"]
    if not done:
        ends = [p.end for p in parts if p.end is not None]
        return CycleSummary(target, "noop", max(ends) if ends else None)
    return CycleSummary(
        target,
        "ok",
        max(p.end for p in done if p.end is not None),
        sum(p.series for p in done),
        sum(p.scored for p in done),
        sum(p.anomalies for p in done),
        sum(p.cold_start for p in done),
        done[0].model,
        seconds,
        sum(p.warnings for p in done),
    )


def process_memory(*, reset: bool = False) -> dict[str, int]:
    """This process' resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes (Linux);
    `reset` starts the peak afresh from now on, after reading it."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    if reset:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # the peak restarts from the current RSS
    return out
