"""What the app needs from the composition root, declared here so that `api/` never imports the
entry points: `prognos.context.ServiceContext` provides it, a test may provide a smaller one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.settings import Settings, TargetSettings
from ingest.domain import Source
from models.rules.domain import RuleSet
from models.service import ServingModels
from remediation.playbooks import Playbook


class AppContext(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def sessions(self) -> sessionmaker[Session]: ...
    @property
    def source(self) -> Source: ...
    @property
    def targets(self) -> list[TargetSettings]: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def models(self) -> ServingModels: ...
    @property
    def integrity(self) -> str | None:
        """What the start's integrity check found wrong with the database (None: nothing)."""
        ...

    @property
    def on_start(self) -> list[Callable[[], None]]:
        """Started with the app (e.g. the executor, the scheduler in `prognos run`)."""
        ...

    @property
    def on_stop(self) -> list[Callable[[], None]]: ...
    @property
    def wake_executor(self) -> Callable[[], None]:
        """Called by an approval after its commit, to start the approved run at once."""
        ...

    def loaded_playbooks(self) -> dict[str, Playbook]: ...
    def refresh_rules(self) -> RuleSet | None:
        """Prometheus' alerting rules, read again when `rules.refresh` has passed (None: off)."""
        ...
