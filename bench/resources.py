"""GET by id through a resources.py subclass of a table against the plain table, in the same run.

Usage::

    python -m bench.resources [--records 100000] [--duration 10] [--connections 64]
                              [--threads 2] [--rounds 4]

Steps:

1. Make a temporary app: the clinic example's schema and config, and a
   ``resources.py`` holding only :data:`RESOURCES` (``DogPlus``: ``tables.Dog`` whose
   ``get`` adds one field to the record). Seed N Dog records offline with kiln's
   library (:func:`bench.rest.seed_offline`, the records of :func:`bench.rest.dog`).
2. Start ``kiln run`` on a free loopback port and check that ``GET /Dog/<id>`` and
   ``GET /DogPlus/<id>`` both answer 200 and that only DogPlus carries ``plus``.
3. Load ``GET /Dog/<id>`` (the baseline) and ``GET /DogPlus/<id>`` with ``wrk``, a
   random id in [1, N] per request, in ``--rounds`` alternating rounds sharing
   ``--duration`` (after one warm-up each), so machine drift touches both alike.
4. Print a table and the subclass's overhead ``1 - DogPlus/Dog``, the target next to it.

Every subprocess and temporary folder is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

from bench.procs import ServerProcess, free_port
from bench.rest import (
    _AUTHORIZATION,
    CLINIC,
    Seeding,
    _kiln_process,
    machine_info,
    seed_offline,
)
from bench.wrk import (
    WrkResult,
    alternate,
    load_arguments,
    parse_load_arguments,
    progress,
    run_benchmark,
    run_wrk,
    table,
    trailer,
)

RESOURCES = """from kiln import tables

class DogPlus(tables.Dog):
    def get(self, target):
        dog = super().get(target)
        return {**dog, "plus": 1} if dog is not None else None
"""
"""The temporary app's whole resources.py: a table subclass adding one field on read."""

BASELINE = "Dog"
SUBCLASS = "DogPlus"
TARGET_OVERHEAD = 0.20
"""The issue's target: the subclass serves at least 80% of the plain table's GET throughput."""


# --------------------------------------------------------------------------- checks


def _check_targets(kiln: ServerProcess, records: int) -> None:
    """Make sure both routes answer what is benchmarked, before loading them.

    Raises:
        RuntimeError: a route answers something else.
    """
    headers = {"authorization": _AUTHORIZATION}
    with httpx.Client(timeout=10, trust_env=False, headers=headers) as client:
        for i in sorted({1, records}):
            for route in (BASELINE, SUBCLASS):
                answer = client.get(f"{kiln.url}/{route}/{i}")
                body = answer.json() if answer.status_code == 200 else {}
                ok = (
                    answer.status_code == 200
                    and body.get("name") == f"Dog {i}"
                    and (body.get("plus") == 1) == (route == SUBCLASS)
                )
                if not ok:
                    raise RuntimeError(
                        f"kiln GET /{route}/{i}: {answer.status_code} {answer.text[:300]}"
                    )


# --------------------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    seeding: Seeding,
    results: dict[str, WrkResult],
    info: list[str],
) -> str:
    """The printed summary: parameters, the table, the overhead, warnings, machine info."""
    lines = [
        "",
        f"kiln resources.py benchmark: {args.records:,} {BASELINE} records, {args.duration} s "
        f"per target in {args.rounds} alternating round(s) (after a {args.warmup} s warm-up), "
        f"{args.connections} connections, {args.threads} wrk thread(s), random id per request",
        f"seeded {seeding.describe()}",
        f"{SUBCLASS}: a resources.py subclass of tables.{BASELINE} whose get adds one field",
        "",
        *table(results),
    ]
    lines.append("")
    plain = results[f"GET /{BASELINE}/<id>"].rate
    plus = results[f"GET /{SUBCLASS}/<id>"].rate
    overhead = 1 - plus / plain if plain else 1.0
    verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
    lines.append(
        f"overhead of the subclass = 1 - {SUBCLASS}/{BASELINE} = {overhead:.1%}   "
        f"(target <= {TARGET_OVERHEAD:.0%}: {verdict})"
    )
    lines.extend(trailer(results, info, "overhead"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = load_arguments(
        "python -m bench.resources",
        "GET by id through a resources.py table subclass against the plain table.",
        "Dog/DogPlus",
    )
    return parse_load_arguments(parser, argv)


def _wrk(server: ServerProcess, route: str, args: argparse.Namespace, duration: float) -> WrkResult:
    return run_wrk(
        server.url,
        records=args.records,
        method="GET",
        prefix=f"/{route}/",
        duration=duration,
        connections=args.connections,
        threads=args.threads,
        authorization=_AUTHORIZATION,
    )


def run(args: argparse.Namespace) -> str:
    """Run the whole benchmark and return the report."""
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="kiln-bench-resources-", dir=args.tmp))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        app_dir = root / "app"
        data_dir = root / "data"
        app_dir.mkdir()
        for name in ("schema.graphql", "config.yaml"):
            if (CLINIC / name).is_file():
                shutil.copy2(CLINIC / name, app_dir / name)
        (app_dir / "resources.py").write_text(RESOURCES)
        info = machine_info(data_dir)

        progress(f"seeding ids 1-{args.records:,} offline with kiln's library")
        seeding = seed_offline(app_dir, data_dir, range(1, args.records + 1))
        progress(f"seeded {seeding.describe()}")

        kiln = stack.enter_context(_kiln_process(app_dir, data_dir, free_port(), root / "kiln.log"))
        kiln.start()
        _check_targets(kiln, args.records)

        routes = {f"GET /{route}/<id>": route for route in (BASELINE, SUBCLASS)}
        results = alternate(
            {name: functools.partial(_wrk, kiln, route, args) for name, route in routes.items()},
            args,
        )
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
