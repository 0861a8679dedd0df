"""Programmatic data access (:mod:`kiln.records`) and transactions (:mod:`kiln.transaction`).

Library tests load an app on ``tmp_path`` and drive ``kiln.tables.<Table>.records`` from a
plain thread; server tests run ``RESOURCES`` whose write methods use ``records`` in the
request's transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import kiln
from conftest import KilnServer, write_app
from kiln import tables
from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import NotFound, PreconditionFailed, TransactionError
from kiln.namespace import filled

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
}

type Owner @table @export {
  id: ID @primaryKey
  name: String!
}

type Log @table(database: "logs") {
  id: Int @primaryKey
  text: String
}
"""

RESOURCES = """
from kiln import Resource, tables


class Adopt(Resource):
    async def post(self, target, data):
        tables.Owner.records.put(data["owner"], {"name": data["name"]})
        tables.Dog.records.put(data["dog"], {"name": data["dogName"]})
        if data.get("fail"):
            raise RuntimeError("adoption failed after both writes")
        return {"adopted": data["dog"]}
"""


@pytest.fixture()
def app(tmp_path: Path) -> Iterator[App]:
    write_app(tmp_path, SCHEMA)
    config = load_config(tmp_path, env={}, overrides={"storage.path": str(tmp_path / "data")})
    with filled({}):
        loaded = load_app(tmp_path, config)
        try:
            yield loaded
        finally:
            loaded.close()


def test_get_put_create_patch_delete(app: App) -> None:
    dogs = tables.Dog.records
    assert dogs.get(1) is None
    dogs.put(1, {"name": "Rex", "breed": "lab", "age": 3})
    assert dogs.get(1) == {"id": 1, "name": "Rex", "breed": "lab", "age": 3}
    key = dogs.create({"name": "Fido", "breed": "lab"})
    assert key == 2
    assert dogs.get(key)["name"] == "Fido"  # type: ignore[index]
    dogs.patch(1, {"age": 4})
    assert dogs.get(1)["age"] == 4  # type: ignore[index]
    assert sorted(d["name"] for d in dogs.search("breed=lab")) == ["Fido", "Rex"]
    assert [d["id"] for d in dogs.search({"breed": "lab", "age": 4})] == [1]
    dogs.delete(1)
    assert dogs.get(1) is None
    with pytest.raises(NotFound):
        dogs.delete(1)
    owner = tables.Owner.records.create({"name": "Ann"})
    assert isinstance(owner, str)
    assert tables.Owner.records.get(owner)["name"] == "Ann"  # type: ignore[index]


def test_writes_are_validated(app: App) -> None:
    with pytest.raises(kiln.errors.ValidationError):
        tables.Dog.records.put(5, {"age": "old"})
    assert tables.Dog.records.get(5) is None


def test_read_your_writes_and_commit_of_two_tables(app: App) -> None:
    with kiln.transaction():
        tables.Dog.records.put(1, {"name": "Rex"})
        tables.Owner.records.put("o1", {"name": "Ann"})
        tables.Dog.records.patch(1, {"age": 2})
        key = tables.Dog.records.create({"name": "Fido"})
        assert tables.Dog.records.get(1) == {"id": 1, "name": "Rex", "age": 2}
        assert tables.Dog.records.get(key)["name"] == "Fido"  # type: ignore[index]
        tables.Dog.records.delete(key)
        assert tables.Dog.records.get(key) is None
        # nothing is committed before the block ends
        with app.databases["data"].read() as txn:
            assert app.databases["data"].tables["Dog"].get(txn, 1) is None
    assert tables.Dog.records.get(1)["age"] == 2  # type: ignore[index]
    assert tables.Owner.records.get("o1")["name"] == "Ann"  # type: ignore[index]
    assert tables.Dog.records.get(key) is None


def test_an_exception_after_two_writes_leaves_neither(app: App) -> None:
    with pytest.raises(RuntimeError, match="boom"), kiln.transaction():
        tables.Dog.records.put(1, {"name": "Rex"})
        tables.Owner.records.put("o1", {"name": "Ann"})
        raise RuntimeError("boom")
    assert tables.Dog.records.get(1) is None
    assert tables.Owner.records.get("o1") is None


def test_a_stale_if_version_writes_nothing(app: App) -> None:
    tables.Dog.records.put(1, {"name": "Rex"})
    with app.databases["data"].read() as txn:
        version, _record = app.databases["data"].tables["Dog"].get(txn, 1)  # type: ignore[misc]
    tables.Dog.records.patch(1, {"age": 5})  # someone else writes in between
    with pytest.raises(PreconditionFailed), kiln.transaction():
        tables.Owner.records.put("o1", {"name": "Ann"})
        tables.Dog.records.put(1, {"name": "Max"}, if_version=version)
    assert tables.Dog.records.get(1)["name"] == "Rex"  # type: ignore[index]
    assert tables.Owner.records.get("o1") is None
    with pytest.raises(PreconditionFailed):
        tables.Dog.records.delete(1, if_version=version)


def test_one_database_per_transaction(app: App) -> None:
    match = "one transaction writes one database"
    with pytest.raises(TransactionError, match=match), kiln.transaction():
        tables.Dog.records.put(1, {"name": "Rex"})
        tables.Log.records.put(1, {"text": "adopted"})
    assert tables.Dog.records.get(1) is None
    assert tables.Log.records.get(1) is None
    tables.Log.records.put(1, {"text": "alone"})  # outside a transaction, any database
    assert tables.Log.records.get(1) == {"id": 1, "text": "alone"}


def test_async_transaction_and_the_event_loop(app: App) -> None:
    async def main() -> None:
        with pytest.raises(TransactionError, match="event loop"), kiln.transaction():
            pass
        with pytest.raises(TransactionError, match="event loop"):
            tables.Dog.records.put(9, {"name": "Rex"})
        async with kiln.transaction():
            tables.Dog.records.put(1, {"name": "Rex"})
            tables.Owner.records.put("o1", {"name": "Ann"})

    asyncio.run(main())
    assert tables.Dog.records.get(1)["name"] == "Rex"  # type: ignore[index]
    assert tables.Owner.records.get("o1")["name"] == "Ann"  # type: ignore[index]
    assert tables.Dog.records.get(9) is None


def test_a_write_method_commits_both_tables(http: httpx.Client) -> None:
    body = {"owner": "ann", "name": "Ann", "dog": 101, "dogName": "Rex"}
    assert http.post("/Adopt/", json=body).json() == {"adopted": 101}
    assert http.get("/Dog/101").json()["name"] == "Rex"
    assert http.get("/Owner/ann").json()["name"] == "Ann"


def test_a_write_method_that_raises_stores_nothing(
    http: httpx.Client, kiln_server: KilnServer
) -> None:
    body = {"owner": "bob", "name": "Bob", "dog": 102, "dogName": "Max", "fail": True}
    assert http.post("/Adopt/", json=body).status_code == 500
    assert http.get("/Dog/102").status_code == 404
    assert http.get("/Owner/bob").status_code == 404
    assert "adoption failed" in kiln_server.log()
