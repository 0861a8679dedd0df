"""Collection-query throughput: indexed equality, a range and a join against a full scan and
the bare app.

Usage::

    python -m bench.query [--records 1000000] [--duration 10] [--connections 32] [--threads 2]
                          [--workers CORES]

Steps:

1. Write an app whose ``Dog`` has ``pack: Int @indexed`` (``id // 10``: ten
   records a value), ``packCopy`` (the same value, not indexed), ``rank: Int
   @indexed`` (the id) and ``packRef: Pack @relationship(from: pack)``, and whose
   ``Pack`` (one per pack value) has ``name: String @indexed`` (``Pack X``); seed
   N dogs and N / 10 packs offline with kiln's library, 2,000 Puts per writer job
   (the time is printed).
2. Start ``kiln run`` (with ``query.allowScans: true``, for the scan target) with
   ``--workers`` processes (by default the machine's cores) and the bare baseline
   (:mod:`bench.bare_app`: one LMDB read by id), with one process and, when
   ``--workers`` is above 1, with as many; the ratios are taken to the faster.
3. Load each with ``wrk``, a random value per request: ``GET /Dog/?pack=X``
   (10 records by index), ``GET /Dog/?limit(100)&sort(+rank)&rank=ge=X`` (a range
   walked in index order), ``GET /Dog/?packRef.name=Pack X`` (the same 10 records
   by a join: Pack's name index, then Dog's pack index, each dog's pack read again
   to check it), ``GET /Dog/?packCopy=X`` (the same 10 records by a full scan, over
   one connection) and the bare app's ``GET /Dog/<id>``.
4. Print req/s, p99 and the ratios with their targets: indexed equality at
   least 0.40 of the bare app and at least 10x the full scan; the join against
   indexed equality, without a target.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import ServerProcess
from bench.rest import _AUTHORIZATION, baseline, machine_info, start_servers
from bench.wrk import WrkResult, add_workers_argument, progress, run_benchmark, run_wrk

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  pack: Int @indexed
  packCopy: Int
  rank: Int @indexed
  packRef: Pack @relationship(from: pack)
}
type Pack @table @export {
  id: Int @primaryKey
  name: String @indexed
}
"""
CONFIG = "query:\n  allowScans: true\n"
BATCH = 2000

TARGETS = (
    ("indexed eq (10 rows)", "/Dog/?pack=", 10),
    ("range limit(100)", "/Dog/?limit(100)&sort(+rank)&rank=ge=", 1),
    ("join eq (10 rows)", "/Dog/?packRef.name=Pack%20", 10),
    ("full scan eq (10 rows)", "/Dog/?packCopy=", 10),
)
"""(name, URL prefix, records per value): the random value is in [1, N / records per value]."""


