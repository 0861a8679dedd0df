"""The cost of authentication on GET by id: anonymous, HTTP Basic and a bearer token, one run.

Usage::

    python -m bench.auth [--records 100000] [--duration 10] [--connections 64]
                         [--threads 2] [--rounds 4]

Steps:

1. Make a temporary app: the clinic example's schema and :data:`CONFIG`, whose
   ``anonymous`` role may read every attribute of ``Dog`` (so the anonymous
   requests do all the work but checking credentials). Seed N Dog records offline
   with kiln's library (:func:`bench.rest.seed_offline`).
2. Start ``kiln run`` with a super user (``KILN_ADMIN_USER``), get an access token
   from ``POST /_auth/token``, and check that ``GET /Dog/<id>`` answers the record
   with no credentials, with Basic and with the token.
3. Load the three with ``wrk`` (a random id in [1, N] per request) in ``--rounds``
   alternating rounds sharing ``--duration``, after one warm-up each, so machine
   drift touches all alike. A password is verified once (about 50 ms), then the
   credentials are remembered: what is measured is the per-request check.
4. Print a table and each overhead ``1 - authenticated/anonymous``, the target next to it.

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
    ADMIN_PASSWORD,
    ADMIN_USER,
    CLINIC,
    TABLE,
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

CONFIG = f"""roles:
  anonymous:
    data:
      {TABLE}: {{read: true}}
"""
"""The temporary app's config.yaml: anonymous requests may read every Dog attribute."""

BASELINE = "anonymous"
TARGET_OVERHEAD = 0.15
"""The issue's target: an authenticated GET by id serves at least 85% of an anonymous one."""


def _targets(kiln: ServerProcess) -> dict[str, str]:
    """The ``Authorization`` value of each target (empty: none), with a fresh access token."""
    response = httpx.post(
        f"{kiln.url}/_auth/token",
        json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
        timeout=30,
        trust_env=False,
    )
    if response.status_code != 200:
        raise RuntimeError(f"POST /_auth/token: {response.status_code} {response.text[:300]}")
    return {
        BASELINE: "",
        "basic": _AUTHORIZATION,
        "bearer": f"Bearer {response.json()['access_token']}",
    }


def _check_targets(kiln: ServerProcess, targets: dict[str, str], records: int) -> None:
    """Make sure every target answers the record, before loading them.

    Raises:
        RuntimeError: a target answers something else.
    """
    with httpx.Client(timeout=30, trust_env=False) as client:
        for name, authorization in targets.items():
            headers = {"authorization": authorization} if authorization else {}
            for i in sorted({1, records}):
                answer = client.get(f"{kiln.url}/{TABLE}/{i}", headers=headers)
                if answer.status_code != 200 or answer.json().get("name") != f"Dog {i}":
                    raise RuntimeError(
                        f"{name} GET /{TABLE}/{i}: {answer.status_code} {answer.text[:300]}"
                    )


# --------------------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    seeding: Seeding,
    results: dict[str, WrkResult],
    info: list[str],
) -> str:
    """The printed summary: parameters, the table, the overheads, warnings, machine info."""
    lines = [
        "",
        f"kiln authentication benchmark: GET /{TABLE}/<id> over {args.records:,} records, "
        f"{args.duration} s per target in {args.rounds} alternating round(s) (after a "
        f"{args.warmup} s warm-up), {args.connections} connections, {args.threads} wrk "
        "thread(s), random id per request",
        f"seeded {seeding.describe()}",
        f"{BASELINE}: no credentials (an anonymous role may read); basic: HTTP Basic; "
        "bearer: an access token from POST /_auth/token",
        "",
        *table(results),
    ]
    lines.append("")
    anonymous = results[BASELINE].rate
    for name in ("basic", "bearer"):
        overhead = 1 - results[name].rate / anonymous if anonymous else 1.0
        verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
        lines.append(
            f"overhead of {name} = 1 - {name}/{BASELINE} = {overhead:.1%}   "
            f"(target <= {TARGET_OVERHEAD:.0%}: {verdict})"
        )
    lines.extend(trailer(results, info, "overheads"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = load_arguments(
        "python -m bench.auth",
        "GET by id anonymous, with HTTP Basic and with a bearer token.",
        "of the targets",
    )
    return parse_load_arguments(parser, argv)


def _wrk(
    server: ServerProcess, authorization: str, args: argparse.Namespace, duration: float
) -> WrkResult:
    return run_wrk(
        server.url,
        records=args.records,
        method="GET",
        prefix=f"/{TABLE}/",
        duration=duration,
        connections=args.connections,
        threads=args.threads,
        authorization=authorization,
    )


def run(args: argparse.Namespace) -> str:
    """Run the whole benchmark and return the report."""
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="kiln-bench-auth-", dir=args.tmp))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        app_dir = root / "app"
        data_dir = root / "data"
        app_dir.mkdir()
        shutil.copy2(CLINIC / "schema.graphql", app_dir / "schema.graphql")
        (app_dir / "config.yaml").write_text(CONFIG)
        info = machine_info(data_dir)

        progress(f"seeding ids 1-{args.records:,} offline with kiln's library")
        seeding = seed_offline(app_dir, data_dir, range(1, args.records + 1))
        progress(f"seeded {seeding.describe()}")

        kiln = stack.enter_context(_kiln_process(app_dir, data_dir, free_port(), root / "kiln.log"))
        kiln.start()
        targets = _targets(kiln)
        _check_targets(kiln, targets, args.records)

        results = alternate(
            {
                name: functools.partial(_wrk, kiln, authorization, args)
                for name, authorization in targets.items()
            },
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
