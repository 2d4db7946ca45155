"""Schemathesis over the running service's own OpenAPI document: no input a client may send
makes a 5xx, every answer is documented (status, content type, schema), and input the schema
calls valid is not refused with a 422."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.test_processes import _token, started  # noqa: F401
from tests.e2e.test_ui_browser import _serve

pytestmark = pytest.mark.timeout(240)

#: Examples per operation and mode: enough to reach every parameter's edges (schemathesis
#: starts from boundary values), few enough for the whole run to stay near a minute on 2 cores.
EXAMPLES = 30
#: What every answer must be, whatever was sent.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: OTLP intake: the schema can only say "bytes" (protobuf) and "an object" (OTLP JSON), so what
#: schemathesis generates for it is not a valid export, and OTLP's own 400 for it is right; there
#: it checks that nothing is a 5xx and every status is documented, not that the input is accepted.
OTLP = "/v1/traces"


def _fuzz(operation: Any, mode: GenerationMode, token: str, checks: list[Any]) -> str | None:
    """Run one operation's examples; the first failure as text (with a curl line), or None."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same inputs on every run: a failure reproduces
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the time stays bounded
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, checks=checks, timeout=30
        )

    try:
        run()
    except FailureGroup as exc:  # each failed check's message, the response and a curl line
        return f"{operation.label} [{mode.value}]: {exc}"
    except Unsatisfiable:  # negative mode on an operation that takes nothing: no wrong input
        assert mode is GenerationMode.NEGATIVE, operation.label
    return None


def _operations(base: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _report(failures: list[str], started_at: float, count: int) -> None:
    took = time.monotonic() - started_at
    if failures:  # pytest.fail prints the whole text, where an assert's message is cut
        pytest.fail(
            f"{len(failures)} of {count} runs failed ({took:.0f} s):\n\n" + "\n\n".join(failures)
        )


def test_every_operation_as_admin(tmp_path: Path, started: list) -> None:  # noqa: F811
    """Admin may call every route: each operation with valid inputs (which must not be refused)
    and with invalid ones (which must be refused as documented, never with a 5xx)."""
    base, env, _ = _serve(tmp_path, started)
    admin = _token(tmp_path, env, role="admin")
    operations = _operations(base)
    assert len(operations) >= 30  # the whole document was read, not a part of it
    begin, failures, runs = time.monotonic(), [], 0
    for operation in operations:
        positive = (
            CONFORMANCE if operation.path == OTLP else [*CONFORMANCE, positive_data_acceptance]
        )
        for mode, checks in (
            (GenerationMode.POSITIVE, positive),
            (GenerationMode.NEGATIVE, CONFORMANCE),
        ):
            runs += 1
            failure = _fuzz(operation, mode, admin, checks)
            if failure:
                failures.append(failure)
    _report(failures, begin, runs)
    # The service survived it: still ready, still answering.
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200


def test_read_routes_as_viewer(tmp_path: Path, started: list) -> None:  # noqa: F811
    """A viewer's reads are answered as documented too, with what a viewer may see."""
    base, env, _ = _serve(tmp_path, started)
    viewer = _token(tmp_path, env, role="viewer")
    reads = [op for op in _operations(base) if op.method.upper() == "GET"]
    assert len(reads) >= 20
    begin, failures = time.monotonic(), []
    for operation in reads:
        failure = _fuzz(
            operation, GenerationMode.POSITIVE, viewer, [*CONFORMANCE, positive_data_acceptance]
        )
        if failure:
            failures.append(failure)
    _report(failures, begin, len(reads))
