"""Security over REST against a real server: the permission matrix (roles by tables by operations),
attribute allow-lists, plain resources, bearer tokens, changes made by ``kiln user`` while the
server runs, and the failed-login limit.

Users are written into the running server's system database from this process (LMDB lets
two processes share it), so each test also shows that the server sees new users at once.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app
from kiln.auth.passwords import hash_password
from kiln.auth.users import SYSTEM_FOLDER, UserStore

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  secret: String
  ownerId: ID @indexed
  owner: Owner @relationship(from: ownerId)
}
type Owner @table @export {
  id: ID @primaryKey
  name: String @indexed
  email: String @unique
  dogs: [Dog] @relationship(to: ownerId)
}
type Visit @table(database: "clinic") @export {
  id: ID @primaryKey
  dogId: Int @indexed
  notes: String
}
"""

CONFIG = """
roles:
  anonymous:
    data:
      Owner: {read: true}
  reader:
    data:
      Dog: {read: true}
      Owner: {read: true}
  writer:
    data:
      Dog: {read: true, insert: true, update: true}
  deleter:
    data:
      Dog: {delete: true}
  updater:
    data:
      Dog: {read: true, update: true}
  registrar:  # adds owners, but may not read their email addresses
    data:
      Owner:
        read: true
        insert: true
        attributes:
          name: {read: true}
          email: {read: false}
  linkless:  # may read owners, and of dogs only their names: not who owns them
    data:
      Owner: {read: true}
      Dog:
        read: true
        attributes:
          name: {read: true}
  editor:
    data:
      Dog:
        read: true
        insert: true
        update: true
        attributes:
          name: {read: true}
          breed: {read: true, update: false}
          ownerId: {read: true}
  clinic:
    clinic:
      Visit: {read: true, insert: true, update: true, delete: true}
  nobody:
"""

RESOURCES = """
from kiln import Resource, tables


class Echo(Resource):
    def get(self, target):
        return {"user": target.context.user.name}


class Open(Resource):
    def allow_read(self, target):
        return True

    def get(self, target):
        return {"open": True}


class DogView(tables.Dog):
    pass


class OwnerDesk(tables.Owner):
    # its writes go through super(): one transaction, committed after the method
    async def post(self, target, data):
        return await super().post(target, data)
"""

ROLES = ("reader", "writer", "deleter", "updater", "editor", "clinic", "nobody")
GRANTS: dict[str, dict[str, set[str]]] = {
    "admin": {table: {"read", "insert", "update", "delete"} for table in ("Dog", "Owner", "Visit")},
    "anonymous": {"Owner": {"read"}},
    "reader": {"Dog": {"read"}, "Owner": {"read"}},
    "writer": {"Dog": {"read", "insert", "update"}},
    "deleter": {"Dog": {"delete"}},
    "updater": {"Dog": {"read", "update"}},
    "editor": {"Dog": {"read", "insert", "update"}},
    "clinic": {"Visit": {"read", "insert", "update", "delete"}},
    "nobody": {},
}
"""What each role may do with each table, as CONFIG says: the matrix's expectations."""

PROBLEM = "application/problem+json"
_ids = itertools.count(1000)


def password(role: str) -> str:
    return f"{role}-password"


def auth_of(role: str) -> tuple[str, str] | None:
    if role == "admin":
        return ADMIN_AUTH
    return None if role == "anonymous" else (role, password(role))


@pytest.fixture(scope="module")
def store(kiln_server: KilnServer) -> Iterator[UserStore]:
    """The running server's system database, opened from this process with a user per role."""
    users = UserStore(kiln_server.data_dir / SYSTEM_FOLDER)
    for role in (*ROLES, "changer", "victim", "tokens"):
        users.add(role, role if role in ROLES else "reader", hash_password(password(role)))
    yield users
    users.close()


