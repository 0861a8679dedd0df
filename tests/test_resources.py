"""resources.py (:mod:`kiln.loader`, :mod:`kiln.namespace`): classes served as routes by a real
``kiln run`` server, every method and result kind, errors, permissions, and loading mistakes.

One server serves the module's ``RESOURCES``; tests use their own keys. The loading mistakes
each start ``python -m kiln run`` on a broken app and read its exit code and output.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app, ws_event
from kiln import Table, tables
from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import KilnError, UnknownTable
from kiln.loader import check_resources
from kiln.namespace import filled
from kiln.schema import parse_schema

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
  ownerId: ID
  owner: Owner @relationship(from: ownerId)
}

type Owner @table @export {
  id: ID @primaryKey
  name: String
}
"""

RESOURCES = """
import asyncio

from kiln import Resource, Response, tables
from kiln.errors import Conflict, HTTPError, NotFound


class DogProfile(tables.Dog):
    def get(self, target):
        dog = super().get(target)
        if target.is_collection:
            return dog
        return {**dog, "humanAge": dog["age"] * 7} if dog else None


class SyncEcho(Resource):
    def get(self, target):
        target.context.response_headers["X-Echo"] = "sync"
        return {
            "id": target.id,
            "collection": target.is_collection,
            "path": target.path,
            "limit": target.query.end,
            "header": target.context.headers.get("x-test"),
        }

    def put(self, target, data):
        return {"put": data, "id": target.id}

    def post(self, target, data):
        return {"post": data}

    def patch(self, target, data):
        return {"patch": data}

    def delete(self, target):
        return {"deleted": target.id}


class AsyncEcho(Resource):
    async def get(self, target):
        await asyncio.sleep(0)
        return {"id": target.id, "async": True}

    async def put(self, target, data):
        await asyncio.sleep(0)
        return {"put": data}

    async def post(self, target, data):
        await asyncio.sleep(0)
        return {"post": data}

    async def patch(self, target, data):
        await asyncio.sleep(0)
        return {"patch": data}

    async def delete(self, target):
        await asyncio.sleep(0)
        return {"deleted": target.id}


class Kinds(Resource):
    def get(self, target):
        kind = target.id
        if kind == "value":
            return {"kind": "value"}
        if kind == "list":
            return [1, 2, 3]
        if kind == "iterator":
            return iter([{"n": 1}, {"n": 2}])
        if kind == "generator":
            return ({"n": n} for n in range(3))
        if kind == "many":
            return ({"n": n, "pad": "x" * 100} for n in range(2000))
        if kind == "response":
            return Response(202, {"X-Kind": "response"}, {"ok": True})
        if kind == "empty":
            return Response(201, {"Location": "/Kinds/made"})
        if kind == "notfound":
            raise NotFound("no kind called notfound")
        if kind == "conflict":
            raise Conflict("that kind is taken")
        if kind == "teapot":
            raise HTTPError(418, "short and stout")
        if kind == "crash":
            raise RuntimeError("boom-do-not-leak")
        return None

    def put(self, target, data):
        return None

    async def delete(self, target):
        return None


class AsyncStream(Resource):
    async def get(self, target):
        for n in range(3):
            await asyncio.sleep(0)
            yield {"n": n}


class Renamed(Resource):
    path = "renamed"

    def get(self, target):
        return {"at": "renamed"}


class Hidden(Resource):
    exported = False

    def get(self, target):
        return {"class": type(self).__name__}


class Child(Hidden):
    pass


class Locked(Resource):
    def get(self, target):
        return {"secret": True}

    def post(self, target, data):
        return {"posted": True}

    def allow_read(self, target):
        return False


class ReadOnlyDog(tables.Dog):
    def allow_update(self, target):
        return False

    def allow_delete(self, target):
        return False


class _Private(Resource):
    def get(self, target):
        return {}
"""

_ids = itertools.count(500)


def new_id() -> int:
    return next(_ids)


def error_id(body: dict[str, object]) -> str:
    found = re.search(r"error id ([0-9a-f]+)", str(body["detail"]))
    assert found, body
    return found.group(1)


# --------------------------------------------------------------------------- methods and results


