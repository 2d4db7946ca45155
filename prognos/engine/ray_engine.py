"""`engine: ray`: shard workers as Ray actors, driven by the daemon's leader.

The leader writes the shard assignment (`shard_assignments`) when it starts its workers, then
each cycle sends every worker its shards and the cycle's parameters; each actor runs the same
`ShardWorker` as the local engine, on its own database connection and its own loaded model (the
registry's artifact, which every worker loads the way the leader does). Ray restarts a worker
that dies (`ray.max_restarts`) and retries its cycle on the restarted one: a batch the dead one
had not committed left no row, and one it had committed is a no-op the second time (each step
is idempotent per series), so nothing is lost or doubled. A worker whose call fails anyway is
killed for good and replaced, and its shards re-run in the same cycle: one out of restarts, or
one whose node died (Ray spends the call's retries on the dead node before it has noticed the
node is gone, and raises `ActorUnavailableError`, a `RayActorError`). `ray.spread` places the
workers across the nodes.

Needs the `ray` extra and PostgreSQL (every worker writes to the one database)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import ray
import sqlalchemy as sa
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from sqlalchemy.orm import Session, sessionmaker

from core.clock import SystemClock
from core.database import create_engine, session_factory, session_scope
from core.errors import ConfigError
from core.settings import RaySettings, Settings, TargetSettings
from models.detector import DetectorConfig
from models.service import CycleSummary, ServingModels
from prognos.engine.shards import assign
from prognos.engine.tables import ShardAssignmentRow
from prognos.engine.worker import ShardWorker, merge, process_memory

log = logging.getLogger(__name__)

#: How long a cycle waits for Ray to place the workers it replaces, in seconds.
PLACEMENT_WAIT = 60.0
#: How long `kill` waits for Ray to report the killed actors dead, in seconds.
KILL_WAIT = 30.0
#: The advisory lock key under which the assignment is rewritten ("prognosa").
ASSIGN_LOCK_KEY = 0x70726F676E6F7361


class ShardActor:
    """One shard worker in its own process (made a Ray actor by `RayEngine.start`)."""

    def __init__(
        self, database_url: str, cold_start: str, cold_config: dict[str, Any], batch_series: int
    ) -> None:
        sessions = session_factory(create_engine(database_url))
        models = ServingModels(cold_start=cold_start, cold_config=cold_config)
        self.worker = ShardWorker(sessions, models, batch_series)

    def run(
        self,
        target: TargetSettings,
        shards: Sequence[int],
        detector: DetectorConfig,
        now: datetime,
        max_catchup: int,
    ) -> CycleSummary:
        return self.worker.run(
            target, shards=shards, detector=detector, now=now, max_catchup=max_catchup
        )

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def memory(self, reset: bool = False) -> dict[str, int]:
        return process_memory(reset=reset)


@dataclass
class RayEngine:
    sessions: sessionmaker[Session]
    models: ServingModels  #: the leader's, refreshed so `detector_for` follows the served model
    make_actor: Any  #: index -> a new actor handle
    actors: list[Any] = field(default_factory=list)
    started_ray: bool = False
    #: how long a cycle waits for Ray to place a replacement worker (free CPUs, or a node)
    placement_wait: float = PLACEMENT_WAIT
    unplaced: set[int] = field(default_factory=set)  #: replacements Ray has not placed yet

    @classmethod
    def start(
        cls, *, settings: Settings, sessions: sessionmaker[Session], models: ServingModels
    ) -> RayEngine:
        """Join (or start) the Ray cluster, write the shard assignment, start the workers."""
        bind = sessions.kw["bind"]
        if bind.dialect.name != "postgresql":
            raise ConfigError(
                "engine: ray needs PostgreSQL (database.url): every worker writes to it"
            )
        started = join_cluster(settings.ray)
        workers = settings.ray.workers
        write_assignment(sessions, assign(workers), now=SystemClock().now())
        remote = ray.remote(ShardActor).options(
            num_cpus=settings.ray.cpus_per_worker,
            max_restarts=settings.ray.max_restarts,
            max_task_retries=settings.ray.max_restarts,
            scheduling_strategy="SPREAD" if settings.ray.spread else None,
        )
        arguments = (
            settings.database_url,
            models.cold_start,
            dict(models.cold_config),
            settings.shards.batch_series,
        )

        def make_actor(index: int) -> Any:
            return remote.remote(*arguments)

        engine = cls(sessions, models, make_actor, started_ray=started)
        engine.actors = [make_actor(i) for i in range(workers)]
        log.info("engine ray: %d shard workers on %s", workers, settings.ray.address)
        return engine

    def forecast(
        self,
        target: TargetSettings,
        *,
        detector: DetectorConfig,
        now: datetime,
        max_catchup: int,
    ) -> CycleSummary:
        """One cycle of `target` on every worker, each over its assigned shards."""
        started = time.perf_counter()
        owned = read_assignment(self.sessions)

        def send(actor: Any, index: int) -> Any:
            return actor.run.remote(target, owned.get(index, []), detector, now, max_catchup)

        parts: list[CycleSummary] = []

        def gather(calls: dict[int, Any]) -> list[int]:
            """Collect the workers' summaries; the workers lost, in order."""
            lost: list[int] = []
            for index, call in calls.items():
                try:
                    parts.append(ray.get(call))
                except RayActorError as exc:
                    log.error("shard worker %d is lost (%s)", index, type(exc).__name__)
                    lost.append(index)
                except RayTaskError as exc:
                    log.error("shard worker %d failed the cycle of %s: %s", index, target.name, exc)
            return lost

        if self.unplaced:  # replacements of earlier cycles: those placed within a second run
            self._wait_placed(self.unplaced, min(self.placement_wait, 1.0), target.name)
        running = [i for i in range(len(self.actors)) if i not in self.unplaced]
        lost = gather({index: send(self.actors[index], index) for index in running})
        # Out of restarts, or unreachable (their node died: ActorUnavailableError). Killed for
        # good now, not when their last handle is gone, so that Ray cannot restart one beside
        # its replacement; fresh workers take their shards, all at once, in this cycle already.
        for index in lost:
            log.info("shard worker %d is replaced; the new one takes its shards", index)
            ray.kill(self.actors[index], no_restart=True)
            self.actors[index] = self.make_actor(index)
        self.unplaced.update(lost)
        self._wait_placed(set(lost), self.placement_wait, target.name)
        gather(
            {index: send(self.actors[index], index) for index in lost if index not in self.unplaced}
        )
        with session_scope(self.sessions) as session:
            self.models.for_step(session, target.step_seconds)
        if not parts:
            raise RuntimeError(f"every shard worker failed the cycle of {target.name}")
        return merge(target.name, parts, seconds=time.perf_counter() - started)

    def _wait_placed(self, indexes: set[int], seconds: float, target: str) -> None:
        """Wait up to `seconds` for Ray to place the workers `indexes`; those it has placed
        leave `unplaced`. One still waiting (no free CPUs on the nodes left) is skipped in
        this cycle, its shards scored by the catch-up of a later one, rather than holding
        the cycle without a bound."""
        order = sorted(indexes)
        if not order:
            return
        answered = placed([self.actors[index] for index in order], seconds)
        self.unplaced.difference_update(i for i, ok in zip(order, answered, strict=True) if ok)
        for index in sorted(self.unplaced & indexes):
            log.error(
                "shard worker %d is not placed yet (the cluster has %s CPUs free): its "
                "shards of %s wait for a later cycle; free CPUs or add a node",
                index,
                free_cpus(),
                target,
            )

    def memory(self, reset: bool = False) -> list[dict[str, int]]:
        """Each worker's resident memory now and at its peak (bytes); see ShardActor.memory."""
        return list(ray.get([a.memory.remote(reset) for a in self.actors]))

    def pids(self) -> list[int]:
        return list(ray.get([a.pid.remote() for a in self.actors]))

    def nodes(self) -> list[str]:
        """The Ray node of each worker."""
        return list(ray.get([a.node.remote() for a in self.actors]))

    def close(self) -> None:
        kill(self.actors)
        self.actors = []
        if self.started_ray:
            ray.shutdown()


