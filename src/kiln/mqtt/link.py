"""The byte stream under an MQTT connection: TCP, or the binary frames of a WebSocket.

What a connection sends in one turn of the event loop goes out in one write (one system
call, one WebSocket frame), so a subscription that sends many messages at once pays once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

from kiln.mqtt.websocket import FrameError, WebSocketStream

log = logging.getLogger("kiln.mqtt")

READ_SIZE = 65536
"""Bytes read from a TCP connection at a time."""


class Link(ABC):
    """The byte stream under a connection; :meth:`send` queues, the loop's turn writes."""

    peer: str
    """The client's address, ``host:port``."""
    host: str | None = None
    """The ``Host`` the client's HTTP handshake named (``""``: none); None over TCP, which
    has no handshake (what loopback trust checks: :mod:`kiln.auth.authenticate`)."""

    def __init__(self, peer: str):
        self.peer = peer
        self._pending: list[bytes] | None = None
        self._pending_size = 0

    @abstractmethod
    async def read(self) -> bytes:
        """The next bytes from the client; ``b""`` once the connection has ended."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Write ``data`` to the client now."""

    @abstractmethod
    def transport_buffered(self) -> int:
        """Bytes written and not yet taken by the network."""

    @abstractmethod
    async def drain(self) -> None:
        """Wait until what was written is mostly taken by the network."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection once what was written is sent (:meth:`flush` first)."""

    def send(self, data: bytes) -> None:
        """Queue ``data``, written at the end of this turn of the event loop."""
        if self._pending is None:
            self._pending = [data]
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._pending.append(data)
        self._pending_size += len(data)

    def flush(self) -> None:
        """Write what :meth:`send` queued."""
        pending = self._pending
        if pending:
            self._pending, self._pending_size = None, 0
            self.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def buffered(self) -> int:
        """Bytes queued or written and not yet taken by the network."""
        return self._pending_size + self.transport_buffered()


class TcpLink(Link):
    """MQTT over a TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(_peer(writer))
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    def transport_buffered(self) -> int:
        return self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        with contextlib.suppress(OSError):
            await self._writer.drain()

    def close(self) -> None:
        self.flush()
        self._writer.close()


class WebSocketLink(Link):
    """MQTT in the binary frames of an accepted WebSocket connection."""

    def __init__(self, writer: asyncio.StreamWriter, stream: WebSocketStream, host: str):
        super().__init__(_peer(writer))
        self.host = host
        self._writer = writer
        self._stream = stream

    async def read(self) -> bytes:
        try:
            return await self._stream.read()
        except FrameError as error:
            log.warning("closed the MQTT WebSocket of %s: %s", self.peer, error)
            self._stream.close(error.code)
        except (OSError, asyncio.IncompleteReadError):
            pass
        return b""

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._stream.send(data)

    def transport_buffered(self) -> int:
        return self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        with contextlib.suppress(OSError):
            await self._writer.drain()

    def close(self) -> None:
        self.flush()
        if not self._writer.is_closing():
            self._stream.close()
        self._writer.close()


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        return f"{host}:{address[1]}"
    return str(address)