@pytest.mark.parametrize("resource", ["SyncEcho", "AsyncEcho"])
def test_each_method_sync_and_async(http: httpx.Client, resource: str) -> None:
    get = http.get(f"/{resource}/7")
    assert get.status_code == 200
    assert get.json()["id"] == "7"
    assert http.put(f"/{resource}/7", json={"a": 1}).json()["put"] == {"a": 1}
    assert http.post(f"/{resource}/", json={"b": 2}).json() == {"post": {"b": 2}}
    assert http.patch(f"/{resource}/7", json={"c": 3}).json() == {"patch": {"c": 3}}
    assert http.delete(f"/{resource}/7").json() == {"deleted": "7"}


def test_the_target_carries_id_collection_query_path_and_context(http: httpx.Client) -> None:
    one = http.get("/SyncEcho/abc?limit(5)", headers={"X-Test": "hello"})
    assert one.json() == {
        "id": "abc",
        "collection": False,
        "path": "/SyncEcho/abc",
        "limit": 5,
        "header": "hello",
    }
    assert one.headers["x-echo"] == "sync"
    collection = http.get("/SyncEcho/").json()
    assert collection["id"] is None
    assert collection["collection"] is True
    itself = http.get("/SyncEcho").json()
    assert (itself["id"], itself["collection"]) == (None, False)


def test_a_value_is_200_in_the_negotiated_format(http: httpx.Client) -> None:
    assert http.get("/Kinds/value").json() == {"kind": "value"}
    assert http.get("/Kinds/list").json() == [1, 2, 3]
    cbor = http.get("/Kinds/value", headers={"Accept": "application/cbor"})
    assert cbor.status_code == 200
    assert cbor.headers["content-type"] == "application/cbor"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/Kinds/iterator", [{"n": 1}, {"n": 2}]),
        ("/Kinds/generator", [{"n": 0}, {"n": 1}, {"n": 2}]),
        ("/AsyncStream/", [{"n": 0}, {"n": 1}, {"n": 2}]),
    ],
)
def test_iterators_are_read_as_arrays(
    http: httpx.Client, path: str, expected: list[object]
) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.json() == expected
    assert response.headers["content-length"]  # under one 64 KiB chunk: sent whole


def test_a_long_iterator_is_streamed(http: httpx.Client) -> None:
    response = http.get("/Kinds/many")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    assert [item["n"] for item in response.json()] == list(range(2000))


def test_none_is_404_for_a_read_and_204_for_a_write(http: httpx.Client) -> None:
    assert http.get("/Kinds/nothing").status_code == 404
    put = http.put("/Kinds/nothing", json={})
    assert (put.status_code, put.content) == (204, b"")
    assert http.delete("/Kinds/nothing").status_code == 204


def test_a_response_sets_status_headers_and_body(http: httpx.Client) -> None:
    response = http.get("/Kinds/response")
    assert response.status_code == 202
    assert response.headers["x-kind"] == "response"
    assert response.json() == {"ok": True}
    empty = http.get("/Kinds/empty")
    assert (empty.status_code, empty.headers["location"], empty.content) == (
        201,
        "/Kinds/made",
        b"",
    )


