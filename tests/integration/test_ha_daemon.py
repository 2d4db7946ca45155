"""Two `prognos daemon` processes on one PostgreSQL: one leads, the other stands by and takes
over when the leader is killed mid-cycle (inside its ingest or scoring transaction) or stops;
afterwards every step is stored once, scored once, and no cycle ran twice."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from core.database import create_engine, migrate
from core.leadership import LeaderLock
from tests.support.servers import PostgresServer

pytestmark = pytest.mark.timeout(240)  # 50 s on a shared 2-core machine; more when it is busy

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 2.0  # seconds between cycles (ingest.interval)
TAKEOVER_LIMIT = INTERVAL + 2.0  # one cycle interval, plus a margin for a loaded machine
TARGETS = ("t1", "t2", "t3")


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"ha_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    migrate(engine)  # once here, rather than raced by every daemon's start
    yield engine
    engine.dispose()


def write_config(tmp_path: Path, db_url: str) -> Path:
    """A replay folder of three targets (two series each, a sample every second, looped) and
    a config that ingests it every INTERVAL seconds."""
    replay = tmp_path / "replay"
    replay.mkdir()
    rng = np.random.default_rng(7)
    start = 1_700_000_000
    entries = []
    for target in TARGETS:
        for instance in ("a", "b"):
            name = f"{target}_{instance}.csv"
            values = 50 + rng.normal(0, 5, 900)
            rows = "\n".join(f"{start + i},{v:.4f}" for i, v in enumerate(values))
            (replay / name).write_text(f"timestamp,value\n{rows}\n")
            entries.append(
                {"file": name, "target": target, "labels": {"service": f"svc{instance}"}}
            )
    (replay / "series.yaml").write_text(yaml.safe_dump({"step": "1s", "series": entries}))
    config = {
        "data_dir": str(tmp_path / "var"),
        "database": {"url": db_url},
        "replay": {"path": str(replay), "loop": True},
        "ingest": {"interval": f"{INTERVAL:g}s", "lag": "1s"},
        "models": {"retrain_interval": "1h"},
        "remediation": {"playbooks_dir": str(ROOT / "deploy" / "playbooks")},
        "targets": [
            {"name": t, "query": f"replay:{t}", "step": "1s", "lookback": "30s"}
            | ({"breach": {"threshold": 1000.0}} if t == "t3" else {})
            for t in TARGETS
        ],
    }
    path = tmp_path / "prognos.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path
    fate: str = ""  #: how the test ended it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exit_status(self, timeout: float = 30.0) -> int:
        """Its exit status; one that does not exit shows where it is stuck."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait()
            raise AssertionError(f"no exit {timeout:g}s after SIGTERM:\n{self.output()}") from None


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        log = tmp_path / f"daemon-{len(started)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROGNOS_")}
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (see `stopped`)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prognos.cli", "--config", str(config), "daemon"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(Daemon(proc, log))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def wait_for(what: str, check: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def leader_pid(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pid FROM leaders WHERE name = 'daemon'")).scalar()


def runs(engine: Engine, target: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM ingest_runs WHERE target = :t AND status = 'ok'"),
                {"t": target},
            ).scalar_one()
        )


def wait_cycles(engine: Engine, count: int) -> None:
    """Until `count` more cycles have ingested the last target."""
    before = runs(engine, TARGETS[-1])
    wait_for(f"{count} cycles", lambda: runs(engine, TARGETS[-1]) >= before + count, 20)


def standing_by(daemon: Daemon) -> bool:
    assert daemon.proc.poll() is None, daemon.output()
    return "standing by" in daemon.output()


