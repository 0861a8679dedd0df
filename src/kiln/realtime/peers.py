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
from typing import Any

import msgspec

log = logging.getLogger("kiln.peers")

_HEADER = 4
"""Bytes of the big-endian length in front of each frame."""

Frame = list[Any]
"""A decoded frame: its kind first, then its fields."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


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
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []
        self._outgoing: list[list[bytes]] = []
        """Per link, the frames sent in this turn of the loop: written in one call at its end."""
        self._flushing = False

    async def start(
        self, on_frame: Callable[[int, Frame], None], on_lost: Callable[[int], None]
    ) -> None:
        """Read every link on the running loop: each frame goes to ``on_frame`` with the
        number of its link (in the order of ``sockets``).

        ``on_lost(i)`` is called when link ``i`` ends: the process at its other end stopped.
        """
        for number, sock in enumerate(self._sockets):
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            self._writers.append(writer)
            self._outgoing.append([])
            self._readers.append(
                asyncio.get_running_loop().create_task(
                    self._read(number, reader, on_frame, on_lost)
                )
            )

    def send(self, frame: Frame, link: int | None = None) -> bool:
        """Send ``frame`` on ``link``, or on every link; False if it cannot be encoded (then
        nothing is sent). Call it on the event loop."""
        try:
            payload = _encoder.encode(frame)
        except (TypeError, ValueError, OverflowError) as error:
            log.warning("a %s frame could not go to the other processes: %s", frame[0], error)
            return False
        data = len(payload).to_bytes(_HEADER, "big") + payload
        for number in range(len(self._writers)) if link is None else (link,):
            self._queue(number, data)
        return True

    def _queue(self, link: int, data: bytes) -> None:
        """Write ``data`` on ``link`` at the end of this turn of the loop, with the rest."""
        self._outgoing[link].append(data)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        for writer, frames in zip(self._writers, self._outgoing, strict=True):
            if frames:
                if not writer.is_closing():
                    writer.write(b"".join(frames))
                frames.clear()

    @property
    def links(self) -> int:
        """How many links are still open."""
        return sum(not writer.is_closing() for writer in self._writers)

    async def _read(
        self,
        number: int,
        reader: asyncio.StreamReader,
        on_frame: Callable[[int, Frame], None],
        on_lost: Callable[[int], None],
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(_HEADER)
                payload = await reader.readexactly(int.from_bytes(header, "big"))
                try:
                    frame = _decoder.decode(payload)
                    if frame[0] in self._relay:
                        for other in range(len(self._writers)):
                            if other != number:
                                self._queue(other, header + payload)
                    on_frame(number, frame)
                except Exception:  # one bad frame must not end the link
                    log.exception("a frame from another process could not be handled")
        except (asyncio.IncompleteReadError, OSError):  # the other end is gone
            self._writers[number].close()
            on_lost(number)

    def close(self) -> None:
        """Close every link once the frames sent so far are written (the peers see them end)."""
        self._flush()
        for task in self._readers:
            task.cancel()
        for writer in self._writers:
            writer.close()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait, after :meth:`close`, until every frame is written and each link is shut."""
        for writer in self._writers:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout)
