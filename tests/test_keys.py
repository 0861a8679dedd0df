"""Tests for the order-preserving key codec (``kiln.storage.keys``)."""

from __future__ import annotations

import enum
import math
import sys
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kiln.storage.keys import (
    MAX_INT_BYTES,
    MAX_KEY_SIZE,
    NUMBERS_END,
    NUMBERS_START,
    STRINGS_END,
    STRINGS_START,
    decode_key,
    encode_key,
)

INT_LIMIT = 2 ** (8 * MAX_INT_BYTES)  # the first magnitude that is too large

# --- the reference order -----------------------------------------------------------------


def sort_key(value: object) -> tuple:
    """The documented order as a tuple: family, then the value (numbers exactly)."""
    if value is None:
        return (0,)
    if value is False:
        return (1,)
    if value is True:
        return (2,)
    if isinstance(value, int | float):
        if value == -math.inf:
            return (3, -1)
        if value == math.inf:
            return (3, 1)
        return (3, 0, Fraction(value))
    assert isinstance(value, str)
    return (4, value)


def cmp(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b``."""
    return (a > b) - (a < b)


def cmp_value(a: object, b: object) -> int:
    """Compare two key values by the documented order."""
    return cmp(sort_key(a), sort_key(b))


# --- strategies --------------------------------------------------------------------------


def _near_integers() -> st.SearchStrategy[int | float]:
    """Numbers around an integer, as int and float: where int/float mix-ups would show."""

    def around(n: int) -> st.SearchStrategy[int | float]:
        f = float(n)
        return st.sampled_from(
            [n, n - 1, n + 1, -n, f, -f, math.nextafter(f, math.inf), math.nextafter(f, -math.inf)]
        )

    return st.one_of(
        st.integers(-(2**70), 2**70),
        st.integers(0, 1023).map(lambda e: 2**e),
        st.integers(0, 70).flatmap(lambda e: st.integers(-8, 8).map(lambda d: 2**e + d)),
    ).flatmap(around)


def _dyadics() -> st.SearchStrategy[float]:
    """Floats with short fractions (n / 2**k), whose encodings share long prefixes."""
    return st.builds(
        lambda n, k: n / 2**k, st.integers(-(2**20), 2**20), st.integers(0, 30)
    ).filter(math.isfinite)


numbers = st.one_of(
    st.integers(),
    st.integers(-(INT_LIMIT - 1), INT_LIMIT - 1),
    st.integers(-300, 300),
    st.floats(allow_nan=False),
    st.floats(allow_nan=False, allow_subnormal=True, min_value=-1e-300, max_value=1e-300),
    st.sampled_from([0, 0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324, sys.float_info.max]),
    _near_integers(),
    _dyadics(),
).filter(lambda x: isinstance(x, float) or abs(x) < INT_LIMIT)

texts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="ab\x00\x7f\x80\uffff\U0001f600", max_size=6),
)

values = st.one_of(st.none(), st.booleans(), numbers, texts)


# --- properties --------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(values, values)
@example(2**60 + 1, float(2**60))
@example(2**60 + 1, 2**60 + 2)
@example(0.5, 1)
@example(1, 1.0000000000000002)
@example(1.0000000000000002, 2**53 + 1)
@example(-0.0, 0)
@example(True, 1)
@example(False, 0)
@example(-1.5, -1)
@example(-1, -1.5)
@example(-(2**16), -255)
@example(5e-324, 1e-323)
@example(-5e-324, -1e-323)
@example("", math.inf)
@example(None, False)
def test_byte_order_is_value_order(a: object, b: object) -> None:
    assert cmp(encode_key(a), encode_key(b)) == cmp_value(a, b)


@settings(max_examples=1000, deadline=None)
@given(values)
def test_round_trip(value: object) -> None:
    key = encode_key(value)
    back = decode_key(key)
    assert sort_key(back) == sort_key(value)
    assert decode_key(memoryview(key)) == back
    if value is None or isinstance(value, bool):
        assert back is value
    elif isinstance(value, str):
        assert type(back) is str
    elif isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        assert type(back) is int
    else:
        assert type(back) is float
    # Encodings are canonical: re-encoding the decoded value gives the same bytes.
    assert encode_key(back) == key


@settings(max_examples=500, deadline=None)
@given(values)
def test_family_bounds(value: object) -> None:
    key = encode_key(value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    assert (NUMBERS_START <= key < NUMBERS_END) == is_number
    assert (STRINGS_START <= key < STRINGS_END) == isinstance(value, str)
    assert len(key) <= MAX_KEY_SIZE


@settings(max_examples=500, deadline=None)
@given(texts, texts)
def test_string_prefix(prefix: str, rest: str) -> None:
    assert encode_key(prefix + rest).startswith(encode_key(prefix))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), texts, texts)
def test_truncated_keys_keep_their_order(common: str, x: str, y: str) -> None:
    a, b = common + x, common + y
    ka, kb = encode_key(a, truncate=True), encode_key(b, truncate=True)
    assert len(ka) <= MAX_KEY_SIZE and len(kb) <= MAX_KEY_SIZE
    full_a, full_b = STRINGS_START + a.encode(), STRINGS_START + b.encode()
    assert ka == full_a[:MAX_KEY_SIZE] and kb == full_b[:MAX_KEY_SIZE]
    if full_a[:MAX_KEY_SIZE] != full_b[:MAX_KEY_SIZE]:
        assert cmp(ka, kb) == cmp(a, b)
    else:
        assert ka == kb


# --- explicit examples -------------------------------------------------------------------


def test_examples_from_the_order() -> None:
    ordered = [
        None,
        False,
        True,
        -math.inf,
        -(2**100),
        -1.5,
        -1,
        -5e-324,
        0,
        5e-324,
        0.5,
        1,
        1.0000000000000002,
        float(2**53),
        2**53 + 1,
        float(2**60),
        2**60 + 1,
        2**60 + 2,
        math.inf,
        "",
        "\x00",
        "a",
        "ab",
        "b",
        "\U0001f600",
    ]
    keys = [encode_key(v) for v in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_numbers_compare_by_value() -> None:
    assert encode_key(1) == encode_key(1.0)
    assert encode_key(-7) == encode_key(-7.0)
    assert encode_key(-0.0) == encode_key(0) == encode_key(0.0)
    assert encode_key(2**60) == encode_key(float(2**60))
    assert encode_key(True) != encode_key(1)
    assert encode_key(False) != encode_key(0)
    assert decode_key(encode_key(1.0)) == 1 and type(decode_key(encode_key(1.0))) is int
    assert type(decode_key(encode_key(-0.0))) is int
    assert decode_key(encode_key(0.1)) == 0.1
    assert decode_key(encode_key(-math.inf)) == -math.inf


def test_constants() -> None:
    assert encode_key(-math.inf) == NUMBERS_START
    assert encode_key("") == STRINGS_START
    assert encode_key(True) < NUMBERS_START
    assert encode_key(math.inf) < NUMBERS_END <= STRINGS_START < STRINGS_END
    assert encode_key("\U0010ffff" * 100) < STRINGS_END


def test_largest_number_key_by_stepping_back() -> None:
    keys = sorted(encode_key(v) for v in [None, True, -3, 7, 12.5, 1000, "", "zz"])
    below_end = [k for k in keys if k < NUMBERS_END]
    assert decode_key(below_end[-1]) == 1000


def test_subclasses_encode_like_their_base() -> None:
    class Color(enum.IntEnum):
        RED = 3

    class Name(enum.StrEnum):
        ADA = "ada"

    assert encode_key(Color.RED) == encode_key(3)
    assert encode_key(Name.ADA) == encode_key("ada")


# --- limits and errors -------------------------------------------------------------------


def test_integer_limit() -> None:
    for n in (INT_LIMIT - 1, -(INT_LIMIT - 1)):
        key = encode_key(n)
        assert decode_key(key) == n
        assert len(key) <= MAX_KEY_SIZE
    for n in (INT_LIMIT, -INT_LIMIT, 2**5000):
        with pytest.raises(ValueError, match=r"integer key is too large.*limit is 255"):
            encode_key(n)


def test_size_limit_and_truncate() -> None:
    fits = "x" * (MAX_KEY_SIZE - 1)
    assert len(encode_key(fits)) == MAX_KEY_SIZE
    too_long = fits + "y"
    with pytest.raises(ValueError, match=r"too long.*512 bytes.*limit is 511"):
        encode_key(too_long)
    cut = encode_key(too_long + "zzz", truncate=True)
    assert cut == encode_key(fits)
    assert encode_key("short", truncate=True) == encode_key("short")
    assert encode_key(2**2000, truncate=True) == encode_key(2**2000)
    # A multi-byte character cut in half: still a key, but no longer decodable.
    cut = encode_key("x" + "é" * 300, truncate=True)
    assert len(cut) == MAX_KEY_SIZE
    with pytest.raises(ValueError, match="UTF-8"):
        decode_key(cut)


def test_nan_raises() -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode_key(math.nan)
    with pytest.raises(ValueError, match="NaN"):
        encode_key(-math.nan)


@pytest.mark.parametrize("value", [b"abc", [1], (1,), 1j, Fraction(1, 2), object()])
def test_unsupported_types_raise(value: object) -> None:
    with pytest.raises(TypeError, match=type(value).__name__) as info:
        encode_key(value)
    assert "None, bool, int, float and str" in str(info.value)


def test_lone_surrogate_raises() -> None:
    with pytest.raises(ValueError, match="string key"):
        encode_key("a\ud800")


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"\xff",
        b"\x10\x00",  # None with a tail
        b"\x21\x21",  # True with a tail
        b"\x32\x00",  # zero with a tail
        b"\x33",  # positive without a body
        b"\x33\x00",  # positive zero
        b"\x33\x02\x01",  # integer part shorter than its length
        b"\x33\x02\x00\x01",  # leading zero byte
        b"\x33\x01\x01\x80",  # fraction ending in a zero group
        b"\x33\x01\x01\x40",  # fraction byte without its high bit
        b"\x33\x00" + b"\xff" * 200,  # fraction longer than any float's
        b"\x33\x08" + b"\x01" * 8 + b"\xc0",  # fraction on an integer part no float has
        b"\x33\x00\xff\xff\xff\xff\xff\xff\xff\xff\xc0",  # 57 fraction bits: not a float
        b"\x31\xfe\xfe",  # negative without terminator
        b"\x31\xff",  # negative without body
        b"\x31\xff\xff",  # negative zero
        b"\x40\xff",  # invalid UTF-8
        b"\x40\xc3",  # cut UTF-8
    ],
)
def test_decode_garbage_raises(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="malformed key"):
        decode_key(garbage)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_decode_any_bytes_is_value_or_value_error(data: bytes) -> None:
    try:
        value = decode_key(data)
    except ValueError:
        return
    # Whatever decodes is canonical: it re-encodes to the same bytes.
    assert encode_key(value) == data
