"""Choose how to read a bound query: which index ranges drive it and how its order is made.

Every query is driven from an index. ``eq``, ranges (``gt ge lt le``, chained on
one attribute) and ``sw`` on an ``@indexed`` attribute or on the primary key
become a :class:`IndexScan`; ``ne``, ``ew`` and ``ct`` never drive. In an ``and``
the scan with the fewest entries wins (counted cheaply, see
:func:`kiln.storage.ranges.estimate`) and the other conditions filter the
records it fetches; an ``or`` is the union of one scan per branch. A query no
index can drive is refused unless ``query.allowScans`` is on; a query without
conditions walks the primary key.

A condition through a relationship (``owner.name=Ann``) drives as a join
(:class:`Join`) when the related table can drive ``name=Ann`` and this table can
find records by the linking key: for ``owner: Owner @relationship(from: ownerId)``
the plan walks Owner's ``name`` index, then Dog's ``ownerId`` index (which must be
``@indexed``, or be the primary key) at each owner key found; for ``dogs: [Dog]
@relationship(to: ownerId)`` it walks Dog's index, then Owner's primary key at
each ``ownerId`` those dogs hold. The related keys are found when the query is
planned (to estimate the join: the entries under those keys) and again when it
runs; above :data:`JOIN_KEYS` related records the condition does not drive
(another one may, or the query is refused). Every record a join fetches is
checked against the whole condition again.

The order: key order when ``sort`` is empty. A primary-key walk and a single
``eq`` scan are in key order already (several such scans are merged by key, as
are the walks of a join over at most :data:`JOIN_MERGE` keys); a ``sort`` on the
one attribute that drives (or, without conditions, on any ``@indexed`` attribute
or the primary key) walks that index in order. Any other order is made in memory:
a top-k heap when the query has a ``limit``, else a sort of at most
``query.maxSortRows`` records.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import lmdb
import msgspec

from kiln.errors import BadRequest
from kiln.query import relationships
from kiln.query.model import Condition, Node, Or, Query
from kiln.schema import Relationship, TableDef
from kiln.storage.database import Database
from kiln.storage.keys import NUMBERS_END, NUMBERS_START, STRINGS_END, STRINGS_START
from kiln.storage.ranges import KeyRange, estimate, index_term, is_truncated
from kiln.storage.table import TableStore

DRIVING = frozenset({"eq", "gt", "ge", "lt", "le", "sw"})
"""The comparators an index answers."""

ESTIMATE_CAP = 1000
"""Counting a candidate scan's entries stops here: past it, any candidate is "large"."""

JOIN_KEYS = 1000
"""A condition through a relationship drives only when the related range holds at most this
many records (counted when planning): past it, it only filters."""

JOIN_MERGE = 8
"""A join over at most this many keys of an index gives its records in key order (one walk
per key, merged); over more, its order is made like a range's."""

Order = Literal["stream", "merge", "heap", "memory"]
Reader = Callable[[], AbstractContextManager[lmdb.Transaction]]

_BOOLEANS = KeyRange(b"\x20", True, b"\x22", False)
_NUMBERS = KeyRange(NUMBERS_START, True, NUMBERS_END, False)
_STRINGS = KeyRange(STRINGS_START, True, STRINGS_END, False)
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Limits:
    """The ``query.*`` settings: may a query scan the whole table, how much may it sort."""

    allow_scans: bool = False
    max_sort_rows: int = 100_000


# Not frozen, though never changed: made for every query, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class IndexScan:
    """One walk over ``key_range`` of the index of ``attribute`` (``primary``: the records),
    or, for a ``join``, over the index at each key it joins on."""

    attribute: str
    primary: bool
    comparator: str
    key_range: KeyRange
    label: str
    """The range as the query wrote it, for ``explain``: ``[5, 10)``, ``"ab"*``."""
    many_valued: bool = False
    """The attribute may hold lists, so one record may sit under several terms."""
    join: Join | None = None
    """Set for a condition through a relationship: the walk is at the keys it joins on
    (``key_range`` is then unused)."""
    terms: frozenset[bytes] | None = None
    """A join's keys, found when the query runs (the executor fills them in)."""

    @property
    def key_ordered(self) -> bool:
        """Whether the walk gives records in key order: a primary walk, one term (an ``eq``),
        or a join over few keys (merged)."""
        if self.primary:
            return True
        if self.join is not None:
            return self.join.keys <= JOIN_MERGE
        return self.key_range.is_one_term


