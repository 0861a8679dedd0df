"""WebSocket: a two-way connection to a record or collection URL.

Connecting calls the resource's ``connect(target, incoming)``: by default that
subscribes to the URL and publishes what the client sends to it. Every event
goes out as one JSON text frame ``{type, id, version, value}`` (plus ``patch``
for a patch), the end of a subscription's history too (``type`` ``sync``: its
version is where a reconnect resumes with ``?startTime=``); each frame the client
sends is read as JSON (a text frame that is not JSON is taken as a string) and
handed to ``incoming``.

A request that cannot be served is accepted and closed at once, after an
``error`` frame ``{type: "error", status, value}`` carrying the problem (a browser
cannot read the status of a refused handshake, so this is how it learns why).
The close code asked for is 3000 for 401 and 3003 for 403 (as Harper), 4000 +
status for other client errors and 1011 for a server error, but granian's RSGI
interface (2.8) sends its close frame without a code: clients see 1005, so the
``error`` frame is the one to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed, WebsocketMessageType

from kiln.errors import HTTPError, PayloadTooLarge
from kiln.http.events import as_event, encoded
from kiln.http.formats import JSON
from kiln.http.problems import as_http_error

log = logging.getLogger("kiln.websocket")

INCOMING_QUEUE = 100
"""Client messages that may wait for the resource to read them; more close the connection."""

_CLOSE_CODES = {401: 3000, 403: 3003}


def close_code(error: HTTPError) -> int:
    """The WebSocket close code that carries ``error``'s status."""
    if error.status >= 500:
        return 1011
    return _CLOSE_CODES.get(error.status, 4000 + error.status)


def error_frame(error: HTTPError) -> str:
    """The last frame sent before closing for ``error``."""
    message = {"type": "error", "id": None, "version": 0, "value": error.detail}
    message["status"] = error.status
    return JSON.encode(message, None).decode()


def decode_message(message: Any) -> Any:
    """What the client sent in one frame: its JSON value, or the text itself.

    Raises:
        ValueError: a binary frame that is not JSON.
    """
    data = message.data
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        if message.kind == WebsocketMessageType.string:
            return data
        raise ValueError("a binary frame must hold JSON") from None


async def serve(protocol: Any, open_stream: Any, max_message: int) -> None:
    """Accept the connection and run it until either side closes it.

    ``open_stream(incoming)`` is awaited once the connection is accepted; it returns
    the async iterator of events to send, or raises an :class:`HTTPError`. A frame the
    client sends that is larger than ``max_message`` bytes (``http.maxBodySize``) is
    answered with a 413 ``error`` frame and dropped; the connection stays open.
    """
    transport = await protocol.accept()
    queue: asyncio.Queue[Any] = asyncio.Queue(INCOMING_QUEUE)
    ended = object()
    sender = asyncio.current_task()
    assert sender is not None
    closed_by_client = False

    async def incoming() -> AsyncIterator[Any]:
        while (message := await queue.get()) is not ended:
            yield message

    async def read() -> None:
        nonlocal closed_by_client
        try:
            while True:
                message = await transport.receive()
                if message.kind == WebsocketMessageType.close:
                    break
                size = _size(message.data, max_message)
                if size > max_message:
                    await transport.send_str(error_frame(_too_large(size, max_message)))
                    continue
                try:
                    queue.put_nowait(decode_message(message))
                except ValueError as error:
                    await transport.send_str(error_frame(HTTPError(400, str(error))))
                except asyncio.QueueFull:
                    log.warning("closing a WebSocket: its resource did not read its messages")
                    break
        except ProtocolClosed:
            pass
        closed_by_client = True
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(ended)
        sender.cancel()

    try:
        events = await open_stream(incoming())
    except Exception as raised:
        await _refuse(protocol, transport, as_http_error(raised))
        return
    reader = asyncio.ensure_future(read())
    code = 1000
    try:
        async for item in events:
            await transport.send_str(encoded(as_event(item)).decode())  # text: browsers parse it
    except asyncio.CancelledError:
        if not closed_by_client:
            raise
        sender.uncancel()
    except ProtocolClosed:
        pass
    except Exception as raised:
        error = as_http_error(raised)
        code = close_code(error)
        with contextlib.suppress(ProtocolClosed):
            await transport.send_str(error_frame(error))
    finally:
        reader.cancel()
        close = getattr(events, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    with contextlib.suppress(asyncio.CancelledError):
        await reader  # granian ignores close() while a receive() is pending
    protocol.close(code)


def _size(data: str | bytes, limit: int) -> int:
    """The size in bytes of a frame's data (a text frame arrives as ``str``, encoded only
    when its length alone cannot show it within ``limit``: then its length is returned)."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:  # UTF-8 takes at most 4 bytes
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    """The refusal of a message of ``size`` bytes, over ``limit``."""
    return PayloadTooLarge(
        f"a message of {size} bytes is larger than http.maxBodySize ({limit} bytes); it was "
        "dropped: send less or raise the setting",
    )


async def _refuse(protocol: Any, transport: Any, error: HTTPError) -> None:
    """Send ``error`` as the last frame and close with its code."""
    with contextlib.suppress(ProtocolClosed):
        await transport.send_str(error_frame(error))
    protocol.close(close_code(error))
