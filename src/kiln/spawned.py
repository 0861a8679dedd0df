"""The processes worker 1 starts (:mod:`kiln.workers`): more workers, and the write process.

``python -m kiln.spawned serve APP_DIR DIGEST NUMBER FD`` is worker NUMBER: it
serves the app like worker 1, its writers handing their jobs over its link
``FD``. ``python -m kiln.spawned write APP_DIR DIGEST FD...`` is the write
process (:func:`serve_writes`): one link per worker. Both take their settings
from the environment worker 1 gave them.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import uvloop

from kiln.app import App, load_app
from kiln.errors import InternalServerError, KilnError
from kiln.realtime.peers import Frame, Peers
from kiln.serve import exit_now, read_config, serve
from kiln.storage.writer import Receipt, Writer
from kiln.workers import BUS_FRAMES, schema_digest

log = logging.getLogger("kiln.workers")


async def serve_writes(app: App, links: list[socket.socket]) -> bool:
    """The write process: apply the workers' jobs with ``app``'s writers until every
    worker has left; False if worker 1 left first, without its last word (killed).

    Each job is answered on its own link once its commit is on disk; every commit's
    ``durable`` frame goes to every worker, before the answers it covers. Signals are
    left to worker 1 (a terminal's Ctrl-C and a service manager's SIGTERM reach every
    process of the group): this process stops when the workers have gone.
    """
    loop = asyncio.get_running_loop()
    peers = Peers(links, relay=BUS_FRAMES)
    done = asyncio.Event()
    clean = True
    said_bye = False
    pending: set[asyncio.Future[Receipt]] = set()

    for name, writer in app.writers.items():
        writer.on_commit = _durable_sender(loop, peers, name, writer)

    def send(link: int, number: int, receipt: Receipt | None, error: BaseException | None) -> None:
        try:
            payload = pickle.dumps((receipt, error))
            pickle.loads(payload)  # an error of the app's own may not rebuild over there
        except Exception:
            payload = pickle.dumps((None, InternalServerError(f"the write failed: {error}")))
        peers.send(["done", number, payload], link)

    def answer(link: int, number: int, future: asyncio.Future[Receipt]) -> None:
        error = future.exception()
        send(link, number, None if error is not None else future.result(), error)

    def received(link: int, frame: Frame) -> None:
        nonlocal said_bye
        if frame[0] == "bye":
            said_bye = True
        elif frame[0] == "job":
            _kind, number, database, payload = frame
            if not clean:  # worker 1 is gone: the server is stopping
                send(link, number, None, InternalServerError("kiln is stopping"))
                return
            try:
                operations, user = pickle.loads(payload)
                future = app.writers[database].begin(operations, user)
            except Exception as error:  # refused before it was queued (a closed writer)
                send(link, number, None, error)
                return
            pending.add(future)
            future.add_done_callback(pending.discard)
            future.add_done_callback(partial(answer, link, number))

    def lost(link: int) -> None:
        nonlocal clean
        if link == 0 and not said_bye and clean:
            log.error("worker 1 is gone; the write process stops the other workers")
            clean = False
            done.set()
        elif not peers.links:
            done.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: None)
    await peers.start(received, lost)
    await done.wait()
    if pending:
        await asyncio.wait(pending)  # the workers still linked hear how their writes went
    peers.close()  # then they see the write process leave, and stop
    await peers.wait_closed()
    return clean


def _durable_sender(
    loop: asyncio.AbstractEventLoop, peers: Peers, name: str, writer: Writer
) -> Callable[[], None]:
    """A writer's commit listener that tells every worker how far ``name`` is on disk."""

    def committed() -> None:  # on the writer's sync thread
        loop.call_soon_threadsafe(peers.send, ["durable", name, writer.durable_through])

    return committed


def main(argv: list[str]) -> int:
    """Run the process ``argv`` describes (see the module's text); its exit code."""
    role, app_dir, digest = argv[0], Path(argv[1]), argv[2]
    number = int(argv[3]) if role == "serve" else 0
    name = f"worker {number}" if role == "serve" else "writes"
    config = read_config(app_dir, {})
    logging.basicConfig(
        level=config.logging.level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[{name}]: %(message)s",
    )
    if schema_digest(app_dir) != digest:
        log.error("schema.graphql changed while kiln started; start it again")
        return 2
    try:
        app = load_app(app_dir, config, shared=True)  # worker 1 evolved the schema already
    except KilnError as error:
        log.error("%s", error)
        return 2
    if role == "write":
        links = [socket.socket(fileno=int(fd)) for fd in argv[3:]]
        try:
            clean = uvloop.run(serve_writes(app, links))
        finally:
            app.close()
    else:
        app.worker = number
        clean = uvloop.run(serve(app, link=socket.socket(fileno=int(argv[4]))))
    exit_now(0 if clean else 1)  # as kiln run leaves (see exit_now)
    return 1  # not reached: exit_now leaves the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
