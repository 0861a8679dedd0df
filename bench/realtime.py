"""Real-time latency and fan-out: REST PUT → Server-Sent Events and WebSocket delivery.

Usage::

    python -m bench.realtime [--subscribers 100] [--rate 1000] [--duration 10]
                             [--fanout 1000]

Steps:

1. Make a temporary app with one table (``Tick``) and start ``kiln run`` on a free
   loopback port.
2. The baseline: this machine's ``fsync`` latency (p50/p99) on the data folder's
   disk, 4 KiB written and synced at a time, measured just before the load.
3. Latency: ``--subscribers`` SSE clients (one process) and as many WebSocket clients
   (another process) each subscribe to their own record; wrk PUTs about ``--rate``
   writes per second to random ones of those records for ``--duration`` s (8
   connections, each pausing between requests), each body carrying its send time
   (``lua/timed_put.lua``). A subscriber's latency is delivery time minus send time
   (one machine, one clock), so it spans the HTTP request, the durable commit, the
   bus and the delivery; wrk's own latency is the PUT's acknowledgement. The target:
   PUT-to-delivery p99 ≤ fsync p99 + 5 ms.
4. Fan-out: ``--fanout`` SSE clients subscribe to one record; one PUT; the time from
   its send to the last delivery (and the median).

The subscribers run in processes of their own and the writer is wrk, so that no
client's event loop delays another's timestamps; on a 2-core machine they still share
the CPU with the server, so read the figures as an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.procs import free_port
from bench.rest import _AUTHORIZATION, _kiln_process
from bench.wrk import WrkResult, find_wrk, parse, progress

SCHEMA = """type Tick @table @export {
  id: Int @primaryKey
  sent: Float
  n: Int
}
"""
TARGET_MARGIN_MS = 5.0
"""The issue's target: PUT-to-delivery p99 within fsync p99 + 5 ms."""
FANOUT_RECORD = 0
"""The record every fan-out subscriber listens to (the latency records start at 1)."""


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fsync_latencies(directory: Path, count: int = 300) -> list[float]:
    """Milliseconds per 4 KiB write + fsync in ``directory`` (a fresh file, spread offsets)."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    found = []
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for i in range(count):
            os.pwrite(fd, block, (i * 7919 % 4096) * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            found.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return found


# --------------------------------------------------------------------------- subscribers


async def _sse_subscriber(
    client: httpx.AsyncClient, record: int, ready: asyncio.Event, latencies: list[float]
) -> None:
    headers = {"accept": "text/event-stream", "authorization": _AUTHORIZATION}
    async with client.stream("GET", f"/Tick/{record}?omitCurrent", headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"SSE /Tick/{record}: {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("id:") and not ready.is_set():
                ready.set()  # the end of the (empty) history: subscribed
            elif line.startswith("data:"):
                event = json.loads(line[5:])
                if event["type"] == "put":
                    latencies.append((time.time() - event["value"]["sent"]) * 1000)


async def _ws_subscriber(
    url: str, record: int, ready: asyncio.Event, latencies: list[float]
) -> None:
    headers = {"authorization": _AUTHORIZATION}
    async with websockets.connect(
        f"{url}/Tick/{record}?omitCurrent", additional_headers=headers
    ) as connection:
        ready.set()  # connect() subscribes before the first message can be sent
        async for message in connection:
            event = json.loads(message)
            if event["type"] == "put":
                latencies.append((time.time() - event["value"]["sent"]) * 1000)


def subscribe_and_collect(
    kind: str, url: str, records: list[int], ready: EventType, stop: EventType, out: Any
) -> None:
    """A process: subscribe to ``records`` over ``kind`` (sse, ws), set ``ready``, collect
    latencies until ``stop``, then put them on ``out``."""

    async def main() -> list[float]:
        latencies: list[float] = []
        events = [asyncio.Event() for _ in records]
        limits = httpx.Limits(max_connections=len(records) + 10)
        async with httpx.AsyncClient(
            base_url=url, timeout=None, limits=limits, trust_env=False
        ) as client:
            if kind == "sse":
                tasks = [
                    asyncio.create_task(_sse_subscriber(client, record, event, latencies))
                    for record, event in zip(records, events, strict=True)
                ]
            else:
                ws_url = url.replace("http://", "ws://")
                tasks = [
                    asyncio.create_task(_ws_subscriber(ws_url, record, event, latencies))
                    for record, event in zip(records, events, strict=True)
                ]
            for event in events:
                await event.wait()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
                failed = [task for task in tasks if task.done() and task.exception()]
                if failed:
                    raise RuntimeError(f"a {kind} subscriber failed: {failed[0].exception()}")
            for task in tasks:
                task.cancel()
        return latencies

    out.put(asyncio.run(main()))


WRITERS = 8
"""wrk connections writing; each pauses between requests to hold the asked rate."""
ANSWER_MS = 2
"""About how long a PUT takes to be answered here: each connection pauses that much less, so
the writes come near the asked rate (the report prints the rate reached)."""
TIMED_PUT = Path(__file__).resolve().parent / "lua" / "timed_put.lua"


def write_at_rate(url: str, records: int, rate: int, duration: float) -> WrkResult:
    """PUT about ``rate`` writes per second to ``/Tick/<1..records>`` for ``duration`` s with
    wrk, each body stamped with its send time (C and LuaJIT: the writer's own cost stays
    out of the latencies)."""
    executable = find_wrk()
    if executable is None:
        raise RuntimeError("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)")
    pause_ms = max(0, round(WRITERS * 1000 / rate - ANSWER_MS))
    command = [
        executable,
        "--threads=2",
        f"--connections={WRITERS}",
        f"--duration={max(1, round(duration))}s",
        "--timeout=10s",
        "--latency",
        f"--script={TIMED_PUT}",
        url,
        "--",
        str(records),
        "/Tick/",
        str(pause_ms),
        _AUTHORIZATION,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk exited with {finished.returncode}:\n{finished.stdout}")
    return parse(finished.stdout + finished.stderr)


# --------------------------------------------------------------------------- phases


def latency_phase(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the subscriber processes and the writes: the latencies (ms) by protocol, and wrk's
    result for the writes."""
    context = multiprocessing.get_context("spawn")
    records = list(range(1, args.subscribers + 1))
    stop = context.Event()
    results: dict[str, Any] = {}
    processes = []
    outs = {}
    for kind in ("sse", "ws"):
        ready, out = context.Event(), context.Queue()
        process = context.Process(
            target=subscribe_and_collect, args=(kind, url, records, ready, stop, out)
        )
        process.start()
        processes.append(process)
        outs[kind] = out
        if not ready.wait(60):
            raise RuntimeError(f"the {kind} subscribers did not all subscribe within 60 s")
    writes = write_at_rate(url, len(records), args.rate, args.duration)
    time.sleep(1.0)  # the last deliveries
    stop.set()
    for kind, out in outs.items():
        results[kind] = out.get(timeout=60)
    for process in processes:
        process.join(10)
    results["writes"] = writes
    return results