def blocked_on(engine: Engine, statement: str) -> bool:
    """A session of this database waits for a row lock in `statement`."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE :q"
                ),
                {"q": f"{statement}%"},
            ).scalar_one()
        )


def takeover(engine: Engine, gone: Daemon, running: list[Daemon], since: float) -> Daemon:
    """Wait until another of the running daemons leads; returns it after reporting the time."""
    others = {d.pid: d for d in running if d is not gone}
    wait_for("a standby to lead", lambda: leader_pid(engine) in others)
    took = time.monotonic() - since
    print(f"takeover after the leader's {gone.fate}: {took:.2f}s")
    assert took < TAKEOVER_LIMIT, f"took {took:.2f}s to take over from a leader's {gone.fate}"
    running.remove(gone)
    return others[leader_pid(engine) or 0]


def kill_inside(engine: Engine, leader: Daemon, lock_rows: str, statement: str) -> float:
    """Hold `lock_rows` so the leader's cycle stops inside its transaction at `statement`, and
    SIGKILL it there; returns when."""
    with engine.connect() as conn:
        hold = conn.begin()
        conn.execute(sa.text(lock_rows))
        wait_for(f"the leader to wait in {statement}", lambda: blocked_on(engine, statement))
        leader.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.fate = f"SIGKILL inside {statement}"
        leader.proc.wait()
        hold.rollback()  # the dead leader's backend now finds its client gone: rolled back
    return killed


def test_the_standby_takes_over_a_killed_or_stopped_leader_and_nothing_is_lost_or_doubled(
    tmp_path: Path, pg_url: str, engine: Engine, daemons: Callable[[Path], Daemon]
) -> None:
    config = write_config(tmp_path, pg_url)
    running = [daemons(config) for _ in range(4)]  # one leads, three stand by
    leader_id = wait_for("a leader", lambda: leader_pid(engine), 120)  # four starts at once
    (leader,) = (d for d in running if d.pid == leader_id)
    wait_for(
        "the others to stand by", lambda: all(standing_by(d) for d in running if d is not leader)
    )
    wait_cycles(engine, 2)

    # 1. Killed inside its ingest transaction: samples of t2 written, its watermark not yet.
    killed = kill_inside(
        engine,
        leader,
        "SELECT * FROM ingest_watermarks WHERE target = 't2' FOR UPDATE",
        "UPDATE ingest_watermarks",
    )
    leader = takeover(engine, leader, running, killed)
    wait_cycles(engine, 1)

    # 2. Killed inside its scoring transaction: t3's scores written, its detector state not yet.
    killed = kill_inside(
        engine,
        leader,
        "SELECT * FROM detector_states WHERE series_id = (SELECT min(id) FROM series "
        "WHERE target = 't3') FOR UPDATE",
        "INSERT INTO detector_states",
    )
    leader = takeover(engine, leader, running, killed)
    wait_cycles(engine, 1)

    # 3. Stopped (SIGTERM): it finishes its cycle, lets go, and the standby leads at once.
    leader.proc.send_signal(signal.SIGTERM)
    leader.fate = "SIGTERM"
    stopped = leader
    leader = takeover(engine, leader, running, time.monotonic())
    assert stopped.exit_status() == 0, stopped.output()
    assert "letting go of the lead" in stopped.output()
    wait_cycles(engine, 1)
    (last,) = running
    last.proc.send_signal(signal.SIGTERM)
    assert last.exit_status() == 0, last.output()
    assert leader_pid(engine) is None  # the last one let go and nobody leads

    assert_each_cycle_once(engine)
    assert_every_step_stored_and_scored_once(engine)
    assert_breaches_and_incidents_single(engine)


def assert_each_cycle_once(engine: Engine) -> None:
    """Each target's ingest windows follow one another with neither overlap nor gap: no
    cycle's window was ingested twice (by two leaders) or skipped (by a dead one)."""
    with engine.connect() as conn:
        for target in TARGETS:
            windows = conn.execute(
                sa.text(
                    "SELECT window_start, window_end FROM ingest_runs "
                    "WHERE target = :t AND status = 'ok' ORDER BY window_start"
                ),
                {"t": target},
            ).all()
            assert len(windows) >= 5, (target, windows)
            for (_, end), (start, _) in itertools.pairwise(windows):
                assert start == end + 1, f"{target}: window after {end} starts at {start}"


def assert_every_step_stored_and_scored_once(engine: Engine) -> None:
    with engine.connect() as conn:
        marks: dict[str, int] = dict(
            conn.execute(sa.text("SELECT target, watermark FROM ingest_watermarks")).all()
        )
        series = conn.execute(sa.text("SELECT id, target FROM series")).all()
        assert len(series) == 2 * len(TARGETS)
        for series_id, target in series:
            samples = [
                ts
                for (ts,) in conn.execute(
                    sa.text("SELECT ts FROM samples WHERE series_id = :s ORDER BY ts"),
                    {"s": series_id},
                )
            ]
            assert samples == list(range(samples[0], marks[target] + 1)), (
                f"series {series_id}: steps missing or doubled"
            )
            scored = [
                ts
                for (ts,) in conn.execute(
                    sa.text("SELECT ts FROM anomaly_scores WHERE series_id = :s ORDER BY ts"),
                    {"s": series_id},
                )
            ]
            last = conn.execute(
                sa.text("SELECT last_ts FROM detector_states WHERE series_id = :s"),
                {"s": series_id},
            ).scalar_one()
            assert last == marks[target], f"series {series_id}: scored up to {last} only"
            assert scored == [ts for ts in samples if ts >= scored[0]], (
                f"series {series_id}: a stored step is unscored or scored twice"
            )


def assert_breaches_and_incidents_single(engine: Engine) -> None:
    with engine.connect() as conn:
        breaches = conn.execute(
            sa.text(
                "SELECT b.series_id, b.made_at, f.made_at FROM breaches b "
                "JOIN forecasts f ON f.series_id = b.series_id"
            )
        ).all()
        assert len(breaches) == 2  # t3's two series, one state each, from the newest forecast
        assert all(made == forecast for _, made, forecast in breaches)
        open_series: list[int] = []
        for (members,) in conn.execute(
            sa.text("SELECT series FROM incidents WHERE status = 'open'")
        ):
            open_series.extend(members)
        assert len(open_series) == len(set(open_series)), "a series is in two open incidents"


def test_a_leader_whose_lock_connection_dies_loses_the_lead(engine: Engine) -> None:
    """The lock lives on its own connection: when the server ends it, the holder sees it lost
    at its next check (and stops starting jobs), and another process can take the lead."""
    first, second = LeaderLock(engine), LeaderLock(engine)
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert first.holds()
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'prognos daemon lock' AND pid <> pg_backend_pid()"
                )
            )
        assert not first.holds()
        assert not first.held
        assert wait_for("the lock to be free", second.try_acquire, 5)
        leader = second.current()
        assert leader is not None and leader.pid == os.getpid()
    finally:
        first.release()
        second.release()
    assert LeaderLock(engine).current() is None
