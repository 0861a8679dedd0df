"""What every MQTT packet is built from: reason codes, the wire error, the primitive data types
(variable byte integers, UTF-8 strings, binary data) and the MQTT 5 property block.

:mod:`kiln.mqtt.packets` assembles packets from these pieces. The ``read_*`` functions take the
``end`` of the enclosing field (a packet body, a property block), so a length that points past it
is reported as malformed instead of reading the bytes that follow.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import msgspec

from kiln.errors import KilnError

__all__ = [
    "NO_PROPERTIES",
    "WILL",
    "MalformedPacket",
    "Properties",
    "ReasonCode",
    "decode_properties",
    "encode_binary",
    "encode_properties",
    "encode_utf8",
    "encode_vbi",
    "read_binary",
    "read_utf8",
    "read_vbi",
]

MAX_VBI = 268_435_455
"""The largest value a variable byte integer holds (four bytes of seven bits)."""


class ReasonCode(IntEnum):
    """The MQTT 5 reason codes (spec 2.4, table 2-6); value 0 has one name per packet."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    REAUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USERNAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class MalformedPacket(KilnError):
    """Bytes from the peer that break the MQTT specification; the connection must be closed.

    Args:
        reason_code: the MQTT 5 reason code to report it with, in a DISCONNECT (or in the
            CONNACK, when the broker has not answered the CONNECT yet).
        message: what was wrong, in one sentence.
    """

    def __init__(self, reason_code: ReasonCode, message: str) -> None:
        super().__init__(f"{message} ({reason_code.name.lower().replace('_', ' ')})")
        self.reason_code = reason_code


def _malformed(message: str) -> MalformedPacket:
    return MalformedPacket(ReasonCode.MALFORMED_PACKET, message)


def _protocol_error(message: str) -> MalformedPacket:
    return MalformedPacket(ReasonCode.PROTOCOL_ERROR, message)


