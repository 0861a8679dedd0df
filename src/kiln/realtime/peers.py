"""Links between the processes of one server (:mod:`kiln.workers`).

The write process holds a stream socket to each worker that serves HTTP; a
worker's frames go to the write process, which relays those its peers need to
every other worker. A frame is a MessagePack array behind its 4-byte length, so
it arrives whole and in order, up to 4 GiB.

The change bus (:class:`kiln.realtime.bus.ChangeBus`) sends and reads two kinds:
``["durable", database, version]``, sent once the writes up to ``version`` are on
disk, and ``["message", channel, key, version, message, database]``, a message
published on a worker, for the subscribers of the others. The writes themselves
travel as ``job`` and ``done`` frames (:mod:`kiln.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import msgspec

log = logging.getLogger("kiln.peers")

_HEADER = 4
"""Bytes of the big-endian length in front of each frame."""

Frame = list[Any]
"""A decoded frame: its kind first, then its fields."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class _Link(asyncio.Protocol):
    """One link's socket: cuts the bytes it reads into frames for :class:`Peers`."""

    def __init__(self, peers: Peers, number: int):
        self._peers = peers
        self._number = number
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER:
            end = start + _HEADER + int.from_bytes(buffer[start : start + _HEADER], "big")
            if len(buffer) < end:
                break
            self._peers._received(self._number, bytes(buffer[start:end]))
            start = end
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._peers._lost(self._number)


class Peers:
    """This process's links to the other workers.

    Args:
        sockets: connected stream sockets, one to each process this one talks to
            (the write process: one per worker; a worker: one, to the write process).
        relay: the kinds of frame this process passes on from each link to all its
            other links (the write process relays those of the change bus).
    """

    def __init__(self, sockets: list[socket.socket], *, relay: frozenset[str] = frozenset()):
        self._sockets = sockets
        self._relay = relay
        self._links: list[_Link] = []
        self._open = 0
        self._on_frame: Callable[[int, Frame], None] = lambda _link, _frame: None
        self._on_lost: Callable[[int], None] = lambda _link: None
        self._outgoing: list[list[bytes]] = []
        """Per link, the frames sent in this turn of the loop: written in one call at its end."""
        self._flushing = False
        self._closing = False

    async def start(
        self, on_frame: Callable[[int, Frame], None], on_lost: Callable[[int], None]
    ) -> None:
        """Read every link on the running loop: each frame goes to ``on_frame`` with the
        number of its link (in the order of ``sockets``).

        ``on_lost(i)`` is called when link ``i`` ends: the process at its other end stopped.
        """
        self._on_frame, self._on_lost = on_frame, on_lost
        loop = asyncio.get_running_loop()
        for number, sock in enumerate(self._sockets):
            sock.setblocking(False)
            _transport, link = await loop.connect_accepted_socket(
                partial(_Link, self, number), sock=sock
            )
            self._links.append(link)
            self._outgoing.append([])
            self._open += 1

    def send(self, frame: Frame, link: int | None = None) -> bool:
        """Send ``frame`` on ``link``, or on every link; False if it cannot be encoded (then
        nothing is sent). Call it on the event loop."""
        try:
            payload = _encoder.encode(frame)
        except (TypeError, ValueError, OverflowError) as error:
            log.warning("a %s frame could not go to the other processes: %s", frame[0], error)
            return False
        data = len(payload).to_bytes(_HEADER, "big") + payload
        for number in range(len(self._links)) if link is None else (link,):
            self._queue(number, data)
        return True

    def _queue(self, link: int, data: bytes) -> None:
        """Write ``data`` on ``link`` at the end of this turn of the loop, with the rest."""
        self._outgoing[link].append(data)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the frames sent so far now, not at the end of this turn of the loop."""
        self._flushing = False
        for link, frames in zip(self._links, self._outgoing, strict=True):
            if frames:
                transport = link.transport
                if transport is not None and not transport.is_closing():
                    transport.write(b"".join(frames))
                frames.clear()

    @property
    def links(self) -> int:
        """How many links are still open."""
        return self._open

    def _received(self, number: int, data: bytes) -> None:
        """A whole frame (``data`` holds its header) arrived on link ``number``."""
        try:
            frame = _decoder.decode(memoryview(data)[_HEADER:])
            if frame[0] in self._relay:
                for other in range(len(self._links)):
                    if other != number:
                        self._queue(other, data)
            self._on_frame(number, frame)
        except Exception:  # one bad frame must not end the link
            log.exception("a frame from another process could not be handled")

    def _lost(self, number: int) -> None:
        self._open -= 1
        if not self._closing:  # this end's own close is no news
            self._on_lost(number)

    def close(self) -> None:
        """Close every link once the frames sent so far are written (the peers see them end)."""
        self._closing = True
        self.flush()
        for link in self._links:
            if link.transport is not None:
                link.transport.close()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait, after :meth:`close`, until every frame is written and each link is shut."""
        for link in self._links:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), timeout)
