"""The baseline server: granian RSGI + one LMDB read per request, and nothing of kiln's.

``python -m bench.bare_app --data DATA_DIR --port PORT [--table Dog] [--workers N]``
opens kiln's ``DATA_DIR/data`` environment read-only and answers ``GET /<anything>/<int
id>`` with the stored bytes of that record, as they are (version header + MessagePack),
read in one short transaction. It runs granian's embedded server on a uvloop
event loop exactly the way :mod:`kiln.serve` does, so the difference between the two
is kiln's own per-request work: routing, key parsing, permission hooks,
decoding, JSON encoding. ``--workers N`` runs N such processes on the port, as kiln's
``http.workers`` does.

``GET /_health`` answers 200 with ``{"worker": K}`` (which of the processes answered, as
kiln's does); a bad or unknown id answers 404.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

from kiln.storage.keys import encode_key

_MAX_DBS = 64
"""Enough named-store slots for any schema the benchmarks use (read-only: nothing is created)."""

_BYTES = [("content-type", "application/octet-stream")]
_TEXT = [("content-type", "text/plain")]
_JSON = [("content-type", "application/json")]


class BareApp:
    """The RSGI callable: parse the id, one read transaction, the bytes back."""

    def __init__(self, env: lmdb.Environment, db: Any, number: int = 1):
        self.env = env
        self.db = db
        self.health = b'{"worker":%d}' % number

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        path = scope.path
        if path == "/_health":
            protocol.response_bytes(200, _JSON, self.health)
            return
        try:
            key = encode_key(int(path.rpartition("/")[2]))
        except ValueError:
            protocol.response_bytes(404, _TEXT, b"no such id")
            return
        with self.env.begin(buffers=True) as txn:
            value = txn.get(key, db=self.db)
            body = None if value is None else bytes(value)
        if body is None:
            protocol.response_bytes(404, _TEXT, b"no such record")
        else:
            protocol.response_bytes(200, _BYTES, body)


def open_table(data_dir: Path, table: str, database: str = "data") -> tuple[lmdb.Environment, Any]:
    """Open kiln's environment ``data_dir/database`` read-only and its ``t:<table>`` store."""
    env = lmdb.open(
        str(data_dir / database), readonly=True, max_dbs=_MAX_DBS, subdir=True, create=False
    )
    return env, env.open_db(f"t:{table}".encode(), create=False)


async def serve(app: BareApp, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until SIGINT or SIGTERM (as kiln.serve does)."""
    server = Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI,
        log_enabled=False,
        backlog=1024,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="kiln's data folder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--table", default="Dog")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes on the port, as kiln's http.workers"
    )
    parser.add_argument("--number", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The others are copies of this one on the same port: granian listens with SO_REUSEPORT.
    command = [sys.executable, "-m", "bench.bare_app", "--data", str(args.data)]
    command += ["--port", str(args.port), "--table", args.table]
    copies = [
        subprocess.Popen([*command, "--number", str(number)])
        for number in range(2, args.workers + 1)
    ]
    env, db = open_table(args.data, args.table)
    try:
        uvloop.run(serve(BareApp(env, db, args.number), args.port))  # the loop kiln runs on
    finally:
        env.close()
        for copy in copies:
            copy.terminate()
            copy.wait()


if __name__ == "__main__":
    main()
