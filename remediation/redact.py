"""Redaction of secret values from any text a step produces, before it is stored or shown.

A value is hidden in the forms it commonly appears in: as is, URL-encoded, JSON-escaped and
base64-encoded (also inside a longer base64 string, e.g. a Basic auth header). Values of
environment variables whose names say they are secret (*TOKEN*, *PASSWORD*, *SECRET*, *KEY*)
are redacted too, and so is anything shaped like a Vault token.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
SENSITIVE_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|KEY|CREDENTIAL", re.IGNORECASE)
# hvs./hvb./hvr. (Vault) and s./b./r. (OpenBao, older Vault) service/batch/recovery tokens.
_VAULT_TOKEN = re.compile(r"\b(?:hv[sbr]\.[A-Za-z0-9_-]{20,}|[sbr]\.[A-Za-z0-9]{24,})\b")
# base64 fragments shorter than this are too likely to match innocent text.
_MIN_FRAGMENT = 8


def is_sensitive_name(name: str) -> bool:
    return bool(SENSITIVE_NAME.search(name))


def sensitive_env_values(env: Mapping[str, str]) -> list[str]:
    """Values of the variables whose names mark them as secret."""
    return [value for name, value in env.items() if value and is_sensitive_name(name)]


def _base64_fragments(raw: bytes) -> set[str]:
    """The base64 text of `raw` at each of the three byte alignments it can have inside a
    longer encoded string (standard and URL-safe alphabets, padded and not)."""
    out: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        out.add(whole)
        out.add(whole.rstrip("="))
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw).decode("ascii")
            start = -(-shift * 8 // 6)  # characters touched by the unknown prefix
            end = (shift + len(raw)) // 3 * 4  # complete groups only
            fragment = encoded[start:end]
            if len(fragment) >= _MIN_FRAGMENT:
                out.add(fragment)
    return {f for f in out if len(f) >= _MIN_FRAGMENT or f == whole}


def forms(value: str) -> set[str]:
    """Every spelling of `value` that is redacted."""
    found = {value, quote(value, safe=""), quote(value), quote_plus(value)}
    found.add(json.dumps(value)[1:-1])
    found |= _base64_fragments(value.encode("utf-8"))
    return {f for f in found if f}


class Redactor:
    """Replaces every known secret (in all its forms) with ***."""

    def __init__(self, secrets: Iterable[str] = (), env: Mapping[str, str] | None = None) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)
        if env:
            self.add(sensitive_env_values(env))

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if s}
        if new - self._values:
            self._values |= new
            spellings = set().union(*(forms(v) for v in self._values))
            ordered = sorted(spellings, key=len, reverse=True)  # longest first
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _VAULT_TOKEN.sub(MASK, text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} value(s))"


def redact(text: str, secrets: Iterable[str] = (), env: Mapping[str, str] | None = None) -> str:
    """One-off redaction of `text`."""
    return Redactor(secrets, env)(text)


class LogRedaction:
    """Redacts the secrets of every running execution from all log records, whoever logs them
    (an action, a library): a log record factory formats and masks each record's message and
    traceback while at least one redactor is registered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[Redactor] = []
        self._previous: Callable[..., logging.LogRecord] | None = None

    def register(self, redactor: Redactor) -> None:
        with self._lock:
            self._active.append(redactor)
            if self._previous is None:
                self._previous = logging.getLogRecordFactory()
                logging.setLogRecordFactory(self._make)

    def unregister(self, redactor: Redactor) -> None:
        with self._lock:
            if redactor in self._active:
                self._active.remove(redactor)
            if not self._active and self._previous is not None:
                if logging.getLogRecordFactory() == self._make:
                    logging.setLogRecordFactory(self._previous)
                self._previous = None

    def _make(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        previous = self._previous or logging.LogRecord
        record = previous(*args, **kwargs)
        active = list(self._active)
        if not active:
            return record
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for redactor in active:
            message = redactor(message)
            if record.exc_text:
                record.exc_text = redactor(record.exc_text)
        record.msg, record.args = message, None
        return record


LOG_REDACTION = LogRedaction()