@dataclass(frozen=True, slots=True)
class Join:
    """How a condition through ``relationship`` drives: the ``related`` scan walks the
    related table, and the keys it gives (:func:`kiln.query.relationships.join_keys`) are
    walked on this table by the :class:`IndexScan` holding the join."""

    relationship: Relationship
    related: IndexScan
    keys: int
    """How many keys the join had when planned."""
    estimated: int
    """This table's entries under those keys (counted up to :data:`ESTIMATE_CAP`)."""

    @property
    def path(self) -> tuple[str, ...]:
        """The condition's attribute path: ``("owner", "name")``."""
        return (self.relationship.name, self.related.attribute)


# Not frozen, though never changed: made for every query, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Plan:
    """How a query runs: its scans (none: the whole primary store) and how order is made."""

    query: Query
    scans: tuple[IndexScan, ...]
    order: Order
    reverse: bool = False
    """Walk the single scan backwards (a descending sort in index order)."""
    nulls_after: bool = False
    """After an index walk for sort(), the records the index lacks (null values) follow."""
    estimated: int | None = None
    full_scan: bool = False
    filters: tuple[Condition, ...] = field(default=())
    """The conditions checked on fetched records besides the driving ones (for explain)."""

    @property
    def sort_kind(self) -> str | None:
        """How sort() is done: ``index``, ``heap``, ``memory``, or None without sort()."""
        if self.order in ("heap", "memory"):
            return self.order
        return "index" if self.query.sort else None


def _bounds_of(term: bytes) -> KeyRange:
    tag = term[:1]
    if tag < STRINGS_START[:1]:
        return _NUMBERS if tag >= NUMBERS_START else _BOOLEANS
    return _STRINGS


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _show(value: Any) -> str:
    try:
        return _json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _range_of(condition: Condition) -> tuple[KeyRange, str] | None:
    """The encoded key range and its label that ``condition`` selects, if an index can."""
    comparator, value = condition.comparator, condition.value
    if comparator == "sw":
        if not isinstance(value, str):
            return None
        term = index_term(value)
        if term is None:
            return None
        return KeyRange(term, True, _prefix_end(term), False), f"{_show(value)}*"
    term = index_term(value)
    if term is None:
        return None
    shown = _show(value)
    if comparator == "eq":
        return KeyRange(term, True, term, True), f"[{shown}, {shown}]"
    # a cut long string stands for every value sharing its first bytes: keep it inclusive
    inclusive = comparator in ("ge", "le") or is_truncated(term)
    family = _bounds_of(term)
    if comparator in ("gt", "ge"):
        label = f"{'[' if comparator == 'ge' else '('}{shown}, …)"
        return KeyRange(term, inclusive, family.upper, False), label
    label = f"(…, {shown}{']' if comparator == 'le' else ')'}"
    return KeyRange(family.lower, True, term, inclusive), label


def _many_valued(definition: TableDef, attribute: str) -> bool:
    declared = definition.attributes.get(attribute)
    return declared is None or declared.type.is_list or declared.type.name == "Any"


def scan_of(condition: Condition, definition: TableDef) -> IndexScan | None:
    """The index scan that answers ``condition``, or None when no index can."""
    if len(condition.path) != 1 or condition.comparator not in DRIVING:
        return None
    attribute = condition.path[0]
    primary = attribute == definition.primary_key
    if not primary and attribute not in definition.indexed:
        return None
    found = _range_of(condition)
    if found is None:
        return None
    key_range, label = found
    many = not primary and _many_valued(definition, attribute)
    return IndexScan(attribute, primary, condition.comparator, key_range, label, many)


def _joined(first: IndexScan, second: IndexScan) -> IndexScan:
    """Two ranges on one single-valued attribute, as the one range both allow."""
    lower, upper = (first, second) if first.comparator in ("gt", "ge") else (second, first)
    label = f"{lower.label.removesuffix(', …)')}, {upper.label.removeprefix('(…, ')}"
    return IndexScan(
        first.attribute,
        first.primary,
        f"{first.comparator},{second.comparator}",
        first.key_range.intersect(second.key_range),
        label,
    )


Candidate = tuple[IndexScan, ...]


def _leaves(node: Node | None) -> list[Condition]:
    if node is None:
        return []
    if isinstance(node, Condition):
        return [node]
    return [leaf for item in node.items for leaf in _leaves(item)]


def _drives(scan: IndexScan) -> set[tuple[tuple[str, ...], str]]:
    """The (path, comparator) of the conditions ``scan`` answers."""
    if scan.join is not None:
        return {(scan.join.path, scan.join.related.comparator)}
    return {((scan.attribute,), part) for part in scan.comparator.split(",")}


