"""A Server-Sent Events reader over streamed httpx, for the real-time tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SseEvent:
    """One dispatched event: its ``event:`` type, ``id:`` and JSON ``data:``."""

    type: str | None
    id: str | None
    data: Any


class SseStream:
    """A ``text/event-stream`` response read block by block, as a browser's EventSource does.

    A block with data is an event; a block with only ``id:`` moves ``last_event_id``
    (the server sends one when a subscription's history ends); comment lines are counted.
    """

    def __init__(self, response: httpx.Response, patience: float = 10.0):
        self.response = response
        self._lines = response.iter_lines()
        self.comments = 0
        self.last_event_id: str | None = None
        self.patience = patience

    def _block(self) -> tuple[str | None, str | None, list[str]]:
        kind: str | None = None
        event_id: str | None = None
        data: list[str] = []
        deadline = time.monotonic() + self.patience  # heartbeats alone never end a wait
        for line in self._lines:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event within {self.patience}s")
            if line == "":
                if data or event_id is not None:
                    return kind, event_id, data
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
        raise EOFError("the event stream ended")

    def next(self) -> SseEvent:
        """The next event (skipping history-end markers)."""
        while True:
            kind, event_id, data = self._block()
            if event_id is not None:
                self.last_event_id = event_id
            if data:
                return SseEvent(kind, event_id, json.loads("\n".join(data)))

    def take(self, count: int) -> list[SseEvent]:
        """The next ``count`` events."""
        return [self.next() for _ in range(count)]

    def history(self) -> list[SseEvent]:
        """The events before the end-of-history marker (the current records, or a replay)."""
        found = []
        while True:
            kind, event_id, data = self._block()
            if event_id is not None:
                self.last_event_id = event_id
            if not data:
                return found
            found.append(SseEvent(kind, event_id, json.loads("\n".join(data))))


@contextmanager
def sse(
    client: httpx.Client, path: str, headers: dict[str, str] | None = None
) -> Iterator[SseStream]:
    """Subscribe to ``path`` with ``Accept: text/event-stream``; the response must be 200."""
    with client.stream(
        "GET", path, headers={"accept": "text/event-stream", **(headers or {})}
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseStream(response)
