"""Redaction hides a secret in every common spelling, and leaves other text alone."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from remediation.redact import (
    LOG_REDACTION,
    MASK,
    Redactor,
    is_sensitive_name,
    redact,
    sensitive_env_values,
)

SECRET = "p@ss w/rd+Zq81&x=1"


@pytest.mark.parametrize(
    "spelling",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
    ],
)
def test_every_spelling_of_a_secret_is_masked(spelling: str) -> None:
    text = f"before {spelling} after"
    out = redact(text, [SECRET])
    assert spelling not in out
    assert out.startswith("before ") and out.endswith(" after") and MASK in out


@pytest.mark.parametrize("prefix", ["", "a", "ab", "user:", "admin-user:"])
def test_a_secret_inside_a_longer_base64_string_is_masked(prefix: str) -> None:
    header = "Basic " + base64.b64encode(f"{prefix}{SECRET}".encode()).decode()
    out = redact(header, [SECRET])
    # What is left cannot be decoded back to the secret.
    assert out != header and MASK in out
    leftover = out.removeprefix("Basic ").replace(MASK, "")
    assert SECRET not in leftover


def test_values_of_variables_named_as_secrets_are_masked() -> None:
    env = {
        "DB_PASSWORD": "hunter2hunter2",
        "GITHUB_TOKEN": "ghp_abcdefabcdef",
        "API_KEY": "k-123456",
        "CLIENT_SECRET": "cs-99999",
        "MODE": "production",
    }
    assert sorted(sensitive_env_values(env)) == sorted(
        ["hunter2hunter2", "ghp_abcdefabcdef", "k-123456", "cs-99999"]
    )
    text = " ".join(env.values())
    out = Redactor(env=env)(text)
    assert out == "*** *** *** *** production"
    assert is_sensitive_name("pg_passwd") and not is_sensitive_name("REPLICAS")


def test_vault_shaped_tokens_are_masked_even_when_unknown() -> None:
    text = "token hvs.CAESIJ3x0aBcDeFgHiJkLmNoPqRsTuV and s.AbCdEfGhIjKlMnOpQrStUvWx1 end"
    assert Redactor()(text) == "token *** and *** end"


def test_longest_first_and_unrelated_text_untouched() -> None:
    redactor = Redactor(["abcd1234", "abcd1234-longer"])
    assert redactor("x abcd1234-longer y abcd1234 z") == "x *** y *** z"
    assert (
        redactor("nothing secret here: deployment/cart") == "nothing secret here: deployment/cart"
    )


def test_added_secrets_take_effect_and_repr_shows_no_values() -> None:
    redactor = Redactor()
    redactor.add(["late-secret-value"])
    assert redactor("a late-secret-value b") == "a *** b"
    assert "late-secret-value" not in repr(redactor)


def test_log_records_are_redacted_while_an_execution_holds_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("some.library")
    redactor = Redactor(["s3cr3t-value-1"])
    LOG_REDACTION.register(redactor)
    try:
        logger.warning("connecting with %s", "s3cr3t-value-1")
        try:
            raise RuntimeError("boom s3cr3t-value-1")
        except RuntimeError:
            logger.exception("failed")
    finally:
        LOG_REDACTION.unregister(redactor)
    logger.warning("after: %s", "s3cr3t-value-1")  # no execution running: untouched
    text = caplog.text
    assert "connecting with ***" in text and "boom ***" in text
    assert text.count("s3cr3t-value-1") == 1 and "after: s3cr3t-value-1" in text