class _Planner:
    """The candidates of one query: each a tuple of scans whose union holds its matches."""

    def __init__(self, definition: TableDef, store: TableStore, read: Reader, database: Database):
        self.definition = definition
        self.store = store
        self.read = read
        self.database = database
        self.counted: dict[Candidate, int] = {}
        self.refused: dict[Condition, tuple[str, str | None]] = {}
        """Why a condition through a relationship cannot drive, and which @indexed fixes it."""

    def size(self, candidate: Candidate) -> int:
        """The entries ``candidate`` walks, counted up to :data:`ESTIMATE_CAP` per scan."""
        if candidate not in self.counted:
            with self.read() as txn:
                self.counted[candidate] = sum(
                    scan.join.estimated
                    if scan.join is not None
                    else estimate(
                        txn,
                        self.store.primary if scan.primary else self.store.indexes[scan.attribute],
                        scan.key_range,
                        ESTIMATE_CAP,
                        dupsort=not scan.primary,
                    )
                    for scan in candidate
                )
        return self.counted[candidate]

    def choose(self, options: list[Candidate]) -> Candidate:
        """The option with the fewest entries (not counted when there is one)."""
        return options[0] if len(options) == 1 else min(options, key=self.size)

    def candidates(self, node: Node) -> list[Candidate]:
        """Every way to drive ``node``."""
        if isinstance(node, Condition):
            scan = scan_of(node, self.definition)
            if (
                scan is None
                and len(node.path) == 2
                and node.path[0] in self.definition.relationships
            ):
                scan = self.joined(node)
            return [] if scan is None else [(scan,)]
        if isinstance(node, Or):
            union: list[IndexScan] = []
            for item in node.items:
                options = self.candidates(item)
                if not options:
                    return []
                union.extend(self.choose(options))
            return [tuple(union)]
        found: list[Candidate] = []
        ranged: dict[str, IndexScan] = {}
        for item in node.items:
            for option in self.candidates(item):
                scan = option[0]
                joinable = (
                    len(option) == 1
                    and not scan.many_valued
                    and scan.comparator in ("gt", "ge", "lt", "le")
                )
                if joinable and scan.attribute in ranged:
                    other = ranged[scan.attribute]
                    if (other.comparator in ("gt", "ge")) != (scan.comparator in ("gt", "ge")):
                        joined = _joined(other, scan)
                        found[found.index((other,))] = (joined,)
                        ranged[scan.attribute] = joined
                        continue
                if joinable:
                    ranged[scan.attribute] = scan
                found.append(option)
        return found

    def joined(self, condition: Condition) -> IndexScan | None:
        """The join that drives ``condition`` (through a relationship), or None, the reason
        kept in :attr:`refused`."""
        definition = self.definition
        relationship = definition.relationships[condition.path[0]]
        target = self.database.tables[relationship.target]
        name = ".".join(condition.path)
        rest = Condition(condition.path[1:], condition.comparator, condition.value)
        related = scan_of(rest, target.definition)
        if related is None:
            if condition.comparator in DRIVING and _indexable(rest.path[0], target.definition):
                shown = f"{condition.comparator} {_show(condition.value)}"
                self.refused[condition] = (f"`{name}` {shown} cannot use its index", None)
            elif condition.comparator in DRIVING:
                self.refused[condition] = (
                    f"`{name}`: `{rest.path[0]}` of {target.definition.name} is not indexed",
                    f"`{rest.path[0]}` in `type {target.definition.name}`",
                )
            return None
        link = relationship.from_attribute
        if link is not None and not _indexable(link, definition):
            self.refused[condition] = (
                f"`{name}` joins through `{link}`, which is not indexed",
                f"`{link}`",
            )
            return None
        walked = link or definition.primary_key
        primary = walked == definition.primary_key
        with self.read() as txn:
            keys = relationships.join_keys(
                self.database, txn, relationship, related.attribute, related.key_range, JOIN_KEYS
            )
            if keys is None:
                self.refused[condition] = (
                    f"`{name}` matches more than {JOIN_KEYS} {target.definition.name} records, "
                    "too many to join on",
                    None,
                )
                return None
            estimated = len(keys) if primary else self._under(txn, walked, keys)
        join = Join(relationship, related, len(keys), estimated)
        label = f"{len(keys)} {'key' if len(keys) == 1 else 'keys'} joined through `{name}`"
        many = not primary and _many_valued(definition, walked)
        return IndexScan(walked, primary, "in", KeyRange(), label, many, join)

    def _under(self, txn: lmdb.Transaction, attribute: str, keys: list[bytes]) -> int:
        """The entries of ``attribute``'s index under ``keys``, counted up to the cap."""
        index, total = self.store.indexes[attribute], 0
        for key in keys:
            if total >= ESTIMATE_CAP:
                break
            term = KeyRange(key, True, key, True)
            total += estimate(txn, index, term, ESTIMATE_CAP - total, dupsort=True)
        return total


