"""Run a :class:`~kiln.query.planner.Plan`: stream the matching records, shaped and in order.

Records are read in chunks (:data:`CHUNK` index entries or records), each chunk
in its own short read transaction that resumes after the last key read, so a
query never pins a snapshot for long and memory stays flat however many records
match: the first record leaves before the last is read, and ``limit`` stops the
walk. Snapshot semantics: each chunk is consistent in itself; a record written
while a query runs may be seen as of before or after that write, and is returned
only if it matches when it is read. Orders made in memory (``heap``, ``memory``)
hold at most ``end`` records or ``query.maxSortRows`` records.

Conditions, sort keys and selections that go through a relationship
(``owner.name=Ann``, ``sort(owner.name)``, ``select(owner{name})``) read the
related records with :mod:`kiln.query.relationships`, for a batch of
:data:`CHUNK` records at a time in one read transaction of its own.

A scan that joins (a condition through a relationship, see
:class:`~kiln.query.planner.Join`) finds its related keys when the walk starts, in
a read of its own, then walks this table's index (or records) at those keys, each
record once; every record it fetches is checked against the whole condition.

Inside a writer's transaction (DELETE by query) the same code reads through that
one transaction: see :func:`matching_keys`.

``@computed`` attributes the query names (in a condition, a sort key or
``select()``) are derived into each record as it is read, by the functions the
store holds; they are left out of a result without ``select()``, as Harper does.

A query run in a transaction (``Source.pending``) sees the records it wrote in
place of the stored ones; its order is then always made in memory.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, cast

import lmdb

from kiln.errors import BadRequest
from kiln.query import relationships
from kiln.query.matching import matches, sort_key, value_at
from kiln.query.model import Condition, Node, Query, Selection, SortKey
from kiln.query.planner import IndexScan, Plan
from kiln.schema import TableDef
from kiln.storage.database import Database
from kiln.storage.keys import decode_key
from kiln.storage.ranges import (
    KeyRange,
    fetch,
    index_term,
    is_truncated,
    walk_index,
    walk_primary,
)
from kiln.storage.table import TableStore
from kiln.types import Key, Record

CHUNK = 256
"""Index entries or records read per read transaction."""

Pair = tuple[bytes, Record]
"""A record with its encoded primary key."""


@dataclass(slots=True)
class Source:
    """Where a query reads: a table's stores and how to open a read transaction."""

    store: TableStore
    read: Callable[[], AbstractContextManager[lmdb.Transaction]]
    chunk: int = CHUNK
    first_chunk: int = CHUNK
    """The size of a walk's first chunk; later chunks double up to ``chunk``. A query that
    wants ten records should not fetch and decode 256."""
    scanned: int = field(default=0)
    """Records fetched so far (for ``explain``)."""
    database: Database | None = None
    """The store's database, for queries through relationships (None: a query cannot use one)."""
    computed: tuple[str, ...] = ()
    """The ``@computed`` attributes the query names, derived into each record read."""
    pending: dict[bytes, Record | None] = field(default_factory=dict)
    """The records a transaction wrote and has not committed, by encoded key (None: it
    deleted it): they stand in for the stored ones (:func:`_overlaid`)."""

    def related(self) -> Database:
        """The database relationships are read from.

        Raises:
            ValueError: the source was built without one.
        """
        if self.database is None:
            raise ValueError("a query through a relationship needs Source(database=...)")
        return self.database

    def chunk_sizes(self) -> Iterator[int]:
        """The size of each successive chunk of one walk."""
        size = max(1, min(self.first_chunk, self.chunk))
        while True:
            yield size
            size = min(size * 2, self.chunk)


def _terms(value: Any) -> list[bytes]:
    items = value if isinstance(value, list) else [value]
    return [term for term in map(index_term, items) if term is not None]


def _covers(scan: IndexScan, pair: Pair) -> bool:
    """Whether ``scan`` reaches ``pair`` (so a later branch of an ``or`` skips it)."""
    held = scan.terms if scan.terms is not None else scan.key_range
    if scan.primary:
        return pair[0] in held
    return any(term in held for term in _terms(pair[1].get(scan.attribute)))


def _computed_names(query: Query, definition: TableDef) -> tuple[str, ...]:
    """The ``@computed`` attributes ``query`` names in its conditions, sort or selection."""
    if not definition.computed:
        return ()
    named: set[str] = {key.path[0] for key in query.sort}
    if query.select is not None:
        named.update(item.name for item in query.select.fields)
    pending = [query.where] if query.where is not None else []
    while pending:
        node = pending.pop()
        if isinstance(node, Condition):
            named.add(node.path[0])
        else:
            pending.extend(node.items)
    return tuple(name for name in definition.computed if name in named)


