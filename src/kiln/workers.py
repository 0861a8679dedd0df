"""More than one process serving an app (``http.workers`` above 1): the workers that
answer HTTP and the write process.

One event loop answers HTTP in a process, so a server uses more cores by running
more processes. ``kiln run`` loads the app in its own process (evolving the schema
and adding the first user there, once), which becomes worker 1, and starts the
others with ``python -m kiln.spawned`` (:mod:`kiln.spawned`):

- **workers 2..N** load the app too and serve HTTP on the same port: granian
  listens with ``SO_REUSEPORT``, so the kernel spreads the connections. Worker 1
  alone runs the MQTT broker and prunes the audit log.
- **the write process** loads the same app and applies the writes of every
  worker: a worker's writer hands it each job
  (:meth:`~kiln.storage.writer.Writer.delegate`) and it answers once the commit is
  on disk. One writer for all keeps the commits grouped (a writer per worker would
  take LMDB's lock in turns, each group half as large), and it shares its
  process's GIL with no event loop answering HTTP.

Every worker is linked to the write process (:mod:`kiln.realtime.peers`), which
passes the change buses' frames between them, so a subscriber on any worker hears
of every write and message. A job made of code (``DELETE`` by query) is applied
by the worker's own writer thread; LMDB takes the two writers in turn, and
versions stay in commit order (:mod:`kiln.storage.writer`).

Stopping: SIGINT or SIGTERM to worker 1 stops the other workers, then the write
process once every worker is gone, each committing its writes first. A process
that ends unexpectedly stops the whole server (``kiln run`` then exits 1), so a
supervisor restarts a server rather than run one short of a part.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from kiln.config import Config
from kiln.config.settings import env_name
from kiln.errors import InternalServerError
from kiln.realtime.peers import Frame, Peers
from kiln.storage.operations import Write
from kiln.storage.writer import Answer

log = logging.getLogger("kiln.workers")

STOP_TIMEOUT = 30.0
"""Seconds worker 1 waits for another process to stop before it kills it."""

BUS_FRAMES = frozenset({"durable", "message"})
"""The frames the write process passes on from each worker to the others."""


def schema_digest(app_dir: Path) -> str:
    """A digest of the app's schema: every process must serve the one worker 1 evolved to."""
    return hashlib.sha256((app_dir / "schema.graphql").read_bytes()).hexdigest()


def _settings_env(config: Config) -> dict[str, str]:
    """The ``KILN_*`` variables that give a process the settings worker 1 was started with
    (those the command line may set; the rest come from the same file and variables)."""
    values = {
        "http.host": config.http.host,
        "http.port": str(config.http.port),
        "http.accessLog": "true" if config.http.access_log else "false",
        "storage.path": str(config.storage.path),
    }
    return {env_name(key): value for key, value in values.items()}


class Crew:
    """The write process and workers 2..N, started and watched by worker 1.

    Args:
        app_dir: the application folder.
        config: worker 1's settings; ``http.workers`` says how many processes serve.
        on_lost: called on the event loop with a description when a process ends
            before :meth:`terminate` asked it to.
    """

    def __init__(self, app_dir: Path, config: Config, on_lost: Callable[[str], None]):
        self.stopping = False
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        env = {**os.environ, **_settings_env(config)}
        digest = schema_digest(app_dir)
        pairs = [socket.socketpair() for _ in range(config.http.workers)]
        self.link = pairs[0][0]
        """Worker 1's end of its link to the write process."""
        self.workers: list[subprocess.Popen[bytes]] = []
        try:
            ends = [theirs for _ours, theirs in pairs]
            command = [sys.executable, "-m", "kiln.spawned", "write", str(app_dir), digest]
            self.writer = subprocess.Popen(
                command + [str(end.fileno()) for end in ends],
                pass_fds=[end.fileno() for end in ends],
                env=env,
            )
            for number, (ours, _theirs) in enumerate(pairs[1:], start=2):
                command = [sys.executable, "-m", "kiln.spawned", "serve", str(app_dir), digest]
                command += [str(number), str(ours.fileno())]
                self.workers.append(subprocess.Popen(command, pass_fds=[ours.fileno()], env=env))
        except BaseException:
            self.terminate()
            self.link.close()
            raise
        finally:
            for ours, theirs in pairs:
                theirs.close()
                if ours is not self.link:
                    ours.close()
        for number, process in enumerate([self.writer, *self.workers], start=1):
            name = "the write process" if number == 1 else f"worker {number}"
            threading.Thread(
                target=self._watch, args=(process, name), name=f"kiln-watch-{number}", daemon=True
            ).start()

    def _watch(self, process: subprocess.Popen[bytes], name: str) -> None:
        code = process.wait()
        if not self.stopping:
            description = f"{name} (pid {process.pid}) ended with exit code {code}"
            self._loop.call_soon_threadsafe(self._lost, description)

    def _lost(self, description: str) -> None:
        if not self.stopping:
            self._on_lost(description)

    def terminate(self) -> None:
        """Ask workers 2..N to stop (SIGTERM): each finishes its requests and leaves."""
        self.stopping = True
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    async def wait(self, close_link: Callable[[], None]) -> None:
        """Wait for workers 2..N to end, then ``close_link`` (worker 1's link to the write
        process, with its last word) and wait for the write process, which stops once no
        worker is left.

        A process still running after :data:`STOP_TIMEOUT` is killed.
        """
        self.terminate()
        for process in self.workers:
            await self._ended(process)
        close_link()
        await self._ended(self.writer)

    async def _ended(self, process: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, process.wait), STOP_TIMEOUT)
        except TimeoutError:
            log.error("pid %d did not stop in %ss; killed", process.pid, STOP_TIMEOUT)
            process.kill()


