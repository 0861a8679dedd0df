"""MQTT sessions: what one holds, and the LMDB store persistent ones survive restarts in.

A session is its subscriptions (each with its options and a *cursor*: the version through
which its events have been sent) and its QoS 1 messages sent but not yet acknowledged. A
clean session lives in memory while its client is connected. A persistent one (MQTT 3.1.1
clean session 0; MQTT 5 a session expiry interval above 0) is also kept in
``<storage.path>/.mqtt``, an LMDB environment of its own (never the app's tables), and
outlives its connection: when its client returns, the unacknowledged messages are sent again
and each subscription replays the audit log from its cursor, which delivers what changed
while the client was away; a replay that reaches past what ``logging.auditRetention`` kept
sends the current records as retained messages instead.

The store is written when a persistent session's subscriptions change (before the SUBACK
or UNSUBACK), when its client disconnects, when the server stops, and every
:data:`FLUSH_INTERVAL` while cursors and unacknowledged messages move. A crash loses at
most that last interval, and the replay from the older cursor sends those events again:
QoS 1 stays at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from kiln.mqtt.packets import MQTT_5, Connect, Publish, Subscription
from kiln.storage.database import open_lmdb
from kiln.types import Version

if TYPE_CHECKING:
    from kiln.mqtt.connection import Connection
    from kiln.mqtt.link import Link

log = logging.getLogger("kiln.mqtt")

_T = TypeVar("_T")

MQTT_FOLDER = ".mqtt"
"""The session store's folder under ``storage.path`` (a name no schema database can take)."""

FLUSH_INTERVAL = 1.0
"""Seconds between writes of the persistent sessions whose cursors or messages moved."""

NEVER = 0xFFFFFFFF
"""The session expiry interval of a session that never expires (MQTT 5 spec 3.1.2.11.2)."""

MAP_SIZE = 1 << 30
"""The store's size limit (LMDB files grow as they are written, up to this)."""

_SESSIONS = b"sessions"


class SubscriptionState(msgspec.Struct, kw_only=True):
    """One subscription of a session."""

    options: Subscription
    """The topic filter and the options the client asked for (QoS as granted)."""
    identifier: int | None = None
    """The MQTT 5 subscription identifier, sent with every message it delivers."""
    cursor: Version = 0
    """The version through which its events have been sent; 0 before its first."""


class SessionState(msgspec.Struct, kw_only=True):
    """A client's session: what a persistent one keeps between connections."""

    client_id: str
    owner: str | None = None
    """The user whose session it is (None: anonymous); no other user may take it over."""
    expiry_interval: int = 0
    """Seconds the session outlives its connection: 0 clean, :data:`NEVER` for 3.1.1."""
    subscriptions: dict[str, SubscriptionState] = msgspec.field(default_factory=dict)
    """By topic filter."""
    inflight: dict[int, Publish] = msgspec.field(default_factory=dict)
    """QoS 1 messages sent and not acknowledged, by packet identifier, oldest first."""
    next_packet_id: int = 1
    disconnected_at: float | None = None
    """``time.time()`` when its client left; None while connected."""

    @property
    def persistent(self) -> bool:
        """Whether it outlives its connection."""
        return self.expiry_interval > 0

    def expires_at(self) -> float | None:
        """When it ends (``time.time()``), or None while connected or if it never expires."""
        if self.disconnected_at is None or self.expiry_interval == NEVER:
            return None
        return self.disconnected_at + self.expiry_interval

    def packet_id(self) -> int:
        """A packet identifier no unacknowledged message uses.

        Raises:
            RuntimeError: all 65,535 are in use.
        """
        for _ in range(0xFFFF):
            packet_id = self.next_packet_id
            self.next_packet_id = packet_id % 0xFFFF + 1
            if packet_id not in self.inflight:
                return packet_id
        raise RuntimeError(f"session {self.client_id!r} has 65535 unacknowledged messages")


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SessionState).decode


