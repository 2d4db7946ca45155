"""Engines of the forecast/score stage: `local` runs one shard worker owning every shard in the
daemon's process; `ray` runs shard workers as Ray actors (prognos.engine.ray_engine, imported
only when configured), their shard assignment kept in the database."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from core.errors import ConfigError
from core.settings import RaySettings, Settings, TargetSettings
from models.detector import DetectorConfig
from models.evaluation.backtest import Mapper, local_mapper
from models.forecasters.parallel import Launcher
from models.service import CycleSummary
from prognos.engine.worker import ShardWorker

if TYPE_CHECKING:
    from prognos.context import ServiceContext


#: The environment of a Ray cluster this process starts itself (`ray.address: local`): no usage
#: statistics sent, and every server on loopback (Ray otherwise binds the machine's external
#: address). Ray reads it when it is first imported.
LOOPBACK_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class CycleEngine(Protocol):
    def forecast(
        self,
        target: TargetSettings,
        *,
        detector: DetectorConfig,
        now: datetime,
        max_catchup: int,
    ) -> CycleSummary: ...

    def close(self) -> None: ...


@dataclass
class LocalEngine:
    """Today's single process: one worker owning every shard."""

    worker: ShardWorker

    def forecast(
        self,
        target: TargetSettings,
        *,
        detector: DetectorConfig,
        now: datetime,
        max_catchup: int,
    ) -> CycleSummary:
        return self.worker.run(target, detector=detector, now=now, max_catchup=max_catchup)

    def close(self) -> None:
        pass


def build_engine(context: ServiceContext) -> CycleEngine:
    """The engine the settings name; `ray` is imported only then (the `ray` extra)."""
    settings = context.settings
    if settings.engine == "ray":
        _prepare_ray(settings.ray)
        from prognos.engine.ray_engine import RayEngine

        return RayEngine.start(settings=settings, sessions=context.sessions, models=context.models)
    worker = ShardWorker(context.sessions, context.models, settings.shards.batch_series)
    return LocalEngine(worker)


def training_launcher(settings: Settings) -> Launcher | None:
    """Who starts ranks 1..N-1 of `models.train_workers` > 1: Ray actors on `engine: ray`
    (prognos.engine.ray_train, Ray imported only then), else None: spawn on this host."""
    if settings.engine != "ray" or settings.models.train_workers <= 1:
        return None
    _prepare_ray(settings.ray)
    from prognos.engine.ray_train import RayLauncher

    return RayLauncher(settings.ray)


def batch_mapper(engine: str, ray: RaySettings) -> Mapper:
    """How bulk work (the NAB backtest's files) is spread: a local process pool, or on
    `engine: ray` one Ray task per job on the cluster (prognos.engine.ray_tasks, Ray imported
    only then)."""
    if engine != "ray":
        return local_mapper
    _prepare_ray(ray)
    from prognos.engine.ray_tasks import ray_mapper

    return ray_mapper(ray)


def _prepare_ray(ray: RaySettings) -> None:
    """Before Ray is first imported: it is installed, and a cluster this process starts stays
    on loopback."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("engine ray needs the `ray` extra: scripts/setup.sh ray (docs/scale.md)")
    if ray.address == "local":
        for name, value in LOOPBACK_RAY_ENV.items():
            os.environ.setdefault(name, value)
