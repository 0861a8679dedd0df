"""Tests for the storage layer: the writer's group commit, operations, audit log, indexes,
map growth, the hybrid clock and the record codec.

Everything runs on real LMDB environments in ``tmp_path``; no server is started.
Jobs meant to share one group are submitted with :meth:`Writer.execute` before
:meth:`Writer.start`, so the writer finds them all waiting in its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kiln.errors import Conflict, InternalServerError, NotFound, PreconditionFailed
from kiln.schema import parse_schema
from kiln.storage.audit import AuditEntry
from kiln.storage.clock import HybridClock
from kiln.storage.database import Database
from kiln.storage.operations import (
    Delete,
    DeleteMatching,
    Insert,
    LogMessage,
    Operation,
    Patch,
    Put,
)
from kiln.storage.records import decode_record, encode_record, pack_value, unpack_value
from kiln.storage.writer import Receipt, Writer
from kiln.types import VERSION_COUNTER_BITS as COUNTER_BITS
from kiln.types import Key, Record, version_millis

SCHEMA = """
type Dog @table {
  id: Int @primaryKey
  name: String
  breed: String @indexed
  tags: [String] @indexed
  age: Int
}

type Tag @table {
  id: ID @primaryKey
  label: String
}
"""

MiB = 1024 * 1024


def open_database(path: Path, *, map_size: int = 16 * MiB, clock: HybridClock | None = None):
    """A Database on ``path`` with the tables of :data:`SCHEMA`."""
    tables = list(parse_schema(SCHEMA).tables.values())
    return Database("data", path, tables, map_size=map_size, clock=clock or HybridClock())


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[Database]:
    db = open_database(tmp_path / "data")
    yield db
    db.close()


@pytest.fixture()
def writer(database: Database) -> Iterator[Writer]:
    """A writer that is not started yet: jobs submitted now wait for one group."""
    w = Writer(database)
    yield w
    w.close()


@pytest.fixture()
def running(writer: Writer) -> Writer:
    """The writer, started."""
    writer.start()
    return writer


def seed(database: Database, *operations: Operation) -> Receipt:
    """Commit ``operations`` with a writer of its own, closed afterwards."""
    w = Writer(database)
    w.start()
    try:
        return w.execute_sync(list(operations))
    finally:
        w.close()


def run_group(writer: Writer, jobs: Sequence[Sequence[Operation]], user: str | None = None):
    """Submit every job, then start ``writer``, so all jobs land in one group.

    Returns each job's Receipt or the exception it raised, in job order.
    """

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(writer.execute(list(job), user)) for job in jobs]
        await asyncio.sleep(0)  # every task runs up to its first await: all jobs are queued
        writer.start()
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def get(database: Database, key: Key, table: str = "Dog") -> tuple[int, Record] | None:
    with database.read() as txn:
        return database.tables[table].get(txn, key)


def stored(database: Database, key: Key, table: str = "Dog") -> Record | None:
    found = get(database, key, table)
    return None if found is None else found[1]


def all_records(database: Database, table: str = "Dog") -> list[Record]:
    with database.read() as txn:
        return [record for _key, record in database.tables[table].scan(txn, None, 1_000_000)]


def audit_entries(database: Database) -> list[Any]:
    with database.read() as txn:
        return list(database.audit.read(txn))


# --------------------------------------------------------------------------- group commit


def test_group_commit_with_one_failing_request(database: Database, writer: Writer) -> None:
    before = seed(database, Put("Dog", 1, {"name": "seed", "breed": "lab"}))
    jobs: list[list[Operation]] = [
        [Put("Dog", 10, {"name": "a"})],
        [Insert("Dog", 11, {"name": "b"})],
        [Put("Dog", 12, {"name": "c"}), Put("Dog", 13, {"name": "d"})],
        # valid Put, then an Insert of an existing key: the job fails as a whole
        [Put("Dog", 100, {"name": "never"}), Insert("Dog", 1, {"name": "dup"})],
        [Patch("Dog", 1, {"age": 7})],
        [Insert("Tag", "t1", {"label": "x"})],
    ]
    results = run_group(writer, jobs)

    failed = results[3]
    assert isinstance(failed, Conflict)
    assert failed.status == 409
    assert stored(database, 100) is None, "the failing job's first operation was kept"
    assert stored(database, 1) == {"id": 1, "name": "seed", "breed": "lab", "age": 7}

    receipts = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, Receipt) for r in receipts), results
    for receipt in receipts:
        for result in receipt.results:
            table = "Tag" if isinstance(result.key, str) else "Dog"
            assert get(database, result.key, table) == (result.version, result.record)
    assert stored(database, 13) == {"id": 13, "name": "d"}
    assert stored(database, "t1", "Tag") == {"id": "t1", "label": "x"}

    txn_ids = {r.txn_id for r in receipts}
    assert len(txn_ids) == 1, f"the group was split over commits {txn_ids}"
    [txn_id] = txn_ids
    assert txn_id > before.txn_id
    assert database.env.info()["last_txnid"] == txn_id, "more than one commit for one group"


def test_single_operation_failures_in_one_group(database: Database, writer: Writer) -> None:
    """Single-operation jobs share the group's transaction; each still fails alone.

    An expected failure (a stale version, a missing record) is raised before the job
    writes; any other failure (here a key LMDB cannot hold) makes the writer redo the
    group without that job, so neither kind leaves a trace.
    """
    seed(database, Put("Dog", 1, {"name": "seed", "breed": "lab"}))
    entries_before = len(audit_entries(database))
    jobs: list[list[Operation]] = [
        [Put("Dog", 20, {"name": "a", "breed": "pug"})],
        [Patch("Dog", 1, {"age": 3}, if_version=1)],  # stale: PreconditionFailed
        [Put("Dog", 21, {"name": "b", "tags": ["x"]})],
        [Put("Dog", float("nan"), {"name": "nan"})],  # not a storable key: ValueError
        [Delete("Dog", 999)],  # NotFound
        [Put("Dog", 22, {"name": "c", "breed": "pug"})],
    ]
    results = run_group(writer, jobs)

    assert isinstance(results[1], PreconditionFailed)
    assert isinstance(results[3], ValueError)
    assert isinstance(results[4], NotFound)
    receipts = [results[i] for i in (0, 2, 5)]
    assert all(isinstance(r, Receipt) for r in receipts), results
    assert len({r.txn_id for r in receipts}) == 1
    assert [r["id"] for r in all_records(database)] == [1, 20, 21, 22]
    assert stored(database, 1) == {"id": 1, "name": "seed", "breed": "lab"}
    assert len(audit_entries(database)) == entries_before + 3
    with database.read() as txn:
        breeds = list(database.tables["Dog"].index_entries(txn, "breed"))
    assert breeds == [("lab", 1), ("pug", 20), ("pug", 22)]


def test_group_commit_with_threads_before_start(database: Database, writer: Writer) -> None:
    """Blocking submitters (execute_sync in threads) queued before start share one commit."""
    seed(database, Put("Dog", 1, {"name": "seed"}))
    outcomes: dict[int, Any] = {}
    jobs: dict[int, list[Operation]] = {
        i: [Put("Dog", 200 + i, {"name": f"n{i}"})] for i in range(8)
    }
    jobs[4] = [Put("Dog", 300, {"name": "never"}), Insert("Dog", 1, {"name": "dup"})]

    submitting = threading.Semaphore(0)

    def submit(i: int) -> None:
        submitting.release()
        try:
            outcomes[i] = writer.execute_sync(jobs[i])
        except Exception as error:
            outcomes[i] = error

    threads = [threading.Thread(target=submit, args=(i,)) for i in jobs]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert submitting.acquire(timeout=10)
    time.sleep(0.2)  # each thread is a few instructions from queueing its job: let it
    assert not outcomes, "a job was answered before the writer started"
    writer.start()
    for thread in threads:
        thread.join(10)
    assert isinstance(outcomes[4], Conflict)
    assert stored(database, 300) is None
    receipts = [outcomes[i] for i in jobs if i != 4]
    assert len({r.txn_id for r in receipts}) == 1
    for i in jobs:
        if i != 4:
            assert stored(database, 200 + i) == {"id": 200 + i, "name": f"n{i}"}


def test_nested_transaction_isolation(database: Database, writer: Writer) -> None:
    seed(database, Put("Dog", 7, {"name": "a", "breed": "x", "tags": ["t0"]}))
    jobs: list[list[Operation]] = [
        [Patch("Dog", 7, {"age": 3})],
        [
            Put("Dog", 7, {"name": "bad", "breed": "evil", "tags": ["evil"]}),
            Put("Dog", 8, {"name": "never", "breed": "evil"}),
            Delete("Dog", 99),  # does not exist: NotFound rolls back the whole job
        ],
        [Patch("Dog", 7, {"name": "b"})],
        [Put("Dog", 9, {"name": "good", "breed": "y", "tags": []})],
    ]
    results = run_group(writer, jobs)
    assert isinstance(results[1], NotFound)
    assert isinstance(results[0], Receipt)
    assert isinstance(results[2], Receipt)
    assert isinstance(results[3], Receipt)
    assert results[0].txn_id == results[2].txn_id == results[3].txn_id

    # the third job merged onto the first job's result, not onto the failed job's Put
    assert results[2].results[0].record == {
        "id": 7,
        "name": "b",
        "breed": "x",
        "tags": ["t0"],
        "age": 3,
    }
    assert stored(database, 7) == results[2].results[0].record
    assert stored(database, 8) is None
    assert stored(database, 9) == {"id": 9, "name": "good", "breed": "y", "tags": []}
    with database.read() as txn:
        store = database.tables["Dog"]
        assert sorted(store.index_entries(txn, "breed")) == [("x", 7), ("y", 9)]
        assert sorted(store.index_entries(txn, "tags")) == [("t0", 7)]
    kinds = [(e.key, e.kind) for e in audit_entries(database)]
    assert kinds == [(7, "put"), (7, "patch"), (7, "patch"), (9, "put")]


# --------------------------------------------------------------------------- durability of acks


def test_environment_syncs_every_commit(database: Database) -> None:
    """A commit syncs its pages; the meta page is left to the sync thread (metasync off)."""
    flags = database.env.flags()
    assert flags["sync"] is True
    assert flags["metasync"] is False
    assert flags["map_async"] is False


class SyncRecordingDatabase(Database):
    """A real Database that notes, for each sync, the last commit it covers and when it ended."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.synced: list[tuple[int, float]] = []

    def sync(self) -> None:
        covered = self.env.info()["last_txnid"]
        super().sync()
        self.synced.append((covered, time.monotonic()))


