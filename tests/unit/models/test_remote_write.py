"""The remote-write exporter against a fake receiver: the WriteRequest, batching, and what a
failing receiver does to the samples (kept and resent, or dropped when refused)."""

from __future__ import annotations

import logging
from typing import Any

import cramjam
import pytest
import requests

from core.settings import RemoteWriteSettings
from ingest import prompb
from models.remote_write import Batch, RemoteWriter, encode_write_request

URL = "http://receiver.example.com:9090/api/v1/write"
TOKEN = "tok_7c1e3a5b9d2f4608"
NOW_MS = 1_717_372_800_000


class Receiver:
    """Stands in for `session.post`: scripted statuses (or exceptions), decoded requests."""

    def __init__(self, *outcomes: int | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, url: str, *, data: bytes, headers: dict[str, str], timeout: float) -> Any:
        assert url == URL
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        self.headers.append(headers)
        self.requests.append(
            prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(data)))
        )
        response = requests.Response()
        response.status_code = outcome
        response._content = f"upstream says no to Bearer {TOKEN}".encode()
        return response

    def values(self) -> list[float]:
        return [s.value for r in self.requests for ts in r.timeseries for s in ts.samples]


def writer(receiver: Receiver, **overrides: Any) -> RemoteWriter:
    options: dict[str, Any] = {"url": URL, "auth": {"type": "bearer", "token": TOKEN}}
    options.update(overrides)
    out = RemoteWriter(RemoteWriteSettings(**options))
    out._session.post = receiver  # type: ignore[method-assign]
    return out


def samples(count: int, start: float = 0.0) -> list[tuple[str, dict[str, str], float]]:
    return [
        ("prognos_anomaly_score", {"target": "cpu", "service": f"s{i}"}, start + i)
        for i in range(count)
    ]


def test_a_write_request_holds_each_sample_with_sorted_labels_and_the_cycle_time() -> None:
    body = encode_write_request(
        Batch(
            NOW_MS,
            [
                (
                    "prognos_forecast",
                    {
                        "target": "mem",
                        "service": "cart",
                        "prognos_quantile": "0.9",
                        "horizon": "5m",
                    },
                    0.93,
                ),
                ("prognos_anomaly", {"target": "mem", "service": "cart"}, 0.0),
            ],
        )
    )
    request = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    first, second = request.timeseries
    assert [(label.name, label.value) for label in first.labels] == [
        ("__name__", "prognos_forecast"),
        ("horizon", "5m"),
        ("prognos_quantile", "0.9"),
        ("service", "cart"),
        ("target", "mem"),
    ]
    assert [(s.timestamp, s.value) for s in first.samples] == [(NOW_MS, 0.93)]
    assert [(s.timestamp, s.value) for s in second.samples] == [(NOW_MS, 0.0)]


def test_samples_go_out_in_batches_with_the_remote_write_headers() -> None:
    receiver = Receiver(204)
    result = writer(receiver, max_samples_per_request=4).push(samples(10), timestamp_ms=NOW_MS)
    assert (result.sent, result.requests, result.pending, result.error) == (10, 3, 0, None)
    assert [len(r.timeseries) for r in receiver.requests] == [4, 4, 2]
    assert receiver.values() == [float(i) for i in range(10)]
    headers = receiver.headers[0]
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["Content-Encoding"] == "snappy"


@pytest.mark.parametrize(
    "failure",
    [503, 429, requests.ConnectionError("refused"), requests.ReadTimeout("slow")],
    ids=["503", "429", "connection refused", "timeout"],
)
def test_a_receiver_that_is_down_gets_the_samples_first_next_cycle(
    failure: int | BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(failure)
    out = writer(receiver, max_samples_per_request=3)
    with caplog.at_level(logging.WARNING, logger="models.remote_write"):
        first = out.push(samples(5), timestamp_ms=NOW_MS)
    assert (first.sent, first.pending, first.dropped) == (0, 5, 0)
    assert "5 samples are kept and sent first next cycle" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in (first.error or "")

    receiver.outcomes = [204]
    second = out.push(samples(2, start=100.0), timestamp_ms=NOW_MS + 60_000)
    assert (second.sent, second.pending, second.error) == (7, 0, None)
    # The old batches first, with their own time; then the new ones.
    stamps = [ts.samples[0].timestamp for r in receiver.requests for ts in r.timeseries]
    assert stamps[-7:] == [NOW_MS] * 5 + [NOW_MS + 60_000] * 2
    assert receiver.values()[-7:] == [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, 101.0]


def test_a_refused_batch_is_dropped_and_the_rest_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(400, 204)
    out = writer(receiver, max_samples_per_request=3)
    with caplog.at_level(logging.ERROR, logger="models.remote_write"):
        result = out.push(samples(5), timestamp_ms=NOW_MS)
    assert (result.sent, result.dropped, result.pending) == (2, 3, 0)
    assert "refused a batch (HTTP 400" in caplog.text and "3 samples are dropped" in caplog.text
    assert TOKEN not in caplog.text


def test_pending_samples_are_bounded_oldest_dropped_first() -> None:
    receiver = Receiver(503)
    out = writer(receiver, max_samples_per_request=2, max_pending_samples=5)
    out.push(samples(4), timestamp_ms=NOW_MS)
    result = out.push(samples(4, start=10.0), timestamp_ms=NOW_MS + 60_000)
    assert (result.pending, result.dropped) == (4, 4)
    receiver.outcomes = [204]
    out.push([], timestamp_ms=NOW_MS + 120_000)
    assert receiver.values()[-4:] == [10.0, 11.0, 12.0, 13.0]


def test_a_url_is_required() -> None:
    with pytest.raises(ValueError, match=r"export\.remote_write\.url"):
        RemoteWriter(RemoteWriteSettings())
