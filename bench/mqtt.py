"""MQTT throughput of kiln's broker next to mosquitto, under the same load in the same run.

Usage::

    python -m bench.mqtt [--messages 200000] [--subscribers 100] [--fanout-messages 4000]
                         [--qos1-messages 50000] [--processes 4]

Scenarios, each run against kiln, then against mosquitto (Debian package ``mosquitto``,
started here on a loopback port):

1. QoS 0, one publisher → one subscriber: messages delivered per second.
2. QoS 0, one publisher → ``--subscribers`` subscribers of one topic: deliveries per second
   (every message counts once per subscriber).
3. QoS 1, one publisher → one subscriber: the publisher keeps :data:`WINDOW` messages
   waiting for their PUBACK, the subscriber acknowledges each message it gets.

The load runs in processes of its own (the subscribers of scenario 2 spread over
``--processes``), on raw sockets with kiln's codec, so the clients cost little: a publisher
writes pre-encoded packets, a subscriber counts bytes (every message has the same size) and
answers QoS 1 messages with PUBACKs. Both brokers get the same MQTT 3.1.1 packets.

kiln's topic is ``Bench/1``, a record of an exported table: every message goes through the
resource seam (``publish``) and is logged in the audit log, as every message to a record is.
QoS 0 messages a broker drops (a subscriber falling behind) are reported as lost.

The clients share the machine's cores with the broker being measured, so the absolute
figures are rough on a small machine; the ratio, measured under the same load one right
after the other, is the figure to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

from bench.procs import ServerProcess, free_port
from bench.wrk import progress
from kiln.mqtt import MQTT_3_1_1, Connect, Disconnect, Publish, Subscribe, Subscription, encode

TOPIC = "Bench/1"
PAYLOAD = b'{"reading":"0123456789abcdef"}'
"""Every message's payload: a small JSON document (so kiln's format check passes)."""

SCHEMA = "type Bench @table @export {\n  id: ID @primaryKey\n  reading: String\n}\n"

USER, PASSWORD = "bench", "bench-password"
"""kiln's super user (KILN_ADMIN_USER/PASSWORD); mosquitto allows anyone and ignores them."""

WINDOW = 100
"""QoS 1 messages the publisher keeps waiting for their PUBACK."""

TARGET = 0.3
"""The issue's target: kiln's QoS 0 throughput at least this fraction of mosquitto's."""

IDLE = 2.0
"""Seconds without data, after the publisher is done, that end a subscriber."""

_CONNECT_TIMEOUT = 10.0
_CHUNK = 512
"""QoS 0 packets a publisher writes at a time."""


# --------------------------------------------------------------------------- clients


