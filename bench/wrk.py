"""Run ``wrk`` with the random-id Lua script and read the line its ``done`` hook prints; and what
every wrk benchmark shares: its command-line options, progress lines, alternating rounds."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
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


# --------------------------------------------------------------------------- shared by the benches


def progress(message: str) -> None:
    """A progress line on standard error (the report goes to standard output)."""
    print(message, file=sys.stderr, flush=True)


def load_arguments(prog: str, description: str, rounds: str) -> argparse.ArgumentParser:
    """A parser with the options of every wrk load benchmark (``rounds``: what alternates).

    ``--records``, ``--duration``, ``--warmup``, ``--connections``, ``--threads``,
    ``--rounds`` and ``--tmp``; add a benchmark's own before :func:`parse_load_arguments`.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--records", type=int, default=100_000, help="Dog records to seed")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--rounds", type=int, default=4, help=f"alternating {rounds} rounds (share --duration)"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    return parser


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    """``--workers``: kiln's ``http.workers``, by default the machine's cores."""
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="kiln's http.workers (default: the machine's cores); the bare app is measured "
        "with 1 process and with this many, and the faster is the baseline",
    )


def parse_load_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """The parsed options, checked (each count at least 1), the warm-up defaulted (2 s at most)."""
    args = parser.parse_args(argv)
    if min(args.records, args.duration, args.connections, args.threads, args.rounds) < 1:
        parser.error(
            "--records, --duration, --connections, --threads and --rounds must be at least 1"
        )
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    if args.warmup is None:
        args.warmup = min(2, args.duration)
    args.warmup = max(1, args.warmup)
    return args


def combined(runs: list[WrkResult]) -> WrkResult:
    """Several runs against one target as one result: totals, and the worst latencies."""
    first = runs[0]
    return dataclasses.replace(
        first,
        requests=sum(run.requests for run in runs),
        duration_us=sum(run.duration_us for run in runs),
        bytes=sum(run.bytes for run in runs),
        connect_errors=sum(run.connect_errors for run in runs),
        read_errors=sum(run.read_errors for run in runs),
        write_errors=sum(run.write_errors for run in runs),
        timeouts=sum(run.timeouts for run in runs),
        bad_status=sum(run.bad_status for run in runs),
        p50_us=max(run.p50_us for run in runs),
        p90_us=max(run.p90_us for run in runs),
        p99_us=max(run.p99_us for run in runs),
        max_us=max(run.max_us for run in runs),
        mean_us=sum(run.mean_us * run.requests for run in runs)
        / max(1, sum(r.requests for r in runs)),
    )


def alternate(
    loads: Mapping[str, Callable[[float], WrkResult]], args: argparse.Namespace
) -> dict[str, WrkResult]:
    """Each target warmed up once, then ``args.rounds`` rounds taking turns, sharing
    ``args.duration``; each result is the total of its rounds.

    The machine's speed drifts over a run, so targets measured in short alternating
    rounds feel the drift alike, and their ratio stays fair.
    """
    for name, load in loads.items():
        progress(f"{name}: warm-up {args.warmup} s")
        load(args.warmup)
    rounds: dict[str, list[WrkResult]] = {name: [] for name in loads}
    per_round = max(1.0, args.duration / args.rounds)
    for number in range(args.rounds):
        for name, load in loads.items():
            progress(f"{name}: round {number + 1}/{args.rounds}, {per_round:g} s")
            rounds[name].append(load(per_round))
            progress(f"{name}: {rounds[name][-1].rate:,.0f} req/s")
    return {name: combined(runs) for name, runs in rounds.items()}


def table(results: Mapping[str, WrkResult]) -> list[str]:
    """The report's table: a row per target (req/s, p50, p99, errors, requests)."""
    width = max(len("target"), *(len(name) for name in results)) + 2

    def ms(microseconds: float) -> str:
        return f"{microseconds / 1000:.2f} ms"

    rows = [
        f"{'target':<{width}} {'req/s':>10} {'p50':>10} {'p99':>10} {'non-2xx':>8} "
        f"{'sock err':>8} {'requests':>10}"
    ]
    for name, result in results.items():
        rows.append(
            f"{name:<{width}} {result.rate:>10,.0f} {ms(result.p50_us):>10} "
            f"{ms(result.p99_us):>10} {result.bad_status:>8} {result.socket_errors:>8} "
            f"{result.requests:>10,}"
        )
    return rows


def trailer(results: Mapping[str, WrkResult], info: list[str], compare: str) -> list[str]:
    """The report's end: warnings about the runs, the machine, and what to ``compare``."""
    return [
        "",
        *warnings(results),
        *info,
        "note: wrk shares the machine's cores with the server under load; "
        f"compare the {compare}, not the absolute rates",
    ]
