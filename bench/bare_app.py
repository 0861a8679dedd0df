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

``--durable-put`` opens the environment writable and also answers ``PUT /<anything>/<int
id>``: the body's bytes, as they came, replace the stored value of that id, and an entry
holding them is appended to the audit store, in a commit shared with every PUT waiting
meanwhile, and the answer (204) waits until that commit is synced: a writer thread and a
sync thread, committing as kiln's do (:class:`GroupWriter`). It is what a durable write
costs on the machine with nothing of kiln's: the disk's syncs and granian's body read,
with no parsing, validation or record encoding. It writes the bytes as they came, so give
it a copy of the data, never kiln's own.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

from kiln.storage.keys import encode_key

_MAX_DBS = 64
"""Enough named-store slots for any schema the benchmarks use (nothing is created)."""
_WRITABLE_MAP_SIZE = 1 << 36
"""Address space for ``--durable-put``'s writes (the file grows only with the data)."""

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


_VERSION = struct.Struct(">Q")
_Put = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", bytes, bytes]


def _settle(futures: list[asyncio.Future[None]], failure: BaseException | None) -> None:
    """Answer the futures of committed puts (on their loop): done, or failed with ``failure``."""
    for future in futures:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)


_Item = TypeVar("_Item")


def _drained(waiting: queue.SimpleQueue[_Item]) -> list[_Item]:
    """The next item of ``waiting`` (waiting for one), and every other already there."""
    items = [waiting.get()]
    while True:
        try:
            items.append(waiting.get_nowait())
        except queue.Empty:
            return items


class GroupWriter:
    """Group commit as kiln's writer does it, without kiln's work: one thread applies every
    waiting put in one commit that syncs its pages, a second syncs the meta pages of the
    commits made meanwhile and only then answers them, while the next group is applied."""

    def __init__(self, env: lmdb.Environment, db: Any):
        self.env = env
        self.db = db
        self.audit = env.open_db(b"audit", create=False)
        with env.begin() as txn:
            cursor = txn.cursor(db=self.audit)
            self.version = _VERSION.unpack(cursor.key())[0] if cursor.last() else 0
        self._waiting: queue.SimpleQueue[_Put] = queue.SimpleQueue()
        self._committed: queue.SimpleQueue[tuple[list[_Put], BaseException | None]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._apply, name="bare-writer", daemon=True).start()
        threading.Thread(target=self._sync, name="bare-sync", daemon=True).start()

    def put(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue a put; the future is done once the commit holding it is on disk."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.put((loop, future, key, value))
        return future

    def _apply(self) -> None:
        while True:
            group = _drained(self._waiting)
            failure = None
            try:
                with self.env.begin(write=True) as txn:  # syncs its pages, not the meta page
                    for _loop, _future, key, value in group:
                        txn.get(key, db=self.db)  # kiln reads the record it replaces
                        txn.put(key, value, db=self.db)
                        self.version += 1
                        txn.put(_VERSION.pack(self.version), value, db=self.audit, append=True)
            except Exception as error:  # answered as a 500, not left hanging
                failure = error
            self._committed.put((group, failure))

    def _sync(self) -> None:
        while True:
            commits = _drained(self._committed)
            failed = None
            try:
                self.env.sync(True)
            except Exception as error:
                failed = error
            for group, failure in commits:
                by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
                for loop, future, _key, _value in group:
                    by_loop.setdefault(loop, []).append(future)
                for loop, futures in by_loop.items():
                    loop.call_soon_threadsafe(_settle, futures, failure or failed)


class DurablePutApp(BareApp):
    """:class:`BareApp`, and ``PUT`` stores the body's bytes durably through a group writer."""

    def __init__(self, env: lmdb.Environment, db: Any, number: int = 1):
        super().__init__(env, db, number)
        self.writer = GroupWriter(env, db)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.method != "PUT":
            await super().__rsgi__(scope, protocol)
            return
        body = await protocol()
        try:
            key = encode_key(int(scope.path.rpartition("/")[2]))
        except ValueError:
            protocol.response_bytes(404, _TEXT, b"no such id")
            return
        await self.writer.put(key, body)
        protocol.response_empty(204, [])


def open_table(
    data_dir: Path, table: str, database: str = "data", *, writable: bool = False
) -> tuple[lmdb.Environment, Any]:
    """Open kiln's environment ``data_dir/database`` (read-only unless ``writable``: then
    as kiln opens it, a commit syncing its pages but not the meta page) and its
    ``t:<table>`` store."""
    room = {"map_size": _WRITABLE_MAP_SIZE, "metasync": False} if writable else {}
    env = lmdb.open(
        str(data_dir / database),
        readonly=not writable,
        max_dbs=_MAX_DBS,
        subdir=True,
        create=False,
        **room,
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
    parser.add_argument(
        "--durable-put",
        action="store_true",
        help="also answer PUT by storing the body durably (on a copy of kiln's data only)",
    )
    parser.add_argument("--number", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.durable_put and args.workers != 1:
        parser.error("--durable-put takes one process (one writer)")
    # The others are copies of this one on the same port: granian listens with SO_REUSEPORT.
    command = [sys.executable, "-m", "bench.bare_app", "--data", str(args.data)]
    command += ["--port", str(args.port), "--table", args.table]
    copies = [
        subprocess.Popen([*command, "--number", str(number)])
        for number in range(2, args.workers + 1)
    ]
    env, db = open_table(args.data, args.table, writable=args.durable_put)
    app = DurablePutApp(env, db) if args.durable_put else BareApp(env, db, args.number)
    try:
        uvloop.run(serve(app, args.port))  # the loop kiln runs on
    finally:
        env.close()
        for copy in copies:
            copy.terminate()
            copy.wait()


if __name__ == "__main__":
    main()
