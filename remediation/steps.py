"""Running one rendered playbook step: HTTP call, command (argv, no shell), registered Python
action, or wait-until a PromQL condition holds. Each has a timeout; output is bounded and
redacted before it leaves this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.process
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import requests

from core.errors import ErrorKind, PrognosError
from remediation.playbooks import CommandStep, HttpStep, PythonStep, Step, Verify
from remediation.redact import Redactor

# An action gets the step's args and the execution's environment (issued secrets included).
Action = Callable[[Mapping[str, Any], Mapping[str, str]], Any]
PrometheusQuery = Callable[[str], bool]

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_OUTPUT = 64 * 1024
_KILL_GRACE_S = 2.0


class StepValidationError(PrognosError):
    """A step cannot run at all (unknown action): found before anything runs."""

    code = "step_invalid"
    kind = ErrorKind.INVALID


@dataclass(frozen=True)
class StepResult:
    ok: bool
    output: str  # redacted and bounded
    exit_code: int | None = None
    error: str | None = None  # redacted; why it failed


@dataclass
class StepContext:
    redactor: Redactor
    secret_env: Mapping[str, str]
    actions: Mapping[str, Action]
    prometheus_query: PrometheusQuery | None = None
    max_output: int = MAX_OUTPUT
    stop: threading.Event | None = None  # set when the executor shuts down


def check_actions(steps: Iterable[Step], actions: Mapping[str, Action]) -> None:
    """Every Python step names a registered action; raised before any step runs."""
    unknown = sorted(
        {s.action for s in steps if isinstance(s, PythonStep) and s.action not in actions}
    )
    if unknown:
        raise StepValidationError(
            f"unknown action(s) {', '.join(unknown)}; registered: {', '.join(sorted(actions))}"
        )


def command_env(step: CommandStep, secret_env: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: PATH and locale, the playbook's env, then the issued secrets."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update(step.env)
    env.update(secret_env)
    return env


def describe(step: Step | Verify, secret_env_names: Iterable[str] = ()) -> dict[str, Any]:
    """What would run (for dry runs): rendered argv/url/query and env variable NAMES only."""
    if isinstance(step, Verify):
        return {"kind": "verify", "query": step.query, "timeout_s": step.timeout.total_seconds()}
    base: dict[str, Any] = {
        "kind": step.kind,
        "name": step.name,
        "timeout_s": step.timeout.total_seconds(),
    }
    if isinstance(step, HttpStep):
        base.update(method=step.method, url=step.url, headers=sorted(step.headers))
    elif isinstance(step, CommandStep):
        names = sorted({"PATH", *step.env, *secret_env_names})
        base.update(argv=list(step.argv), env=names)
    elif isinstance(step, PythonStep):
        base.update(action=step.action, args=sorted(step.args))
    else:
        base.update(query=step.query)
    return base


def run_step(step: Step, ctx: StepContext) -> StepResult:
    if isinstance(step, HttpStep):
        return _run_http(step, ctx)
    if isinstance(step, CommandStep):
        return _run_command(step, ctx)
    if isinstance(step, PythonStep):
        return _run_python(step, ctx)
    return wait_until(step.query, step.timeout.total_seconds(), step.interval.total_seconds(), ctx)


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [truncated {len(text) - limit} characters]"


def _run_http(step: HttpStep, ctx: StepContext) -> StepResult:
    timeout = step.timeout.total_seconds()
    try:
        response = requests.request(
            step.method,
            step.url,
            headers=dict(step.headers),
            data=None if step.body is None else step.body.encode("utf-8"),
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.exceptions.Timeout:
        return StepResult(False, "", error=f"HTTP {step.method} timed out after {timeout:g}s")
    except requests.exceptions.RequestException as exc:
        return StepResult(
            False, "", error=ctx.redactor(f"HTTP request failed: {type(exc).__name__}")
        )
    body = _bounded(response.text, ctx.max_output)
    output = ctx.redactor(f"HTTP {response.status_code}\n{body}")
    ok = response.status_code in step.expect_status
    error = None if ok else f"HTTP {response.status_code} not in {step.expect_status}"
    return StepResult(ok, output, exit_code=response.status_code, error=error)


class _Collector:
    """Drains a pipe, keeping at most `limit` bytes (the head) and counting the rest."""

    def __init__(self, pipe: Any, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.kept = 0
        self.dropped = 0
        self.thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self.thread.start()

    def _drain(self, pipe: Any) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                keep = max(0, min(self.limit - self.kept, len(chunk)))
                if keep:
                    self.chunks.append(chunk[:keep])
                self.kept += keep
                self.dropped += len(chunk) - keep

    def text(self) -> str:
        self.thread.join(timeout=5)
        text = b"".join(self.chunks).decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n… [truncated {self.dropped} bytes]"
        return text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's whole process group, SIGKILL it after a short grace."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return cast(Callable[..., int], libc.prctl)
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """For the child before exec: SIGKILL it when the thread that started it dies, so a
    killed executor leaves no step running with its credentials (Linux only)."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(137)

    return arm


