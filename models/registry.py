"""The model registry: versions per family (one family per step size), which one is active,
promotion only of artifacts that load, rollback to the newest earlier version that still loads;
and where each version's artifact is kept (a folder, or the database for several hosts)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.errors import ErrorKind, NotFoundError, PrognosError
from models.artifacts import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    ArtifactMetadata,
    artifact_files,
    load_files,
    load_model,
    save_model,
)
from models.errors import ModelArtifactError
from models.forecasters.base import Forecaster
from models.tables import ModelArtifactRow, ModelRow

log = logging.getLogger(__name__)


class RegistryError(PrognosError):
    code = "model_registry_conflict"
    kind = ErrorKind.CONFLICT


def family_for(step: int) -> str:
    return f"step{step}s"


#: How a version kept in the database is named in `models.path`: database:<family>/v<version>
IN_DATABASE = "database:"


@dataclass(frozen=True, slots=True)
class ArtifactStore:
    """Where new versions' artifacts are written: `directory` (a folder per version under
    `directory`: shared between hosts only if that folder is) or `database` (the
    model_artifacts table, which every process on the database reads). Either way a version is
    loaded from where it was written (`load_artifact`), so changing the store never strands
    the versions already trained."""

    kind: Literal["directory", "database"]
    directory: Path

    def save(
        self,
        db_session: Session,
        forecaster: Forecaster,
        *,
        family: str,
        version: int,
        metadata: ArtifactMetadata,
    ) -> str:
        """Keep the artifact; returns its location for `register` (committed by the caller)."""
        if self.kind == "directory":
            folder = save_model(
                forecaster, self.directory / family / f"v{version}", metadata=metadata
            )
            return str(folder)
        files = artifact_files(forecaster, metadata=metadata)
        db_session.merge(  # a version rolled back before (a killed training) is written anew
            ModelArtifactRow(
                family=family,
                version=version,
                config_json=files[CONFIG_FILE],
                weights_pt=files.get(WEIGHTS_FILE),
                metadata_json=files[METADATA_FILE],
                created_at=metadata.created_at,
            )
        )
        db_session.flush()
        return f"{IN_DATABASE}{family}/v{version}"


def load_artifact(db_session: Session, location: str) -> tuple[Forecaster, ArtifactMetadata]:
    """A version's forecaster and metadata from its `models.path`: a folder, or a row of
    model_artifacts. Raises ModelArtifactError naming the artifact and the problem (missing,
    corrupt, failing its checksums) so that the caller keeps serving what it had."""
    if not location.startswith(IN_DATABASE):
        return load_model(Path(location))
    family, _, version = location.removeprefix(IN_DATABASE).rpartition("/v")
    row = (
        db_session.get(ModelArtifactRow, (family, int(version)))
        if family and version.isdigit()
        else None
    )
    if row is None:
        raise ModelArtifactError(
            f"model artifact {location}: not in the database (table model_artifacts); "
            "train a new version (`prognos train`) or roll back (`prognos models rollback`)",
            detail={"artifact": location},
        )
    files = {CONFIG_FILE: row.config_json, METADATA_FILE: row.metadata_json}
    if row.weights_pt is not None:
        files[WEIGHTS_FILE] = row.weights_pt
    return load_files(files, where=location)


def register(
    db_session: Session,
    *,
    family: str,
    forecaster: str,
    step: int,
    path: Path | str,
    metadata: ArtifactMetadata,
    version: int,
    now: datetime,
) -> ModelRow:
    row = ModelRow(
        family=family,
        version=version,
        forecaster=forecaster,
        step=step,
        path=str(path),
        status="candidate",
        created_at=now,
        train_start=metadata.train_start,
        train_end=metadata.train_end,
        series_count=metadata.series_count,
        # JSON has no NaN (PostgreSQL refuses it): an undefined metric is stored as null.
        metrics={k: (v if math.isfinite(v) else None) for k, v in metadata.metrics.items()},
    )
    db_session.add(row)
    db_session.flush()
    return row


def next_version(db_session: Session, family: str) -> int:
    newest = db_session.scalar(
        sa.select(sa.func.max(ModelRow.version)).where(ModelRow.family == family)
    )
    return int(newest or 0) + 1


def active_model(db_session: Session, family: str) -> ModelRow | None:
    return db_session.scalar(
        sa.select(ModelRow).where(ModelRow.family == family, ModelRow.status == "active")
    )


def list_models(db_session: Session, family: str | None = None) -> list[ModelRow]:
    query = sa.select(ModelRow).order_by(ModelRow.family, ModelRow.version.desc())
    if family is not None:
        query = query.where(ModelRow.family == family)
    return list(db_session.scalars(query))


def get_model(db_session: Session, model_id: int) -> ModelRow:
    row = db_session.get(ModelRow, model_id)
    if row is None:
        raise NotFoundError(f"no model with id {model_id} (see `prognos models list`)")
    return row


def promote(
    db_session: Session, *, model_id: int, now: datetime, note: str | None = None
) -> ModelRow:
    """Make a version active; its artifact must load, else it is refused and nothing changes."""
    row = get_model(db_session, model_id)
    if row.status == "active":
        return row
    load_artifact(db_session, row.path)  # raises ModelArtifactError: the current one stays
    current = active_model(db_session, row.family)
    if current is not None:
        current.status = "retired"
        db_session.flush()  # one active row per family at any time
    row.status = "active"
    row.activated_at = now
    row.note = note or row.note
    return row


def reject(db_session: Session, *, model_id: int, reason: str) -> ModelRow:
    row = get_model(db_session, model_id)
    if row.status == "active":
        raise RegistryError(f"model {row.family} v{row.version} is active; roll back instead")
    row.status = "rejected"
    row.note = reason
    return row


def rollback(db_session: Session, *, family: str, now: datetime) -> ModelRow:
    """Back to the newest earlier version whose artifact still loads."""
    current = active_model(db_session, family)
    if current is None:
        raise RegistryError(f"family {family} has no active model to roll back")
    earlier = db_session.scalars(
        sa.select(ModelRow)
        .where(
            ModelRow.family == family,
            ModelRow.status == "retired",
            ModelRow.version < current.version,
        )
        .order_by(ModelRow.version.desc())
    )
    for row in earlier:
        try:
            load_artifact(db_session, row.path)
        except ModelArtifactError as exc:
            log.warning("cannot roll back to %s v%d: %s", family, row.version, exc.message)
            continue
        current.status = "rejected"
        current.note = f"rolled back at {now:%Y-%m-%d %H:%M} UTC"
        db_session.flush()
        row.status = "active"
        row.activated_at = now
        return row
    raise RegistryError(f"family {family} has no earlier version that loads")
