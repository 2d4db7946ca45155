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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import cramjam
import numpy as np
import numpy.typing as npt
import promql_parser
import requests

from core.settings import TargetSettings
from ingest import prompb
from ingest.chunking import merge_series
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


@dataclass(slots=True)
class SeriesBatch:
    """The series of one query: their label sets, and their samples (epoch milliseconds)
    concatenated, series i being rows offsets[i]:offsets[i + 1], each in time order."""

    labels: list[dict[str, str]]
    timestamps_ms: IntArray
    values: FloatArray
    offsets: IntArray

    @classmethod
    def of(cls, series: Sequence[RawSeries]) -> SeriesBatch:
        counts = [s.timestamps_ms.shape[0] for s in series]
        return cls(
            [s.labels for s in series],
            np.concatenate([s.timestamps_ms for s in series]) if series else _NO_TIMES,
            np.concatenate([s.values for s in series]) if series else _NO_VALUES,
            np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        )

    def series(self) -> list[RawSeries]:
        bounds = self.offsets.tolist()
        return [
            RawSeries(labels, self.timestamps_ms[a:b], self.values[a:b])
            for labels, a, b in zip(self.labels, bounds, bounds[1:], strict=False)
        ]


_NO_TIMES: IntArray = np.empty(0, np.int64)
_NO_VALUES: FloatArray = np.empty(0, np.float64)
Layout = tuple[int, bool]  #: (bytes per sample entry, whether the value field is present)


def decode_read_response(body: bytes) -> list[SeriesBatch]:
    """The series of each query of a snappy-compressed ReadResponse (SAMPLES)."""
    try:
        buf = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise RemoteReadDecodeError(f"not snappy-compressed ({exc})") from None
    try:
        return [
            _query_result(buf, start, stop)
            for field, start, stop in _messages(buf, 0, len(buf))
            if field == 1
        ]
    except (IndexError, struct.error) as exc:
        raise RemoteReadDecodeError(f"truncated protobuf ({exc})") from None


