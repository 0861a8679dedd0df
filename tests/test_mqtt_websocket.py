"""MQTT over WebSocket framing (``kiln.mqtt.websocket``): the handshake and the frames."""

from __future__ import annotations

import asyncio
import os

import pytest

from kiln.mqtt.websocket import (
    FrameError,
    HandshakeRefused,
    WebSocketStream,
    accept_key,
    frame,
    read_head,
    refusal,
    switching_protocols,
    unmask,
)

HANDSHAKE = (
    b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, "
    b"Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n"
)


def test_the_handshake_echoes_the_mqtt_subprotocol() -> None:
    headers = read_head(HANDSHAKE)
    answer = switching_protocols(headers)
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Protocol: mqtt\r\n" in answer
    assert f"Sec-WebSocket-Accept: {accept_key('dGhlIHNhbXBsZSBub25jZQ==')}".encode() in answer


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (HANDSHAKE.replace(b"GET", b"POST"), 400),
        (HANDSHAKE.replace(b"Upgrade: websocket\r\n", b""), 426),
        (HANDSHAKE.replace(b"Version: 13", b"Version: 8"), 400),
        (HANDSHAKE.replace(b"mqttv3.1, mqtt", b"chat"), 400),
    ],
)
def test_other_requests_are_refused_with_a_reason(head: bytes, status: int) -> None:
    with pytest.raises(HandshakeRefused) as refused:
        read_head(head)
    assert refused.value.status == status
    answer = refusal(refused.value)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert answer.endswith(refused.value.detail.encode() + b"\n")


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked client frame, as a browser sends it."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + mask + unmask(payload, mask)


def read_all(data: bytes, max_frame: int = 1 << 20) -> tuple[list[bytes], list[bytes]]:
    """The payloads a stream reads from ``data``, and the frames it wrote back."""
    written: list[bytes] = []

    async def run() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        stream = WebSocketStream(reader, written.append, max_frame)
        payloads = []
        while chunk := await stream.read():
            payloads.append(chunk)
        return payloads

    return asyncio.run(run()), written


def test_frames_carry_the_byte_stream_and_control_frames_are_answered() -> None:
    big = os.urandom(70_000)
    data = client_frame(b"\x10\x00") + client_frame(b"ping", 9) + client_frame(big, 0)
    data += client_frame(b"\x03\xe8", 8)  # close
    payloads, written = read_all(data)
    assert payloads == [b"\x10\x00", big]
    assert written == [frame(b"ping", 0xA), frame(b"\x03\xe8", 8)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(b"text", 1), 1003),
        (bytes((0x82, 0x01)) + b"x", 1002),  # not masked
        (client_frame(b"x", 3), 1002),  # reserved opcode
        (bytes((0xC2,)) + client_frame(b"x")[1:], 1002),  # reserved bit
        (client_frame(b"x" * 2000), 1009),
    ],
)
def test_forbidden_frames_are_refused(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as refused:
        read_all(data, max_frame=1024)
    assert refused.value.code == code


def test_server_frames_use_the_shortest_length() -> None:
    assert frame(b"a" * 125)[:2] == b"\x82\x7d"
    assert frame(b"a" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert frame(b"a" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")
