"""Read the alerting rules a Prometheus evaluates (`GET /api/v1/rules?type=alert`), through the
ingest source's connection: the same URL, credentials, TLS settings, timeout and retries, and
the same typed errors for a server that is down, refuses us or answers nonsense."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ingest.errors import SourceUnavailableError
from ingest.prometheus import PrometheusSource
from models.rules.domain import ActiveAlert, AlertRule

RULES_PATH = "/api/v1/rules"


def read_rules(source: PrometheusSource) -> list[AlertRule]:
    """Every alerting rule of every group, in Prometheus' order."""
    body = source._request(RULES_PATH, {"type": "alert"}, target="(alerting rules)")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SourceUnavailableError(
            f"Prometheus at {source.url} sent rules that are not JSON ({RULES_PATH})"
        ) from None
    try:
        return parse_rules(document, origin=source.url)
    except SourceUnavailableError as exc:  # its text may echo the server: never a credential
        raise SourceUnavailableError(source._redact(exc.message)) from None


def parse_rules(document: Any, *, origin: str = "Prometheus") -> list[AlertRule]:
    """The alerting rules of a `/api/v1/rules` answer (recording rules are skipped)."""
    if not isinstance(document, dict) or document.get("status") != "success":
        error = document.get("error") if isinstance(document, dict) else None
        raise SourceUnavailableError(
            f"{origin} did not list its rules ({RULES_PATH}): {error or 'unexpected answer'}"
        )
    groups = (document.get("data") or {}).get("groups")
    if not isinstance(groups, list):
        raise SourceUnavailableError(f"{origin} answered {RULES_PATH} without a list of groups")
    out = []
    for group in groups:
        for rule in group.get("rules") or []:
            if rule.get("type") != "alerting":
                continue
            out.append(
                AlertRule(
                    group=str(group.get("name", "")),
                    file=str(group.get("file", "")),
                    name=str(rule.get("name", "")),
                    expr=str(rule.get("query", "")),
                    for_seconds=int(float(rule.get("duration") or 0)),
                    labels={str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
                    state=str(rule.get("state", "inactive")),
                    alerts=tuple(_alert(a) for a in rule.get("alerts") or []),
                )
            )
    return out


def _alert(alert: dict[str, Any]) -> ActiveAlert:
    active_at = str(alert.get("activeAt") or "1970-01-01T00:00:00Z").replace("Z", "+00:00")
    return ActiveAlert(
        labels={str(k): str(v) for k, v in (alert.get("labels") or {}).items()},
        state=str(alert.get("state", "pending")),
        active_at=int(datetime.fromisoformat(active_at).timestamp()),
    )
