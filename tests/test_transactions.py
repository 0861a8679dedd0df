"""Programmatic data access (:mod:`kiln.records`) and transactions (:mod:`kiln.transaction`).

Library tests load an app on ``tmp_path`` and drive ``kiln.tables.<Table>.records`` from a
plain thread; server tests run ``RESOURCES`` whose write methods use ``records`` in the
request's transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import kiln
from conftest import KilnServer, write_app
from kiln import tables
from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import BadRequest, NotFound, PreconditionFailed, TransactionError
from kiln.namespace import filled
from kiln.storage.operations import Put, perform

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

type Audit @table @export {
  id: Int @primaryKey
  text: String @indexed
}
"""

RESOURCES = """
from kiln import Resource, tables


class Adopt(Resource):
    async def post(self, target, data):
        tables.Owner.records.put(data["owner"], {"name": data["name"]})
        tables.Dog.records.put(data["dog"], {"name": data["dogName"]})
        if data.pop("fail", False):
            raise RuntimeError("adoption failed after both writes")
        return {"adopted": data["dog"]}


def _audit(text):
    tables.Audit.records.create({"text": text})


def _fail(failing):
    if failing:
        raise RuntimeError("audited write failed after both writes")


class AuditedDog(tables.Dog):
    async def post(self, target, data):
        failing = data.pop("fail", False)
        _audit(f"post-{data.pop('tag')}")
        answer = await super().post(target, data)
        _audit(f"posted-{answer.headers['Location'].rsplit('/', 1)[1]}")
        _fail(failing)
        return answer

    async def put(self, target, data):
        failing = data.pop("fail", False)
        _audit(f"put-{data.pop('tag')}")
        await super().put(target, data)
        _fail(failing)

    async def patch(self, target, data):
        _audit(f"patch-{data.pop('tag')}")
        await super().patch(target, data)

    async def delete(self, target):
        _audit(f"delete-{target.id or 'query'}")
        return await super().delete(target)


class Census(Resource):
    async def post(self, target, data):
        tables.Dog.records.put(data["id"], {"name": data["name"], "breed": data["breed"]})
        return [dog["id"] for dog in tables.Dog.records.search({"breed": data["breed"]})]
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


@pytest.mark.parametrize(
    ("table", "call", "words"),
    [
        ("Dog", lambda dogs: dogs.put("abc", {"name": "Rex"}), "expects Int"),
        ("Dog", lambda dogs: dogs.put(1.5, {"name": "Rex"}), "not a whole number"),
        ("Dog", lambda dogs: dogs.patch("abc", {"age": 1}), "expects Int"),
        ("Dog", lambda dogs: dogs.delete("abc"), "expects Int"),
        ("Owner", lambda owners: owners.put(5, {"name": "Ann"}), "expects ID"),
        ("Owner", lambda owners: owners.put("ann/", {"name": "Ann"}), "ends with '/'"),
        ("Owner", lambda owners: owners.create({"id": "", "name": "Ann"}), "it is empty"),
        ("Owner", lambda owners: owners.create({"id": "x" * 600, "name": "A"}), "too long"),
        ("Dog", lambda dogs: dogs.put(None, {"name": "Rex"}), "the id is None"),
        ("Dog", lambda dogs: dogs.patch(None, {"age": 1}), "the id is None"),
        ("Dog", lambda dogs: dogs.delete(None), "the id is None"),
    ],
)
def test_an_id_no_url_could_reach_is_refused(app: App, table: str, call: Any, words: str) -> None:
    records = getattr(tables, table).records
    with pytest.raises(BadRequest) as refused:
        call(records)
    assert words in refused.value.message
    assert list(records.search("")) == []


def test_a_record_whose_key_no_url_names_can_still_be_patched_and_deleted(app: App) -> None:
    owners = tables.Owner.records
    with tables.Owner.database.env.begin(write=True) as txn:  # as an older kiln could store it
        perform(tables.Owner.database, txn, Put("Owner", "ann/", {"name": "Ann"}), None)
    owners.patch("ann/", {"name": "Anne"})
    assert owners.get("ann/") == {"id": "ann/", "name": "Anne"}
    owners.delete("ann/")
    assert owners.get("ann/") is None


def test_an_id_is_converted_to_the_key_type(app: App) -> None:
    tables.Dog.records.put(3.0, {"name": "Rex"})
    assert [dog["id"] for dog in tables.Dog.records.search("")] == [3]
    assert type(tables.Dog.records.get(3)["id"]) is int  # type: ignore[index]


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


# --------------------------------------------------------------------------- a table's own writes


def audits(http: httpx.Client, text: str) -> list[str]:
    """The texts of the audit records whose text is ``text``."""
    return [audit["text"] for audit in http.get(f"/Audit/?text={text}").json()]


def test_super_post_commits_with_the_methods_other_writes(http: httpx.Client) -> None:
    created = http.post("/AuditedDog/", json={"id": 201, "name": "Rex", "tag": "p201"})
    assert created.status_code == 201
    assert created.headers["location"] == "/AuditedDog/201"
    assert created.json() == {"name": "Rex", "id": 201}
    assert http.get("/Dog/201").json()["name"] == "Rex"
    assert audits(http, "post-p201") == ["post-p201"]
    assert audits(http, "posted-201") == ["posted-201"]
    # generated keys land above every key the other tests name
    assert http.put("/Dog/9000", json={"name": "High"}).status_code == 204
    generated = http.post("/AuditedDog/", json={"name": "Nokey", "tag": "pgen"})
    assert generated.status_code == 201
    key = int(generated.headers["location"].rsplit("/", 1)[1])
    assert key > 9000
    assert generated.json() == {"name": "Nokey", "id": key}
    assert http.get(f"/Dog/{key}").json()["name"] == "Nokey"
    assert audits(http, "post-pgen") == ["post-pgen"]


def test_a_method_raising_after_super_post_keeps_none_of_its_writes(http: httpx.Client) -> None:
    body = {"id": 202, "name": "Max", "tag": "p202", "fail": True}
    assert http.post("/AuditedDog/", json=body).status_code == 500
    assert http.get("/Dog/202").status_code == 404
    assert audits(http, "post-p202") == []
    assert audits(http, "posted-202") == []


def test_super_put_joins_the_transaction(http: httpx.Client) -> None:
    body = {"name": "Ida", "tag": "u203", "fail": True}
    assert http.put("/AuditedDog/203", json=body).status_code == 500
    assert http.get("/Dog/203").status_code == 404
    assert audits(http, "put-u203") == []
    assert http.put("/AuditedDog/203", json={"name": "Ida", "tag": "u203"}).status_code == 204
    assert http.get("/Dog/203").json()["name"] == "Ida"
    assert audits(http, "put-u203") == ["put-u203"]


def test_the_errors_of_a_joined_write_keep_their_status_and_undo_the_method(
    http: httpx.Client,
) -> None:
    missing = http.patch("/AuditedDog/204", json={"name": "Nobody", "tag": "m204"})
    assert missing.status_code == 404
    assert http.get("/Dog/204").status_code == 404
    assert audits(http, "patch-m204") == []

    assert http.put("/Dog/205", json={"name": "Old"}).status_code == 204
    stale = http.put(
        "/AuditedDog/205", json={"name": "New", "tag": "s205"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert http.get("/Dog/205").json()["name"] == "Old"
    assert audits(http, "put-s205") == []

    taken = http.post("/AuditedDog/", json={"id": 205, "name": "Again", "tag": "c205"})
    assert taken.status_code == 409
    assert audits(http, "post-c205") == []

    assert http.delete("/AuditedDog/206").status_code == 404
    assert audits(http, "delete-206") == []
    assert http.delete("/AuditedDog/205").status_code == 204
    assert http.get("/Dog/205").status_code == 404
    assert audits(http, "delete-205") == ["delete-205"]


def test_super_delete_by_query_joins_the_transaction(http: httpx.Client) -> None:
    for key in (207, 208):
        put = http.put(f"/Dog/{key}", json={"name": "Q", "breed": "query-breed"})
        assert put.status_code == 204
    assert http.delete("/AuditedDog/?breed=query-breed").json() == {"deleted": 2}
    assert http.get("/Dog/?breed=query-breed").json() == []
    assert audits(http, "delete-query") == ["delete-query"]


def test_a_plain_table_write_still_answers_its_etag(http: httpx.Client) -> None:
    created = http.post("/Dog/", json={"id": 209, "name": "Plain"})
    assert (created.status_code, created.headers["location"]) == (201, "/Dog/209")
    assert created.headers["etag"] == http.get("/Dog/209").headers["etag"]


# --------------------------------------------------------------------------- search sees its writes


def test_search_in_a_transaction_sees_its_own_writes(app: App) -> None:
    dogs = tables.Dog.records
    dogs.put(1, {"name": "Rex", "breed": "lab", "age": 3})
    dogs.put(2, {"name": "Fido", "breed": "lab", "age": 5})
    dogs.put(3, {"name": "Max", "breed": "pug", "age": 1})
    with kiln.transaction():
        dogs.put(4, {"name": "Abe", "breed": "lab", "age": 4})
        dogs.patch(3, {"breed": "lab"})
        dogs.delete(2)
        assert [d["id"] for d in dogs.search("breed=lab")] == [1, 3, 4]
        assert list(dogs.search("breed=lab&sort(-age)&select(name)")) == ["Abe", "Rex", "Max"]
        assert list(dogs.search("breed=lab&sort(name)&limit(2)&select(id)")) == [4, 3]
        assert list(dogs.search({"breed": "pug"})) == []
        assert [d["id"] for d in dogs.search("id=ge=1")] == [1, 3, 4]
        # nothing is committed yet: a search outside the transaction sees the stored records
        with app.databases["data"].read() as txn:
            assert app.databases["data"].tables["Dog"].get(txn, 4) is None
    assert [d["id"] for d in dogs.search("breed=lab")] == [1, 3, 4]


def test_search_in_a_request_sees_the_requests_writes(http: httpx.Client) -> None:
    body = {"id": 210, "name": "Census", "breed": "census-breed"}
    assert http.post("/Census/", json=body).json() == [210]


def test_an_id_the_key_store_cannot_hold_is_no_record(app: App) -> None:
    owners = tables.Owner.records
    assert owners.get("x" * 600) is None
    with pytest.raises(NotFound):
        owners.patch("x" * 600, {"name": "n"})
    with pytest.raises(NotFound):
        owners.delete("x" * 600)
    with pytest.raises(BadRequest) as refused:
        owners.put("a\ud800", {"name": "n"})
    assert "the key store cannot hold it" in refused.value.message
    with pytest.raises(BadRequest) as huge:
        tables.Dog.records.put(10**5000, {"name": "n"})
    assert "a whole number of about" in huge.value.message