def _connect(port: int, name: str) -> socket.socket:
    """A connected MQTT 3.1.1 client socket (CONNACK checked)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=_CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connect = Connect(
        protocol_level=MQTT_3_1_1,
        client_id=name,
        keep_alive=0,
        username=USER,
        password=PASSWORD.encode(),
    )
    sock.sendall(encode(connect, MQTT_3_1_1))
    connack = _read_exactly(sock, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"{name}: the broker refused the connection ({connack.hex()})")
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RuntimeError("the broker closed the connection")
        data += chunk
    return data


def _publish_packet(qos: int, packet_id: int = 1) -> bytes:
    publish = Publish(topic=TOPIC, payload=PAYLOAD, qos=qos, packet_id=packet_id if qos else None)
    return encode(publish, MQTT_3_1_1)


def subscriber(
    port: int,
    connections: int,
    qos: int,
    expected: int,
    ready: Any,
    published: EventType,
    results: Any,
) -> None:
    """Open ``connections`` subscribers of :data:`TOPIC`, count what they get, report
    ``(received, first, last)`` (``time.monotonic()`` of the first and last bytes)."""
    size = len(_publish_packet(qos))
    socks = []
    for _ in range(connections):
        sock = _connect(port, f"sub-{os.getpid()}-{len(socks)}")
        subscribe = Subscribe(
            packet_id=1, subscriptions=(Subscription(topic_filter=TOPIC, qos=qos),)
        )
        sock.sendall(encode(subscribe, MQTT_3_1_1))
        suback = _read_exactly(sock, 5)
        if suback[0] != 0x90 or suback[4] != qos:
            raise RuntimeError(f"the broker refused the subscription ({suback.hex()})")
        sock.setblocking(False)
        socks.append(sock)
    ready.put(connections)
    selector = selectors.DefaultSelector()
    pending = {sock: b"" for sock in socks}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    received = 0
    first = last = 0.0
    quiet_since: float | None = None
    offset = 2 + 2 + len(TOPIC)  # where a QoS 1 message's packet id is
    while received < expected * connections:
        events = selector.select(timeout=0.2)
        now = time.monotonic()
        if not events:
            if published.is_set():  # the publisher is done: wait out what is on its way
                quiet_since = quiet_since or now
                if now - quiet_since > IDLE:
                    break
            continue
        quiet_since = None
        for key, _ in events:
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(sock)
                continue
            if not first:
                first = now
            last = now
            buffered = pending[sock] + data
            whole = len(buffered) // size
            received += whole
            if qos:
                acks = b"".join(
                    b"\x40\x02" + buffered[start + offset : start + offset + 2]
                    for start in range(0, whole * size, size)
                )
                with contextlib.suppress(BlockingIOError):
                    sock.setblocking(True)
                    sock.sendall(acks)
                    sock.setblocking(False)
            pending[sock] = buffered[whole * size :]
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.sendall(encode(Disconnect(), MQTT_3_1_1))
            sock.close()
    results.put((received, first, last))


def publisher(port: int, qos: int, messages: int, go: EventType, results: Any) -> None:
    """Publish ``messages`` to :data:`TOPIC` once ``go`` is set; report ``(start, end)``."""
    sock = _connect(port, f"pub-{os.getpid()}")
    go.wait()
    start = time.monotonic()
    if qos == 0:
        chunk = _publish_packet(0) * _CHUNK
        sent = 0
        while sent + _CHUNK <= messages:
            sock.sendall(chunk)
            sent += _CHUNK
        sock.sendall(_publish_packet(0) * (messages - sent))
    else:
        packets = {pid: _publish_packet(1, pid) for pid in range(1, WINDOW + 1)}
        sent = min(WINDOW, messages)
        sock.sendall(b"".join(packets[pid] for pid in range(1, sent + 1)))
        acked = 0
        leftover = b""
        while acked < messages:
            data = leftover + sock.recv(65536)
            whole = len(data) // 4
            leftover = data[whole * 4 :]
            again = []
            for index in range(whole):
                acked += 1
                if sent < messages:
                    again.append(packets[int.from_bytes(data[index * 4 + 2 : index * 4 + 4])])
                    sent += 1
            if again:
                sock.sendall(b"".join(again))
    end = time.monotonic()
    sock.sendall(encode(Disconnect(), MQTT_3_1_1))
    sock.close()
    results.put((start, end))


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario against one broker."""

    published: int
    expected: int
    received: int
    seconds: float
    publish_seconds: float

    @property
    def rate(self) -> float:
        """Messages delivered per second (deliveries, for a fan-out)."""
        return self.received / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        """Deliveries that never arrived (a broker may drop QoS 0 messages)."""
        return self.expected - self.received


