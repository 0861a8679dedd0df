"""Server subprocesses for the benchmarks: start on a free loopback port, wait, always stop."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback requests never go through an ``http_proxy`` from the environment."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """One server subprocess on ``127.0.0.1:port``, its output going to ``log_path``.

    Use it as a context manager (or call :meth:`stop`): the process is stopped
    whatever happens, with SIGTERM, then SIGKILL if it does not exit in time.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.command = list(command)
        self.port = port
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, health_path: str = "/_health", timeout: float = 30.0) -> None:
        """Start the process and wait until ``health_path`` answers 200.

        Raises:
            RuntimeError: the process exited or did not answer in time (its log is included).
        """
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # A group of its own, so a Ctrl-C reaches the benchmark only (it stops us),
                # but not a session of its own: Linux shares the CPU fairly between sessions
                # (autogroups), which would cap each server at half the machine against wrk.
                process_group=0,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                with _NO_PROXY.open(self.url + health_path, timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s:\n{self.log()}")

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until each of kiln's ``count`` worker processes has answered ``/_health``.

        Every request goes on a new connection, which the kernel hands to any of them.

        Raises:
            RuntimeError: not every worker answered in time (the server's log is included).
        """
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: only workers {sorted(seen)} of {count} answered within "
                    f"{timeout:.0f}s:\n{self.log()}"
                )
            with _NO_PROXY.open(self.url + "/_health", timeout=5) as response:
                seen.add(json.load(response).get("worker", 1))

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; the exit code (None if never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        return process.returncode

    def log(self, tail: int = 4000) -> str:
        """The end of what the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
