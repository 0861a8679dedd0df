"""Tests for schema evolution at start-up: the catalog, index builds and drops, changed types,
removed tables and ``kiln drop``, a changed primary key, and an index build cut by ``kill -9``.

Each test writes an app, seeds it through the library (``load_app`` and the writer),
changes ``schema.graphql`` and starts again: with ``load_app`` where nothing needs
a server, with a real ``kiln run`` (:class:`KilnServer`) where the behaviour is what
a client or the console sees.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import lmdb
import pytest
from rich.console import Console
from typer.testing import CliRunner

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app
from kiln.app import App, load_app
from kiln.cli import cli
from kiln.config import load_config
from kiln.evolution import ProgressDisplay
from kiln.storage.catalog import TableEntry
from kiln.storage.evolution import BATCH_SIZE, stored_tables
from kiln.storage.operations import Put
from kiln.types import Key, Record

DOGS = """type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String
  tags: [String]
  age: Int
}
"""

CATS = """
type Cat @table @export {
  id: Int @primaryKey
  name: String @indexed
}
"""

MiB = 1024 * 1024
runner = CliRunner()


class Progress:
    """A progress callback that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []

    def __call__(self, table: str, attribute: str, done: int, total: int) -> None:
        self.calls.append((table, attribute, done, total))


