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
import threading
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from kiln.app import App, load_app
from kiln.errors import InternalServerError, KilnError
from kiln.realtime.peers import Frame, Peers
from kiln.serve import exit_now, keep_loaded_objects, read_config, serve
from kiln.storage.writer import Answer, Receipt, Writer
from kiln.types import Version
from kiln.workers import BUS_FRAMES, schema_digest

log = logging.getLogger("kiln.workers")


async def serve_writes(app: App, links: list[socket.socket]) -> bool:
    """The write process: apply the workers' jobs with ``app``'s writers until every
    worker has left; False if worker 1 left first, without its last word (killed).

    Each job is answered on its own link once its commit is on disk; every commit's
    ``durable`` frame goes to every worker, before the answers it covers. The answers
    of a commit go back together, one frame per link. Signals are left to worker 1 (a
    terminal's Ctrl-C and a service manager's SIGTERM reach every process of the
    group): this process stops when the workers have gone.
    """
    loop = asyncio.get_running_loop()
    peers = Peers(links, relay=BUS_FRAMES)
    done = asyncio.Event()
    clean = True
    said_bye = False
    answers = _Answers(loop, peers)

    for name, writer in app.writers.items():
        writer.on_commit = partial(_tell_durable, answers, name, writer)

    def received(link: int, frame: Frame) -> None:
        nonlocal said_bye
        if frame[0] == "bye":
            said_bye = True
        elif frame[0] == "jobs":
            _kind, numbers, payloads = frame
            for number, payload in zip(numbers, payloads, strict=True):
                take(link, number, payload)

    def take(link: int, number: int, payload: bytes) -> None:
        """Hand one job to its database's writer; whatever goes wrong is its answer."""
        answer = answers.to(link, number)
        try:
            if not clean:  # worker 1 is gone: the server is stopping
                raise InternalServerError("kiln is stopping")
            database, operations, user = pickle.loads(payload)
            app.writers[database].hand(operations, user, answer)
        except KilnError as error:
            answer(None, error)
        except Exception as error:  # a job that does not rebuild here, or a closed writer
            answer(None, InternalServerError(f"the write could not be made: {error}"))

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
    keep_loaded_objects()
    await done.wait()
    await answers.all_sent()  # the workers still linked hear how their writes went
    peers.close()  # then they see the write process leave, and stop
    await peers.wait_closed()
    return clean


class _Answers:
    """The write process's answers and ``durable`` frames, in the order the writers' sync
    threads give them, sent on the loop: one ``done`` frame per link for the answers
    between two ``durable`` frames, so that none arrives before the frame that covers it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, peers: Peers):
        self._loop = loop
        self._peers = peers
        self._ready: list[_Said] = []
        self._lock = threading.Lock()
        self._owed = 0
        self._settled = asyncio.Event()
        self._settled.set()

    def to(self, link: int, number: int) -> Answer:
        """The answer to job ``number`` of ``link``: call it once, from any thread."""
        self._owed += 1
        self._settled.clear()
        return partial(self._say, link, number)

    def durable(self, database: str, version: Version) -> None:
        """Tell every worker that the writes of ``database`` up to ``version`` are on disk
        (from any thread), after the answers already given and before those to come."""
        self._say(-1, 0, database, version)

    def _say(self, link: int, number: int, *said: Any) -> None:
        with self._lock:
            self._ready.append((link, number, said))
            first = len(self._ready) == 1
        if first:
            self._loop.call_soon_threadsafe(self._send)

    def _send(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        answered: dict[int, list[tuple[int, Receipt | None, BaseException | None]]] = {}
        for link, number, said in ready:
            if link >= 0:
                receipt, error = said
                answered.setdefault(link, []).append((number, receipt, _travelling(error)))
                self._owed -= 1
            else:
                self._send_answers(answered)
                answered = {}
                self._peers.send(["durable", *said])
        self._send_answers(answered)
        if self._owed == 0:
            self._settled.set()

    def _send_answers(
        self, answered: dict[int, list[tuple[int, Receipt | None, BaseException | None]]]
    ) -> None:
        for link, items in answered.items():
            results = [(receipt, error) for _number, receipt, error in items]
            try:
                payload = pickle.dumps(results)
            except Exception as failure:  # a record value of the app's own that cannot travel
                failed = InternalServerError(f"the write was made; its answer cannot: {failure}")
                payload = pickle.dumps([_alone(result, failed) for result in results])
            self._peers.send(["done", [number for number, _r, _e in items], payload], link)

    async def all_sent(self) -> None:
        """Wait until every job handed so far is answered."""
        await self._settled.wait()


_Said = tuple[int, int, tuple[Any, ...]]
"""What :class:`_Answers` has to send: (link, job number, (receipt, error)) for an answer,
(-1, 0, (database, version)) for a ``durable`` frame."""


def _travelling(error: BaseException | None) -> BaseException | None:
    """``error``, or a 500 naming it if it would not rebuild in the worker (an error of
    the app's own whose ``__init__`` takes other arguments, say)."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return InternalServerError(f"the write failed: {error}")
    return error


def _alone(
    result: tuple[Receipt | None, BaseException | None], failed: InternalServerError
) -> tuple[Receipt | None, BaseException | None]:
    """``result`` if it pickles by itself, else ``failed``."""
    try:
        pickle.dumps(result)
    except Exception:
        return None, failed
    return result


def _tell_durable(answers: _Answers, database: str, writer: Writer) -> None:
    """A writer's commit listener (on its sync thread): how far ``database`` is on disk."""
    answers.durable(database, writer.durable_through)


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