def _query_result(buf: bytes, pos: int, stop: int) -> SeriesBatch:
    """Labels are read per series; the samples of every series laid out alike are decoded
    together, as one numpy array (a series that turns out otherwise is walked on its own)."""
    labels: list[dict[str, str]] = []
    parts: list[tuple[IntArray, FloatArray]] = []
    alike: dict[Layout, list[tuple[int, int, int, int]]] = {}
    for field, start, end in _messages(buf, pos, stop):
        if field != 1:
            continue
        head, at = _series_head(buf, start, end)
        layout = _layout(buf, at, end) if at < end else None
        if layout is None:
            series = _series(buf, start, end)
            labels.append(series.labels)
            parts.append((series.timestamps_ms, series.values))
            continue
        alike.setdefault(layout, []).append((len(labels), start, at, end))
        labels.append(head)
        parts.append((_NO_TIMES, _NO_VALUES))
    view = memoryview(buf)
    for (stride, has_value), members in alike.items():
        rows = np.frombuffer(b"".join(view[at:end] for _, _, at, end in members), np.uint8)
        decoded = _decode_rows(rows.reshape(-1, stride), has_value)
        if decoded is None:  # one of them is laid out otherwise: each on its own
            for index, start, _, end in members:
                series = _series(buf, start, end)
                labels[index] = series.labels
                parts[index] = (series.timestamps_ms, series.values)
            continue
        counts = [(end - at) // stride for _, _, at, end in members]
        splits = np.cumsum(counts)[:-1]
        for (index, *_), ts, vs in zip(
            members, np.split(decoded[0], splits), np.split(decoded[1], splits), strict=True
        ):
            parts[index] = (ts, vs)
    for index, (ts, vs) in enumerate(parts):
        if ts.shape[0] > 1 and not bool((ts[1:] > ts[:-1]).all()):
            order = np.argsort(ts, kind="stable")
            parts[index] = (ts[order], vs[order])
    counts = [p[0].shape[0] for p in parts]
    return SeriesBatch(
        labels,
        np.concatenate([p[0] for p in parts]) if parts else _NO_TIMES,
        np.concatenate([p[1] for p in parts]) if parts else _NO_VALUES,
        np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
    )


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


def _series_head(buf: bytes, pos: int, stop: int) -> tuple[dict[str, str], int]:
    """The labels before a series' first sample, and where that sample starts."""
    labels: dict[str, str] = {}
    while pos < stop and buf[pos] == 0x0A:  # field 1 (labels), length-delimited
        length, start = _varint(buf, pos + 1)
        name, value = _label(buf, start, start + length)
        labels[name] = value
        pos = start + length
    return labels, pos


def _series(buf: bytes, pos: int, stop: int) -> RawSeries:
    """One series walked field by field, in whatever order its fields come."""
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
    ts = np.concatenate(times) if times else _NO_TIMES
    vs = np.concatenate(values) if values else _NO_VALUES
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
    layout = _layout(buf, pos, stop)
    if layout is not None:
        rows = np.frombuffer(buf, np.uint8, count=stop - pos, offset=pos)
        decoded = _decode_rows(rows.reshape(-1, layout[0]), layout[1])
        if decoded is not None:
            return decoded[0], decoded[1], stop
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


def _layout(buf: bytes, pos: int, stop: int) -> Layout | None:
    """The layout of the sample entry at `pos` if entries of that size could fill the rest of
    the series exactly: tag, length, [value], timestamp tag and a varint of one size. That is
    what Prometheus sends for a series whose values are all non-zero (or all zero) and whose
    timestamps share a varint size; `_decode_rows` checks every entry."""
    if buf[pos] != 0x12:
        return None
    length = buf[pos + 1]
    stride = length + 2
    if length >= 0x80 or (stop - pos) % stride:
        return None
    has_value = buf[pos + 2] == 0x09
    at = 11 if has_value else 2  # the timestamp's tag
    if at >= stride or buf[pos + at] != 0x10 or not 1 <= stride - at - 1 <= 10:
        return None
    return stride, has_value


def _decode_rows(
    rows: npt.NDArray[np.uint8], has_value: bool
) -> tuple[IntArray, FloatArray] | None:
    """Timestamps and values of sample entries, one per row, if every row is laid out as
    `_layout` said; None otherwise."""
    count, stride = rows.shape
    at = 11 if has_value else 2  # the timestamp's tag
    width = stride - at - 1
    if stride < 8 or width > 8:
        return _decode_rows_bytewise(rows, has_value)
    # Fields read in place from the rows' bytes (unaligned views, no copy): the tag and length
    # as one uint16, the value, and the 8 bytes that end the row (the varint is their top).
    fields: dict[str, Any] = {
        "names": ["head", "ts_tag", "tail"],
        "formats": ["<u2", "u1", "<u8"],
        "offsets": [0, at, stride - 8],
        "itemsize": stride,
    }
    if has_value:
        fields["names"] += ["value_tag", "value"]
        fields["formats"] += ["u1", "<f8"]
        fields["offsets"] += [2, 3]
    layout: Any = np.dtype(fields)  # type: ignore[call-overload]
    view: Any = np.frombuffer(np.ascontiguousarray(rows).data, layout, count=count)
    ok = (view["head"] == 0x12 | (stride - 2) << 8).all() and (view["ts_tag"] == 0x10).all()
    if has_value:
        ok = ok and bool((view["value_tag"] == 0x09).all())
    varint = view["tail"] >> np.uint64(8 * (8 - width))
    more = sum(0x80 << (8 * i) for i in range(width - 1))  # continuation bits: all but the last
    mask = np.uint64(more | 0x80 << (8 * (width - 1)))
    if not (ok and bool(((varint & mask) == np.uint64(more)).all())):
        return None
    ts = np.zeros(count, np.uint64)
    for i in range(width):
        ts |= ((varint >> np.uint64(8 * i)) & np.uint64(0x7F)) << np.uint64(7 * i)
    values = view["value"].astype(np.float64) if has_value else np.zeros(count, np.float64)
    return ts.view(np.int64), values


def _decode_rows_bytewise(
    rows: npt.NDArray[np.uint8], has_value: bool
) -> tuple[IntArray, FloatArray] | None:
    """`_decode_rows` for rows shorter than 8 bytes or with 9- and 10-byte varints."""
    stride = rows.shape[1]
    at = 11 if has_value else 2
    columns = [0, 1, at] + ([2] if has_value else [])
    expected = np.array([0x12, stride - 2, 0x10] + ([0x09] if has_value else []), np.uint8)
    if not (rows[:, columns] == expected).all():
        return None
    varint = rows[:, at + 1 :]
    if not ((varint[:, :-1] & 0x80).all() and (varint[:, -1] < 0x80).all()):
        return None
    ts = np.zeros(rows.shape[0], np.uint64)
    for i in range(varint.shape[1]):
        ts |= (varint[:, i] & 0x7F).astype(np.uint64) << np.uint64(7 * i)
    if has_value:
        values = np.ascontiguousarray(rows[:, 3:11]).view("<f8").reshape(-1).astype(np.float64)
    else:
        values = np.zeros(rows.shape[0], np.float64)
    return ts.view(np.int64), values


# ----------------------------------------------------------------------------- step grid

# Steps x series evaluated at once: bounds the memory of the (series, steps) arrays.
_GRID_CELLS = 2_000_000


def on_step_grid(
    batch: SeriesBatch, target: str, start: int, end: int, step: int, lookback_s: int
) -> list[SeriesData]:
    """query_range's points of each series over [start, end] (seconds, step-aligned): at each
    step the newest sample at or before it, if no older than the lookback delta and not a
    staleness marker. A series with no value at any step is left out, as query_range leaves
    it out; NaN and ±Inf are dropped and counted, as in the query_range path."""
    grid = np.arange(start, end + 1, step, dtype=np.int64)
    if grid.shape[0] == 0 or batch.timestamps_ms.shape[0] == 0:
        return []
    out: list[SeriesData] = []
    per_slice = max(1, _GRID_CELLS // grid.shape[0])
    for first in range(0, len(batch.labels), per_slice):
        last = min(first + per_slice, len(batch.labels))
        out.extend(_grid_slice(batch, first, last, grid, target, lookback_s * 1000))
    return out


def _grid_slice(
    batch: SeriesBatch, first: int, last: int, grid: IntArray, target: str, lookback_ms: int
) -> list[SeriesData]:
    """Series first..last-1 at once: each series' samples are shifted into a band of its own
    on one time axis, so that one searchsorted finds every step's newest sample."""
    lo, hi = int(batch.offsets[first]), int(batch.offsets[last])
    if hi == lo:
        return []
    ts = batch.timestamps_ms[lo:hi]
    grid_ms = grid * 1000
    base = min(int(ts.min()), int(grid_ms[0]))
    band = max(int(ts.max()), int(grid_ms[-1])) - base + 1
    count = last - first
    if count > 1 and band * count >= 1 << 62:  # timestamps far apart: fewer bands at once
        middle = (first + last) // 2
        return [
            *_grid_slice(batch, first, middle, grid, target, lookback_ms),
            *_grid_slice(batch, middle, last, grid, target, lookback_ms),
        ]
    starts = batch.offsets[first:last] - lo
    keys = (
        ts
        - base
        + np.repeat(
            np.arange(count, dtype=np.int64) * band, np.diff(batch.offsets[first : last + 1])
        )
    )
    steps = (grid_ms - base)[None, :] + (np.arange(count, dtype=np.int64) * band)[:, None]
    index = np.searchsorted(keys, steps.ravel(), side="right").reshape(count, -1) - 1
    ok = index >= starts[:, None]  # else the newest sample before the step is another series'
    index = np.maximum(index, 0)
    ok &= ts[index] >= grid_ms[None, :] - lookback_ms
    values = batch.values[lo:hi][index]
    ok &= values.view(np.uint64) != STALE_NAN
    out = []
    for row in np.flatnonzero(ok.any(axis=1)).tolist():
        keep = ok[row]
        points, stamps = values[row][keep], grid[keep]
        finite = np.isfinite(points)
        dropped = int(points.shape[0] - finite.sum())
        if dropped:
            points, stamps = points[finite], stamps[finite]
        key = SeriesKey.of(target, batch.labels[first + row])
        out.append(SeriesData(key, stamps, points, dropped_non_finite=dropped))
    return out


# ----------------------------------------------------------------------------- client


class Transport(Protocol):
    """What the reader needs of the Prometheus source: its session and its status mapping."""

    url: str

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, target: str
    ) -> requests.Response: ...

    def body_of(self, response: requests.Response, path: str, *, target: str) -> bytes: ...


# A long read goes out as this many requests over consecutive time slices, sent at once:
# Prometheus encodes one slice while this process decodes another. Each slice starts a
# lookback delta early, so neighbours overlap by that much; a slice has at least
# _MIN_SLICE_POINTS steps.
PARALLEL_SLICES = 2
_MIN_SLICE_POINTS = 360


def time_slices(start: int, end: int, step: int, parallel: int) -> list[tuple[int, int]]:
    """[start, end] (step-aligned) as up to `parallel` consecutive step-aligned slices."""
    points = (end - start) // step + 1
    count = max(1, min(parallel, points // _MIN_SLICE_POINTS))
    size = -(-points // count)  # steps per slice, rounded up
    return [
        (start + i * size * step, min(end, start + ((i + 1) * size - 1) * step))
        for i in range(count)
        if start + i * size * step <= end
    ]


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
        parallel: int = PARALLEL_SLICES,
    ) -> None:
        self.transport = transport
        self.mode = mode
        self.lookback_delta_s = lookback_delta_s
        self.parallel = parallel
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
        slices = time_slices(start, end, step, self.parallel)
        try:
            if len(slices) == 1:
                return PullResult(self._slice(matchers, target.name, start, end, step))
            with ThreadPoolExecutor(len(slices), thread_name_prefix="remote-read") as pool:
                parts = list(
                    pool.map(lambda s: self._slice(matchers, target.name, s[0], s[1], step), slices)
                )
        except RemoteReadUnsupportedError as exc:
            if self.mode == "remote_read":
                raise
            self.available = False
            log.warning("%s; reading with query_range from now on", exc.message)
            return None
        return PullResult(merge_series([series for part in parts for series in part]))

    def _slice(
        self, matchers: Sequence[Matcher], target: str, start: int, end: int, step: int
    ) -> list[SeriesData]:
        lookback = self.lookback_delta_s
        body = encode_read_request(matchers, (start - lookback) * 1000, end * 1000, step * 1000)
        return on_step_grid(self._fetch(body, target), target, start, end, step, lookback)

    def _fetch(self, body: bytes, target: str) -> SeriesBatch:
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
        return results[0] if results else SeriesBatch.of([])
