"""One subscriber's stream: history first, then live events through a bounded queue."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator

from kiln.realtime.events import Event, Topic
from kiln.types import Version

_ENDED = Event("sync", None, -1)
"""Marks the end of a history (an object no history yields)."""

PAUSE = None
"""What a history yields between the chunks it reads: the subscription lets the event loop
run other work before it reads on, so a long replay never stalls the server."""


class Subscription:
    """An async iterator of :class:`Event`: its history (current records or a replay), then
    every live event of its topic newer than ``cursor``.

    The bus calls :meth:`deliver` on the event loop's thread. A subscriber that lets
    more than ``max_queue`` live events wait gets a last ``error`` event and is closed,
    so it never holds up writers or the other subscribers.

    Args:
        topic: what it listens to.
        max_queue: the most live events that may wait.
        history: events to yield before the live ones (read lazily).
        cursor: live events at or below this version are already covered by ``history``.
        on_close: called once when the subscription closes (the bus forgets it).
    """

    def __init__(
        self,
        topic: Topic,
        max_queue: int,
        history: Iterator[Event | None] | None = None,
        cursor: Version = 0,
        on_close: Callable[[Subscription], None] | None = None,
    ):
        self.topic = topic
        self.cursor = cursor
        self._max_queue = max_queue
        self._history = history
        self._queue: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        """Whether it takes no more events (some may still wait to be read)."""
        return self._closed

    def deliver(self, event: Event) -> None:
        """Queue a live event (ignored when closed, or when ``history`` covered it already)."""
        if self._closed or (event.type != "message" and event.version <= self.cursor):
            return
        if len(self._queue) >= self._max_queue:
            self.close(
                f"this subscriber fell more than {self._max_queue} events behind "
                "(realtime.subscriberQueue) and was closed; reconnect, resuming from the "
                "last event id you received"
            )
            return
        self._queue.append(event)
        self._wake()

    def close(self, error: str | None = None) -> None:
        """Take no more events; with ``error``, queue a last ``error`` event saying why."""
        if self._closed:
            return
        self._closed = True
        if error is not None:
            self._queue.append(Event("error", self.topic.id, 0, error))
        self._wake()
        if self._on_close is not None:
            self._on_close(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._history is not None:
                event = next(self._history, _ENDED)
                if event is PAUSE:
                    await asyncio.sleep(0)
                    continue
                if event is not _ENDED:
                    return event
                self._history = None
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        """Close it (the async-generator protocol, so ``contextlib.aclosing`` works)."""
        self.close()
