"""Remote read without a server: selector detection, the protobuf decoder against the protobuf
library, query_range's step semantics, and the fallbacks and typed errors of the client."""

from __future__ import annotations

import logging
import struct
from typing import Any

import cramjam
import numpy as np
import pytest

from ingest import prompb
from ingest.errors import QueryError, SourceAuthError, SourceUnavailableError
from ingest.prometheus import PrometheusSource
from ingest.remote_read import (
    READ_PATH,
    STALE_NAN,
    Matcher,
    RawSeries,
    RemoteReadDecodeError,
    RemoteReader,
    RemoteReadUnsupportedError,
    SeriesBatch,
    decode_read_response,
    encode_read_request,
    on_step_grid,
    selector_matchers,
    time_slices,
)
from tests.unit.fakes import make_target
from tests.unit.ingest.test_prometheus import URL, FakeResponse, Recorder, make_source, matrix

STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]
T0 = 1_717_372_800  # a day boundary, so every grid is step-aligned


# ----------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("up", [Matcher("__name__", 0, "up")]),
        (
            'mem{service="cart",pod!="x",zone=~"eu.*",tier!~"dev|test"}',
            [
                Matcher("__name__", 0, "mem"),
                Matcher("service", 0, "cart"),
                Matcher("pod", 1, "x"),
                Matcher("zone", 2, "eu.*"),
                Matcher("tier", 3, "dev|test"),
            ],
        ),
        ('{__name__=~"a|b",job="x"}', [Matcher("__name__", 2, "a|b"), Matcher("job", 0, "x")]),
    ],
)
def test_a_plain_selector_gives_its_matchers(query: str, expected: list[Matcher]) -> None:
    assert selector_matchers(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "rate(up[5m])",
        "sum by (job) (up)",
        "up[5m]",
        "up offset 5m",
        "up @ 1700000000",
        "up / 2",
        "(up)",
        "up{",  # does not parse: query_range reports the syntax error
    ],
)
def test_anything_else_is_left_to_query_range(query: str) -> None:
    assert selector_matchers(query) is None


def test_the_request_asks_for_samples_over_the_range_with_the_matchers() -> None:
    body = encode_read_request([Matcher("__name__", 0, "up"), Matcher("job", 2, "a.*")], 1, 2, 60)
    request = prompb.ReadRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    assert list(request.accepted_response_types) == [prompb.ReadRequest.SAMPLES]
    (query,) = request.queries
    assert (query.start_timestamp_ms, query.end_timestamp_ms, query.hints.step_ms) == (1, 2, 60)
    assert [(m.type, m.name, m.value) for m in query.matchers] == [
        (0, "__name__", "up"),
        (2, "job", "a.*"),
    ]


# ----------------------------------------------------------------------------- decoding


