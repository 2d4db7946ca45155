"""The daemon runs jobs only while it leads: a lost lock stops them, and it stands by again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from prognos import daemon, jobs
from prognos.composition import build_context
from prognos.context import ServiceContext


class FakeLock:
    """A lock the test frees, takes away and watches."""

    host, pid = "test-host", 1

    def __init__(self) -> None:
        self.free = True
        self.alive = True
        self.released = threading.Event()

    def try_acquire(self) -> bool:
        return self.free

    def holds(self) -> bool:
        return self.alive

    def release(self) -> None:
        self.released.set()

    def current(self) -> None:
        return None


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_job_is_skipped_once_this_process_no_longer_leads() -> None:
    ran: list[str] = []
    job = daemon._guarded(lambda _: ran.append("ran"), lambda: False)
    assert job(None) is None
    assert ran == []


def test_retries_fit_within_one_cycle_interval() -> None:
    from datetime import timedelta

    assert daemon.retry_every(timedelta(seconds=2)) == timedelta(seconds=0.5)
    assert daemon.retry_every(timedelta(minutes=1)) == timedelta(seconds=15)
    assert daemon.retry_every(timedelta(minutes=10)) == timedelta(seconds=15)


def test_a_leader_that_loses_its_lock_steps_down_and_leads_again_when_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cycles: list[float] = []

    def cycle(_: ServiceContext) -> None:
        cycles.append(time.monotonic())

    monkeypatch.setattr(jobs, "cycle", cycle)
    monkeypatch.setattr(jobs, "catch_up_proposals", lambda _: None)
    context = build_context(Settings(data_dir=tmp_path, ingest={"interval": "2s"}))
    lock = FakeLock()
    runner = daemon.LeadingScheduler(context, lock=lock)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="prognos.daemon")
    try:
        runner.start()
        wait_for(lambda: len(cycles) == 1)  # leads: the first cycle runs at once

        lock.alive = lock.free = False  # the lock's connection is gone, another process leads
        wait_for(lambda: "standing by" in caplog.text)
        assert "stepping down" in caplog.text
        count = len(cycles)
        time.sleep(2.5)  # more than an interval: no cycle runs here meanwhile
        assert len(cycles) == count

        lock.alive = lock.free = True
        wait_for(lambda: len(cycles) > count)  # leads again, and cycles again
    finally:
        runner.stop()
        context.engine.dispose()
    assert lock.released.is_set()
    assert "letting go of the lead" in caplog.text
