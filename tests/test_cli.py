"""Tests for the ``kiln`` command line: start-up errors, settings from the environment and
the command line, the start-up banner and the default data folder.

Errors that stop kiln before it serves run in-process with typer's CliRunner; a
server that must listen runs as a ``python -m kiln run`` subprocess.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import lmdb
import pytest
from typer.testing import CliRunner

from conftest import ADMIN_AUTH, ADMIN_ENV, free_port, write_app
from kiln.cli import cli

SCHEMA = """type Dog @table @export {
  id: Int @primaryKey
  name: String
}

type Cat @table @export(name: "cats") {
  id: ID @primaryKey
  name: String
}

type Hidden @table {
  id: ID @primaryKey
  note: String
}
"""

runner = CliRunner()


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without any KILN_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(extra)
    return env


def kiln_run(app_dir: Path, *args: str, **env: str):
    """``kiln run APP_DIR ARGS`` in-process, with only the KILN_* variables in ``env``."""
    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KILN_")}
    overrides.update(env)
    return runner.invoke(cli, ["run", str(app_dir), *args], env=overrides)


# --------------------------------------------------------------------------- schema errors

SCHEMA_ERRORS = [
    pytest.param(
        "type Dog @table @export {\n  id: Int @primaryKey\n  name String\n}\n",
        "schema.graphql:3:8: syntax error: Expected ':', found Name 'String'",
        "hint: each type reads `type Name @directive { field: Type @directive }`",
        id="syntax-error",
    ),
    pytest.param(
        "type Dog @table @export {\n  id: Int @primaryKey\n",
        "schema.graphql:3:1: syntax error: Expected Name, found <EOF>",
        "hint: the file ends too early",
        id="unexpected-end",
    ),
    pytest.param(
        "type Dog @table @export {\n  id: Int @primaryKey\n  owner: Person\n}\n",
        "schema.graphql:3:10: unknown type `Person` for `owner` of `Dog`",
        "hint: use a scalar (ID, String, Int, Long, Float, BigInt, Boolean, Date, Bytes, Any) "
        "or declare `type Person`",
        id="unknown-type",
    ),
    pytest.param(
        "type Dog @table @export {\n  id: Int @primaryKey\n  name: String @indexd\n}\n",
        "schema.graphql:3:16: unknown directive `@indexd` on a field",
        "hint: did you mean `@indexed`?",
        id="unknown-field-directive",
    ),
    pytest.param(
        "type Dog @tabel @export {\n  id: Int @primaryKey\n}\n",
        "schema.graphql:1:10: unknown directive `@tabel` on a type",
        "hint: did you mean `@table`?",
        id="unknown-type-directive",
    ),
    pytest.param(
        "type Dog @table @export {\n  id: Int @primaryKey\n  code: String @primaryKey\n}\n",
        "schema.graphql:3:16: `Dog` has a second `@primaryKey` (on `code`; the first is on `id`)",
        "hint: a table has exactly one primary key; remove one of them",
        id="two-primary-keys",
    ),
]


@pytest.mark.parametrize(("schema", "location_and_message", "hint"), SCHEMA_ERRORS)
def test_schema_error_is_reported_with_its_position(
    tmp_path: Path, schema: str, location_and_message: str, hint: str
) -> None:
    app = write_app(tmp_path / "app", schema)
    data = tmp_path / "data"
    result = kiln_run(app, "--port", str(free_port()), "--data", str(data))
    assert result.exit_code != 0
    lines = result.output.splitlines()
    assert lines[0] == f"error: {location_and_message}", result.output
    assert lines[1].strip().startswith(hint), result.output
    assert "Traceback" not in result.output
    assert not data.exists(), "a database was opened for a broken schema"


def test_schema_error_in_a_real_process(tmp_path: Path) -> None:
    """The same report from ``python -m kiln run``, on stderr, with a non-zero exit."""
    app = write_app(tmp_path / "app", "type Dog @table {\n  id: Int @primaryKey\n  x: Strin\n}\n")
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "run", str(app), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert done.returncode != 0
    assert re.search(r"^error: schema\.graphql:3:6: unknown type `Strin`", done.stderr, re.M)
    assert re.search(r"^\s*hint: did you mean `String`\?$", done.stderr, re.M), done.stderr
    assert "Traceback" not in done.stderr
    assert not (app / ".kiln").exists()


def test_missing_schema_file(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    result = kiln_run(app, "--port", str(free_port()))
    assert result.exit_code != 0
    assert result.output.startswith("error: schema.graphql: `schema.graphql` not found")
    assert "hint:" in result.output


# --------------------------------------------------------------------------- config errors

CONFIG_ERRORS = [
    pytest.param(
        "http:\n  port: abc\n",
        'config.yaml:2:9: `http.port` expects a port number from 1 to 65535, got "abc"',
        id="bad-value",
    ),
    pytest.param(
        "htp:\n  port: 1\n",
        "config.yaml:1:1: unknown setting `htp`",
        id="unknown-section",
    ),
    pytest.param(
        "http:\n  port: 80\n   host: x\n",
        "config.yaml:3:8: YAML syntax error: mapping values are not allowed here",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("config", "location_and_message"), CONFIG_ERRORS)
def test_config_error_is_reported_with_its_position(
    tmp_path: Path, config: str, location_and_message: str
) -> None:
    app = write_app(tmp_path / "app", SCHEMA, config)
    data = tmp_path / "data"
    result = kiln_run(app, "--port", str(free_port()), "--data", str(data))
    assert result.exit_code != 0
    lines = result.output.splitlines()
    assert lines[0] == f"error: {location_and_message}", result.output
    assert lines[1].strip().startswith("hint: "), result.output
    assert not data.exists()


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", SCHEMA)
    result = kiln_run(app, KILN_HTTP_PORT="abc")
    assert result.exit_code != 0
    first = result.output.splitlines()[0]
    assert "KILN_HTTP_PORT" in first, result.output
    assert '"abc"' in first
    assert "hint:" in result.output
    assert not (app / ".kiln").exists()


def test_bad_port_option(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", SCHEMA)
    result = kiln_run(app, "--port", "70000")
    assert result.exit_code != 0
    assert "http.port" in result.output
    assert "70000" in result.output


# --------------------------------------------------------------------------- running servers


class Running:
    """A ``python -m kiln run`` subprocess whose output goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.log_path = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kiln", "run", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"kiln exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"kiln did not answer on port {port}:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture()
