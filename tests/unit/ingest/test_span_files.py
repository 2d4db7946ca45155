"""Span files: OTLP JSON (whole, or a request per line), Jaeger JSON, `prognos spans import`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest.span_files import SpanFileError, read_span_file
from prognos.cli import app

TRACE = "5b8efff798038103d269b633813fc60c"
REQUEST = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": TRACE,
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "eee19b7ec3c1b173",
                            "name": "GetCart",
                            "startTimeUnixNano": "1700000000000000000",
                            "endTimeUnixNano": "1700000000005000000",
                            "status": {"code": "STATUS_CODE_ERROR"},
                        }
                    ]
                }
            ],
        }
    ]
}
JAEGER = {
    "data": [
        {
            "traceID": TRACE,
            "processes": {"p1": {"serviceName": "frontend"}, "p2": {"serviceName": "cart"}},
            "spans": [
                {
                    "traceID": TRACE,
                    "spanID": "aaaaaaaaaaaaaaaa",
                    "operationName": "GET /cart",
                    "references": [],
                    "startTime": 1700000000000000,
                    "duration": 9000,
                    "processID": "p1",
                    "tags": [],
                },
                {
                    "traceID": TRACE,
                    "spanID": "bbbbbbbbbbbbbbbb",
                    "operationName": "GetCart",
                    "references": [
                        {"refType": "CHILD_OF", "traceID": TRACE, "spanID": "aaaaaaaaaaaaaaaa"}
                    ],
                    "startTime": 1700000000001000,
                    "duration": 5000,
                    "processID": "p2",
                    "tags": [{"key": "error", "type": "bool", "value": True}],
                },
            ],
        }
    ]
}


def test_otlp_json_whole_file_gzip_and_one_request_per_line(tmp_path: Path) -> None:
    whole = tmp_path / "export.json"
    whole.write_text(json.dumps(REQUEST))
    spans = read_span_file(whole, "otlp-json")
    assert spans[["service", "operation", "error"]].values.tolist() == [["cart", "GetCart", True]]
    lines = tmp_path / "export.jsonl.gz"
    lines.write_bytes(gzip.compress((json.dumps(REQUEST) + "\n" + json.dumps(REQUEST)).encode()))
    assert len(read_span_file(lines, "otlp-json")) == 2


def test_jaeger_json_keeps_parents_services_errors_and_nanoseconds(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(JAEGER))
    spans = read_span_file(path, "jaeger").sort_values("start_ns")
    assert spans["service"].tolist() == ["frontend", "cart"]
    assert spans["parent_id"].tolist() == ["", "aaaaaaaaaaaaaaaa"]
    assert spans["error"].tolist() == [False, True]
    assert (spans["end_ns"] - spans["start_ns"]).tolist() == [9_000_000, 5_000_000]


def test_jaeger_error_logs_and_exception_events_mark_a_failed_span(tmp_path: Path) -> None:
    import copy

    data = copy.deepcopy(JAEGER)
    root = min(data["data"][0]["spans"], key=lambda s: s["startTime"])
    path = tmp_path / "trace.json"
    for event, failed in (("cache miss", False), ("exception", True), ("error", True)):
        root["logs"] = [
            {"timestamp": root["startTime"], "fields": [{"key": "event", "value": event}]}
        ]
        path.write_text(json.dumps(data))
        spans = read_span_file(path, "jaeger").sort_values("start_ns")
        assert spans["error"].tolist() == [failed, True], event


def test_bad_files_say_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  nope")
    with pytest.raises(SpanFileError, match=r"bad\.json: line"):
        read_span_file(bad, "otlp-json")
    with pytest.raises(SpanFileError, match="expected Jaeger"):
        bad.write_text("[]")
        read_span_file(bad, "jaeger")
    with pytest.raises(SpanFileError, match="does not exist"):
        read_span_file(tmp_path / "missing.json", "otlp-json")


def test_spans_import_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(JAEGER))
    runner = CliRunner()
    first = runner.invoke(app, ["spans", "import", str(path), "--format", "jaeger"])
    assert first.exit_code == 0, first.output
    assert "imported 2 spans from 1 file" in " ".join(first.stdout.split())
    again = runner.invoke(app, ["spans", "import", str(path), "--format", "jaeger"])
    assert again.exit_code == 0
    wrong = runner.invoke(app, ["spans", "import", str(path), "--format", "zipkin"])
    assert wrong.exit_code != 0
