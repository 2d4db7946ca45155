"""Model artifacts kept in the database (`models.artifact_store: database`), on both databases:
a version trained by one process is served by another with no files of its own, with the same
checksums on load as a folder, and a damaged or missing one leaves what served serving."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from models import registry
from models.errors import ModelArtifactError
from models.service import ServingModels, train_model
from models.tables import ModelArtifactRow
from tests.unit.models.test_service import STEP, TINY_LSTM, histories

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def train(session: Session, store: registry.ArtifactStore, forecaster: str = "lstm") -> None:
    config = TINY_LSTM if forecaster == "lstm" else {"context_length": 30, "horizon": 10}
    train_model(
        session,
        histories=histories(),
        forecaster_name=forecaster,
        forecaster_config=config,
        holdout=0.2,
        store=store,
        targets=["cpu"],
        now=NOW,
    )
    session.commit()


def test_a_version_kept_in_the_database_is_served_without_any_file(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = registry.ArtifactStore("database", tmp_path / "models")
    with sessions() as session:
        train(session, store)
        row = registry.active_model(session, "step60s")
        assert row is not None and row.path == "database:step60s/v1"
    assert not (tmp_path / "models").exists()  # nothing on this host's disk

    elsewhere = ServingModels(cold_start="median_band", cold_config={})
    with sessions() as session:
        assert elsewhere.verify(session) == {}
        served = elsewhere.for_step(session, STEP)
    assert served.name == "lstm" and served.fitted


def test_a_damaged_or_missing_database_artifact_is_refused_and_the_previous_one_serves(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = registry.ArtifactStore("database", tmp_path)
    models = ServingModels(cold_start="median_band", cold_config={})
    with sessions() as session:
        train(session, store)
        serving = models.for_step(session, STEP)
        weights = session.get(ModelArtifactRow, ("step60s", 1))
        assert weights is not None and weights.weights_pt is not None
        # A v2 whose weights changed after saving: refused on promotion, v1 keeps serving.
        session.add(
            ModelArtifactRow(
                family="step60s",
                version=2,
                config_json=weights.config_json,
                weights_pt=weights.weights_pt[:-10],
                metadata_json=weights.metadata_json,
                created_at=NOW,
            )
        )
        v1 = registry.active_model(session, "step60s")
        assert v1 is not None
        v2 = registry.register(
            session,
            family="step60s",
            forecaster="lstm",
            step=STEP,
            path="database:step60s/v2",
            metadata=registry.load_artifact(session, v1.path)[1],
            version=2,
            now=NOW,
        )
        with pytest.raises(ModelArtifactError, match=r"database:step60s/v2: weights\.pt does not"):
            registry.promote(session, model_id=v2.id, now=NOW)
        session.commit()
        assert models.for_step(session, STEP) is serving

        # v1's row lost: a process starting now says so and serves the cold band.
        session.execute(sa.delete(ModelArtifactRow))
        session.commit()
        fresh = ServingModels(cold_start="median_band", cold_config={})
        problems = fresh.verify(session)
        assert "not in the database" in problems["step60s"]
        assert fresh.for_step(session, STEP).name == "median_band"


def test_a_folder_version_still_loads_after_switching_to_the_database_store(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as session:
        train(session, registry.ArtifactStore("directory", tmp_path), "median_band")
        train(session, registry.ArtifactStore("database", tmp_path), "median_band")
        paths = {r.version: r.path for r in registry.list_models(session)}
        assert paths == {1: str(tmp_path / "step60s" / "v1"), 2: "database:step60s/v2"}
        for path in paths.values():
            assert registry.load_artifact(session, path)[0].name == "median_band"
        with pytest.raises(ModelArtifactError, match="not in the database"):
            registry.load_artifact(session, "database:step60s/vX")


@pytest.mark.parametrize(
    ("url", "setting", "expected"),
    [
        (None, "auto", "directory"),
        ("postgresql://db.example/prognos", "auto", "database"),
        ("postgresql://db.example/prognos", "directory", "directory"),
        (None, "database", "database"),
    ],
)
def test_auto_keeps_artifacts_in_postgresql_and_beside_sqlite(
    url: str | None, setting: str, expected: str
) -> None:
    settings = Settings(database={"url": url}, models={"artifact_store": setting})
    assert settings.effective_artifact_store == expected
