"""The explicit registry of Python actions a playbook step may name (`kind: python`).

Only what is listed in `ACTIONS` can run; a playbook naming anything else is refused when it is
loaded. An action receives the step's rendered `args` and the environment holding the
execution's Vault-issued secrets, and returns something JSON-serialisable for the step output
(redacted like every other output).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests

from remediation.steps import Action

DEFAULT_RABBITMQ = "http://127.0.0.1:15672"


def clear_queue(args: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Reject up to `max_messages` messages of a RabbitMQ queue without requeueing them, so the
    broker moves them to the queue's dead-letter exchange (or drops them if it has none).

    args: `queue`, `max_messages` (default 1000), `vhost` (default "/"), `management_url`
    (default http://127.0.0.1:15672). Credentials: RABBITMQ_USER / RABBITMQ_PASSWORD from the
    step's environment (issue them from Vault KV in the playbook's `vault:` section).
    """
    queue = str(args["queue"])
    count = int(args.get("max_messages", 1000))
    if count < 1:
        raise ValueError("max_messages must be at least 1")
    base = str(args.get("management_url") or DEFAULT_RABBITMQ).rstrip("/")
    vhost = quote(str(args.get("vhost", "/")), safe="")
    user, password = env.get("RABBITMQ_USER"), env.get("RABBITMQ_PASSWORD")
    auth = (user, password) if user and password else None
    response = requests.post(
        f"{base}/api/queues/{vhost}/{quote(queue, safe='')}/get",
        json={"count": count, "ackmode": "reject_requeue_false", "encoding": "auto"},
        auth=auth,
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"RabbitMQ answered {response.status_code} for queue {queue!r}")
    return {"queue": queue, "rejected": len(response.json())}


def platform_restart(args: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Restart a deployment through the platform API (the demo's simulated platform).

    args: `deployment` (when empty: `target`, the service the proposal is about), `url` (when
    empty: PLATFORM_URL from the environment). Credential: PLATFORM_TOKEN from the step's
    environment (issue it from Vault KV in the playbook's `vault:` section).
    """
    deployment = _deployment(args)
    response = _platform_request("POST", args, env, f"{deployment}/restart", "restarting")
    return dict(response)


def platform_wait_healthy(args: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Poll the platform's status of a deployment until every pod is under its limits; the
    verification when no Prometheus watches the result.

    args: `deployment`, `url` (as for platform_restart), `timeout_s` (default 120), `interval_s`
    (default 2). Raises TimeoutError naming the deployment and its last status.
    """
    deployment = _deployment(args)
    timeout_s = float(args.get("timeout_s", 120))
    interval_s = float(args.get("interval_s", 2))
    if timeout_s <= 0 or interval_s <= 0:
        raise ValueError("timeout_s and interval_s must be positive")
    deadline = time.monotonic() + timeout_s
    while True:
        status = _platform_request("GET", args, env, deployment, "reading the status of")
        if status.get("healthy") is True:
            return dict(status)
        if time.monotonic() + interval_s > deadline:
            raise TimeoutError(
                f"deployment {deployment!r} not healthy after {timeout_s:g}s (memory "
                f"{status.get('memory_bytes')} bytes, p99 {status.get('latency_p99_seconds')} s)"
            )
        time.sleep(interval_s)


def _deployment(args: Mapping[str, Any]) -> str:
    deployment = str(args.get("deployment") or args.get("target") or "")
    if not deployment:
        raise ValueError("no deployment: give `deployment` or `target`")
    return deployment


def _platform_request(
    method: str, args: Mapping[str, Any], env: Mapping[str, str], path: str, doing: str
) -> dict[str, Any]:
    """One call to the platform API with the Vault-issued token; errors name the deployment
    and the HTTP status, never the token."""
    base = str(args.get("url") or env.get("PLATFORM_URL") or "").rstrip("/")
    if not base:
        raise ValueError("no platform url: give `url` or issue PLATFORM_URL")
    token = env.get("PLATFORM_TOKEN")
    if not token:
        raise PermissionError(
            "PLATFORM_TOKEN is not in the step's environment (issue it from Vault)"
        )
    deployment = path.split("/", 1)[0]
    try:
        response = requests.request(
            method,
            f"{base}/v1/deployments/{quote(path, safe='/')}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except requests.RequestException as exc:
        raise RuntimeError(
            f"platform at {base} unreachable {doing} deployment {deployment!r}: "
            f"{type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise RuntimeError(
            f"platform answered {response.status_code} {doing} deployment {deployment!r}"
        )
    body = response.json()
    if not isinstance(body, dict):
        raise RuntimeError(f"platform answered no object {doing} deployment {deployment!r}")
    return body


def noop(args: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Does nothing and echoes its arguments: for trying a playbook's flow end to end."""
    return {"args": dict(args)}


ACTIONS: dict[str, Action] = {
    "clear_queue": clear_queue,
    "noop": noop,
    "platform_restart": platform_restart,
    "platform_wait_healthy": platform_wait_healthy,
}