def seed(app_dir: Path, data_dir: Path, records: int) -> float:
    """Write Dog 1..records and their packs offline with kiln's library; the seconds it took."""
    from kiln.app import load_app
    from kiln.config import load_config
    from kiln.storage.operations import Put

    config = load_config(app_dir, env={}, overrides={"storage.path": str(data_dir)})
    app = load_app(app_dir, config)
    try:
        writer = app.writers["data"]
        started = time.perf_counter()
        for first in range(1, records + 1, BATCH):
            writer.execute_sync(
                [
                    Put(
                        "Dog",
                        i,
                        {"name": f"Dog {i}", "pack": i // 10, "packCopy": i // 10, "rank": i},
                    )
                    for i in range(first, min(first + BATCH, records + 1))
                ]
            )
        for first in range(0, records // 10 + 1, BATCH):
            last = min(first + BATCH, records // 10 + 1)
            writer.execute_sync([Put("Pack", p, {"name": f"Pack {p}"}) for p in range(first, last)])
        return time.perf_counter() - started
    finally:
        app.close()


def _check(kiln: ServerProcess) -> None:
    headers = {"authorization": _AUTHORIZATION}
    with httpx.Client(timeout=120, trust_env=False, headers=headers) as client:
        for name, prefix, per_value in TARGETS:
            response = client.get(f"{kiln.url}{prefix}1")
            expected = 10 if per_value == 10 else 100
            if response.status_code != 200 or len(response.json()) != expected:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")


def _load(
    name: str,
    url: str,
    prefix: str,
    values: int,
    args: argparse.Namespace,
    duration: float,
    connections: int | None = None,
) -> WrkResult:
    connections = connections or args.connections
    common = {
        "records": max(1, values),
        "method": "GET",
        "prefix": prefix,
        "connections": connections,
        "threads": min(args.threads, connections),
        "authorization": _AUTHORIZATION,
        "timeout_s": 30,
    }
    progress(f"{name}: warm-up 1 s")
    run_wrk(url, duration=1, **common)
    progress(f"{name}: {duration} s measured")
    result = run_wrk(url, duration=duration, **common)
    progress(f"{name}: {result.rate:,.0f} req/s")
    return result


def run(args: argparse.Namespace) -> str:
    """Run the benchmark and return the report."""
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="kiln-bench-query-", dir=args.tmp))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        app_dir, data_dir = root / "app", root / "data"
        app_dir.mkdir()
        (app_dir / "schema.graphql").write_text(SCHEMA)
        (app_dir / "config.yaml").write_text(CONFIG)
        info = machine_info(data_dir)
        progress(f"seeding {args.records:,} records offline")
        seconds = seed(app_dir, data_dir, args.records)
        kiln, bare = start_servers(stack, app_dir, data_dir, root, args.workers)
        _check(kiln)
        results: dict[str, WrkResult] = {}
        for name, server in bare.items():
            results[name] = _load(name, server.url, "/Dog/", args.records, args, args.duration)
            server.stop()
        for name, prefix, per_value in TARGETS:
            # A full scan takes about a second per million records, and the server answers
            # on one thread: many connections would only queue, and at a million records
            # not one request would finish in the window. One connection measures its rate.
            connections = 1 if "scan" in name else None
            results[name] = _load(
                name,
                kiln.url,
                prefix,
                args.records // per_value - 1,
                args,
                args.duration,
                connections,
            )
        return report(args, seconds, results, info)


def report(
    args: argparse.Namespace, seconds: float, results: dict[str, WrkResult], info: list[str]
) -> str:
    """The printed summary: the table, the ratios and their targets, warnings, machine info."""
    lines = [
        "",
        f"kiln query benchmark: {args.records:,} Dog records, {args.connections} connections, "
        f"{args.threads} wrk thread(s), a random value per request",
        f"seeded {args.records:,} records offline in {seconds:.1f} s "
        f"({args.records / seconds:,.0f} records/s, {BATCH:,} Puts per writer job)",
        "",
        f"{'target':<24} {'req/s':>10} {'p50':>10} {'p99':>10} {'non-2xx':>8} {'requests':>10}",
    ]
    for name, result in results.items():
        lines.append(
            f"{name:<24} {result.rate:>10,.1f} {result.p50_us / 1000:>8.2f}ms "
            f"{result.p99_us / 1000:>8.2f}ms {result.bad_status:>8} {result.requests:>10,}"
        )
    lines.append("")
    eq = results["indexed eq (10 rows)"].rate
    bare_name, bare = baseline(results)
    scan = results["full scan eq (10 rows)"].rate
    ratios = (
        (f"indexed eq (10 rows) / {bare_name}", eq / bare if bare else 0.0, 0.40),
        ("indexed eq (10 rows) / full scan eq (10 rows)", eq / scan if scan else 0.0, 10.0),
        (
            f"range limit(100) / {bare_name}",
            results["range limit(100)"].rate / bare if bare else 0.0,
            None,
        ),
        (
            "join eq (10 rows) / indexed eq (10 rows)",
            results["join eq (10 rows)"].rate / eq if eq else 0.0,
            None,
        ),
    )
    for name, ratio, target in ratios:
        verdict = (
            ""
            if target is None
            else f"   (target >= {target:.2f}: {'met' if ratio >= target else 'NOT met'})"
        )
        lines.append(f"ratio {name} = {ratio:.3f}{verdict}")
    for name, result in results.items():
        if result.bad_status or result.socket_errors:
            lines.append(
                f"WARNING: {name}: {result.bad_status} non-2xx, "
                f"{result.socket_errors} socket errors"
            )
    lines.extend(info)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="Dog records to seed")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    add_workers_argument(parser)
    args = parser.parse_args(argv)
    if args.records < 100:
        parser.error("--records must be at least 100")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return run_benchmark(lambda: run(args), (httpx.HTTPError,))


if __name__ == "__main__":
    sys.exit(main())
