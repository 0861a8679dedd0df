"""Links between the worker processes of one server, for the change bus (``http.workers``).

The main process (worker 1) holds a stream socket to each other worker; a
worker's frames go to worker 1, which handles them and relays them to every
other worker. A frame is a MessagePack array behind its 4-byte length, so it has
no size limit and arrives whole and in order.

Two kinds of frames travel (:class:`kiln.realtime.bus.ChangeBus` sends and reads
them): ``["durable", database, version]``, sent after a worker's writes up to
``version`` are on disk, and ``["message", channel, key, version, message,
database]``, a message published on a worker, for the subscribers of the others.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import msgspec

log = logging.getLogger("kiln.workers")

_HEADER = 4
"""Bytes of the big-endian length in front of each frame."""

Frame = list[Any]
"""A decoded frame: its kind first, then its fields."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class Peers:
    """This process's links to the other workers.

    Args:
        sockets: connected stream sockets, one to each peer this process talks to
            directly (worker 1: one per other worker; any other: one, to worker 1).
        hub: whether this process relays each frame it reads to its other links
            (worker 1 does).
    """

    def __init__(self, sockets: list[socket.socket], *, hub: bool):
        self._sockets = sockets
        self._hub = hub
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(
        self, on_frame: Callable[[Frame], None], on_lost: Callable[[int], None]
    ) -> None:
        """Read every link on the running loop: each frame goes to ``on_frame``.

        ``on_lost(i)`` is called when link ``i`` (in the order of ``sockets``) ends: the
        process at its other end stopped.
        """
        for number, sock in enumerate(self._sockets):
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            self._writers.append(writer)
            self._readers.append(
                asyncio.get_running_loop().create_task(
                    self._read(number, reader, on_frame, on_lost)
                )
            )

    def send(self, frame: Frame) -> bool:
        """Send ``frame`` to every other worker; False if it cannot be encoded (not sent)."""
        try:
            payload = _encoder.encode(frame)
        except (TypeError, ValueError, OverflowError) as error:
            log.warning("a %s frame could not go to the other workers: %s", frame[0], error)
            return False
        data = len(payload).to_bytes(_HEADER, "big") + payload
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(data)
        return True

    async def _read(
        self,
        number: int,
        reader: asyncio.StreamReader,
        on_frame: Callable[[Frame], None],
        on_lost: Callable[[int], None],
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(_HEADER)
                payload = await reader.readexactly(int.from_bytes(header, "big"))
                if self._hub:
                    for other, writer in enumerate(self._writers):
                        if other != number and not writer.is_closing():
                            writer.write(header + payload)
                try:
                    on_frame(_decoder.decode(payload))
                except Exception:  # one bad frame must not end the link
                    log.exception("a frame from another worker could not be handled")
        except (asyncio.IncompleteReadError, ConnectionError):
            on_lost(number)

    def close(self) -> None:
        """Close every link (the peers see them end)."""
        for task in self._readers:
            task.cancel()
        for writer in self._writers:
            writer.close()
