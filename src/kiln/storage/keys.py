"""Order-preserving binary encoding of key values, for LMDB.

LMDB compares keys as raw bytes (``memcmp``, shorter-is-smaller on a common
prefix). :func:`encode_key` maps ``None``, ``bool``, ``int``, ``float`` and
``str`` to bytes whose byte order is the value order, so range scans, primary
keys and secondary-index keys sort the way the values do. The order across
types is fixed::

    None < False < True < -inf < negative numbers < 0 < positive numbers < +inf < strings

Numbers compare by value whatever their Python type: ``1`` and ``1.0`` encode
to the same bytes, ``-0.0`` encodes like ``0``, and ``2**60 + 1`` sorts between
``float(2**60)`` and ``2**60 + 2``. Integers are exact up to a magnitude of 255
bytes (``abs(n) < 2**2040``); larger ones raise :class:`ValueError`. NaN has no
place in the order and raises :class:`ValueError`. Booleans are not numbers:
``True`` and ``1`` are different keys.

Layout (first byte is a tag; tags leave gaps for future types)::

    None            10
    False / True    20 / 21
    -inf            30
    negative        31  ~body  FF
    0 (and -0.0)    32
    positive        33  body
    +inf            34
    str             40  UTF-8 bytes (no terminator)

A positive number's *body* is a one-byte length ``L`` of its integer part's
big-endian bytes (``0`` below 1, no leading zero bytes), those ``L`` bytes, then
the fraction's bits (a float is a dyadic rational, so they are finite) packed
seven to a byte, most significant first, each byte with its high bit set, the
last byte never ``0x80``. A longer integer part means a larger number; a
fraction byte (``>= 0x80``) sorts after the end of a key, so "more fraction"
sorts after "no more fraction". A negative number stores the bitwise complement
of its magnitude's body followed by ``0xFF``: complement reverses the order, and
the terminator sorts after every complemented fraction byte (``<= 0x7F``), so a
magnitude that is a prefix of another still sorts after it. An encoded number
takes at most 258 bytes, so numbers never reach :data:`MAX_KEY_SIZE`.

Strings carry no terminator: ``encode_key("abc")`` is a byte prefix of
``encode_key("abcd")`` (and of every string key starting with ``"abc"``), so a
prefix scan is a range scan from ``encode_key(prefix)``. UTF-8 byte order is
code point order, which is Python's ``str`` order.

For range scans by type, :data:`NUMBERS_START` <= every number key <
:data:`NUMBERS_END` and :data:`STRINGS_START` <= every string key <
:data:`STRINGS_END`. The largest numeric key is found by seeking to
:data:`NUMBERS_END` and stepping back once.
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_INT_BYTES",
    "MAX_KEY_SIZE",
    "NUMBERS_END",
    "NUMBERS_START",
    "STRINGS_END",
    "STRINGS_START",
    "decode_key",
    "encode_key",
]

MAX_KEY_SIZE = 511
"""LMDB's largest key, in bytes; :func:`encode_key` refuses (or truncates) longer ones."""

MAX_INT_BYTES = 255
"""The largest integer magnitude a key holds, in big-endian bytes (``abs(n) < 2**2040``)."""

_TAG_NONE = 0x10
_TAG_FALSE = 0x20
_TAG_TRUE = 0x21
_TAG_NEG_INF = 0x30
_TAG_NEG = 0x31
_TAG_ZERO = 0x32
_TAG_POS = 0x33
_TAG_POS_INF = 0x34
_TAG_STR = 0x40

_NONE = bytes((_TAG_NONE,))
_FALSE = bytes((_TAG_FALSE,))
_TRUE = bytes((_TAG_TRUE,))
_NEG_INF = bytes((_TAG_NEG_INF,))
_ZERO = bytes((_TAG_ZERO,))
_POS_INF = bytes((_TAG_POS_INF,))
_STR = bytes((_TAG_STR,))
_POS = bytes((_TAG_POS,))
_NEG = bytes((_TAG_NEG,))

NUMBERS_START = _NEG_INF
"""The smallest number key (``encode_key(-math.inf)``); every number key is ``>=`` it."""

NUMBERS_END = bytes((_TAG_POS_INF + 1,))
"""Just past the number keys: every number key is ``<`` it, every string key ``>`` it."""

STRINGS_START = _STR
"""The smallest string key (``encode_key("")``); every string key is ``>=`` it."""

