"""REST throughput of kiln against a bare granian + LMDB server, measured in the same run.

Usage::

    python -m bench.rest [--records 100000] [--duration 10] [--connections 64] [--threads 2]
                         [--workers CORES]

Steps:

1. Copy ``examples/clinic`` and seed N Dog records: the ids past ``--http-seed``
   (default 10,000) offline with kiln's library, then ids 1..10,000 through a
   running server with 64 concurrent PUTs. Their rate is a side figure: it
   exercises group commit, though the Python client is the tighter limit (over
   HTTP alone, 100,000 records take well over a minute on 2 cores).
2. Start ``kiln run`` with ``--workers`` processes (``http.workers``, by default the
   machine's cores) and the bare baseline (:mod:`bench.bare_app`) on free loopback
   ports, the bare app twice when ``--workers`` is above 1: with one process and with
   as many; the ratios are taken to the faster.
3. Load them one after the other with ``wrk``, a random id in [1, N] per request
   and a warm-up run first: kiln ``GET /Dog/<id>``, the bare app's ``GET``, then
   kiln ``PUT /Dog/<id>``, first with the indexed values each record already has (an
   update, taking turns with the durable floor: :data:`FLOOR`), then with new ones
   (the worst case).
4. Print a table and kiln's ratios to the baseline, the targets next to them.

Every subprocess and temporary folder is removed at the end, also on Ctrl-C.

wrk runs on the same machine as the servers and takes part of its cores, so the
absolute numbers say little about a production machine; the ratios, measured
under the same conditions one right after the other, are the figures to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.procs import ServerProcess, free_port
from bench.wrk import (
    WrkResult,
    add_workers_argument,
    combined,
    load_arguments,
    parse_load_arguments,
    progress,
    run_benchmark,
    run_wrk,
    table,
    trailer,
)

ROOT = Path(__file__).resolve().parent.parent
CLINIC = ROOT / "examples" / "clinic"
TABLE = "Dog"

PUT_BODY = '{"name":"Rex","breed":"lab","weightKg":12.5}'
"""The body of the second benchmarked PUT: a small valid Dog that changes every indexed value
of the seeded record it replaces (breed, ownerId, tags): the worst case, five index pages.
Each such write dirties pages all over the file, so this figure is bound by how fast the disk
syncs scattered pages (``fdatasync`` of 200 random 4 KiB pages: ~6 ms on the project's
machine), not by kiln's code."""

UPDATE_BODY = (
    '{"name":"Dog {id}","breed":"{breed}","ownerId":"owner-{owner}","tags":{tags},"weightKg":12.5}'
)
"""The body of the first benchmarked PUT: the record with the indexed values it was seeded
with (the Lua script fills them in from the id like :func:`dog`), so only the record and its
audit entry are written: the common case of an update. It runs first, while every record
still holds its seeded values."""

FORMATS = {"kiln GET cbor": "application/cbor", "kiln GET msgpack": "application/x-msgpack"}
"""GET by id in the other formats kiln answers, measured next to JSON in the same run."""

TARGETS = {"kiln GET": 0.60, "kiln PUT": 0.25, "kiln PUT update": 0.25}
"""The issue's targets: kiln's throughput as a fraction of the bare server's GET throughput."""

FLOOR = "bare durable PUT"
"""The floor of a durable write here: the bare app storing each PUT's bytes with group commit
as kiln commits (``bench.bare_app --durable-put``), on a copy of the data, in turns with
kiln's update. Its ratio to the bare GET is what a durable PUT reaches on this machine and
disk with none of kiln's work: kiln's PUT does everything it does, and more."""

ADMIN_USER = "bench"
ADMIN_PASSWORD = "bench-password"
"""Given to kiln as KILN_ADMIN_USER/PASSWORD (the super user it creates at first start) and
sent as Basic auth, so the benchmark measures served requests, not 401s."""

_AUTHORIZATION = "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()

_BREEDS = ("lab", "beagle", "collie", "poodle", "boxer", "husky", "pug", "terrier")
_CITIES = ("Leeds", "York", "Hull", "Bath", "Ely", "Wells")


