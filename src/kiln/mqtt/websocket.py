"""MQTT over WebSocket (RFC 6455, server side): the handshake that chooses the ``mqtt``
subprotocol, then binary frames carrying the MQTT byte stream.

MQTT over WebSocket has its own port (``mqtt.webSocketPort``) rather than the HTTP one:
granian's RSGI interface, which serves HTTP, cannot echo a subprotocol in its handshake,
and browsers' MQTT clients refuse a connection without ``Sec-WebSocket-Protocol: mqtt``.
Serving HTTP through ASGI instead, which can, would cost every request (see the README).

The frames' contents are a byte stream (spec 6.0: an MQTT packet may span frames and a
frame may hold several packets), so :meth:`WebSocketStream.read` returns each data frame's
payload as it comes and the broker's packet reader reassembles packets. Control frames are
answered here: ping with pong, close with close.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable

SUBPROTOCOL = "mqtt"
"""The subprotocol MQTT over WebSocket negotiates (MQTT 5 spec 6.0)."""

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeRefused(Exception):
    """A request that is not an MQTT WebSocket handshake; ``status`` and ``detail`` answer it."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``Sec-WebSocket-Key: key`` (RFC 6455's
    example):

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def read_head(head: bytes) -> dict[str, str]:
    """The headers of a handshake request (names lower-cased), once it is checked.

    Raises:
        HandshakeRefused: not a ``GET`` WebSocket upgrade of version 13 offering ``mqtt``.
    """
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    if method != "GET" or not rest.endswith(" HTTP/1.1"):
        raise HandshakeRefused(400, "this port serves MQTT over WebSocket: send a GET upgrade")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in _tokens(
        headers.get("connection", "")
    ):
        raise HandshakeRefused(426, "this port serves MQTT over WebSocket: upgrade to websocket")
    if headers.get("sec-websocket-version") != "13" or not headers.get("sec-websocket-key"):
        raise HandshakeRefused(400, "send Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key")
    if SUBPROTOCOL not in _tokens(headers.get("sec-websocket-protocol", "")):
        raise HandshakeRefused(
            400,
            "offer the WebSocket subprotocol mqtt (Sec-WebSocket-Protocol: mqtt); MQTT "
            "clients do when told to use WebSocket",
        )
    return headers


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",")]


def switching_protocols(headers: dict[str, str]) -> bytes:
    """The ``101`` answer to a checked handshake, choosing the ``mqtt`` subprotocol."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    ).encode()


def refusal(error: HandshakeRefused) -> bytes:
    """The plain-text HTTP answer refusing a handshake."""
    body = (error.detail + "\n").encode()
    reason = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required"}[error.status]
    head = (
        f"HTTP/1.1 {error.status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if error.status == 426:
        head += "Upgrade: websocket\r\n"
    return head.encode() + b"\r\n" + body


def frame(payload: bytes, opcode: int = _BINARY) -> bytes:
    """One unmasked, final server frame holding ``payload``.

    >>> frame(b"ab")
    b'\\x82\\x02ab'
    """
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


def unmask(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR the four-byte ``mask`` repeated (the client's masking, RFC 6455 5.3).

    >>> unmask(unmask(b"hello", b"abcd"), b"abcd")
    b'hello'
    """
    size = len(data)
    if not size:
        return data
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


class FrameError(Exception):
    """A frame RFC 6455 or MQTT over WebSocket forbids; ``code`` is the close code to send."""

    def __init__(self, code: int, detail: str):
        super().__init__(detail)
        self.code = code


class WebSocketStream:
    """The MQTT byte stream inside one accepted WebSocket connection.

    Args:
        reader: the connection's reader, positioned after the handshake.
        write: sends bytes on the connection.
        max_frame: the largest frame payload accepted (``mqtt.maxPacketSize``).
    """

    def __init__(
        self, reader: asyncio.StreamReader, write: Callable[[bytes], None], max_frame: int
    ):
        self._reader = reader
        self._write = write
        self._max_frame = max_frame
        self.closed = False
        """Whether a close frame was sent."""

    async def read(self) -> bytes:
        """The payload of the next data frame; ``b""`` once the client closes.

        Raises:
            FrameError: a text or unmasked frame, a reserved opcode or bit, a frame too large.
            asyncio.IncompleteReadError: the connection ended inside a frame.
        """
        while True:
            first, second = await self._reader.readexactly(2)
            opcode = first & 0x0F
            if first & 0x70:
                raise FrameError(1002, "a frame sets reserved bits (no extension was agreed)")
            if not second & 0x80:
                raise FrameError(1002, "a client frame is not masked")
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(await self._reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self._reader.readexactly(8), "big")
            if size > self._max_frame:
                raise FrameError(1009, f"a frame of {size} bytes exceeds mqtt.maxPacketSize")
            mask = await self._reader.readexactly(4)
            payload = unmask(await self._reader.readexactly(size), mask) if size else b""
            if opcode in (_BINARY, _CONTINUATION):
                if payload:
                    return payload
            elif opcode == _CLOSE:
                self.close()
                return b""
            elif opcode == _PING:
                self._write(frame(payload, _PONG))
            elif opcode == _TEXT:
                raise FrameError(1003, "MQTT travels in binary frames; a text frame arrived")
            elif opcode != _PONG:
                raise FrameError(1002, f"a frame has the reserved opcode {opcode}")

    def send(self, data: bytes) -> None:
        """Send ``data`` (MQTT packets) in one binary frame."""
        if not self.closed:
            self._write(frame(data))

    def close(self, code: int = 1000) -> None:
        """Send the close frame (once)."""
        if not self.closed:
            self.closed = True
            self._write(frame(code.to_bytes(2, "big"), _CLOSE))
