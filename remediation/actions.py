"""The explicit registry of Python actions a playbook step may name (`kind: python`).

Only what is listed in `ACTIONS` can run; a playbook naming anything else is refused when it is
loaded. An action receives the step's rendered `args` and the environment holding the
execution's Vault-issued secrets, and returns something JSON-serialisable for the step output
(redacted like every other output).
"""

from __future__ import annotations

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


def noop(args: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Does nothing and echoes its arguments: for trying a playbook's flow end to end."""
    return {"args": dict(args)}


ACTIONS: dict[str, Action] = {"clear_queue": clear_queue, "noop": noop}