def dog(i: int) -> dict[str, Any]:
    """A varied, valid Dog record (every attribute of the clinic schema but the server-set ones)."""
    return {
        "name": f"Dog {i}",
        "breed": _BREEDS[i % len(_BREEDS)],
        "ownerId": f"owner-{i % 5000}",
        "birthday": f"{2010 + i % 14}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "weightKg": 3.0 + (i % 500) / 10,
        "microchip": 985_000_000_000_000 + i,
        "tags": ["good", _BREEDS[(i // 7) % len(_BREEDS)]] if i % 3 else [],
        "address": {
            "street": f"{1 + i % 200} Mill Lane",
            "city": _CITIES[i % len(_CITIES)],
            "postcode": f"LS{i % 30} {i % 9}AB",
        },
    }


# --------------------------------------------------------------------------- seeding


@dataclass(frozen=True, slots=True)
class Seeding:
    """How some records were written and how long it took."""

    method: str
    first: int
    last: int
    seconds: float
    client_cpu: float | None = None
    """CPU seconds the benchmark process spent meanwhile (for HTTP: the client's cost)."""

    @property
    def records(self) -> int:
        return self.last - self.first + 1

    def describe(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        text = (
            f"ids {self.first:,}-{self.last:,} {self.method}: {self.records:,} records "
            f"in {self.seconds:.1f} s = {rate:,.0f} records/s"
        )
        if self.client_cpu is not None and self.seconds:
            text += f" (the client used {self.client_cpu / self.seconds:.0%} of a core)"
        return text


async def _put_all(base_url: str, ids: range, in_flight: int) -> None:
    """PUT a Dog at each of ``ids`` with ``in_flight`` requests outstanding at any time."""
    pending = iter(ids)
    encode = msgspec.json.Encoder().encode
    headers = {"content-type": "application/json", "authorization": _AUTHORIZATION}

    async def worker() -> None:
        # One client per connection: httpcore's pool does work per pooled connection on
        # every request, which makes one 64-connection client several times slower.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=60, trust_env=False, verify=False
        ) as client:
            for i in pending:  # one shared iterator: each id is taken by exactly one worker
                response = await client.put(
                    f"/{TABLE}/{i}", content=encode(dog(i)), headers=headers
                )
                if not response.is_success:
                    raise RuntimeError(
                        f"seeding PUT /{TABLE}/{i} answered {response.status_code}: "
                        f"{response.text[:500]}"
                    )

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(in_flight):
                group.create_task(worker())
    except* (RuntimeError, httpx.HTTPError) as failed:
        raise RuntimeError(f"seeding failed: {failed.exceptions[0]!r}") from None


def seed_http(server: ServerProcess, ids: range, in_flight: int) -> Seeding:
    """Seed through the running kiln server: concurrent PUTs, so commits are grouped."""
    terminated = False

    async def put_all() -> None:
        # A SIGTERM cancels the seeding task (asyncio.run does the same for Ctrl-C):
        # raising SystemExit from a plain handler in the middle of httpx can hang.
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        await _put_all(server.url, ids, in_flight)

    previous = signal.getsignal(signal.SIGTERM)
    cpu = time.process_time()
    started = time.perf_counter()
    try:
        asyncio.run(put_all())
    except asyncio.CancelledError:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)  # closing the loop reset it to the default
    seconds = time.perf_counter() - started
    method = f"over HTTP (httpx, PUT /{TABLE}/<id>, {in_flight} in flight)"
    return Seeding(method, ids.start, ids.stop - 1, seconds, time.process_time() - cpu)


def seed_offline(app_dir: Path, data_dir: Path, ids: range, batch: int = 1000) -> Seeding:
    """Seed with kiln's library while no server runs: one writer job per ``batch`` Puts."""
    from kiln.app import load_app
    from kiln.config import load_config
    from kiln.storage.operations import Put
    from kiln.validation import validate_record

    config = load_config(app_dir, env={}, overrides={"storage.path": str(data_dir)})
    app = load_app(app_dir, config)
    try:
        definition = app.schema.tables[TABLE]
        writer = app.writers[definition.database]
        started = time.perf_counter()
        for first in range(ids.start, ids.stop, batch):
            writer.execute_sync(
                [
                    Put(TABLE, i, validate_record(definition, app.schema, dog(i)))
                    for i in range(first, min(first + batch, ids.stop))
                ]
            )
        seconds = time.perf_counter() - started
    finally:
        app.close()
    method = f"offline (kiln library, {batch:,} Puts per writer job)"
    return Seeding(method, ids.start, ids.stop - 1, seconds)


def seed(args: argparse.Namespace, app_dir: Path, data_dir: Path, kiln_log: Path) -> list[Seeding]:
    """Write Dog 1..records: ids past ``--http-seed`` offline first, then the rest over HTTP.

    The offline part comes first so the server, started afterwards, sees its versions.
    """
    over_http = min(args.http_seed, args.records)
    done: list[Seeding] = []
    if over_http < args.records:
        progress(f"seeding ids {over_http + 1:,}-{args.records:,} offline with kiln's library")
        done.append(seed_offline(app_dir, data_dir, range(over_http + 1, args.records + 1)))
        progress(f"seeded {done[-1].describe()}")
    if over_http:
        progress(f"seeding ids 1-{over_http:,} over HTTP")
        with _kiln_process(app_dir, data_dir, free_port(), kiln_log) as seeder:
            seeder.start()
            done.append(seed_http(seeder, range(1, over_http + 1), args.seed_concurrency))
            if seeder.stop() != 0:
                raise RuntimeError(f"kiln did not stop cleanly after seeding:\n{seeder.log()}")
        progress(f"seeded {done[-1].describe()}")
    return done


# --------------------------------------------------------------------------- checks


def _check_targets(kiln: ServerProcess, bare: list[ServerProcess], records: int) -> None:
    """Make sure the servers answer what is benchmarked, before loading them.

    Raises:
        RuntimeError: a server answers something else.
    """
    from kiln.storage.records import decode_record

    headers = {"authorization": _AUTHORIZATION}
    with httpx.Client(timeout=10, trust_env=False, headers=headers) as client:
        for i in sorted({1, records}):
            mine = client.get(f"{kiln.url}/{TABLE}/{i}")
            if mine.status_code != 200 or mine.json().get("name") != f"Dog {i}":
                raise RuntimeError(f"kiln GET /{TABLE}/{i}: {mine.status_code} {mine.text[:300]}")
            for server in bare:
                raw = client.get(f"{server.url}/{TABLE}/{i}")
                if raw.status_code != 200 or decode_record(raw.content)[1]["name"] != f"Dog {i}":
                    raise RuntimeError(
                        f"{server.name} GET /{TABLE}/{i}: {raw.status_code} {raw.content[:300]!r}"
                    )
        put = client.put(
            f"{kiln.url}/{TABLE}/{records}",
            content=PUT_BODY,
            headers={"content-type": "application/json"},
        )
        if not put.is_success:
            raise RuntimeError(f"kiln PUT /{TABLE}/{records}: {put.status_code} {put.text[:300]}")


def _check_floor(floor: ServerProcess, records: int) -> None:
    """Make sure the floor stores what it is sent: a PUT, then its bytes read back.

    Raises:
        RuntimeError: it answers something else.
    """
    body = UPDATE_BODY.encode()
    with httpx.Client(timeout=10, trust_env=False) as client:
        put = client.put(f"{floor.url}/{TABLE}/{records}", content=body)
        got = client.get(f"{floor.url}/{TABLE}/{records}")
    if put.status_code != 204 or got.content != body:
        raise RuntimeError(f"{floor.name}: PUT {put.status_code}, then GET {got.content[:300]!r}")


# --------------------------------------------------------------------------- report


def _command_output(
    command: list[str], cwd: Path | None = None, ok: tuple[int, ...] = (0,)
) -> str | None:
    """The first line ``command`` prints, or None if it fails (exit code not in ``ok``)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if done.returncode in ok and text else None


def _filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (from /proc/mounts), or "unknown"."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1]
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    return kind


def machine_info(data_dir: Path) -> list[str]:
    """Lines describing where the numbers come from."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    versions = []
    for package in ("granian", "lmdb", "msgspec", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    wrk_version = _command_output(["wrk", "--version"], ok=(0, 1))  # wrk exits 1 here
    filesystem = _filesystem(data_dir)
    lines = [
        f"machine: nproc {os.cpu_count()} ({usable} usable), {platform.platform()}, "
        f"load average {os.getloadavg()[0]:.2f} at the start",
        f"python:  {platform.python_implementation()} {platform.python_version()}; "
        + ", ".join(versions),
        f"wrk:     {wrk_version.split(' Copyright')[0] if wrk_version else 'unknown'}",
        f"kiln:    commit {commit or 'unknown (not a git checkout)'}",
        f"data:    {data_dir} on {filesystem}",
    ]
    if filesystem in ("tmpfs", "ramfs"):
        lines.append("warning: the data is on a RAM filesystem: fsync costs nothing there")
    return lines


def report(
    args: argparse.Namespace,
    seeding: list[Seeding],
    results: dict[str, WrkResult],
    info: list[str],
) -> str:
    """The printed summary: parameters, the table, the ratios, warnings, machine info."""
    lines = [
        "",
        f"kiln REST benchmark: {args.records:,} {TABLE} records, {args.duration} s per target "
        f"(after a {args.warmup} s warm-up), {args.connections} connections, "
        f"{args.threads} wrk thread(s), random id per request",
        *(f"seeded {part.describe()}" for part in seeding),
        "",
        *table(results),
    ]
    lines.append("")
    bare_name, bare = baseline(results)
    for name, target in TARGETS.items():
        ratio = results[name].rate / bare if bare else 0.0
        verdict = "met" if ratio >= target else "NOT met"
        lines.append(
            f"ratio {name} / {bare_name} = {ratio:.3f}   (target >= {target:.2f}: {verdict})"
        )
    floor = results[FLOOR].rate
    lines.append(
        f"ratio {FLOOR} / {bare_name} = {floor / bare if bare else 0.0:.3f}   "
        "(the floor: no parsing, validation or encoding)"
    )
    lines.append(
        f"ratio kiln PUT update / {FLOOR} = "
        f"{results['kiln PUT update'].rate / floor if floor else 0.0:.3f}"
    )
    json_rate = results["kiln GET"].rate
    for name in FORMATS:
        ratio = results[name].rate / json_rate if json_rate else 0.0
        lines.append(f"ratio {name} / kiln GET (JSON) = {ratio:.3f}")
    lines.extend(trailer(results, info, "ratios"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = load_arguments(
        "python -m bench.rest",
        "REST throughput of kiln against a bare granian + LMDB server.",
        "kiln/bare GET",
    )
    parser.add_argument(
        "--http-seed",
        type=int,
        default=10_000,
        help="how many of the records to seed over HTTP (ids 1..this); the rest are written "
        "offline with kiln's library first (default 10000; 0 = all offline)",
    )
    parser.add_argument("--seed-concurrency", type=int, default=64, help="PUTs in flight")
    add_workers_argument(parser)
    args = parse_load_arguments(parser, argv)
    if args.seed_concurrency < 1:
        parser.error("--seed-concurrency must be at least 1")
    if args.http_seed < 0:
        parser.error("--http-seed must be 0 or more")
    return args


def _kiln_process(
    app_dir: Path, data_dir: Path, port: int, log: Path, workers: int = 1
) -> ServerProcess:
    command = [sys.executable, "-m", "kiln", "run", str(app_dir)]
    command += ["--port", str(port), "--data", str(data_dir)]
    env = {
        "KILN_HTTP_ACCESSLOG": "false",
        "KILN_LOGGING_LEVEL": "warning",
        "KILN_ADMIN_USER": ADMIN_USER,
        "KILN_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KILN_HTTP_WORKERS": str(workers),
    }
    return ServerProcess("kiln", command, port, log, env)


def _bare_process(data_dir: Path, port: int, log: Path, workers: int = 1) -> ServerProcess:
    command = [sys.executable, "-m", "bench.bare_app", "--data", str(data_dir)]
    command += ["--port", str(port), "--table", TABLE, "--workers", str(workers)]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return ServerProcess(f"bare app x{workers}", command, port, log, env)


def _floor_process(data_dir: Path, port: int, log: Path) -> ServerProcess:
    """The bare app answering PUT durably (:data:`FLOOR`) on ``data_dir``, a copy."""
    command = [sys.executable, "-m", "bench.bare_app", "--data", str(data_dir)]
    command += ["--port", str(port), "--table", TABLE, "--durable-put"]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return ServerProcess(FLOOR, command, port, log, env)


def start_servers(
    stack: contextlib.ExitStack, app_dir: Path, data_dir: Path, root: Path, workers: int
) -> tuple[ServerProcess, dict[str, ServerProcess]]:
    """Start kiln with ``workers`` processes, and the bare app with one process and, if
    ``workers`` is more, with as many: the ratios are taken to the faster bare app, so
    kiln gets no help from a process count the baseline does not have."""
    kiln = stack.enter_context(
        _kiln_process(app_dir, data_dir, free_port(), root / "kiln.log", workers)
    )
    kiln.start()
    kiln.wait_for_workers(workers)
    bare: dict[str, ServerProcess] = {}
    for count in sorted({1, workers}):
        name = "bare GET" if count == 1 else f"bare GET x{count}"
        server = _bare_process(data_dir, free_port(), root / f"bare{count}.log", count)
        bare[name] = stack.enter_context(server)
        server.start()
        server.wait_for_workers(count)
    return kiln, bare


def baseline(results: dict[str, WrkResult]) -> tuple[str, float]:
    """The bare app's best GET figure and its name (``bare GET``, ``bare GET xN``)."""
    name = max(
        (name for name in results if name.startswith("bare GET")), key=lambda n: results[n].rate
    )
    return name, results[name].rate


def _load(
    name: str,
    server: ServerProcess,
    method: str,
    args: argparse.Namespace,
    body: str = "",
    *,
    warm_up: bool = True,
    duration: float | None = None,
    accept: str = "",
) -> WrkResult:
    """A warm-up run (unless ``warm_up`` is false), then the measured one, against ``server``."""
    common = {
        "records": args.records,
        "method": method,
        "prefix": f"/{TABLE}/",
        "connections": args.connections,
        "threads": args.threads,
        "body": body,
        "authorization": _AUTHORIZATION,
        "accept": accept,
    }
    measured = args.duration if duration is None else duration
    if warm_up:
        progress(f"{name}: warm-up {args.warmup} s")
        run_wrk(server.url, duration=args.warmup, **common)
    progress(f"{name}: {measured} s measured")
    result = run_wrk(server.url, duration=measured, **common)
    progress(f"{name}: {result.rate:,.0f} req/s")
    return result


def run(args: argparse.Namespace) -> str:
    """Run the whole benchmark and return the report."""
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="kiln-bench-", dir=args.tmp))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        app_dir = root / "app"
        data_dir = root / "data"
        shutil.copytree(CLINIC, app_dir, ignore=shutil.ignore_patterns(".kiln", "__pycache__"))
        info = machine_info(data_dir)
        kiln_log = root / "kiln.log"

        seeding = seed(args, app_dir, data_dir, kiln_log)
        floor_dir = root / "floor-data"  # the floor writes raw bytes: never into kiln's data
        shutil.copytree(data_dir, floor_dir)

        kiln, bare = start_servers(stack, app_dir, data_dir, root, args.workers)
        _check_targets(kiln, list(bare.values()), args.records)

        results: dict[str, WrkResult] = {}
        # The machine's speed drifts over a run, so the GET targets take turns in short
        # rounds and each is the total of its rounds: drift then touches them alike.
        servers = {"kiln GET": kiln, **bare}
        rounds: dict[str, list[WrkResult]] = {name: [] for name in servers}
        per_round = max(1.0, args.duration / args.rounds)
        for number in range(args.rounds):
            for name, server in servers.items():
                rounds[name].append(
                    _load(name, server, "GET", args, warm_up=number == 0, duration=per_round)
                )
        results.update({name: combined(runs) for name, runs in rounds.items()})
        for server in bare.values():
            server.stop()
        for name, media_type in FORMATS.items():
            results[name] = _load(name, kiln, "GET", args, accept=media_type)
        # The update first: on the records as seeded its body changes no indexed value.
        # It takes turns with the durable floor, on its own copy of the data.
        floor = stack.enter_context(_floor_process(floor_dir, free_port(), root / "floor.log"))
        floor.start()
        floor.wait_for_workers(1)
        _check_floor(floor, args.records)
        puts = {"kiln PUT update": kiln, FLOOR: floor}
        rounds = {name: [] for name in puts}
        for number in range(args.rounds):
            for name, server in puts.items():
                rounds[name].append(
                    _load(
                        name,
                        server,
                        "PUT",
                        args,
                        UPDATE_BODY,
                        warm_up=number == 0,
                        duration=per_round,
                    )
                )
        results.update({name: combined(runs) for name, runs in rounds.items()})
        floor.stop()
        results["kiln PUT"] = _load("kiln PUT", kiln, "PUT", args, PUT_BODY)
        if kiln.stop() != 0:
            raise RuntimeError(f"kiln did not stop cleanly:\n{kiln.log()}")
        return report(args, seeding, results, info)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not (CLINIC / "schema.graphql").is_file():
        print(f"error: {CLINIC}/schema.graphql is missing", file=sys.stderr)
        return 2
    return run_benchmark(lambda: run(args), (httpx.HTTPError,))


if __name__ == "__main__":
    sys.exit(main())