@pytest.mark.parametrize(
    ("kind", "status", "detail"),
    [
        ("notfound", 404, "no kind called notfound"),
        ("conflict", 409, "that kind is taken"),
        ("teapot", 418, "short and stout"),
    ],
)
def test_raised_http_errors_become_problems(
    http: httpx.Client, kind: str, status: int, detail: str
) -> None:
    response = http.get(f"/Kinds/{kind}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == detail


def test_any_other_exception_is_a_500_with_an_id_in_the_log(
    http: httpx.Client, kiln_server: KilnServer
) -> None:
    response = http.get("/Kinds/crash")
    assert response.status_code == 500
    assert "boom-do-not-leak" not in response.text
    logged = error_id(response.json())
    assert http.get("/Kinds/value").status_code == 200  # the process is unharmed
    log = kiln_server.log()
    assert f"error {logged}: unhandled RuntimeError" in log
    assert "boom-do-not-leak" in log.split(f"error {logged}", 1)[1]


def test_a_method_the_class_does_not_define_is_405_with_allow(http: httpx.Client) -> None:
    response = http.patch("/Kinds/x", json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, PUT, DELETE, OPTIONS"
    assert http.post("/AsyncStream/", json={}).headers["allow"] == "GET, HEAD, OPTIONS"


# --------------------------------------------------------------------------- routes


def test_path_renames_the_route(http: httpx.Client) -> None:
    assert http.get("/renamed/").json() == {"at": "renamed"}
    assert http.get("/Renamed/").status_code == 404


def test_exported_false_hides_the_class_but_not_its_subclasses(http: httpx.Client) -> None:
    assert http.get("/Hidden/").status_code == 404
    assert http.get("/Child/").json() == {"class": "Child"}
    assert http.get("/_Private/").status_code == 404


def test_a_table_subclass_serves_the_same_rows_on_its_own_route(http: httpx.Client) -> None:
    key = new_id()
    assert http.put(f"/Dog/{key}", json={"name": "rex", "age": 3}).status_code == 204
    assert http.get(f"/DogProfile/{key}").json() == {
        "id": key,
        "name": "rex",
        "age": 3,
        "humanAge": 21,
    }
    created = http.post("/DogProfile/", json={"id": new_id(), "name": "fido", "age": 1})
    assert created.status_code == 201
    location = created.headers["location"]
    assert location.startswith("/DogProfile/")
    other = location.rsplit("/", 1)[1]
    assert http.get(f"/Dog/{other}").json()["name"] == "fido"
    assert http.get(f"/DogProfile/{new_id()}").status_code == 404
    every = http.get("/Dog/").json()
    assert {"rex", "fido"} <= {dog["name"] for dog in every}
    assert http.get("/DogProfile/").json() == every
    assert http.get("/DogProfile").json()["path"] == "/DogProfile/"
    assert http.get("/Dog").json()["path"] == "/Dog/"


def test_a_permission_hook_saying_no_is_403_naming_the_hook(http: httpx.Client) -> None:
    """A hook of resources.py that refuses what the role grants (the super user's, here)
    is named as the refusal: blaming the role would send the user to the wrong file."""
    locked = http.get("/Locked/")
    assert locked.status_code == 403
    assert locked.json()["detail"] == "`Locked.allow_read` refused `read` on /Locked/"
    assert "resources.py" in locked.json()["hint"]
    assert http.post("/Locked/", json={}).json() == {"posted": True}
    key = new_id()
    assert http.put(f"/Dog/{key}", json={"name": "kept"}).status_code == 204
    put = http.put(f"/ReadOnlyDog/{key}", json={"name": "changed"})
    assert put.status_code == 403
    assert put.json()["detail"] == (
        f"`ReadOnlyDog.allow_update` refused `update` on /ReadOnlyDog/{key}"
    )
    assert http.delete(f"/ReadOnlyDog/{key}").status_code == 403
    assert http.get(f"/ReadOnlyDog/{key}").json()["name"] == "kept"


def test_a_refused_publish_names_the_hook_the_app_wrote(kiln_server: KilnServer) -> None:
    """A table's allow_publish asks allow_update: when the app's allow_update refuses, that
    is the hook named, not allow_publish, which the app never wrote."""
    key = new_id()
    headers = {"Authorization": httpx.BasicAuth(*ADMIN_AUTH)._auth_header}
    url = f"ws://127.0.0.1:{kiln_server.port}/ReadOnlyDog/{key}?omitCurrent"
    with connect(url, additional_headers=headers, open_timeout=5) as connection:
        connection.send(json.dumps({"hello": True}))
        refusal = ws_event(connection)
    assert (refusal["type"], refusal["value"]) == (
        "error",
        f"`ReadOnlyDog.allow_update` refused `publish` on /ReadOnlyDog/{key}",
    )


def test_select_on_a_record_url_shapes_the_record(http: httpx.Client) -> None:
    key = new_id()
    assert http.put("/Owner/o-sel", json={"name": "Ann"}).status_code == 204
    assert http.put(f"/Dog/{key}", json={"name": "rex", "ownerId": "o-sel"}).status_code == 204
    etag = http.get(f"/Dog/{key}").headers["etag"]
    name = http.get(f"/Dog/{key}?select(name)")
    assert (name.json(), name.headers["etag"]) == ("rex", etag)
    assert http.get(f"/Dog/{key}?select(id,name)").json() == {"id": key, "name": "rex"}
    assert http.get(f"/Dog/{key}?select([name,age])").json() == ["rex", None]
    nested = http.get(f"/Dog/{key}?select(name,owner{{name}})")
    assert nested.json() == {"name": "rex", "owner": {"name": "Ann"}}
    assert "etag" not in nested.headers  # the answer holds another record too
    assert http.get(f"/Dog/{key}?select(owner)").json() == {"id": "o-sel", "name": "Ann"}
    cached = http.get(f"/Dog/{key}?select(id,name)", headers={"If-None-Match": etag})
    assert cached.status_code == 304


# --------------------------------------------------------------------------- kiln.tables


def test_an_unknown_table_is_an_attribute_error_listing_the_tables() -> None:
    with filled({}):
        assert not hasattr(tables, "Dog")
        with pytest.raises(UnknownTable, match="no app is loaded") as raised:
            _ = tables.Dog
    assert isinstance(raised.value, AttributeError)
    assert isinstance(raised.value, KilnError)
    dog = type("Dog", (Table,), {})
    with filled({"Dog": dog}):
        assert tables.Dog is dog
        assert "Dog" in tables
        with pytest.raises(AttributeError, match="its tables are Dog") as raised:
            _ = tables.dog
        assert "did you mean tables.Dog?" in str(raised.value)


# --------------------------------------------------------------------------- loading mistakes

DOG = "type Dog @table @export {\n  id: Int @primaryKey\n  name: String\n}\n"


def run_broken(tmp_path: Path, resources: str | bytes, schema: str = DOG) -> str:
    """Start ``kiln run`` on an app with ``resources`` (text, or the file's bytes); it must
    exit 2 at once. Its output."""
    app = write_app(tmp_path / "app", schema)
    if isinstance(resources, str):
        resources = resources.encode()
    (app / "resources.py").write_bytes(resources)
    port = str(free_port())
    done = subprocess.run(  # a relative APP_DIR, as people type it
        [sys.executable, "-m", "kiln", "run", app.name, "--port", port, "--data", "data"],
        cwd=app.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ("import os\n\nimport no_such_module_here\n", r"resources\.py:3: ModuleNotFoundError"),
        ("from kiln import Resource\n\nratio = 1 / 0\n", r"resources\.py:3: ZeroDivisionError"),
        ("def broken(:\n    pass\n", r"resources\.py:1:\d+: syntax error"),
        (
            "from kiln import Resource\n\n\nclass Thing(Resource):\n"
            "    def get(self, target):\n        return {}\n\n    size = len(undefined)\n",
            r"resources\.py:8: class Thing: NameError: name 'undefined' is not defined",
        ),
    ],
)
def test_an_exception_while_importing_stops_start_up(
    tmp_path: Path, resources: str, expected: str
) -> None:
    assert re.search(expected, run_broken(tmp_path, resources))


def test_a_class_extending_an_unknown_table(tmp_path: Path) -> None:
    cat = "from kiln import tables\n\n\nclass CatProfile(tables.Cat):\n    pass\n"
    output = run_broken(tmp_path, cat)
    assert re.search(
        r"resources\.py:4: class CatProfile extends tables\.Cat, but the schema has no table "
        r"Cat; its tables are Dog",
        output,
    ), output
    output = run_broken(tmp_path, "from kiln import tables\n\nclass Profile(tables.Dogs):\n  x=1\n")
    assert "resources.py:3:" in output
    assert "did you mean tables.Dog?" in output


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            "from kiln import Resource\n\n\nclass A(Resource):\n    path = 'same'\n\n\n"
            "class B(Resource):\n    path = 'same'\n",
            r"resources\.py:8: class B claims the route /same/, which class A \(line 4\)",
        ),
        (
            "from kiln import tables\n\n\nclass Dog(tables.Dog):\n    pass\n",
            r"resources\.py:4: class Dog claims the route /Dog/, which the schema's exported "
            r"table Dog serves",
        ),
        (
            "from kiln import Resource\n\n\nclass Deep(Resource):\n    path = 'a/b'\n",
            r"resources\.py:4: class Deep has path = 'a/b', which cannot name a route",
        ),
    ],
)
def test_two_classes_claiming_one_route(tmp_path: Path, resources: str, expected: str) -> None:
    output = run_broken(tmp_path, resources)
    assert re.search(expected, output), output
    assert "hint:" in output


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("def get(self):", r"resources\.py:5: Thing\.get\(self\) does not match the seam"),
        ("def put(self, target):", r"Thing\.put\(self, target\) does not match the seam"),
        ("async def post(self, target, body):", r"kiln calls post\(target, data\)"),
        ("def delete(self, target, *args):", r"Thing\.delete\(self, target, \*args\)"),
        ("def allow_read(self):", r"Thing\.allow_read\(self\)"),
        ("def publish(self, target):", r"kiln calls publish\(target, message\)"),
        (
            "def post(self, target: 'T', *, data: dict) -> dict:",
            r"resources\.py:5: Thing\.post\(self, target, \*, data\) does not match the seam",
        ),
        ("def put(self, target, data, /):", r"Thing\.put\(self, target, data, /\) does not"),
    ],
)
def test_a_seam_method_with_the_wrong_signature(tmp_path: Path, method: str, expected: str) -> None:
    header = "from kiln import Resource\n\n\nclass Thing(Resource):\n"
    resources = f"{header}    {method}\n        pass\n"
    output = run_broken(tmp_path, resources)
    assert re.search(expected, output), output
    assert "hint: define it as `def" in output