def processes() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for process in started:
        process.stop()


def refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/_health", timeout=1)
    except httpx.ConnectError:
        return True
    return False


def test_env_port_banner_and_default_data_folder(tmp_path: Path, processes: list[Running]) -> None:
    write_app(tmp_path / "app", SCHEMA)
    port = free_port()
    # run from tmp_path with a relative app path: data belongs in the app, not the cwd
    env = clean_env(KILN_HTTP_PORT=str(port), **ADMIN_ENV)
    server = Running(["app"], env, tmp_path, tmp_path / "out.log")
    processes.append(server)
    server.wait_ready(port)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=ADMIN_AUTH, timeout=10) as http:
        assert http.put("/Dog/1", json={"name": "rex"}).status_code == 204
        assert http.get("/Dog/1").json() == {"id": 1, "name": "rex"}

    output = server.output()
    assert f"http://127.0.0.1:{port}/" in output
    routes = [line.split()[0] for line in output.splitlines() if line.lstrip().startswith("/")]
    assert routes == ["/Dog/", "/cats/"], output
    route_lines = [line for line in output.splitlines() if line.lstrip().startswith("/")]
    assert all("Hidden" not in line for line in route_lines)
    assert "/Hidden/" not in output

    data = tmp_path / "app" / ".kiln"
    assert (data / "data" / "data.mdb").is_file()
    assert str(data) in output, "the banner does not say where the data is"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "out.log"]


def test_port_option_beats_the_environment(tmp_path: Path, processes: list[Running]) -> None:
    app = write_app(tmp_path / "app", SCHEMA)
    env_port, option_port = free_port(), free_port()
    while option_port == env_port:
        option_port = free_port()
    server = Running(
        [str(app), "--port", str(option_port), "--data", str(tmp_path / "data")],
        clean_env(KILN_HTTP_PORT=str(env_port)),
        tmp_path,
        tmp_path / "out.log",
    )
    processes.append(server)
    server.wait_ready(option_port)
    assert refused(env_port)
    assert f"http://127.0.0.1:{option_port}/" in server.output()
    assert (tmp_path / "data" / "data" / "data.mdb").is_file()
    assert not (app / ".kiln").exists()


