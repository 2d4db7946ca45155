"""Range reads through Prometheus remote-read (`/api/v1/read`, protobuf + snappy, SAMPLES).

Remote-read takes label matchers, not PromQL, and returns raw samples at their scrape times.
A target whose query is a plain vector selector (`up`, `mem{service="cart"}`) is read this way
and its samples are evaluated on the step grid as query_range would (the newest sample at or
before each step, within the lookback delta; a staleness marker ends a series), so both paths
store the same points. Any other query falls back to query_range, logged once per target.

The response is decoded without building a Python object per sample: a series' samples are
one run of fixed-size protobuf entries in what Prometheus sends, read as a numpy view; any
other layout is walked entry by entry.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cramjam
import numpy as np
import promql_parser
import requests

from core.settings import TargetSettings
from ingest import prompb
from ingest.domain import FloatArray, IntArray, PullResult, SeriesData, SeriesKey
from ingest.errors import QueryError, SourceUnavailableError

log = logging.getLogger(__name__)

READ_PATH = "/api/v1/read"
READ_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "Accept-Encoding": "snappy",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
# Prometheus marks a series stale with this NaN (value.StaleNaN); query_range never shows it.
STALE_NAN = 0x7FF0000000000002
_UNSUPPORTED = (404, 405, 501)
_MATCH_TYPES = {"Equal": 0, "NotEqual": 1, "Re": 2, "NotRe": 3}


class RemoteReadDecodeError(ValueError):
    """The body is not a snappy-compressed ReadResponse."""


class RemoteReadUnsupportedError(SourceUnavailableError):
    """The server (or a proxy in front of it) does not serve remote read."""

    code = "source_remote_read_unsupported"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    type: int  #: prompb.LabelMatcher.Type: 0 EQ, 1 NEQ, 2 RE, 3 NRE
    value: str


@dataclass(slots=True)
class RawSeries:
    """One series as remote-read returns it: raw samples at scrape times, in milliseconds."""

    labels: dict[str, str]
    timestamps_ms: IntArray
    values: FloatArray


def selector_matchers(query: str) -> list[Matcher] | None:
    """The label matchers of a plain vector selector; None for any other PromQL (functions,
    operators, range selectors, offset/@ modifiers, `or` matchers) or a query that does not
    parse (query_range then says what is wrong with it)."""
    try:
        expr = promql_parser.parse(query)
    except Exception:
        return None
    if not isinstance(expr, promql_parser.VectorSelector):
        return None
    if expr.offset is not None or expr.at is not None:
        return None
    if getattr(expr.matchers, "or_matchers", None):
        return None
    matchers = [
        Matcher(m.name, _MATCH_TYPES[str(m.op).rsplit(".", 1)[-1]], m.value)
        for m in expr.matchers.matchers
    ]
    if expr.name and not any(m.name == "__name__" for m in matchers):
        matchers.insert(0, Matcher("__name__", 0, expr.name))
    return matchers


def encode_read_request(
    matchers: Sequence[Matcher], start_ms: int, end_ms: int, step_ms: int
) -> bytes:
    """A snappy-compressed ReadRequest with one query, asking for the SAMPLES response."""
    request = prompb.ReadRequest(
        queries=[
            prompb.Query(
                start_timestamp_ms=start_ms,
                end_timestamp_ms=end_ms,
                matchers=[
                    prompb.LabelMatcher(type=m.type, name=m.name, value=m.value) for m in matchers
                ],
                hints=prompb.ReadHints(step_ms=step_ms, start_ms=start_ms, end_ms=end_ms),
            )
        ],
        accepted_response_types=[prompb.ReadRequest.SAMPLES],
    )
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


# ----------------------------------------------------------------------------- decoding


def decode_read_response(body: bytes) -> list[list[RawSeries]]:
    """The series of each query of a snappy-compressed ReadResponse (SAMPLES)."""
    try:
        buf = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise RemoteReadDecodeError(f"not snappy-compressed ({exc})") from None
    try:
        return [
            [_series(buf, s, e) for field, s, e in _messages(buf, start, stop) if field == 1]
            for field, start, stop in _messages(buf, 0, len(buf))
            if field == 1
        ]
    except (IndexError, struct.error) as exc:
        raise RemoteReadDecodeError(f"truncated protobuf ({exc})") from None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise RemoteReadDecodeError("varint longer than 10 bytes")


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    if wire == 2:
        length, pos = _varint(buf, pos)
        return pos + length
    raise RemoteReadDecodeError(f"unsupported wire type {wire}")


def _messages(buf: bytes, pos: int, stop: int) -> list[tuple[int, int, int]]:
    """(field, start, end) of each length-delimited field in buf[pos:stop]; others skipped."""
    found = []
    while pos < stop:
        key, pos = _varint(buf, pos)
        if key & 7 != 2:
            pos = _skip(buf, pos, key & 7)
            continue
        length, pos = _varint(buf, pos)
        end = pos + length
        if end > stop:
            raise RemoteReadDecodeError("a field runs past its message")
        found.append((key >> 3, pos, end))
        pos = end
    if pos != stop:
        raise RemoteReadDecodeError("a field runs past its message")
    return found


def _series(buf: bytes, pos: int, stop: int) -> RawSeries:
    labels: dict[str, str] = {}
    times: list[IntArray] = []
    values: list[FloatArray] = []
    while pos < stop:
        if buf[pos] == 0x12:  # field 2 (samples), length-delimited
            ts, vs, pos = _samples(buf, pos, stop)
            times.append(ts)
            values.append(vs)
            continue
        key, pos = _varint(buf, pos)
        if key == 0x0A:  # field 1 (labels)
            length, pos = _varint(buf, pos)
            name, value = _label(buf, pos, pos + length)
            labels[name] = value
            pos += length
        else:  # exemplars, native histograms: not float samples
            pos = _skip(buf, pos, key & 7)
    if pos != stop:
        raise RemoteReadDecodeError("a field runs past its series")
    ts = np.concatenate(times) if times else np.empty(0, np.int64)
    vs = np.concatenate(values) if values else np.empty(0, np.float64)
    if ts.shape[0] > 1 and not bool((ts[1:] > ts[:-1]).all()):
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
    return RawSeries(labels, ts, vs)


def _label(buf: bytes, pos: int, stop: int) -> tuple[str, str]:
    name = value = ""
    for field, start, end in _messages(buf, pos, stop):
        text = buf[start:end].decode("utf-8", "replace")
        if field == 1:
            name = text
        elif field == 2:
            value = text
    return name, value


def _samples(buf: bytes, pos: int, stop: int) -> tuple[IntArray, FloatArray, int]:
    fast = _fixed_samples(buf, pos, stop)
    if fast is not None:
        return fast[0], fast[1], stop
    times: list[int] = []
    values: list[float] = []
    while pos < stop and buf[pos] == 0x12:
        length, pos = _varint(buf, pos + 1)
        end = pos + length
        if end > stop:
            raise RemoteReadDecodeError("a sample runs past its series")
        value, ts = 0.0, 0
        while pos < end:
            key, pos = _varint(buf, pos)
            if key == 0x09:
                value = struct.unpack_from("<d", buf, pos)[0]
                pos += 8
            elif key == 0x10:
                ts, pos = _varint(buf, pos)
                ts = ts - (1 << 64) if ts >= 1 << 63 else ts
            else:
                pos = _skip(buf, pos, key & 7)
        if pos != end:
            raise RemoteReadDecodeError("a sample's fields run past it")
        times.append(ts)
        values.append(value)
    return np.array(times, np.int64), np.array(values, np.float64), pos


def _fixed_samples(buf: bytes, pos: int, stop: int) -> tuple[IntArray, FloatArray] | None:
    """All samples from `pos` to the end of the series when every entry has the same layout
    (tag, length, [value], timestamp varint of one size): what Prometheus sends for a series
    whose values are all non-zero (or all zero) and whose timestamps share a varint size."""
    length = buf[pos + 1]
    stride = length + 2
    if length >= 0x80 or (stop - pos) % stride:
        return None
    rows = np.frombuffer(buf, np.uint8, count=stop - pos, offset=pos).reshape(-1, stride)
    has_value = buf[pos + 2] == 0x09
    at = 11 if has_value else 2  # the timestamp's tag
    width = stride - at - 1  # varint bytes
    if at >= stride or buf[pos + at] != 0x10 or not 1 <= width <= 10:
        return None
    fixed = [0, 1, at] + ([2] if has_value else [])
    if not (rows[:, fixed] == rows[0, fixed]).all():
        return None
    varint = rows[:, at + 1 :]
    if not ((varint[:, :-1] & 0x80).all() and (varint[:, -1] < 0x80).all()):
        return None
    ts = np.zeros(rows.shape[0], np.uint64)
    for i in range(width):
        ts |= (varint[:, i] & 0x7F).astype(np.uint64) << np.uint64(7 * i)
    if has_value:
        values = np.ascontiguousarray(rows[:, 3:11]).view("<f8").reshape(-1).astype(np.float64)
    else:
        values = np.zeros(rows.shape[0], np.float64)
    return ts.view(np.int64), values


# ----------------------------------------------------------------------------- step grid


def on_step_grid(
    raw: RawSeries, target: str, start: int, end: int, step: int, lookback_s: int
) -> SeriesData | None:
    """query_range's points of one series over [start, end] (seconds, step-aligned): at each
    step the newest sample at or before it, if no older than the lookback delta and not a
    staleness marker; None when no step has a value (query_range leaves such a series out).
    NaN and ±Inf are dropped and counted, as in the query_range path."""
    ts = raw.timestamps_ms
    if ts.shape[0] == 0:
        return None
    grid = np.arange(start, end + 1, step, dtype=np.int64)
    grid_ms = grid * 1000
    index = np.searchsorted(ts, grid_ms, side="right") - 1
    ok = index >= 0
    index = np.maximum(index, 0)
    ok &= ts[index] >= grid_ms - lookback_s * 1000
    values = raw.values[index]
    ok &= values.view(np.uint64) != STALE_NAN
    if not ok.any():
        return None
    grid, values = grid[ok], values[ok]
    finite = np.isfinite(values)
    dropped = int(values.shape[0] - finite.sum())
    if dropped:
        grid, values = grid[finite], values[finite]
    return SeriesData(SeriesKey.of(target, raw.labels), grid, values, dropped_non_finite=dropped)


# ----------------------------------------------------------------------------- client


class Transport(Protocol):
    """What the reader needs of the Prometheus source: its session and its status mapping."""

    url: str

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, target: str
    ) -> requests.Response: ...

    def body_of(self, response: requests.Response, path: str, *, target: str) -> bytes: ...


class RemoteReader:
    """Serves a range read by remote-read when the target's query allows it; `read` returns
    None when the caller should use query_range instead (another query, or `auto` and a
    server without remote read)."""

    def __init__(
        self,
        transport: Transport,
        *,
        mode: Literal["remote_read", "auto"],
        lookback_delta_s: int,
    ) -> None:
        self.transport = transport
        self.mode = mode
        self.lookback_delta_s = lookback_delta_s
        self._matchers: dict[str, list[Matcher] | None] = {}
        self.available = True

    def matchers_for(self, target: TargetSettings) -> list[Matcher] | None:
        if target.query not in self._matchers:
            matchers = selector_matchers(target.query)
            self._matchers[target.query] = matchers
            if matchers is None:
                log.info(
                    "target %s: its query is not a plain series selector; it is read with "
                    "query_range (remote read takes label matchers only)",
                    target.name,
                )
        return self._matchers[target.query]

    def read(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult | None:
        if not self.available:
            return None
        matchers = self.matchers_for(target)
        if matchers is None:
            return None
        lookback = self.lookback_delta_s
        body = encode_read_request(matchers, (start - lookback) * 1000, end * 1000, step * 1000)
        try:
            raw = self._fetch(body, target.name)
        except RemoteReadUnsupportedError as exc:
            if self.mode == "remote_read":
                raise
            self.available = False
            log.warning("%s; reading with query_range from now on", exc.message)
            return None
        result = PullResult()
        for series in raw:
            points = on_step_grid(series, target.name, start, end, step, lookback)
            if points is not None:
                result.series.append(points)
        return result

    def _fetch(self, body: bytes, target: str) -> list[RawSeries]:
        url = self.transport.url
        response = self.transport.post(READ_PATH, body, READ_HEADERS, target=target)
        if response.status_code in _UNSUPPORTED:
            raise RemoteReadUnsupportedError(
                f"Prometheus at {url} does not serve remote read (HTTP {response.status_code} "
                f"on {READ_PATH}); set prometheus.read_api to query_range or auto"
            )
        try:
            content = self.transport.body_of(response, READ_PATH, target=target)
        except QueryError as exc:
            raise QueryError(
                f"{exc.message} (remote read: lower prometheus.max_points_per_chunk, raise the "
                "server's --storage.remote.read-sample-limit, or set prometheus.read_api: "
                "query_range)",
                target=target,
            ) from None
        kind = response.headers.get("Content-Type", "")
        if not kind.startswith("application/x-protobuf"):
            raise SourceUnavailableError(
                f"Prometheus at {url} answered remote read for target {target!r} with "
                f"{kind or 'no content type'!r}, not a protobuf ReadResponse; if a proxy serves "
                f"{READ_PATH}, set prometheus.read_api: query_range"
            )
        try:
            results = decode_read_response(content)
        except RemoteReadDecodeError as exc:
            raise SourceUnavailableError(
                f"Prometheus at {url} sent a remote-read response for target {target!r} that "
                f"cannot be decoded ({exc}); set prometheus.read_api: query_range if a proxy "
                f"alters {READ_PATH}"
            ) from None
        return results[0] if results else []
