"""POST /v1/traces: OTLP/HTTP protobuf and JSON, gzip, and the spec's error answers."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from ingest.span_store import read_spans, span_count
from prognos.context import ServiceContext
from tests.unit.api.helpers import bearer

T0 = 1_700_000_000 * 10**9
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
ROOT, CHILD = bytes.fromhex("eee19b7ec3c1b174"), bytes.fromhex("eee19b7ec3c1b173")


def request(*, bad_id: bool = False) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    for service, span_id, parent, name, error in (
        ("frontend", ROOT, b"", "GET /cart", False),
        ("cart", CHILD, ROOT, "GetCart", True),
    ):
        resource = message.resource_spans.add()
        attribute = resource.resource.attributes.add()
        attribute.key, attribute.value.string_value = "service.name", service
        span = resource.scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.parent_span_id, span.name = TRACE, span_id, parent, name
        span.start_time_unix_nano, span.end_time_unix_nano = T0, T0 + 5_000_000
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
    if bad_id:
        broken = message.resource_spans[0].scope_spans[0].spans.add()
        broken.trace_id, broken.span_id, broken.name = b"\x01", b"\x02", "broken"
    return message


def as_json() -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex().upper(),
                                "spanId": ROOT.hex(),
                                "name": "GET /",
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 1000),
                                "status": {"code": 2},
                            },
                            {"traceId": "zz", "spanId": "00", "name": "no ids"},
                        ]
                    }
                ],
            }
        ]
    }


PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


def test_protobuf_export_is_stored_with_services_parents_and_errors(
    client: TestClient,
    context: ServiceContext,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
) -> None:
    token = bearer(issue(Role.INGEST))
    body = gzip.compress(request().SerializeToString())
    response = client.post(
        "/v1/traces", content=body, headers={**token, **PB, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == PB["Content-Type"]
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 0
    with sessions() as session:
        spans = read_spans(session, T0, T0 + 1).sort_values("service")
    assert spans[["service", "operation", "error"]].values.tolist() == [
        ["cart", "GetCart", True],
        ["frontend", "GET /cart", False],
    ]
    assert spans.iloc[0]["parent_id"] == ROOT.hex() and spans.iloc[1]["parent_id"] == ""
    # The exporter retries the same batch: nothing is stored twice.
    client.post("/v1/traces", content=body, headers={**token, **PB, "Content-Encoding": "gzip"})
    with sessions() as session:
        assert span_count(session) == 2


def test_json_export_uses_hex_ids_and_reports_rejected_spans(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str]
) -> None:
    token = bearer(issue(Role.INGEST))
    response = client.post("/v1/traces", json=as_json(), headers=token)
    assert response.status_code == 200
    assert response.json() == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "spans without valid ids or ending before they start",
        }
    }
    with sessions() as session:
        (row,) = read_spans(session, T0, T0 + 1).itertuples()
    assert (row.trace_id, row.service, row.error) == (TRACE.hex(), "shop", True)
    partial = client.post(
        "/v1/traces", content=request(bad_id=True).SerializeToString(), headers={**token, **PB}
    )
    assert (
        ExportTraceServiceResponse.FromString(partial.content).partial_success.rejected_spans == 1
    )


def test_errors_follow_the_otlp_specification_and_write_nothing(
    client: TestClient,
    context: ServiceContext,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
) -> None:
    token = bearer(issue(Role.INGEST))
    malformed = client.post("/v1/traces", content=b"\xff\x00garbage", headers={**token, **PB})
    assert malformed.status_code == 400
    assert malformed.content.startswith(b"\x08\x03\x12")  # google.rpc.Status, INVALID_ARGUMENT
    not_json = client.post("/v1/traces", content=b"{nope", headers={**token, **JS})
    assert not_json.status_code == 400 and not_json.json()["code"] == 3
    wrong_type = client.post(
        "/v1/traces", content=b"x", headers={**token, "Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    limit = context.settings.spans.max_request_bytes
    big = client.post("/v1/traces", content=b"0" * (limit + 1), headers={**token, **PB})
    assert big.status_code == 413 and big.content.startswith(b"\x08\x08")
    bomb = gzip.compress(b"\x00" * (limit + 10))
    inflated = client.post(
        "/v1/traces", content=bomb, headers={**token, **PB, "Content-Encoding": "gzip"}
    )
    assert inflated.status_code == 413
    assert client.post("/v1/traces", content=b"", headers=PB).status_code == 401
    viewer = client.post(
        "/v1/traces",
        content=request().SerializeToString(),
        headers={**bearer(issue(Role.VIEWER)), **PB},
    )
    assert viewer.status_code == 403 and b"ingest" in viewer.content
    with sessions() as session:
        assert span_count(session) == 0
    # An ingest token opens nothing else.
    assert client.get("/v1/series", headers=token).status_code == 403
    assert json.loads(not_json.content)["message"].startswith("body is not JSON")


def test_an_unavailable_database_is_503_with_retry_after(
    client: TestClient,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy.exc import OperationalError

    from ingest import span_intake

    token = bearer(issue(Role.INGEST))

    def down(*_: object, **__: object) -> int:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(span_intake, "store_spans", down)
    answer = client.post(
        "/v1/traces", content=request().SerializeToString(), headers={**token, **PB}
    )
    assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
    assert answer.content.startswith(b"\x08\x0e")  # google.rpc.Status UNAVAILABLE
    assert b"locked" not in answer.content
    with sessions() as session:
        assert span_count(session) == 0


def test_a_gzip_body_with_its_trailer_cut_off_is_400_and_stores_nothing(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str]
) -> None:
    token = bearer(issue(Role.INGEST))
    whole = gzip.compress(request().SerializeToString())
    cut = client.post(
        "/v1/traces", content=whole[:-8], headers={**token, **PB, "Content-Encoding": "gzip"}
    )
    assert cut.status_code == 400 and cut.headers["content-type"] == PB["Content-Type"]
    assert cut.content.startswith(b"\x08\x03\x12")  # google.rpc.Status, INVALID_ARGUMENT
    assert b"gzip" in cut.content
    with sessions() as session:
        assert span_count(session) == 0


def test_inflating_decoding_and_storing_run_off_the_event_loop(
    client: TestClient,
    issue: Callable[[Role], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large export must not stall every other request: the blocking work of the intake (the
    token lookup, gzip, decoding, the store) runs in the thread pool, not on the event loop."""
    import asyncio

    from api.routes import traces
    from ingest import otlp, span_intake

    on_loop: list[str] = []

    def watch(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            try:
                asyncio.get_running_loop()
                on_loop.append(name)
            except RuntimeError:
                pass
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(otlp, "inflate", watch("inflate", otlp.inflate))
    monkeypatch.setattr(otlp, "decode", watch("decode", otlp.decode))
    monkeypatch.setattr(span_intake, "store_spans", watch("store", span_intake.store_spans))
    monkeypatch.setattr(traces, "authenticate", watch("authenticate", traces.authenticate))
    body = gzip.compress(request().SerializeToString())
    token = bearer(issue(Role.INGEST))
    response = client.post(
        "/v1/traces", content=body, headers={**token, **PB, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert on_loop == []


def one_span_json(start: str) -> bytes:
    span = (
        f'{{"traceId": "{TRACE.hex()}", "spanId": "{ROOT.hex()}", "name": "x", '
        f'"startTimeUnixNano": {start}, "endTimeUnixNano": "{T0}"}}'
    )
    return f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{span}]}}]}}]}}'.encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deep"),
        pytest.param(one_span_json("1e400"), id="1e400"),
        pytest.param(one_span_json(str(2**70)), id="2**70"),
        pytest.param(one_span_json(f'"{2**70}"'), id="2**70-string"),
    ],
)
def test_out_of_range_json_is_an_otlp_400_not_a_problem_document(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str], body: bytes
) -> None:
    token = bearer(issue(Role.INGEST))
    answer = client.post("/v1/traces", content=body, headers={**token, **JS})
    assert answer.status_code == 400
    assert answer.headers["content-type"] == JS["Content-Type"]
    assert answer.json()["code"] == 3  # google.rpc.Status INVALID_ARGUMENT
    with sessions() as session:
        assert span_count(session) == 0


