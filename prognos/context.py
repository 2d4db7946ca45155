"""The composition root's context: settings, database, source, clock, loaded models and
playbooks, and the hooks started and stopped with the app. The API sees it through
`api.context.AppContext`; the daemon's jobs take it whole."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.settings import Settings, TargetSettings
from ingest.domain import Source
from ingest.prometheus import PrometheusSource
from models.detector import DetectorConfig, detector_config
from models.rules import service as rules_service
from models.rules.domain import AlertRule, RuleSet
from models.rules.prometheus import read_rules
from models.service import ServingModels
from prognos.engine import CycleEngine
from remediation.playbooks import Playbook, load_playbooks

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    source: Source
    targets: list[TargetSettings]
    clock: Clock
    models: ServingModels = field(
        default_factory=lambda: ServingModels(cold_start="median_band", cold_config={})
    )
    # Started with the app and stopped with it (e.g. the scheduler in `prognos run`).
    on_start: list[Callable[[], None]] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Remediation: loaded playbooks by name (None: read settings.remediation.playbooks_dir on
    # first use) and the hook an approval calls after commit to start the executor at once.
    playbooks: dict[str, Playbook] | None = None
    wake_executor: Callable[[], None] = field(default=lambda: None)
    #: what the start's integrity check found wrong with the database (None: nothing)
    integrity: str | None = None
    #: where the forecast/score stage runs (prognos.engine; built at its first cycle)
    cycle_engine: CycleEngine | None = None
    #: Prometheus' alerting rules as last read (None: rules are off or not read yet), and
    #: what reads them (None: `/api/v1/rules` of a Prometheus source)
    rules: RuleSet | None = None
    rule_reader: Callable[[], list[AlertRule]] | None = None
    _rules_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def detector_for(self, target: TargetSettings) -> DetectorConfig:
        """The target's detector: the settings saved with the model serving its step, then
        models.detector, then the target's own settings, each over the one before."""
        saved = self.models.detector_settings(target.step_seconds)
        return detector_config({**saved, **self.settings.models.detector}, target.detector)

    def loaded_playbooks(self) -> dict[str, Playbook]:
        """The playbooks, read once from settings.remediation.playbooks_dir if not given."""
        if self.playbooks is None:
            self.playbooks = load_playbooks(self.settings.remediation.playbooks_dir)
        return self.playbooks

    def refresh_rules(self) -> RuleSet | None:
        """Read the alerting rules again once `rules.refresh` has passed since the last try,
        and make the supported ones targets (the next cycle ingests and forecasts them). A
        failed read keeps the last known rules and logs why."""
        settings = self.settings.rules
        reader = self.rule_reader
        if reader is None and isinstance(self.source, PrometheusSource):
            source = self.source
            reader = lambda: read_rules(source)  # noqa: E731
        if not settings.enabled or reader is None:
            return None
        with self._rules_lock:
            now = self.clock.now()
            before = self.rules
            if before is not None and before.tried_at and now - before.tried_at < settings.refresh:
                return before
            old = {t.name for t in before.targets} if before else set()
            configured = [t for t in self.targets if t.name not in old]
            self.rules = rules_service.refresh(
                before,
                read=reader,
                settings=settings,
                taken=[t.name for t in configured],
                now=now,
            )
            if self.rules.error:
                log.error(
                    "alerting rules: %s; keeping the %d rule(s) read at %s",
                    self.rules.error,
                    len(self.rules.rules),
                    self.rules.read_at or "(never)",
                )
            # A new list, never changed in place: a cycle going through the old one finishes it.
            self.targets = configured + self.rules.targets
            return self.rules