@pytest.fixture(autouse=True)
def _no_kiln_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILN_* variables of the outer environment must not reach ``kiln`` commands."""
    for name in [n for n in os.environ if n.startswith("KILN_")]:
        monkeypatch.delenv(name)


@pytest.fixture()
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path / "app", DOGS)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture()
def info_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="kiln.evolution")
    return caplog


def start(app_dir: Path, data_dir: Path, progress: Progress | None = None) -> App:
    """``load_app`` on ``data_dir``, as start-up does."""
    config = load_config(app_dir, env={}, overrides={"storage.path": str(data_dir)})
    return load_app(app_dir, config, progress=progress or Progress())


def dog(i: int) -> Record:
    """Dog ``i``: every seventh has no breed, every fifth a list of tags."""
    record: Record = {"name": f"dog {i}", "age": i % 20}
    if i % 7:
        record["breed"] = f"breed {i % 11}"
    if i % 5 == 0:
        record["tags"] = [f"t{i % 3}", f"t{i % 4}"]
    return record


def seed(app_dir: Path, data_dir: Path, records: dict[str, dict[Key, Record]]) -> None:
    """Start the app, write ``records`` (table → key → record) in batches, stop."""
    app = start(app_dir, data_dir)
    try:
        for table, by_key in records.items():
            items = list(by_key.items())
            for first in range(0, len(items), 2000):
                batch = items[first : first + 2000]
                app.writers["data"].execute_sync([Put(table, k, r) for k, r in batch])
    finally:
        app.close()


def catalog(data_dir: Path) -> dict[str, TableEntry]:
    return {t.entry.table: t.entry for t in stored_tables(data_dir, map_size=MiB)}


def store_names(data_dir: Path, database: str = "data") -> set[str]:
    """The named stores an environment holds (the keys of LMDB's main store)."""
    env = lmdb.open(str(data_dir / database), max_dbs=1, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(name).decode() for name, _value in txn.cursor()}
    finally:
        env.close()


def index_entries(app: App, attribute: str, table: str = "Dog") -> list[tuple[Any, Key]]:
    database = app.databases["data"]
    with database.read() as txn:
        return list(database.tables[table].index_entries(txn, attribute))


def expected_entries(records: dict[Key, Record], attribute: str) -> list[tuple[Any, Key]]:
    """What the index of ``attribute`` must hold for ``records``, in index order."""
    pairs = set()
    for key, record in records.items():
        value = record.get(attribute)
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.add((item, key))
    return sorted(pairs, key=lambda pair: (pair[0], pair[1]))


def indexed(schema: str, *attributes: str) -> str:
    """``schema`` with ``@indexed`` added to the attributes of the given names."""
    lines = []
    for line in schema.splitlines():
        name = line.strip().split(":")[0]
        lines.append(f"{line} @indexed" if name in attributes else line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- attributes, indexes


def test_a_new_attribute_changes_nothing_stored(app_dir: Path, data_dir: Path) -> None:
    records = {i: dog(i) for i in range(1, 6)}
    seed(app_dir, data_dir, {"Dog": records})
    before = catalog(data_dir)["Dog"]
    write_app(app_dir, DOGS.replace("  age: Int\n", "  age: Int\n  weight: Float\n"))

    progress = Progress()
    app = start(app_dir, data_dir, progress)
    try:
        with app.databases["data"].read() as txn:
            assert app.databases["data"].tables["Dog"].get(txn, 3)[1] == {**records[3], "id": 3}
    finally:
        app.close()
    assert progress.calls == []
    after = catalog(data_dir)["Dog"]
    assert after.attributes == {**before.attributes, "weight": "Float"}
    assert (after.primary_key, after.primary_key_type, after.state) == ("id", "Int", "active")


def test_a_new_index_is_built_from_the_stored_records(app_dir: Path, data_dir: Path) -> None:
    count = 2 * BATCH_SIZE + 345  # three batches, the last one partial
    records = {i: dog(i) for i in range(1, count + 1)}
    seed(app_dir, data_dir, {"Dog": records})
    assert catalog(data_dir)["Dog"].indexes == {}
    write_app(app_dir, indexed(DOGS, "breed", "tags"))

    progress = Progress()
    app = start(app_dir, data_dir, progress)
    try:
        assert index_entries(app, "breed") == expected_entries(records, "breed")
        assert index_entries(app, "tags") == expected_entries(records, "tags")
        # the writer keeps the built index in step afterwards
        app.writers["data"].execute_sync([Put("Dog", 1, {"name": "one", "breed": "zzz"})])
        records[1] = {"name": "one", "breed": "zzz"}
        assert index_entries(app, "breed") == expected_entries(records, "breed")
    finally:
        app.close()

    for attribute in ("breed", "tags"):
        done = [d for table, a, d, total in progress.calls if a == attribute]
        assert done == [0, BATCH_SIZE, 2 * BATCH_SIZE, count], progress.calls
        assert {total for _t, a, _d, total in progress.calls if a == attribute} == {count}
    assert catalog(data_dir)["Dog"].indexes == {"breed": "ready", "tags": "ready"}

    again = Progress()
    start(app_dir, data_dir, again).close()
    assert again.calls == [], "a ready index was built again"


def test_progress_is_a_bar_for_a_large_table_and_one_log_line_for_a_small_one(
    info_log: pytest.LogCaptureFixture,
) -> None:
    screen = io.StringIO()
    display = ProgressDisplay(Console(file=screen, width=100), large=100)
    for done in (0, 40, 80, 101):
        display("Dog", "breed", done, 101)
    assert "indexing Dog.breed" in screen.getvalue()
    assert "100%" in screen.getvalue()
    drawn = screen.getvalue()
    for done in (0, 30, 60):
        display("Cat", "name", done, 60)
    assert screen.getvalue() == drawn, "a small table drew a bar"
    lines = [r.getMessage() for r in info_log.records]
    assert [line.split(" in ")[0] for line in lines] == [
        "built the index of Dog.breed over 101 records",
        "built the index of Cat.name over 60 records",
    ]


def test_a_new_index_on_an_empty_table_is_ready_at_once(app_dir: Path, data_dir: Path) -> None:
    start(app_dir, data_dir).close()
    write_app(app_dir, indexed(DOGS, "breed"))
    progress = Progress()
    start(app_dir, data_dir, progress).close()
    assert progress.calls == []
    assert catalog(data_dir)["Dog"].indexes == {"breed": "ready"}


def test_a_removed_index_loses_its_store(
    app_dir: Path, data_dir: Path, info_log: pytest.LogCaptureFixture
) -> None:
    write_app(app_dir, indexed(DOGS, "breed", "age"))
    records = {i: dog(i) for i in range(1, 50)}
    seed(app_dir, data_dir, {"Dog": records})
    assert {"i:Dog:breed", "i:Dog:age"} <= store_names(data_dir)

    write_app(app_dir, indexed(DOGS, "age"))
    start(app_dir, data_dir).close()
    assert "i:Dog:breed" not in store_names(data_dir)
    assert "i:Dog:age" in store_names(data_dir)
    assert catalog(data_dir)["Dog"].indexes == {"age": "ready"}
    assert "dropped the index of Dog.breed" in info_log.text

    # declared again, it is rebuilt from the records, not revived from stale entries
    write_app(app_dir, indexed(DOGS, "breed", "age"))
    app = start(app_dir, data_dir)
    try:
        assert index_entries(app, "breed") == expected_entries(records, "breed")
    finally:
        app.close()


# --------------------------------------------------------------------------- changed types


def test_a_changed_type_is_reported_and_records_are_served_as_stored(
    app_dir: Path, data_dir: Path
) -> None:
    records = {i: {"name": f"dog {i}", "age": i} for i in range(1, 8)}
    records[8] = {"name": "ageless"}
    seed(app_dir, data_dir, {"Dog": records})
    write_app(app_dir, DOGS.replace("age: Int", "age: String"))

    server = KilnServer(app_dir, data_dir, free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
            assert http.get("/Dog/3").json() == {"id": 3, "name": "dog 3", "age": 3}
            assert http.get("/Dog/8").json() == {"id": 8, "name": "ageless"}
    finally:
        assert server.stop() == 0
    log = server.log()
    assert (
        "Dog.age changed type from Int to String: 7 of 8 records hold a value that does not "
        "fit (keys 1, 2, 3, 4, 5, ...); they are kept and served as stored" in log
    ), log
    assert catalog(data_dir)["Dog"].attributes["age"] == "String"


def test_a_type_change_every_value_fits_is_only_noted(
    app_dir: Path, data_dir: Path, info_log: pytest.LogCaptureFixture
) -> None:
    seed(app_dir, data_dir, {"Dog": {1: {"name": "a", "age": 3}}})
    write_app(app_dir, DOGS.replace("age: Int", "age: Long").replace("name: String!", "name: ID"))
    start(app_dir, data_dir).close()
    assert "Dog.age changed type from Int to Long; every stored value fits" in info_log.text
    assert "Dog.name changed type from String! to ID; every stored value fits" in info_log.text
    assert not [r for r in info_log.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- removed tables


def test_a_removed_table_is_kept_reported_and_comes_back(app_dir: Path, data_dir: Path) -> None:
    write_app(app_dir, DOGS + CATS)
    cats = {1: {"name": "tom"}, 2: {"name": "felix"}}
    seed(app_dir, data_dir, {"Dog": {1: dog(1)}, "Cat": cats})

    write_app(app_dir, DOGS)
    server = KilnServer(app_dir, data_dir, free_port())
    server.start()
    with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
        assert http.get("/Cat/1").status_code == 404
        assert http.get("/Dog/1").status_code == 200
    assert server.stop() == 0
    assert (
        "table Cat (database data) is no longer in schema.graphql; its data (2 records) is "
        "kept: declare `type Cat` again to serve them, or delete them with "
        "`kiln drop APP_DIR Cat`" in server.log()
    ), server.log()
    assert catalog(data_dir)["Cat"].state == "removed"
    assert {"t:Cat", "i:Cat:name"} <= store_names(data_dir)

    write_app(app_dir, DOGS + CATS)
    server.start()
    with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
        assert http.get("/Cat/2").json() == {"id": 2, "name": "felix"}
        assert http.put("/Cat/3", json={"name": "garfield"}).status_code == 204
    assert server.stop() == 0
    assert catalog(data_dir)["Cat"].state == "active"
    app = start(app_dir, data_dir)
    try:
        assert index_entries(app, "name", "Cat") == [("felix", 2), ("garfield", 3), ("tom", 1)]
    finally:
        app.close()


def drop(app_dir: Path, data_dir: Path, *args: str, answer: str | None = None):
    return runner.invoke(
        cli, ["drop", str(app_dir), *args, "--data", str(data_dir)], input=answer, env={}
    )


def test_kiln_drop_deletes_a_removed_table(app_dir: Path, data_dir: Path) -> None:
    write_app(app_dir, DOGS + CATS)
    seed(app_dir, data_dir, {"Dog": {1: dog(1)}, "Cat": {1: {"name": "tom"}}})

    refused = drop(app_dir, data_dir, "Cat", "--yes")
    assert refused.exit_code == 2
    assert "table `Cat` is still declared in schema.graphql" in refused.output
    assert "hint: remove `type Cat` from schema.graphql first" in refused.output

    write_app(app_dir, DOGS)  # no start in between: the schema alone decides
    unknown = drop(app_dir, data_dir, "Bird", "--yes")
    assert unknown.exit_code == 2
    assert "no stored table `Bird`" in unknown.output
    assert "the stored tables are: Cat, Dog" in unknown.output

    declined = drop(app_dir, data_dir, "Cat", answer="n\n")
    assert declined.exit_code == 1
    assert "Delete table Cat (1 record) from" in declined.output
    assert "nothing deleted" in declined.output
    assert "t:Cat" in store_names(data_dir)

    done = drop(app_dir, data_dir, "Cat", "--yes")
    assert done.exit_code == 0, done.output
    assert "deleted table Cat (1 record)" in done.output
    assert not {"t:Cat", "i:Cat:name"} & store_names(data_dir)
    assert "Cat" not in catalog(data_dir)

    write_app(app_dir, DOGS + CATS)  # declared again: a new, empty table
    app = start(app_dir, data_dir)
    try:
        with app.databases["data"].read() as txn:
            assert app.databases["data"].tables["Cat"].count(txn) == 0
            assert app.databases["data"].tables["Dog"].count(txn) == 1
    finally:
        app.close()


def test_a_whole_removed_database_is_reported_and_droppable(
    app_dir: Path, data_dir: Path, info_log: pytest.LogCaptureFixture
) -> None:
    other = CATS.replace("@table", '@table(database: "pets")')
    write_app(app_dir, DOGS + other)
    app = start(app_dir, data_dir)
    app.writers["pets"].execute_sync([Put("Cat", 1, {"name": "tom"})])
    app.close()

    write_app(app_dir, DOGS)
    start(app_dir, data_dir).close()
    assert "table Cat (database pets) is no longer in schema.graphql" in info_log.text
    assert catalog(data_dir)["Cat"].state == "removed"

    done = drop(app_dir, data_dir, "Cat", "--yes")
    assert done.exit_code == 0, done.output
    assert "t:Cat" not in store_names(data_dir, "pets")


def test_removed_tables_still_count_towards_the_stores_of_an_environment(
    app_dir: Path, data_dir: Path
) -> None:
    """LMDB fixes the number of stores at open: the kept stores of removed tables need room."""
    many = "\n".join(
        ["type Wide @table {", "  id: Int @primaryKey"]
        + [f"  a{i}: Int @indexed" for i in range(8)]
        + ["}"]
    )
    write_app(app_dir, DOGS + many)
    seed(app_dir, data_dir, {"Wide": {1: {f"a{i}": i for i in range(8)}}})
    other = many.replace("Wide", "Tall")
    write_app(app_dir, DOGS + other)
    start(app_dir, data_dir).close()  # Wide's 9 stores are kept, Tall adds 9
    write_app(app_dir, DOGS + many + other)
    app = start(app_dir, data_dir)
    try:
        assert index_entries(app, "a3", "Wide") == [(3, 1)]
    finally:
        app.close()


# --------------------------------------------------------------------------- primary keys


@pytest.mark.parametrize(
    ("key_line", "now"),
    [("id: String @primaryKey", "`id: String`"), ("dogId: Int @primaryKey", "`dogId: Int`")],
    ids=["type", "name"],
)
def test_a_changed_primary_key_refuses_to_start(
    app_dir: Path, data_dir: Path, key_line: str, now: str
) -> None:
    seed(app_dir, data_dir, {"Dog": {1: dog(1), 2: dog(2)}})
    write_app(app_dir, "# renamed the key\n" + DOGS.replace("id: Int @primaryKey", key_line))

    result = runner.invoke(cli, ["run", str(app_dir), "--data", str(data_dir)], env={})
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert (
        f"error: schema.graphql:2:6: the primary key of `Dog` is now {now}, but its 2 stored "
        "records are keyed by `id: Int`; kiln does not re-key records" in output
    ), output
    assert 'start fresh under a new name (rename the type, or give it `@table(table: "Dog2")`)' in (
        output
    )
    assert "run `kiln drop APP_DIR Dog`, then declare it again with the new key" in output
    entry = catalog(data_dir)["Dog"]
    assert (entry.primary_key, entry.primary_key_type) == ("id", "Int")


def test_an_empty_table_may_change_its_primary_key(app_dir: Path, data_dir: Path) -> None:
    start(app_dir, data_dir).close()
    write_app(app_dir, DOGS.replace("id: Int @primaryKey", "id: String @primaryKey"))
    start(app_dir, data_dir).close()
    assert catalog(data_dir)["Dog"].primary_key_type == "String"


# --------------------------------------------------------------------------- crashes

KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from kiln.app import load_app
from kiln.config import load_config
from kiln.evolution import ProgressDisplay

app_dir, data_dir = Path(sys.argv[1]), sys.argv[2]

def progress(table, attribute, done, total):
    if 0 < done < total:  # after the first batch is committed: kill -9, mid-build
        os.kill(os.getpid(), signal.SIGKILL)

load_app(app_dir, load_config(app_dir, env={}, overrides={"storage.path": data_dir}),
         progress=progress)
"""


def test_an_index_build_killed_midway_is_finished_on_the_next_start(
    app_dir: Path, data_dir: Path
) -> None:
    count = 3 * BATCH_SIZE
    records = {i: dog(i) for i in range(1, count + 1)}
    seed(app_dir, data_dir, {"Dog": records})
    write_app(app_dir, indexed(DOGS, "breed"))

    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_BUILD), str(app_dir), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert catalog(data_dir)["Dog"].indexes == {"breed": "building"}

    progress = Progress()
    app = start(app_dir, data_dir, progress)
    try:
        assert index_entries(app, "breed") == expected_entries(records, "breed")
    finally:
        app.close()
    assert progress.calls[0] == ("Dog", "breed", 0, count)
    assert catalog(data_dir)["Dog"].indexes == {"breed": "ready"}


def test_kiln_drop_grows_a_map_opened_small(app_dir: Path, data_dir: Path) -> None:
    write_app(app_dir, DOGS + CATS)
    cats = {n: {"name": f"cat {n} " + "x" * 500} for n in range(1, 1500)}
    seed(app_dir, data_dir, {"Dog": {1: dog(1)}, "Cat": cats})
    write_app(app_dir, DOGS, config="storage:\n  mapSize: 64KiB\n")
    done = drop(app_dir, data_dir, "Cat", "--yes")
    assert done.exit_code == 0, done.output
    assert "Cat" not in catalog(data_dir)
