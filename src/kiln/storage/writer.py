"""The one writer thread of a database: group commit, each request rolled back alone.

Requests hand their operations to :meth:`Writer.execute` (async) or
:meth:`Writer.execute_sync`. The writer thread takes every job waiting in its
queue, applies each in a nested transaction of one outer transaction (a job that
fails is rolled back alone and its error goes back to its request) and commits
the outer transaction. Many requests thus share one commit.

A commit is made durable in two steps on two threads, so that the next group is
applied while the last one is being made durable:

1. the writer thread's commit syncs the new pages, then writes the meta page that
   makes them current (the environment is opened with ``metasync=False``, so LMDB
   does not sync that page: see :mod:`kiln.storage.database`);
2. the sync thread then syncs the file once for every group committed meanwhile,
   which puts their meta pages on disk, and only then answers their jobs.

An acknowledgement therefore always follows a sync that started after its commit.

When more than one process serves the app, a writer hands its jobs to the write
process instead (:meth:`Writer.delegate`, :mod:`kiln.workers`), where the same
code applies them. A job whose operations are code (:class:`DeleteMatching`)
stays on this thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import lmdb

from kiln.errors import InternalServerError, KilnError
from kiln.storage.database import Database
from kiln.storage.operations import DeleteMatching, Write, WriteResult, perform
from kiln.types import Version

log = logging.getLogger("kiln.writer")

_STOP = None


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Receipt:
    """The results of one job, and the id of the durable LMDB commit that holds them."""

    results: list[WriteResult]
    txn_id: int


@dataclass(slots=True)
class _Job:
    operations: Sequence[Write]
    user: str | None
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Receipt] | None = None
    done: threading.Event | None = None
    answer: Answer | None = None
    results: list[WriteResult] = field(default_factory=list)
    error: BaseException | None = None
    receipt: Receipt | None = None
    excluded: bool = False


@dataclass(frozen=True, slots=True)
class _Committed:
    """A committed group on its way to the sync thread, and a bound on its versions."""

    group: list[_Job]
    through: Version


Answer = Callable[["Receipt | None", "BaseException | None"], None]
"""Called with a delegated job's receipt, or with its error."""

Forward = Callable[[str, Sequence[Write], "str | None", Answer], None]
"""Sends a job (database name, operations, user) to another process's writer, and its
answer back to ``Answer`` (:meth:`Writer.delegate`); callable from any thread."""


class _Redo(Exception):
    """A job failed after it may have written: redo the group without it, nesting every job."""


