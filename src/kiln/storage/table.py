"""A table's stores: its records by primary key and one index per ``@indexed`` attribute."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lmdb

from kiln.schema import TableDef
from kiln.storage.catalog import index_store, records_store
from kiln.storage.keys import MAX_KEY_SIZE, NUMBERS_END, NUMBERS_START, decode_key, encode_key
from kiln.storage.ranges import index_term
from kiln.storage.records import decode_record, decode_record_only, encode_record
from kiln.types import Key, Record, Version


def _index_terms(value: Any) -> set[bytes]:
    """The encoded index keys of one attribute value: each element of a list, dates as ms.

    Absent and null values are not indexed: most records leave most attributes
    empty, and indexing every one of them would write a page of each index per
    write for nothing a query needs.
    """
    if value is None:
        return set()
    items = value if isinstance(value, list) else [value]
    return {term for term in map(index_term, items) if term is not None}


def _same_terms(old: Any, new: Any) -> bool:
    """Whether two values certainly index alike, judged without encoding them.

    Equal values of the same types do (``1 == 1.0 == True`` are equal, but a
    boolean is indexed apart from numbers, so types are compared too, element by
    element for a list).
    """
    if old != new or type(old) is not type(new):
        return False
    if isinstance(old, list):
        return all(type(a) is type(b) for a, b in zip(old, new, strict=True))
    return True


class TableStore:
    """Reads and writes one table's records, keeping its indexes in step.

    Write methods take the writer's transaction; they never commit.

    ``computed`` maps each ``@computed`` attribute to the function of the record
    that derives it. Storage never imports ``resources.py``: :func:`kiln.app.load_app`
    sets the functions it registered once it is imported, and the index of an
    ``@indexed`` computed attribute holds what its function returns.
    """

    def __init__(self, definition: TableDef, env: lmdb.Environment):
        self.definition = definition
        self.computed: dict[str, Callable[[Record], Any]] = {}
        self.primary = env.open_db(records_store(definition.table))
        self.indexes = {
            attribute: env.open_db(index_store(definition.table, attribute), dupsort=True)
            for attribute in definition.indexed
        }

    def get(self, txn: lmdb.Transaction, key: Key) -> tuple[Version, Record] | None:
        """The version and record with ``key``, or None."""
        raw = txn.get(encode_key(key), db=self.primary)
        return None if raw is None else decode_record(raw)

    def scan(
        self, txn: lmdb.Transaction, after: bytes | None, limit: int
    ) -> list[tuple[bytes, Record]]:
        """Up to ``limit`` records in key order, starting after the encoded key ``after``."""
        return [(key, record) for key, _version, record in self.scan_versioned(txn, after, limit)]

    def scan_versioned(
        self, txn: lmdb.Transaction, after: bytes | None, limit: int
    ) -> list[tuple[bytes, Version, Record]]:
        """Like :meth:`scan`, with each record's version."""
        cursor = txn.cursor(db=self.primary)
        found = cursor.set_range(after) if after is not None else cursor.first()
        if found and after is not None and cursor.key() == after:
            found = cursor.next()
        chunk: list[tuple[bytes, Version, Record]] = []
        while found and len(chunk) < limit:
            version, record = decode_record(cursor.value())
            chunk.append((bytes(cursor.key()), version, record))
            found = cursor.next()
        return chunk

    def holder(self, txn: lmdb.Transaction, attribute: str, value: Any, key: Key) -> Key | None:
        """The key of a record other than ``key`` whose indexed ``attribute`` is ``value``.

        Reads the attribute's index (one entry per value for a ``@unique`` attribute).
        An index key cut to :data:`MAX_KEY_SIZE` is shared by every long value with
        the same start, so for those the records themselves are compared.
        """
        own = encode_key(key)
        cursor = txn.cursor(db=self.indexes[attribute])
        for term in _index_terms(value):
            if not cursor.set_key(term):
                continue
            for encoded_key in cursor.iternext_dup():
                if encoded_key == own:
                    continue
                other = decode_key(encoded_key)
                if len(term) < MAX_KEY_SIZE:
                    return other
                found = self.get(txn, other)
                if found is not None and found[1].get(attribute) == value:
                    return other
        return None

    def shared_values(
        self, txn: lmdb.Transaction, attribute: str, limit: int
    ) -> list[tuple[Any, list[Key]]]:
        """Up to ``limit`` values of ``attribute`` that several records hold, with their keys.

        Walks each distinct index key once. Long values share a cut index key, so the
        records under one of those are grouped by their full value.
        """
        found: list[tuple[Any, list[Key]]] = []
        cursor = txn.cursor(db=self.indexes[attribute])
        more = cursor.first()
        while more and len(found) < limit:
            if cursor.count() > 1:
                term = bytes(cursor.key())
                keys = [decode_key(encoded) for encoded in cursor.iternext_dup()]
                cursor.set_key(term)  # back on the term, which the walk ran past
                by_value: dict[Any, list[Key]] = {}
                for key in keys:
                    record = self.get(txn, key)
                    if record is not None:
                        by_value.setdefault(self.value(record[1], attribute), []).append(key)
                found.extend((value, held) for value, held in by_value.items() if len(held) > 1)
            more = cursor.next_nodup()
        return found[:limit]

    def find(self, txn: lmdb.Transaction, attribute: str, value: Key) -> list[Record]:
        """The records whose indexed ``attribute`` is ``value`` (or, for a list, holds it).

        In primary key order. A long string value shares its cut index key with
        others, so each record found is checked against ``value`` itself.
        """
        found = []
        cursor = txn.cursor(db=self.indexes[attribute])
        for term in _index_terms(value):
            if not cursor.set_key(term):
                continue
            for encoded_key in cursor.iternext_dup():
                raw = txn.get(encoded_key, db=self.primary)
                if raw is None:  # pragma: no cover - the index and the records move together
                    continue
                record = decode_record_only(raw)
                held = self.value(record, attribute)
                if held == value or (isinstance(held, list) and value in held):
                    found.append(record)
        return found

    def value(self, record: Record, attribute: str) -> Any:
        """The value of ``attribute`` in ``record``: stored, or derived when it is computed."""
        function = self.computed.get(attribute)
        return record.get(attribute) if function is None else function(record)

    def next_integer_key(self, txn: lmdb.Transaction) -> int:
        """One more than the largest numeric primary key (1 for a table without one)."""
        cursor = txn.cursor(db=self.primary)
        positioned = cursor.prev() if cursor.set_range(NUMBERS_END) else cursor.last()
        if positioned and NUMBERS_START <= bytes(cursor.key()) < NUMBERS_END:
            largest = decode_key(cursor.key())
            if largest >= 0:
                return int(largest) + 1
        return 1

    def store(
        self,
        txn: lmdb.Transaction,
        key: Key,
        version: Version,
        record: Record,
        previous: Record | None,
    ) -> None:
        """Write ``record`` at ``key`` and move its index entries from ``previous``."""
        encoded_key = encode_key(key)
        txn.put(encoded_key, encode_record(version, record), db=self.primary)
        self._reindex(txn, encoded_key, previous, record)

    def remove(self, txn: lmdb.Transaction, key: Key, previous: Record) -> None:
        """Delete the record at ``key`` and its index entries."""
        encoded_key = encode_key(key)
        txn.delete(encoded_key, db=self.primary)
        self._reindex(txn, encoded_key, previous, None)

    def _reindex(
        self,
        txn: lmdb.Transaction,
        encoded_key: bytes,
        old: Record | None,
        new: Record | None,
    ) -> None:
        for attribute, index in self.indexes.items():
            old_value = None if old is None else self.value(old, attribute)
            new_value = None if new is None else self.value(new, attribute)
            if _same_terms(old_value, new_value):
                continue  # an unchanged value keeps its entries (most attributes of an update)
            old_terms = _index_terms(old_value)
            new_terms = _index_terms(new_value)
            for term in old_terms - new_terms:
                txn.delete(term, encoded_key, db=index)
            for term in new_terms - old_terms:
                txn.put(term, encoded_key, db=index)

    def clear_index(self, txn: lmdb.Transaction, attribute: str) -> None:
        """Empty the index of ``attribute`` (the store itself stays)."""
        txn.drop(self.indexes[attribute], delete=False)

    def add_to_index(
        self, txn: lmdb.Transaction, attribute: str, records: list[tuple[bytes, Record]]
    ) -> None:
        """Add the index entries of ``records`` (encoded key, record) for ``attribute``."""
        index = self.indexes[attribute]
        for encoded_key, record in records:
            for term in _index_terms(self.value(record, attribute)):
                txn.put(term, encoded_key, db=index)

    def count(self, txn: lmdb.Transaction) -> int:
        """The number of records."""
        return txn.stat(self.primary)["entries"]

    def index_entries(self, txn: lmdb.Transaction, attribute: str) -> Iterator[tuple[Any, Key]]:
        """Every (value, primary key) pair of one index, in index order."""
        for term, encoded_key in txn.cursor(db=self.indexes[attribute]):
            yield decode_key(term), decode_key(encoded_key)
