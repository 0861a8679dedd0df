"""The change bus: every committed write, read back from the audit log, to its subscribers.

After each durable commit a database's writer tells the bus (from its own
thread); the bus, on the event loop, reads the audit entries newer than the last
one it delivered and hands each to the subscriptions of its table and record.
Reading the log rather than the writer's memory is what lets a catch-up replay
(``since``, ``previous_count``) join the live stream with nothing missed and
nothing doubled: a new subscription's history ends at the version the bus has
delivered through, and its live events start after it, in one step on the loop.

Messages (:meth:`ChangeBus.publish`) are delivered at once and logged through the
writer without waiting: a message is not data.

With more than one worker process (``http.workers``) the bus of each also follows
the others (:meth:`ChangeBus.join`): a worker tells the others how far its writes
are on disk, and their buses then read those entries from the shared log as they
read their own; a published message is sent to them as it is delivered here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from kiln.realtime.events import Event, Topic
from kiln.realtime.peers import Frame, Peers
from kiln.realtime.subscription import PAUSE, Subscription
from kiln.storage.audit import AuditEntry
from kiln.storage.clock import HybridClock
from kiln.storage.database import Database
from kiln.storage.keys import encode_key
from kiln.storage.operations import LogMessage, PruneLog
from kiln.storage.writer import Writer
from kiln.types import VERSION_COUNTER_BITS, Key, Version

log = logging.getLogger("kiln.realtime")

_CHUNK = 500
"""Records or log entries read per short read transaction while replaying history."""
_PRUNE_BATCH = 1000
"""Audit entries deleted per writer job, so pruning never holds the writer for long."""

published_wire: ContextVar[tuple[Any, Any] | None] = ContextVar("published_wire", default=None)
"""``(message, wire)``, set by a protocol adapter while it calls ``publish`` on the seam.

When that very message object reaches :meth:`ChangeBus.publish`, its event carries ``wire``
(:attr:`Event.wire`): the MQTT broker relays a message byte for byte this way, while every
other subscriber reads the decoded ``message``. A resource that publishes another object (a
transformed message) publishes it without a wire form."""


@dataclass(slots=True)
class _Feed:
    """One database's place in its audit log."""

    database: Database
    writer: Writer
    delivered: Version
    scheduled: bool = False
    peers_durable: Version = 0
    """How far the other workers' writes to this database are on disk."""
    told: Version = 0
    """How far this worker last told the others its own writes are on disk."""
    messages: list[LogMessage] = field(default_factory=list)
    """Messages published in this turn of the event loop, logged as one writer job."""


