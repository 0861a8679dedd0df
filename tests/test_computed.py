"""``@computed`` attributes: the schema rules, the loading rules, and a real server deriving,
selecting, indexing and refusing them; a changed ``version`` rebuilds the index at start-up.

Computed attributes follow Harper's rule: left out of results unless ``select()`` names them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import kiln
from conftest import ADMIN_AUTH, KilnServer, free_port, write_app
from kiln import tables
from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import ResourceError, SchemaError
from kiln.loader import check_resources
from kiln.schema import parse_schema
from kiln.storage.operations import Put

SCHEMA = """
type Person @table @export {
  id: Int @primaryKey
  first: String!
  last: String
  fullName: String @computed(version: 1) @indexed
  initials: String @computed
}
"""

RESOURCES = """
from kiln import tables


@tables.Person.computed("fullName")
def full_name(record):
    return f"{record['first']} {record.get('last') or ''}".strip()


@tables.Person.computed("initials")
def initials(record):
    return record["first"][:1] + (record.get("last") or "")[:1]
"""


# --------------------------------------------------------------------------- schema


def test_the_schema_declares_computed_attributes_with_a_version() -> None:
    table = parse_schema(SCHEMA).tables["Person"]
    assert table.computed == ("fullName", "initials")
    assert table.indexed == ("fullName",)
    assert table.attributes["fullName"].computed_version == 1
    assert table.attributes["initials"].computed_version == 1
    schema = parse_schema("type T @table { id: ID  a: Int @computed(version: 7) }")
    assert schema.tables["T"].attributes["a"].computed_version == 7


@pytest.mark.parametrize(
    ("field", "message", "hint"),
    [
        ("key: ID @primaryKey @computed", "`@computed` on the primary key `key`", "stored"),
        ("a: String @computed @unique", "both `@computed` and `@unique`", "@indexed"),
        ("a: Long @computed @createdTime", "both `@computed` and `@createdTime`", "remove"),
        ("a: Int @computed(version: 0)", "expects a positive Int, got `0`", "version: 2"),
        ('a: Int @computed(version: "2")', "expects a positive Int, got `2`", "without quotes"),
        ("a: Int @computed(v: 2)", "unknown argument `v` for `@computed`", "version"),
    ],
)
def test_schema_mistakes(field: str, message: str, hint: str) -> None:
    with pytest.raises(SchemaError) as raised:
        parse_schema(f"type T @table {{\n  {field}\n}}")
    assert message in raised.value.message
    assert hint in (raised.value.hint or "")
    assert raised.value.line == 2


def test_an_implicit_id_cannot_be_computed() -> None:
    with pytest.raises(SchemaError, match="`@computed` on the primary key `id`"):
        parse_schema("type T @table { id: ID @computed  a: Int }")


# --------------------------------------------------------------------------- loading


def run_broken(tmp_path: Path, resources: str | None) -> str:
    """Start ``kiln run`` on the module's schema with ``resources``; it must exit 2. Its output."""
    app = write_app(tmp_path / "app", SCHEMA, resources=resources)
    data, port = str(tmp_path / "data"), str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "run", str(app), "--data", data, "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    return output


def test_registering_an_attribute_that_is_not_computed(tmp_path: Path) -> None:
    resources = RESOURCES + '\n\n@tables.Person.computed("first")\ndef f(record):\n    return 1\n'
    output = run_broken(tmp_path, resources)
    assert re.search(r"resources\.py:15: Person\.computed\('first'\)", output), output
    assert "does not declare @computed `first`" in output
    assert "declare it as `first: String @computed`" in output
    output = run_broken(tmp_path, RESOURCES.replace('computed("initials")', 'computed("inits")'))
    assert re.search(r"resources\.py:10: .*has no attribute `inits`", output), output
    assert "its computed attributes are `fullName`, `initials`" in output


@pytest.mark.parametrize(
    ("definition", "expected", "hint"),
    [
        (
            "def full_name():",
            "resources.py:5: Person.computed('fullName') decorates full_name(), but kiln calls "
            "it with one argument, the record",
            "hint: define it as `def full_name(record): return ...`",
        ),
        (
            "def full_name(record, style):",
            "Person.computed('fullName') decorates full_name(record, style), but kiln calls",
            "hint: define it as `def full_name(record): return ...`",
        ),
        (
            "def full_name(*, record: dict):",
            "Person.computed('fullName') decorates full_name(*, record), but kiln calls",
            "hint: define it as `def full_name(record): return ...`",
        ),
        (
            "async def full_name(record):",
            "resources.py:5: Person.computed('fullName') decorates async full_name, but kiln "
            "calls it on the writer's thread and never awaits it",
            "hint: make it a plain `def full_name(record): return ...`",
        ),
    ],
)
def test_a_computed_function_that_cannot_take_the_record(
    tmp_path: Path, definition: str, expected: str, hint: str
) -> None:
    """Accepted, it made every read that selects the attribute a 500."""
    output = run_broken(tmp_path, RESOURCES.replace("def full_name(record):", definition))
    assert expected in output, output
    assert hint in output


