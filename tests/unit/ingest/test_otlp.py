"""OTLP decoding without HTTP: protobuf and OTLP JSON to span frames, gzip, and error bodies."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from ingest import otlp
from ingest.spans import SPAN_COLUMNS

T0 = 1_700_000_000 * 10**9
TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, CHILD = "b7ad6b7169203331", "00f067aa0ba902b7"


def protobuf_request(*, with_service: bool = True) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource = message.resource_spans.add()
    if with_service:
        attribute = resource.resource.attributes.add()
        attribute.key, attribute.value.string_value = "service.name", "checkout"
    spans = resource.scope_spans.add().spans
    root = spans.add()
    root.trace_id, root.span_id, root.name = bytes.fromhex(TRACE), bytes.fromhex(ROOT), "POST /buy"
    root.start_time_unix_nano, root.end_time_unix_nano = T0, T0 + 9_000_000
    child = spans.add()
    child.trace_id, child.span_id = bytes.fromhex(TRACE), bytes.fromhex(CHILD)
    child.parent_span_id, child.name = bytes.fromhex(ROOT), "charge"
    child.start_time_unix_nano, child.end_time_unix_nano = T0 + 1, T0 + 8_000_000
    child.status.code = Status.STATUS_CODE_ERROR
    return message


def json_request(code: object = "STATUS_CODE_ERROR") -> dict[str, object]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "payment"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "x", "unknownField": 1},
                        "spans": [
                            {
                                "traceId": TRACE.upper(),
                                "spanId": CHILD,
                                "parentSpanId": ROOT,
                                "name": "charge",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": T0 + 500,
                                "status": {"code": code},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_protobuf_body_becomes_a_span_frame() -> None:
    decoded = otlp.decode(protobuf_request().SerializeToString(), otlp.PROTOBUF)
    frame = decoded.spans
    assert list(frame.columns) == list(SPAN_COLUMNS) and decoded.rejected == 0
    assert frame["trace_id"].tolist() == [TRACE, TRACE]
    assert frame["span_id"].tolist() == [ROOT, CHILD]
    assert frame["parent_id"].tolist() == ["", ROOT]
    assert set(frame["service"]) == {"checkout"}
    assert frame["operation"].tolist() == ["POST /buy", "charge"]
    assert frame["error"].tolist() == [False, True]
    assert frame["end_ns"].tolist() == [T0 + 9_000_000, T0 + 8_000_000]


def test_a_resource_without_service_name_is_unknown_service() -> None:
    body = protobuf_request(with_service=False).SerializeToString()
    assert set(otlp.decode(body, otlp.PROTOBUF).spans["service"]) == {"unknown_service"}


@pytest.mark.parametrize("code", ["STATUS_CODE_ERROR", 2])
def test_json_uses_hex_ids_camel_case_and_enum_names_or_numbers(code: object) -> None:
    decoded = otlp.decode(json.dumps(json_request(code)).encode(), otlp.JSON)
    row = decoded.spans.iloc[0]
    assert (row.trace_id, row.span_id, row.parent_id) == (TRACE, CHILD, ROOT)
    assert (row.service, row.operation, bool(row.error)) == ("payment", "charge", True)
    assert (row.start_ns, row.end_ns) == (T0, T0 + 500)


def test_json_ok_status_is_not_an_error_and_bad_ids_are_rejected_not_fatal() -> None:
    data = json_request("STATUS_CODE_OK")
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]  # type: ignore[index]
    spans.append({"traceId": "not-hex", "spanId": CHILD, "name": "bad"})
    spans.append({"traceId": TRACE, "spanId": "0000000000000000", "name": "zero id"})
    decoded = otlp.decode(json.dumps(data).encode(), otlp.JSON)
    assert len(decoded.spans) == 1 and not decoded.spans["error"].any()
    assert decoded.rejected == 2 and decoded.reason


def test_a_span_with_an_exception_event_failed_whatever_its_status() -> None:
    message = protobuf_request()
    root = message.resource_spans[0].scope_spans[0].spans[0]
    root.events.add(name="exception", time_unix_nano=T0 + 5)
    root.events.add(name="cache miss", time_unix_nano=T0 + 6)
    assert otlp.decode(message.SerializeToString(), otlp.PROTOBUF).spans["error"].tolist() == [
        True,
        True,
    ]
    data = json_request("STATUS_CODE_UNSET")
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]  # type: ignore[index]
    assert not otlp.decode(json.dumps(data).encode(), otlp.JSON).spans["error"].any()
    span["events"] = [{"name": "retry"}]
    assert not otlp.decode(json.dumps(data).encode(), otlp.JSON).spans["error"].any()
    span["events"] = [{"name": "exception", "attributes": []}]
    assert otlp.decode(json.dumps(data).encode(), otlp.JSON).spans["error"].all()


def test_protobuf_spans_with_short_ids_are_rejected() -> None:
    message = protobuf_request()
    broken = message.resource_spans[0].scope_spans[0].spans.add()
    broken.trace_id, broken.span_id = b"\x01", b"\x02"
    decoded = otlp.decode(message.SerializeToString(), otlp.PROTOBUF)
    assert len(decoded.spans) == 2 and decoded.rejected == 1


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"\xff\xff\xff\xff", otlp.PROTOBUF),
        (b"{not json", otlp.JSON),
        (b"[1, 2]", otlp.JSON),
        (b'{"resourceSpans": 7}', otlp.JSON),
    ],
)
def test_malformed_bodies_are_400_invalid_argument(body: bytes, kind: str) -> None:
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.decode(body, kind)
    assert caught.value.http_status == 400
    assert caught.value.rpc_code == otlp.INVALID_ARGUMENT


def test_media_types() -> None:
    assert otlp.media_type("application/json; charset=utf-8") == otlp.JSON
    assert otlp.media_type("Application/X-Protobuf") == otlp.PROTOBUF
    for bad in ("text/plain", None, ""):
        with pytest.raises(otlp.OtlpError) as caught:
            otlp.media_type(bad)
        assert caught.value.http_status == 415


def test_gzip_is_inflated_within_the_limit_only() -> None:
    raw = protobuf_request().SerializeToString()
    assert otlp.inflate(gzip.compress(raw), "gzip", 10_000) == raw
    assert otlp.inflate(raw, None, 10_000) == raw
    bomb = gzip.compress(b"\0" * 1_000_000)
    assert len(bomb) < 10_000
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.inflate(bomb, "gzip", 10_000)
    assert caught.value.http_status == 413
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.inflate(b"not gzip at all", "gzip", 10_000)
    assert caught.value.http_status == 400
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.inflate(raw, "br", 10_000)
    assert caught.value.http_status == 415


def test_status_bodies_are_google_rpc_status_in_either_encoding() -> None:
    encoded = otlp.status_body(otlp.PROTOBUF, otlp.INVALID_ARGUMENT, "bad span ü")
    # google.rpc.Status: code = 1 (varint), message = 2 (string); parse by hand
    assert encoded[0] == 0x08 and encoded[1] == otlp.INVALID_ARGUMENT and encoded[2] == 0x12
    assert encoded[4:].decode() == "bad span ü" and encoded[3] == len("bad span ü".encode())
    as_json = json.loads(otlp.status_body(otlp.JSON, 8, "too big"))
    assert as_json == {"code": 8, "message": "too big"}


def test_success_bodies_report_partial_success() -> None:
    response = ExportTraceServiceResponse()
    response.ParseFromString(otlp.success_body(otlp.PROTOBUF, 3, "missing ids"))
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == "missing ids"
    empty = ExportTraceServiceResponse()
    empty.ParseFromString(otlp.success_body(otlp.PROTOBUF))
    assert not empty.HasField("partial_success")
    assert json.loads(otlp.success_body(otlp.JSON)) == {}
    body = json.loads(otlp.success_body(otlp.JSON, 1, "x"))
    assert body["partialSuccess"]["rejectedSpans"] == "1"


def test_decode_error_type_is_not_leaked() -> None:
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.decode(b"\x0a\xff", otlp.PROTOBUF)
    assert not isinstance(caught.value, DecodeError)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda g: g[:-8], id="trailer-cut-off"),
        pytest.param(lambda g: g[:-3], id="size-cut-short"),
        pytest.param(lambda g: g[:-8] + bytes([g[-8] ^ 1]) + g[-7:], id="bad-crc"),
        pytest.param(lambda g: g + b"trailing junk", id="junk-after-the-stream"),
        pytest.param(lambda g: g[: len(g) // 2], id="stream-cut-in-half"),
    ],
)
def test_a_damaged_gzip_body_is_400_not_inflated(damage: Callable[[bytes], bytes]) -> None:
    whole = gzip.compress(protobuf_request().SerializeToString())
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.inflate(damage(whole), "gzip", 10_000)
    assert caught.value.http_status == 400
    assert caught.value.rpc_code == otlp.INVALID_ARGUMENT


def test_concatenated_gzip_members_are_one_body() -> None:
    raw = protobuf_request().SerializeToString()
    half = len(raw) // 2
    joined = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    assert otlp.inflate(joined, "gzip", 10_000) == raw
    with pytest.raises(otlp.OtlpError) as caught:
        otlp.inflate(joined, "gzip", len(raw) - 1)
    assert caught.value.http_status == 413


def json_span_with_times(start: str, end: str) -> bytes:
    """A one-span OTLP JSON body with the times written as given (raw JSON text)."""
    span = (
        f'{{"traceId": "{TRACE}", "spanId": "{ROOT}", "name": "x", '
        f'"startTimeUnixNano": {start}, "endTimeUnixNano": {end}}}'
    )
    return f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{span}]}}]}}]}}'.encode()


def test_json_nested_100k_deep_is_400_invalid_argument() -> None:
    for body in (
        b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"unknownField": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
    ):
        with pytest.raises(otlp.OtlpError) as caught:
            otlp.decode(body, otlp.JSON)
        assert caught.value.http_status == 400
        assert caught.value.rpc_code == otlp.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "time",
    [
        "1e400",
        "-1e400",
        '"1e400"',
        str(2**70),
        f'"{2**70}"',
        str(2**64),
        "-1",
        '"-5"',
        "NaN",
        "Infinity",
        "1.5",
        "true",
    ],
)
def test_a_json_time_that_is_no_uint64_is_400_invalid_argument(time: str) -> None:
    for start, end in ((time, str(T0)), (str(T0), time)):
        with pytest.raises(otlp.OtlpError) as caught:
            otlp.decode(json_span_with_times(start, end), otlp.JSON)
        assert caught.value.http_status == 400
        assert caught.value.rpc_code == otlp.INVALID_ARGUMENT
        assert "UnixNano" in caught.value.message


def test_json_times_may_be_numbers_or_strings_within_uint64() -> None:
    decoded = otlp.decode(json_span_with_times(f'"{T0}"', f"{float(T0 + 2**10)}"), otlp.JSON)
    assert decoded.spans[["start_ns", "end_ns"]].values.tolist() == [[T0, T0 + 2**10]]


def test_a_uint64_time_past_int64_rejects_the_span_not_the_request() -> None:
    # Valid by the schema (fixed64), but past year 2262: not a time the span store can hold.
    message = protobuf_request()
    late = message.resource_spans[0].scope_spans[0].spans[1]
    late.start_time_unix_nano, late.end_time_unix_nano = 2**63, 2**64 - 1
    decoded = otlp.decode(message.SerializeToString(), otlp.PROTOBUF)
    assert decoded.spans["span_id"].tolist() == [ROOT] and decoded.rejected == 1
    assert "2262" in decoded.reason
    body = json_span_with_times(f'"{T0}"', f'"{2**64 - 1}"')
    decoded = otlp.decode(body, otlp.JSON)
    assert decoded.spans.empty and decoded.rejected == 1
