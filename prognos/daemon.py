"""Scheduler wiring (APScheduler 3.x): jobs run one at a time each, late runs coalesce, and only
in the process that leads (core.leadership): others stand by and take over when it goes."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from core.durations import format_duration
from core.leadership import LeaderLock
from prognos import jobs
from prognos.context import ServiceContext

log = logging.getLogger(__name__)

Guard = Callable[[], bool]


def build_scheduler(
    context: ServiceContext, *, blocking: bool, guard: Guard | None = None
) -> BaseScheduler:
    """The scheduled jobs; with `guard`, each run first asks it whether this process still
    leads, and is skipped if not."""
    scheduler: BaseScheduler = (
        BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
    )

    def job(func: Callable[[ServiceContext], Any]) -> Callable[[ServiceContext], Any]:
        return func if guard is None else _guarded(func, guard)

    interval = context.settings.ingest.interval
    common = {"max_instances": 1, "coalesce": True, "replace_existing": True}
    scheduler.add_job(
        job(jobs.cycle),
        "interval",
        seconds=interval.total_seconds(),
        args=[context],
        id="cycle",
        name="ingest + forecast + score",
        next_run_time=context.clock.now(),
        misfire_grace_time=max(1, int(interval.total_seconds())),
        **common,
    )
    retrain_every = context.settings.models.retrain_interval.total_seconds()
    scheduler.add_job(
        job(_retrain),
        "interval",
        seconds=retrain_every,
        args=[context],
        id="retrain",
        name="retrain models",
        next_run_time=context.clock.now() + timedelta(minutes=2),
        misfire_grace_time=int(retrain_every),
        **common,
    )
    scheduler.add_job(
        job(jobs.prune_samples),
        "interval",
        seconds=timedelta(hours=1).total_seconds(),
        args=[context],
        id="prune",
        name="prune what is past its retention",
        next_run_time=context.clock.now() + timedelta(minutes=1),
        misfire_grace_time=3600,
        **common,
    )
    return scheduler


def _guarded(func: Callable[[ServiceContext], Any], guard: Guard) -> Callable[..., Any]:
    @functools.wraps(func)
    def run_if_leading(context: ServiceContext) -> Any:
        if not guard():
            log.warning("skipping %s: this process no longer leads", func.__name__)
            return None
        return func(context)

    return run_if_leading


def _retrain(context: ServiceContext) -> None:
    try:
        jobs.retrain(context)
    except Exception:  # a failed training leaves the active model serving
        log.exception("retraining failed; the active model keeps serving")


def retry_every(interval: timedelta) -> timedelta:
    """How often a standby tries for the lead (and the leader confirms it): a quarter of the
    cycle interval, between 0.5 s and 15 s, so a dead leader's cycle is taken over within one
    interval."""
    return min(max(interval / 4, timedelta(seconds=0.5)), timedelta(seconds=15))


_LEADING = object()  #: not standing by for anyone (yet)


class LeadingScheduler:
    """The scheduler, run only while this process holds the lead. `run()` blocks (the daemon);
    `start()` / `stop()` run it in a thread beside the API (`prognos run`).

    A standby tries for the lock every `retry_every(interval)`. The leader confirms the lock
    before each job run and as often in between; when its lock connection is lost it stops
    the scheduler (letting a running job finish) and stands by again, so two processes never
    both start jobs. Every stage commits per target from watermarks, so a cycle cut short by
    a dying leader is finished by the next one without losing or doubling a step."""

    def __init__(self, context: ServiceContext, lock: LeaderLock | None = None) -> None:
        self.context = context
        self.retry = retry_every(context.settings.ingest.interval)
        # Probed every retry, 3 probes lost: a vanished host's lock is freed in about one interval.
        self.lock = lock or LeaderLock(context.engine, probe=max(self.retry, timedelta(seconds=1)))
        self._scheduler: BaseScheduler | None = None
        # A plain flag, not an Event: a signal handler sets it, and must take no lock.
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._standing_by: object = _LEADING  #: whom this process last said it stands by for

    def run(self) -> None:
        """Lead or stand by until `stop()`; then let a running job finish and let go."""
        try:
            while not self._stop_requested:
                if self._scheduler is None:
                    self._try_to_lead()
                elif not self.lock.holds():
                    self._step_down("its lock connection was lost")
                self._pause()
        finally:
            if self._scheduler is not None:
                self._step_down(None)
            self.lock.release()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="leadership", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to stop (safe in a signal handler); it does within 0.1 s."""
        self._stop_requested = True

    def stop(self) -> None:
        """Ask the loop to stop; wait for it when it runs in its own thread (`start()`)."""
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _pause(self) -> None:
        until = time.monotonic() + self.retry.total_seconds()
        while not self._stop_requested and time.monotonic() < until:
            time.sleep(0.1)

    def _try_to_lead(self) -> None:
        if not self.lock.try_acquire():
            leader = self.lock.current()
            seen = None if leader is None else (leader.host, leader.pid)
            if seen != self._standing_by:
                self._standing_by = seen
                log.info(
                    "standing by: %s leads; trying every %gs",
                    "another process" if leader is None else leader.describe(),
                    self.retry.total_seconds(),
                )
            return
        self._standing_by = _LEADING
        log.info(
            "leading: %s (pid %d) runs the scheduler: ingest every %s for %d target(s)",
            self.lock.host,
            self.lock.pid,
            format_duration(self.context.settings.ingest.interval),
            len(self.context.targets),
        )
        try:
            jobs.catch_up_proposals(self.context)
        except Exception:  # the cycle runs regardless; the next leader tries again
            log.exception("proposing for open incidents without proposals failed")
        self._scheduler = build_scheduler(self.context, blocking=False, guard=self.lock.holds)
        self._scheduler.start()

    def _step_down(self, why: str | None) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if why is not None:
            log.error("stepping down: %s; no job starts here until this process leads again", why)
        if scheduler is not None:
            scheduler.shutdown(wait=True)  # a running job finishes; no new one starts
        if why is None:
            log.info("scheduler stopped; letting go of the lead")


def run_daemon(context: ServiceContext) -> None:
    """Block leading (or standing by) until SIGTERM or SIGINT, then let running jobs finish."""
    runner = LeadingScheduler(context)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; finishing running jobs and stopping", signal.Signals(signum).name)
        runner.request_stop()  # the loop in the main thread sees it and shuts down

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "daemon started: ingest every %s for %d target(s)",
        format_duration(context.settings.ingest.interval),
        len(context.targets),
    )
    runner.run()  # returns once stopped
    log.info("daemon stopped")
