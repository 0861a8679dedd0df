"""``kiln user add|list|passwd|role|remove`` on the data folder of a stopped app (CliRunner),
and the users it writes logging in to a server started afterwards."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import KilnServer, free_port, write_app
from kiln.auth.passwords import verify_password
from kiln.auth.users import SYSTEM_FOLDER, UserStore
from kiln.cli import cli

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
}
"""
CONFIG = "roles:\n  reader:\n    data:\n      Dog: {read: true}\n"

runner = CliRunner()


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path / "app", SCHEMA, CONFIG)


def kiln_user(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli, ["user", *args], input=input)
    return result.exit_code, result.output


def add(app: Path, name: str, role: str, password: str) -> tuple[int, str]:
    """``kiln user add NAME --role ROLE --app APP --password-stdin``."""
    args = ["add", name, "--role", role, "--app", str(app), "--password-stdin"]
    return kiln_user(*args, input=password + "\n")


def stored(app: Path, name: str):
    store = UserStore(app / ".kiln" / SYSTEM_FOLDER)
    try:
        return store.get(name)
    finally:
        store.close()


def test_add_with_password_stdin_then_list(app: Path) -> None:
    code, output = add(app, "ann", "super_user", "ann-password")
    assert code == 0, output
    assert output.startswith(f"added user ann (super_user) in {app.resolve()}/.kiln/.system")
    user = stored(app, "ann")
    assert user is not None and user.role == "super_user"
    assert verify_password(user.password_hash, "ann-password")
    assert "ann-password" not in user.password_hash

    prompted = ["add", "bob", "--role", "reader", "--app", str(app)]
    code, output = kiln_user(*prompted, input="bob-password\nbob-password\n")
    assert code == 0, output
    assert "bob-password" not in output  # the prompt hides what is typed
    code, output = kiln_user("list", "--app", str(app))
    assert (code, output) == (0, "ann\tsuper_user\nbob\treader\n")


def test_the_app_folder_defaults_to_the_current_one(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app)
    args = ["add", "ann", "--role", "reader", "--password-stdin"]
    code, output = kiln_user(*args, input="ann-password\n")
    assert code == 0, output
    assert stored(app, "ann") is not None


def test_data_folder_alone_takes_any_role(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    args = ["add", "ann", "--role", "custom", "--data", str(data), "--password-stdin"]
    code, output = kiln_user(*args, input="ann-password\n")
    assert code == 0, output
    code, output = kiln_user("list", "--data", str(data))
    assert output == "ann\tcustom\n"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "ann", "--role", "writer"], "ann-password\n", "the app declares no role 'writer'"),
        (["add", "ann", "--role", "reader"], "short\n", "needs at least 8"),
        (["add", "a:b", "--role", "reader"], "ann-password\n", "'a:b' cannot be a user name"),
        (["passwd", "nobody"], "new-password\n", "there is no user called 'nobody'"),
        (["role", "nobody", "reader"], None, "there is no user called 'nobody'"),
        (["remove", "nobody"], None, "there is no user called 'nobody'"),
    ],
)
def test_mistakes_exit_1_naming_them(
    app: Path, args: list[str], stdin: str | None, message: str
) -> None:
    extra = ["--password-stdin"] if stdin is not None else []
    code, output = kiln_user(*args, "--app", str(app), *extra, input=stdin)
    assert code == 1, output
    assert output.startswith("error: "), output
    assert message in output
    if "role" in message:
        assert "hint: the roles are: reader, super_user" in output


def test_a_taken_name_is_refused(app: Path) -> None:
    for expected in (0, 1):
        code, output = add(app, "ann", "reader", "ann-password")
        assert code == expected, output
    assert "there is a user called 'ann' already" in output


def test_a_folder_that_is_not_an_app_is_refused(tmp_path: Path) -> None:
    code, output = kiln_user("list", "--app", str(tmp_path))
    assert code == 1
    assert "holds no schema.graphql" in output
    assert "--app APP_DIR or --data DATA_DIR" in output


def test_a_bad_config_exits_2(app: Path) -> None:
    (app / "config.yaml").write_text("roles: [reader]\n")
    code, output = kiln_user("list", "--app", str(app))
    assert code == 2
    assert output.startswith("error: config.yaml:1:8: `roles` expects a map")


def test_roles_kiln_run_would_refuse_exit_2_and_add_no_user(app: Path) -> None:
    """The roles are read as ``kiln run`` reads them, against the schema: a role naming a
    table the schema lacks is the same error here, and no user is added with it."""
    (app / "config.yaml").write_text("roles:\n  editor:\n    data:\n      Dgo: {read: true}\n")
    code, output = add(app, "zoe", "editor", "zoe-password")
    assert code == 2, output
    assert output.startswith(
        "error: config.yaml:4:7: `roles.editor.data.Dgo`: database `data` has no table `Dgo`"
    ), output
    assert stored(app, "zoe") is None


def test_a_schema_mistake_stops_giving_roles_but_not_listing_or_removing(app: Path) -> None:
    """Roles are read against the schema only when one is given: an admin must still be
    able to list and remove users (a compromised one) while the schema is being fixed."""
    assert add(app, "eve", "reader", "eve-password")[0] == 0
    (app / "schema.graphql").write_text(
        "type Dog @table {\n  id: Int @primaryKey\n  name: Strin\n}\n"
    )
    code, output = add(app, "zoe", "reader", "zoe-password")
    assert code == 2, output
    assert output.startswith("error: schema.graphql:3:9: "), output
    code, output = kiln_user("role", "eve", "super_user", "--app", str(app))
    assert code == 2, output
    code, output = kiln_user("list", "--app", str(app))
    assert (code, output.split()) == (0, ["eve", "reader"]), output
    assert kiln_user("remove", "eve", "--app", str(app))[0] == 0
    assert stored(app, "eve") is None


def test_passwd_role_and_remove(app: Path) -> None:
    add(app, "ann", "reader", "ann-password")
    before = stored(app, "ann")
    args = ["passwd", "ann", "--app", str(app), "--password-stdin"]
    code, output = kiln_user(*args, input="new-password\n")
    assert (code, output) == (0, "changed the password of ann\n")
    after = stored(app, "ann")
    assert before is not None and after is not None and after.epoch > before.epoch
    assert verify_password(after.password_hash, "new-password")

    assert kiln_user("role", "ann", "super_user", "--app", str(app)) == (
        0,
        "ann now has the role super_user\n",
    )
    assert kiln_user("remove", "ann", "--app", str(app)) == (0, "removed user ann\n")
    code, output = kiln_user("list", "--app", str(app))
    assert output.startswith("no users in ")


def test_users_added_on_a_stopped_app_log_in_once_it_runs(app: Path, tmp_path: Path) -> None:
    add(app, "ann", "reader", "ann-password")
    server = KilnServer(app, app / ".kiln", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, auth=("ann", "ann-password"), timeout=10) as http:
            assert http.get("/Dog/").json() == []
            assert http.put("/Dog/1", json={"name": "Rex"}).status_code == 403
        assert httpx.get(f"{server.url}/Dog/", auth=("ann", "wrong-password")).status_code == 401
    finally:
        server.stop()


@pytest.mark.parametrize("command", [["list"], ["remove", "ann"]])
def test_a_data_folder_that_is_a_file_exits_2_naming_it(tmp_path: Path, command: list[str]) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    code, output = kiln_user(*command, "--data", str(blocked))
    assert code == 2, output
    assert "error: cannot use the data folder: Not a directory" in output
    assert "Traceback" not in output
