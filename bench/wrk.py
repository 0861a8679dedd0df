"""Run ``wrk`` with the random-id Lua script and read the line its ``done`` hook prints."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "lua" / "random_id.lua"
"""The Lua script: a random id in [1, N] per request and a machine-readable summary."""

_RESULT = re.compile(r"^BENCH (.*)$", re.MULTILINE)


class WrkError(RuntimeError):
    """``wrk`` is missing, failed, or printed no result line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one ``wrk`` run measured (latencies in microseconds)."""

    requests: int
    duration_us: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    bad_status: int
    """Responses with a status of 400 or more: what wrk reports as "Non-2xx or 3xx responses"."""
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    mean_us: float
    output: str
    """Everything wrk printed (with ``--latency``, its latency distribution)."""

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def socket_errors(self) -> int:
        """Connect, read and write errors and timeouts."""
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts


def find_wrk() -> str | None:
    """The path of the ``wrk`` executable, or None when it is not on PATH."""
    return shutil.which("wrk")


def parse(output: str) -> WrkResult:
    """Read the ``BENCH key=value ...`` line of the Lua ``done`` hook from wrk's output.

    Raises:
        WrkError: there is no such line.
    """
    match = _RESULT.search(output)
    if match is None:
        raise WrkError(f"wrk printed no result line:\n{output}")
    fields = dict(item.split("=", 1) for item in match.group(1).split())
    return WrkResult(
        requests=int(fields["requests"]),
        duration_us=int(fields["duration_us"]),
        bytes=int(fields["bytes"]),
        connect_errors=int(fields["connect"]),
        read_errors=int(fields["read"]),
        write_errors=int(fields["write"]),
        timeouts=int(fields["timeout"]),
        bad_status=int(fields["status"]),
        p50_us=int(fields["p50_us"]),
        p90_us=int(fields["p90_us"]),
        p99_us=int(fields["p99_us"]),
        max_us=int(fields["max_us"]),
        mean_us=float(fields["mean_us"]),
        output=output,
    )


def run_wrk(
    base_url: str,
    *,
    records: int,
    method: str,
    prefix: str,
    duration: float,
    connections: int,
    threads: int,
    body: str = "",
    authorization: str = "",
    accept: str = "",
    timeout_s: int = 5,
) -> WrkResult:
    """Load ``base_url`` for ``duration`` seconds: ``METHOD prefix<random id in [1, records]>``.

    Raises:
        WrkError: wrk is not on PATH, failed, or printed no result.
    """
    executable = find_wrk()
    if executable is None:
        raise WrkError("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    command = [
        executable,
        f"--threads={threads}",
        f"--connections={max(connections, threads)}",
        f"--duration={max(1, round(duration))}s",
        f"--timeout={timeout_s}s",
        "--latency",
        f"--script={SCRIPT}",
        base_url,
        "--",
        str(records),
        method,
        prefix,
        body,
        authorization,
        accept,
    ]
    try:
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + timeout_s + 30
        )
    except subprocess.TimeoutExpired as error:
        raise WrkError(f"wrk did not finish: {error}") from None
    output = finished.stdout + finished.stderr
    if finished.returncode != 0:
        raise WrkError(f"wrk exited with {finished.returncode}:\n{output}")
    return parse(output)


def warnings(results: Mapping[str, WrkResult]) -> list[str]:
    """A WARNING line for each run that measured errors or lost sockets instead of requests."""
    lines = []
    for name, result in results.items():
        if result.bad_status:
            lines.append(
                f"WARNING: {name} had {result.bad_status:,} non-2xx responses "
                f"(wrk counts statuses >= 400); the run measured errors, not requests"
            )
        if result.socket_errors:
            lines.append(
                f"WARNING: {name} had socket errors: connect {result.connect_errors}, "
                f"read {result.read_errors}, write {result.write_errors}, "
                f"timeout {result.timeouts}"
            )
    return lines


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the duration, so cleanup runs as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_benchmark(run: Callable[[], str], failures: tuple[type[Exception], ...] = ()) -> int:
    """Run a wrk benchmark and print its report; the process exit code.

    2 when wrk is missing, 130 on Ctrl-C, 1 on a ``WrkError``, a ``RuntimeError`` or one of
    ``failures``; SIGTERM exits after the same cleanup as Ctrl-C.
    """
    if find_wrk() is None:
        print("error: wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    try:
        with _terminate_as_exit():
            text = run()
    except KeyboardInterrupt:
        print("interrupted; servers stopped and temporary files removed", file=sys.stderr)
        return 130
    except SystemExit:
        print("terminated; servers stopped and temporary files removed", file=sys.stderr)
        raise
    except (RuntimeError, WrkError, *failures) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(text, flush=True)
    return 0
