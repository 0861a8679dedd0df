"""One MQTT subscription of a connection: the seam subscriptions its topic filter opens, and
the tasks turning their events into messages.

A record delivers its current state as a retained message, then every change (a patch as the
whole record after it, a delete as an empty payload); messages follow as they are published.
A subscription's stream ending (the app reloaded or stopped) ends the connection, as it ends
a WebSocket: the client connects again, and a persistent session resumes where it was. A
resumed subscription whose replay reaches past what ``logging.auditRetention`` kept starts
over from the current records, as a new subscription does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from kiln.errors import HTTPError, NotFound
from kiln.keypath import key_to_topic
from kiln.mqtt.broker import Route, Wire, filter_targets, reason_for
from kiln.mqtt.properties import ReasonCode
from kiln.mqtt.sessions import SessionState, SubscriptionState
from kiln.mqtt.topics import topic_matches
from kiln.realtime import Event
from kiln.resource import SubscribeOptions, invoke

if TYPE_CHECKING:
    from kiln.mqtt.connection import Connection

log = logging.getLogger("kiln.mqtt")


async def open_subscription(
    connection: Connection,
    state: SessionState,
    subscription: SubscriptionState,
    options: SubscribeOptions,
    *,
    fresh: bool,
) -> ActiveSubscription:
    """Subscribe on the seam to everything ``subscription``'s topic filter names.

    Args:
        connection: whose subscription it is.
        state: the connection's session.
        subscription: the filter and its options.
        options: where the seam subscriptions start (current records, or a replay).
        fresh: a new subscription, whose first records are sent as retained messages (not a
            resumed one, whose replay is what it missed).

    Raises:
        HTTPError: no route, a refused subscription; a wildcard first level (``#``,
            ``+/...``) skips the routes it may not read, and fails only if that is all.
    """
    topic_filter = subscription.options.topic_filter
    routes = filter_targets(connection.broker.app().routes, topic_filter, connection.context)
    wide = topic_filter.partition("/")[0] in ("#", "+")
    streams: list[tuple[Route, Any]] = []
    refused: HTTPError | None = None
    try:
        for route in routes:
            try:
                stream = await _subscribe(route, options)
            except HTTPError as error:
                if not wide:
                    raise
                refused = refused or error
                continue
            streams.append((route, stream))
    except BaseException:
        for _, stream in streams:
            await _close_stream(stream)
        raise
    if not streams:
        raise refused or NotFound(f"the topic filter {topic_filter!r} matches no route")
    return ActiveSubscription(connection, state, subscription, streams, fresh)


class ActiveSubscription:
    """The seam subscriptions of one topic filter, and the tasks sending their events."""

    def __init__(
        self,
        connection: Connection,
        state: SessionState,
        subscription: SubscriptionState,
        streams: list[tuple[Route, Any]],
        fresh: bool,
    ):
        self.connection = connection
        self.state = state
        self.subscription = subscription
        self.streams = streams
        self.fresh = fresh
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start sending (after the SUBACK, so retained messages follow it)."""
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._pump(route, stream)) for route, stream in self.streams]

    def close(self) -> None:
        """Stop sending and end the seam subscriptions."""
        for task in self.tasks:
            task.cancel()  # each pump closes its stream as it ends
        if not self.tasks:  # never started: the streams end here
            loop = asyncio.get_running_loop()
            self.tasks = [loop.create_task(_close_stream(stream)) for _, stream in self.streams]

    def _advance(self, version: int) -> None:
        """Move the subscription's cursor to ``version`` (never back); a persistent session
        is saved with it."""
        subscription = self.subscription
        if version > subscription.cursor:
            subscription.cursor = version
            self.connection.sessions.mark_dirty(self.state)

    async def _pump(self, route: Route, stream: Any) -> None:
        """Send the events of one seam subscription as messages until it ends.

        A resumed subscription whose replay has a gap (events pruned by
        ``logging.auditRetention``) starts over as a new one: the current records as
        retained messages, then every change. The client misses no record's current state.
        """
        connection = self.connection
        history = self.fresh
        try:
            while await self._forward(route, stream, history):
                await _close_stream(stream)
                stream = await _subscribe(route, SubscribeOptions(current=True))
                history = True
        except asyncio.CancelledError:
            raise
        except Exception as error:
            _, reason = reason_for(error)
            connection.abort(ReasonCode.UNSPECIFIED_ERROR, f"a subscription failed: {reason}")
        finally:
            await _close_stream(stream)

    async def _forward(self, route: Route, stream: Any, history: bool) -> bool:
        """Send the events of ``stream`` (``history``: its first ones are current records)
        until it ends, which ends the connection; True at a gap in its replay instead."""
        connection, state, subscription = self.connection, self.state, self.subscription
        options = subscription.options
        name, matcher = route.name, route.matcher
        async for item in stream:
            event = item if isinstance(item, Event) else Event("message", None, 0, item)
            kind = event.type
            # The cursor (where a resumed session replays from) moves past an event only
            # once it is dealt with. The current records come in key order, not version
            # order: it moves at their end (sync), so a session that leaves midway starts
            # them over. It never moves on a message: one goes out at once, ahead of
            # writes versioned before it that are still committing.
            moves = not history and kind not in ("message", "sync")
            if kind == "sync":
                self._advance(event.version)
                history = False
                continue
            if kind == "error":
                connection.abort(ReasonCode.QUOTA_EXCEEDED, str(event.value))
                return False
            if kind == "gap":
                log.info(
                    "%r missed events of %s: %s; sending its current records again",
                    connection,
                    name,
                    event.value,
                )
                return True
            topic = _topic(name, event)
            wire = event.wire
            skipped = (
                topic is None
                or (matcher is not None and not topic_matches(matcher, topic))
                or (options.no_local and isinstance(wire, Wire) and wire.sender == state.client_id)
            )
            if skipped:
                if moves:
                    self._advance(event.version)
                continue
            live_retain = options.retain_as_published and kind != "message"
            retain = kind == "put" if history else live_retain
            assert topic is not None
            if await connection.deliver(subscription, event, topic, retain) and moves:
                self._advance(event.version)
        connection.abort(
            ReasonCode.ADMINISTRATIVE_ACTION,
            f"the subscription to {options.topic_filter} ended (the app reloaded or "
            "stopped); connect again",
            will=False,
        )
        return False


def _topic(name: str, event: Event) -> str | None:
    """The topic of ``event`` in the route ``name``; None when no topic can name its key."""
    if event.id is None:
        return name
    levels = key_to_topic(event.id)
    return None if levels is None else f"{name}/{levels}"


async def _subscribe(route: Route, options: SubscribeOptions) -> Any:
    """The seam subscription of ``route``, starting where ``options`` say."""
    return await invoke(route.resource, "subscribe", route.target._replace(subscription=options))


async def _close_stream(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
