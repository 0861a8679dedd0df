"""The MQTT adapter: topics ↔ routes, PUBLISH ↔ the resource seam, events → PUBLISH.

It translates and does nothing else. A topic names a record through the app's routes
(``Dog/1`` is record ``1`` of the route ``Dog``); a PUBLISH becomes ``put``, ``delete`` or
``publish`` on the seam (:data:`METHOD_OF`), a SUBSCRIBE becomes ``subscribe``, and the
events of those subscriptions become PUBLISH packets (:meth:`Broker.packet_for`).
Permission checks and data access happen behind :func:`kiln.resource.invoke`; credentials
are checked by :mod:`kiln.auth` (:meth:`Broker.authenticate`). Errors become MQTT reason
codes in one place, :func:`reason_for`.

A topic without a route is refused (PUBACK and SUBACK failures in MQTT 5, logged in
3.1.1): every topic is a resource, with its permission hooks. An app that wants free-form
message topics declares a plain :class:`~kiln.resource.Resource` for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from base64 import b64encode
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from msgspec.structs import replace

from kiln.auth.access import unauthorized
from kiln.auth.roles import User
from kiln.errors import HTTPError, NotFound, TooManyRequests, Unauthorized
from kiln.http.problems import as_http_error
from kiln.mqtt.link import Link
from kiln.mqtt.packets import Connect, Publish
from kiln.mqtt.payloads import Payloads
from kiln.mqtt.properties import NO_PROPERTIES, Properties, ReasonCode
from kiln.query import Query
from kiln.realtime import Event
from kiln.realtime.bus import published_wire
from kiln.resource import Context, RequestTarget, Resource, Table, authorize_first, invoke

if TYPE_CHECKING:
    from kiln.app import App

log = logging.getLogger("kiln.mqtt")

METHOD_OF = {
    "retained": "put",
    "retained, empty payload": "delete",
    "not retained": "publish",
}
"""What a PUBLISH does on the seam (see :func:`method_of`)."""

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The headers of every MQTT request's :class:`~kiln.resource.Context` (MQTT has none)."""

_NO_QUERY = Query()
_TOPIC_CACHE = 10_000
"""Topics whose record the broker remembers (a message names its record by topic)."""
_PAYLOAD_CACHE = 256
"""Encoded records remembered, so a change fanned out to many subscribers is encoded once."""

_BY_STATUS = {
    400: ReasonCode.PAYLOAD_FORMAT_INVALID,
    401: ReasonCode.NOT_AUTHORIZED,
    403: ReasonCode.NOT_AUTHORIZED,
    404: ReasonCode.TOPIC_NAME_INVALID,
    413: ReasonCode.QUOTA_EXCEEDED,
    415: ReasonCode.PAYLOAD_FORMAT_INVALID,
    422: ReasonCode.PAYLOAD_FORMAT_INVALID,
    429: ReasonCode.QUOTA_EXCEEDED,
}
_SUBSCRIBE_BY_STATUS = _BY_STATUS | {
    400: ReasonCode.TOPIC_FILTER_INVALID,
    404: ReasonCode.TOPIC_FILTER_INVALID,
}


def method_of(packet: Publish) -> str:
    """The seam method a PUBLISH calls (:data:`METHOD_OF`)."""
    if packet.retain:
        return METHOD_OF["retained" if packet.payload else "retained, empty payload"]
    return METHOD_OF["not retained"]


def reason_for(error: BaseException, *, subscribing: bool = False) -> tuple[int, str]:
    """The MQTT 5 reason code refusing a PUBLISH (or, ``subscribing``, a subscription)
    because of ``error``, and the reason string that explains it.

    A server failure (not an :class:`HTTPError`) is logged with an error id, which the
    reason string quotes.
    """
    http_error = as_http_error(error)
    status = http_error.status
    if status >= 500:
        code = ReasonCode.UNSPECIFIED_ERROR
    else:
        by_status = _SUBSCRIBE_BY_STATUS if subscribing else _BY_STATUS
        code = by_status.get(status, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)
    detail = http_error.detail
    if http_error.hint:
        detail += f"; {http_error.hint}"
    return code, detail