def test_config_file_port_and_env_override(tmp_path: Path, processes: list[Running]) -> None:
    """config.yaml gives the port unless a KILN_* variable overrides it."""
    file_port, env_port = free_port(), free_port()
    while env_port == file_port:
        env_port = free_port()
    app = write_app(tmp_path / "app", SCHEMA, f"http:\n  port: {file_port}\n")
    server = Running(
        [str(app), "--data", str(tmp_path / "data")],
        clean_env(KILN_HTTP_PORT=str(env_port)),
        tmp_path,
        tmp_path / "out.log",
    )
    processes.append(server)
    server.wait_ready(env_port)
    assert refused(file_port)


def test_a_second_server_on_a_taken_port_stops_instead_of_sharing_it(
    tmp_path: Path, processes: list[Running]
) -> None:
    """granian listens with SO_REUSEPORT (for the workers), which would let a second
    ``kiln run`` share the port of a running one, each answering some connections. It
    stops at start instead, naming the setting and what to do, and the first serves on."""
    port = free_port()
    first_app = write_app(tmp_path / "first", SCHEMA)
    first = Running(
        [str(first_app), "--port", str(port)],
        clean_env(**ADMIN_ENV),
        tmp_path,
        tmp_path / "first.log",
    )
    processes.append(first)
    first.wait_ready(port)
    second_app = write_app(
        tmp_path / "second", "type Cat @table @export {\n  id: Int @primaryKey\n}\n"
    )
    second = subprocess.run(
        [sys.executable, "-m", "kiln", "run", str(second_app), "--port", str(port)],
        env=clean_env(**ADMIN_ENV),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = second.stdout + second.stderr
    assert second.returncode == 2, output
    assert f"command line: http.port: cannot listen on 127.0.0.1:{port}" in output
    assert "Address already in use" in output
    assert "hint: stop the process that listens there" in output
    assert "Traceback" not in output
    assert "kiln serving" not in output  # refused before the banner
    assert not (second_app / ".kiln").exists() or not any((second_app / ".kiln").rglob("*.mdb"))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=ADMIN_AUTH, timeout=10) as http:
        assert http.put("/Dog/1", json={"name": "rex"}).status_code == 204  # the first serves on


def test_a_port_held_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    """A port another program listens on (without SO_REUSEPORT) is reported with the
    setting's source and a hint, exit 2, not a traceback."""
    app = write_app(tmp_path / "app", SCHEMA)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = kiln_run(app, "--data", str(tmp_path / "data"), KILN_HTTP_PORT=str(port))
    assert result.exit_code == 2, result.output
    assert f"environment: http.port: cannot listen on 127.0.0.1:{port}" in result.output
    assert "hint:" in result.output


def test_a_host_that_is_no_address_of_this_machine_names_http_host(tmp_path: Path) -> None:
    """An address the machine does not have is an ``http.host`` mistake, not a port one."""
    app = write_app(tmp_path / "app", SCHEMA)
    result = kiln_run(app, "--host", "192.0.2.1", "--data", str(tmp_path / "data"))
    assert result.exit_code == 2, result.output
    assert "command line: http.host: cannot listen on 192.0.2.1:" in result.output
    assert "hint: use an address of this machine" in result.output


# --------------------------------------------------------------------------- data folder


def _file_in_the_way(tmp: Path) -> Path:
    (tmp / "file").write_text("not a folder\n")
    return tmp / "file"


def _under_a_file(tmp: Path) -> Path:
    return _file_in_the_way(tmp) / "data"


