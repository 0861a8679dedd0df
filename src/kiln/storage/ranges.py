"""Ordered, chunked walks over a range of encoded keys, in a table's primary store or an index.

The query engine reads through these: each call reads at most ``limit`` entries
inside the transaction it is given and returns a position to resume from, so a
caller can read a large range as many short transactions. A range is expressed
on encoded keys (:mod:`kiln.storage.keys`), so one walk serves numbers, strings
and prefixes alike.

An index walk visits ``(term, primary key)`` pairs in term order; the primary
keys under one term always come in key order, also when the terms are walked
backwards, so ties keep key order either way.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from typing import Any

import lmdb

from kiln.storage.keys import MAX_KEY_SIZE, encode_key
from kiln.storage.records import decode_record_only
from kiln.types import Record

Entry = tuple[bytes, bytes]
"""An index entry ``(term, encoded primary key)``, or a primary ``(encoded key, b"")``."""


# Not frozen, though never changed: made for every query, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class KeyRange:
    """Encoded keys between ``lower`` and ``upper`` (None: unbounded on that side)."""

    lower: bytes | None = None
    lower_inclusive: bool = True
    upper: bytes | None = None
    upper_inclusive: bool = False

    def above_lower(self, key: bytes) -> bool:
        """Whether ``key`` is not below the lower bound."""
        lower = self.lower
        return lower is None or key > lower or (self.lower_inclusive and key == lower)

    def below_upper(self, key: bytes) -> bool:
        """Whether ``key`` is not above the upper bound."""
        upper = self.upper
        return upper is None or key < upper or (self.upper_inclusive and key == upper)

    @property
    def is_one_term(self) -> bool:
        """Whether the range holds exactly one key (an ``eq``)."""
        return (
            self.lower is not None
            and self.lower == self.upper
            and self.lower_inclusive
            and self.upper_inclusive
        )

    def __contains__(self, key: bytes) -> bool:
        return self.above_lower(key) and self.below_upper(key)

    def intersect(self, other: KeyRange) -> KeyRange:
        """The keys in both ranges (maybe none)."""
        lower, lower_inclusive = self.lower, self.lower_inclusive
        if other.lower is not None and (
            lower is None
            or other.lower > lower
            or (other.lower == lower and not other.lower_inclusive)
        ):
            lower, lower_inclusive = other.lower, other.lower_inclusive
        upper, upper_inclusive = self.upper, self.upper_inclusive
        if other.upper is not None and (
            upper is None
            or other.upper < upper
            or (other.upper == upper and not other.upper_inclusive)
        ):
            upper, upper_inclusive = other.upper, other.upper_inclusive
        return KeyRange(lower, lower_inclusive, upper, upper_inclusive)


def index_term(value: Any) -> bytes | None:
    """The index key of one scalar value as :class:`~kiln.storage.table.TableStore` writes it.

    Dates are indexed as milliseconds since the epoch and long strings are cut to
    the key limit; None for a value no index holds (null, NaN, lists, objects).
    """
    if isinstance(value, datetime.datetime):
        value = value.timestamp() * 1000
    if isinstance(value, bool | int | float | str) and value == value:
        return encode_key(value, truncate=True)
    return None


def is_truncated(term: bytes) -> bool:
    """Whether ``term`` may be a cut long string (so it equals more than one value)."""
    return len(term) >= MAX_KEY_SIZE


def walk_primary(
    txn: lmdb.Transaction,
    db: Any,
    key_range: KeyRange,
    after: bytes | None,
    limit: int,
    *,
    reverse: bool = False,
) -> list[tuple[bytes, Record]]:
    """Up to ``limit`` (encoded key, record) pairs of a primary store in range, after ``after``."""
    cursor = txn.cursor(db=db)
    if not reverse:
        start = after if after is not None else key_range.lower
        found = cursor.set_range(start) if start is not None else cursor.first()
        excluded = after if after is not None or key_range.lower_inclusive else start
        if found and excluded is not None and cursor.key() == excluded:
            found = cursor.next()
    else:
        start = after if after is not None else key_range.upper
        found = _before(cursor, start, inclusive=after is None and key_range.upper_inclusive)
    chunk: list[tuple[bytes, Record]] = []
    while found and len(chunk) < limit:
        key = bytes(cursor.key())
        if not (key_range.above_lower(key) if reverse else key_range.below_upper(key)):
            break
        chunk.append((key, decode_record_only(cursor.value())))
        found = cursor.prev() if reverse else cursor.next()
    return chunk


def _before(cursor: Any, key: bytes | None, *, inclusive: bool) -> bool:
    """Put ``cursor`` on the last key before ``key`` (or at it, when ``inclusive``)."""
    if key is None:
        return bool(cursor.last())
    if not cursor.set_range(key):
        return bool(cursor.last())
    if inclusive and cursor.key() == key:
        return True
    return bool(cursor.prev())


def walk_index(
    txn: lmdb.Transaction,
    db: Any,
    key_range: KeyRange,
    after: Entry | None,
    limit: int,
    *,
    reverse: bool = False,
) -> list[Entry]:
    """Up to ``limit`` (term, encoded primary key) entries of a dupsort index, after ``after``.

    Forwards the entries come in (term, key) order; backwards the terms come in
    descending order but the keys of one term still ascend.
    """
    cursor = txn.cursor(db=db)
    if key_range.is_one_term and not reverse:
        return _walk_term(cursor, key_range.lower, after, limit)
    found = (
        _resume_reverse(cursor, key_range, after) if reverse else _resume(cursor, key_range, after)
    )
    chunk: list[Entry] = []
    while found and len(chunk) < limit:
        term = bytes(cursor.key())
        if not (key_range.above_lower(term) if reverse else key_range.below_upper(term)):
            break
        chunk.append((term, bytes(cursor.value())))
        if reverse:
            found = cursor.next_dup() or (cursor.prev_nodup() and cursor.first_dup())
        else:
            found = cursor.next()
    return chunk


def _walk_term(cursor: Any, term: bytes, after: Entry | None, limit: int) -> list[Entry]:
    """Up to ``limit`` entries of the one index term ``term`` (an ``eq``), after ``after``:
    the duplicates of one key, read without comparing each against a range."""
    if after is None:
        if not cursor.set_key(term):
            return []
    elif not cursor.set_range_dup(term, after[1]) or (
        cursor.value() == after[1] and not cursor.next_dup()
    ):
        return []
    return [(term, bytes(key)) for key in itertools.islice(cursor.iternext_dup(), limit)]


def _resume(cursor: Any, key_range: KeyRange, after: Entry | None) -> bool:
    if after is None:
        lower = key_range.lower
        if lower is None:
            return bool(cursor.first())
        found = cursor.set_range(lower)
        if found and not key_range.lower_inclusive and cursor.key() == lower:
            found = cursor.next_nodup()
        return bool(found)
    term, key = after
    if cursor.set_range_dup(term, key):
        return bool(cursor.next()) if cursor.value() == key else True
    if not cursor.set_range(term):
        return False
    return bool(cursor.next_nodup()) if cursor.key() == term else True


def _resume_reverse(cursor: Any, key_range: KeyRange, after: Entry | None) -> bool:
    if after is None:
        if not _before(cursor, key_range.upper, inclusive=key_range.upper_inclusive):
            return False
        return bool(cursor.first_dup())
    term, key = after
    if cursor.set_range_dup(term, key) and (cursor.value() != key or cursor.next_dup()):
        return True
    found = cursor.set_range(term)
    found = cursor.prev_nodup() if found else cursor.last()
    return bool(found and cursor.first_dup())


def estimate(
    txn: lmdb.Transaction, db: Any, key_range: KeyRange, cap: int, *, dupsort: bool
) -> int:
    """How many entries ``key_range`` holds, counting no further than ``cap``.

    An index counts the keys under each term at once (``count()`` of its duplicates),
    so a range of few, common terms costs a few steps.
    """
    cursor = txn.cursor(db=db)
    lower = key_range.lower
    found = cursor.set_range(lower) if lower is not None else cursor.first()
    total = 0
    while found and total < cap:
        key = bytes(cursor.key())
        if not key_range.below_upper(key):
            break
        if key_range.above_lower(key):
            total += cursor.count() if dupsort else 1
        found = cursor.next_nodup() if dupsort else cursor.next()
    return min(total, cap)


def fetch(txn: lmdb.Transaction, db: Any, keys: list[bytes]) -> list[tuple[bytes, Record]]:
    """The records at the encoded ``keys`` that still exist, in the order asked."""
    found = []
    get = txn.get
    for key in keys:
        raw = get(key, db=db)
        if raw is not None:
            found.append((key, decode_record_only(raw)))
    return found
