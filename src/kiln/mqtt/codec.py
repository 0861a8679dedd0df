"""The MQTT codec: :func:`encode` a packet for a protocol level, :class:`PacketReader` to cut a
byte stream into packets.

The codec is pure: bytes in, packets out, and back; it does no I/O. :func:`encode` writes what
MQTT 3.1.1 can say (it drops properties and acknowledgement reason codes, and maps CONNACK and
SUBACK codes to their 3.1.1 values), and the reader maps 3.1.1 CONNACK return codes to MQTT 5
codes.

>>> reader = PacketReader(max_packet_size=1024)
>>> reader.feed(encode(Connect(protocol_level=MQTT_5, client_id="c1"), MQTT_5))
>>> reader.next_packet().client_id, reader.protocol_level
('c1', 5)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kiln.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Acknowledgement,
    Auth,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    Packet,
    PacketType,
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
    Will,
)
from kiln.mqtt.properties import (
    NO_PROPERTIES,
    WILL,
    MalformedPacket,
    Properties,
    ReasonCode,
    decode_properties,
    encode_binary,
    encode_properties,
    encode_utf8,
    encode_vbi,
    read_binary,
    read_utf8,
)
from kiln.mqtt.topics import valid_topic_filter

_Ack = TypeVar("_Ack", bound=Acknowledgement)

_CONNACK_V3_TO_V5: dict[int, int] = {
    ConnackReturnCode.ACCEPTED: ReasonCode.SUCCESS,
    ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
    ConnackReturnCode.IDENTIFIER_REJECTED: ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
    ConnackReturnCode.SERVER_UNAVAILABLE: ReasonCode.SERVER_UNAVAILABLE,
    ConnackReturnCode.BAD_USERNAME_OR_PASSWORD: ReasonCode.BAD_USERNAME_OR_PASSWORD,
    ConnackReturnCode.NOT_AUTHORIZED: ReasonCode.NOT_AUTHORIZED,
}
# MQTT 5 refusals 3.1.1 has no name for get the nearest one; any other becomes "server unavailable"
_CONNACK_V5_TO_V3: dict[int, int] = {v5: v3 for v3, v5 in _CONNACK_V3_TO_V5.items()} | {
    ReasonCode.BANNED: ConnackReturnCode.NOT_AUTHORIZED,
    ReasonCode.BAD_AUTHENTICATION_METHOD: ConnackReturnCode.NOT_AUTHORIZED,
}

# the MQTT 5 reason codes each packet may carry (spec 2.4, table 2-6)
_CONNACK_CODES = frozenset(
    {0x00, *range(0x80, 0x8B), 0x8C, 0x90, 0x95, 0x97, 0x99, *range(0x9A, 0xA0)}
)
_PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL_CODES = frozenset({0x00, 0x92})
_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
_UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_DISCONNECT_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, *range(0x8B, 0x91), *range(0x93, 0xA3)}
)
_AUTH_CODES = frozenset({0x00, 0x18, 0x19})
_V3_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})

# the fixed flags (low four bits of the first byte) of every type but PUBLISH (spec 2.1.3)
_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}


def _malformed(message: str) -> MalformedPacket:
    return MalformedPacket(ReasonCode.MALFORMED_PACKET, message)


def _protocol_error(message: str) -> MalformedPacket:
    return MalformedPacket(ReasonCode.PROTOCOL_ERROR, message)


# --- decoding ------------------------------------------------------------------------------


def _packet_id(body: bytes, pos: int, name: str) -> int:
    if pos + 2 > len(body):
        raise _malformed(f"{name} ends before its packet identifier")
    packet_id = (body[pos] << 8) | body[pos + 1]
    if packet_id == 0:
        raise _protocol_error(f"{name} has packet identifier 0; it must be 1 to 65535")
    return packet_id


def _expect_end(pos: int, end: int, name: str) -> None:
    if pos != end:
        raise _malformed(f"{name} has {end - pos} bytes after its last field")


def _check_code(code: int, allowed: frozenset[int], name: str) -> int:
    if code not in allowed:
        raise _protocol_error(f"{name} has reason code 0x{code:02X}, which it may not carry")
    return code


def _check_topic_name(topic: str, name: str) -> None:
    if "+" in topic or "#" in topic:
        raise MalformedPacket(
            ReasonCode.TOPIC_NAME_INVALID, f"{name} topic {topic!r} contains a wildcard"
        )


def _decode_connect(body: bytes) -> Connect:
    end = len(body)
    protocol, pos = read_utf8(body, 0, end)
    if pos + 4 > end:
        raise _malformed("CONNECT ends inside its variable header")
    level = body[pos]
    if protocol != "MQTT" or level not in (MQTT_3_1_1, MQTT_5):
        raise MalformedPacket(
            ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
            f"CONNECT asks for protocol {protocol!r} level {level}; "
            "kiln speaks MQTT 3.1.1 (level 4) and 5.0 (level 5)",
        )
    v5 = level == MQTT_5
    flags = body[pos + 1]
    keep_alive = (body[pos + 2] << 8) | body[pos + 3]
    pos += 4
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if flags & 0x01:
        raise _malformed("CONNECT sets the reserved flag bit 0")
    if will_qos == 3:
        raise _malformed("CONNECT asks for will QoS 3")
    if not flags & 0x04 and (will_qos or will_retain):
        raise _malformed("CONNECT sets will QoS or will retain without the will flag")
    if not v5 and flags & 0x40 and not flags & 0x80:
        raise _malformed("an MQTT 3.1.1 CONNECT sets the password flag without a username")
    properties = NO_PROPERTIES
    if v5:
        properties, pos = decode_properties(body, pos, end, PacketType.CONNECT)
        if properties.authentication_data is not None and not properties.authentication_method:
            raise _protocol_error("CONNECT has authentication data without a method")
    client_id, pos = read_utf8(body, pos, end)
    will = None
    if flags & 0x04:
        will_properties = NO_PROPERTIES
        if v5:
            will_properties, pos = decode_properties(body, pos, end, WILL)
        topic, pos = read_utf8(body, pos, end)
        if not topic:
            raise MalformedPacket(ReasonCode.TOPIC_NAME_INVALID, "CONNECT has an empty will topic")
        _check_topic_name(topic, "the will")
        payload, pos = read_binary(body, pos, end)
        will = Will(
            topic=topic,
            payload=payload,
            qos=will_qos,
            retain=will_retain,
            properties=will_properties,
        )
    username = password = None
    if flags & 0x80:
        username, pos = read_utf8(body, pos, end)
    if flags & 0x40:
        password, pos = read_binary(body, pos, end)
    _expect_end(pos, end, "CONNECT")
    return Connect(
        protocol_level=level,
        client_id=client_id,
        clean_start=bool(flags & 0x02),
        keep_alive=keep_alive,
        username=username,
        password=password,
        will=will,
        properties=properties,
    )


def _decode_connack(flags: int, body: bytes, v5: bool) -> Connack:
    end = len(body)
    if end < 2:
        raise _malformed("CONNACK ends before its reason code")
    acknowledge, code = body[0], body[1]
    if acknowledge & 0xFE:
        raise _malformed("CONNACK sets reserved acknowledge flag bits")
    properties = NO_PROPERTIES
    if v5:
        _check_code(code, _CONNACK_CODES, "CONNACK")
        properties, pos = decode_properties(body, 2, end, PacketType.CONNACK)
        _expect_end(pos, end, "CONNACK")
    else:
        if code not in _CONNACK_V3_TO_V5:
            raise _protocol_error(f"CONNACK has return code {code}; 3.1.1 defines 0 to 5")
        code = _CONNACK_V3_TO_V5[code]
        _expect_end(2, end, "CONNACK")
    if acknowledge and code:
        raise _protocol_error("a refusing CONNACK sets session present")
    return Connack(session_present=bool(acknowledge), reason_code=code, properties=properties)


def _decode_publish(flags: int, body: bytes, v5: bool) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise _malformed("PUBLISH has QoS 3")
    if flags & 0x08 and not qos:
        raise _malformed("a QoS 0 PUBLISH sets the DUP flag")
    end = len(body)
    topic, pos = read_utf8(body, 0, end)
    _check_topic_name(topic, "PUBLISH")
    packet_id = None
    if qos:
        packet_id = _packet_id(body, pos, "PUBLISH")
        pos += 2
    properties = NO_PROPERTIES
    if v5:
        properties, pos = decode_properties(body, pos, end, PacketType.PUBLISH)
    if not topic and properties.topic_alias is None:
        raise _protocol_error("PUBLISH has an empty topic and no topic alias")
    return Publish(
        topic=topic,
        payload=body[pos:],
        qos=qos,
        retain=bool(flags & 0x01),
        dup=bool(flags & 0x08),
        packet_id=packet_id,
        properties=properties,
    )


def _acknowledgement_decoder(
    cls: type[_Ack], packet_type: PacketType, codes: frozenset[int]
) -> Callable[[int, bytes, bool], _Ack]:
    name = packet_type.name

    def decode(flags: int, body: bytes, v5: bool) -> _Ack:
        packet_id = _packet_id(body, 0, name)
        end = len(body)
        if not v5 or end == 2:
            _expect_end(2, end, name)
            return cls(packet_id=packet_id)
        code = _check_code(body[2], codes, name)
        properties, pos = NO_PROPERTIES, 3
        if end > 3:
            properties, pos = decode_properties(body, 3, end, packet_type)
        _expect_end(pos, end, name)
        return cls(packet_id=packet_id, reason_code=code, properties=properties)

    return decode


def _decode_subscribe(flags: int, body: bytes, v5: bool) -> Subscribe:
    end = len(body)
    packet_id = _packet_id(body, 0, "SUBSCRIBE")
    properties, pos = NO_PROPERTIES, 2
    if v5:
        properties, pos = decode_properties(body, 2, end, PacketType.SUBSCRIBE)
        if len(properties.subscription_identifiers) > 1:
            raise _protocol_error("SUBSCRIBE has more than one subscription identifier")
    reserved = 0xC0 if v5 else 0xFC
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_utf8(body, pos, end)
        if pos == end:
            raise _malformed(f"SUBSCRIBE filter {topic_filter!r} has no options byte")
        options = body[pos]
        pos += 1
        if options & reserved:
            raise _malformed(f"SUBSCRIBE sets reserved option bits for {topic_filter!r}")
        if options & 3 == 3:
            raise _malformed(f"SUBSCRIBE asks for QoS 3 on {topic_filter!r}")
        if options >> 4 == 3:
            raise _protocol_error(f"SUBSCRIBE asks for retain handling 3 on {topic_filter!r}")
        if not valid_topic_filter(topic_filter):
            raise MalformedPacket(
                ReasonCode.TOPIC_FILTER_INVALID,
                f"SUBSCRIBE topic filter {topic_filter!r} is invalid",
            )
        no_local = bool(options & 0x04)
        if no_local and topic_filter.startswith("$share/"):
            raise _protocol_error(f"SUBSCRIBE sets no local on shared {topic_filter!r}")
        subscriptions.append(
            Subscription(
                topic_filter=topic_filter,
                qos=options & 3,
                no_local=no_local,
                retain_as_published=bool(options & 0x08),
                retain_handling=options >> 4,
            )
        )
    if not subscriptions:
        raise _protocol_error("SUBSCRIBE has no topic filter")
    return Subscribe(packet_id=packet_id, subscriptions=tuple(subscriptions), properties=properties)


def _decode_suback(flags: int, body: bytes, v5: bool) -> Suback:
    end = len(body)
    packet_id = _packet_id(body, 0, "SUBACK")
    properties, pos = NO_PROPERTIES, 2
    if v5:
        properties, pos = decode_properties(body, 2, end, PacketType.SUBACK)
    codes = tuple(body[pos:])
    if not codes:
        raise _protocol_error("SUBACK has no reason code")
    allowed = _SUBACK_CODES if v5 else _V3_SUBACK_CODES
    for code in codes:
        _check_code(code, allowed, "SUBACK")
    return Suback(packet_id=packet_id, reason_codes=codes, properties=properties)


def _decode_unsubscribe(flags: int, body: bytes, v5: bool) -> Unsubscribe:
    end = len(body)
    packet_id = _packet_id(body, 0, "UNSUBSCRIBE")
    properties, pos = NO_PROPERTIES, 2
    if v5:
        properties, pos = decode_properties(body, 2, end, PacketType.UNSUBSCRIBE)
    filters = []
    while pos < end:
        topic_filter, pos = read_utf8(body, pos, end)
        if not valid_topic_filter(topic_filter):
            raise MalformedPacket(
                ReasonCode.TOPIC_FILTER_INVALID,
                f"UNSUBSCRIBE topic filter {topic_filter!r} is invalid",
            )
        filters.append(topic_filter)
    if not filters:
        raise _protocol_error("UNSUBSCRIBE has no topic filter")
    return Unsubscribe(packet_id=packet_id, topic_filters=tuple(filters), properties=properties)


def _decode_unsuback(flags: int, body: bytes, v5: bool) -> Unsuback:
    end = len(body)
    packet_id = _packet_id(body, 0, "UNSUBACK")
    if not v5:
        _expect_end(2, end, "UNSUBACK")
        return Unsuback(packet_id=packet_id)
    properties, pos = decode_properties(body, 2, end, PacketType.UNSUBACK)
    codes = tuple(body[pos:])
    if not codes:
        raise _protocol_error("UNSUBACK has no reason code")
    for code in codes:
        _check_code(code, _UNSUBACK_CODES, "UNSUBACK")
    return Unsuback(packet_id=packet_id, reason_codes=codes, properties=properties)


def _decode_pingreq(flags: int, body: bytes, v5: bool) -> Pingreq:
    _expect_end(0, len(body), "PINGREQ")
    return Pingreq()


def _decode_pingresp(flags: int, body: bytes, v5: bool) -> Pingresp:
    _expect_end(0, len(body), "PINGRESP")
    return Pingresp()


def _reason_and_properties(
    body: bytes, v5: bool, packet_type: PacketType, codes: frozenset[int]
) -> tuple[int, Properties]:
    """The optional reason code and properties that make up a DISCONNECT or AUTH body."""
    end = len(body)
    if not v5 or end == 0:
        _expect_end(0, end, packet_type.name)
        return ReasonCode.SUCCESS, NO_PROPERTIES
    code = _check_code(body[0], codes, packet_type.name)
    properties, pos = NO_PROPERTIES, 1
    if end > 1:
        properties, pos = decode_properties(body, 1, end, packet_type)
    _expect_end(pos, end, packet_type.name)
    return code, properties


def _decode_disconnect(flags: int, body: bytes, v5: bool) -> Disconnect:
    code, properties = _reason_and_properties(body, v5, PacketType.DISCONNECT, _DISCONNECT_CODES)
    return Disconnect(reason_code=code, properties=properties)


def _decode_auth(flags: int, body: bytes, v5: bool) -> Auth:
    code, properties = _reason_and_properties(body, v5, PacketType.AUTH, _AUTH_CODES)
    return Auth(reason_code=code, properties=properties)


_DECODERS: dict[int, Callable[[int, bytes, bool], Packet]] = {
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _acknowledgement_decoder(Puback, PacketType.PUBACK, _PUBACK_CODES),
    PacketType.PUBREC: _acknowledgement_decoder(Pubrec, PacketType.PUBREC, _PUBACK_CODES),
    PacketType.PUBREL: _acknowledgement_decoder(Pubrel, PacketType.PUBREL, _PUBREL_CODES),
    PacketType.PUBCOMP: _acknowledgement_decoder(Pubcomp, PacketType.PUBCOMP, _PUBREL_CODES),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_pingreq,
    PacketType.PINGRESP: _decode_pingresp,
    PacketType.DISCONNECT: _decode_disconnect,
    PacketType.AUTH: _decode_auth,
}


class PacketReader:
    """Cuts one connection's byte stream into packets.

    Feed it what the socket (or WebSocket) delivers, then take packets until it returns
    ``None``. Until ``protocol_level`` is known the first packet must be CONNECT, which sets it;
    a later CONNECT is a protocol error. A client-side reader sets ``protocol_level`` up front.
    After a :class:`MalformedPacket` the stream is unusable and every call raises it again.

    Args:
        max_packet_size: the largest whole packet (fixed header included) to accept; a larger
            one is refused with reason code 0x95 as soon as its fixed header has arrived.
        protocol_level: 4 or 5 when already known, else ``None``.

    >>> reader = PacketReader(max_packet_size=1024, protocol_level=MQTT_5)
    >>> reader.feed(b"\\xc0")
    >>> reader.next_packet() is None
    True
    >>> reader.feed(b"\\x00")
    >>> reader.next_packet()
    Pingreq()
    """

    __slots__ = ("_buffer", "_error", "max_packet_size", "protocol_level")

    def __init__(self, *, max_packet_size: int, protocol_level: int | None = None) -> None:
        self.max_packet_size = max_packet_size
        self.protocol_level = protocol_level
        self._buffer = bytearray()
        self._error: MalformedPacket | None = None

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buffer += data

    def next_packet(self) -> Packet | None:
        """The next complete packet, or ``None`` until more bytes arrive.

        Raises:
            MalformedPacket: the next packet breaks the spec; its ``reason_code`` is the one
                to DISCONNECT with (0x95 when it is larger than ``max_packet_size``).
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_packet()
        except MalformedPacket as error:
            self._error = error
            raise

    def _next_packet(self) -> Packet | None:
        buffer = self._buffer
        available = len(buffer)
        if available < 2:
            return None
        remaining = 0
        index = 1
        while True:
            if index == available:
                return None
            byte = buffer[index]
            remaining |= (byte & 0x7F) << (7 * (index - 1))
            index += 1
            if byte < 0x80:
                if byte == 0 and index > 2:
                    raise _malformed("the remaining length is not in its shortest form")
                break
            if index == 5:
                raise _malformed("the remaining length is longer than 4 bytes")
        first = buffer[0]
        size = index + remaining
        self._check_fixed_header(first >> 4, first & 0x0F, size)
        if available < size:
            return None
        body = bytes(buffer[index:size])
        del buffer[:size]
        if first >> 4 == PacketType.CONNECT:
            connect = _decode_connect(body)
            self.protocol_level = connect.protocol_level
            return connect
        return _DECODERS[first >> 4](first & 0x0F, body, self.protocol_level == MQTT_5)

    def _check_fixed_header(self, packet_type: int, flags: int, size: int) -> None:
        if packet_type == 0:
            raise _malformed("packet type 0 is reserved")
        if packet_type == PacketType.AUTH and self.protocol_level == MQTT_3_1_1:
            raise _malformed("packet type 15 (AUTH) is reserved in MQTT 3.1.1")
        if packet_type != PacketType.PUBLISH and flags != _FLAGS[packet_type]:
            name = PacketType(packet_type).name
            expected = _FLAGS[packet_type]
            raise _malformed(
                f"{name} has fixed header flags {flags:04b}; they must be {expected:04b}"
            )
        if self.protocol_level is None:
            if packet_type != PacketType.CONNECT:
                name = PacketType(packet_type).name
                raise _protocol_error(f"the first packet is {name}; it must be CONNECT")
        elif packet_type == PacketType.CONNECT:
            raise _protocol_error("a second CONNECT arrived on the same connection")
        if size > self.max_packet_size:
            raise MalformedPacket(
                ReasonCode.PACKET_TOO_LARGE,
                f"a {PacketType(packet_type).name} of {size} bytes exceeds the maximum packet "
                f"size of {self.max_packet_size}",
            )