@pytest.mark.parametrize("kind", ["staticmethod", "classmethod"])
def test_a_seam_method_that_is_not_an_instance_method(tmp_path: Path, kind: str) -> None:
    resources = (
        "from kiln import Resource\n\n\nclass DogProfile(Resource):\n"
        f"    @{kind}\n    def get(target):\n        return {{}}\n"
    )
    output = run_broken(tmp_path, resources)
    assert (
        f"resources.py:5: DogProfile.get is a {kind}, but kiln calls get on the instance it "
        "makes of DogProfile: it must be an instance method taking self"
    ) in output, output
    assert f"hint: remove @{kind} and define it as `def get(self, target):`" in output


@pytest.mark.parametrize(
    ("method", "guess"),
    [
        ("allow_insrt", "; did you mean allow_insert?"),
        ("allow_post", "; did you mean allow_insert?"),
        ("allow_create", "; did you mean allow_insert?"),
        ("allow_admins", "\n"),
        ("allowRead", "; did you mean allow_read?"),
        ("allowCreate", "; did you mean allow_insert?"),
    ],
)
def test_an_allow_method_that_is_no_permission_hook(
    tmp_path: Path, method: str, guess: str
) -> None:
    """A typo'd hook would silently drop the restriction it was written for."""
    resources = (
        "from kiln import tables\n\n\nclass ReadOnlyDog(tables.Dog):\n    size = 3\n\n"
        f"    def {method}(self, target):\n        return False\n"
    )
    output = run_broken(tmp_path, resources)
    expected = f"resources.py:7: ReadOnlyDog.{method} is not a permission hook kiln calls{guess}"
    assert expected in output, output
    assert (
        "hint: the hooks are allow_read, allow_insert, allow_update, allow_delete, "
        "allow_subscribe, allow_publish;"
    ) in output


