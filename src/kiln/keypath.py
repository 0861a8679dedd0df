"""Primary keys as URL paths and MQTT topic levels.

Integer keys are written in decimal; string keys are percent-encoded (``/``,
``%``, ``?``, ``#``, spaces and non-ASCII included), so a generated URL always
names exactly its key. The HTTP
server hands kiln paths already percent-decoded (``a%2Fb`` arrives as ``a/b``),
so everything after ``/Table/`` is the key, slashes included. An MQTT topic
names a key as it is (``Dog/a/b`` is the key ``a/b``): topics are not encoded.

>>> key_to_segment("a/b%c")
'a%2Fb%25c'
>>> parse_key("a/b%c", "String")
'a/b%c'
>>> parse_key("42", "Int")
42
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote

from kiln.storage.keys import encode_key
from kiln.types import Key

_INTEGER_RANGES = {"Int": 2**31, "Long": 2**63, "BigInt": None}
_INTEGER = re.compile(r"-?[0-9]+")


def key_to_segment(key: Key) -> str:
    """The path segment that names ``key``."""
    if isinstance(key, str):
        return quote(key, safe="")
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)


REPLACEMENT = "\ufffd"
"""What the HTTP server decodes a %-escape that is not UTF-8 to, so no key may hold it:
a URL holding it cannot be told from a broken one."""


def unstorable(key: Key) -> str | None:
    """Why the key store cannot hold ``key`` (too long, too large, a lone surrogate), or None."""
    if isinstance(key, int) and -(2**63) <= key < 2**64:
        return None  # within 64 bits: always storable
    if isinstance(key, float) and key == key:
        return None  # any float but NaN fits
    try:
        encode_key(key)
    except ValueError as error:
        return f"the key store cannot hold it: {error}"
    return None


def shown_key(key: object) -> str:
    """``key`` for a message: its repr, cut short when long (a huge integer by its size)."""
    if isinstance(key, int) and key.bit_length() > 200:
        return f"a whole number of about {int(key.bit_length() * 0.30103)} digits"
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def key_problem(key: Key) -> str | None:
    """Why ``key`` cannot be a new record's key, or None: no URL could name it (a string
    key that is empty, ends with ``/``, a subscription's id prefix, or holds
    :data:`REPLACEMENT`), or the key store cannot hold it (too long, too large).

    >>> key_problem("a/b"), key_problem("a/")
    (None, "no URL could name it: it ends with '/'")
    """
    if isinstance(key, str):
        if not key:
            return "no URL could name it: it is empty"
        if key.endswith("/"):
            return "no URL could name it: it ends with '/'"
        if REPLACEMENT in key:
            return "no URL could name it: it holds U+FFFD, the replacement character"
    return unstorable(key)


def key_to_topic(key: Key) -> str | None:
    """The topic levels that name ``key`` after ``Table/``; None when no topic name can
    (a string key that is empty or holds ``+``, ``#`` or U+0000).

    >>> key_to_topic("a/b"), key_to_topic(42), key_to_topic("a+b")
    ('a/b', '42', None)
    """
    if not isinstance(key, str):
        return key_to_segment(key)
    if not key or "+" in key or "#" in key or "\x00" in key:
        return None
    return key


def parse_key(text: str, key_type: str) -> Key:
    """The key written as (already decoded) ``text``, as ``key_type`` declares it.

    Raises:
        ValueError: ``text`` is not a value of ``key_type``.
    """
    if key_type in _INTEGER_RANGES:
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{text!r} is not a whole number")
        number = int(text)
        bound = _INTEGER_RANGES[key_type]
        if bound is not None and not -bound <= number < bound:
            raise ValueError(f"{text} is out of the {key_type} range")
        return number
    if key_type == "Float":
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    return text