class ChangeBus:
    """Delivers committed writes and published messages to subscriptions.

    Args:
        databases: the app's databases, by name.
        writers: their writers, by database name.
        clock: the process's clock (versions of published messages).
        max_queue: the most live events one subscriber may have waiting.
        retention: seconds audit entries are kept; older ones are pruned.
    """

    def __init__(
        self,
        databases: dict[str, Database],
        writers: dict[str, Writer],
        clock: HybridClock,
        *,
        max_queue: int = 1000,
        retention: float = 3 * 86400.0,
    ):
        self._feeds: dict[str, _Feed] = {}
        for name, database in databases.items():
            with database.read() as txn:
                delivered = database.audit.last_version(txn)
            writer = writers[name]
            self._feeds[name] = _Feed(database, writer, delivered, told=writer.durable_through)
        self._clock = clock
        self.max_queue = max_queue
        self.retention = retention
        # Weak sets: a subscription nobody reads any more (an overriding subscribe() that
        # wrapped it was dropped without closing it) leaves the index by itself.
        self._by_record: dict[tuple[str, Key], WeakSet[Subscription]] = {}
        self._by_channel: dict[str, WeakSet[Subscription]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._pruner: asyncio.Task[None] | None = None
        self._peers: Peers | None = None

    def start(self, *, prune: bool = True) -> None:
        """Follow every writer's commits and, if ``prune``, prune the logs (one worker
        does); call it on the running loop."""
        self._loop = asyncio.get_running_loop()
        for name, feed in self._feeds.items():
            feed.writer.on_commit = self._committed_callback(name, feed)
        if prune:
            self._pruner = self._loop.create_task(self._prune_forever())

    def join(self, peers: Peers) -> None:
        """Follow the other workers' writes and messages through ``peers``, and tell them
        this one's (hand :meth:`receive` the frames ``peers`` reads)."""
        self._peers = peers

    def receive(self, frame: Frame) -> None:
        """Take in a frame from another process (on the event loop)."""
        if frame[0] == "durable":
            _kind, database, version = frame
            feed = self._feeds.get(database)
            if feed is not None and version > feed.peers_durable:
                feed.peers_durable = version
                self._clock.observe(version)
                self._schedule(feed)
        elif frame[0] == "message":
            _kind, channel, key, version, message, _database = frame
            self._clock.observe(version)
            self._dispatch(channel, Event("message", key, version, message))

    def close(self) -> None:
        """Stop following the writers and end every subscription (on the loop, if started)."""
        self._closed = True
        for feed in self._feeds.values():
            feed.writer.on_commit = None
            self._log_messages(feed)
        if self._pruner is not None:
            self._pruner.cancel()
            self._pruner = None
        for subscriptions in [*self._by_record.values(), *self._by_channel.values()]:
            for subscription in list(subscriptions):
                subscription.close()

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        topic: Topic,
        database: str | None,
        *,
        since: Version | None = None,
        previous_count: int | None = None,
        current: bool = True,
    ) -> Subscription:
        """A subscription to ``topic``: its history, then every live event.

        Args:
            topic: what to listen to.
            database: the database whose log holds the channel's writes; None for a
                channel of messages only (a plain resource).
            since: replay the logged events newer than this version first.
            previous_count: replay the last this-many logged events first.
            current: without a replay, start with the current record(s).
        """
        feed = self._feeds.get(database) if database is not None else None
        bound = feed.delivered if feed is not None else 0
        history: Iterator[Event | None] = iter((Event("sync", None, bound),))
        if feed is not None:
            if since is not None:
                history = self._replay(feed, topic, since, bound)
            elif previous_count is not None:
                history = self._last(feed, topic, previous_count, bound)
            elif current:
                history = self._current(feed, topic, bound)
        subscription = Subscription(topic, self.max_queue, history, bound, self._forget)
        if topic.id is not None:
            self._by_record.setdefault((topic.channel, topic.id), WeakSet()).add(subscription)
        else:
            self._by_channel.setdefault(topic.channel, WeakSet()).add(subscription)
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        topic = subscription.topic
        if topic.id is not None:
            index: dict[Any, WeakSet[Subscription]] = self._by_record
            slot: Any = (topic.channel, topic.id)
        else:
            index, slot = self._by_channel, topic.channel
        subscriptions = index.get(slot)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del index[slot]

    # ------------------------------------------------------------------ publishing

    def publish(self, channel: str, key: Key, message: Any, database: str | None) -> Version:
        """Deliver ``message`` about record ``key`` to its subscribers now; log it unawaited.

        Returns the message's version.
        """
        version = self._clock.now()
        arrived = published_wire.get()
        wire = arrived[1] if arrived is not None and arrived[0] is message else None
        self._dispatch(channel, Event("message", key, version, message, wire=wire))
        if self._peers is not None:
            self._peers.send(["message", channel, key, version, message, database])
        feed = self._feeds.get(database) if database is not None else None
        if feed is not None:
            feed.messages.append(LogMessage(AuditEntry(version, channel, key, "message", message)))
            if len(feed.messages) == 1:
                if self._loop is None:  # not started: no turns to gather messages in
                    self._log_messages(feed)
                else:
                    self._loop.call_soon(self._log_messages, feed)
        return version

    def _log_messages(self, feed: _Feed) -> None:
        """Log the messages published since the last call, in one writer job (a job per
        message would cost the writer far more than the messages themselves)."""
        messages, feed.messages = feed.messages, []
        if messages:
            try:
                feed.writer.submit(messages)
            except RuntimeError:  # the writer closed first (shutting down)
                log.warning("%d published messages were not logged", len(messages))

    # ------------------------------------------------------------------ live delivery

    def _committed_callback(self, name: str, feed: _Feed) -> Any:
        loop = self._loop
        assert loop is not None

        def committed() -> None:  # on the writer's thread
            if not feed.scheduled:
                feed.scheduled = True
                try:
                    loop.call_soon_threadsafe(self._drain, feed)
                except RuntimeError:  # the loop is closing
                    feed.scheduled = False

        return committed

    def _schedule(self, feed: _Feed) -> None:
        """Drain ``feed`` in the next turn of the loop (on the event loop)."""
        if not feed.scheduled and self._loop is not None:
            feed.scheduled = True
            self._loop.call_soon(self._drain, feed)

    def _drain(self, feed: _Feed) -> None:
        """Deliver the entries committed since the last drain (on the event loop).

        Entries up to the newest version on disk are delivered, whichever worker wrote
        them: a sync puts every earlier commit of the environment on disk too.
        """
        feed.scheduled = False
        if self._closed:  # scheduled by a last commit while closing: the stores may be gone
            return
        own = feed.writer.durable_through
        if self._peers is not None and own > feed.told:
            feed.told = own
            self._peers.send(["durable", feed.database.name, own])
        durable = max(own, feed.peers_durable)
        if not self._has_subscribers():  # nobody to tell: skip reading the entries
            feed.delivered = max(feed.delivered, durable)
            return
        database = feed.database
        with database.read() as txn:
            entries = list(
                itertools.takewhile(
                    lambda entry: entry.version <= durable,
                    database.audit.read(txn, feed.delivered),
                )
            )
        for entry in entries:
            feed.delivered = entry.version
            if entry.kind != "message":  # messages were delivered when published
                self._dispatch(entry.table, _event(entry))

    def _has_subscribers(self) -> bool:
        return any(self._by_channel.values()) or any(self._by_record.values())

    def _dispatch(self, channel: str, event: Event) -> None:
        by_record = self._by_record.get((channel, event.id))
        if by_record is not None and not by_record:  # its subscribers were all dropped
            del self._by_record[(channel, event.id)]
        for subscription in list(self._by_record.get((channel, event.id), ())):
            subscription.deliver(event)
        for subscription in list(self._by_channel.get(channel, ())):
            if subscription.topic.matches(event.id):
                subscription.deliver(event)

    # ------------------------------------------------------------------ history

    def _current(self, feed: _Feed, topic: Topic, bound: Version) -> Iterator[Event | None]:
        """The topic's records as ``put`` events, read in short transactions.

        A record changed after ``bound`` is left out: its change arrives live.
        """
        database = feed.database
        store = database.tables.get(topic.channel)
        if store is None:
            yield Event("sync", None, bound)
            return
        if topic.id is not None:
            with database.read() as txn:
                found = store.get(txn, topic.id)
            if found is not None and found[0] <= bound:
                yield Event("put", topic.id, found[0], found[1])
            yield Event("sync", None, bound)
            return
        primary_key = store.definition.primary_key
        after = None
        if topic.prefix is not None:  # a prefix ends with '/', so it is no key itself
            after = encode_key(topic.prefix)
        while True:
            with database.read() as txn:
                chunk = store.scan_versioned(txn, after, _CHUNK)
            for _raw_key, version, record in chunk:
                key = record[primary_key]
                if not topic.matches(key):
                    yield Event("sync", None, bound)
                    return
                if version <= bound:
                    yield Event("put", key, version, record)
            if len(chunk) < _CHUNK:
                break
            after = chunk[-1][0]
            yield PAUSE
        yield Event("sync", None, bound)

    def _replay(
        self, feed: _Feed, topic: Topic, since: Version, bound: Version
    ) -> Iterator[Event | None]:
        """The logged events of ``topic`` newer than ``since``, through ``bound``."""
        audit = feed.database.audit
        with feed.database.read() as txn:
            pruned = audit.pruned_through(txn)
        if pruned > since:
            yield _gap(topic, since, pruned)
        after = since
        while after < bound:
            with feed.database.read() as txn:
                chunk = []
                for entry in audit.read(txn, after):
                    if entry.version > bound or len(chunk) == _CHUNK:
                        break
                    chunk.append(entry)
            for entry in chunk:
                if entry.table == topic.channel and topic.matches(entry.key):
                    yield _event(entry)
            if len(chunk) < _CHUNK:
                break
            after = chunk[-1].version
            yield PAUSE
        yield Event("sync", None, bound)

    def _last(
        self, feed: _Feed, topic: Topic, count: int, bound: Version
    ) -> Iterator[Event | None]:
        """The last ``count`` logged events of ``topic`` through ``bound``, oldest first,
        read backwards a chunk per short transaction."""
        audit = feed.database.audit
        found: list[Event] = []
        with feed.database.read() as txn:
            pruned = audit.pruned_through(txn)
        through = bound
        while count > 0 and len(found) < count:
            with feed.database.read() as txn:
                chunk = list(itertools.islice(audit.read_back(txn, through), _CHUNK))
            for entry in chunk:
                if entry.table == topic.channel and topic.matches(entry.key):
                    found.append(_event(entry))
                    if len(found) == count:
                        break
            if len(chunk) < _CHUNK:
                break
            through = chunk[-1].version - 1
            yield PAUSE
        if len(found) < count and pruned:
            yield _gap(topic, None, pruned)
        yield from reversed(found)
        yield Event("sync", None, bound)

    # ------------------------------------------------------------------ retention

    async def _prune_forever(self) -> None:
        interval = max(0.05, min(self.retention / 2, 60.0))
        while True:
            await asyncio.sleep(interval)
            for feed in self._feeds.values():
                try:
                    await self._prune(feed)
                except Exception:
                    log.exception("pruning the audit log of %r failed", feed.database.name)

    async def _prune(self, feed: _Feed) -> None:
        """Delete the entries older than the retention, a batch per writer job."""
        cutoff = int((time.time() - self.retention) * 1000) << VERSION_COUNTER_BITS
        database = feed.database
        while True:
            with database.read() as txn:
                oldest = database.audit.first_version(txn)
            if not oldest or oldest >= cutoff:
                return
            await feed.writer.execute([PruneLog(cutoff, _PRUNE_BATCH)])


def _event(entry: AuditEntry) -> Event:
    value = entry.record
    return Event(entry.kind, entry.key, entry.version, value, entry.patch)


def _gap(topic: Topic, since: Version | None, pruned: Version) -> Event:
    requested = "the requested history" if since is None else f"history after version {since}"
    return Event(
        "gap",
        topic.id,
        pruned,
        {
            "detail": f"{requested} is partly gone: entries through version {pruned} were "
            "pruned (logging.auditRetention); events before that point are missing",
            "prunedThrough": pruned,
        },
    )