def test_ack_follows_a_sync_that_covers_its_commit(tmp_path: Path) -> None:
    """Every acknowledged commit was covered by a finished sync before the ack went out."""
    tables = list(parse_schema(SCHEMA).tables.values())
    database = SyncRecordingDatabase(
        "data", tmp_path / "data", tables, map_size=16 * MiB, clock=HybridClock()
    )
    writer = Writer(database)
    writer.start()
    acks: list[tuple[int, float]] = []
    versions: list[int] = []
    lock = threading.Lock()

    def work(start: int) -> None:
        for key in range(start, start + 30):
            receipt = writer.execute_sync([Put("Dog", key, {"name": f"dog {key}"})])
            with lock:
                acks.append((receipt.txn_id, time.monotonic()))
                versions.append(receipt.results[0].version)

    try:
        threads = [threading.Thread(target=work, args=(1000 * n,)) for n in range(1, 7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        late = [
            (txn_id, acked)
            for txn_id, acked in acks
            if not any(covered >= txn_id and ended <= acked for covered, ended in database.synced)
        ]
        assert len(acks) == 180
        assert late == []
        assert len(database.synced) < len(acks)  # groups share their syncs
        assert writer.durable_through >= max(versions)
    finally:
        writer.close()
        database.close()


def test_async_ack_never_precedes_the_commit(database: Database, running: Writer) -> None:
    problems: list[str] = []
    store = database.tables["Dog"]

    def on_done(key: int, task: asyncio.Task[Receipt]) -> None:
        try:
            receipt = task.result()
            last = database.env.info()["last_txnid"]
            if last < receipt.txn_id:
                problems.append(f"{key}: acked txn {receipt.txn_id}, last committed {last}")
            with database.read() as txn:
                found = store.get(txn, key)
            if found is None or found[1] != {"id": key, "name": f"dog {key}"}:
                problems.append(f"{key}: a fresh read found {found!r}")
        except Exception as error:  # reported below, not swallowed by the loop
            problems.append(f"{key}: {error!r}")

    async def main() -> None:
        tasks = []
        for key in range(1, 301):
            task = asyncio.create_task(running.execute([Put("Dog", key, {"name": f"dog {key}"})]))
            task.add_done_callback(lambda t, key=key: on_done(key, t))
            tasks.append(task)
            if key % 25 == 0:
                await asyncio.sleep(0.001)  # spread the writes over several groups
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert problems == []
    with database.read() as txn:
        assert store.count(txn) == 300


def test_sync_ack_never_precedes_the_commit(database: Database, running: Writer) -> None:
    problems: list[str] = []
    store = database.tables["Dog"]
    txn_ids: set[int] = set()

    def work(start: int) -> None:
        for key in range(start, start + 40):
            try:
                receipt = running.execute_sync([Put("Dog", key, {"name": f"dog {key}"})])
                txn_ids.add(receipt.txn_id)
                last = database.env.info()["last_txnid"]
                if last < receipt.txn_id:
                    problems.append(f"{key}: acked txn {receipt.txn_id}, last committed {last}")
                with database.read() as txn:
                    found = store.get(txn, key)
                if found is None or found[0] != receipt.results[0].version:
                    problems.append(f"{key}: a fresh read found {found!r}")
            except Exception as error:
                problems.append(f"{key}: {error!r}")

    threads = [threading.Thread(target=work, args=(1000 * n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert problems == []
    assert len(txn_ids) > 1


READER_SCRIPT = """
import json, sys
import lmdb
from kiln.storage.keys import encode_key
from kiln.storage.records import decode_record

env = lmdb.open(sys.argv[1], readonly=True, max_dbs=16)
with env.begin() as txn:
    store = env.open_db(b"t:Dog", txn=txn, create=False)
    raw = txn.get(encode_key(int(sys.argv[2])), db=store)
    if raw is None:
        print(json.dumps(None))
    else:
        version, record = decode_record(raw)
        print(json.dumps({"version": version, "record": record}))
"""


def test_another_process_sees_an_acknowledged_write(database: Database, running: Writer) -> None:
    for key in (1, 2):
        receipt = running.execute_sync([Put("Dog", key, {"name": f"dog {key}", "age": key})])
        done = subprocess.run(
            [sys.executable, "-c", READER_SCRIPT, str(database.path), str(key)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        seen = json.loads(done.stdout)
        assert seen == {
            "version": receipt.results[0].version,
            "record": {"id": key, "name": f"dog {key}", "age": key},
        }


# --------------------------------------------------------------------------- operations


def test_patches_in_one_group_merge_onto_the_newest_record(
    database: Database, writer: Writer
) -> None:
    seed(database, Put("Dog", 5, {"name": "rex", "breed": "lab", "age": 1}))
    first, second = run_group(
        writer, [[Patch("Dog", 5, {"age": 2})], [Patch("Dog", 5, {"breed": "pug"})]]
    )
    assert isinstance(first, Receipt)
    assert isinstance(second, Receipt)
    assert first.txn_id == second.txn_id
    assert first.results[0].record == {"id": 5, "name": "rex", "breed": "lab", "age": 2}
    assert second.results[0].record == {"id": 5, "name": "rex", "breed": "pug", "age": 2}
    assert second.results[0].version > first.results[0].version
    assert get(database, 5) == (second.results[0].version, second.results[0].record)
    assert first.results[0].created is False


def test_if_version_precondition(database: Database, running: Writer) -> None:
    old = running.execute_sync([Put("Dog", 1, {"name": "v1"})]).results[0].version
    current = running.execute_sync([Put("Dog", 1, {"name": "v2"})]).results[0].version
    assert current > old

    for stale in (
        Put("Dog", 1, {"name": "lost"}, if_version=old),
        Patch("Dog", 1, {"name": "lost"}, if_version=old),
        Delete("Dog", 1, if_version=old),
        Put("Dog", 1, {"name": "lost"}, if_version=current + 1),
    ):
        with pytest.raises(PreconditionFailed) as caught:
            running.execute_sync([stale])
        assert caught.value.status == 412
        assert get(database, 1) == (current, {"id": 1, "name": "v2"})
    with pytest.raises(PreconditionFailed):
        running.execute_sync([Put("Dog", 2, {"name": "new"}, if_version=current)])
    assert stored(database, 2) is None

    patched = running.execute_sync([Patch("Dog", 1, {"age": 4}, if_version=current)])
    result = patched.results[0]
    assert result.record == {"id": 1, "name": "v2", "age": 4}
    put = running.execute_sync([Put("Dog", 1, {"name": "v3"}, if_version=result.version)])
    assert stored(database, 1) == {"id": 1, "name": "v3"}
    running.execute_sync([Delete("Dog", 1, if_version=put.results[0].version)])
    assert stored(database, 1) is None


def test_if_version_is_checked_at_write_time(database: Database, writer: Writer) -> None:
    """Two requests holding the same ETag: the first wins, the second fails in the writer."""
    version = seed(database, Put("Dog", 1, {"name": "v1"})).results[0].version
    first, second = run_group(
        writer,
        [
            [Put("Dog", 1, {"name": "first"}, if_version=version)],
            [Put("Dog", 1, {"name": "second"}, if_version=version)],
        ],
    )
    assert isinstance(first, Receipt)
    assert isinstance(second, PreconditionFailed)
    assert stored(database, 1) == {"id": 1, "name": "first"}


def test_insert_generates_integer_keys(database: Database, running: Writer) -> None:
    assert running.execute_sync([Insert("Dog", None, {"name": "a"})]).results[0].key == 1
    two = running.execute_sync([Insert("Dog", None, {"name": "b"}), Insert("Dog", None, {})])
    assert [r.key for r in two.results] == [2, 3]
    assert all(r.created for r in two.results)
    running.execute_sync([Put("Dog", 41, {"name": "forty-one"})])
    result = running.execute_sync([Insert("Dog", None, {"name": "c"})]).results[0]
    assert result.key == 42
    assert result.record == {"id": 42, "name": "c"}
    assert stored(database, 42) == {"id": 42, "name": "c"}


def test_inserts_in_one_group_get_distinct_keys(database: Database, writer: Writer) -> None:
    seed(database, Put("Dog", 10, {"name": "ten"}))
    results = run_group(writer, [[Insert("Dog", None, {"name": str(i)})] for i in range(5)])
    assert [r.results[0].key for r in results] == [11, 12, 13, 14, 15]
    assert [stored(database, k)["name"] for k in range(11, 16)] == ["0", "1", "2", "3", "4"]


def test_insert_generates_uuid_keys_for_id_tables(database: Database, running: Writer) -> None:
    receipt = running.execute_sync([Insert("Tag", None, {"label": "x"}) for _ in range(3)])
    keys = [r.key for r in receipt.results]
    assert len(set(keys)) == 3
    for key in keys:
        assert isinstance(key, str)
        assert str(uuid.UUID(key)) == key
        assert stored(database, key, "Tag") == {"id": key, "label": "x"}


def test_insert_of_existing_key_conflicts(database: Database, running: Writer) -> None:
    running.execute_sync([Put("Dog", 1, {"name": "a"})])
    with pytest.raises(Conflict):
        running.execute_sync([Insert("Dog", 1, {"name": "b"})])
    with pytest.raises(NotFound):
        running.execute_sync([Patch("Dog", 2, {"name": "b"})])
    with pytest.raises(NotFound):
        running.execute_sync([Delete("Dog", 2)])
    assert all_records(database) == [{"id": 1, "name": "a"}]


# --------------------------------------------------------------------------- audit log


def test_audit_log_has_one_entry_per_committed_write(database: Database, running: Writer) -> None:
    receipts = [
        running.execute_sync([Put("Dog", 1, {"name": "a", "breed": "lab"})], user="alice"),
        running.execute_sync(
            [Put("Dog", 2, {"name": "b"}), Insert("Tag", None, {"label": "t"})], user="bob"
        ),
        running.execute_sync([Patch("Dog", 1, {"age": 3})], user="alice"),
        running.execute_sync([Delete("Dog", 2)]),
    ]
    with pytest.raises(Conflict):  # a failed job leaves no entry
        running.execute_sync([Put("Dog", 5, {"name": "x"}), Insert("Dog", 1, {})], user="eve")

    entries = audit_entries(database)
    results = [(r, receipt) for receipt in receipts for r in receipt.results]
    assert len(entries) == len(results) == 5
    versions = [e.version for e in entries]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert all(e.user != "eve" for e in entries)

    expected = [
        ("Dog", 1, "put", {"id": 1, "name": "a", "breed": "lab"}, None, "alice"),
        ("Dog", 2, "put", {"id": 2, "name": "b"}, None, "bob"),
        ("Tag", receipts[1].results[1].key, "put", None, None, "bob"),
        ("Dog", 1, "patch", {"id": 1, "name": "a", "breed": "lab", "age": 3}, {"age": 3}, "alice"),
        ("Dog", 2, "delete", None, None, None),
    ]
    for entry, (result, _receipt), want in zip(entries, results, expected, strict=True):
        table, key, kind, record, patch, user = want
        assert (entry.table, entry.key, entry.kind, entry.patch, entry.user) == (
            table,
            key,
            kind,
            patch,
            user,
        )
        assert entry.version == result.version
        assert entry.record == result.record
        if record is not None:
            assert entry.record == record
    assert entries[2].record == {"id": entries[2].key, "label": "t"}

    # the audit store and the records agree: each stored record's version has its entry
    by_version = {e.version: e for e in entries}
    with database.read() as txn:
        assert database.audit.last_version(txn) == versions[-1]
        for table in ("Dog", "Tag"):
            for encoded_key, record in database.tables[table].scan(txn, None, 100):
                version, _ = database.tables[table].get(txn, record["id"])
                assert by_version[version].record == record, encoded_key
        assert list(database.audit.read(txn, after=versions[2])) == entries[3:]


def test_audit_versions_increase_under_concurrency(database: Database, running: Writer) -> None:
    def work(base: int) -> None:
        for key in range(base, base + 25):
            running.execute_sync([Put("Dog", key, {"name": "x"}), Patch("Dog", key, {"age": 1})])

    threads = [threading.Thread(target=work, args=(100 * n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    entries = audit_entries(database)
    assert len(entries) == 4 * 25 * 2
    versions = [e.version for e in entries]
    assert all(a < b for a, b in itertools.pairwise(versions))


# --------------------------------------------------------------------------- indexes


def expected_index(database: Database, attribute: str) -> list[tuple[Any, Key]]:
    pairs: set[tuple[Any, Key]] = set()
    for record in all_records(database):
        value = record[attribute]
        for item in value if isinstance(value, list) else [value]:
            pairs.add((item, record["id"]))
    return sorted(pairs)


def index(database: Database, attribute: str) -> list[tuple[Any, Key]]:
    with database.read() as txn:
        return sorted(database.tables["Dog"].index_entries(txn, attribute))


def test_indexes_follow_put_patch_delete(database: Database, running: Writer) -> None:
    def check() -> None:
        for attribute in ("breed", "tags"):
            assert index(database, attribute) == expected_index(database, attribute)

    running.execute_sync([Put("Dog", 1, {"breed": "lab", "tags": ["a", "b"]})])
    running.execute_sync([Put("Dog", 2, {"breed": "lab", "tags": ["b", "b", "c"]})])
    check()
    assert index(database, "breed") == [("lab", 1), ("lab", 2)]
    assert index(database, "tags") == [("a", 1), ("b", 1), ("b", 2), ("c", 2)]

    running.execute_sync([Patch("Dog", 1, {"breed": "pug", "tags": ["c"]})])
    check()
    assert index(database, "breed") == [("lab", 2), ("pug", 1)]
    assert index(database, "tags") == [("b", 2), ("c", 1), ("c", 2)]

    running.execute_sync([Patch("Dog", 2, {"name": "unrelated"})])
    check()
    running.execute_sync([Put("Dog", 2, {"breed": "pug", "tags": []})])
    check()
    assert index(database, "tags") == [("c", 1)]

    running.execute_sync([Delete("Dog", 1)])
    check()
    assert index(database, "breed") == [("pug", 2)]
    assert index(database, "tags") == []

    with pytest.raises(Conflict):  # a failed job does not touch the indexes
        running.execute_sync(
            [Put("Dog", 2, {"breed": "gone", "tags": ["z"]}), Insert("Dog", 2, {})]
        )
    check()
    running.execute_sync([Delete("Dog", 2)])
    assert index(database, "breed") == []
    assert index(database, "tags") == []


def test_indexes_stay_exact_under_random_writes(database: Database, running: Writer) -> None:
    rng = random.Random(1234)
    breeds = ["lab", "pug", "collie", "mutt"]
    tags = ["a", "b", "c", "d", "e"]
    for _ in range(150):
        key = rng.randint(1, 12)
        action = rng.choice(["put", "patch", "delete"])
        operation: Operation
        if action == "put":
            operation = Put(
                "Dog",
                key,
                {"breed": rng.choice(breeds), "tags": rng.sample(tags, rng.randint(0, 3))},
            )
        elif action == "patch":
            operation = Patch("Dog", key, {"tags": rng.sample(tags, rng.randint(0, 3))})
        else:
            operation = Delete("Dog", key)
        with contextlib.suppress(NotFound):
            running.execute_sync([operation])
    for attribute in ("breed", "tags"):
        assert index(database, attribute) == expected_index(database, attribute)


# --------------------------------------------------------------------------- map growth


@pytest.mark.parametrize("map_size", [4096, 16 * 1024])
def test_a_map_too_small_for_the_catalog_grows_as_it_opens(tmp_path: Path, map_size: int) -> None:
    database = open_database(tmp_path / "data", map_size=map_size)
    try:
        assert database.env.info()["map_size"] > map_size
        writer = Writer(database)
        writer.start()
        writer.execute_sync([Put("Dog", 1, {"name": "Rex"})])
        writer.close()
        with database.read() as txn:
            assert database.tables["Dog"].get(txn, 1) is not None
    finally:
        database.close()


def test_map_grows_while_a_reader_keeps_reading(tmp_path: Path) -> None:
    database = open_database(tmp_path / "data", map_size=256 * 1024)
    writer = Writer(database)
    writer.start()
    store = database.tables["Dog"]
    written: list[int] = []
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def payload(key: int) -> str:
        return f"{key:08d}" * 8192  # 64 KiB

    def reader() -> None:
        nonlocal reads
        rng = random.Random(7)
        while not stop.is_set():
            try:
                acknowledged = list(written)  # taken before the snapshot: all committed
                with database.read() as txn:
                    count = store.count(txn)
                    assert count >= len(acknowledged)
                    if acknowledged:
                        key = rng.choice(acknowledged)
                        found = store.get(txn, key)
                        assert found is not None, f"acknowledged record {key} not found"
                        assert found[1]["name"] == payload(key)
                reads += 1
            except BaseException as error:
                errors.append(error)
                return

    def write(base: int) -> None:
        try:
            for key in range(base, base + 40):
                writer.execute_sync([Put("Dog", key, {"name": payload(key)})])
                written.append(key)
        except BaseException as error:
            errors.append(error)

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    writers = [threading.Thread(target=write, args=(1000 * n,)) for n in range(1, 5)]
    try:
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(60)
    finally:
        stop.set()
        reader_thread.join(10)
        writer.close()
    try:
        assert errors == []
        assert len(written) == 160  # 10 MiB of record bodies
        assert reads > 0
        assert database.env.info()["map_size"] >= 10 * MiB
        with database.read() as txn:
            assert store.count(txn) == 160
            for key in written:
                assert store.get(txn, key)[1] == {"id": key, "name": payload(key)}
    finally:
        database.close()


def test_one_group_larger_than_the_map(tmp_path: Path) -> None:
    """A single group that needs several doublings is retried until it fits."""
    database = open_database(tmp_path / "data", map_size=256 * 1024)
    writer = Writer(database)
    try:
        jobs = [[Put("Dog", key, {"name": "x" * 100_000})] for key in range(40)]
        results = run_group(writer, jobs)
        assert all(isinstance(r, Receipt) for r in results), results
        assert len({r.txn_id for r in results}) == 1
        assert len(all_records(database)) == 40
        assert len(audit_entries(database)) == 40
    finally:
        writer.close()
        database.close()


# --------------------------------------------------------------------------- clock


def test_clock_is_strictly_increasing_across_threads() -> None:
    clock = HybridClock()
    per_thread: list[list[int]] = []

    def work() -> None:
        mine = [clock.now() for _ in range(5000)]
        per_thread.append(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [v for mine in per_thread for v in mine]
    assert len(everything) == 40_000
    assert len(set(everything)) == len(everything), "two threads got the same version"
    for mine in per_thread:
        assert all(a < b for a, b in itertools.pairwise(mine))


def test_clock_reads_as_wall_time_and_observe_moves_it_forward() -> None:
    clock = HybridClock()
    before = time.time_ns() // 1_000_000
    version = clock.now()
    assert before <= version_millis(version) <= time.time_ns() // 1_000_000
    future = (version_millis(version) + 3_600_000) << COUNTER_BITS
    clock.observe(future)
    assert clock.now() == future + 1
    clock.observe(version)  # observing the past does not move it back
    assert clock.now() == future + 2


def test_clock_is_ahead_of_stored_versions_after_reopening(tmp_path: Path) -> None:
    clock = HybridClock()
    # a version an hour ahead of the wall clock, as a peer's or a skewed clock's could be
    clock.observe((time.time_ns() // 1_000_000 + 3_600_000) << COUNTER_BITS)
    database = open_database(tmp_path / "data", clock=clock)
    writer = Writer(database)
    writer.start()
    last = writer.execute_sync([Put("Dog", 1, {"name": "a"}), Put("Dog", 2, {"name": "b"})])
    writer.close()
    database.close()
    last_version = last.results[-1].version

    fresh = HybridClock()
    reopened = open_database(tmp_path / "data", clock=fresh)
    try:
        assert fresh.now() > last_version
        writer = Writer(reopened)
        writer.start()
        try:
            receipt = writer.execute_sync([Patch("Dog", 1, {"age": 1})])
        finally:
            writer.close()
        assert receipt.results[0].version > last_version
        assert get(reopened, 1) == (receipt.results[0].version, receipt.results[0].record)
    finally:
        reopened.close()


# --------------------------------------------------------------------------- record codec


def test_record_codec_round_trip() -> None:
    when = datetime.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=datetime.UTC)
    record = {
        "id": 1,
        "when": when,
        "blob": b"\x00\x01\xffbinary",
        "big": 2**100 + 7,
        "negative_big": -(2**90),
        "edges": [2**63 - 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1],
        "nested": {
            "list": [1, "two", 3.5, None, True, {"deep": [2**70, {"x": b"y"}]}],
            "dict": {"a": {"b": {"c": [when]}}},
        },
        "float": 1.5,
        "text": "héllo ✓",
    }
    version = (1 << 60) + 3
    data = encode_record(version, record)
    assert isinstance(data, bytes)
    decoded_version, decoded = decode_record(data)
    assert decoded_version == version
    assert decoded == record
    assert isinstance(decoded["blob"], bytes)
    assert decoded["when"] == when
    assert decoded["nested"]["dict"]["a"]["b"]["c"][0] == when
    assert decoded["edges"] == [2**63 - 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]
    assert decode_record(memoryview(data)) == (version, record)
    assert unpack_value(pack_value([2**200, -(2**200)])) == [2**200, -(2**200)]


def test_record_codec_through_the_writer(database: Database, running: Writer) -> None:
    """Big integers, bytes and dates survive a write and a read of the stored record."""
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    record = {"name": "codec", "age": 3, "extra": {"big": -(2**80), "blob": b"\x00", "when": when}}
    running.execute_sync([Put("Dog", 1, record)])
    assert stored(database, 1) == {"id": 1, **record}


def test_syncs_and_map_growth_take_turns(tmp_path: Path) -> None:
    """LMDB refuses a sync that starts while the map is being resized; kiln never asks it to."""
    database = open_database(tmp_path / "data", map_size=1 * MiB)
    failures: list[BaseException] = []
    growing = True

    def keep_syncing() -> None:
        while growing:
            try:
                database.sync()
            except BaseException as error:  # collected and asserted below
                failures.append(error)

    syncer = threading.Thread(target=keep_syncing)
    syncer.start()
    try:
        for _ in range(12):  # 1 MiB → 4 GiB of address space, no disk
            database.grow()
    finally:
        growing = False
        syncer.join(10)
        database.close()
    assert failures == []


def test_a_failed_sync_fails_its_writes_and_every_later_one(tmp_path: Path) -> None:
    """After a sync fails nobody knows what is on disk: the writes are not acknowledged,
    later ones are refused, and the bound of durable versions stays where it was."""

    class FailingSyncDatabase(Database):
        fail = False

        def sync(self) -> None:
            if self.fail:
                raise OSError(5, "Input/output error")
            super().sync()

    tables = list(parse_schema(SCHEMA).tables.values())
    database = FailingSyncDatabase(
        "data", tmp_path / "data", tables, map_size=16 * MiB, clock=HybridClock()
    )
    writer = Writer(database)
    writer.start()
    try:
        writer.execute_sync([Put("Dog", 1, {"name": "one"})])
        durable = writer.durable_through
        database.fail = True
        with pytest.raises(InternalServerError, match="could not sync to disk"):
            writer.execute_sync([Put("Dog", 2, {"name": "two"})])
        database.fail = False  # even a disk that answers again is not trusted
        with pytest.raises(InternalServerError, match="could not sync to disk"):
            writer.execute_sync([Put("Dog", 3, {"name": "three"})])
        assert writer.durable_through == durable
        with database.read() as txn:
            assert database.tables["Dog"].get(txn, 3) is None  # refused before writing
    finally:
        writer.close()
        database.close()


def test_a_failing_commit_listener_does_not_stop_the_answers(
    database: Database, running: Writer
) -> None:
    """The change bus is told of each durable commit; if it fails, writes still get answered."""
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ValueError("the listener broke")

    running.on_commit = failing
    first = running.execute_sync([Put("Dog", 1, {"name": "one"})])
    second = running.execute_sync([Put("Dog", 2, {"name": "two"})])
    assert second.txn_id > first.txn_id
    assert len(calls) == 2
    with database.read() as txn:
        assert database.tables["Dog"].get(txn, 2) is not None


# --------------------------------------------------------------------------- other processes


def test_delegated_jobs_are_answered_by_the_process_they_went_to(
    database: Database, running: Writer
) -> None:
    """A writer that delegates hands every job of data to ``forward`` and answers with what
    comes back; a job of code (DELETE by query) is still applied by its own thread."""
    other = Writer(database)  # plays the write process: same code, another writer
    other.start()
    sent: list[tuple[str, list[Any], str | None]] = []

    def forward(name: str, operations: Any, user: str | None, answer: Any) -> None:
        sent.append((name, list(operations), user))

        def apply() -> None:
            try:
                answer(other.execute_sync(operations, user), None)
            except Exception as error:
                answer(None, error)

        threading.Thread(target=apply).start()  # answers come from another thread

    try:
        running.delegate(forward)
        put = Put("Dog", 1, {"name": "one", "age": 1})
        receipt = running.execute_sync([put], "ann")
        assert sent == [("data", [put], "ann")]
        assert receipt.results[0].record == {"id": 1, "name": "one", "age": 1}
        assert stored(database, 1) == {"id": 1, "name": "one", "age": 1}

        async def patch_missing() -> None:
            await running.execute([Patch("Dog", 2, {"age": 3})])

        with pytest.raises(NotFound):
            asyncio.run(patch_missing())
        assert len(sent) == 2

        running.execute_sync([DeleteMatching("Dog", lambda txn: [1])])
        assert len(sent) == 2  # applied here: its selection is code
        assert stored(database, 1) is None

        running.delegate(None)
        running.execute_sync([Put("Dog", 3, {"name": "three"})])
        assert len(sent) == 2
        assert stored(database, 3) == {"id": 3, "name": "three"}
    finally:
        other.close()


def test_a_handed_job_is_answered_once_its_commit_is_on_disk(
    database: Database, writer: Writer
) -> None:
    """``hand`` (how the write process takes a worker's job) applies the job like
    ``execute`` and calls its answer on the sync thread, after the sync that covers
    its commit; a job that fails is answered with its error alone."""
    answers: list[tuple[str, Receipt | None, BaseException | None, int, str]] = []
    answered = threading.Event()
    durable: list[int] = []
    writer.on_commit = lambda: durable.append(writer.durable_through)

    def answer(name: str) -> Any:
        def take(receipt: Receipt | None, error: BaseException | None) -> None:
            answers.append((name, receipt, error, len(durable), threading.current_thread().name))
            if len(answers) == 2:
                answered.set()

        return take

    writer.hand([Put("Dog", 1, {"name": "one"})], "ann", answer("put"))
    writer.hand([Patch("Dog", 2, {"age": 3})], None, answer("patch"))
    writer.start()  # both jobs wait for one group
    assert answered.wait(10)
    by_name = {
        name: (receipt, error, syncs, thread) for name, receipt, error, syncs, thread in answers
    }
    receipt, error, syncs, thread = by_name["put"]
    assert error is None and receipt is not None
    assert receipt.results[0].record == {"id": 1, "name": "one"}
    assert syncs == 1 and durable[0] >= receipt.results[0].version  # after the sync
    assert thread == f"kiln-sync-{database.name}"
    receipt, error, _syncs, _thread = by_name["patch"]
    assert receipt is None and isinstance(error, NotFound)
    assert stored(database, 1) == {"id": 1, "name": "one"}
    assert stored(database, 2) is None


def test_a_write_after_another_process_wrote_gets_a_later_version(
    database: Database, running: Writer
) -> None:
    """Another process's writer may have logged a version this process's clock has not
    seen: the next write still gets a later version, so the log stays in commit order."""
    running.execute_sync([Put("Dog", 1, {"name": "one"})])
    theirs = database.clock.last + (1000 << COUNTER_BITS)  # a second ahead of our clock
    with database.env.begin(write=True) as txn:
        database.audit.append(txn, AuditEntry(theirs, "Dog", 9, "put", {"id": 9, "name": "x"}))
    receipt = running.execute_sync([Put("Dog", 2, {"name": "two"})])
    assert receipt.results[0].version > theirs
    versions = [entry.version for entry in audit_entries(database)]
    assert versions == sorted(versions) and len(versions) == 3


def test_a_message_logged_under_a_taken_version_replaces_nothing(
    database: Database, running: Writer
) -> None:
    """Another process's clock may have given a message the version of a logged write: the
    message takes the next free version and the write's entry stays."""
    [result] = running.execute_sync([Put("Dog", 1, {"name": "one"})]).results
    message = AuditEntry(result.version, "Dog", 1, "message", {"say": "hi"})
    running.execute_sync([LogMessage(message)])
    entries = audit_entries(database)
    assert [(entry.version, entry.kind) for entry in entries] == [
        (result.version, "put"),
        (result.version + 1, "message"),
    ]
    assert entries[0].record == {"id": 1, "name": "one"}