def test_a_protobuf_time_past_int64_is_a_rejected_span_not_a_500(
    client: TestClient, sessions: sessionmaker[Session], issue: Callable[[Role], str]
) -> None:
    message = request()
    late = message.resource_spans[1].scope_spans[0].spans[0]
    late.start_time_unix_nano = late.end_time_unix_nano = 2**64 - 1
    answer = client.post(
        "/v1/traces",
        content=message.SerializeToString(),
        headers={**bearer(issue(Role.INGEST)), **PB},
    )
    assert answer.status_code == 200
    assert ExportTraceServiceResponse.FromString(answer.content).partial_success.rejected_spans == 1
    with sessions() as session:
        assert read_spans(session, T0, T0 + 1)["service"].tolist() == ["frontend"]
        assert span_count(session) == 1


def test_large_exports_are_decoded_in_a_worker_process_with_the_same_answers(
    client: TestClient,
    sessions: sessionmaker[Session],
    issue: Callable[[Role], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decoding a 16 MB export holds the GIL for seconds: large bodies go to a worker process.
    Spans, partial success and OTLP errors (pickled across) come back as they would inline."""
    import os

    from api.routes import traces
    from ingest import otlp

    monkeypatch.setattr(traces, "OFFLOAD_BYTES", 0)  # every export takes the worker's path
    inline: list[int] = []
    real = otlp.decode

    def decode_here(body: bytes, kind: str) -> otlp.Decoded:
        inline.append(os.getpid())
        return real(body, kind)

    monkeypatch.setattr(otlp, "decode", decode_here)  # what decoding in this process would call
    token = bearer(issue(Role.INGEST))
    whole = gzip.compress(request(bad_id=True).SerializeToString())
    ok = client.post(
        "/v1/traces", content=whole, headers={**token, **PB, "Content-Encoding": "gzip"}
    )
    assert ok.status_code == 200
    assert ExportTraceServiceResponse.FromString(ok.content).partial_success.rejected_spans == 1
    cut = client.post(
        "/v1/traces", content=whole[:-8], headers={**token, **PB, "Content-Encoding": "gzip"}
    )
    assert cut.status_code == 400 and b"gzip" in cut.content  # raised in the worker
    assert inline == []  # the patched inline path never ran: the worker (its own module) did
    with sessions() as session:
        assert span_count(session) == 2