NEAR_MISSES = """from kiln import Resource, tables


class Thing(Resource):
    def gett(self, target):
        return {"custom": True}

    def getter(self, target):
        return {}

    def Get(self):
        return {}

    def records_of(self):
        return []


class DogProfile(tables.Dog):
    path_name = "profile"

    @staticmethod
    def posts(target):
        return []
"""


def test_a_method_named_like_a_seam_method_is_a_warning(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "app", DOG, resources=NEAR_MISSES)
    server = KilnServer(app_dir, tmp_path / "data", free_port())
    server.start()
    try:
        assert httpx.get(f"{server.url}/Thing/", auth=ADMIN_AUTH, timeout=10).status_code == 405
    finally:
        assert server.stop() == 0
    log = server.log()
    warnings = re.findall(r"WARNING kiln\.loader: (.*)", log)
    assert warnings == [
        "resources.py:5: Thing.gett is not a seam method, so kiln never calls it; did you "
        "mean get? (rename it if so; a helper of that name is fine)",
        "resources.py:11: Thing.Get is not a seam method, so kiln never calls it; did you "
        "mean get? (rename it if so; a helper of that name is fine)",
        "resources.py:21: DogProfile.posts is not a seam method, so kiln never calls it; did "
        "you mean post? (rename it if so; a helper of that name is fine)",
    ], log


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("sys.exit()", "resources.py:4: resources.py called sys.exit() while kiln imported it"),
        ("sys.exit(3)", "resources.py:4: resources.py called sys.exit(3) while kiln imported it"),
        (
            "sys.exit('CLINIC_API_KEY missing')",
            "resources.py:4: resources.py called sys.exit('CLINIC_API_KEY missing') while kiln "
            "imported it",
        ),
        ("raise SystemExit(0)", "resources.py:4: resources.py called sys.exit(0) while kiln"),
        (
            "raise KeyboardInterrupt",
            "resources.py:4: resources.py raised KeyboardInterrupt while kiln imported it",
        ),
        (
            "class Thing(Resource):\n    sys.exit()",
            "resources.py:5: class Thing: resources.py called sys.exit() while kiln imported it",
        ),
    ],
)
def test_exiting_while_imported_is_a_mistake(tmp_path: Path, statement: str, expected: str) -> None:
    """Without this, ``sys.exit()`` looked like a clean exit (0) that served nothing."""
    output = run_broken(tmp_path, f"import sys\n\nfrom kiln import Resource\n{statement}\n")
    assert expected in output, output
    assert "raise an exception (`raise RuntimeError('...')`) to stop start-up" in output