def _read_only(tmp: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: permissions cannot refuse it")
    (tmp / "locked").mkdir(mode=0o500)
    return tmp / "locked"


UNUSABLE_DATA_FOLDERS = [
    pytest.param(_file_in_the_way, "Not a directory", "a file is in the way", id="regular-file"),
    pytest.param(_under_a_file, "Not a directory", "a file is in the way", id="under-a-file"),
    pytest.param(
        lambda tmp: Path("/proc/kiln-data"),
        "No such file or directory",
        "choose a folder kiln can create and write to",
        id="cannot-exist",
    ),
    pytest.param(
        _read_only, "Permission denied", "choose a folder this user may write to", id="no-write"
    ),
]


@pytest.mark.parametrize("given_by", ["command line", "config.yaml", "environment"])
@pytest.mark.parametrize(("make", "reason", "hint"), UNUSABLE_DATA_FOLDERS)
def test_an_unusable_data_folder_is_a_clear_error(
    tmp_path: Path, given_by: str, make: Callable[[Path], Path], reason: str, hint: str
) -> None:
    """A data folder kiln cannot create or write to stops start-up like any other mistake
    in the settings: ``error:`` naming ``storage.path``, where it was set, the folder and
    the OS's reason, then a hint; exit 2, no traceback."""
    folder = make(tmp_path)
    app = write_app(tmp_path / "app", SCHEMA)
    args = [str(app), "--port", str(free_port())]
    env = clean_env(**ADMIN_ENV)
    name = "storage.path"
    if given_by == "command line":
        args += ["--data", str(folder)]
    elif given_by == "config.yaml":
        (app / "config.yaml").write_text(f"storage:\n  path: {json.dumps(str(folder))}\n")
    else:
        env["KILN_STORAGE_PATH"] = str(folder)
        name = "KILN_STORAGE_PATH (storage.path)"
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = done.stderr.splitlines()
    assert lines[0] == (
        f"error: {given_by}: {name}: cannot use {folder} as the data folder: {reason}"
    ), output
    assert lines[1].strip().startswith(f"hint: {hint}"), output
    assert "Traceback" not in output
    assert "kiln serving" not in output


def _not_lmdb(store: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / store).mkdir(parents=True)
        (folder / store / "data.mdb").write_bytes(b"a file that is not LMDB\n" * 400)

    return make


def _folder_as_file(folder: Path) -> None:
    (folder / "data" / "data.mdb").mkdir(parents=True)


def _other_version(folder: Path) -> None:
    """An LMDB environment whose meta pages say a data format this LMDB cannot read."""
    (folder / "data").mkdir(parents=True)
    lmdb.open(str(folder / "data"), max_dbs=4).close()
    with (folder / "data" / "data.mdb").open("r+b") as file:
        for meta_page in (0, 4096):  # the version follows the page header and the magic
            file.seek(meta_page + 20)
            file.write(struct.pack("<I", 99))


BROKEN_STORES = [
    pytest.param(
        "data",
        _not_lmdb("data"),
        "its files are not an LMDB database kiln can open (MDB_INVALID: File is not an LMDB file)",
        "move those files away, or choose a folder of kiln's own",
        id="records-not-lmdb",
    ),
    pytest.param(
        "data",
        _folder_as_file,
        "Is a directory",
        "a folder is in the way of a database file",
        id="records-folder-in-the-way",
    ),
    pytest.param(
        "data",
        _other_version,
        "LMDB cannot read its files (LMDB data format v99 is not supported by this build.)",
        "they were written by another LMDB version, or are damaged: restore them from a backup",
        id="records-other-lmdb-version",
    ),
    pytest.param(
        ".system",
        _not_lmdb(".system"),
        "its files are not an LMDB database kiln can open (MDB_INVALID: File is not an LMDB file)",
        "move those files away, or choose a folder of kiln's own",
        id="users-not-lmdb",
    ),
    pytest.param(
        ".mqtt",
        _not_lmdb(".mqtt"),
        "its files are not an LMDB database kiln can open (MDB_INVALID: File is not an LMDB file)",
        "move those files away, or choose a folder of kiln's own",
        id="mqtt-sessions-not-lmdb",
    ),
]


@pytest.mark.parametrize(("store", "break_it", "reason", "hint"), BROKEN_STORES)
def test_a_store_lmdb_cannot_open_is_a_clear_error(
    tmp_path: Path, store: str, break_it: Callable[[Path], None], reason: str, hint: str
) -> None:
    """A data folder holding files LMDB cannot open (not LMDB, or a folder where its file
    goes) stops ``kiln run`` with the store's path, LMDB's reason and a hint; exit 2, no
    traceback. ``kiln dev``, ``kiln user`` and ``kiln drop`` say the same of the stores
    they open."""
    folder = tmp_path / "data"
    break_it(folder)
    app = write_app(tmp_path / "app", SCHEMA)
    env = clean_env(
        **ADMIN_ENV, KILN_MQTT_PORT=str(free_port()), KILN_MQTT_WEBSOCKETPORT=str(free_port())
    )
    commands = [["run", str(app), "--port", str(free_port()), "--data", str(folder)]]
    if store == ".mqtt":  # kiln dev starts the broker itself
        commands.append(["dev", str(app), "--port", str(free_port()), "--data", str(folder)])
    if store == ".system":
        commands.append(["user", "list", "--app", str(app), "--data", str(folder)])
    if store == "data" and break_it is not _folder_as_file:  # drop looks for data.mdb files
        commands.append(["drop", str(app), "Gone", "--data", str(folder), "--yes"])
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "kiln", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 2, (command, output)
        lines = done.stderr.splitlines()
        lines = lines[next(i for i, line in enumerate(lines) if line.startswith("error:")) :]
        if command[0] in ("run", "dev"):
            assert lines[0] == (
                f"error: command line: storage.path: cannot use {folder} as the data folder: "
                f"{reason} (at {folder / store})"
            ), output
        else:
            assert lines[0] == (
                f"error: cannot use the data folder: {reason} ({folder / store})"
            ), output
        assert lines[1].strip().startswith(f"hint: {hint}"), output
        assert "Traceback" not in output
        assert "kiln serving" not in output


def test_a_map_too_large_for_the_process_names_storage_map_size(tmp_path: Path) -> None:
    """A map the process may not have (an address-space limit) is no data-folder mistake:
    the error names storage.mapSize and what to do about it."""
    app = write_app(tmp_path / "app", SCHEMA)

    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "kiln", "run", str(app), "--port", str(free_port())],
        env=clean_env(KILN_STORAGE_MAPSIZE="1TiB", KILN_STORAGE_PATH=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_address_space,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "error: environment: KILN_STORAGE_MAPSIZE (storage.mapSize): cannot map the database "
        f"at {tmp_path / 'data' / 'data'}: Cannot allocate memory"
    ), output
    assert lines[1].strip().startswith("hint: the database's memory map is larger"), output