STRINGS_END = bytes((_TAG_STR + 1,))
"""Just past the string keys: every string key is ``<`` it."""

_INVERT = bytes(range(255, -1, -1))

# A positive integer of ``size`` bytes encodes as ``(_POS_BASE[size] | n).to_bytes(size + 2)``:
# the tag and the length byte sit above the magnitude. A negative one of magnitude ``m``
# encodes as ``(_NEG_BASE[size] - (m << 8)).to_bytes(size + 3)``: tag, complemented length,
# complemented magnitude (``2**(8*size) - 1 - m``) and the 0xFF terminator.
_POS_BASE = tuple(
    (_TAG_POS << (8 * (size + 1))) | (size << (8 * size)) for size in range(MAX_INT_BYTES + 1)
)
_NEG_BASE = tuple(
    (_TAG_NEG << (8 * (size + 2)))
    | ((255 - size) << (8 * (size + 1)))
    | (((1 << (8 * size)) - 1) << 8)
    | 0xFF
    for size in range(MAX_INT_BYTES + 1)
)

# The longest fraction a float has: 2**-1074 needs 1074 bits, 154 groups of seven.
_MAX_FRACTION_BYTES = (1074 + 6) // 7


def encode_key(value: object, *, truncate: bool = False) -> bytes:
    """Encode ``value`` (``None``, ``bool``, ``int``, ``float`` or ``str``) as an ordered key.

    Raises :class:`ValueError` for NaN, for an integer of more than
    :data:`MAX_INT_BYTES` bytes, for a string that is not valid Unicode (a lone
    surrogate), and for a key longer than :data:`MAX_KEY_SIZE` bytes unless
    ``truncate`` is true. With ``truncate=True`` a longer key is cut to
    :data:`MAX_KEY_SIZE` bytes (for index keys): it still sorts correctly against
    every key that differs from it within the first 511 bytes, compares equal to
    the keys that share those bytes, and may no longer decode. Any other type
    raises :class:`TypeError`.
    """
    cls = type(value)
    if cls is int:
        if value > 0:
            size = (value.bit_length() + 7) >> 3
            if size <= MAX_INT_BYTES:
                return (_POS_BASE[size] | value).to_bytes(size + 2)
        elif value < 0:
            magnitude = -value
            size = (magnitude.bit_length() + 7) >> 3
            if size <= MAX_INT_BYTES:
                return (_NEG_BASE[size] - (magnitude << 8)).to_bytes(size + 3)
        else:
            return _ZERO
        return _encode_int(value)  # raises: too large
    if cls is str:
        try:
            data = _STR + value.encode()
        except UnicodeEncodeError as exc:
            raise _bad_string(exc) from None
        if len(data) > MAX_KEY_SIZE:
            return _too_long(data, truncate)
        return data
    if value is None:
        return _NONE
    if cls is bool:
        return _TRUE if value else _FALSE
    if cls is float:
        return _encode_float(value)
    # Subclasses (IntEnum, StrEnum, ...) encode like their base type.
    if isinstance(value, int):
        return _encode_int(int(value))
    if isinstance(value, float):
        return _encode_float(float(value))
    if isinstance(value, str):
        try:
            data = _STR + str.encode(value)
        except UnicodeEncodeError as exc:
            raise _bad_string(exc) from None
        if len(data) > MAX_KEY_SIZE:
            return _too_long(data, truncate)
        return data
    raise TypeError(
        f"cannot encode a key of type {cls.__name__!r}: "
        "supported types are None, bool, int, float and str"
    )


def decode_key(data: bytes | memoryview) -> bool | int | float | str | None:
    """Decode a key made by :func:`encode_key`; integral numbers come back as ``int``.

    Raises :class:`ValueError` when ``data`` is not a well-formed key (including
    a string key cut by ``truncate=True`` in the middle of a character).
    """
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise ValueError("malformed key: empty")
    tag = data[0]
    if tag == _TAG_POS:
        # Fast path: a positive integer.
        if len(data) >= 3 and len(data) == data[1] + 2 and data[2]:
            return int.from_bytes(data[2:])
        return _decode_body(data, data[1:])
    if tag == _TAG_STR:
        try:
            return data[1:].decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"malformed key: string is not valid UTF-8 ({exc.reason})") from None
    if tag == _TAG_NEG:
        if len(data) < 3 or data[-1] != 0xFF:
            raise ValueError(f"malformed key: negative number without terminator: {data.hex()}")
        return -_decode_body(data, data[1:-1].translate(_INVERT))
    if len(data) == 1:
        if tag == _TAG_ZERO:
            return 0
        if tag == _TAG_NONE:
            return None
        if tag == _TAG_FALSE:
            return False
        if tag == _TAG_TRUE:
            return True
        if tag == _TAG_NEG_INF:
            return -math.inf
        if tag == _TAG_POS_INF:
            return math.inf
    raise ValueError(f"malformed key: {data[:16].hex()}{'...' if len(data) > 16 else ''}")