def placed(actors: Sequence[Any], seconds: float) -> list[bool]:
    """Whether Ray has placed each actor (it answered `pid`) within `seconds`: one waiting
    for CPUs that no node has free is not."""
    probes = [actor.pid.remote() for actor in actors]
    ready, _ = ray.wait(probes, num_returns=len(probes), timeout=seconds)
    done = set(ready)
    return [probe in done for probe in probes]


def kill(actors: Sequence[Any], seconds: float = KILL_WAIT) -> list[Any]:
    """Kill `actors` for good and wait up to `seconds` until each is dead, so that their CPUs
    are free when this returns. `ray.kill` only asks: an actor answers calls for a moment
    after it. Returns those that still answer (logged), for a caller that must know."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + seconds
    alive = list(actors)
    while alive:
        left = deadline - time.monotonic()
        if left <= 0:
            log.error("%d Ray actors still answer %g s after they were killed", len(alive), seconds)
            break
        answering = []
        for actor in alive:
            try:
                # Not retried: a retry of a call to a killed actor only logs that it failed.
                probe = actor.pid.options(max_task_retries=0).remote()
                ray.get(probe, timeout=max(0.1, min(left, 1.0)))
            except RayActorError:
                continue  # dead, or its node is
            except GetTimeoutError:
                pass  # busy, or not placed yet: ask again
            answering.append(actor)
        alive = answering
        if alive:
            time.sleep(0.05)
    return alive


def free_cpus() -> str:
    """The cluster's free CPUs of its total, as a message says it ("1.5 of 2")."""
    free = ray.available_resources().get("CPU", 0.0)
    return f"{free:g} of {ray.cluster_resources().get('CPU', 0.0):g}"


def join_cluster(settings: RaySettings) -> bool:
    """Join (or start) the Ray cluster `ray.address` names, unless this process already has
    (one `ray.init` per process: the engine and training share it). True if it joined here."""
    if ray.is_initialized():
        return False
    ray.init(address=settings.address, include_dashboard=False, logging_level=logging.WARNING)
    return True


def write_assignment(
    sessions: sessionmaker[Session], owned: Sequence[Sequence[int]], *, now: datetime
) -> None:
    """Replace the assignment with `owned` (worker index -> its shards), one writer at a time."""
    with session_scope(sessions) as session:
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ASSIGN_LOCK_KEY})
        session.execute(sa.delete(ShardAssignmentRow))
        session.add_all(
            ShardAssignmentRow(shard=shard, worker=worker, assigned_at=now)
            for worker, shards in enumerate(owned)
            for shard in shards
        )
        session.commit()


def read_assignment(sessions: sessionmaker[Session]) -> dict[int, list[int]]:
    """Worker index -> the shards it owns, in order."""
    with session_scope(sessions) as session:
        rows = session.execute(
            sa.select(ShardAssignmentRow.worker, ShardAssignmentRow.shard).order_by(
                ShardAssignmentRow.shard
            )
        ).all()
    owned: dict[int, list[int]] = {}
    for worker, shard in rows:
        owned.setdefault(int(worker), []).append(int(shard))
    return owned