def _derive(source: Source, record: Record) -> Record:
    """``record`` with the computed attributes the query names filled in (in place)."""
    store = source.store
    values = {name: store.value(record, name) for name in source.computed}
    record.update(values)  # after every call: each function sees the stored record alone
    return record


def _walk_primary(source: Source, key_range: KeyRange, reverse: bool) -> Iterator[Pair]:
    after: bytes | None = None
    for size in source.chunk_sizes():
        with source.read() as txn:
            chunk = walk_primary(txn, source.store.primary, key_range, after, size, reverse=reverse)
        if not chunk:
            return
        source.scanned += len(chunk)
        after = chunk[-1][0]
        if source.computed:
            chunk = [(key, _derive(source, record)) for key, record in chunk]
        yield from chunk
        if len(chunk) < size:  # the range ran out: no need to look again
            return


def _first_met(
    record: Record, attribute: str, term: bytes, held: KeyRange | frozenset[bytes], reverse: bool
) -> bool:
    """Whether a walk meets ``record`` first at ``term``: a record whose ``attribute`` is a
    list sits under each element, and comes at the first of those the walk ``held`` covers."""
    value = record.get(attribute)
    if not isinstance(value, list):
        return True
    inside = [item for item in _terms(value) if item in held]
    return not inside or term == (max(inside) if reverse else min(inside))


def _walk_index(source: Source, scan: IndexScan, reverse: bool) -> Iterator[Pair]:
    """The records under ``scan``'s terms, each once, in the index's order."""
    index = source.store.indexes[scan.attribute]
    key_range = scan.key_range
    # Under one term a record sits once; a wider walk may meet a list value under several
    # terms, even of an attribute declared single-valued (a value stored before a retype).
    once = key_range.is_one_term
    after: tuple[bytes, bytes] | None = None
    for size in source.chunk_sizes():
        with source.read() as txn:
            entries = walk_index(txn, index, key_range, after, size, reverse=reverse)
            found = fetch(txn, source.store.primary, [key for _t, key in entries])
        if not entries:
            return
        if source.computed:
            found = [(key, _derive(source, record)) for key, record in found]
        after = entries[-1]
        if once:  # the records come in the entries' order, each once
            source.scanned += len(found)
            yield from found
        else:
            records = dict(found)
            source.scanned += len(records)
            for term, key in entries:
                record = records.get(key)
                if record is not None and _first_met(
                    record, scan.attribute, term, key_range, reverse
                ):
                    yield key, record
        if len(entries) < size:  # the range ran out: no need to look again
            return


def _walk_keys(source: Source, keys: list[bytes]) -> Iterator[Pair]:
    """The records at the encoded ``keys`` that exist, in that order."""
    position = 0
    for size in source.chunk_sizes():
        wanted = keys[position : position + size]
        if not wanted:
            return
        position += size
        with source.read() as txn:
            chunk = fetch(txn, source.store.primary, wanted)
        source.scanned += len(chunk)
        if source.computed:
            chunk = [(key, _derive(source, record)) for key, record in chunk]
        yield from chunk


def _walk_terms(
    source: Source, scan: IndexScan, terms: list[bytes], reverse: bool
) -> Iterator[Pair]:
    """The records under ``terms`` of ``scan``'s index, term by term (keys ascending under
    each); a record under several of ``scan.terms`` comes at the first one walked.

    One read transaction serves as many terms as fit in a chunk.
    """
    index, joined = source.store.indexes[scan.attribute], scan.terms or frozenset()
    position, after = 0, None
    for size in source.chunk_sizes():
        entries: list[tuple[bytes, bytes]] = []
        with source.read() as txn:
            while position < len(terms) and len(entries) < size:
                term, wanted = terms[position], size - len(entries)
                found = walk_index(txn, index, KeyRange(term, True, term, True), after, wanted)
                entries.extend(found)
                position, after = (
                    (position + 1, None) if len(found) < wanted else (position, found[-1])
                )
            records = dict(fetch(txn, source.store.primary, [key for _t, key in entries]))
        if source.computed:
            records = {key: _derive(source, record) for key, record in records.items()}
        source.scanned += len(records)
        for term, key in entries:
            record = records.get(key)
            if record is not None and _first_met(record, scan.attribute, term, joined, reverse):
                yield key, record
        if position >= len(terms):
            return