def _bad_string(exc: UnicodeEncodeError) -> ValueError:
    """The error for a string that has no UTF-8 form (a lone surrogate)."""
    return ValueError(f"cannot encode a string key: {exc.reason} at index {exc.start}")


def _too_long(data: bytes, truncate: bool) -> bytes:
    """Cut ``data`` to :data:`MAX_KEY_SIZE` when ``truncate``, else raise."""
    if truncate:
        return data[:MAX_KEY_SIZE]
    raise ValueError(
        f"key is too long: its encoding is {len(data)} bytes, the limit is {MAX_KEY_SIZE}"
    )


def _encode_int(value: int) -> bytes:
    """The key of any ``int`` within the size limit."""
    if value == 0:
        return _ZERO
    magnitude = -value if value < 0 else value
    size = (magnitude.bit_length() + 7) >> 3
    if size > MAX_INT_BYTES:
        raise ValueError(
            f"integer key is too large: its magnitude takes {size} bytes, "
            f"the limit is {MAX_INT_BYTES} (abs(n) < 2**{8 * MAX_INT_BYTES})"
        )
    if value > 0:
        return (_POS_BASE[size] | magnitude).to_bytes(size + 2)
    return (_NEG_BASE[size] - (magnitude << 8)).to_bytes(size + 3)


def _encode_float(value: float) -> bytes:
    """The key of a ``float``, exact by value (an integral float encodes like the ``int``)."""
    if value != value:
        raise ValueError("NaN cannot be a key: it has no place in the key order")
    if value == 0.0:
        return _ZERO
    if value == math.inf:
        return _POS_INF
    if value == -math.inf:
        return _NEG_INF
    if value.is_integer():
        return _encode_int(int(value))
    numerator, denominator = value.as_integer_ratio()
    negative = numerator < 0
    if negative:
        numerator = -numerator
    bits = denominator.bit_length() - 1  # the fraction's length in bits (numerator is odd)
    whole = numerator >> bits
    groups = (bits + 6) // 7
    fraction = (numerator & (denominator - 1)) << (7 * groups - bits)
    size = (whole.bit_length() + 7) >> 3
    body = bytearray((size,))
    body += whole.to_bytes(size)
    body += bytes([0x80 | ((fraction >> shift) & 0x7F) for shift in range(7 * groups - 7, -1, -7)])
    if negative:
        return _NEG + bytes(body).translate(_INVERT) + b"\xff"
    return _POS + bytes(body)


def _decode_body(data: bytes, body: bytes) -> int | float:
    """The magnitude a positive-number body encodes; ``data`` is the whole key, for errors."""
    if not body:
        raise ValueError(f"malformed key: number without body: {data.hex()}")
    size = body[0]
    end = 1 + size
    if len(body) < end or (size and body[1] == 0):
        raise ValueError(f"malformed key: bad integer part in number: {data.hex()}")
    whole = int.from_bytes(body[1:end])
    tail = body[end:]
    if not tail:
        if not whole:
            raise ValueError(f"malformed key: zero encoded as a positive number: {data.hex()}")
        return whole
    # Every float from 2**52 up is integral, so a fraction needs a smaller integer part.
    if whole >> 52 or len(tail) > _MAX_FRACTION_BYTES or tail[-1] == 0x80 or min(tail) < 0x80:
        raise ValueError(f"malformed key: bad fraction in number: {data.hex()}")
    fraction = 0
    for byte in tail:
        fraction = (fraction << 7) | (byte & 0x7F)
    bits = 7 * len(tail)
    trailing = (fraction & -fraction).bit_length() - 1
    numerator = ((whole << bits) | fraction) >> trailing
    bits -= trailing
    # The division cannot overflow and rounds correctly; the round trip tells if it was exact.
    value = numerator / (1 << bits)
    if value.as_integer_ratio() != (numerator, 1 << bits):
        raise ValueError(f"malformed key: number is not exactly a float: {data.hex()}")
    return value
