"""The composition root: settings in, a working context out, without any network."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from core.settings import Settings
from ingest.prometheus import PrometheusSource
from ingest.replay import ReplaySource
from prognos.composition import build_context, build_source
from prognos.daemon import build_scheduler


def test_defaults_build_a_replay_of_the_sample_on_a_migrated_sqlite(tmp_path: Path) -> None:
    context = build_context(Settings(data_dir=tmp_path / "state"))
    try:
        assert isinstance(context.source, ReplaySource)
        assert context.source.loop is True
        assert (tmp_path / "state" / "sample" / "series.yaml").is_file()
        assert [t.name for t in context.targets] == ["cpu", "latency_p99", "memory", "requests"]
        assert all(t.step_seconds == 60 for t in context.targets)
        assert str(context.engine.url) == f"sqlite:///{tmp_path / 'state' / 'prognos.db'}"
        tables = set(sa.inspect(context.engine).get_table_names())
        assert {"series", "samples", "api_tokens"} <= tables
        context.source.check()
    finally:
        context.engine.dispose()


def test_configured_targets_win_over_the_replay_folders_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, targets=[{"name": "cpu", "query": "x", "step": "2m"}])
    source, targets = build_source(settings)
    assert isinstance(source, ReplaySource)
    assert [(t.name, t.step_seconds) for t in targets] == [("cpu", 120)]


def test_prometheus_settings_build_a_prometheus_source(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        prometheus={"url": "http://127.0.0.1:9", "max_points_per_chunk": 500},
        targets=[{"name": "up", "query": "up"}],
    )
    source, targets = build_source(settings)
    assert isinstance(source, PrometheusSource)
    assert source.max_points_per_request == 500
    assert [t.name for t in targets] == ["up"]
    assert not (tmp_path / "sample").exists()  # no sample data written for Prometheus


def test_the_scheduler_runs_each_job_without_overlap(tmp_path: Path) -> None:
    context = build_context(
        Settings(data_dir=tmp_path, ingest={"interval": "2m"}, models={"retrain_interval": "6h"})
    )
    try:
        scheduler = build_scheduler(context, blocking=False)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"cycle", "retrain", "prune"}
        assert jobs["cycle"].trigger.interval.total_seconds() == 120
        assert jobs["retrain"].trigger.interval.total_seconds() == 6 * 3600
        assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())
    finally:
        context.engine.dispose()


def test_each_target_gets_its_detector_and_a_bad_one_is_refused_naming_it(tmp_path: Path) -> None:
    import pytest

    from core.errors import ConfigError

    settings = Settings(
        data_dir=tmp_path,
        models={"detector": {"threshold": 4.0}},
        targets=[
            {"name": "cpu", "query": "x"},
            {"name": "latency", "query": "y", "detector": {"novelty_rows": 12}},
        ],
    )
    context = build_context(settings)
    try:
        cpu, latency = (context.detector_for(t) for t in context.targets)
        assert (cpu.threshold, cpu.novelty_rows) == (4.0, 6)
        assert (latency.threshold, latency.novelty_rows) == (4.0, 12)
    finally:
        context.engine.dispose()
    bad = settings.model_copy(
        update={
            "targets": [settings.targets[0].model_copy(update={"detector": {"novelty_rows": -1}})]
        }
    )
    with pytest.raises(ConfigError, match=r"targets\.cpu: .*novelty_rows"):
        build_context(bad)