def test_a_helper_that_exits_names_where_it_did(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", DOG)
    (app / "settings.py").write_text("import sys\n\nsys.exit('no key')\n")
    output = run_broken(tmp_path, "import settings\n")
    assert "resources.py:1: resources.py called sys.exit('no key') while kiln imported it" in output
    assert re.search(r"\(the error was raised at .*settings\.py:3\)", output), output


def test_ctrl_c_while_importing_stops_kiln_and_closes_what_it_opened(tmp_path: Path) -> None:
    """A real SIGINT is not a mistake in the file: kiln stops as Ctrl-C stops it elsewhere."""
    resources = (
        "import os\nimport signal\nimport time\n\nfrom kiln import tables\n\n"
        "tables.Dog.records.put(1, {'name': 'seeded'})\n"
        "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\n"
    )
    app = write_app(tmp_path / "app", DOG, resources=resources)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "run", str(app), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130, done.stdout + done.stderr
    assert time.monotonic() - started < 25  # not held up by the sleep nor by a thread left open
    assert "KeyboardInterrupt while kiln imported it" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_resources_py_that_is_not_utf8(tmp_path: Path) -> None:
    good = b"from kiln import Resource\n\n\nclass Thing(Resource):\n    pass\n"  # 60 bytes
    output = run_broken(tmp_path, good + b"\n# caf\xe9\n")
    assert re.search(
        r"^error: resources\.py:7: the file is not UTF-8 text \(byte 66\)\n"
        r"  hint: save it as UTF-8$",
        output,
        re.M,
    ), output
    output = run_broken(tmp_path / "first", b"# caf\xe9\n" + good)
    assert "resources.py:1: the file is not UTF-8 text (byte 5)" in output, output
    output = run_broken(tmp_path / "bom", b"\xef\xbb\xbf" + good + b"x = '\xe9'\n")
    assert "resources.py:6: the file is not UTF-8 text (byte 68)" in output, output


def test_a_coding_line_is_honoured_as_python_honours_it(tmp_path: Path) -> None:
    resources = (
        "# -*- coding: latin-1 -*-\nfrom kiln import Resource\n\n\nclass Cafe(Resource):\n"
        "    def get(self, target):\n        return {'name': 'caf\xe9'}\n"
    ).encode("latin-1")
    app = write_app(tmp_path / "app", DOG)
    (app / "resources.py").write_bytes(resources)
    server = KilnServer(app, tmp_path / "data", free_port())
    server.start()
    try:
        answer = httpx.get(f"{server.url}/Cafe/", auth=ADMIN_AUTH, timeout=10)
        assert answer.json() == {"name": "caf\xe9"}
    finally:
        server.stop()
    cp1252 = resources.replace(b"latin-1", b"cp1252 ") + b"# \x81\n"  # 0x81: no cp1252 char
    output = run_broken(tmp_path / "cp1252", cp1252)
    byte = len(resources) + 2
    assert f"resources.py:8: the file is not cp1252 text (byte {byte})" in output, output
    assert "hint: save it as cp1252, as its coding line says, or as UTF-8 without" in output


def test_a_seed_write_that_fails_validation_lists_the_fields(tmp_path: Path) -> None:
    schema = DOG.replace("name: String", "name: String\n  age: Int")
    resources = (
        "from kiln import tables\n\n"
        "tables.Dog.records.put(1, {'name': 'rex'})\n"
        "tables.Dog.records.put(2, {'name': 5, 'age': 'old'})\n"
    )
    output = run_broken(tmp_path, resources, schema)
    assert re.search(
        r"^error: resources\.py:4: 2 invalid fields in the Dog record\n"
        r"    \$\.name: `name` expects String .*\n"
        r"    \$\.age: `age` expects Int .*\n"
        r"  hint: each indented line names a field and what it takes; fix the record there$",
        output,
        re.M,
    ), output
    assert "`errors`" not in output


# --------------------------------------------------------------------------- the app folder

HELPERS = """
from lib.names import title

GREETING = "hello from helpers"


def shout(text):
    return title(text).upper() + "!"
"""

IMPORTING = """
from helpers import GREETING, shout

from kiln import Resource


class Greeter(Resource):
    def get(self, target):
        from lib.names import title  # imported when a request runs, not at load

        return {"greeting": GREETING, "shout": shout(target.id), "title": title(target.id)}
"""


def write_importing_app(directory: Path, greeting: str = "hello from helpers") -> Path:
    """An app whose resources.py imports helpers.py and the package lib/ beside it."""
    write_app(directory, DOG, resources=IMPORTING)
    (directory / "helpers.py").write_text(HELPERS.replace("hello from helpers", greeting))
    (directory / "lib").mkdir(exist_ok=True)
    (directory / "lib" / "__init__.py").write_text("")
    (directory / "lib" / "names.py").write_text("def title(text):\n    return text.title()\n")
    return directory


def test_resources_py_imports_the_modules_beside_it(tmp_path: Path) -> None:
    server = KilnServer(write_importing_app(tmp_path / "app"), tmp_path / "data", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
            assert http.get("/Greeter/ann lee").json() == {
                "greeting": "hello from helpers",
                "shout": "ANN LEE!",
                "title": "Ann Lee",
            }
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def greeting_of(app: App) -> str:
    """The GREETING the app's resources.py imported from its helpers.py."""
    return vars(sys.modules[type(app.routes["Greeter"]).__module__])["GREETING"]


def test_each_load_imports_the_folders_modules_anew_and_close_forgets_them(
    tmp_path: Path,
) -> None:
    first = write_importing_app(tmp_path / "first", "first app")
    second = write_importing_app(tmp_path / "second", "second app")

    def load(directory: Path) -> App:
        config = load_config(directory, env={}, overrides={"storage.path": str(tmp_path / "d")})
        return load_app(directory, config, progress=lambda *_: None)

    with filled({}):
        for directory, expected in ((first, "first app"), (second, "second app")):
            app = load(directory)
            try:
                assert greeting_of(app) == expected
                assert sys.path[0] == str(directory.resolve())
            finally:
                app.close()
            assert str(directory.resolve()) not in sys.path
            assert not {"helpers", "lib", "lib.names"} & set(sys.modules)
        # a reload (kiln dev closes the app, then loads it again) reads the changed helper
        (first / "helpers.py").write_text(HELPERS.replace("hello from helpers", "edited, longer"))
        app = load(first)
        try:
            assert greeting_of(app) == "edited, longer"
        finally:
            app.close()


def test_a_check_while_the_app_is_loaded_reads_the_changed_helpers(tmp_path: Path) -> None:
    app_dir = write_importing_app(tmp_path / "app")
    config = load_config(app_dir, env={}, overrides={"storage.path": str(tmp_path / "data")})
    with filled({}):
        app = load_app(app_dir, config, progress=lambda *_: None)
        try:
            # kiln dev checks an edit of resources.py and helpers.py before it reloads
            (app_dir / "helpers.py").write_text(HELPERS + "\nADDED = 1\n")
            resources = app_dir / "resources.py"
            resources.write_text("from helpers import ADDED\n" + IMPORTING)
            check_resources(resources, parse_schema(DOG))
            assert sys.path[0] == str(app_dir.resolve())  # still the running app's
        finally:
            app.close()


def test_checking_resources_leaves_sys_path_as_it_was(tmp_path: Path) -> None:
    app_dir = write_importing_app(tmp_path / "app")
    before = list(sys.path)
    check_resources(app_dir / "resources.py", parse_schema(DOG))
    assert sys.path == before
    assert "helpers" not in sys.modules