def fanout_phase(url: str, subscribers: int) -> tuple[float, float, int]:
    """One PUT to ``subscribers`` SSE clients: (ms to the last delivery, median ms, received)."""
    context = multiprocessing.get_context("spawn")
    ready, stop, out = context.Event(), context.Event(), context.Queue()
    process = context.Process(
        target=subscribe_and_collect,
        args=("sse", url, [FANOUT_RECORD] * subscribers, ready, stop, out),
    )
    process.start()
    try:
        if not ready.wait(120):
            raise RuntimeError(f"{subscribers} SSE subscribers did not subscribe within 120 s")
        body = json.dumps({"sent": time.time(), "n": -1})
        headers = {"content-type": "application/json", "authorization": _AUTHORIZATION}
        response = httpx.put(
            f"{url}/Tick/{FANOUT_RECORD}", content=body, headers=headers, trust_env=False
        )
        if response.status_code != 204:
            raise RuntimeError(f"PUT /Tick/{FANOUT_RECORD}: {response.status_code}")
        time.sleep(3.0)
        stop.set()
        latencies = out.get(timeout=60)
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    return max(latencies, default=0.0), percentile(latencies, 0.5), len(latencies)


# --------------------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    fsync: list[float],
    latency: dict[str, Any],
    fanout: tuple[float, float, int],
) -> str:
    """The benchmark's printed report."""
    fsync_p99 = percentile(fsync, 0.99)
    lines = [
        f"real-time: {args.subscribers} SSE + {args.subscribers} WebSocket subscribers, "
        f"one record each; {latency['writes'].requests:,} PUTs at {latency['writes'].rate:,.0f}/s "
        f"(asked {args.rate:,}/s) for {args.duration:g} s",
        "",
        f"{'':28} {'p50 ms':>8} {'p99 ms':>8} {'events':>8}",
        f"{'fsync (4 KiB, baseline)':28} {percentile(fsync, 0.5):8.2f} {fsync_p99:8.2f} "
        f"{len(fsync):8}",
    ]
    writes: WrkResult = latency["writes"]
    lines.append(
        f"{'PUT acknowledged (wrk)':28} {writes.p50_us / 1000:8.2f} {writes.p99_us / 1000:8.2f} "
        f"{writes.requests:8}"
    )
    verdicts = []
    for kind, name in (("sse", "PUT → SSE delivery"), ("ws", "PUT → WebSocket delivery")):
        values = latency[kind]
        p99 = percentile(values, 0.99)
        lines.append(f"{name:28} {percentile(values, 0.5):8.2f} {p99:8.2f} {len(values):8}")
        met = "met" if p99 <= fsync_p99 + TARGET_MARGIN_MS else "NOT met"
        verdicts.append(
            f"{name}: p99 {p99:.2f} ms vs fsync p99 + {TARGET_MARGIN_MS:g} ms = "
            f"{fsync_p99 + TARGET_MARGIN_MS:.2f} ms: target {met} "
            f"(ratio {p99 / (fsync_p99 + TARGET_MARGIN_MS):.2f})"
        )
        if len(values) < latency["writes"].requests:
            verdicts.append(
                f"WARNING: {name}: {len(values)} of {latency['writes'].requests} events arrived"
            )
    last, median, received = fanout
    lines += [
        "",
        *verdicts,
        "",
        f"fan-out: one PUT to {args.fanout:,} SSE subscribers of one record: last delivery "
        f"{last:.1f} ms after the PUT was sent (median {median:.1f} ms), "
        f"{received:,}/{args.fanout:,} delivered",
    ]
    if received < args.fanout:
        lines.append(f"WARNING: fan-out: {received} of {args.fanout} subscribers got the event")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.realtime",
        description="REST PUT to SSE/WebSocket delivery latency, and fan-out to many subscribers.",
    )
    parser.add_argument("--subscribers", type=int, default=100, help="subscribers per protocol")
    parser.add_argument("--rate", type=int, default=1000, help="PUTs per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of writes")
    parser.add_argument("--fanout", type=int, default=1000, help="SSE subscribers of one record")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    args = parser.parse_args(argv)
    if min(args.subscribers, args.rate, args.duration, args.fanout) <= 0:
        parser.error("--subscribers, --rate, --duration and --fanout must be positive")
    return args


