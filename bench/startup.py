"""Start-up time of ``kiln run`` on an app holding N records, against ``python -c pass``.

Usage::

    python -m bench.startup [--records 100000] [--runs 5]

Steps:

1. Write a Dog app (one ``@indexed`` attribute, readable by an ``anonymous`` role so
   that the first answer measures start-up, not a password check) in a temporary
   folder and seed N records offline with kiln's library (``load_app``, then the
   writer, in batches), then start it once so every later start finds its catalog
   settled.
2. Time ``python -c pass`` (the interpreter's own start-up, the baseline), then
   ``kiln run`` from process start to its first 200 answer to ``GET /_health``,
   and again to its first 200 to ``GET /Dog/1``, polling every 2 ms; each
   ``--runs`` times, stopping the server with SIGTERM between runs.
3. Print the medians, kiln's ratio to the baseline and the 1 s target.

The temporary folder and every subprocess are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.procs import free_port

TARGET_SECONDS = 1.0
"""The issue's target: the first request answered within a second of process start."""

SCHEMA = """type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
}
"""

CONFIG = """roles:
  anonymous:
    data:
      Dog: {read: true}
"""

_POLL_SECONDS = 0.002
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def seed(app_dir: Path, data_dir: Path, records: int, batch: int = 5000) -> float:
    """Write Dog 1..records with kiln's library while no server runs; the seconds it took."""
    from kiln.app import load_app
    from kiln.config import load_config
    from kiln.storage.operations import Put

    started = time.perf_counter()
    config = load_config(app_dir, env={}, overrides={"storage.path": str(data_dir)})
    app = load_app(app_dir, config)
    try:
        writer = app.writers["data"]
        for first in range(1, records + 1, batch):
            writer.execute_sync(
                [
                    Put("Dog", i, {"name": f"dog {i}", "breed": f"breed {i % 50}", "age": i % 20})
                    for i in range(first, min(first + batch, records + 1))
                ]
            )
    finally:
        app.close()
    return time.perf_counter() - started


def python_startup() -> float:
    """Seconds for ``python -c pass`` to start and exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def first_answer(app_dir: Path, data_dir: Path, path: str, log: Path) -> float:
    """Seconds from starting ``kiln run`` to its first 200 answer to ``GET path``."""
    port = free_port()
    command = [sys.executable, "-m", "kiln", "run", str(app_dir), "--port", str(port)]
    command += ["--data", str(data_dir)]
    url = f"http://127.0.0.1:{port}{path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    with log.open("ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            try:
                with _NO_PROXY.open(url, timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (OSError, urllib.error.URLError):
                if process.poll() is not None or time.perf_counter() - started > 60:
                    raise RuntimeError(f"kiln did not answer {path}; see {log}") from None
                time.sleep(_POLL_SECONDS)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(records: int, runs: int) -> str:
    """Seed, measure and return the printed report."""
    with tempfile.TemporaryDirectory(prefix="kiln-startup-") as tmp:
        app_dir = Path(tmp) / "app"
        app_dir.mkdir()
        (app_dir / "schema.graphql").write_text(SCHEMA)
        (app_dir / "config.yaml").write_text(CONFIG)
        data_dir = Path(tmp) / "data"
        seconds = seed(app_dir, data_dir, records)
        log = Path(tmp) / "kiln.log"
        first_answer(app_dir, data_dir, "/_health", log)  # warm the page cache once
        baseline = statistics.median(python_startup() for _ in range(runs))
        health = statistics.median(
            first_answer(app_dir, data_dir, "/_health", log) for _ in range(runs)
        )
        record = statistics.median(
            first_answer(app_dir, data_dir, "/Dog/1", log) for _ in range(runs)
        )
    lines = [
        f"kiln start-up: {records:,} Dog records (seeded offline in {seconds:.1f} s), "
        f"median of {runs} runs, process start to first 200",
        f"python -c pass        {baseline * 1000:8.1f} ms",
        f"kiln run /_health     {health * 1000:8.1f} ms",
        f"kiln run GET /Dog/1   {record * 1000:8.1f} ms",
        f"ratio kiln /_health / python -c pass = {health / baseline:.1f}",
        f"ratio kiln GET /Dog/1 / python -c pass = {record / baseline:.1f}",
        f"target: first answer under {TARGET_SECONDS:.0f} s: "
        + ("met" if max(health, record) < TARGET_SECONDS else "NOT met"),
        f"machine: nproc {os.cpu_count()}, {platform.platform()}, "
        f"python {platform.python_version()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the benchmark and print its report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.startup", description="Start-up time of kiln run."
    )
    parser.add_argument("--records", type=int, default=100_000, help="Dog records to seed")
    parser.add_argument("--runs", type=int, default=5, help="start-ups per figure (median)")
    args = parser.parse_args(argv)
    print(run(args.records, args.runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
