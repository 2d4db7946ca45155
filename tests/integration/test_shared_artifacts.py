"""`serve` and `daemon` on different hosts: a model trained by one process (its own data_dir)
is served by another whose model folder is empty, through the database (PostgreSQL)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from models import registry
from models.registry import IN_DATABASE
from prognos import jobs
from prognos.composition import build_context
from tests.support.servers import PostgresServer

pytestmark = pytest.mark.timeout(120)

TINY_LSTM = {
    "context_length": 30,
    "horizon": 10,
    "hidden_size": 8,
    "max_epochs": 1,
    "windows_per_epoch": 128,
    "batch_size": 64,
}


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"artifacts_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


def host(tmp_path: Path, name: str, db_url: str, train_workers: int = 1) -> Settings:
    """One host's settings: its own data_dir (sample data, cache, model folder), one database."""
    models: dict[str, Any] = {
        "forecaster": "lstm",
        "config": TINY_LSTM,
        "history": "1d",
        "train_workers": train_workers,
    }
    return Settings(data_dir=tmp_path / name, database={"url": db_url}, models=models)


@pytest.mark.parametrize("train_workers", [1, 2])
def test_a_model_trained_on_one_host_is_served_on_another(
    tmp_path: Path, pg_url: str, train_workers: int
) -> None:
    trainer = build_context(host(tmp_path, "daemon-host", pg_url, train_workers))
    try:
        outcomes = jobs.retrain(trainer)
    finally:
        trainer.engine.dispose()
    assert outcomes and all(o.promoted for o in outcomes)
    assert not (tmp_path / "daemon-host" / "models").exists()  # kept in the database only

    settings = host(tmp_path, "serve-host", pg_url)
    server = build_context(settings)
    try:
        with server.sessions() as session:
            assert server.models.verify(session) == {}
            active = {
                row.family: row.path
                for row in registry.list_models(session)
                if row.status == "active"
            }
        assert active and all(path.startswith(IN_DATABASE) for path in active.values())
        jobs.ingest_cycle(server)
        summaries = [s for s in jobs.forecast_cycle(server) if s.status == "ok"]
        assert summaries and all(s.model.startswith("lstm") for s in summaries)
        assert not settings.model_dir.exists()
    finally:
        server.engine.dispose()
