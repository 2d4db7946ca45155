"""`engine: ray` on a Ray cluster of several nodes on this machine (each node its own raylet,
loopback only) and a real PostgreSQL: a whole node killed mid-cycle, its raylet and every worker
on it at once, loses and doubles no step. The workers are spread over the nodes
(`ray.spread`); those of the killed node are replaced on the node left, in the same cycle.

A cycle of this fleet lasts a fraction of a second, too short to aim a kill at by time alone:
the test holds the series of one batch of each worker on the doomed node locked (the worker's
first write of that batch waits on the lock), kills the node once they all wait, then lets go.
Bounded: one cluster for the module, a node added for each of 3 kills, a small fleet."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.settings import TargetSettings
from ingest.tables import SeriesRow
from models.service import CycleSummary
from prognos.engine.shards import batches, series_filter, shard_counts
from tests.support.fleet import (
    FLOAT32_TOLERANCE,
    differences,
    on,
    ray_engine,
    replay,
    stage_rows,
    today,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

BATCH_SERIES = 25  #: `shards.batch_series` of `ray_engine`: about 50 series a worker, 2 batches
#: The cycles in which a node dies, and the batch its workers are in when it does: their first
#: (none of their own committed yet) or their second (the first committed). Cycle 0 catches up
#: the whole history, cycle 4 a missed cycle's three steps, cycle 2 scores one step.
KILLS = {0: 0, 2: 1, 4: 1}


def test_a_node_killed_mid_cycle_loses_and_doubles_nothing(
    ray_nodes: Any, databases: Callable[[str], tuple[str, sessionmaker[Session]]]
) -> None:
    from prognos.engine.ray_engine import read_assignment  # Ray imported after its environment

    _, reference = databases("reference")
    replay(reference, today(reference), series=150)
    expected = stage_rows(reference)

    url, sessions = databases("node")
    head = ray_nodes.head_node.node_id
    engine: Any = None
    cycles = iter(range(6))
    killed: list[list[int]] = []  #: the workers of each node killed

    def killing(target: TargetSettings, end: int) -> CycleSummary:
        """In a cycle of KILLS: a node joins, the workers start spread over it and the head,
        and the node is killed while its workers are in the cycle's batch of KILLS."""
        nonlocal engine
        cycle = next(cycles)
        if cycle not in KILLS:
            return on(engine)(target, end)
        node = ray_nodes.add_node(num_cpus=1)
        if engine is not None:
            engine.close()
        engine = ray_engine(url, sessions, 3, spread=True)
        placed = engine.nodes()  # every worker has started
        victims = [i for i, n in enumerate(placed) if n == node.node_id]
        assert victims and head in placed, placed
        owned = read_assignment(sessions)
        keys = [k for i in victims for k in batch_keys(sessions, target, owned[i], KILLS[cycle])]

        def kill() -> None:
            kill_node(ray_nodes, node)
            killed.append(victims)

        with killed_while_waiting(sessions, keys, writers=len(victims), kill=kill):
            return on(engine)(target, end)

    try:
        summaries = replay(sessions, killing, series=150)
        assert set(engine.nodes()) == {head}  # the killed nodes' workers were replaced
    finally:
        if engine is not None:
            engine.close()
    assert len(killed) == len(KILLS) and all(s.status == "ok" for s in summaries)
    assert differences(stage_rows(sessions), expected, rel=FLOAT32_TOLERANCE) == []


def kill_node(cluster: Any, node: Any) -> None:
    """`node` dies at once, as with its machine: its raylet and every process under it (the
    workers) SIGKILLed together, then the rest of what it started removed. (`remove_node`
    alone kills the raylet, and its workers notice only seconds later, finishing what they
    were doing meanwhile.)"""
    import psutil

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    for process in [raylet, *raylet.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    cluster.remove_node(node, allow_graceful=False)


def batch_keys(
    sessions: sessionmaker[Session], target: TargetSettings, shards: Sequence[int], index: int
) -> list[str]:
    """The keys of the series in batch `index` of a worker owning `shards`, as it cuts them."""
    with sessions() as session:
        groups = batches(shards, shard_counts(session, target=target.name), limit=BATCH_SERIES)
        assert len(groups) > index, groups
        where = series_filter(groups[index])
        query = sa.select(SeriesRow.key).where(SeriesRow.target == target.name)
        return list(session.scalars(query if where is None else query.where(where)))


@contextmanager
def killed_while_waiting(
    sessions: sessionmaker[Session], keys: Sequence[str], *, writers: int, kill: Callable[[], Any]
) -> Iterator[None]:
    """Around a cycle: the series of `keys` held locked (`FOR UPDATE`: a row written with one
    of them as foreign key waits), `kill` called once `writers` sessions wait on a lock, then
    the series let go. Fails if they never wait (the kill would not have been mid-cycle)."""
    locked = threading.Event()
    failed: list[BaseException] = []

    def hold() -> None:
        try:
            with sessions() as session:
                session.execute(
                    sa.select(SeriesRow.id).where(SeriesRow.key.in_(keys)).with_for_update()
                )
                locked.set()
                wait_for_lock_waiters(sessions, writers)
                kill()
                session.rollback()
        except BaseException as exc:
            failed.append(exc)
        finally:
            locked.set()

    thread = threading.Thread(target=hold, name="node-killer")
    thread.start()
    locked.wait(30)
    try:
        yield
    finally:
        thread.join(120)
        assert not thread.is_alive() and not failed, failed


def wait_for_lock_waiters(sessions: sessionmaker[Session], count: int, timeout: float = 60) -> None:
    """Until `count` sessions of this database wait on a lock."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            if session.scalar(query) >= count:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} writers never waited on the locked series")
        time.sleep(0.02)
