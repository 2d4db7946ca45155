"""The Prometheus source against a fake HTTP session: parsing, typed errors, no leaked secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from core.settings import PrometheusSettings
from ingest.domain import SeriesKey
from ingest.errors import (
    IngestError,
    QueryError,
    SourceAuthError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from ingest.prometheus import PrometheusSource
from tests.unit.fakes import make_target

URL = "http://prom.example.com:9090"
TOKEN = "tok_9f2c4e6a8b0d1357"
TARGET = make_target("checkout_cpu", 'sum by (service) (rate(cpu_seconds_total{job="x"}[5m]))')


class FakeResponse:
    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self.content = body if isinstance(body, bytes) else json.dumps(body).encode()


class Recorder:
    """Stands in for `session.get`: records each call and answers with a scripted outcome."""

    def __init__(self, outcome: FakeResponse | BaseException) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((url, kwargs))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def make_source(**overrides: Any) -> PrometheusSource:
    options: dict[str, Any] = {
        "url": URL,
        "auth": {"type": "bearer", "token": TOKEN},
        "retries": 0,
    }
    options.update(overrides)
    return PrometheusSource(PrometheusSettings(**options))


@pytest.fixture
def source() -> PrometheusSource:
    return make_source()


def answer(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource, outcome: FakeResponse | Exception
) -> Recorder:
    recorder = Recorder(outcome)
    monkeypatch.setattr(source._session, "get", recorder)
    return recorder


def matrix(*items: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": list(items)}}


def test_a_matrix_becomes_series_with_their_label_sets(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    recorder = answer(
        monkeypatch,
        source,
        FakeResponse(
            200,
            matrix(
                {
                    "metric": {"service": "checkout", "pod": "checkout-0"},
                    "values": [[1_700_000_040, "0.25"], [1_700_000_100, "1e3"]],
                },
                {
                    "metric": {"__name__": "up", "service": "cart"},
                    "values": [[1_700_000_040, "1"]],
                },
            ),
        ),
    )
    result = source.query_range(TARGET, 1_700_000_040, 1_700_000_100, 60)
    by_key = {s.key: s for s in result.series}
    checkout = SeriesKey.of("checkout_cpu", {"pod": "checkout-0", "service": "checkout"})
    cart = SeriesKey.of("checkout_cpu", {"__name__": "up", "service": "cart"})
    assert set(by_key) == {checkout, cart}
    assert by_key[checkout].timestamps.tolist() == [1_700_000_040, 1_700_000_100]
    assert by_key[checkout].values.tolist() == [0.25, 1000.0]
    assert by_key[checkout].timestamps.dtype.kind == "i"
    assert result.points == 3
    # The request: the target's query over the window, with the right step.
    [(url, kwargs)] = recorder.calls
    assert url == f"{URL}/api/v1/query_range"
    assert kwargs["params"] == {
        "query": TARGET.query,
        "start": 1_700_000_040,
        "end": 1_700_000_100,
        "step": 60,
    }
    assert kwargs["timeout"] == 30


def test_non_finite_values_are_gaps_and_counted(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(
        monkeypatch,
        source,
        FakeResponse(
            200,
            matrix(
                {
                    "metric": {"service": "a"},
                    "values": [[60, "1"], [120, "NaN"], [180, "+Inf"], [240, "-Inf"], [300, "5"]],
                },
                {"metric": {"service": "b"}, "values": [[60, "2"]]},
            ),
        ),
    )
    result = source.query_range(TARGET, 60, 300, 60)
    a = next(s for s in result.series if s.key.label_dict == {"service": "a"})
    assert a.timestamps.tolist() == [60, 300]
    assert a.values.tolist() == [1.0, 5.0]
    assert a.dropped_non_finite == 3
    assert result.dropped_non_finite == 3
    assert result.points == 3


def test_an_empty_result_is_no_series(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(monkeypatch, source, FakeResponse(200, matrix()))
    assert source.query_range(TARGET, 0, 600, 60).series == []


def test_the_bearer_token_is_sent(source: PrometheusSource) -> None:
    assert source._session.headers["Authorization"] == f"Bearer {TOKEN}"
    assert source._session.trust_env is False


def test_basic_auth_is_sent() -> None:
    source = make_source(auth={"type": "basic", "username": "scraper", "password": "pw"})
    assert source._session.auth == ("scraper", "pw")
    assert "Authorization" not in source._session.headers


def test_a_token_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(f"  {TOKEN}\n")
    source = make_source(auth={"type": "bearer", "token_file": str(tmp_path / "token")})
    assert source._session.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_missing_token_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="token_file"):
        make_source(auth={"type": "bearer", "token_file": str(tmp_path / "missing")})


def test_post_method_sends_the_query_in_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(method="POST")
    recorder = Recorder(FakeResponse(200, matrix()))
    monkeypatch.setattr(source._session, "post", recorder)
    source.query_range(TARGET, 0, 60, 60)
    [(url, kwargs)] = recorder.calls
    assert url.endswith("/api/v1/query_range")
    assert kwargs["data"]["query"] == TARGET.query


def test_a_promql_error_names_the_target_and_says_what_prometheus_said(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(
        monkeypatch,
        source,
        FakeResponse(
            400,
            {
                "status": "error",
                "errorType": "bad_data",
                "error": 'invalid parameter "query": 1:5: parse error: unexpected "}"',
            },
        ),
    )
    with pytest.raises(QueryError) as info:
        source.query_range(TARGET, 0, 600, 60)
    assert "checkout_cpu" in info.value.message
    assert "parse error" in info.value.message
    assert info.value.target == "checkout_cpu"
    assert info.value.code == "query_invalid"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, SourceAuthError),
        (403, SourceAuthError),
        (422, QueryError),
        (404, SourceUnavailableError),
        (500, SourceUnavailableError),
        (503, SourceUnavailableError),
    ],
)
def test_http_statuses_map_to_typed_errors(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource, status: int, error: type
) -> None:
    answer(monkeypatch, source, FakeResponse(status, b"upstream says no"))
    with pytest.raises(error) as info:
        source.query_range(TARGET, 0, 600, 60)
    assert type(info.value) is error
    if status in (401, 403):
        assert "prometheus.auth" in info.value.message
    if status >= 500:
        assert f"HTTP {status}" in info.value.message
        assert "checkout_cpu" in info.value.message
    if status == 404:
        assert "prometheus.url" in info.value.message


def test_connection_error_is_source_unavailable(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(
        monkeypatch,
        source,
        requests.ConnectionError(
            "HTTPConnectionPool(host='prom.example.com', port=9090): Max retries exceeded "
            "([Errno 111] Connection refused)"
        ),
    )
    with pytest.raises(SourceUnavailableError) as info:
        source.query_range(TARGET, 0, 600, 60)
    assert type(info.value) is SourceUnavailableError
    assert "connection refused" in info.value.message
    assert "checkout_cpu" in info.value.message


def test_timeout_is_source_timeout(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(monkeypatch, source, requests.ReadTimeout("read timed out"))
    with pytest.raises(SourceTimeoutError) as info:
        source.query_range(TARGET, 0, 600, 60)
    assert "30s" in info.value.message
    assert "prometheus.timeout" in info.value.message
    assert isinstance(info.value, SourceUnavailableError)  # callers may treat it as "down"


RAISERS: dict[str, Callable[[], FakeResponse | Exception]] = {
    "connection": lambda: requests.ConnectionError(f"failed with headers Bearer {TOKEN}"),
    "timeout": lambda: requests.Timeout(f"timed out; Authorization: Bearer {TOKEN}"),
    "other": lambda: requests.RequestException(f"Bearer {TOKEN}"),
    "401": lambda: FakeResponse(401, f"invalid token {TOKEN}".encode()),
    "403": lambda: FakeResponse(403, {"error": f"token {TOKEN} lacks access"}),
    "not json": lambda: FakeResponse(200, b"<html>login</html>"),
    "vector": lambda: FakeResponse(
        200, {"status": "success", "data": {"resultType": "vector", "result": []}}
    ),
}


@pytest.mark.parametrize("case", sorted(RAISERS))
def test_the_bearer_token_never_appears_in_an_error(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource, case: str
) -> None:
    answer(monkeypatch, source, RAISERS[case]())
    with pytest.raises(IngestError) as info:
        source.query_range(TARGET, 0, 600, 60)
    assert TOKEN not in info.value.message
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.detail)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("status", [400, 502])
def test_the_bearer_token_is_redacted_from_echoed_error_bodies(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource, status: int
) -> None:
    answer(monkeypatch, source, FakeResponse(status, f"bad request: Bearer {TOKEN}".encode()))
    with pytest.raises(IngestError) as info:
        source.query_range(TARGET, 0, 600, 60)
    assert TOKEN not in info.value.message


def test_an_instant_vector_is_a_query_error(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(
        monkeypatch,
        source,
        FakeResponse(200, {"status": "success", "data": {"resultType": "vector", "result": []}}),
    )
    with pytest.raises(QueryError, match=r"checkout_cpu.*matrix.*'vector'"):
        source.query_range(TARGET, 0, 600, 60)


def test_an_error_status_in_a_200_answer_is_a_query_error(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(monkeypatch, source, FakeResponse(200, {"status": "error", "error": "too many"}))
    with pytest.raises(QueryError, match="too many"):
        source.query_range(TARGET, 0, 600, 60)


def test_a_non_json_answer_is_source_unavailable(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    answer(monkeypatch, source, FakeResponse(200, b"<html>proxy login</html>"))
    with pytest.raises(SourceUnavailableError, match="not JSON"):
        source.query_range(TARGET, 0, 600, 60)


def test_a_range_over_the_point_limit_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = make_source(max_points_per_chunk=100)
    recorder = answer(monkeypatch, source, FakeResponse(200, matrix()))
    assert source.max_points_per_request == 100
    source.query_range(TARGET, 0, 99 * 60, 60)  # exactly 100 points is fine
    with pytest.raises(QueryError, match="101 points"):
        source.query_range(TARGET, 0, 100 * 60, 60)
    assert len(recorder.calls) == 1


def test_check_maps_connection_failures(
    monkeypatch: pytest.MonkeyPatch, source: PrometheusSource
) -> None:
    def refuse() -> bool:
        raise requests.ConnectionError(f"Connection refused (Bearer {TOKEN})")

    monkeypatch.setattr(source._client, "check_prometheus_connection", refuse)
    with pytest.raises(SourceUnavailableError) as info:
        source.check()
    assert "unreachable" in info.value.message
    assert TOKEN not in info.value.message
    monkeypatch.setattr(source._client, "check_prometheus_connection", lambda: False)
    with pytest.raises(SourceUnavailableError, match="not ready"):
        source.check()
    monkeypatch.setattr(source._client, "check_prometheus_connection", lambda: True)
    source.check()


def test_describe_is_safe_to_print(source: PrometheusSource) -> None:
    assert source.describe() == f"Prometheus at {URL}"
    assert TOKEN not in source.describe()
