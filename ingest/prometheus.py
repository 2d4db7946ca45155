"""Prometheus as a source, through prometheus-api-client's connection (session, retries, auth).

Range reads go through one `_request()` helper so that every HTTP status maps to a typed error
at this boundary and the JSON parse can be measured. Nothing here logs a credential.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from core.settings import PrometheusAuthSettings, PrometheusSettings, TargetSettings
from ingest.chunking import PROMETHEUS_MAX_POINTS
from ingest.domain import PullResult, SeriesData, SeriesKey
from ingest.errors import (
    IngestError,
    QueryError,
    SourceAuthError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from ingest.remote_read import RemoteReader

log = logging.getLogger(__name__)

_RETRY_STATUSES = (429, 502, 503, 504)


class PrometheusSource:
    kind = "prometheus"

    def __init__(self, settings: PrometheusSettings) -> None:
        if settings.url is None:
            raise ValueError("PrometheusSource needs prometheus.url")
        self.settings = settings
        self.url = settings.url
        self._timeout = settings.timeout.total_seconds()
        self._max_points = min(settings.max_points_per_chunk, PROMETHEUS_MAX_POINTS)
        session, self._secrets = authenticated_session(
            settings.auth, tls_verify=settings.tls_verify, ca_file=settings.ca_file
        )
        if not settings.compression:
            session.headers["Accept-Encoding"] = "identity"
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=settings.retries,
            status=settings.retries,
            backoff_factor=settings.backoff,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        self._client = PrometheusConnect(
            url=self.url,
            session=session,
            retry=retry,
            timeout=self._timeout,
            method=settings.method,
            disable_ssl=not settings.tls_verify,
        )
        self._session = session
        self.last_parse_seconds = 0.0
        self._remote = (
            None
            if settings.read_api == "query_range"
            else RemoteReader(
                self,
                mode=settings.read_api,
                lookback_delta_s=int(settings.lookback_delta.total_seconds()),
            )
        )

    @property
    def max_points_per_request(self) -> int:
        return self._max_points

    def describe(self) -> str:
        return f"Prometheus at {self.url}"

    def close(self) -> None:
        self._client.close()

    def check(self) -> None:
        try:
            healthy = self._client.check_prometheus_connection()
        except requests.RequestException as exc:
            raise SourceUnavailableError(
                f"Prometheus at {self.url} is unreachable ({_reason(exc)})"
            ) from None
        if not healthy:
            raise SourceUnavailableError(f"Prometheus at {self.url} is not ready")

    def query_range(self, target: TargetSettings, start: int, end: int, step: int) -> PullResult:
        if (end - start) // step + 1 > self._max_points:
            raise QueryError(
                f"target {target.name!r}: a range of {(end - start) // step + 1} points exceeds "
                f"the {self._max_points}-point limit per request",
                target=target.name,
            )
        if self._remote is not None:
            remote = self._remote.read(target, start, end, step)
            if remote is not None:
                return remote
        body = self._request(
            "/api/v1/query_range",
            {"query": target.query, "start": start, "end": end, "step": step},
            target=target.name,
        )
        return self._parse_matrix(body, target)

    def _request(self, path: str, params: Mapping[str, Any], *, target: str) -> bytes:
        url = f"{self.url}{path}"
        if self.settings.method == "POST":
            response = self._send("POST", url, target=target, data=params)
        else:
            response = self._send("GET", url, target=target, params=params)
        return self.body_of(response, path, target=target)

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, target: str
    ) -> requests.Response:
        """A POST of a binary body (remote read) through the same session and error mapping."""
        return self._send("POST", f"{self.url}{path}", target=target, data=body, headers=headers)

    def _send(self, method: str, url: str, *, target: str, **kwargs: Any) -> requests.Response:
        call = self._session.post if method == "POST" else self._session.get
        try:
            return call(url, timeout=self._timeout, **kwargs)
        except requests.Timeout:
            raise SourceTimeoutError(
                f"Prometheus at {self.url} did not answer within {self._timeout:g}s "
                f"for target {target!r}; raise prometheus.timeout or narrow the query"
            ) from None
        except requests.RequestException as exc:
            raise SourceUnavailableError(
                f"Prometheus at {self.url} is unreachable for target {target!r} ({_reason(exc)})"
            ) from None

    def body_of(self, response: requests.Response, path: str, *, target: str) -> bytes:
        """The body of a 200; any other status as the typed error it means."""
        status = response.status_code
        if status == 200:
            return response.content
        message = self._redact(_error_text(response.content))
        if status in (401, 403):
            raise SourceAuthError(
                f"Prometheus at {self.url} refused our credentials (HTTP {status}); "
                "check prometheus.auth"
            )
        if status in (400, 422):
            raise QueryError(
                f"target {target!r}: Prometheus rejected the query: {message}", target=target
            )
        if status == 404:
            raise SourceUnavailableError(
                f"{self.url}{path} was not found (HTTP 404): is prometheus.url the server's root?"
            )
        raise SourceUnavailableError(
            f"Prometheus at {self.url} answered HTTP {status} for target {target!r}: {message}"
        )

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _parse_matrix(self, body: bytes, target: TargetSettings) -> PullResult:
        started = time.perf_counter()
        # A large matrix is millions of small lists without cycles: the cyclic collector only
        # slows the parse down (about a third of its time), so it pauses for it.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._parse_document(body, target)
        finally:
            if enabled:
                gc.enable()
            self.last_parse_seconds = time.perf_counter() - started

    def _parse_document(self, body: bytes, target: TargetSettings) -> PullResult:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SourceUnavailableError(
                f"Prometheus at {self.url} sent a response that is not JSON for target "
                f"{target.name!r}"
            ) from None
        if document.get("status") != "success":
            raise QueryError(
                f"target {target.name!r}: {document.get('error', 'query failed')}",
                target=target.name,
            )
        data = document.get("data") or {}
        if data.get("resultType") != "matrix":
            raise QueryError(
                f"target {target.name!r}: expected a range vector (matrix), got "
                f"{data.get('resultType')!r}",
                target=target.name,
            )
        result = PullResult()
        for item in data.get("result") or []:
            result.series.append(_series(target.name, item))
        return result


def _series(target: str, item: Mapping[str, Any]) -> SeriesData:
    points = item.get("values") or []
    count = len(points)
    ts = np.fromiter((p[0] for p in points), dtype=np.float64, count=count)
    values = np.array([p[1] for p in points], dtype=np.float64) if count else np.empty(0)
    finite = np.isfinite(values)
    dropped = int(count - finite.sum())
    if dropped:
        ts, values = ts[finite], values[finite]
    return SeriesData(
        SeriesKey.of(target, item.get("metric") or {}),
        np.rint(ts).astype(np.int64),
        values,
        dropped_non_finite=dropped,
    )


def authenticated_session(
    auth: PrometheusAuthSettings, *, tls_verify: bool, ca_file: Path | None
) -> tuple[requests.Session, list[str]]:
    """A session that sends these credentials and never picks up the host's proxies or netrc;
    and the secret values in it, never to echo back (e.g. when a proxy reflects the request in
    an error body)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_file) if ca_file else tls_verify
    secrets: list[str] = []
    if auth.type == "bearer":
        token = auth.token.get_secret_value() if auth.token else _read_token_file(auth.token_file)
        session.headers["Authorization"] = f"Bearer {token}"
        secrets.append(token)
    elif auth.type == "basic":
        password = auth.password.get_secret_value() if auth.password else ""
        session.auth = (auth.username or "", password)
        secrets.append(password)
    return session, [s for s in secrets if s]


def _read_token_file(path: Any) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise IngestError(
            f"cannot read prometheus.auth.token_file {path}: {exc.strerror}"
        ) from None


def _error_text(content: bytes) -> str:
    try:
        document = orjson.loads(content)
        return str(document.get("error") or document)[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return content[:200].decode("utf-8", "replace").strip() or "(empty body)"


def _reason(exc: BaseException) -> str:
    # The innermost cause says "connection refused" / "name not resolved" without the URL's query.
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset by peer"):
        if marker in text:
            return marker.lower()
    if "Max retries exceeded" in text:
        return "no answer after retries"
    return type(exc).__name__