def response(*queries: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    message = prompb.ReadResponse(
        results=[
            prompb.QueryResult(
                timeseries=[
                    prompb.TimeSeries(
                        labels=[prompb.Label(name=k, value=v) for k, v in sorted(labels.items())],
                        samples=[prompb.Sample(timestamp=t, value=v) for t, v in samples],
                    )
                    for labels, samples in series
                ]
            )
            for series in queries
        ]
    )
    return bytes(cramjam.snappy.compress_raw(message.SerializeToString()))


def bits(values: Any) -> list[int]:
    return np.asarray(values, np.float64).view(np.uint64).tolist()


RNG = np.random.default_rng(7)
MS = T0 * 1000
CASES = {
    "non-zero floats (the fixed layout)": [
        (MS + i * 15_000, float(v)) for i, v in enumerate(RNG.normal(3, 9, 500))
    ],
    "all zero (the short fixed layout)": [(MS + i * 15_000, 0.0) for i in range(300)],
    "zeros and non-zeros mixed": [(MS + i * 15_000, float(i % 3)) for i in range(300)],
    "NaN, infinities, the staleness marker": [
        (MS, float("nan")),
        (MS + 1, float("inf")),
        (MS + 2, -float("inf")),
        (MS + 3, STALE),
        (MS + 4, -0.0),
    ],
    "timestamps of different varint sizes, negative ones": [
        (-5_000, 1.0),
        (0, 2.0),
        (1, 3.0),
        (200, 4.0),
        (MS, 5.0),
    ],
    "no samples": [],
    "zeros at tiny timestamps (entries under 8 bytes)": [(1, 0.0), (2, 0.0), (3, 0.0)],
    "negative timestamps (10-byte varints)": [(-3_000, 1.0), (-2_000, 2.0), (-1_000, 3.0)],
    # 18 + 9 + 9 bytes: divisible by the first entry's size, yet not one layout.
    "a value, then two zeros": [(MS, 1.5), (MS + 1, 0.0), (MS + 2, 0.0)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_decoded_samples_equal_the_protobuf_librarys_bit_for_bit(case: str) -> None:
    samples = CASES[case]
    labels = {"__name__": "m", "service": "cart", "pod": "p-1"}
    (series,) = decode_read_response(response([(labels, samples)]))[0].series()
    assert series.labels == labels
    assert series.timestamps_ms.tolist() == [t for t, _ in samples]
    assert bits(series.values) == bits([v for _, v in samples])


def test_series_decoded_together_equal_each_decoded_alone() -> None:
    series = [({"__name__": "m", "case": case}, samples) for case, samples in CASES.items()]
    together = decode_read_response(response(series))[0].series()
    alone = [decode_read_response(response([s]))[0].series()[0] for s in series]
    assert [s.labels for s in together] == [s.labels for s in alone]
    for got, expected in zip(together, alone, strict=True):
        assert got.timestamps_ms.tolist() == expected.timestamps_ms.tolist()
        assert bits(got.values) == bits(expected.values)


def test_every_query_and_series_comes_back_in_order() -> None:
    first = [({"__name__": "a", "i": str(i)}, [(MS + i, float(i + 1))]) for i in range(3)]
    second = [({"__name__": "b"}, [(MS, 2.5), (MS + 60_000, 0.0)])]
    decoded = [q.series() for q in decode_read_response(response(first, second))]
    assert [[s.labels for s in q] for q in decoded] == [
        [labels for labels, _ in first],
        [{"__name__": "b"}],
    ]
    assert decoded[1][0].values.tolist() == [2.5, 0.0]


def test_an_unusual_field_order_is_decoded_too() -> None:
    # Labels after the samples and a timestamp before the value: valid protobuf that another
    # implementation of remote read may send.
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    sample = b"\x10" + bytes([0x80 | 0x10, 0x01]) + b"\x09" + struct.pack("<d", 1.25)  # ts=144
    label = field(1, b"__name__") + field(2, b"m")
    series = (
        field(2, sample) + field(2, sample[:3] + b"\x09" + struct.pack("<d", 0.5)) + field(1, label)
    )
    body = field(1, field(1, series))
    (decoded,) = decode_read_response(bytes(cramjam.snappy.compress_raw(body)))[0].series()
    assert decoded.labels == {"__name__": "m"}
    assert decoded.timestamps_ms.tolist() == [144, 144]
    assert decoded.values.tolist() == [1.25, 0.5]


@pytest.mark.parametrize(
    "body",
    [b"not snappy at all \xff\xfe", None],
    ids=["not snappy", "truncated protobuf"],
)
def test_a_body_that_is_not_a_read_response_is_a_decode_error(body: bytes | None) -> None:
    if body is None:
        whole = bytes(cramjam.snappy.decompress_raw(response([({"a": "b"}, [(MS, 1.5)] * 3)])))
        body = bytes(cramjam.snappy.compress_raw(whole[:-5]))
    with pytest.raises(RemoteReadDecodeError):
        decode_read_response(body)


# ----------------------------------------------------------------------------- step grid


def raw(points: list[tuple[float, float]], name: str = "m") -> RawSeries:
    """Samples at second offsets from T0."""
    return RawSeries(
        {"__name__": name},
        np.array([round((T0 + s) * 1000) for s, _ in points], np.int64),
        np.array([v for _, v in points], np.float64),
    )


def grid_points(
    series: RawSeries, end_offset: int, step: int = 60, lookback: int = 300
) -> list[tuple[int, float]]:
    found = on_step_grid(SeriesBatch.of([series]), "t", T0, T0 + end_offset, step, lookback)
    if not found:
        return []
    (data,) = found
    return [
        (t - T0, v) for t, v in zip(data.timestamps.tolist(), data.values.tolist(), strict=True)
    ]


def test_each_step_takes_the_newest_sample_at_or_before_it() -> None:
    series = raw([(-30, 1.0), (0, 2.0), (59.9, 3.0), (61, 4.0), (125, 5.0)])
    assert grid_points(series, 180) == [(0, 2.0), (60, 3.0), (120, 4.0), (180, 5.0)]


def test_a_sample_older_than_the_lookback_delta_is_a_gap() -> None:
    # 2.x semantics: a sample exactly lookback old still counts, one a millisecond older not.
    series = raw([(0, 1.0), (600.001, 2.0)])
    assert grid_points(series, 660) == [
        (0, 1.0),
        (60, 1.0),
        (120, 1.0),
        (180, 1.0),
        (240, 1.0),
        (300, 1.0),
        (660, 2.0),
    ]


def test_a_staleness_marker_ends_the_series_until_the_next_sample() -> None:
    series = raw([(0, 1.0), (90, STALE), (200, 3.0)])
    assert grid_points(series, 300) == [(0, 1.0), (60, 1.0), (240, 3.0), (300, 3.0)]


def test_nan_and_infinities_are_dropped_and_counted() -> None:
    series = raw([(0, float("nan")), (60, float("inf")), (120, 7.0)])
    (data,) = on_step_grid(SeriesBatch.of([series]), "t", T0, T0 + 120, 60, 300)
    assert (data.timestamps.tolist(), data.values.tolist(), data.dropped_non_finite) == (
        [T0 + 120],
        [7.0],
        2,
    )


def test_a_series_with_no_point_in_the_window_is_left_out() -> None:
    assert grid_points(raw([(-1000, 1.0)]), 600) == []
    assert grid_points(raw([]), 600) == []


@pytest.mark.parametrize("cells", [2_000_000, 7, 1], ids=["at once", "in slices", "one by one"])
def test_many_series_evaluated_together_equal_each_on_its_own(
    monkeypatch: pytest.MonkeyPatch, cells: int
) -> None:
    # Neighbours that end early, start late, are empty or sit far in the past must not lend
    # a sample to the series next to them.
    monkeypatch.setattr("ingest.remote_read._GRID_CELLS", cells)
    rng = np.random.default_rng(3)
    series = [
        raw(
            [
                (float(t), float(v))
                for t, v in zip(range(-300, 900, 37), rng.normal(size=40), strict=False)
            ],
            "a",
        ),
        raw([(-250.0, 1.0), (10.0, 2.0)], "b"),
        raw([], "c"),
        raw([(400.0, 3.0), (401.0, STALE), (700.0, 4.0)], "d"),
        raw([(-(10**9), 5.0)], "e"),
        raw([(float(t), 6.0) for t in range(0, 900, 60)], "f"),
    ]
    together = on_step_grid(SeriesBatch.of(series), "t", T0, T0 + 840, 60, 300)
    alone = [
        d for s in series for d in on_step_grid(SeriesBatch.of([s]), "t", T0, T0 + 840, 60, 300)
    ]
    assert [d.key for d in together] == [d.key for d in alone]
    assert [d.key.label_dict["__name__"] for d in together] == ["a", "b", "d", "f"]
    for got, expected in zip(together, alone, strict=True):
        assert got.timestamps.tolist() == expected.timestamps.tolist()
        assert bits(got.values) == bits(expected.values)


# ----------------------------------------------------------------------------- client


class ProtoResponse(FakeResponse):
    def __init__(self, status_code: int, body: bytes, kind: str = "application/x-protobuf") -> None:
        super().__init__(status_code, body)
        self.headers = {"Content-Type": kind}


def remote_source(
    monkeypatch: pytest.MonkeyPatch, mode: str, outcome: Any
) -> tuple[PrometheusSource, Recorder, Recorder]:
    source = make_source(read_api=mode)
    posted, got = (
        Recorder(outcome),
        Recorder(FakeResponse(200, matrix({"metric": {"a": "q"}, "values": [[T0, "9"]]}))),
    )
    monkeypatch.setattr(source._session, "post", posted)
    monkeypatch.setattr(source._session, "get", got)
    return source, posted, got


SELECTOR = make_target("mem", 'mem{service="cart"}')
ONE = response([({"__name__": "mem", "service": "cart"}, [(MS - 10_000, 1.5), (MS + 50_000, 2.5)])])


def test_a_selector_target_is_read_with_remote_read(monkeypatch: pytest.MonkeyPatch) -> None:
    source, posted, got = remote_source(monkeypatch, "remote_read", ProtoResponse(200, ONE))
    result = source.query_range(SELECTOR, T0, T0 + 60, 60)
    (series,) = result.series
    assert series.key.label_dict == {"__name__": "mem", "service": "cart"}
    assert (series.timestamps.tolist(), series.values.tolist()) == ([T0, T0 + 60], [1.5, 2.5])
    ((url, kwargs),) = posted.calls
    assert url == URL + READ_PATH and not got.calls
    assert kwargs["headers"]["X-Prometheus-Remote-Read-Version"] == "0.1.0"
    # The read starts a lookback delta early, so the first step sees the sample before it.
    request = prompb.ReadRequest.FromString(bytes(cramjam.snappy.decompress_raw(kwargs["data"])))
    assert request.queries[0].start_timestamp_ms == (T0 - 300) * 1000


def test_another_query_uses_query_range_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source, posted, got = remote_source(monkeypatch, "remote_read", ProtoResponse(200, ONE))
    target = make_target("rate", "rate(mem[5m])")
    with caplog.at_level(logging.INFO, logger="ingest.remote_read"):
        for _ in range(3):
            assert source.query_range(target, T0, T0 + 60, 60).points == 1
    assert not posted.calls and len(got.calls) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "target rate: its query is not a plain series selector; it is read with query_range "
        "(remote read takes label matchers only)"
    ]


def test_query_range_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    source, posted, got = remote_source(monkeypatch, "query_range", ProtoResponse(200, ONE))
    source.query_range(SELECTOR, T0, T0 + 60, 60)
    assert not posted.calls and len(got.calls) == 1


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_without_remote_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # remote_read: an error that says what to set.
    source, _, _ = remote_source(
        monkeypatch, "remote_read", ProtoResponse(status, b"404 page not found", "text/plain")
    )
    with pytest.raises(
        RemoteReadUnsupportedError, match=r"set prometheus\.read_api to query_range or auto"
    ) as info:
        source.query_range(SELECTOR, T0, T0 + 60, 60)
    assert isinstance(info.value, SourceUnavailableError)
    # auto: query_range from then on, said once, remote read not tried again.
    source, posted, got = remote_source(
        monkeypatch, "auto", ProtoResponse(status, b"", "text/plain")
    )
    with caplog.at_level(logging.WARNING, logger="ingest.remote_read"):
        for _ in range(2):
            assert source.query_range(SELECTOR, T0, T0 + 60, 60).points == 1
    assert len(posted.calls) == 1 and len(got.calls) == 2
    assert len(caplog.records) == 1 and "reading with query_range from now on" in caplog.text


@pytest.mark.parametrize(
    ("outcome", "error", "message"),
    [
        (
            ProtoResponse(400, b"exceeded sample limit (50000000)", "text/plain"),
            QueryError,
            "lower prometheus.max_points_per_chunk",
        ),
        (ProtoResponse(401, b"", "text/plain"), SourceAuthError, "check prometheus.auth"),
        (ProtoResponse(503, b"overloaded", "text/plain"), SourceUnavailableError, "HTTP 503"),
        (
            ProtoResponse(200, b"<html>login</html>", "text/html"),
            SourceUnavailableError,
            "not a protobuf ReadResponse",
        ),
        (ProtoResponse(200, b"\x00garbage"), SourceUnavailableError, "cannot be decoded"),
    ],
)
def test_failures_are_the_query_range_paths_typed_errors(
    monkeypatch: pytest.MonkeyPatch, outcome: ProtoResponse, error: type, message: str
) -> None:
    source, _, _ = remote_source(monkeypatch, "auto", outcome)
    with pytest.raises(error, match=message) as info:
        source.query_range(SELECTOR, T0, T0 + 60, 60)
    assert "tok_" not in str(info.value)


def test_the_reader_keeps_one_verdict_per_query() -> None:
    class Never:
        url = URL

        def post(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("not called for a non-selector")

        def body_of(self, *args: Any, **kwargs: Any) -> bytes:
            raise AssertionError

    reader = RemoteReader(Never(), mode="auto", lookback_delta_s=300)
    assert reader.read(make_target("x", "sum(up)"), T0, T0 + 60, 60) is None


@pytest.mark.parametrize(
    ("points", "parallel", "expected"),
    [
        (100, 2, [(0, 99)]),  # too short to split
        (720, 2, [(0, 359), (360, 719)]),
        (1441, 2, [(0, 720), (721, 1440)]),
        (10_000, 4, [(0, 2499), (2500, 4999), (5000, 7499), (7500, 9999)]),
        (1000, 1, [(0, 999)]),
    ],
)
def test_a_long_read_is_split_into_consecutive_slices(
    points: int, parallel: int, expected: list[tuple[int, int]]
) -> None:
    slices = time_slices(T0, T0 + (points - 1) * 60, 60, parallel)
    assert [((a - T0) // 60, (b - T0) // 60) for a, b in slices] == expected


def test_slices_read_at_once_equal_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [(MS - 400_000 + 15_000 * i, float(i % 7) + 0.25) for i in range(6_000)]
    body = response([({"__name__": "mem", "service": "cart"}, samples)])
    results = []
    for parallel in (1, 3):
        source, posted, _ = remote_source(monkeypatch, "remote_read", ProtoResponse(200, body))
        assert source._remote is not None
        source._remote.parallel = parallel
        results.append(source.query_range(SELECTOR, T0, T0 + 1_439 * 60, 60))
        assert len(posted.calls) == parallel
    (one,), (sliced,) = (r.series for r in results)
    assert one.timestamps.tolist() == sliced.timestamps.tolist()
    assert bits(one.values) == bits(sliced.values) and len(one) == 1_440
