"""Span files into span frames: OTLP JSON (one ExportTraceServiceRequest per file, or one per
line as the Collector's file exporter writes them) and Jaeger JSON (the UI's "Download JSON").
The Nezha per-minute CSV layout is read by rca.cases, which owns that benchmark layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import ErrorKind, PrognosError
from ingest.otlp import OtlpError, from_json
from ingest.spans import SPAN_COLUMNS, empty_spans, normalize_spans

FORMATS = ("otlp-json", "jaeger")


class SpanFileError(PrognosError):
    code = "span_file_invalid"
    kind = ErrorKind.INVALID


def _text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def read_otlp_json(path: Path) -> pd.DataFrame:
    text = _text(path).strip()
    if not text:
        return empty_spans()
    try:
        documents = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SpanFileError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from None
    frames = []
    for number, document in enumerate(documents, 1):
        if not isinstance(document, dict):
            raise SpanFileError(f"{path}: document {number} is not an OTLP JSON object")
        try:
            frames.append(from_json(document).spans)
        except OtlpError as exc:
            raise SpanFileError(f"{path}: document {number}: {exc.message}") from None
    return normalize_spans(pd.concat(frames, ignore_index=True)) if frames else empty_spans()


def _logs_an_error(span: dict[str, Any]) -> bool:
    """An OpenTracing error log or an OpenTelemetry exception event, as Jaeger stores them."""
    for log in span.get("logs") or []:
        for item in log.get("fields") or []:
            if item.get("key") == "event" and item.get("value") in ("error", "exception"):
                return True
    return False


def read_jaeger_json(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise SpanFileError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from None
    traces = data.get("data") if isinstance(data, dict) else None
    if not isinstance(traces, list):
        raise SpanFileError(f'{path}: expected Jaeger\'s {{"data": [traces]}}')
    rows: list[tuple[Any, ...]] = []
    for number, item in enumerate(traces):
        try:
            processes = {
                pid: (p or {}).get("serviceName", "unknown_service")
                for pid, p in (item.get("processes") or {}).items()
            }
            for span in item.get("spans") or []:
                parent = ""
                for ref in span.get("references") or []:
                    if ref.get("refType") == "CHILD_OF" and ref.get("traceID") in (
                        None,
                        span["traceID"],
                    ):
                        parent = ref["spanID"]
                        break
                tags = {t.get("key"): t.get("value") for t in span.get("tags") or []}
                code = tags.get("http.status_code")
                error = (
                    tags.get("error") in (True, "true")
                    or (isinstance(code, int | str) and str(code).isdigit() and int(code) >= 500)
                    or _logs_an_error(span)
                )
                start = int(span["startTime"]) * 1000  # µs -> ns
                rows.append(
                    (
                        str(span["traceID"]).lower(),
                        str(span["spanID"]).lower(),
                        str(parent).lower(),
                        processes.get(span.get("processID"), "unknown_service"),
                        str(span.get("operationName", "")),
                        start,
                        start + int(span.get("duration", 0)) * 1000,
                        bool(error),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpanFileError(f"{path}: trace {number}: malformed span ({exc})") from None
    if not rows:
        return empty_spans()
    return normalize_spans(pd.DataFrame(rows, columns=list(SPAN_COLUMNS)))


def read_span_file(path: Path, fmt: str) -> pd.DataFrame:
    if not path.is_file():
        raise SpanFileError(f"{path} does not exist")
    if fmt == "otlp-json":
        return read_otlp_json(path)
    if fmt == "jaeger":
        return read_jaeger_json(path)
    raise SpanFileError(f"unknown span file format {fmt!r}; use one of {', '.join(FORMATS)}")
