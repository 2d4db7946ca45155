"""`engine: ray` and `models.train_workers` > 1: ranks 1..N-1 of the data-parallel LSTM training
as Ray actors, on whichever nodes Ray places them (models.forecasters.parallel).

Rank 0 stays the calling process: it keeps the forecaster and saves the artifact through its
store (on PostgreSQL the database store, which every host loads). Each actor reserves
`ray.cpus_per_worker` CPUs, runs the rank function of the spawn path (`run_rank`) with that many
PyTorch threads (or the config's `num_threads`), and meets rank 0 at its node's IP on a free
port (gloo). The actors are killed when the fit ends, whether it succeeded or not, and all of
them as soon as one fails; ranks Ray cannot place within `PLACEMENT_WAIT` fail the fit with
what the cluster lacks. The cluster is the one this process joined already (the engine's),
or else the one `ray.address` names."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from core.settings import RaySettings
from models.errors import ModelError
from models.forecasters.parallel import RankFailed, RankJob, run_rank
from prognos.engine.ray_engine import PLACEMENT_WAIT as ENGINE_PLACEMENT_WAIT
from prognos.engine.ray_engine import free_cpus, join_cluster, kill, placed

#: How long rank 0, its own collective broken, waits for the failed rank's error.
FAILURE_WAIT = timedelta(seconds=10)
#: How long the ranks may wait for Ray to place them (free CPUs, or a node an autoscaler adds)
#: before the fit fails saying so, instead of waiting out the rendezvous timeout.
PLACEMENT_WAIT = timedelta(seconds=ENGINE_PLACEMENT_WAIT)


class TrainingRank:
    """One rank of a fit in its own process (made a Ray actor by `RayLauncher.start`)."""

    def run(self, job: RankJob, rank: int, threads: int) -> None:
        run_rank(job, rank, threads)

    def pid(self) -> int:
        return os.getpid()


@dataclass
class RayLauncher:
    """Starts ranks 1..N-1 as Ray actors; joins the cluster on first use if not joined yet."""

    settings: RaySettings  #: the cluster to join if not joined yet; each rank's CPUs
    placement_wait: timedelta = PLACEMENT_WAIT

    def host(self) -> str:
        join_cluster(self.settings)
        return str(ray.util.get_node_ip_address())

    def start(self, job: RankJob) -> RayRanks:
        cpus = self.settings.cpus_per_worker
        threads = job.config.num_threads or max(1, int(cpus))
        remote = ray.remote(TrainingRank).options(num_cpus=cpus, max_restarts=0)
        shared = ray.put(job)  # the histories once in the object store, not once per rank
        ranks = RayRanks(job.timeout)
        try:
            ranks.actors = [remote.remote() for _ in range(1, job.workers)]
            self._placed(ranks.actors, job.workers)
            ranks.calls = [
                actor.run.remote(shared, rank, threads)
                for rank, actor in enumerate(ranks.actors, 1)
            ]
        except BaseException:
            ranks.stop()
            raise
        ranks.watcher.start()
        return ranks

    def _placed(self, actors: list[Any], workers: int) -> None:
        """Wait until Ray has placed every rank's actor; a fit it cannot place fails now,
        saying what the cluster lacks, rather than after the rendezvous timeout."""
        seconds = self.placement_wait.total_seconds()
        count = sum(placed(actors, seconds))
        if count < len(actors):
            raise ModelError(
                f"training with {workers} processes: Ray placed {count} of "
                f"{len(actors)} ranks within {seconds:g} s; each asks for "
                f"ray.cpus_per_worker = {self.settings.cpus_per_worker:g} CPUs and the cluster "
                f"has {free_cpus()} free (the engine's shard workers hold theirs): "
                "lower models.train_workers or ray.cpus_per_worker, or add a node"
            )


@dataclass
class RayRanks:
    """The actors of one fit, watched: the first rank to fail gets every actor killed.

    A spawned rank that fails exits, which closes its connections and so breaks rank 0's
    collective at once; an actor outlives its failed call, its process group still open, and
    rank 0 would wait the whole collective timeout. Killing the actors does what the exit does.
    """

    timeout: timedelta  #: the fit's collective timeout: how long join waits after rank 0
    actors: list[Any] = field(default_factory=list)  #: rank r is actors[r - 1]
    calls: list[Any] = field(default_factory=list)  #: rank r's `run`, calls[r - 1]
    error: str | None = None  #: the first failed rank's error
    stopping: threading.Event = field(default_factory=threading.Event)
    watcher: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.watcher = threading.Thread(target=self._watch, name="ray-train-ranks", daemon=True)

    def join(self) -> None:
        self.watcher.join(self.timeout.total_seconds())
        if self.error:
            raise RankFailed(self.error)
        if self.watcher.is_alive():
            raise RankFailed(f"ranks 1..{len(self.calls)} did not finish within {self.timeout}")

    def failure(self) -> str | None:
        self.watcher.join(FAILURE_WAIT.total_seconds())
        return self.error

    def stop(self) -> None:
        self.stopping.set()
        self._kill()
        if self.watcher.is_alive():
            self.watcher.join(FAILURE_WAIT.total_seconds())

    def _kill(self) -> None:
        kill(self.actors)

    def _watch(self) -> None:
        rank_of = {call: rank for rank, call in enumerate(self.calls, 1)}
        pending = list(self.calls)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            if self.stopping.is_set():
                return
            rank = rank_of[ready[0]]
            try:
                ray.get(ready[0])
            except RayTaskError as exc:
                cause = exc.cause
                self.error = f"rank {rank}: {type(cause).__name__}: {cause}"
            except RayActorError as exc:
                lines = str(exc).strip().splitlines()
                self.error = f"rank {rank}: its actor died: {lines[0] if lines else exc}"
            if self.error:
                self._kill()
                return