# --- encoding ------------------------------------------------------------------------------


def _frame(first: int, body: bytes | bytearray) -> bytes:
    return bytes((first,)) + encode_vbi(len(body)) + body


def _encode_connect(packet: Connect, v5: bool) -> bytes:
    will = packet.will
    flags = packet.clean_start << 1
    if will is not None:
        flags |= 0x04 | will.qos << 3 | will.retain << 5
    if packet.password is not None:
        if packet.username is None and not v5:
            raise ValueError("an MQTT 3.1.1 CONNECT cannot carry a password without a username")
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    body = bytearray(b"\x00\x04MQTT")
    body += bytes((packet.protocol_level, flags))
    body += packet.keep_alive.to_bytes(2, "big")
    if v5:
        body += encode_properties(packet.properties, PacketType.CONNECT)
    body += encode_utf8(packet.client_id)
    if will is not None:
        if v5:
            body += encode_properties(will.properties, WILL)
        body += encode_utf8(will.topic)
        body += encode_binary(will.payload)
    if packet.username is not None:
        body += encode_utf8(packet.username)
    if packet.password is not None:
        body += encode_binary(packet.password)
    return _frame(0x10, body)


def _encode_connack(packet: Connack, v5: bool) -> bytes:
    if v5:
        head = bytes((packet.session_present, packet.reason_code))
        return _frame(0x20, head + encode_properties(packet.properties, PacketType.CONNACK))
    code = _CONNACK_V5_TO_V3.get(packet.reason_code, ConnackReturnCode.SERVER_UNAVAILABLE)
    return bytes((0x20, 2, packet.session_present, code))