def _walk_joined(source: Source, scan: IndexScan, reverse: bool, keyed: bool) -> Iterator[Pair]:
    """The records at a join's keys: in key order when ``keyed`` (one walk per key, merged),
    else in the order of the keys (backwards when ``reverse``)."""
    terms = sorted(scan.terms or (), reverse=reverse)
    if scan.primary:
        return _walk_keys(source, terms)
    if keyed and len(terms) > 1:
        walks = [_walk_terms(source, scan, [term], False) for term in terms]
        return heapq.merge(*walks, key=itemgetter(0))
    return _walk_terms(source, scan, terms, reverse)


def _walk(source: Source, scan: IndexScan, reverse: bool, keyed: bool) -> Iterator[Pair]:
    if scan.terms is not None:
        return _walk_joined(source, scan, reverse, keyed)
    if scan.primary:
        return _walk_primary(source, scan.key_range, reverse)
    return _walk_index(source, scan, reverse)


def _resolved(scan: IndexScan, source: Source) -> IndexScan:
    """``scan`` ready to walk: a join's keys found now, in a read of their own."""
    join = scan.join
    if join is None:
        return scan
    related = join.related
    with source.read() as txn:
        keys = relationships.join_keys(
            source.related(), txn, join.relationship, related.attribute, related.key_range, None
        )
    return replace(scan, terms=frozenset(cast("list[bytes]", keys)))  # no limit: never None


def _without_value(source: Source, attribute: str) -> Iterator[Pair]:
    """The records an index of ``attribute`` lacks (null or absent values), in key order."""
    for pair in _walk_primary(source, KeyRange(), False):
        if not _terms(pair[1].get(attribute)):
            yield pair


def _not_in(stream: Iterator[Pair], earlier: tuple[IndexScan, ...]) -> Iterator[Pair]:
    """The records of ``stream`` that no ``earlier`` scan of an ``or`` reaches."""
    for pair in stream:
        if not any(_covers(scan, pair) for scan in earlier):
            yield pair


def matched(plan: Plan, source: Source) -> Iterator[Pair]:
    """The records matching ``plan``'s query, in the plan's walk order (before sort and slice)."""
    where = plan.query.where
    source.computed = _computed_names(plan.query, source.store.definition)
    scans = tuple(_resolved(scan, source) for scan in plan.scans)
    if not scans:
        streams = [_walk_primary(source, KeyRange(), False)]
    else:
        keyed = plan.order in ("stream", "merge") and not plan.query.sort
        streams = [_walk(source, scan, plan.reverse, keyed) for scan in scans]
    if len(streams) > 1:
        streams = [_not_in(stream, scans[:i]) for i, stream in enumerate(streams)]
        if plan.order == "merge":
            walked: Iterator[Pair] = heapq.merge(*streams, key=lambda pair: pair[0])
        else:
            walked = itertools.chain(*streams)
    else:
        walked = streams[0]
    if plan.nulls_after:
        walked = itertools.chain(walked, _without_value(source, scans[0].attribute))
    if source.pending:
        walked = _overlaid(walked, source)
    if where is None or (not source.pending and _answered_by_index(plan)):
        return walked
    definition = source.store.definition
    if not _through_relationship(where, definition):
        return (pair for pair in walked if matches(where, pair[1]))
    return _matched_related(where, definition, source, walked)


def _answered_by_index(plan: Plan) -> bool:
    """Whether every record the plan walks matches its query, unchecked.

    True for a query whose one condition is an ``eq`` the index holds exactly: one
    term, not cut short, of a single-valued attribute (the term is the value's
    typed encoding, so equal terms are equal values).
    """
    where = plan.query.where
    if not isinstance(where, Condition) or len(plan.scans) != 1:
        return False
    scan = plan.scans[0]
    key_range = scan.key_range
    return (
        where.comparator == "eq"
        and scan.comparator == "eq"
        and not scan.many_valued
        and key_range.is_one_term
        and not is_truncated(key_range.lower or b"")
    )


def _overlaid(walked: Iterator[Pair], source: Source) -> Iterator[Pair]:
    """``walked`` as a transaction sees it: the stored records it wrote are dropped, and
    every record it left is added at the end (out of order: :func:`_ordered` sorts), to
    be matched against the whole condition like the others."""
    pending = source.pending
    for pair in walked:
        if pair[0] not in pending:
            yield pair
    for key, record in pending.items():
        if record is not None:
            yield key, _derive(source, dict(record)) if source.computed else dict(record)


