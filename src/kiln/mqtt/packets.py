"""MQTT 3.1.1 and 5.0 control packets as typed values.

Every packet is a frozen :mod:`msgspec` struct; :mod:`kiln.mqtt.codec` turns them into
bytes and back. Reason codes are MQTT 5 codes in every protocol level (the codec maps them to
what MQTT 3.1.1 can say).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeAlias

import msgspec

from kiln.mqtt.properties import NO_PROPERTIES, Properties, ReasonCode

MQTT_3_1_1 = 4
"""The protocol level of MQTT 3.1.1."""
MQTT_5 = 5
"""The protocol level of MQTT 5.0."""


class PacketType(IntEnum):
    """The control packet types: the high four bits of a packet's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ConnackReturnCode(IntEnum):
    """The CONNACK return codes of MQTT 3.1.1 (spec 3.1.1, 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class Will(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """The will message of a CONNECT, published if the client goes away without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


class Connect(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """CONNECT: the first packet of a connection; ``protocol_level`` is 4 (3.1.1) or 5."""

    protocol_level: int
    client_id: str
    clean_start: bool = True
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES


class Connack(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """CONNACK: the answer to CONNECT; ``reason_code`` is an MQTT 5 code at every level."""

    session_present: bool = False
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = NO_PROPERTIES


class Publish(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """PUBLISH: an application message; ``packet_id`` is set exactly when ``qos`` > 0.

    In MQTT 5 ``topic`` may be empty when ``properties.topic_alias`` names it.
    """

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES


class Acknowledgement(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """What PUBACK, PUBREC, PUBREL and PUBCOMP share: a packet id, a reason, properties."""

    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = NO_PROPERTIES


class Puback(Acknowledgement, frozen=True):
    """PUBACK: acknowledges a QoS 1 PUBLISH."""


class Pubrec(Acknowledgement, frozen=True):
    """PUBREC: first answer to a QoS 2 PUBLISH."""


class Pubrel(Acknowledgement, frozen=True):
    """PUBREL: releases a QoS 2 message after PUBREC."""


class Pubcomp(Acknowledgement, frozen=True):
    """PUBCOMP: completes a QoS 2 exchange."""


class Subscription(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """One topic filter of a SUBSCRIBE with its options (the last three are MQTT 5 only)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


class Subscribe(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """SUBSCRIBE: one or more subscriptions, acknowledged by one SUBACK."""

    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES

    @property
    def subscription_identifier(self) -> int | None:
        """The MQTT 5 subscription identifier, if the client gave one."""
        identifiers = self.properties.subscription_identifiers
        return identifiers[0] if identifiers else None


class Suback(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """SUBACK: one reason code per subscription (granted QoS, or a failure 0x80 and above)."""

    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


class Unsubscribe(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """UNSUBSCRIBE: removes one or more subscriptions."""

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


class Unsuback(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """UNSUBACK: answers UNSUBSCRIBE; the reason codes (one per filter) are MQTT 5 only."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


class Pingreq(msgspec.Struct, frozen=True):
    """PINGREQ: the client's keep-alive."""


class Pingresp(msgspec.Struct, frozen=True):
    """PINGRESP: the answer to PINGREQ."""


class Disconnect(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """DISCONNECT: the last packet of a connection (reason and properties are MQTT 5 only)."""

    reason_code: int = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = NO_PROPERTIES


class Auth(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """AUTH: one step of MQTT 5 enhanced authentication."""

    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = NO_PROPERTIES


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
"""Any control packet."""

MAX_PACKET_SIZE = 268_435_460
"""The largest packet MQTT can frame: one type byte, four length bytes, 268,435,455 more."""
