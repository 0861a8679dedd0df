"""HTTP caching and preconditions: ``ETag``, ``Last-Modified``, ``If-None-Match``, ``If-Match``.

A record's version is its ETag (quoted) and, through its milliseconds, its
``Last-Modified``. A read whose ``If-None-Match`` names the current ETag is
answered 304; a write's ``If-Match`` becomes the target's ``if_version``, which
the writer checks at the moment of the write (412 when the record moved on).
"""

from __future__ import annotations

from email.utils import formatdate
from functools import lru_cache

from kiln.types import MATCH_ANY, Precondition, version_millis


def if_match_version(value: str | None) -> Precondition | None:
    """The version an ``If-Match`` header asks for, or the versions when it lists several.

    ``*`` matches any existing version. ETags are compared strongly (RFC 9110): a weak
    one (``W/"1"``) matches nothing, as does a tag that is no version of kiln's; both
    leave 0, which no record is at.

    >>> if_match_version('"42"'), if_match_version('W/"42"'), if_match_version('"1", "2"')
    (42, 0, frozenset({1, 2}))
    """
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return MATCH_ANY
    versions = set()
    for tag in value.split(","):
        tag = tag.strip()
        digits = tag[1:-1]
        if len(tag) > 2 and tag[0] == tag[-1] == '"' and digits.isdigit() and digits[0] != "0":
            versions.add(int(digits))  # "0123" is no ETag kiln gave: strong means the same text
    if len(versions) > 1:
        return frozenset(versions)
    return versions.pop() if versions else 0


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weakly compared) or is ``*``.

    >>> not_modified('"1", W/"7"', '"7"')
    True
    """
    if if_none_match is None:
        return False
    current = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current:
            return True
    return False


def last_modified(etag: str) -> str | None:
    """The ``Last-Modified`` value of a version's ETag (``"<version>"``), None for another tag.

    >>> last_modified('"%d"' % (1_700_000_000_000 << 16))
    'Tue, 14 Nov 2023 22:13:20 GMT'
    """
    tag = etag.strip('"')
    if not tag.isdigit():
        return None
    return _http_date(version_millis(int(tag)) // 1000)


def _http_date(seconds: int) -> str:
    """An IMF-fixdate (``Tue, 14 Nov 2023 22:13:20 GMT``): the day part cached, the time computed.

    It runs on every record read, and formatting the whole date each time cost
    more than the rest of the response.
    """
    day, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{_day_prefix(day)}{hours:02d}:{minutes:02d}:{secs:02d} GMT"


@lru_cache(maxsize=1024)
def _day_prefix(day: int) -> str:
    """``Tue, 14 Nov 2023 `` for the ``day``-th day since the Unix epoch."""
    return formatdate(day * 86_400, usegmt=True)[:17]