def test_a_computed_function_with_defaults_or_varargs_is_accepted(tmp_path: Path) -> None:
    resources = RESOURCES.replace("def full_name(record):", "def full_name(record, sep=' '):")
    resources = resources.replace("def initials(record):", "def initials(*records):")
    resources = resources.replace('record["first"]', 'records[0]["first"]')
    resources = resources.replace('(record.get("last")', '(records[0].get("last")')
    server = KilnServer(
        write_app(tmp_path / "app", SCHEMA, resources=resources), tmp_path / "data", free_port()
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
            assert http.put("/Person/1", json={"first": "Ann", "last": "Lee"}).status_code == 204
            got = http.get("/Person/1?select(fullName,initials)")
            assert got.json() == {"fullName": "Ann Lee", "initials": "AL"}
    finally:
        server.stop()


def test_a_computed_attribute_without_a_function(tmp_path: Path) -> None:
    output = run_broken(tmp_path, RESOURCES.split('\n\n@tables.Person.computed("initials")')[0])
    assert re.search(r"schema\.graphql:7:\d+: `Person\.initials` is @computed", output), output
    assert "@tables.Person.computed('initials')" in output
    output = run_broken(tmp_path / "bare", None)
    assert "`Person.fullName` is @computed, but resources.py does not exist" in output


# --------------------------------------------------------------------------- over HTTP


def test_selected_computed_values_are_derived(http: httpx.Client) -> None:
    assert http.put("/Person/1", json={"first": "Ann", "last": "Lee"}).status_code == 204
    assert http.get("/Person/?id=1&select(id,fullName,initials)").json() == [
        {"id": 1, "fullName": "Ann Lee", "initials": "AL"}
    ]
    assert http.get("/Person/?id=1&select(initials)").json() == ["AL"]
    # not selected: left out, as Harper does; the record by id holds the stored attributes
    assert http.get("/Person/?id=1").json() == [{"id": 1, "first": "Ann", "last": "Lee"}]
    assert http.get("/Person/1").json() == {"id": 1, "first": "Ann", "last": "Lee"}


def test_a_record_url_returns_the_computed_values_select_names(http: httpx.Client) -> None:
    assert http.put("/Person/2", json={"first": "Cy", "last": "Ng"}).status_code == 204
    plain = http.get("/Person/2")
    assert plain.json() == {"id": 2, "first": "Cy", "last": "Ng"}  # stored attributes only
    value = http.get("/Person/2?select(fullName)")
    assert (value.status_code, value.json()) == (200, "Cy Ng")
    assert value.headers["etag"] == plain.headers["etag"]  # derived from this record alone
    assert http.get("/Person/2?select(first,fullName)").json() == {
        "first": "Cy",
        "fullName": "Cy Ng",
    }
    assert http.get("/Person/2?select(fullName,)").json() == {"fullName": "Cy Ng"}
    assert http.get("/Person/2?select([id,initials])").json() == [2, "CN"]
    assert http.get("/Person/2?select(id,last)").json() == {"id": 2, "last": "Ng"}
    # the same shapes as the collection's
    assert http.get("/Person/?id=2&select(fullName)").json() == ["Cy Ng"]
    assert http.get("/Person/9999?select(fullName)").status_code == 404
    nested = http.get("/Person/2?select(fullName{a})")  # checked as the collection's select
    assert nested.status_code == 400
    assert "not an object" in nested.json()["detail"]


def test_a_selected_null_value_of_a_record_is_204(http: httpx.Client) -> None:
    assert http.put("/Person/3", json={"first": "Di"}).status_code == 204
    empty = http.get("/Person/3?select(last)")
    assert (empty.status_code, empty.content) == (204, b"")
    assert http.get("/Person/3?select(last,)").json() == {"last": None}
    assert http.get("/Person/3?select(initials)").json() == "D"


def test_an_indexed_computed_attribute_drives_a_query_and_follows_writes(
    http: httpx.Client,
) -> None:
    assert http.put("/Person/20", json={"first": "Bo", "last": "Ek"}).status_code == 204
    explained = http.get("/Person/?fullName=Bo Ek&explain()").json()
    assert explained["driver"]["attribute"] == "fullName"
    assert http.get("/Person/?fullName=Bo Ek&select(id)").json() == [20]
    # a condition on it without select() leaves it out of the results
    assert http.get("/Person/?fullName=Bo Ek").json() == [{"id": 20, "first": "Bo", "last": "Ek"}]

    assert http.patch("/Person/20", json={"last": "Berg"}).status_code == 204
    assert http.get("/Person/?fullName=Bo Ek").json() == []
    assert http.get("/Person/?fullName=Bo Berg&select(id,fullName)").json() == [
        {"id": 20, "fullName": "Bo Berg"}
    ]
    assert http.put("/Person/20", json={"first": "Cy"}).status_code == 204
    assert http.get("/Person/?fullName=Bo Berg").json() == []
    assert http.get("/Person/?fullName=Cy&select(id)").json() == [20]
    assert http.delete("/Person/?fullName=Cy").json() == {"deleted": 1}
    assert http.get("/Person/20").status_code == 404


def test_a_client_value_for_a_computed_attribute_is_refused(http: httpx.Client) -> None:
    response = http.put("/Person/30", json={"first": "Di", "fullName": "Someone Else"})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "fullName" in error["message"]
    assert "@computed" in error["message"]
    assert http.get("/Person/30").status_code == 404


# --------------------------------------------------------------------------- version


def start(app_dir: Path, data_dir: Path) -> App:
    config = load_config(app_dir, env={}, overrides={"storage.path": str(data_dir)})
    return load_app(app_dir, config, progress=lambda *_: None)


def test_a_new_version_rebuilds_the_index(tmp_path: Path) -> None:
    app_dir, data_dir = tmp_path / "app", tmp_path / "data"
    write_app(app_dir, SCHEMA, resources=RESOURCES)
    app = start(app_dir, data_dir)
    try:
        people = [(1, {"first": "Ann", "last": "Lee"}), (2, {"first": "Bo", "last": "Ek"})]
        app.writers["data"].execute_sync([Put("Person", k, r) for k, r in people])
        store = app.databases["data"].tables["Person"]
        with app.databases["data"].read() as txn:
            assert [v for v, _k in store.index_entries(txn, "fullName")] == ["Ann Lee", "Bo Ek"]
    finally:
        app.close()

    upper = RESOURCES.replace("return f\"{record['first']}", "return f\"{record['first'].upper()}")
    write_app(app_dir, SCHEMA.replace("version: 1", "version: 2"), resources=upper)
    app = start(app_dir, data_dir)
    try:
        store = app.databases["data"].tables["Person"]
        with app.databases["data"].read() as txn:
            assert [v for v, _k in store.index_entries(txn, "fullName")] == ["ANN Lee", "BO Ek"]
        results = app.routes["Person"].records.search("fullName=BO Ek&select(id)")
        assert list(results) == [2]
    finally:
        app.close()

    # the same version again: nothing to rebuild, the index is kept as it is
    write_app(app_dir, SCHEMA.replace("version: 1", "version: 2"), resources=RESOURCES)
    app = start(app_dir, data_dir)
    try:
        store = app.databases["data"].tables["Person"]
        with app.databases["data"].read() as txn:
            assert [v for v, _k in store.index_entries(txn, "fullName")] == ["ANN Lee", "BO Ek"]
    finally:
        app.close()


# --------------------------------------------------------------------------- written while loading

SEEDING = (
    RESOURCES
    + """

import os

tables.Person.records.put(900, {"first": os.environ["SEED_FIRST"], "last": "Seed"})
"""
)


def test_writes_made_while_resources_py_imports_are_indexed(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app", SCHEMA, resources=SEEDING)
    for first in ("Ann", "Bo"):  # the second start writes while the index is ready
        server = KilnServer(app_dir, tmp_path / "data", free_port(), env={"SEED_FIRST": first})
        server.start()
        try:
            with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
                query = f"/Person/?fullName={first} Seed&select(id,fullName)"
                assert http.get(query).json() == [{"id": 900, "fullName": f"{first} Seed"}]
                assert http.get("/Person/?fullName=Ann Seed").json() == (
                    [] if first == "Bo" else [{"id": 900, "first": "Ann", "last": "Seed"}]
                )
        finally:
            server.stop()


def test_a_write_above_the_computed_function_is_refused(tmp_path: Path) -> None:
    early = "from kiln import tables\n\ntables.Person.records.put(1, {'first': 'Ann'})\n"
    output = run_broken(tmp_path, early + RESOURCES)
    assert re.search(
        r"resources\.py:3: Person\.fullName is @computed and @indexed, but no function "
        r"derives it yet",
        output,
    ), output
    assert "register `@tables.Person.computed('fullName')` in resources.py above" in output


def test_a_reload_check_of_a_seeding_file_stops_at_its_first_records_use(tmp_path: Path) -> None:
    resources = write_app(tmp_path / "app", SCHEMA, resources=SEEDING) / "resources.py"
    check_resources(resources, parse_schema(SCHEMA))  # no storage: loading it does the rest
    resources.write_text(SEEDING.replace("import os", "import os\n\nratio = 1 / 0"))
    with pytest.raises(ResourceError, match="ZeroDivisionError"):
        check_resources(resources, parse_schema(SCHEMA))


def test_search_in_a_transaction_derives_computed_values_of_its_writes(tmp_path: Path) -> None:
    app_dir, data_dir = tmp_path / "app", tmp_path / "data"
    write_app(app_dir, SCHEMA, resources=RESOURCES)
    app = start(app_dir, data_dir)
    try:
        people = tables.Person.records
        people.put(1, {"first": "Ann", "last": "Lee"})
        with kiln.transaction():
            people.put(2, {"first": "Ann", "last": "Ek"})
            people.patch(1, {"last": "Berg"})
            assert list(people.search("fullName=sw=Ann&select(id,fullName)")) == [
                {"id": 1, "fullName": "Ann Berg"},
                {"id": 2, "fullName": "Ann Ek"},
            ]
            assert list(people.search("fullName=Ann Lee")) == []
        assert list(people.search("fullName=sw=Ann&select(id)")) == [1, 2]
    finally:
        app.close()