def run_scenario(port: int, qos: int, messages: int, subscribers: int, processes: int) -> Result:
    """Subscribers first, then one publisher; the deliveries counted at the subscribers."""
    context = multiprocessing.get_context("fork")
    ready, results, published_results = context.Queue(), context.Queue(), context.Queue()
    go, published = context.Event(), context.Event()
    spread = [subscribers // processes + (i < subscribers % processes) for i in range(processes)]
    workers = [
        context.Process(
            target=subscriber, args=(port, count, qos, messages, ready, published, results)
        )
        for count in spread
        if count
    ]
    pub = context.Process(target=publisher, args=(port, qos, messages, go, published_results))
    every = [*workers, pub]
    try:
        for worker in every:
            worker.start()
        connected = 0
        deadline = time.monotonic() + 60
        while connected < subscribers:
            connected += ready.get(timeout=max(0.1, deadline - time.monotonic()))
        go.set()
        start, end = published_results.get(timeout=600)
        published.set()
        counts = [results.get(timeout=600) for _ in workers]
    finally:
        go.set()
        published.set()
        for worker in every:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    received = sum(count for count, _first, _last in counts)
    last = max((last for _count, _first, last in counts), default=end)
    return Result(messages, messages * subscribers, received, max(last, end) - start, end - start)


# --------------------------------------------------------------------------- servers


class Mosquitto(ServerProcess):
    """``mosquitto`` on a loopback port, without persistence; ready once its port answers."""

    def __init__(self, port: int, root: Path):
        config = root / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nuser root\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        super().__init__("mosquitto", [binary, "-c", str(config)], port, root / "mosquitto.log")

    def start(self, health_path: str = "", timeout: float = 30.0) -> None:
        """Start it and wait until its MQTT port accepts connections."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode}:\n{self.log()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen within {timeout:.0f}s:\n{self.log()}")


def find_mosquitto() -> str | None:
    """The ``mosquitto`` executable, or None (Debian: apt-get install mosquitto)."""
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@contextlib.contextmanager
def _kiln(root: Path) -> Iterator[int]:
    """kiln serving a one-table app; yields its MQTT port."""
    app = root / "app"
    app.mkdir()
    (app / "schema.graphql").write_text(SCHEMA)
    port, mqtt_port = free_port(), free_port()
    env = {
        "KILN_MQTT_PORT": str(mqtt_port),
        "KILN_MQTT_WEBSOCKETPORT": str(free_port()),
        "KILN_LOGGING_LEVEL": "warning",
        "KILN_ADMIN_USER": USER,
        "KILN_ADMIN_PASSWORD": PASSWORD,
    }
    command = [sys.executable, "-m", "kiln", "run", str(app), "--port", str(port)]
    command += ["--data", str(root / "data")]
    with ServerProcess("kiln", command, port, root / "kiln.log", env) as kiln:
        kiln.start()
        yield mqtt_port
        if kiln.process is not None and kiln.process.poll() is not None:
            raise RuntimeError(f"kiln died during the benchmark:\n{kiln.log()}")


# --------------------------------------------------------------------------- report


def _scenarios(args: argparse.Namespace) -> list[tuple[str, int, int, int]]:
    """(name, QoS, messages, subscribers) of each scenario."""
    return [
        ("QoS 0, 1 -> 1", 0, args.messages, 1),
        (f"QoS 0, 1 -> {args.subscribers}", 0, args.fanout_messages, args.subscribers),
        ("QoS 1, 1 -> 1", 1, args.qos1_messages, 1),
    ]


def run(args: argparse.Namespace) -> str:
    """Run every scenario against kiln, then mosquitto; the report."""
    results: dict[tuple[str, str], Result] = {}
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="kiln-bench-mqtt-", dir=args.tmp))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        for broker in ("kiln", "mosquitto"):
            folder = root / broker
            folder.mkdir()
            with contextlib.ExitStack() as running:
                if broker == "kiln":
                    port = running.enter_context(_kiln(folder))
                else:
                    mosquitto = running.enter_context(Mosquitto(free_port(), folder))
                    mosquitto.start()
                    port = mosquitto.port
                for name, qos, messages, subscribers in _scenarios(args):
                    progress(f"{broker}: {name}, {messages:,} messages")
                    result = run_scenario(port, qos, messages, subscribers, args.processes)
                    progress(f"{broker}: {result.rate:,.0f} msgs/s, {result.lost:,} lost")
                    results[(broker, name)] = result
    return report(args, results)


def report(args: argparse.Namespace, results: dict[tuple[str, str], Result]) -> str:
    """The printed summary: a row per scenario and broker, the ratios, machine info."""
    lines = [
        f"MQTT throughput: kiln next to mosquitto (clients in their own processes; "
        f"{args.processes} subscriber processes for the fan-out)",
        "",
        f"{'scenario':<24} {'broker':<10} {'msgs/s':>10} {'delivered':>12} {'lost':>9}",
    ]
    ratios = []
    for name, qos, _messages, _subscribers in _scenarios(args):
        for broker in ("kiln", "mosquitto"):
            result = results[(broker, name)]
            lines.append(
                f"{name:<24} {broker:<10} {result.rate:>10,.0f} {result.received:>12,} "
                f"{result.lost:>9,}"
            )
        kiln, mosquitto = results[("kiln", name)], results[("mosquitto", name)]
        ratio = kiln.rate / mosquitto.rate if mosquitto.rate else 0.0
        line = f"ratio {name}: kiln / mosquitto = {ratio:.2f}"
        if qos == 0:
            line += f"  (target >= {TARGET:.2f}: {'met' if ratio >= TARGET else 'NOT met'})"
        ratios.append(line)
    lines += ["", *ratios, "", *machine_info()]
    return "\n".join(lines)


def machine_info() -> list[str]:
    """Lines describing where the numbers come from."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    versions = []
    for package in ("granian", "msgspec", "lmdb", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    mosquitto = subprocess.run(
        [find_mosquitto() or "mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return [
        f"machine:   nproc {os.cpu_count()} ({usable} usable), {platform.platform()}, "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        f"python:    {platform.python_implementation()} {platform.python_version()}; "
        + ", ".join(versions),
        f"mosquitto: {mosquitto[0] if mosquitto else 'unknown'}",
    ]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt", description="MQTT throughput of kiln next to mosquitto."
    )
    parser.add_argument("--messages", type=int, default=200_000, help="QoS 0 1 -> 1 messages")
    parser.add_argument("--subscribers", type=int, default=100, help="the fan-out's subscribers")
    parser.add_argument(
        "--fanout-messages", type=int, default=4000, help="messages published to the fan-out"
    )
    parser.add_argument("--qos1-messages", type=int, default=50_000, help="QoS 1 messages")
    parser.add_argument("--processes", type=int, default=4, help="subscriber processes (fan-out)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    args = parser.parse_args(argv)
    numbers = (args.messages, args.subscribers, args.fanout_messages, args.qos1_messages)
    if min(*numbers, args.processes) < 1:
        parser.error("every count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report; the process exit code."""
    args = _parse_args(argv)
    if find_mosquitto() is None:
        print("error: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    try:
        text = run(args)
    except KeyboardInterrupt:
        print("interrupted; brokers stopped and temporary files removed", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
