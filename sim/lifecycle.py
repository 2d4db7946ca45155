"""What the demo's background parts share: started and stopped explicitly or by `with`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import requests


class Lifecycle:
    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ChildServer(Lifecycle):
    """A server binary run as a child process in its own temporary home, on a loopback port:
    started, waited for until a URL answers 200, and stopped (the home removed)."""

    name = "server"

    def __init__(self, ready_timeout_s: float = 60.0) -> None:
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._home: Path | None = None
        self.port = 0
        self.url = ""

    def _spawn(self, argv: list[str], *, env: dict[str, str] | None = None) -> Path:
        """Start `argv` in the home `_new_home` made (output to `<home>/<name>.log`)."""
        assert self._home is not None
        with (self._home / f"{self.name}.log").open("ab") as log:
            self._proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self._home
            )
        return self._home

    def _new_home(self, prefix: str) -> Path:
        self._home = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        return self._home

    def _wait_ready(self, path: str, error: Callable[[str], Exception]) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise error(f"{self.name} exited at start:\n{self._log_tail()}")
            try:
                if requests.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise error(f"{self.name} not ready after {self._ready_timeout_s:g}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        if self._home is None or not (self._home / f"{self.name}.log").exists():
            return ""
        return (self._home / f"{self.name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