def _batches(pairs: Iterator[Pair], source: Source) -> Iterator[list[Pair]]:
    """``pairs`` in lists of ``source``'s chunk sizes, each read in full before the caller
    opens a transaction.

    A walk closes its own read transaction before it yields, so a batch can be
    worked on in a transaction of its own without two being open in one thread.
    """
    for size in source.chunk_sizes():
        batch = list(itertools.islice(pairs, size))
        if not batch:
            return
        yield batch


def _through_relationship(node: Node, definition: TableDef) -> bool:
    """Whether a condition of ``node`` has a dot path starting with a relationship."""
    if isinstance(node, Condition):
        return len(node.path) > 1 and node.path[0] in definition.relationships
    return any(_through_relationship(item, definition) for item in node.items)


def _matched_related(
    where: Node, definition: TableDef, source: Source, walked: Iterator[Pair]
) -> Iterator[Pair]:
    """The pairs of ``walked`` that match ``where``, reading related records batch by batch."""
    database = source.related()
    for batch in _batches(walked, source):
        with source.read() as txn:
            test = relationships.matcher(database, txn, definition, where)
            kept = [pair for pair in batch if test(pair[1])]
        yield from kept


def _ordered(plan: Plan, source: Source, max_sort_rows: int) -> Iterator[Pair]:
    """The matches of ``plan`` from ``query.start`` to ``query.end``, in the query's order."""
    query = plan.query
    start, end = query.start, query.end
    found = matched(plan, source)
    order = plan.order
    if source.pending and order in ("stream", "merge"):  # pending records come out of order
        order = "memory" if end is None else "heap"
    if order in ("stream", "merge"):
        return itertools.islice(found, start, end)
    keyed = _keyed(query.sort, source, found)
    by_key = itemgetter(0)
    if order == "heap":
        # the planner buffers in a heap only with a limit, so ``end`` is set
        return (pair for _key, pair in heapq.nsmallest(end or 0, keyed, key=by_key)[start:])
    rows = list(itertools.islice(keyed, max_sort_rows + 1))
    if len(rows) > max_sort_rows:
        what = "sort()" if query.sort else "key order"
        raise BadRequest(
            f"the query matches more than query.maxSortRows ({max_sort_rows}) records, "
            f"too many to put in {what} in memory",
            hint="add limit(...) to keep the first records only, or sort by the "
            "@indexed attribute the query's condition uses to stream in index order",
        )
    rows.sort(key=by_key)
    return (pair for _key, pair in rows[start:end])


def _keyed(sort: tuple[SortKey, ...], source: Source, found: Iterator[Pair]) -> Iterator[Any]:
    """``(order key, pair)`` per pair of ``found``: by ``sort``, ties (or no sort) in key order.

    A sort key through a relationship (``owner.name``) reads the related record:
    the record is sorted as if the relationship's value were stored in it.
    """
    if not sort:
        return ((pair[0], pair) for pair in found)
    by_record = sort_key(sort)
    definition = source.store.definition
    related = {key.path[0] for key in sort if key.path[0] in definition.relationships}
    if not related:
        return (((by_record(pair[1]), pair[0]), pair) for pair in found)
    return _keyed_related(by_record, related, source, found)


def _keyed_related(
    by_record: Callable[[Record], Any], names: set[str], source: Source, found: Iterator[Pair]
) -> Iterator[Any]:
    database, definition = source.related(), source.store.definition
    for batch in _batches(found, source):
        with source.read() as txn:
            keyed = []
            for pair in batch:
                view = dict(pair[1])
                for name in names:
                    relationship = definition.relationships[name]
                    view[name] = relationships.resolve(
                        database, txn, definition, relationship, pair[1]
                    )
                keyed.append(((by_record(view), pair[0]), pair))
        yield from keyed


def shape(selection: Selection | None, record: Record) -> Any:
    """``record`` as ``select()`` asks: an object, a bare value, or an array.

    A selected relationship is resolved before the record gets here
    (:func:`_shaped`); here it is read like a plain attribute.
    """
    if selection is None:
        return record
    fields = selection.fields
    if selection.shape == "value":
        return value_at(record, (fields[0].name,))
    if selection.shape == "array":
        return [record.get(item.name) for item in fields]
    return {item.name: record.get(item.name) for item in fields}


_RECORD_OF = itemgetter(1)


def _shaped(plan: Plan, source: Source, ordered: Iterator[Pair]) -> Iterator[Any]:
    """The records of ``ordered`` shaped by the query's selection, relationships filled in.

    Not a generator itself: the iterator it returns takes no step of a frame of ours per
    record where none is needed (call it after :func:`matched`, which sets
    ``source.computed``).
    """
    selection = plan.query.select
    if selection is None and source.computed:  # named only by conditions or sort keys
        hidden = source.computed
        return (
            {name: value for name, value in record.items() if name not in hidden}
            for _key, record in ordered
        )
    if selection is None:
        return map(_RECORD_OF, ordered)
    if not any(item.name in source.store.definition.relationships for item in selection.fields):
        return (shape(selection, record) for _key, record in ordered)
    return _shaped_related(selection, source, ordered)