def _raise_open_files_limit() -> None:
    """Allow enough sockets for the fan-out (the server inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if max(soft, hard) < 4096:
        progress(f"note: the open-files limit is {hard}; a large --fanout may fail")


def run(args: argparse.Namespace) -> str:
    """Run the whole benchmark and return the report."""
    _raise_open_files_limit()
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="kiln-bench-realtime-", dir=args.tmp))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        app_dir = root / "app"
        data_dir = root / "data"
        app_dir.mkdir()
        data_dir.mkdir()
        (app_dir / "schema.graphql").write_text(SCHEMA)
        (app_dir / "config.yaml").write_text("realtime:\n  subscriberQueue: 10000\n")
        kiln = stack.enter_context(_kiln_process(app_dir, data_dir, free_port(), root / "kiln.log"))
        kiln.start()
        progress("measuring fsync latency")
        fsync = fsync_latencies(data_dir)
        progress(f"latency: {args.subscribers} SSE + {args.subscribers} WebSocket subscribers")
        latency = latency_phase(kiln.url, args)
        progress(f"fan-out: {args.fanout} SSE subscribers")
        fanout = fanout_phase(kiln.url, args.fanout)
        if kiln.stop() != 0:
            raise RuntimeError(f"kiln did not stop cleanly:\n{kiln.log()}")
        return report(args, fsync, latency, fanout)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        print(run(args), flush=True)
    except KeyboardInterrupt:
        print("interrupted; servers stopped and temporary files removed", file=sys.stderr)
        return 130
    except (RuntimeError, httpx.HTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
