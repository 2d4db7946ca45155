"""Scheduler wiring (APScheduler 3.x): jobs run one at a time each, late runs coalesce."""

from __future__ import annotations

import logging
import signal
from datetime import timedelta
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from prognos import jobs
from prognos.context import ServiceContext

log = logging.getLogger(__name__)


def build_scheduler(context: ServiceContext, *, blocking: bool) -> BaseScheduler:
    scheduler: BaseScheduler = (
        BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
    )
    interval = context.settings.ingest.interval
    common = {"max_instances": 1, "coalesce": True, "replace_existing": True}
    scheduler.add_job(
        jobs.cycle,
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
        _retrain,
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
        jobs.prune_samples,
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


def _retrain(context: ServiceContext) -> None:
    try:
        jobs.retrain(context)
    except Exception:  # a failed training leaves the active model serving
        log.exception("retraining failed; the active model keeps serving")


def run_daemon(context: ServiceContext) -> None:
    """Block running the scheduler until SIGTERM or SIGINT, then let running jobs finish."""
    scheduler = build_scheduler(context, blocking=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; finishing running jobs and stopping", signal.Signals(signum).name)
        # Runs in the main thread while the jobs run in the pool: waiting here lets them finish.
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "daemon started: ingest every %s for %d target(s)",
        context.settings.ingest.interval,
        len(context.targets),
    )
    scheduler.start()  # returns once shut down
    log.info("daemon stopped")