class SessionStore:
    """The persistent sessions in the LMDB environment at ``path`` (created if absent).

    Every method does blocking I/O: the broker calls them in a thread, one at a time.
    """

    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._env = open_lmdb(path, map_size=MAP_SIZE, max_dbs=1, subdir=True)
        self._db = self._env.open_db(_SESSIONS)

    def load(self, client_id: str) -> SessionState | None:
        """The stored session of ``client_id``, if any."""
        with self._env.begin(db=self._db) as txn:
            data = txn.get(client_id.encode())
        return None if data is None else _decode(data)

    def save(self, snapshots: Mapping[str, bytes]) -> None:
        """Store the sessions :func:`snapshot` took, by client id, in one transaction."""
        with self._env.begin(db=self._db, write=True) as txn:
            for client_id, data in snapshots.items():
                txn.put(client_id.encode(), data)

    def delete(self, client_id: str) -> None:
        """Forget the session of ``client_id``; without one, nothing is written."""
        key = client_id.encode()
        with self._env.begin(db=self._db) as txn:
            if txn.get(key) is None:
                return
        with self._env.begin(db=self._db, write=True) as txn:
            txn.delete(key)

    def sweep(self, now: float | None = None) -> int:
        """Delete the expired sessions; the number deleted.

        A session stored while its client was connected (the server stopped without
        closing it: a crash) counts as disconnected now.
        """
        now = time.time() if now is None else now
        expired: list[bytes] = []
        restarted: list[SessionState] = []
        with self._env.begin(db=self._db) as txn:
            for key, data in txn.cursor():
                state = _decode(data)
                if state.disconnected_at is None:
                    state.disconnected_at = now
                    restarted.append(state)
                expires = state.expires_at()
                if expires is not None and expires <= now:
                    expired.append(key)
        with self._env.begin(db=self._db, write=True) as txn:
            for state in restarted:
                txn.put(state.client_id.encode(), _encode(state))
            for key in expired:
                txn.delete(key)
        return len(expired)

    def close(self) -> None:
        """Close the environment."""
        self._env.close()


def snapshot(state: SessionState) -> bytes:
    """``state`` as the store keeps it: taken on the event loop, written later in a thread."""
    return _encode(state)


