"""The composition root's context: settings, database, source, clock, loaded models and
playbooks, and the hooks started and stopped with the app. The API sees it through
`api.context.AppContext`; the daemon's jobs take it whole."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.settings import Settings, TargetSettings
from ingest.domain import Source
from models.detector import DetectorConfig, detector_config
from models.service import ServingModels
from remediation.playbooks import Playbook, load_playbooks


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