def _indexable(attribute: str, definition: TableDef) -> bool:
    return attribute == definition.primary_key or attribute in definition.indexed


def _refusal(
    query: Query, definition: TableDef, refused: dict[Condition, tuple[str, str | None]]
) -> BadRequest:
    reasons, unindexed = [], []
    for leaf in _leaves(query.where):
        name = ".".join(leaf.path)
        if leaf.comparator not in DRIVING:
            reasons.append(f"`{name}` {leaf.comparator} cannot use an index")
        elif leaf in refused:
            reason, fix = refused[leaf]
            reasons.append(reason)
            if fix is not None:
                unindexed.append(fix)
        elif len(leaf.path) == 1 and scan_of(leaf, definition) is None:
            if not _indexable(leaf.path[0], definition):
                reasons.append(f"`{name}` is not indexed")
                unindexed.append(f"`{name}`")
            else:
                shown = f"{leaf.comparator} {_show(leaf.value)}"
                reasons.append(f"`{name}` {shown} cannot use its index")
        elif len(leaf.path) > 1:
            reasons.append(f"`{name}` is a nested path, which no index holds")
    fix = (
        f"add @indexed to {unindexed[0]} in schema.graphql"
        if unindexed
        else "add an eq, range or sw condition on an @indexed attribute"
    )
    return BadRequest(
        f"no index can drive this query on {definition.name} ({'; '.join(reasons)}): "
        "every branch needs an eq, range (gt, ge, lt, le) or sw condition on an @indexed "
        "attribute or the primary key, or through a relationship (joined on an @indexed key)",
        hint=f"{fix}, or set query.allowScans: true in config.yaml to allow full scans",
    )


def plan_query(
    query: Query,
    definition: TableDef,
    store: TableStore,
    read: Reader,
    limits: Limits,
    *,
    database: Database,
    estimate_all: bool = False,
) -> Plan:
    """The :class:`Plan` for the bound ``query`` over ``store``.

    Args:
        read: opens a short read transaction, for counting candidate scans and joins.
        database: ``store``'s database, whose other tables conditions through
            relationships join.
        estimate_all: count the chosen scans even when there is no choice (for explain).

    Raises:
        BadRequest: no index can drive the query and scans are not allowed.
    """
    planner = _Planner(definition, store, read, database)
    where = query.where
    scans: Candidate = ()
    full_scan = False
    if where is not None:
        options = planner.candidates(where)
        if options:
            scans = planner.choose(options)
        elif limits.allow_scans:
            full_scan = True
        else:
            raise _refusal(query, definition, planner.refused)
    counted = bool(scans) and (estimate_all or (bool(planner.counted) and scans in planner.counted))
    estimated = planner.size(scans) if counted else None
    driving = set().union(*map(_drives, scans))
    filters = tuple(leaf for leaf in _leaves(where) if (leaf.path, leaf.comparator) not in driving)
    order, reverse, nulls_after, scans = _ordering(
        query, definition, scans, full_scan, limits.max_sort_rows
    )
    return Plan(query, scans, order, reverse, nulls_after, estimated, full_scan, filters)


def _ordering(
    query: Query, definition: TableDef, scans: Candidate, full_scan: bool, max_sort_rows: int
) -> tuple[Order, bool, bool, Candidate]:
    """How the plan makes its order: (order, reverse, nulls_after, scans).

    A top-k heap holds ``limit`` rows, so it is used only for limits within
    ``query.maxSortRows``; a larger limit takes the bounded in-memory sort.
    """
    small_limit = query.end is not None and query.end <= max_sort_rows
    buffered: Order = "heap" if small_limit else "memory"
    if not query.sort:
        if all(scan.key_ordered for scan in scans):
            return ("stream" if len(scans) <= 1 else "merge"), False, False, scans
        return buffered, False, False, scans
    if len(query.sort) != 1 or len(query.sort[0].path) != 1 or full_scan:
        return buffered, False, False, scans
    sort = query.sort[0]
    attribute = sort.path[0]
    primary = attribute == definition.primary_key
    if not scans:
        if primary:
            every = IndexScan(attribute, True, "all", KeyRange(), "all")
            return "stream", sort.descending, False, (every,)
        if attribute in definition.indexed and not _many_valued(definition, attribute):
            every = IndexScan(attribute, False, "all", KeyRange(), "all")
            return "stream", sort.descending, True, (every,)
        return buffered, False, False, scans
    if len(scans) == 1 and scans[0].attribute == attribute and not scans[0].many_valued:
        return "stream", sort.descending, False, scans
    return buffered, False, False, scans
