"""Shared type aliases, used across the layers so every module speaks the same words."""

from __future__ import annotations

from typing import Any, TypeAlias

Key: TypeAlias = int | float | str
"""A primary key value, as it appears in a record (``1``, ``"abc"``)."""

Record: TypeAlias = dict[str, Any]
"""A record as Python sees it: attribute name → value."""

Version: TypeAlias = int
"""A 64-bit hybrid-logical-clock timestamp: a write's version and its audit key."""

MATCH_ANY: Version = -1
"""An ``if_version`` precondition that any existing version satisfies (``If-Match: *``)."""

MATCH_NONE: Version = -2
"""An ``if_version`` precondition that only an absent record satisfies (``If-None-Match: *``)."""

Precondition: TypeAlias = Version | frozenset[Version]
"""An ``if_version``: the version the record must be at, or several it may be at (an
``If-Match`` that lists more than one ETag); :data:`MATCH_ANY` or :data:`MATCH_NONE`."""

VERSION_COUNTER_BITS = 16
"""A version's low bits that count writes within one millisecond; the bits above are the time."""


def version_millis(version: Version) -> int:
    """The wall-clock milliseconds since the Unix epoch at which ``version`` was issued.

    >>> version_millis(1 << 16 | 5)
    1
    """
    return version >> VERSION_COUNTER_BITS