def read_vbi(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a variable byte integer (spec 1.5.5) at ``pos``.

    Returns:
        The value and the position after it.

    Raises:
        MalformedPacket: it runs past ``end``, is longer than four bytes or not minimal.
    """
    value = 0
    for index in range(pos, min(pos + 4, end)):
        byte = data[index]
        value |= (byte & 0x7F) << (7 * (index - pos))
        if byte < 0x80:
            if byte == 0 and index > pos:
                raise _malformed("a variable byte integer is not in its shortest form")
            return value, index + 1
    if end - pos >= 4:
        raise _malformed("a variable byte integer is longer than 4 bytes")
    raise _malformed("a variable byte integer runs past the end of its field")


def encode_vbi(value: int) -> bytes:
    """Encode ``value`` (0 to 268,435,455) as a variable byte integer.

    Raises:
        ValueError: the value is out of range.
    """
    if value < 0x80:
        if value < 0:
            raise ValueError(f"a variable byte integer cannot be negative, got {value}")
        return bytes((value,))
    if value > MAX_VBI:
        raise ValueError(f"{value} exceeds the variable byte integer maximum {MAX_VBI}")
    out = bytearray()
    while value:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | 0x80 if value else byte)
    return bytes(out)


def read_binary(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """Read binary data (a two-byte length, then the bytes) at ``pos``; its value and end.

    Raises:
        MalformedPacket: the length points past ``end``.
    """
    start = pos + 2
    if start > end:
        raise _malformed("a length prefix runs past the end of its field")
    stop = start + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise _malformed(f"a string or binary field of {stop - start} bytes runs past its field")
    return data[start:stop], stop


def read_utf8(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """Read a UTF-8 encoded string (spec 1.5.4) at ``pos``; its value and end.

    Raises:
        MalformedPacket: the length points past ``end``, the bytes are not well-formed UTF-8
            or the text contains U+0000.
    """
    raw, stop = read_binary(data, pos, end)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise _malformed(f"a string is not well-formed UTF-8: {raw[:40]!r}") from None
    if "\x00" in text:
        raise _malformed(f"a string contains the null character U+0000: {text[:40]!r}")
    return text, stop


def encode_binary(raw: bytes) -> bytes:
    """Encode binary data: a two-byte length, then the bytes.

    Raises:
        ValueError: longer than 65,535 bytes.
    """
    if len(raw) > 0xFFFF:
        raise ValueError(f"a string or binary field is {len(raw)} bytes; MQTT allows 65535")
    return len(raw).to_bytes(2, "big") + raw


def encode_utf8(text: str) -> bytes:
    """Encode a UTF-8 string field: a two-byte length, then the encoded text.

    Raises:
        ValueError: longer than 65,535 bytes once encoded.
    """
    return encode_binary(text.encode())


class Properties(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """The MQTT 5 properties of one packet (spec 2.2.2); ``None`` or ``()`` means absent.

    Which properties a packet may carry is fixed by the spec: the decoder refuses others and
    :func:`encode_properties` raises for them. ``subscription_identifiers`` repeats in a PUBLISH
    sent to a client; a SUBSCRIBE carries at most one. ``user_properties`` keeps the pairs in
    order, duplicates included. The flags the spec sends as a byte 0 or 1 are ``bool`` here.
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None


NO_PROPERTIES = Properties()
"""The empty property block; decoders return this one object when a packet has none."""

WILL = 0
"""The ``packet_type`` to give the property functions for the will properties of a CONNECT."""

_BYTE, _BOOL, _TWO, _FOUR, _VBI, _UTF8, _BINARY, _PAIR = range(8)

# property identifier: (field of Properties, data type), in identifier order (spec 2.2.2.2)
_TABLE: dict[int, tuple[str, int]] = {
    0x01: ("payload_format_indicator", _BYTE),
    0x02: ("message_expiry_interval", _FOUR),
    0x03: ("content_type", _UTF8),
    0x08: ("response_topic", _UTF8),
    0x09: ("correlation_data", _BINARY),
    0x0B: ("subscription_identifiers", _VBI),
    0x11: ("session_expiry_interval", _FOUR),
    0x12: ("assigned_client_identifier", _UTF8),
    0x13: ("server_keep_alive", _TWO),
    0x15: ("authentication_method", _UTF8),
    0x16: ("authentication_data", _BINARY),
    0x17: ("request_problem_information", _BOOL),
    0x18: ("will_delay_interval", _FOUR),
    0x19: ("request_response_information", _BOOL),
    0x1A: ("response_information", _UTF8),
    0x1C: ("server_reference", _UTF8),
    0x1F: ("reason_string", _UTF8),
    0x21: ("receive_maximum", _TWO),
    0x22: ("topic_alias_maximum", _TWO),
    0x23: ("topic_alias", _TWO),
    0x24: ("maximum_qos", _BYTE),
    0x25: ("retain_available", _BOOL),
    0x26: ("user_properties", _PAIR),
    0x27: ("maximum_packet_size", _FOUR),
    0x28: ("wildcard_subscription_available", _BOOL),
    0x29: ("subscription_identifier_available", _BOOL),
    0x2A: ("shared_subscription_available", _BOOL),
}

_REASON_ONLY = frozenset({0x1F, 0x26})
# packet type (1 CONNECT ... 15 AUTH; 0 the will): the property identifiers it may carry
_ALLOWED: dict[int, frozenset[int]] = {
    WILL: frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26}),
    1: frozenset({0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27}),
    2: frozenset(
        {0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26}
        | {0x27, 0x28, 0x29, 0x2A}
    ),
    3: frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26}),
    4: _REASON_ONLY,
    5: _REASON_ONLY,
    6: _REASON_ONLY,
    7: _REASON_ONLY,
    8: frozenset({0x0B, 0x26}),
    9: _REASON_ONLY,
    10: frozenset({0x26}),
    11: _REASON_ONLY,
    14: frozenset({0x11, 0x1C, 0x1F, 0x26}),
    15: frozenset({0x15, 0x16, 0x1F, 0x26}),
}
_ZERO_OR_ONE = frozenset({0x01, 0x24} | {pid for pid, (_, kind) in _TABLE.items() if kind == _BOOL})
_NOT_ZERO = frozenset({0x0B, 0x21, 0x23, 0x27})


