"""Batch work as Ray tasks (`engine: ray`): each job of a bulk computation (e.g. one file of the
NAB backtest) is a Ray task that the cluster places on any node with a free CPU. The jobs carry
their data and the tasks return their results to the caller, which reads and writes every file:
no node needs the caller's disk.

At most `processes` tasks are in flight (None: as many as the cluster has CPUs), so a long list
of jobs does not fill the object store; results come back in the jobs' order, as from a local
process pool. A task's error is raised here with its cause, and the remaining tasks are
cancelled."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

import ray

from core.settings import RaySettings
from prognos.engine.ray_engine import join_cluster


def ray_mapper(settings: RaySettings) -> Callable[..., Iterator[Any]]:
    """A `models.evaluation.backtest.Mapper` running each job as a Ray task."""

    def run(
        function: Callable[[Any], Any], jobs: Sequence[Any], processes: int | None
    ) -> Iterator[Any]:
        joined = join_cluster(settings)
        in_flight: deque[Any] = deque()
        try:
            remote = ray.remote(num_cpus=1)(function)
            limit = processes or max(1, int(ray.cluster_resources().get("CPU", 1)))
            waiting = iter(jobs)
            in_flight.extend(remote.remote(job) for job in islice(waiting, limit))
            while in_flight:
                result = ray.get(in_flight.popleft())
                in_flight.extend(remote.remote(job) for job in islice(waiting, 1))
                yield result
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            if joined:
                ray.shutdown()

    return run