def _encode_publish(packet: Publish, v5: bool) -> bytes:
    qos = packet.qos
    head = encode_utf8(packet.topic)
    if qos:
        if qos not in (1, 2) or not packet.packet_id:
            raise ValueError(f"a QoS {qos} PUBLISH needs QoS 1 or 2 and a packet id")
        head += packet.packet_id.to_bytes(2, "big")
    if v5:
        head += encode_properties(packet.properties, PacketType.PUBLISH)
    first = 0x30 | packet.dup << 3 | qos << 1 | packet.retain
    length = encode_vbi(len(head) + len(packet.payload))
    return b"".join((bytes((first,)), length, head, packet.payload))


def _acknowledgement_encoder(
    first: int, packet_type: PacketType
) -> Callable[[Acknowledgement, bool], bytes]:
    def encode(packet: Acknowledgement, v5: bool) -> bytes:
        packet_id = packet.packet_id.to_bytes(2, "big")
        if not v5 or (packet.reason_code == 0 and packet.properties is NO_PROPERTIES):
            return bytes((first, 2)) + packet_id
        properties = encode_properties(packet.properties, packet_type)
        if properties == b"\x00":
            return bytes((first, 3)) + packet_id + bytes((packet.reason_code,))
        return _frame(first, packet_id + bytes((packet.reason_code,)) + properties)

    return encode


