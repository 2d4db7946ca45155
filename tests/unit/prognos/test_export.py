"""The cycle's export stage: the samples pushed by remote write are the prediction samples
/metrics shows, and a receiver that fails never fails the cycle."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import cramjam
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.metrics import build_registry, render
from core.clock import FixedClock
from core.settings import Settings
from ingest import prompb
from prognos import export, jobs
from prognos.context import ServiceContext
from tests.unit.fakes import FakeSeries, FakeSource, make_target

NOW = datetime(2026, 1, 5, 12, 0, 17, tzinfo=UTC)
URL = "http://receiver.example.com:9090/api/v1/write"


def forecasting_context(
    engine: Engine, sessions: sessionmaker[Session], url: str | None
) -> ServiceContext:
    source = FakeSource(
        [
            FakeSeries("mem", {"service": "cart", "pod": "cart-1"}),
            FakeSeries("mem", {"service": "web", "pod": "web-1"}, value=lambda ts: 0.5),
        ]
    )
    target = make_target("mem", lookback=timedelta(hours=2))
    context = ServiceContext(
        settings=Settings(export={"remote_write": {"url": url, "timeout": "2s"}}),
        engine=engine,
        sessions=sessions,
        source=source,
        targets=[target],
        clock=FixedClock(NOW),
    )
    jobs.ingest_cycle(context)
    jobs.forecast_cycle(context)
    return context


def scraped(context: ServiceContext) -> set[tuple[str, frozenset[tuple[str, str]], float]]:
    text = render(build_registry(context, "test")).decode()
    return {
        (s.name, frozenset(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in export.EXPORTED
    }


class Receiver:
    def __init__(self, status: int | BaseException) -> None:
        self.status = status
        self.requests: list[Any] = []

    def __call__(self, url: str, *, data: bytes, **kwargs: Any) -> requests.Response:
        if isinstance(self.status, BaseException):
            raise self.status
        self.requests.append(
            prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(data)))
        )
        response = requests.Response()
        response.status_code = self.status
        response._content = b""
        return response


def test_the_pushed_samples_are_the_predictions_metrics_shows(
    engine: Engine, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    context = forecasting_context(engine, sessions, URL)
    receiver = Receiver(204)
    monkeypatch.setattr(requests.Session, "post", lambda self, url, **kw: receiver(url, **kw))
    result = export.export_predictions(context)
    assert result is not None and result.error is None
    pushed = {
        (
            labels.pop("__name__"),
            frozenset(labels.items()),
            ts.samples[0].value,
        )
        for request in receiver.requests
        for ts in request.timeseries
        for labels in [{label.name: label.value for label in ts.labels}]
    }
    stamps = {ts.samples[0].timestamp for r in receiver.requests for ts in r.timeseries}
    expected = scraped(context)
    assert {name for name, _, _ in expected} >= {"prognos_forecast", "prognos_anomaly_score"}
    assert pushed == expected and result.sent == len(expected)
    assert stamps == {int(NOW.timestamp()) * 1000}
    assert all(math.isfinite(value) for _, _, value in pushed)


def test_nothing_is_pushed_without_a_url(engine: Engine, sessions: sessionmaker[Session]) -> None:
    context = forecasting_context(engine, sessions, None)
    assert export.export_predictions(context) is None


def test_a_receiver_that_is_down_never_fails_the_cycle(
    engine: Engine,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = forecasting_context(engine, sessions, URL)
    down = Receiver(requests.ConnectionError("connection refused"))
    monkeypatch.setattr(requests.Session, "post", lambda self, url, **kw: down(url, **kw))
    with caplog.at_level(logging.WARNING):
        jobs.cycle(context)
    assert not [r for r in caplog.records if r.getMessage().startswith("cycle stage")]
    assert "sent first next cycle" in caplog.text
    # Back up: what it missed goes first, then this cycle's samples.
    up = Receiver(204)
    monkeypatch.setattr(requests.Session, "post", lambda self, url, **kw: up(url, **kw))
    result = export.export_predictions(context)
    assert result is not None and result.pending == 0 and result.sent == 2 * len(scraped(context))
    for stop in context.on_stop:
        stop()