class Sessions:
    """Every client's session: the connected ones, and the persistent ones awaiting their
    client; the store they are kept in, their expiry, and wills waiting out their delay.

    Args:
        store: where persistent sessions are kept.
        publish_will: publishes the will of a CONNECT (from the link, as the client id)
            with the rights its credentials give at that moment (the broker's).
    """

    def __init__(
        self, store: SessionStore, publish_will: Callable[[Connect, Link, str], Awaitable[None]]
    ):
        self.store = store
        self._publish_will = publish_will
        self.states: dict[str, SessionState] = {}
        """Connected sessions, and persistent ones whose client is away, by client id."""
        self.connections: dict[str, Connection] = {}
        self._dirty: set[str] = set()
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self._wills: dict[str, tuple[asyncio.TimerHandle, Connect, Link]] = {}
        """Wills waiting out their delay: the timer, the CONNECT, the link it came over."""
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Write the persistent sessions that moved every :data:`FLUSH_INTERVAL` (on the loop)."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def owner_of(self, client_id: str) -> tuple[bool, str | None]:
        """Whether ``client_id`` has a session (connected or kept), and whose it is."""
        previous = self.connections.get(client_id)
        if previous is not None:
            return True, _user_name(previous)
        state = self.states.get(client_id)
        if state is None:
            state = await self._io(self.store.load, client_id)
        return state is not None, None if state is None else state.owner

    async def attach(
        self, connection: Connection, connect: Connect, client_id: str
    ) -> tuple[SessionState, bool]:
        """The session a CONNECT starts or resumes, and whether it resumed one.

        A connection of the same client is ended first (session taken over). A pending
        will is dropped when the session resumes, and published at once when it starts clean.
        """
        previous = self.connections.get(client_id)
        if previous is not None:
            await previous.take_over()
        expiry = self._expiries.pop(client_id, None)
        if expiry is not None:
            expiry.cancel()
        pending = self._wills.pop(client_id, None)
        if pending is not None:
            pending[0].cancel()
            if connect.clean_start:
                await self._publish_will(pending[1], pending[2], client_id)
        if connect.protocol_level == MQTT_5:
            interval = connect.properties.session_expiry_interval or 0
        else:
            interval = 0 if connect.clean_start else NEVER
        state = self.states.get(client_id)
        if state is None and not connect.clean_start:
            state = await self._io(self.store.load, client_id)
        present = state is not None and not connect.clean_start
        if state is None or connect.clean_start:
            state = SessionState(client_id=client_id)
        state.owner = _user_name(connection)
        state.expiry_interval = interval
        state.disconnected_at = None
        self.states[client_id] = state
        self.connections[client_id] = connection
        if not state.persistent:  # a session kept before ends now
            await self._io(self.store.delete, client_id)
        return state, present

    async def detach(
        self, connection: Connection, state: SessionState, connect: Connect | None
    ) -> None:
        """The connection of ``state`` ended: keep or end the session, publish or delay the will
        of ``connect`` (None: no will is due)."""
        client_id = state.client_id
        if self.connections.get(client_id) is connection:
            del self.connections[client_id]
        state.disconnected_at = time.time()
        loop = asyncio.get_running_loop()
        # everything up to the first await is done before a new CONNECT can attach
        if state.persistent and state.expiry_interval != NEVER:
            self._expiries[client_id] = loop.call_later(
                state.expiry_interval, self._expire, client_id
            )
        elif not state.persistent:
            self.states.pop(client_id, None)
            self._dirty.discard(client_id)
        will = None if connect is None else connect.will
        delay = 0
        if will is not None:
            delay = min(will.properties.will_delay_interval or 0, state.expiry_interval)
            if delay:
                handle = loop.call_later(delay, self._will_due, client_id)
                self._wills[client_id] = (handle, connect, connection.link)
        if state.persistent:
            await self.save(state)
        else:  # it may have been kept before a DISCONNECT set its expiry to 0
            await self._io(self.store.delete, client_id)
        if will is not None and not delay:
            await self._publish_will(connect, connection.link, client_id)

    def mark_dirty(self, state: SessionState) -> None:
        """A persistent session's cursors or unacknowledged messages moved: write it soon."""
        if state.persistent:
            self._dirty.add(state.client_id)

    async def save(self, state: SessionState) -> None:
        """Write a persistent session now."""
        self._dirty.discard(state.client_id)
        await self._io(self.store.save, {state.client_id: snapshot(state)})

    async def close(self) -> None:
        """Write every persistent session and close the store (once the connections ended)."""
        if self._flusher is not None:
            self._flusher.cancel()
        for handle in self._expiries.values():
            handle.cancel()
        for handle, _connect, _link in self._wills.values():
            handle.cancel()
        await self._flush()
        await self._io(self.store.close)

    async def _io(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run a store method in a thread, one at a time."""
        async with self._lock:
            return await asyncio.to_thread(function, *args)

    async def _flush(self) -> None:
        dirty = [self.states[name] for name in self._dirty if name in self.states]
        self._dirty.clear()
        if dirty:
            await self._io(self.store.save, {state.client_id: snapshot(state) for state in dirty})

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self._flush()
            except Exception:
                log.exception("writing the MQTT sessions failed")

    def _expire(self, client_id: str) -> None:
        self._expiries.pop(client_id, None)
        if client_id in self.connections:
            return
        self.states.pop(client_id, None)
        self._dirty.discard(client_id)
        self._background(self._io(self.store.delete, client_id))
        if client_id in self._wills:  # the session ended before the will's delay
            self._will_due(client_id)

    def _will_due(self, client_id: str) -> None:
        pending = self._wills.pop(client_id, None)
        if pending is not None:
            _handle, connect, link = pending
            self._background(self._publish_will(connect, link, client_id))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in a task of its own, kept until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _user_name(connection: Connection) -> str | None:
    """The name of the user a connection authenticated as (None: anonymous or not yet)."""
    context = connection.context
    user = None if context is None else context.user
    return None if user is None else user.name