def _encode_subscribe(packet: Subscribe, v5: bool) -> bytes:
    body = bytearray(packet.packet_id.to_bytes(2, "big"))
    if v5:
        body += encode_properties(packet.properties, PacketType.SUBSCRIBE)
    for subscription in packet.subscriptions:
        body += encode_utf8(subscription.topic_filter)
        options = subscription.qos
        if v5:
            options |= subscription.no_local << 2 | subscription.retain_as_published << 3
            options |= subscription.retain_handling << 4
        body.append(options)
    return _frame(0x82, body)


def _encode_suback(packet: Suback, v5: bool) -> bytes:
    body = packet.packet_id.to_bytes(2, "big")
    if v5:
        body += encode_properties(packet.properties, PacketType.SUBACK)
        return _frame(0x90, body + bytes(packet.reason_codes))
    return _frame(0x90, body + bytes(min(code, 0x80) for code in packet.reason_codes))


def _encode_unsubscribe(packet: Unsubscribe, v5: bool) -> bytes:
    body = bytearray(packet.packet_id.to_bytes(2, "big"))
    if v5:
        body += encode_properties(packet.properties, PacketType.UNSUBSCRIBE)
    for topic_filter in packet.topic_filters:
        body += encode_utf8(topic_filter)
    return _frame(0xA2, body)


