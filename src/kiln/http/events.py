"""Server-Sent Events: a subscription streamed as ``text/event-stream``.

Each event is ``event: <type>``, ``id: <version>`` and ``data: <JSON>``, where the
JSON is the same object a WebSocket client gets: ``{type, id, version, value}``
(and ``patch`` for a patch). The end of a subscription's history is sent as a bare
``id:`` line, which moves the browser's ``lastEventId`` to the point the live
events resume from without firing an event, so a reconnect (``Last-Event-ID``)
replays from the audit log exactly what was missed. The current records before it
carry no ``id:``: they come in key order, not version order, so a stream cut among them
must start them over rather than resume after the last one sent (a replay's writes, in
version order, carry theirs). An idle stream gets a comment line every
``realtime.heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from granian.rsgi import ProtocolClosed

from kiln.errors import BadRequest
from kiln.http.formats import JSON
from kiln.realtime import Event
from kiln.resource import SubscribeOptions

EVENT_STREAM = "text/event-stream"

_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),  # proxies (nginx) must not hold events back
]
_HEARTBEAT = b": heartbeat\n\n"
MAX_PREVIOUS_COUNT = 10_000
"""The most events ``previousCount`` may ask for (they are gathered in memory)."""
_SUBSCRIBE_PARAMETERS = ("startTime", "previousCount", "omitCurrent")


def wants_events(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for Server-Sent Events."""
    return accept is not None and EVENT_STREAM in accept


def subscribe_options(query_string: str, last_event_id: str | None) -> tuple[SubscribeOptions, str]:
    """The subscription options of a subscribing request, and the rest of its query string.

    ``startTime=V`` replays the events after version ``V`` (as ``Last-Event-ID: V``
    does, which wins), ``previousCount=N`` the last ``N`` events, and
    ``omitCurrent`` (or ``omitCurrent=true``) leaves out the current records.

    Raises:
        BadRequest: a value that is not a whole number (naming the parameter).
    """
    rest: list[str] = []
    found: dict[str, str] = {}
    for part in query_string.split("&") if query_string else ():
        name, _, value = part.partition("=")
        if name in _SUBSCRIBE_PARAMETERS:
            found[name] = value
        elif part:
            rest.append(part)
    since = _whole_number("startTime", found.get("startTime"))
    if last_event_id:
        since = _whole_number("Last-Event-ID", last_event_id.strip())
    previous_count = _whole_number("previousCount", found.get("previousCount"))
    if previous_count is not None and previous_count > MAX_PREVIOUS_COUNT:
        raise BadRequest(
            f"previousCount may be at most {MAX_PREVIOUS_COUNT}, not {previous_count}",
            hint="to replay more, use startTime (a version) instead",
        )
    omit = found.get("omitCurrent")
    current = omit is None or omit.lower() in ("false", "0")
    return SubscribeOptions(since, previous_count, current), "&".join(rest)


def _whole_number(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise BadRequest(
            f"{name} must be a whole number (a version, as in an event's id), not {text!r}",
            hint="send the id of the last event you received, or leave it out",
        )
    return int(text)


def as_event(item: Any) -> Event:
    """An item a subscription yielded, as an :class:`Event` (a plain value is a message)."""
    return item if isinstance(item, Event) else Event("message", None, 0, item)


_ENCODED: OrderedDict[int, tuple[Event, bytes]] = OrderedDict()
_ENCODED_KEPT = 256


def encoded(event: Event) -> bytes:
    """``event.as_message()`` as JSON, encoded once however many subscribers it goes to.

    The bus hands the same event object to every subscriber of a write, so the last
    few encodings are kept by object identity (the entry keeps the event alive, so
    its id cannot be reused while cached).
    """
    key = id(event)
    cached = _ENCODED.get(key)
    if cached is not None and cached[0] is event:
        return cached[1]
    data = JSON.encode(event.as_message(), None)
    _ENCODED[key] = (event, data)
    if len(_ENCODED) > _ENCODED_KEPT:
        _ENCODED.popitem(last=False)
    return data


def frame(event: Event, resumable: bool = True) -> bytes:
    """The ``text/event-stream`` lines of one event; ``resumable``: whether a write's
    version may be its ``id:`` (not before the end of the history: see the module)."""
    if event.type == "sync":
        return b"id: %d\n\n" % event.version
    data = encoded(event)
    # A message is sent the moment it is published, ahead of writes versioned before it
    # that are still being committed: an id on it could move a client's Last-Event-ID past
    # such a write, which a resume would then miss. So only writes carry an id.
    if resumable and event.version and event.type != "message":
        return b"event: %s\nid: %d\ndata: %s\n\n" % (event.type.encode(), event.version, data)
    return b"event: %s\ndata: %s\n\n" % (event.type.encode(), data)


async def stream_events(
    protocol: Any, events: AsyncIterator[Any], heartbeat: float, *, resumable: bool
) -> None:
    """Send ``events`` until the subscription ends or the client goes away; ``resumable``:
    whether the history's writes may carry ids (a replay, in version order), else only
    what follows it."""
    transport = protocol.response_stream(200, list(_HEADERS))
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def client_left(_: object) -> None:
        nonlocal gone
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(protocol.client_disconnect())
    watcher.add_done_callback(client_left)
    last_sent = asyncio.get_running_loop().time()

    async def beat() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(heartbeat)
            if loop.time() - last_sent >= heartbeat * 0.9:
                await transport.send_bytes(_HEARTBEAT)

    beating = asyncio.ensure_future(beat())
    try:
        await transport.send_bytes(b": kiln event stream\n\n")  # headers out now
        async for item in events:
            event = as_event(item)
            await transport.send_bytes(frame(event, resumable))
            resumable = resumable or event.type == "sync"
            last_sent = asyncio.get_running_loop().time()
            if event.type == "error":
                break
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
    except ProtocolClosed:
        pass
    finally:
        watcher.remove_done_callback(client_left)
        watcher.cancel()
        beating.cancel()
        close = getattr(events, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