def _settle(jobs: list[_Job]) -> None:
    """Answer the asyncio futures of ``jobs`` (runs on their event loop)."""
    for job in jobs:
        if job.future is None or job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.receipt)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Writer:
    """Applies every write of one database, many requests per durable commit.

    Args:
        database: the database whose environment this writer alone writes to.
        max_group: the most jobs committed together.
    """

    def __init__(self, database: Database, *, max_group: int = 512):
        self.database = database
        self.max_group = max_group
        self.on_commit: Callable[[], None] | None = None
        """Called on the sync thread once commits are durable (the change bus sets it)."""
        self.durable_through: Version = database.clock.last
        """Every write of this database with a version up to this one is on disk."""
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._committed: queue.SimpleQueue[_Committed | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"kiln-writer-{database.name}", daemon=True
        )
        self._syncer = threading.Thread(
            target=self._sync_and_answer, name=f"kiln-sync-{database.name}", daemon=True
        )
        self._closed = False
        self._broken: InternalServerError | None = None
        """Set when a sync failed: what every later write is told."""
        self._forward: Forward | None = None

    def delegate(self, forward: Forward | None) -> None:
        """From now on, hand every job made only of data to ``forward`` (None: apply them
        here again). The other process answers once its commit is on disk."""
        self._forward = forward

    def start(self) -> None:
        """Start the writer and sync threads; jobs submitted before wait until then."""
        self._thread.start()
        self._syncer.start()

    async def execute(self, operations: Sequence[Write], user: str | None = None) -> Receipt:
        """Apply ``operations`` atomically and durably; awaiting does not block the loop.

        Raises:
            KilnError: the first operation that could not apply (nothing of the job is kept).
        """
        return await self.begin(operations, user)

    def begin(
        self, operations: Sequence[Write], user: str | None = None
    ) -> asyncio.Future[Receipt]:
        """:meth:`execute` without a coroutine: the future of its receipt (call it on the loop)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._submit(_Job(operations, user, loop, future))
        return future

    def execute_sync(self, operations: Sequence[Write], user: str | None = None) -> Receipt:
        """Like :meth:`execute`, blocking the calling thread (never call it on the event loop)."""
        job = _Job(operations, user, None, done=threading.Event())
        self._submit(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return cast(Receipt, job.receipt)

    def hand(self, operations: Sequence[Write], user: str | None, answer: Answer) -> None:
        """Apply ``operations`` like :meth:`execute`; ``answer`` gets the receipt or the error,
        on the sync thread, once the commit is on disk (how the write process answers)."""
        self._submit(_Job(operations, user, None, answer=answer))

    def submit(self, operations: Sequence[Write]) -> None:
        """Queue ``operations`` without waiting for them; a failure is only logged."""
        self._submit(_Job(operations, None, None))

    def close(self) -> None:
        """Commit every job already queued on this thread, then stop it (jobs handed to
        another process are answered by it)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()
        self._committed.put(_STOP)
        if self._syncer.is_alive():
            self._syncer.join()

    def _submit(self, job: _Job) -> None:
        if self._closed:
            raise RuntimeError(f"the writer of database {self.database.name!r} is closed")
        forward = self._forward
        if forward is not None and not any(
            isinstance(write, DeleteMatching) for write in job.operations
        ):
            forward(self.database.name, job.operations, job.user, partial(self._finish, job))
            return
        self._queue.put(job)

    def _finish(self, job: _Job, receipt: Receipt | None, error: BaseException | None) -> None:
        """Answer a delegated ``job`` as if it had been applied here (straight away when
        the answer arrives on the job's own event loop, as it does over a link)."""
        job.receipt, job.error = receipt, error
        if job.future is not None and _running_loop() is job.loop:
            _settle([job])
        else:
            self._answer([job])

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                stopping = True
                group: list[_Job] = []
            else:
                group = [first]
            while len(group) < self.max_group:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    continue
                group.append(job)
            if group:
                self._commit_group(group)

    def _commit_group(self, group: list[_Job]) -> None:
        if self._broken is not None:  # nothing more is written after a failed sync
            for job in group:
                job.error = self._broken
            self._answer(group)
            return
        through = self.durable_through
        try:
            txn_id, through = self._apply_group(group)
        except Exception as error:  # the commit itself failed: no job of the group holds
            log.exception("commit of %d write(s) failed", len(group))
            for job in group:
                job.error = error
        else:
            for job in group:
                if job.error is None:
                    job.receipt = Receipt(job.results, txn_id)
        self._committed.put(_Committed(group, through))

    def _sync_and_answer(self) -> None:
        """The sync thread: make every group committed so far durable, then answer it."""
        stopping = False
        while not stopping:
            commits: list[_Committed] = []
            item = self._committed.get()
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    commits.append(item)
                try:
                    item = self._committed.get_nowait()
                except queue.Empty:
                    break
            if commits:
                self._make_durable(commits)

    def _make_durable(self, commits: list[_Committed]) -> None:
        try:
            if self._broken is not None:
                raise self._broken
            self.database.sync()
        except Exception as error:
            if self._broken is None:  # committed, but maybe not on disk: trust no later sync
                log.critical(
                    "syncing database %r to disk failed; it takes no more writes until "
                    "kiln restarts",
                    self.database.name,
                    exc_info=error,
                )
                self._broken = InternalServerError(
                    f"database {self.database.name!r} could not sync to disk ({error}); "
                    "the write may or may not be there",
                    hint="check the disk, then restart kiln",
                )
            for commit in commits:
                for job in commit.group:
                    job.error = job.error or self._broken
        else:
            self.durable_through = max(commit.through for commit in commits)
            if self.on_commit is not None:
                try:
                    self.on_commit()
                except Exception:  # a listener's failure must not stop the answers
                    log.exception("the commit listener of database %r failed", self.database.name)
        for commit in commits:
            self._answer(commit.group)

    def _apply_group(self, group: list[_Job]) -> tuple[int, Version]:
        """Apply and commit ``group``; returns the commit's transaction id and the newest
        version in the log at its commit, which bounds every write it (or an earlier commit,
        of any process) made.

        A job of one operation is applied straight into the group's transaction:
        :func:`apply` raises its expected errors (:class:`KilnError`) before it
        writes anything, so such a job needs no nested transaction of its own, which
        saves copying every page it touches. Any other failure may have left a
        partial write, so the group is redone without that job, every job nested.
        """
        env = self.database.env
        nest_every_job = False
        while True:
            try:
                with env.begin(write=True) as txn:
                    # Another process may have written since (``http.workers``): versions
                    # follow the order of the commits, which the log must keep.
                    self.database.clock.observe(self.database.audit.last_version(txn))
                    for job in group:
                        if not job.excluded:
                            nest = (
                                nest_every_job
                                or len(job.operations) > 1
                                or isinstance(job.operations[0], DeleteMatching)
                            )
                            self._apply_job(txn, job, nest=nest)
                    txn_id, through = txn.id(), self.database.audit.last_version(txn)
                return txn_id, through
            except lmdb.MapFullError:
                self.database.grow()
            except _Redo:
                nest_every_job = True

    def _apply_job(self, txn: lmdb.Transaction, job: _Job, *, nest: bool) -> None:
        job.results = []
        job.error = None
        target = self.database.env.begin(write=True, parent=txn) if nest else txn
        try:
            for write in job.operations:
                job.results.extend(perform(self.database, target, write, job.user))
        except lmdb.MapFullError:
            if nest:
                target.abort()
            raise
        except Exception as error:
            job.results = []
            job.error = error
            if nest:
                target.abort()
            elif not isinstance(error, KilnError):
                job.excluded = True
                raise _Redo from error
        else:
            if nest:
                target.commit()

    def _answer(self, group: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            if job.done is not None:
                job.done.set()
            elif job.answer is not None:
                try:
                    job.answer(job.receipt, job.error)
                except Exception:  # one listener's failure must not keep the others waiting
                    log.exception("answering a write of database %r failed", self.database.name)
            elif job.loop is not None:
                by_loop.setdefault(job.loop, []).append(job)
            elif job.error is not None:  # submitted without waiting: nobody else will hear
                log.error("a queued write failed: %s", job.error)
        for loop, jobs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, jobs)
            except RuntimeError:  # the loop closed while the job was in flight
                log.warning("dropped the answer to %d write(s): their event loop closed", len(jobs))
