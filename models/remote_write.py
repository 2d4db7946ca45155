"""Push the predictions to a Prometheus remote-write receiver (remote-write 1.0).

Each cycle's forecasts, anomaly scores and breach probabilities (the samples `/metrics` shows,
with the same names and labels) go out as snappy-compressed WriteRequests, so the exported
series need not all pass through one scrape. A push never fails the cycle: a receiver that is
down or overloaded (no answer, 429, 5xx) keeps the batches pending and they are sent first at
the next cycle (up to `max_pending_samples`, oldest dropped); a batch the receiver refuses (any
other 4xx) would be refused again and is dropped with the reason logged.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cramjam
import requests

from core.settings import RemoteWriteSettings
from ingest import prompb
from ingest.prometheus import authenticated_session

log = logging.getLogger(__name__)

WRITE_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "prognos-remote-write",
}

#: One sample: metric name, its labels (without `__name__`), value.
ExportSample = tuple[str, Mapping[str, str], float]


@dataclass(frozen=True, slots=True)
class Batch:
    """Samples pushed together, all stamped with the cycle's time (epoch milliseconds)."""

    timestamp_ms: int
    samples: Sequence[ExportSample]


@dataclass(frozen=True, slots=True)
class PushResult:
    sent: int = 0
    requests: int = 0
    pending: int = 0
    dropped: int = 0
    error: str | None = None


def encode_write_request(batch: Batch) -> bytes:
    """A snappy-compressed WriteRequest: one time series per sample, labels sorted by name."""
    request = prompb.WriteRequest()
    series = request.timeseries
    for name, labels, value in batch.samples:
        item = series.add()
        pairs = sorted({**labels, "__name__": name}.items())
        item.labels.extend(prompb.Label(name=k, value=v) for k, v in pairs)
        item.samples.add(value=value, timestamp=batch.timestamp_ms)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def batches(samples: Sequence[ExportSample], timestamp_ms: int, size: int) -> list[Batch]:
    return [
        Batch(timestamp_ms, samples[start : start + size]) for start in range(0, len(samples), size)
    ]


class RemoteWriter:
    """One receiver's client; holds the batches a failed push left for the next cycle."""

    def __init__(
        self, settings: RemoteWriteSettings, *, session: requests.Session | None = None
    ) -> None:
        if settings.url is None:
            raise ValueError("RemoteWriter needs export.remote_write.url")
        self.settings = settings
        self.url = settings.url
        if session is None:
            session, self._secrets = authenticated_session(
                settings.auth, tls_verify=settings.tls_verify, ca_file=settings.ca_file
            )
        else:
            self._secrets = []
        self._session = session
        self._timeout = settings.timeout.total_seconds()
        self._pending: deque[Batch] = deque()

    @property
    def pending_samples(self) -> int:
        return sum(len(b.samples) for b in self._pending)

    def close(self) -> None:
        self._session.close()

    def push(self, samples: Iterable[ExportSample], *, timestamp_ms: int) -> PushResult:
        """Send what is pending, then these samples; never raises for the receiver's sake."""
        fresh = list(samples)
        self._pending.extend(batches(fresh, timestamp_ms, self.settings.max_samples_per_request))
        sent = posted = dropped = 0
        error: str | None = None
        while self._pending:
            batch = self._pending[0]
            outcome = self._post(batch)
            if outcome == "ok":
                self._pending.popleft()
                sent += len(batch.samples)
                posted += 1
                continue
            if outcome.startswith("refused"):
                self._pending.popleft()
                dropped += len(batch.samples)
                error = outcome
                log.error(
                    "remote write to %s %s; its %d samples are dropped (the receiver would "
                    "refuse them again)",
                    self.url,
                    outcome,
                    len(batch.samples),
                )
                continue
            error = outcome
            break
        dropped += self._trim()
        pending = self.pending_samples
        if pending:
            log.warning(
                "remote write to %s failed (%s); %d samples are kept and sent first next cycle",
                self.url,
                error,
                pending,
            )
        return PushResult(sent, posted, pending, dropped, error)

    def _trim(self) -> int:
        """Drop the oldest pending batches beyond max_pending_samples."""
        dropped = 0
        while self._pending and self.pending_samples > self.settings.max_pending_samples:
            dropped += len(self._pending.popleft().samples)
        if dropped:
            log.warning(
                "remote write to %s: %d pending samples dropped (export.remote_write."
                "max_pending_samples = %d)",
                self.url,
                dropped,
                self.settings.max_pending_samples,
            )
        return dropped

    def _post(self, batch: Batch) -> str:
        """ "ok", "refused (HTTP 4xx: ...)" or why it may work later."""
        body = encode_write_request(batch)
        try:
            response = self._session.post(
                self.url, data=body, headers=WRITE_HEADERS, timeout=self._timeout
            )
        except requests.Timeout:
            return f"no answer within {self._timeout:g}s"
        except requests.RequestException as exc:
            return f"unreachable ({type(exc).__name__})"
        status = response.status_code
        if 200 <= status < 300:
            return "ok"
        text = self._redact(response.content[:300].decode("utf-8", "replace").strip())
        if 400 <= status < 500 and status != 429:
            return f"refused a batch (HTTP {status}: {text or 'no reason given'})"
        return f"HTTP {status}: {text or 'no reason given'}"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
