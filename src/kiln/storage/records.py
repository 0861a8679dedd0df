"""The stored form of a record: a small header, then the record as MessagePack.

Layout: 8 bytes of version (big-endian), 1 byte of flags, then the MessagePack
body. Dates are MessagePack timestamps, bytes are ``bin``; integers beyond
64 bits (``BigInt``) are an extension type holding their signed big-endian bytes,
so no value loses precision.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from kiln.types import Record, Version

HEADER = struct.Struct(">QB")
"""Version (unsigned 64-bit) and flags (one byte) in front of every stored record."""

_BIG_INT_EXT = 1
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

_encoder = msgspec.msgpack.Encoder()


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == _BIG_INT_EXT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown MessagePack extension type {code} in a stored record")


_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def _big_int_ext(value: int) -> msgspec.msgpack.Ext:
    size = (value.bit_length() + 8) // 8
    return msgspec.msgpack.Ext(_BIG_INT_EXT, value.to_bytes(size, "big", signed=True))


def _with_big_ints_wrapped(value: Any) -> Any:
    """Return ``value`` with every integer beyond 64 bits replaced by its extension form."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _big_int_ext(value) if not _INT64_MIN <= value <= _UINT64_MAX else value
    if isinstance(value, dict):
        return {key: _with_big_ints_wrapped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_with_big_ints_wrapped(item) for item in value]
    return value


def pack_value(value: Any) -> bytes:
    """Encode any record-like value as MessagePack, big integers included."""
    try:
        return _encoder.encode(value)
    except OverflowError:
        return _encoder.encode(_with_big_ints_wrapped(value))


def unpack_value(data: bytes | memoryview) -> Any:
    """Decode what :func:`pack_value` wrote."""
    return _decoder.decode(data)


def encode_record(version: Version, record: Record, flags: int = 0) -> bytes:
    """The stored bytes of ``record`` written at ``version``."""
    return HEADER.pack(version, flags) + pack_value(record)


def decode_record(data: bytes | memoryview) -> tuple[Version, Record]:
    """The version and the record of stored bytes."""
    version, _flags = HEADER.unpack_from(data)
    return version, decode_record_only(data)


def decode_record_only(data: bytes | memoryview) -> Record:
    """The record of stored bytes, without its version (the hot path of a query)."""
    return _decoder.decode(memoryview(data)[HEADER.size :])