def _encode_unsuback(packet: Unsuback, v5: bool) -> bytes:
    body = packet.packet_id.to_bytes(2, "big")
    if v5:
        body += encode_properties(packet.properties, PacketType.UNSUBACK)
        body += bytes(packet.reason_codes)
    return _frame(0xB0, body)


def _encode_disconnect(packet: Disconnect, v5: bool) -> bytes:
    if not v5 or (packet.reason_code == 0 and packet.properties is NO_PROPERTIES):
        return b"\xe0\x00"
    properties = encode_properties(packet.properties, PacketType.DISCONNECT)
    if properties == b"\x00":
        return bytes((0xE0, 1, packet.reason_code))
    return _frame(0xE0, bytes((packet.reason_code,)) + properties)


def _encode_auth(packet: Auth, v5: bool) -> bytes:
    if not v5:
        raise ValueError("AUTH exists only in MQTT 5")
    if packet.reason_code == 0 and packet.properties is NO_PROPERTIES:
        return b"\xf0\x00"
    properties = encode_properties(packet.properties, PacketType.AUTH)
    return _frame(0xF0, bytes((packet.reason_code,)) + properties)


_ENCODERS: dict[type, Callable[[Any, bool], bytes]] = {
    Connect: _encode_connect,
    Connack: _encode_connack,
    Publish: _encode_publish,
    Puback: _acknowledgement_encoder(0x40, PacketType.PUBACK),
    Pubrec: _acknowledgement_encoder(0x50, PacketType.PUBREC),
    Pubrel: _acknowledgement_encoder(0x62, PacketType.PUBREL),
    Pubcomp: _acknowledgement_encoder(0x70, PacketType.PUBCOMP),
    Subscribe: _encode_subscribe,
    Suback: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    Unsuback: _encode_unsuback,
    Pingreq: lambda packet, v5: b"\xc0\x00",
    Pingresp: lambda packet, v5: b"\xd0\x00",
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Encode ``packet`` for a connection at ``protocol_level`` (4 = 3.1.1, 5 = 5.0).

    At level 4 MQTT 5 fields are left out: properties, the reason codes of PUBACK, PUBREC,
    PUBREL, PUBCOMP, UNSUBACK and DISCONNECT; SUBACK failures become 0x80 and CONNACK codes
    become the nearest 3.1.1 return code. MQTT 5 short forms are used where they apply (an
    acknowledgement with reason 0 and no properties is 4 bytes).

    Raises:
        ValueError: the packet cannot be said at this level (AUTH in 3.1.1), carries a property
            its type may not, or a value out of range; a CONNECT whose level differs.
    """
    if protocol_level not in (MQTT_3_1_1, MQTT_5):
        raise ValueError(f"protocol level {protocol_level} is neither 4 (3.1.1) nor 5 (5.0)")
    if isinstance(packet, Connect) and packet.protocol_level != protocol_level:
        raise ValueError(
            f"a level {packet.protocol_level} CONNECT on a level {protocol_level} link"
        )
    return _ENCODERS[type(packet)](packet, protocol_level == MQTT_5)