def _run_command(step: CommandStep, ctx: StepContext) -> StepResult:
    timeout = step.timeout.total_seconds()
    env = command_env(step, ctx.secret_env)
    try:
        proc = subprocess.Popen(
            list(step.argv),
            env=env,
            shell=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole on timeout
            close_fds=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    except OSError as exc:
        message = f"cannot start {step.argv[0]!r}: {exc.strerror or type(exc).__name__}"
        return StepResult(False, "", error=ctx.redactor(message))
    collector = _Collector(proc.stdout, ctx.max_output)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    # Nothing the step started may outlive it (still holding its credentials).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    output = ctx.redactor(collector.text())
    if timed_out:
        return StepResult(
            False,
            output,
            exit_code=proc.returncode,
            error=f"timed out after {timeout:g}s; its process group was killed",
        )
    ok = proc.returncode == 0
    error = None if ok else f"exited with status {proc.returncode}"
    return StepResult(ok, output, exit_code=proc.returncode, error=error)


# Actions run in a forked child: a thread cannot be killed, and an action that overran its
# timeout must not keep running with the execution's secrets while the rollback runs. Fork (not
# spawn) so that any registered callable runs as it is, closures included, with no pickling.
_FORK = multiprocessing.get_context("fork")
_POLL_S = 0.2  # how often a running action checks whether the executor is stopping


def _action_child(
    action: Action,
    args: dict[str, Any],
    env: dict[str, str],
    conn: Connection,
    parent: int,
    limit: int,
) -> None:
    """In the child: its own process group (killed as a whole), dead with the executor, and
    only text goes back through the pipe."""
    os.setsid()
    arm = _die_with_parent(parent)
    if arm is not None:
        arm()
    try:
        value = action(args, env)
        conn.send(("ok", "" if value is None else _bounded(str(value), limit)))
    except BaseException as exc:  # reported as the step's failure
        conn.send(("raised", type(exc).__name__, _bounded(f"{type(exc).__name__}: {exc}", limit)))
    finally:
        conn.close()


def _kill_child(proc: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL the action's process group (and the child itself, should it not have made its
    group yet), then reap it: nothing it started outlives the step."""
    assert proc.pid is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.join()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run_python(step: PythonStep, ctx: StepContext) -> StepResult:
    action = ctx.actions.get(step.action)
    if action is None:
        return StepResult(False, "", error=f"unknown action {step.action!r}")
    timeout = step.timeout.total_seconds()
    reader, writer = _FORK.Pipe(duplex=False)
    proc = _FORK.Process(
        target=_action_child,
        args=(action, dict(step.args), dict(ctx.secret_env), writer, os.getpid(), ctx.max_output),
        name=f"action-{step.action}",
        daemon=True,
    )
    proc.start()
    writer.close()  # the child holds the only writing end: EOF once it is gone
    message: tuple[Any, ...] | None = None
    deadline = time.monotonic() + timeout
    stopped = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if ctx.stop is not None and ctx.stop.is_set():
                stopped = True
                break
            if reader.poll(min(left, _POLL_S)):
                with contextlib.suppress(EOFError, OSError):
                    message = reader.recv()
                break
    finally:
        reader.close()
        _kill_child(proc)
    if stopped:
        return StepResult(False, "", error="executor stopped; the action's process was killed")
    if message is None and time.monotonic() >= deadline:
        return StepResult(
            False, "", error=f"action timed out after {timeout:g}s; its process was killed"
        )
    if message is None:
        return StepResult(
            False, "", exit_code=proc.exitcode, error=f"action {step.action} died without a result"
        )
    if message[0] == "raised":
        text = ctx.redactor(str(message[2]))
        return StepResult(False, text, error=f"action {step.action} raised {message[1]}")
    return StepResult(True, ctx.redactor(str(message[1])))


def wait_until(query: str, timeout_s: float, interval_s: float, ctx: StepContext) -> StepResult:
    """Poll a PromQL condition until it holds or `timeout_s` passes."""
    if ctx.prometheus_query is None:
        return StepResult(False, "", error="no Prometheus query function is configured")
    deadline = time.monotonic() + timeout_s
    attempts, last_error = 0, None
    while True:
        attempts += 1
        try:
            if ctx.prometheus_query(query):
                return StepResult(True, f"condition held after {attempts} check(s)")
        except Exception as exc:
            last_error = type(exc).__name__
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pause = min(max(interval_s, 0.01), left)
        if ctx.stop is not None:
            if ctx.stop.wait(pause):
                return StepResult(False, "", error="executor stopped while waiting")
        else:
            time.sleep(pause)
    detail = f" (last error: {last_error})" if last_error else ""
    return StepResult(
        False,
        f"condition did not hold in {attempts} check(s){detail}",
        error=f"condition did not hold within {timeout_s:g}s",
    )


def prometheus_condition(
    base_url: str, *, timeout_s: float = 10.0, session: requests.Session | None = None
) -> PrometheusQuery:
    """A `PrometheusQuery` over Prometheus' instant query API: the condition holds when the
    result is a non-empty vector (or a non-zero scalar). Query errors raise, so wait_until and
    verification keep polling until their timeout."""
    http = session or requests.Session()
    url = base_url.rstrip("/") + "/api/v1/query"

    def holds(query: str) -> bool:
        response = http.get(url, params={"query": query}, timeout=timeout_s)
        response.raise_for_status()
        data = response.json().get("data") or {}
        result = data.get("result")
        if data.get("resultType") == "scalar" and isinstance(result, list) and len(result) == 2:
            return float(result[1]) != 0.0
        return bool(result)

    return holds