def decode_properties(data: bytes, pos: int, end: int, packet_type: int) -> tuple[Properties, int]:
    """Read the property block (its length, then the properties) at ``pos``.

    Args:
        data: the packet body.
        pos: where the property length starts.
        end: where the enclosing packet ends.
        packet_type: the packet's type number, or :data:`WILL`; it decides which identifiers
            are allowed.

    Returns:
        The properties (:data:`NO_PROPERTIES` when the block is empty) and the position after.

    Raises:
        MalformedPacket: malformed (0x81) for a truncated block or an identifier that is
            unknown or not allowed in this packet; protocol error (0x82) for a property given
            twice that may not repeat, or a value the spec forbids (a flag other than 0 or 1,
            a zero Receive Maximum, Topic Alias, Maximum Packet Size or Subscription Identifier).
    """
    length, pos = read_vbi(data, pos, end)
    if length == 0:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise _malformed(f"a property length of {length} runs past the end of the packet")
    allowed = _ALLOWED[packet_type]
    values: dict[str, Any] = {}
    user_properties: list[tuple[str, str]] = []
    subscription_identifiers: list[int] = []
    while pos < stop:
        pid = data[pos]
        pos += 1
        if pid not in allowed:
            name = _TABLE[pid][0] if pid in _TABLE else "unknown property"
            raise _malformed(f"property 0x{pid:02X} ({name}) is not allowed in this packet")
        name, kind = _TABLE[pid]
        value: object
        if kind == _PAIR:
            key, pos = read_utf8(data, pos, stop)
            text, pos = read_utf8(data, pos, stop)
            user_properties.append((key, text))
            continue
        if kind == _VBI:
            number, pos = read_vbi(data, pos, stop)
            if number == 0:
                raise _protocol_error("a subscription identifier is 0; it must be 1 or more")
            subscription_identifiers.append(number)
            continue
        if name in values:
            raise _protocol_error(f"property {name} appears more than once")
        if kind == _UTF8:
            value, pos = read_utf8(data, pos, stop)
        elif kind == _BINARY:
            value, pos = read_binary(data, pos, stop)
        else:
            width = 2 if kind == _TWO else 4 if kind == _FOUR else 1
            if pos + width > stop:
                raise _malformed(f"property {name} runs past the end of the property block")
            number = int.from_bytes(data[pos : pos + width], "big")
            pos += width
            if number > 1 and pid in _ZERO_OR_ONE:
                raise _protocol_error(f"property {name} is {number}; it must be 0 or 1")
            if number == 0 and pid in _NOT_ZERO:
                raise _protocol_error(f"property {name} is 0; it must be 1 or more")
            value = bool(number) if kind == _BOOL else number
        values[name] = value
    if user_properties:
        values["user_properties"] = tuple(user_properties)
    if subscription_identifiers:
        values["subscription_identifiers"] = tuple(subscription_identifiers)
    return Properties(**values), pos


def encode_properties(properties: Properties, packet_type: int) -> bytes:
    """Encode a property block (its length, then the properties in identifier order).

    Args:
        properties: the values to send.
        packet_type: the packet's type number, or :data:`WILL`.

    Raises:
        ValueError: a property the packet type may not carry is set, or a value is out of range.
    """
    if properties is NO_PROPERTIES:
        return b"\x00"
    allowed = _ALLOWED[packet_type]
    out = bytearray()
    for pid, (name, kind) in _TABLE.items():
        value = getattr(properties, name)
        if value is None or value == ():
            continue
        if pid not in allowed:
            raise ValueError(f"property {name} is not allowed in packet type {packet_type}")
        if kind == _PAIR:
            for key, text in value:
                out.append(pid)
                out += encode_utf8(key)
                out += encode_utf8(text)
        elif kind == _VBI:
            for number in value:
                out.append(pid)
                out += encode_vbi(number)
        else:
            out.append(pid)
            if kind == _UTF8:
                out += encode_utf8(value)
            elif kind == _BINARY:
                out += encode_binary(value)
            else:
                width = 2 if kind == _TWO else 4 if kind == _FOUR else 1
                if not 0 <= value < 1 << (8 * width):
                    raise ValueError(f"property {name} is {value}; it must fit {width} byte(s)")
                out += int(value).to_bytes(width, "big")
    return encode_vbi(len(out)) + out