class Wire(NamedTuple):
    """A message as an MQTT client published it, relayed as it came to MQTT subscribers.

    It travels with the message's event (:attr:`kiln.realtime.Event.wire`); every other
    subscriber reads the decoded value.
    """

    payload: bytes
    qos: int
    properties: Properties
    """The properties a broker forwards unaltered (MQTT 5 spec 3.3.2.3)."""
    sender: str
    """The client id that published it (for the no-local option)."""
    received: float
    """``loop.time()`` when it arrived (the message expiry interval counts from it)."""


class Route(NamedTuple):
    """One subscription a topic filter makes: a route, the target to subscribe to, and
    the filter to check each event's topic against (when the target is wider)."""

    name: str
    resource: Resource
    target: RequestTarget
    matcher: str | None


def topic_target(routes: Mapping[str, Resource], topic: str, context: Context) -> Route:
    """The record a topic name names.

    Raises:
        NotFound: no route, or a topic that names no record (``Dog``, ``Dog/``, ``Dog/a/``,
            an id the resource cannot have).
        BadRequest: an id too long to store.
    """
    name, _, rest = topic.partition("/")
    resource = _route(routes, name, topic)
    if not rest or rest.endswith("/"):
        raise NotFound(
            f"the topic {topic!r} names no record: a record's topic is {name}/<id>, "
            "and an id neither is empty nor ends with '/'"
        )
    target = RequestTarget("/" + topic, resource.parse_id(rest), False, _NO_QUERY, context)
    return Route(name, resource, target, None)


def filter_targets(
    routes: Mapping[str, Resource], topic_filter: str, context: Context
) -> list[Route]:
    """What a (valid, not shared) topic filter subscribes to.

    ``Dog/1`` is one record; ``Dog/#`` the collection; ``Dog/abc/#`` the record ``abc``
    and the ids starting with ``abc/``; a filter with ``+`` the collection (or the ids
    under its literal first levels), each event checked against the filter. A wildcard
    first level (``#``, ``+/1``) applies to every route.

    Raises:
        NotFound: no route, or a filter that matches no record's topic (``Dog``).
    """
    first, _, rest = topic_filter.partition("/")
    if first in ("#", "+"):
        if first == "#":
            return [_collection(routes[name], name, None, None, context) for name in routes]
        found = []
        for name, resource in routes.items():
            try:
                found.extend(_targets(resource, name, rest, topic_filter, context))
            except NotFound:  # the rest names a key this route's keys cannot be
                continue
        if not found:
            raise NotFound(f"the topic filter {topic_filter!r} matches no route's records")
        return found
    return _targets(_route(routes, first, topic_filter), first, rest, topic_filter, context)


def _route(routes: Mapping[str, Resource], name: str, topic: str) -> Resource:
    resource = routes.get(name)
    if resource is None:
        topics = ", ".join(f"{route}/<id>" for route in routes) or "none"
        raise NotFound(f"no resource serves the topic {topic!r}; the topics are: {topics}")
    return resource


def _targets(
    resource: Resource, name: str, rest: str, topic_filter: str, context: Context
) -> list[Route]:
    if rest == "#":
        return [_collection(resource, name, None, None, context)]
    if "+" not in rest and "#" not in rest:
        return [topic_target({name: resource}, f"{name}/{rest}", context)]
    head = rest.removesuffix("/#")
    if "+" not in head:  # Dog/abc/#: the record abc and the ids under abc/
        found = [topic_target({name: resource}, f"{name}/{head}", context)]
        if _has_prefixes(resource):
            found.append(_collection(resource, name, head + "/", None, context))
        return found
    literal = head[: head.index("+")]  # the levels before the first +, ending with '/'
    prefix = literal if literal and _has_prefixes(resource) else None
    return [_collection(resource, name, prefix, topic_filter, context)]


def _has_prefixes(resource: Resource) -> bool:
    """Whether the resource's ids are strings, so an id prefix can pick some."""
    return not isinstance(resource, Table) or resource.definition.primary_key_type in (
        "ID",
        "String",
    )


