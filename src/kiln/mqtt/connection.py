"""One MQTT client connection: CONNECT, then its packets in order until either side closes.

The connection reads packets and answers them one after the other, so a client's messages
take effect in the order it sent them. Its subscriptions
(:mod:`kiln.mqtt.subscriptions`) send their events through :meth:`Connection.deliver`,
where QoS 1 messages wait for the client's PUBACKs beyond its receive maximum.

A malformed packet closes only this connection (in MQTT 5 with a DISCONNECT naming the
reason), and the reason is logged. So does silence beyond 1.5 times the keep-alive.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from kiln.auth.roles import User
from kiln.errors import HTTPError
from kiln.mqtt.broker import NO_HEADERS, Broker, Wire, reason_for
from kiln.mqtt.codec import PacketReader, encode
from kiln.mqtt.link import Link
from kiln.mqtt.packets import (
    MAX_PACKET_SIZE,
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from kiln.mqtt.properties import NO_PROPERTIES, MalformedPacket, Properties, ReasonCode
from kiln.mqtt.sessions import SessionState, SubscriptionState
from kiln.mqtt.subscriptions import ActiveSubscription, open_subscription
from kiln.mqtt.topics import shared_subscription
from kiln.realtime import Event
from kiln.resource import Context, SubscribeOptions

if TYPE_CHECKING:
    from kiln.mqtt.sessions import Sessions

log = logging.getLogger("kiln.mqtt")

CREDENTIALS_RECHECK = 1.0
"""Seconds between checks that a connection's user still holds (removed, new password or role:
the connection ends)."""
CONNECT_TIMEOUT = 10.0
"""Seconds a new connection has to send its CONNECT."""

RECEIVE_MAXIMUM = 1024
"""The QoS 1 messages a client may send before their PUBACKs (MQTT 5 CONNACK)."""

TOPIC_ALIAS_MAXIMUM = 64
"""The topic aliases a client may set on this connection (MQTT 5 CONNACK)."""

SEND_WINDOW = 1000
"""The most QoS 1 messages sent to one client and not yet acknowledged (fewer if it asks)."""

YIELD_EVERY = 32
"""Packets handled in a row before the subscribers they fed get a turn: one read can hold
thousands, and a subscriber's queue holds ``realtime.subscriberQueue`` events."""

WRITE_HIGH_WATER = 1 << 20
"""Bytes waiting for a slow client beyond which QoS 0 messages are dropped (QoS 1 waits)."""