@pytest.fixture(scope="module")
def admin(kiln_server: KilnServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def clients(kiln_server: KilnServer, store: UserStore) -> Iterator[dict[str, httpx.Client]]:
    """An httpx client per role (``anonymous`` sends no credentials)."""
    made = {
        role: httpx.Client(base_url=kiln_server.url, auth=auth_of(role), timeout=10)
        for role in GRANTS
    }
    yield made
    for client in made.values():
        client.close()


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Operation:
    """One REST operation: the permissions it needs and what it answers when allowed."""

    method: str
    path: str
    needs: tuple[str, ...]
    success: int
    body: str | None = None


OPERATIONS = {
    "get": Operation("GET", "/{table}/{id}", ("read",), 200),
    "get missing": Operation("GET", "/{table}/{missing}", ("read",), 404),
    "collection": Operation("GET", "/{table}/", ("read",), 200),
    "query": Operation("GET", "/{table}/?{indexed}={value}", ("read",), 200),
    "describe": Operation("GET", "/{table}", ("read",), 200),
    "post": Operation("POST", "/{table}/", ("insert",), 201, "insert"),
    "put": Operation("PUT", "/{table}/{id}", ("update",), 204, "replace"),
    "patch": Operation("PATCH", "/{table}/{id}", ("update",), 204, "patch"),
    "patch missing": Operation("PATCH", "/{table}/{missing}", ("update",), 404, "patch"),
    "delete": Operation("DELETE", "/{table}/{id}", ("delete",), 204),
    "delete missing": Operation("DELETE", "/{table}/{missing}", ("delete",), 404),
    "delete query": Operation("DELETE", "/{table}/?{indexed}={value}", ("delete", "read"), 200),
}

TABLES: dict[str, dict[str, Any]] = {
    "Dog": {
        "indexed": "breed",
        "record": lambda n: {"name": f"dog {n}", "breed": f"b{n}", "secret": "s"},
        "insert": {"name": "new", "breed": "new"},
        "replace": {"name": "replaced"},
        "patch": {"name": "patched"},
        "value": lambda n: f"b{n}",
        "key": lambda n: n,
    },
    "Owner": {
        "indexed": "name",
        "record": lambda n: {"name": f"n{n}"},
        "insert": {"name": "new"},
        "replace": {"name": "replaced"},
        "patch": {"name": "patched"},
        "value": lambda n: f"n{n}",
        "key": lambda n: f"o{n}",
    },
    "Visit": {
        "indexed": "dogId",
        "record": lambda n: {"dogId": n, "notes": "n"},
        "insert": {"dogId": 1},
        "replace": {"dogId": 2},
        "patch": {"notes": "patched"},
        "value": lambda n: str(n),
        "key": lambda n: f"v{n}",
    },
}


def expected_status(role: str, table: str, operation: Operation, name: str) -> int:
    grants = GRANTS[role].get(table, set())
    if all(permission in grants for permission in operation.needs):
        if role == "editor" and name == "put":
            return 403  # editor may change only some attributes; PUT replaces them all
        return operation.success
    return 401 if role == "anonymous" else 403


@pytest.mark.parametrize("name", list(OPERATIONS))
@pytest.mark.parametrize("table", list(TABLES))
@pytest.mark.parametrize("role", list(GRANTS))
def test_permission_matrix(
    clients: dict[str, httpx.Client], admin: httpx.Client, role: str, table: str, name: str
) -> None:
    operation, spec = OPERATIONS[name], TABLES[table]
    number = next(_ids)
    key = spec["key"](number)
    stored = spec["record"](number)
    assert admin.put(f"/{table}/{key}", json=stored).status_code == 204
    path = operation.path.format(
        table=table,
        id=key,
        missing=spec["key"](number + 500_000),
        indexed=spec["indexed"],
        value=spec["value"](number),
    )
    body = None if operation.body is None else spec[operation.body]
    response = clients[role].request(operation.method, path, json=body)

    expected = expected_status(role, table, operation, name)
    assert response.status_code == expected, (role, table, name, response.text)
    if expected in (401, 403):
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["status"] == expected
        grants = GRANTS[role].get(table, set())
        missing = next((p for p in operation.needs if p not in grants), None)
        if missing is None:  # granted at the table, refused for the attributes
            assert problem["detail"].endswith("and PUT replaces them all"), problem
        else:
            assert f"`{missing}`" in problem["detail"], problem
            assert f"`{table}`" in problem["detail"], problem
        if expected == 401:
            assert response.headers["www-authenticate"].startswith("Basic ")
        else:
            assert f"role `{role}`" in problem["detail"], problem
        assert admin.get(f"/{table}/{key}").json() == {**stored, "id": key}  # nothing written
    elif name == "get":
        assert response.json()["id"] == key
    elif name == "delete":
        assert admin.get(f"/{table}/{key}").status_code == 404


# --------------------------------------------------------------------------- attributes


def test_hidden_attributes_are_left_out_of_every_read(
    clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    editor = clients["editor"]
    key = next(_ids)
    dog = {"name": "Rex", "breed": f"b{key}", "secret": "s3cret", "ownerId": "o1", "extra": 1}
    assert admin.put(f"/Dog/{key}", json=dog).status_code == 204
    visible = {"id": key, "name": "Rex", "breed": f"b{key}", "ownerId": "o1"}
    assert editor.get(f"/Dog/{key}").json() == visible
    assert editor.get(f"/DogView/{key}").json() == visible  # a table subclass inherits it
    assert editor.get(f"/Dog/?breed=b{key}").json() == [visible]
    assert editor.get(f"/Dog/?breed=b{key}&select(name,secret)").json() == [{"name": "Rex"}]
    assert editor.get(f"/Dog/{key}?select(name,secret)").json() == {"name": "Rex"}
    assert editor.get(f"/Dog/?breed=b{key}&select(name,owner{{name}})").json() == [{"name": "Rex"}]
    names = [item["name"] for item in editor.get("/Dog").json()["attributes"]]
    assert names == ["id", "name", "breed", "ownerId"]
    assert "secret" not in editor.get(f"/Dog/?breed=b{key}", headers={"accept": "text/csv"}).text
    assert admin.get(f"/Dog/{key}").json()["secret"] == "s3cret"


HIDDEN_QUERIES = (
    "secret=s3cret",
    "breed=x|secret=y",
    "breed=x&sort(secret)",
    "select(secret)",
    "breed=x&select([name,secret])",
    "breed=x&owner.name=Ann",
)


@pytest.mark.parametrize("query", HIDDEN_QUERIES)
def test_a_query_on_hidden_attributes_is_403_naming_them(
    clients: dict[str, httpx.Client], query: str
) -> None:
    response = clients["editor"].get(f"/Dog/?{query}")
    assert response.status_code == 403, response.text
    assert response.json()["detail"].startswith("role `editor` has no `read` permission on `")
    assert "`secret`" in response.json()["detail"] or "`owner`" in response.json()["detail"]


def test_related_tables_need_their_own_read(
    clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    key = next(_ids)
    admin.put(f"/Owner/o{key}", json={"name": "Ann"})
    admin.put(f"/Dog/{key}", json={"name": "Rex", "breed": f"b{key}", "ownerId": f"o{key}"})
    reader, writer = clients["reader"], clients["writer"]
    assert reader.get(f"/Dog/?breed=b{key}&select(name,owner{{name}})").json() == [
        {"name": "Rex", "owner": {"name": "Ann"}}
    ]
    assert reader.get(f"/Dog/?breed=b{key}&owner.name=Ann").status_code == 200
    for query in (f"breed=b{key}&select(name,owner{{name}})", f"breed=b{key}&owner.name=Ann"):
        response = writer.get(f"/Dog/?{query}")
        assert response.status_code == 403
        assert response.json()["detail"] == "role `writer` has no `read` permission on `Owner`"


def test_writing_an_attribute_without_permission_is_403_and_writes_nothing(
    clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    editor = clients["editor"]
    key = next(_ids)
    admin.put(f"/Dog/{key}", json={"name": "Rex", "breed": "lab", "secret": "s"})
    refused = {
        ("POST", "/Dog/", "secret"): {"id": key + 1, "name": "x", "secret": "y"},
        ("PATCH", f"/Dog/{key}", "breed"): {"name": "Max", "breed": "pug"},
        ("PATCH", f"/Dog/{key}", "secret"): {"secret": "changed"},
    }
    for (method, path, attribute), body in refused.items():
        response = editor.request(method, path, json=body)
        assert response.status_code == 403, response.text
        permission = "insert" if method == "POST" else "update"
        assert response.json()["detail"] == (
            f"role `editor` has no `{permission}` permission on `{attribute}` of `Dog`"
        )
    unchanged = {"id": key, "name": "Rex", "breed": "lab", "secret": "s"}
    assert admin.get(f"/Dog/{key}").json() == unchanged
    assert admin.get(f"/Dog/{key + 1}").status_code == 404
    put = editor.put(f"/Dog/{key}", json={"name": "Max"})
    assert put.status_code == 403
    assert put.json()["hint"] == "send PATCH with the attributes you may change"
    assert editor.patch(f"/Dog/{key}", json={"name": "Max"}).status_code == 204
    created = editor.post("/Dog/", json={"name": "Fido", "breed": "pug", "ownerId": "o1"})
    assert created.status_code == 201
    assert set(created.json()) == {"id", "name", "breed", "ownerId"}
    assert admin.get(f"/Dog/{key}").json()["secret"] == "s"


# --------------------------------------------------------------------------- plain resources


def test_a_plain_resource_allows_authenticated_users_unless_it_overrides_it(
    clients: dict[str, httpx.Client],
) -> None:
    assert clients["nobody"].get("/Echo/x").json() == {"user": "nobody"}
    anonymous = clients["anonymous"].get("/Echo/x")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic ")
    assert clients["anonymous"].get("/Open/x").json() == {"open": True}
    assert clients["nobody"].get("/DogView/").status_code == 403
    assert clients["reader"].get("/DogView/").status_code == 200


def test_health_and_options_need_no_credentials(kiln_server: KilnServer) -> None:
    assert httpx.get(f"{kiln_server.url}/_health").status_code == 200
    bad = httpx.get(f"{kiln_server.url}/_health", auth=("admin", "wrong-password"))
    assert bad.status_code == 200
    assert httpx.options(f"{kiln_server.url}/Dog/").status_code == 204


def test_wrong_credentials_are_401_even_where_anonymous_may_read(
    kiln_server: KilnServer, store: UserStore
) -> None:
    response = httpx.get(f"{kiln_server.url}/Owner/", auth=("reader", "not-the-password"))
    assert response.status_code == 401
    assert response.json()["detail"] == "the user name or password is wrong"
    assert response.headers["www-authenticate"] == 'Basic realm="kiln", charset="UTF-8"'


# --------------------------------------------------------------------------- tokens


def token_for(kiln_server: KilnServer, name: str, secret: str) -> dict[str, Any]:
    response = httpx.post(
        f"{kiln_server.url}/_auth/token", json={"username": name, "password": secret}
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_tokens_are_issued_used_and_refreshed(kiln_server: KilnServer, store: UserStore) -> None:
    issued = token_for(kiln_server, "tokens", password("tokens"))
    assert set(issued) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert (issued["token_type"], issued["expires_in"]) == ("Bearer", 86400)
    url = kiln_server.url
    assert httpx.get(f"{url}/Dog/", headers=bearer(issued["access_token"])).status_code == 200
    refused = httpx.put(f"{url}/Dog/1", json={"name": "x"}, headers=bearer(issued["access_token"]))
    assert refused.status_code == 403

    renewed = httpx.post(f"{url}/_auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["refresh_token"] == issued["refresh_token"]
    assert httpx.get(f"{url}/Dog/", headers=bearer(renewed.json()["access_token"])).is_success

    as_access = httpx.get(f"{url}/Dog/", headers=bearer(issued["refresh_token"]))
    assert as_access.status_code == 401
    assert as_access.json()["detail"] == "a refresh token only renews access tokens"
    assert as_access.headers["www-authenticate"].startswith("Bearer ")
    as_refresh = httpx.post(f"{url}/_auth/refresh", json={"refresh_token": "x.y.z"})
    assert as_refresh.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "/_auth/token", {"username": "tokens"}, 400, "$.password"),
        ("POST", "/_auth/token", {"username": 1, "password": "x"}, 400, "$.username"),
        ("POST", "/_auth/refresh", {}, 400, "$.refresh_token"),
        ("POST", "/_auth/token", {"username": "tokens", "password": "wrong-one"}, 401, None),
        ("POST", "/_auth/token", {"username": "ghost", "password": "wrong-one"}, 401, None),
        ("GET", "/_auth/token", None, 405, None),
        ("POST", "/_auth/nothing", {}, 404, None),
    ],
)
def test_token_endpoint_errors(
    kiln_server: KilnServer,
    store: UserStore,
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    response = httpx.request(method, f"{kiln_server.url}{path}", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    if field is not None:
        assert [error["path"] for error in response.json()["errors"]] == [field]
    if status == 401:
        assert response.json()["detail"] == "the user name or password is wrong"
    if status == 405:
        assert response.headers["allow"] == "POST, OPTIONS"


def kiln_user(server: KilnServer, *args: str, stdin: str | None = None) -> None:
    """Run ``kiln user ...`` in another process on the running server's data folder."""
    command = [sys.executable, "-m", "kiln", "user", *args, "--data", str(server.data_dir)]
    if stdin is not None:
        command.append("--password-stdin")
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_password_changed_by_kiln_user_ends_tokens_and_logins_at_once(
    kiln_server: KilnServer, store: UserStore
) -> None:
    url = kiln_server.url
    issued = token_for(kiln_server, "changer", password("changer"))
    old = ("changer", password("changer"))
    assert httpx.get(f"{url}/Dog/", auth=old).status_code == 200  # now remembered
    assert httpx.get(f"{url}/Dog/", headers=bearer(issued["access_token"])).status_code == 200

    kiln_user(kiln_server, "passwd", "changer", stdin="a-new-password\n")
    assert httpx.get(f"{url}/Dog/", auth=old).status_code == 401
    stale = httpx.get(f"{url}/Dog/", headers=bearer(issued["access_token"]))
    assert stale.status_code == 401
    assert "issued before its user's password changed" in stale.json()["detail"]
    refresh = {"refresh_token": issued["refresh_token"]}
    assert httpx.post(f"{url}/_auth/refresh", json=refresh).status_code == 401
    assert httpx.get(f"{url}/Dog/", auth=("changer", "a-new-password")).status_code == 200

    kiln_user(kiln_server, "add", "late", "--role", "writer", stdin="late-password\n")
    written = httpx.put(f"{url}/Dog/77", json={"name": "x"}, auth=("late", "late-password"))
    assert written.status_code == 204
    kiln_user(kiln_server, "remove", "late")
    assert httpx.get(f"{url}/Dog/", auth=("late", "late-password")).status_code == 401


def test_an_expired_token_is_401(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("expiry")
    config = "authentication:\n  tokenTimeout: 1s\n"
    server = KilnServer(write_app(root / "app", SCHEMA, config), root / "data", free_port())
    server.start()
    try:
        issued = token_for(server, *ADMIN_AUTH)
        assert issued["expires_in"] == 1
        for _ in range(40):  # the token's exp is a whole second: wait until it has passed
            response = httpx.get(f"{server.url}/Dog/", headers=bearer(issued["access_token"]))
            if response.status_code != 200:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert response.status_code == 401
        assert response.json()["detail"] == "the access token has expired"
    finally:
        server.stop()


# --------------------------------------------------------------------------- failed logins


def test_ten_failures_make_the_next_try_wait_with_429(
    kiln_server: KilnServer, store: UserStore
) -> None:
    url = kiln_server.url
    for _ in range(10):
        response = httpx.get(f"{url}/Dog/", auth=("victim", "wrong-guess"))
        assert response.status_code == 401
    blocked = httpx.get(f"{url}/Dog/", auth=("victim", password("victim")))
    assert blocked.status_code == 429
    assert blocked.headers["content-type"] == PROBLEM
    assert int(blocked.headers["retry-after"]) >= 1
    assert "too many failed logins for user 'victim'" in blocked.json()["detail"]
    token = httpx.post(
        f"{url}/_auth/token", json={"username": "victim", "password": password("victim")}
    )
    assert token.status_code == 429
    assert httpx.get(f"{url}/Dog/", auth=ADMIN_AUTH).status_code == 200  # another user
    log = kiln_server.log()
    assert log.count("failed login as 'victim' from 127.0.0.1: wrong password") == 10
    assert "wrong-guess" not in log


def test_put_creates_a_record_only_for_a_role_that_may_insert(
    kiln_server: KilnServer, store: UserStore, admin: httpx.Client
) -> None:
    """PUT to a record that does not exist creates it: that takes `insert`, as POST does.
    A role with only `update` replaces records that exist and is refused the rest (also
    through MQTT, whose retained publish is the same put)."""
    key = 10_000_000 + next(_ids)  # above the keys POST generates (the largest plus one)
    updater = ("updater", password("updater"))
    refused = httpx.put(f"{kiln_server.url}/Dog/{key}", json={"name": "New"}, auth=updater)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == (
        f"Dog {key} does not exist, and creating it takes the `insert` permission on `Dog`"
    )
    assert admin.get(f"/Dog/{key}").status_code == 404
    assert admin.put(f"/Dog/{key}", json={"name": "Old"}).status_code == 204
    replaced = httpx.put(f"{kiln_server.url}/Dog/{key}", json={"name": "New"}, auth=updater)
    assert replaced.status_code == 204, replaced.text
    assert admin.get(f"/Dog/{key}").json()["name"] == "New"


def test_a_relationship_needs_read_on_the_attribute_that_links_it(
    kiln_server: KilnServer, store: UserStore, admin: httpx.Client
) -> None:
    """Following a relationship tells the value of the attribute that links the records:
    a role that may not read Dog.ownerId may not follow Owner.dogs (to:) nor Dog.owner
    (from:), in a condition, a sort or a select, while the rest stays readable."""
    key = 20_000_000 + next(_ids)
    admin.put(f"/Owner/o{key}", json={"name": f"N{key}"})
    admin.put(f"/Dog/{key}", json={"name": "Rex", "breed": f"b{key}", "ownerId": f"o{key}"})
    store.add("linkless", "linkless", hash_password(password("linkless")))
    auth = ("linkless", password("linkless"))
    with httpx.Client(base_url=kiln_server.url, auth=auth, timeout=10) as linkless:
        assert linkless.get(f"/Dog/{key}").json() == {"id": key, "name": "Rex"}
        assert linkless.get(f"/Owner/o{key}").json() == {"id": f"o{key}", "name": f"N{key}"}
        for path, hidden in (
            (f"/Owner/?dogs.id={key}&select(id)", "ownerId"),
            (f"/Owner/?name=N{key}&select(id,dogs{{id}})", "ownerId"),
            (f"/Owner/o{key}?select(dogs{{id}})", "ownerId"),
            (f"/Dog/?id={key}&owner.name=N{key}", "owner"),  # not in its allow-list either
        ):
            response = linkless.get(path)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["detail"] == (
                f"role `linkless` has no `read` permission on `{hidden}` of `Dog`"
            ), path
        # an object select() leaves a hidden attribute out, as a record does
        selected = linkless.get(f"/Dog/?id={key}&select(name,owner{{name}})")
        assert selected.json() == [{"name": "Rex"}]


def test_a_taken_unique_value_names_its_holder_only_to_who_may_read_it(
    kiln_server: KilnServer, store: UserStore, admin: httpx.Client
) -> None:
    """The 409 of a taken @unique value names the record holding it: to a role that may
    not read the attribute that would tell who has a value it guessed, so it is left out."""
    key = 30_000_000 + next(_ids)
    email = f"owner{key}@example.com"
    assert admin.put(f"/Owner/h{key}", json={"name": "Holder", "email": email}).status_code == 204
    store.add("registrar", "registrar", hash_password(password("registrar")))
    auth = ("registrar", password("registrar"))
    body = {"name": "Guess", "email": email}
    for route in ("Owner", "OwnerDesk"):  # the table's own write, and one in a transaction
        refused = httpx.post(f"{kiln_server.url}/{route}/", json=body, auth=auth)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            "Owner.email is @unique and another Owner already has the email sent; "
            "send another email"
        ), route
    told = admin.post("/Owner/", json=body)
    assert told.status_code == 409
    assert f"Owner 'h{key}' already has email '{email}'" in told.json()["detail"]