def _collection(
    resource: Resource, name: str, prefix: str | None, matcher: str | None, context: Context
) -> Route:
    path = f"/{name}/{prefix or ''}"
    return Route(name, resource, RequestTarget(path, prefix, True, _NO_QUERY, context), matcher)


class Broker:
    """The MQTT side of one app: credentials, PUBLISH to the seam, events to PUBLISH.

    Args:
        app: returns the app being served (``kiln dev`` swaps it on reload).
        payload_format: ``mqtt.payloadFormat``.
    """

    def __init__(self, app: Callable[[], App], payload_format: str):
        self.app = app
        self.payloads = Payloads(payload_format)
        self._encoded: OrderedDict[int, tuple[Event, bytes]] = OrderedDict()
        self._records: dict[str, Route] = {}
        self._records_of: Mapping[str, Resource] | None = None

    async def authenticate(self, connect: Connect, client: str, host: str | None) -> User | None:
        """The user a CONNECT's user name and password prove: the one place MQTT meets
        kiln's authentication (:class:`~kiln.auth.authenticate.Authenticator`).

        Without a user name it is the anonymous user (or a loopback super user when
        ``authentication.trustLoopback`` is on and the WebSocket handshake's ``host``
        names this machine; None over TCP).

        Raises:
            Unauthorized: wrong credentials, or none where the app has no ``anonymous`` role.
            TooManyRequests: too many failed logins from ``client`` for that user.
        """
        authenticator = self.app().security.authenticator
        if connect.username is None:
            user = await authenticator.authenticate(None, client, host)
            if user is None:
                raise Unauthorized(
                    "this server needs a user name and password in CONNECT",
                    hint="connect with the credentials of a kiln user (kiln user add)",
                )
            return user
        try:
            password = (connect.password or b"").decode()
        except UnicodeDecodeError:
            raise unauthorized("the password is not UTF-8") from None
        # as an HTTP Basic header, so a client that reconnects shares HTTP's cache of
        # verified credentials instead of paying for a password check every time
        basic = b64encode(f"{connect.username}:{password}".encode()).decode()
        return await authenticator.authenticate(f"Basic {basic}", client)

    def connack_refusal(self, error: BaseException, connect: Connect) -> tuple[int, str]:
        """The CONNACK reason code (and string) refusing a connection for ``error``."""
        if isinstance(error, TooManyRequests):
            return ReasonCode.CONNECTION_RATE_EXCEEDED, error.detail
        if isinstance(error, Unauthorized):
            code = ReasonCode.NOT_AUTHORIZED
            if connect.username is not None:
                code = ReasonCode.BAD_USERNAME_OR_PASSWORD
            return code, error.detail
        http_error = as_http_error(error)
        return ReasonCode.UNSPECIFIED_ERROR, http_error.detail

    async def publish(
        self, context: Context, client_id: str, topic: str, packet: Publish
    ) -> tuple[int, str | None]:
        """Carry out a PUBLISH (of ``topic``: its alias resolved) on the seam.

        Returns:
            The reason code for the PUBACK (0: success) and, for a failure, why.
        """
        try:
            route = self._record(topic, context)
            method = method_of(packet)
            if method == "delete":
                with contextlib.suppress(NotFound):  # the record (retained message) is gone
                    await invoke(route.resource, "delete", route.target)
            elif method == "put":
                authorized = authorize_first(route.resource, "put", route.target)
                value = self.payloads.decode(packet.payload, packet.properties.content_type)
                await invoke(route.resource, "put", route.target, value, authorized=authorized)
            else:
                authorized = authorize_first(route.resource, "publish", route.target)
                value = None
                if packet.payload:
                    value = self.payloads.decode(packet.payload, packet.properties.content_type)
                wire = Wire(
                    packet.payload,
                    packet.qos,
                    _forwarded(packet.properties),
                    client_id,
                    asyncio.get_running_loop().time(),
                )
                token = published_wire.set((value, wire))
                try:
                    await invoke(
                        route.resource, "publish", route.target, value, authorized=authorized
                    )
                finally:
                    published_wire.reset(token)
        except Exception as error:
            return reason_for(error)
        return ReasonCode.SUCCESS, None

    def _record(self, topic: str, context: Context) -> Route:
        """:func:`topic_target`, remembering the targets of the topics published to."""
        routes = self.app().routes
        if routes is not self._records_of or len(self._records) >= _TOPIC_CACHE:
            self._records, self._records_of = {}, routes  # a new app, or enough remembered
        route = self._records.get(topic)
        if route is None:
            route = self._records[topic] = topic_target(routes, topic, context)
        elif route.target.context is not context:  # another client's
            route = route._replace(target=route.target._replace(context=context))
        return route

    async def publish_will(self, connect: Connect, link: Link, client_id: str) -> None:
        """Publish the will of ``connect`` as its client (``client_id``, connected over
        ``link``) would now: with the rights its credentials give at this moment, not
        those they gave at CONNECT. A removed user (or a changed password) publishes
        nothing, a changed role what the new role allows; a refusal is logged. Without
        credentials, loopback trust holds as it did for the CONNECT (the link's address
        and ``Host``).
        """
        will = connect.will
        if will is None:
            return
        try:
            user = await self.authenticate(connect, link.peer, link.host)
        except HTTPError as error:
            log.warning(
                "the will of %r to %s was not published: its credentials were refused (%s)",
                client_id,
                will.topic,
                error.detail,
            )
            return
        packet = Publish(
            topic=will.topic,
            payload=will.payload,
            qos=will.qos,
            retain=will.retain,
            properties=will.properties,
        )
        context = Context(user, NO_HEADERS, {})
        code, reason = await self.publish(context, client_id, will.topic, packet)
        if code:
            log.warning("the will of %r to %s was refused: %s", client_id, will.topic, reason)
        else:
            log.info("published the will of %r to %s", client_id, will.topic)

    def packet_for(
        self, event: Event, topic: str, retain: bool, identifier: int | None, v5: bool
    ) -> Publish | None:
        """The QoS 0 PUBLISH carrying ``event`` on ``topic``; None for an expired message.

        A record travels in ``mqtt.payloadFormat`` (named by the MQTT 5 content type), a
        delete as an empty payload, and a message an MQTT client published as it came.
        """
        wire = event.wire
        if isinstance(wire, Wire):
            properties = wire.properties
            expiry = properties.message_expiry_interval
            if expiry is not None:
                waited = int(asyncio.get_running_loop().time() - wire.received)
                if waited >= expiry:
                    return None
                properties = replace(properties, message_expiry_interval=expiry - waited)
            if identifier is not None:
                properties = replace(properties, subscription_identifiers=(identifier,))
            return Publish(topic=topic, payload=wire.payload, retain=retain, properties=properties)
        payload = b"" if event.type == "delete" else self._encode(event)
        properties = NO_PROPERTIES
        if v5 and payload:
            identifiers = () if identifier is None else (identifier,)
            properties = Properties(
                content_type=self.payloads.content_type, subscription_identifiers=identifiers
            )
        elif v5 and identifier is not None:
            properties = Properties(subscription_identifiers=(identifier,))
        return Publish(topic=topic, payload=payload, retain=retain, properties=properties)

    def _encode(self, event: Event) -> bytes:
        """``event.value`` in the payload format, encoded once however many subscribers get it."""
        cached = self._encoded.get(id(event))
        if cached is not None and cached[0] is event:
            return cached[1]
        payload = self.payloads.encode(event.value)
        self._encoded[id(event)] = (event, payload)
        if len(self._encoded) > _PAYLOAD_CACHE:
            self._encoded.popitem(last=False)
        return payload


def _forwarded(properties: Properties) -> Properties:
    """The properties of an incoming PUBLISH that go to subscribers unaltered."""
    if properties is NO_PROPERTIES:
        return properties
    return Properties(
        payload_format_indicator=properties.payload_format_indicator,
        message_expiry_interval=properties.message_expiry_interval,
        content_type=properties.content_type,
        response_topic=properties.response_topic,
        correlation_data=properties.correlation_data,
        user_properties=properties.user_properties,
    )