class Connection:
    """One client, from its CONNECT to the end of the network connection.

    Args:
        broker: translates MQTT to the seam.
        sessions: the sessions of every client.
        link: the network connection.
        max_packet_size: ``mqtt.maxPacketSize``.
    """

    def __init__(self, broker: Broker, sessions: Sessions, link: Link, max_packet_size: int):
        self.broker = broker
        self.sessions = sessions
        self.link = link
        self.max_packet_size = max_packet_size
        self.reader = PacketReader(max_packet_size=max_packet_size)
        self.level = MQTT_3_1_1
        self.client_id = ""
        self.state: SessionState | None = None
        self.context = Context(None, NO_HEADERS, {})
        self.connect: Connect | None = None
        """The CONNECT accepted: its will, and the credentials the will is published with."""
        self.publish_will = False
        """Whether ending now publishes the will (not after DISCONNECT, nor at shutdown)."""
        self.done = asyncio.Event()
        """Set once the connection has ended and its session is detached."""
        self._active: dict[str, ActiveSubscription] = {}
        self._aliases: dict[int, str] = {}
        self._qos2: set[int] = set()
        self._closing = False
        self._send_quota = SEND_WINDOW
        self._max_outgoing = MAX_PACKET_SIZE
        self._problem_information = True
        self._room = asyncio.Event()
        """Set when a PUBACK made room in the window of unacknowledged QoS 1 messages."""
        self._keep_alive: asyncio.TimerHandle | None = None
        self._credentials: asyncio.Task[None] | None = None
        self._last_seen = 0.0
        self._dropped = 0
        self._handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            Publish: self._on_publish,
            Puback: self._on_puback,
            Pubrel: self._on_pubrel,
            Subscribe: self._on_subscribe,
            Unsubscribe: self._on_unsubscribe,
            Disconnect: self._on_disconnect,
        }

    @property
    def v5(self) -> bool:
        """Whether the client speaks MQTT 5."""
        return self.level == MQTT_5

    def __repr__(self) -> str:
        return f"MQTT client {self.client_id!r} at {self.link.peer}"

    # ------------------------------------------------------------------ lifetime

    async def run(self) -> None:
        """Serve the connection until it ends; never raises."""
        try:
            connect = await asyncio.wait_for(self._read_connect(), CONNECT_TIMEOUT)
            if connect is not None and await self._accept(connect):
                await self._serve()
        except MalformedPacket as error:
            self._malformed(error)
        except TimeoutError:
            log.info("closed %s: no CONNECT within %gs", self.link.peer, CONNECT_TIMEOUT)
        except Exception:
            log.exception("closed %r: the broker failed", self)
        finally:
            await self._end()

    def abort(self, code: int, reason: str, *, will: bool = True) -> None:
        """End the connection from the server's side (MQTT 5: a DISCONNECT saying why).

        Args:
            code: the MQTT 5 reason code.
            reason: why, for the log and the client.
            will: whether the client's will is published (not when the server stops, nor
                when the user's credentials no longer hold).
        """
        if self._closing:
            return
        self._closing = True
        self.publish_will = self.publish_will and will
        log.info("closing %r: %s", self, reason)
        if self.v5 and self.state is not None:
            self._send(Disconnect(reason_code=code, properties=self._reason(reason)))
        self.link.close()

    async def take_over(self) -> None:
        """End this connection because the same client connected again; wait for the end."""
        self.abort(ReasonCode.SESSION_TAKEN_OVER, "the client connected again")
        await self.done.wait()

    async def _read_connect(self) -> Connect | None:
        while True:
            packet = self.reader.next_packet()
            if isinstance(packet, Connect):
                return packet
            data = await self.link.read()
            if not data:
                return None
            self.reader.feed(data)

    async def _accept(self, connect: Connect) -> bool:
        """Answer the CONNECT: authenticate, attach the session, CONNACK, resume."""
        self.level = connect.protocol_level
        properties = connect.properties
        if properties.authentication_method is not None:
            return self._refuse(
                ReasonCode.BAD_AUTHENTICATION_METHOD,
                "kiln does not do MQTT 5 enhanced authentication (AUTH); send a user name "
                "and password in CONNECT",
            )
        if not connect.client_id and not connect.clean_start and not self.v5:
            return self._refuse(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                "a persistent session (clean session 0) needs a client id",
            )
        try:
            user = await self.broker.authenticate(connect, self.link.peer, self.link.host)
        except Exception as error:
            code, reason = self.broker.connack_refusal(error, connect)
            log.warning("refused the MQTT connection of %s: %s", self.link.peer, reason)
            return self._refuse(code, reason)
        assigned = None
        if not connect.client_id:
            assigned = "kiln-" + secrets.token_hex(8)
        self.client_id = connect.client_id or assigned or ""
        exists, owner = await self.sessions.owner_of(self.client_id)
        name = None if user is None else user.name
        if exists and owner != name:
            log.warning(
                "refused the MQTT connection of %s: client id %r is another user's session",
                self.link.peer,
                self.client_id,
            )
            return self._refuse(
                ReasonCode.NOT_AUTHORIZED,
                f"the client id {self.client_id!r} belongs to another user's session; "
                "choose another",
            )
        self.context = Context(user, NO_HEADERS, {})
        self.state, present = await self.sessions.attach(self, connect, self.client_id)
        self.connect = connect
        self.publish_will = True
        if self.v5:
            self._send_quota = min(properties.receive_maximum or SEND_WINDOW, SEND_WINDOW)
            self._max_outgoing = properties.maximum_packet_size or MAX_PACKET_SIZE
            self._problem_information = properties.request_problem_information is not False
        self._last_seen = asyncio.get_running_loop().time()
        if connect.keep_alive:
            self._watch_keep_alive(connect.keep_alive * 1.5)
        if user is not None and user.name is not None:
            self._credentials = asyncio.get_running_loop().create_task(
                self._watch_credentials(connect, user)
            )
        self._send(Connack(session_present=present, properties=self._connack_properties(assigned)))
        log.debug("%r connected (session present: %s)", self, present)
        if present:
            await self._resume(self.state)
        return True

    def _connack_properties(self, assigned: str | None) -> Properties:
        if not self.v5:
            return NO_PROPERTIES
        return Properties(
            receive_maximum=RECEIVE_MAXIMUM,
            maximum_qos=1,
            maximum_packet_size=self.max_packet_size,
            topic_alias_maximum=TOPIC_ALIAS_MAXIMUM,
            shared_subscription_available=False,
            assigned_client_identifier=assigned,
        )

    def _refuse(self, code: int, reason: str) -> bool:
        self._send(Connack(reason_code=code, properties=self._reason(reason)))
        return False

    async def _serve(self) -> None:
        """Handle the packets read, reading more only once none is left: a client may send
        packets right after CONNECT, before its CONNACK (MQTT spec 3.1.4), in the same read."""
        loop = asyncio.get_running_loop()
        handlers = self._handlers
        handled = 0
        while not self._closing:
            packet = self.reader.next_packet()
            if packet is None:
                data = await self.link.read()
                if not data:
                    return
                self._last_seen = loop.time()
                self.reader.feed(data)
                continue
            handler = handlers.get(type(packet))
            if handler is None:
                self._answer(packet)
            else:
                await handler(packet)
            handled += 1
            if handled % YIELD_EVERY == 0:  # let subscribers send what this delivered
                await asyncio.sleep(0)

    def _answer(self, packet: Packet) -> None:
        """A packet needing only an answer (PINGREQ), or one a client may not send."""
        if isinstance(packet, Pingreq):
            self._send(Pingresp())
            return
        name = type(packet).__name__.upper()
        raise MalformedPacket(
            ReasonCode.PROTOCOL_ERROR,
            f"a client sent {name}, which kiln never asks for"
            if name in ("PUBREC", "PUBCOMP", "AUTH")
            else f"a client sent {name}, a packet only a server sends",
        )

    def _malformed(self, error: MalformedPacket) -> None:
        log.warning("closed the MQTT connection of %s: %s", self._who(), error)
        if self.state is not None:
            if self.v5:
                self._send(
                    Disconnect(reason_code=error.reason_code, properties=self._reason(str(error)))
                )
        elif error.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
            self._send(Connack(reason_code=error.reason_code))

    def _who(self) -> str:
        return repr(self) if self.client_id else self.link.peer

    async def _end(self) -> None:
        self._closing = True
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        if self._credentials is not None:
            self._credentials.cancel()
        for active in self._active.values():
            active.close()
        self._active.clear()
        self._wake()
        try:
            if self.state is not None:
                connect = self.connect if self.publish_will else None
                await self.sessions.detach(self, self.state, connect)
        except Exception:
            log.exception("ending the session of %r failed", self)
        finally:
            self.link.close()
            self.done.set()
        if self._dropped:
            log.warning("%r was too slow: %d QoS 0 messages dropped", self, self._dropped)

    async def _watch_credentials(self, connect: Connect, user: User) -> None:
        """End the connection once its user is removed or changes password or role.

        Checked every :data:`CREDENTIALS_RECHECK` seconds through the credential cache
        and the store's epoch, as HTTP streams are, so a revoked user's client neither
        hears nor writes anything more: not its will either.
        """
        while not self._closing:
            await asyncio.sleep(CREDENTIALS_RECHECK)
            try:
                current = await self.broker.authenticate(connect, self.link.peer, self.link.host)
            except HTTPError:
                current = None
            if current != user:
                self.abort(
                    ReasonCode.NOT_AUTHORIZED,
                    "the user was removed, or its password or role changed",
                    will=False,
                )
                return

    def _watch_keep_alive(self, limit: float) -> None:
        loop = asyncio.get_running_loop()

        def check() -> None:
            idle = loop.time() - self._last_seen
            if idle >= limit:
                self.abort(ReasonCode.KEEP_ALIVE_TIMEOUT, f"nothing received for {idle:.0f}s")
            else:
                self._keep_alive = loop.call_later(limit - idle, check)

        self._keep_alive = loop.call_later(limit, check)

    # ------------------------------------------------------------------ incoming

    async def _on_publish(self, packet: Publish) -> None:
        qos = packet.qos
        if qos == 2 and self.v5:
            raise MalformedPacket(
                ReasonCode.QOS_NOT_SUPPORTED, "a QoS 2 PUBLISH arrived; the maximum QoS is 1"
            )
        topic = self._topic_of(packet)
        if qos == 2 and packet.packet_id in self._qos2:  # sent again before PUBREL: done already
            self._send(Pubrec(packet_id=packet.packet_id or 0))
            return
        code, reason = await self.broker.publish(self.context, self.client_id, topic, packet)
        if code and self.v5 and qos:
            log.info("refused a PUBLISH of %r to %s: %s", self, topic, reason)
        elif code:  # the client cannot be told
            log.warning("dropped a PUBLISH of %r to %s: %s", self, topic, reason)
        packet_id = packet.packet_id or 0
        if qos == 1:
            properties = self._reason(reason)
            self._send(Puback(packet_id=packet_id, reason_code=code, properties=properties))
        elif qos == 2:
            self._qos2.add(packet_id)
            self._send(Pubrec(packet_id=packet_id))

    def _topic_of(self, packet: Publish) -> str:
        """The topic of a PUBLISH, through its MQTT 5 topic alias."""
        alias = packet.properties.topic_alias
        if alias is None:
            return packet.topic
        if alias > TOPIC_ALIAS_MAXIMUM:
            raise MalformedPacket(
                ReasonCode.TOPIC_ALIAS_INVALID,
                f"topic alias {alias} exceeds the maximum {TOPIC_ALIAS_MAXIMUM}",
            )
        if packet.topic:
            self._aliases[alias] = packet.topic
            return packet.topic
        topic = self._aliases.get(alias)
        if topic is None:
            raise MalformedPacket(
                ReasonCode.PROTOCOL_ERROR, f"topic alias {alias} was used before it was set"
            )
        return topic

    async def _on_puback(self, packet: Puback) -> None:
        state = self.state
        if state is not None and state.inflight.pop(packet.packet_id, None) is not None:
            self.sessions.mark_dirty(state)
            self._wake()

    async def _on_pubrel(self, packet: Pubrel) -> None:
        self._qos2.discard(packet.packet_id)
        self._send(Pubcomp(packet_id=packet.packet_id))

    async def _on_disconnect(self, packet: Disconnect) -> None:
        state = self.state
        expiry = packet.properties.session_expiry_interval
        if self.v5 and expiry is not None and state is not None:
            if expiry and not state.expiry_interval:
                raise MalformedPacket(
                    ReasonCode.PROTOCOL_ERROR,
                    "DISCONNECT sets a session expiry interval after CONNECT set none",
                )
            state.expiry_interval = expiry
        self.publish_will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self._closing = True

    async def _on_subscribe(self, packet: Subscribe) -> None:
        state = self.state
        if state is None:
            return
        codes: list[int] = []
        started: list[ActiveSubscription] = []
        refusal = None
        for options in packet.subscriptions:
            try:
                active = await self._subscribe(state, options, packet.subscription_identifier)
            except Exception as error:
                code, reason = reason_for(error, subscribing=True)
                if isinstance(error, _SharedSubscription):
                    code = ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                log.info("refused %r a subscription to %r: %s", self, options.topic_filter, reason)
                codes.append(code)
                refusal = refusal or reason
                continue
            codes.append(active.subscription.options.qos)
            started.append(active)
        if state.persistent:
            await self.sessions.save(state)
        suback = Suback(
            packet_id=packet.packet_id, reason_codes=tuple(codes), properties=self._reason(refusal)
        )
        self._send(suback)
        for active in started:
            active.start()

    async def _subscribe(
        self, state: SessionState, options: Subscription, identifier: int | None
    ) -> ActiveSubscription:
        topic_filter = options.topic_filter
        if shared_subscription(topic_filter) is not None:
            raise _SharedSubscription(
                f"shared subscriptions ({topic_filter}) are not supported; subscribe without "
                "$share/<group>/"
            )
        existed = topic_filter in state.subscriptions
        previous = self._active.pop(topic_filter, None)
        if previous is not None:
            previous.close()
        granted = SubscriptionState(
            options=replace(options, qos=min(options.qos, 1)), identifier=identifier
        )
        current = options.retain_handling == 0 or (options.retain_handling == 1 and not existed)
        try:
            start = SubscribeOptions(current=current)
            active = await open_subscription(self, state, granted, start, fresh=True)
        except BaseException:
            state.subscriptions.pop(topic_filter, None)
            raise
        state.subscriptions[topic_filter] = granted
        self._active[topic_filter] = active
        return active

    async def _resume(self, state: SessionState) -> None:
        """A resumed session: send the unacknowledged messages again, reopen subscriptions."""
        for packet in list(state.inflight.values()):
            self._send(replace(packet, dup=True))
        for topic_filter, subscription in list(state.subscriptions.items()):
            if subscription.cursor:
                options, fresh = SubscribeOptions(since=subscription.cursor), False
            else:
                current = subscription.options.retain_handling == 0
                options, fresh = SubscribeOptions(current=current), True
            try:
                active = await open_subscription(self, state, subscription, options, fresh=fresh)
            except Exception as error:
                _, reason = reason_for(error, subscribing=True)
                log.warning("dropped %r's subscription to %r: %s", self, topic_filter, reason)
                del state.subscriptions[topic_filter]
                self.sessions.mark_dirty(state)
                continue
            self._active[topic_filter] = active
            active.start()

    async def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        state = self.state
        if state is None:
            return
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            active = self._active.pop(topic_filter, None)
            if active is not None:
                active.close()
            existed = state.subscriptions.pop(topic_filter, None) is not None
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        if state.persistent:
            await self.sessions.save(state)
        self._send(Unsuback(packet_id=packet.packet_id, reason_codes=tuple(codes)))

    # ------------------------------------------------------------------ outgoing

    async def deliver(
        self, subscription: SubscriptionState, event: Event, topic: str, retain: bool
    ) -> bool:
        """Send ``event`` on ``topic`` to the client: QoS 0 at once (dropped when the client
        is far behind), QoS 1 once the client's window has room.

        Returns whether the event is dealt with (sent, dropped at QoS 0, or kept to be
        sent again); False when the connection ended first, so a session's cursor must
        not move past it.
        """
        state = self.state
        if state is None:
            return False
        qos = subscription.options.qos
        wire = event.wire
        if isinstance(wire, Wire) and wire.qos < qos:
            qos = wire.qos
        packet = self.broker.packet_for(event, topic, retain, subscription.identifier, self.v5)
        if packet is None:
            return True
        if not qos:
            if self.link.buffered() > WRITE_HIGH_WATER:
                self._dropped += 1
                return True
            self._send(packet)
            return True
        while len(state.inflight) >= self._send_quota and not self._closing:
            self._room.clear()
            await self._room.wait()
        if self._closing:
            return False
        packet = replace(packet, qos=1, packet_id=state.packet_id())
        state.inflight[packet.packet_id or 0] = packet
        if state.persistent:
            self.sessions.mark_dirty(state)
        self._send(packet)
        if self.link.buffered() > WRITE_HIGH_WATER:
            await self.link.drain()
        return True

    def _wake(self) -> None:
        self._room.set()

    def _send(self, packet: Packet) -> None:
        data = encode(packet, self.level)
        if len(data) > self._max_outgoing:
            properties = getattr(packet, "properties", NO_PROPERTIES)
            if isinstance(packet, Publish) or properties is NO_PROPERTIES:
                log.info("%r: a packet of %d bytes exceeds its maximum; not sent", self, len(data))
                return
            data = encode(replace(packet, properties=NO_PROPERTIES), self.level)  # no reason
        self.link.send(data)

    def _reason(self, reason: str | None) -> Properties:
        """A reason string property (MQTT 5, unless the client asked for none)."""
        if not reason or not self.v5 or not self._problem_information:
            return NO_PROPERTIES
        return Properties(reason_string=reason[:1000])


class _SharedSubscription(Exception):
    """A ``$share/...`` filter: MQTT 5 shared subscriptions are not supported."""