def _shaped_related(selection: Selection, source: Source, ordered: Iterator[Pair]) -> Iterator[Any]:
    """The records of ``ordered`` with the relationships ``selection`` names read, a batch
    per short read transaction, then shaped."""
    definition = source.store.definition
    database = source.related()
    for batch in _batches(ordered, source):
        with source.read() as txn:
            filled = [
                relationships.with_related(database, txn, definition, record, selection)
                for _key, record in batch
            ]
        for record in filled:
            yield shape(selection, record)


def selected(
    selection: Selection,
    store: TableStore,
    database: Database,
    txn: lmdb.Transaction,
    record: Record,
) -> Any:
    """One record shaped by ``selection``, as a query shapes each of its results (a record
    URL's ``select()``): the computed attributes it names derived, its relationships
    read in ``txn``. ``record`` is the stored record, changed in place."""
    definition = store.definition
    names = {item.name for item in selection.fields}
    values = {name: store.value(record, name) for name in definition.computed if name in names}
    record.update(values)  # after every call: each function sees the stored record alone
    if not names.isdisjoint(definition.relationships):
        record = relationships.with_related(database, txn, definition, record, selection)
    return shape(selection, record)


class Results(Iterator[Any]):
    """The streamed results of a query: iterate for the records, :meth:`count` for the total."""

    def __init__(self, plan: Plan, source: Source, max_sort_rows: int):
        self.plan = plan
        self.source = source
        self.max_sort_rows = max_sort_rows
        self.view: Callable[[Any], Any] | None = None
        """Applied to each result when set: what a role may see of a record (set it before
        iterating)."""
        self._results: Iterator[Any] | None = None

    def _started(self) -> Iterator[Any]:
        if self._results is None:
            ordered = _ordered(self.plan, self.source, self.max_sort_rows)
            shaped = _shaped(self.plan, self.source, ordered)
            self._results = shaped if self.view is None else map(self.view, shaped)
        return self._results

    def __next__(self) -> Any:
        return next(self._started())

    def __iter__(self) -> Iterator[Any]:
        """The results themselves, so a ``for`` loop pays no method call per record."""
        return self._started()

    def count(self) -> int:
        """How many records match the query, ignoring its limit (a pass of its own)."""
        counting = replace(self.source, scanned=0)
        return sum(1 for _pair in matched(self.plan, counting))

    @property
    def start(self) -> int:
        """The position of the first result among all the matches."""
        return self.plan.query.start

    def explain(self) -> dict[str, Any]:
        """The plan and what running it took: driver, estimate, filters, scanned, returned."""
        returned = sum(1 for _record in self)
        scans = self.plan.scans
        drivers = [_driver(scan) for scan in scans]
        return {
            "driver": None if not scans else drivers[0] if len(drivers) == 1 else drivers,
            "estimated": self.plan.estimated,
            "fullScan": self.plan.full_scan,
            "filters": [
                {"attribute": ".".join(leaf.path), "comparator": leaf.comparator}
                for leaf in self.plan.filters
            ],
            "scanned": self.source.scanned,
            "returned": returned,
            "sort": self.plan.sort_kind,
        }


def _driver(scan: IndexScan) -> dict[str, Any]:
    """One scan as ``explain()`` shows it; a join names the related scan and its key count."""
    shown: dict[str, Any] = {
        "attribute": scan.attribute,
        "comparator": scan.comparator,
        "range": scan.label,
    }
    join = scan.join
    if join is not None:
        related = join.related
        shown["join"] = {
            "relationship": join.relationship.name,
            "table": join.relationship.target,
            "attribute": related.attribute,
            "comparator": related.comparator,
            "range": related.label,
            "keys": join.keys,
        }
    return shown


def matching_keys(
    plan: Plan,
    store: TableStore,
    txn: lmdb.Transaction,
    max_sort_rows: int,
    database: Database | None = None,
) -> list[Key]:
    """The primary keys of the records ``plan`` returns, read in ``txn`` (a writer's).

    ``database`` (``store``'s) is needed when the query goes through a relationship.
    """
    source = Source(store, lambda: nullcontext(txn), database=database)
    return [cast(Key, decode_key(key)) for key, _record in _ordered(plan, source, max_sort_rows)]
