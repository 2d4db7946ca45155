"""OTLP/HTTP trace intake: ExportTraceServiceRequest bodies (protobuf or JSON) to span frames,
and the answers the OTLP/HTTP specification prescribes.

JSON follows the OTLP encoding, which differs from the proto3 JSON mapping: trace and span ids
are hex strings, keys are lowerCamelCase, 64-bit integers may be strings, enums may be numbers.
A malformed body is refused as a whole (400); a body over the limit, before or after gzip
inflation, gets 413; an unsupported content type 415. Spans that cannot be used (missing ids)
are left out and counted in `partial_success.rejected_spans`; so are spans timed after
2262, which the schema's uint64 allows but int64 nanoseconds (the span store's) cannot hold.
A time that is no uint64 at all (negative, fractional, `1e400`, 2^70) is a malformed body.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

import pandas as pd
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from ingest.spans import SPAN_COLUMNS, empty_spans

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
STATUS_ERROR = Status.STATUS_CODE_ERROR  # 2
#: OpenTelemetry's semantic convention for a recorded exception: a span that carries one failed,
#: whatever its status says (SDKs record it before, or without, setting the status).
EXCEPTION_EVENT = "exception"

#: Span times: uint64 on the wire; the span store holds int64 nanoseconds (up to 2262-04-11).
UINT64_MAX, INT64_MAX = 2**64 - 1, 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,20}")
LATE_REASON = "timed after 2262 (beyond int64 nanoseconds)"

# google.rpc.Code values used in error bodies
INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, UNAUTHENTICATED = (
    3,
    7,
    8,
    14,
    16,
)


class OtlpError(Exception):
    """An OTLP/HTTP error answer: HTTP status + google.rpc.Status code and message."""

    def __init__(self, http_status: int, rpc_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.rpc_code = rpc_code
        self.message = message

    def __reduce__(self) -> tuple[type[OtlpError], tuple[int, int, str]]:
        # Raised in a decoding worker process and re-raised here: pickled whole.
        return (OtlpError, (self.http_status, self.rpc_code, self.message))


@dataclass(frozen=True)
class Decoded:
    spans: pd.DataFrame
    rejected: int
    reason: str = ""


def media_type(content_type: str | None) -> str:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise OtlpError(
            415,
            INVALID_ARGUMENT,
            f"unsupported content type {kind or 'none'!r}; send {PROTOBUF} or {JSON}",
        )
    return kind


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip` without ever holding more than `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise OtlpError(415, INVALID_ARGUMENT, f"unsupported content encoding {encoding!r}")
    out = bytearray()
    rest = body
    # A gzip body may hold several members (RFC 1952); each must end with its CRC and size
    # trailer, or the body was cut short and its spans cannot be trusted.
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise OtlpError(400, INVALID_ARGUMENT, f"gzip body is corrupt: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise OtlpError(413, RESOURCE_EXHAUSTED, f"inflated body exceeds {limit} bytes")
        if not inflater.eof:
            raise OtlpError(400, INVALID_ARGUMENT, "gzip body is truncated: its trailer is missing")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def inflate_and_decode(body: bytes, encoding: str | None, kind: str, limit: int) -> Decoded:
    """`inflate` then `decode`: one picklable call, for a decoding worker process."""
    return decode(inflate(body, encoding, limit), kind)


def decode(body: bytes, kind: str) -> Decoded:
    if kind == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpError(
                400, INVALID_ARGUMENT, f"not an ExportTraceServiceRequest: {exc}"
            ) from None
        return _from_protobuf(request)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpError(400, INVALID_ARGUMENT, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise OtlpError(400, INVALID_ARGUMENT, "body is not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise OtlpError(400, INVALID_ARGUMENT, "body must be a JSON object")
    return from_json(data)


def _from_protobuf(request: ExportTraceServiceRequest) -> Decoded:
    rows: list[tuple[Any, ...]] = []
    rejected = late = 0
    for resource_spans in request.resource_spans:
        service = "unknown_service"
        for attribute in resource_spans.resource.attributes:
            if attribute.key == "service.name" and attribute.value.HasField("string_value"):
                service = attribute.value.string_value
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    rejected += 1
                    continue
                if max(span.start_time_unix_nano, span.end_time_unix_nano) > INT64_MAX:
                    late += 1
                    continue
                rows.append(
                    (
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        service,
                        span.name,
                        int(span.start_time_unix_nano),
                        int(span.end_time_unix_nano),
                        span.status.code == STATUS_ERROR
                        or any(event.name == EXCEPTION_EVENT for event in span.events),
                    )
                )
    return _frame(rows, rejected, late)


def from_json(data: dict[str, Any]) -> Decoded:
    """An ExportTraceServiceRequest in OTLP JSON (also what OTLP JSON files hold)."""
    rows: list[tuple[Any, ...]] = []
    rejected = late = 0
    try:
        for resource_spans in _list(data, "resourceSpans"):
            service = "unknown_service"
            resource = resource_spans.get("resource") or {}
            for attribute in _list(resource, "attributes"):
                if attribute.get("key") == "service.name":
                    value = (attribute.get("value") or {}).get("stringValue")
                    if isinstance(value, str):
                        service = value
            for scope in _list(resource_spans, "scopeSpans"):
                for span in _list(scope, "spans"):
                    trace_id, span_id = span.get("traceId", ""), span.get("spanId", "")
                    if not (_hex(trace_id, 32) and _hex(span_id, 16)):
                        rejected += 1
                        continue
                    parent = span.get("parentSpanId") or ""
                    if parent and not _hex(parent, 16):
                        rejected += 1
                        continue
                    start = _nanos(span, "startTimeUnixNano")
                    end = _nanos(span, "endTimeUnixNano")
                    if max(start, end) > INT64_MAX:
                        late += 1
                        continue
                    code = (span.get("status") or {}).get("code", 0)
                    rows.append(
                        (
                            trace_id.lower(),
                            span_id.lower(),
                            parent.lower(),
                            service,
                            str(span.get("name", "")),
                            start,
                            end,
                            code in (STATUS_ERROR, "STATUS_CODE_ERROR")
                            or any(
                                isinstance(event, dict) and event.get("name") == EXCEPTION_EVENT
                                for event in _list(span, "events")
                            ),
                        )
                    )
    except (TypeError, ValueError, AttributeError) as exc:
        raise OtlpError(400, INVALID_ARGUMENT, f"malformed OTLP JSON: {exc}") from None
    return _frame(rows, rejected, late)


def _list(container: Any, key: str) -> list[Any]:
    value = container.get(key) or []
    if not isinstance(value, list):
        raise TypeError(f"{key} must be a list")
    return value


def _nanos(span: dict[str, Any], key: str) -> int:
    """A fixed64 time in OTLP JSON: a number or a decimal string, whole and within uint64."""
    value = span.get(key)
    if value is None:
        return 0
    number: int | None = None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():  # False for inf and nan
        number = int(value)
    if number is None or not 0 <= number <= UINT64_MAX:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ValueError(f"{key} must be a uint64 count of nanoseconds, not {shown}")
    return number


def _hex(value: Any, length: int) -> bool:
    if not isinstance(value, str) or len(value) != length:
        return False
    try:
        return int(value, 16) != 0
    except ValueError:
        return False


def _frame(rows: list[tuple[Any, ...]], rejected: int, late: int = 0) -> Decoded:
    if not rows:
        reason = "spans without valid ids" if rejected else ""
        return Decoded(empty_spans(), rejected + late, _with_late(reason, late))
    frame = pd.DataFrame(rows, columns=list(SPAN_COLUMNS)).astype(SPAN_COLUMNS)
    bad = frame["end_ns"] < frame["start_ns"]
    if bad.any():
        rejected += int(bad.sum())
        frame = frame[~bad].reset_index(drop=True)
    reason = "spans without valid ids or ending before they start" if rejected else ""
    return Decoded(frame, rejected + late, _with_late(reason, late))


def _with_late(reason: str, late: int) -> str:
    if not late:
        return reason
    return f"{reason}; {late} {LATE_REASON}" if reason else f"{late} span(s) {LATE_REASON}"


# ----------------------------------------------------------------------------- answers


def success_body(kind: str, rejected: int = 0, reason: str = "") -> bytes:
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = reason
    if kind == PROTOBUF:
        return response.SerializeToString()
    if not rejected:
        return b"{}"
    return json.dumps(
        {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": reason}}
    ).encode()


def status_body(kind: str, code: int, message: str) -> bytes:
    """A google.rpc.Status (code = 1, message = 2), encoded by hand: two fields."""
    if kind != PROTOBUF:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def gzip_bytes(data: bytes) -> bytes:
    """For tests and clients: the body as an OTLP exporter with compression would send it."""
    return gzip.compress(data)