_Outgoing = tuple[int, str, Sequence[Write], "str | None"]
"""A job on its way to the write process: its number, database, operations and user."""


class WriteLink:
    """A worker's link to the write process: its writers' jobs out, their answers and the
    change bus's frames in.

    Args:
        link: the worker's end of the link.
        on_frame: takes every frame that is not an answer (the change bus's).
        on_lost: called once if the write process goes away first.
    """

    def __init__(
        self,
        link: socket.socket,
        on_frame: Callable[[Frame], None],
        on_lost: Callable[[], None],
    ):
        self.peers = Peers([link])
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._pending: dict[int, Answer] = {}
        self._batch: list[_Outgoing] = []
        """The jobs forwarded in this turn of the loop, sent together at its end."""
        self._numbers = itertools.count()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.closing = False

    async def start(self) -> None:
        """Read the link on the running loop."""
        await self.peers.start(self._received, self._lost)

    def forward(
        self, database: str, operations: Sequence[Write], user: str | None, answer: Answer
    ) -> None:
        """Send a job to the write process (from any thread); ``answer`` gets its result."""
        if threading.get_ident() == self._loop_thread:
            self._send(database, operations, user, answer)
        else:
            self._loop.call_soon_threadsafe(self._send, database, operations, user, answer)

    def _send(
        self, database: str, operations: Sequence[Write], user: str | None, answer: Answer
    ) -> None:
        if self.closing or not self.peers.links:
            answer(None, _write_process_gone())
            return
        number = next(self._numbers)
        self._pending[number] = answer
        self._batch.append((number, database, operations, user))
        if len(self._batch) == 1:
            self._loop.call_soon(self._send_batch)

    def _send_batch(self) -> None:
        """Send the jobs of this turn of the loop in one frame, each pickled on its own so
        that one that cannot travel (a value of the app's own) fails alone, at once."""
        batch, self._batch = self._batch, []
        numbers, payloads = [], []
        for number, database, operations, user in batch:
            try:
                payloads.append(pickle.dumps((database, operations, user)))
            except Exception as error:
                answer = self._pending.pop(number, None)
                if answer is not None:
                    message = f"the write cannot go to the write process: {error}"
                    answer(None, InternalServerError(message))
            else:
                numbers.append(number)
        if numbers:
            self.peers.send(["jobs", numbers, payloads])
            self.peers.flush()  # already the end of the turn: no need to wait for another

    def _received(self, _link: int, frame: Frame) -> None:
        if frame[0] == "done":
            _kind, numbers, payload = frame
            try:
                results = pickle.loads(payload)
            except Exception as failure:  # pragma: no cover - the write process checks them
                results = [(None, InternalServerError(f"the write failed: {failure}"))] * len(
                    numbers
                )
            for number, (receipt, error) in zip(numbers, results, strict=True):
                answer = self._pending.pop(number, None)
                if answer is not None:
                    answer(receipt, error)
        else:
            self._on_frame(frame)

    def _lost(self, _link: int) -> None:
        self._fail_pending()
        if not self.closing:
            self._on_lost()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            answer(None, _write_process_gone())

    def close(self, *, last: bool = False) -> None:
        """Close the link (the write process sees this worker leave); ``last``: worker 1,
        after every other worker, says so first, so that the write process stops cleanly.
        Jobs still unanswered then get an error."""
        if self._batch:
            self._send_batch()
        self.closing = True
        if last:
            self.peers.send(["bye"])
        self.peers.close()
        self._fail_pending()


def _write_process_gone() -> InternalServerError:
    return InternalServerError(
        "kiln's write process stopped, so the write may or may not have been made",
        hint="read the record again; see the server's log",
    )