# --------------------------------------------------------------------------- MQTT in the banner


def _hold_the_default_mqtt_port() -> socket.socket:
    """A socket listening on 127.0.0.1:1883, the default ``mqtt.port``; skips the test
    when another program keeps it (it could let it go while the test runs)."""
    deadline = time.monotonic() + 5
    while True:
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", 1883))
        except OSError:
            holder.close()
            if time.monotonic() > deadline:
                pytest.skip("another program keeps 127.0.0.1:1883")
            time.sleep(0.2)
            continue
        holder.listen()
        return holder


def test_the_banner_names_only_the_mqtt_listeners_that_listen(
    tmp_path: Path, processes: list[Running]
) -> None:
    """A default MQTT port another program holds turns that listener off: the banner
    says so instead of announcing it, and names the listener that does listen."""
    app = write_app(tmp_path / "app", SCHEMA)
    port, ws_port = free_port(), free_port()
    with _hold_the_default_mqtt_port():
        server = Running(
            [str(app), "--port", str(port), "--data", str(tmp_path / "data")],
            clean_env(KILN_MQTT_WEBSOCKETPORT=str(ws_port)),
            tmp_path,
            tmp_path / "out.log",
        )
        processes.append(server)
        server.wait_ready(port)
        output = server.output()
        banner = output[output.index("kiln serving") :]
        assert "mqtt://127.0.0.1:1883" not in output, output
        assert f"  MQTT at ws://127.0.0.1:{ws_port}/ (topics: <route>/<id>)\n" in banner, output
        assert (
            "  MQTT over TCP is off: mqtt.port 1883 (the default) is taken "
            "(Address already in use); set mqtt.port to serve it on another port\n"
        ) in banner, output
        with socket.create_connection(("127.0.0.1", ws_port), timeout=5):
            pass  # the listener the banner names listens


def test_a_taken_mqtt_port_that_was_set_stops_kiln_before_the_banner(tmp_path: Path) -> None:
    """An MQTT port set on purpose that another program holds stops start-up (exit 2)
    with the setting and its source, and no banner announces it first."""
    app = write_app(tmp_path / "app", SCHEMA)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        mqtt_port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "kiln", "run", str(app), "--port", str(free_port())],
            env=clean_env(
                KILN_MQTT_PORT=str(mqtt_port),
                KILN_MQTT_WEBSOCKETPORT=str(free_port()),
                KILN_STORAGE_PATH=str(tmp_path / "data"),
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert (
        f"error: environment: mqtt.port: cannot listen on 127.0.0.1:{mqtt_port}: "
        "Address already in use"
    ) in output
    assert "hint: stop what listens there" in output
    assert "kiln serving" not in output and "MQTT at" not in output, output
    assert "Traceback" not in output
