"""The ``kiln`` command: a thin typer layer over the library."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvloop
from rich.console import Console
from rich.text import Text

from kiln.app import App
from kiln.auth.accounts import Accounts, open_accounts
from kiln.dev import develop
from kiln.errors import ConfigError, KilnError, SchemaError
from kiln.evolution import removed_table
from kiln.mqtt.server import MqttServer
from kiln.scaffold import APP_FILES, create_app
from kiln.serve import banner, data_folder_hint, exit_now, open_app, read_config, serve
from kiln.storage.evolution import drop_table

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="kiln: schema, storage, REST and real-time in one process.",
)
console = Console(stderr=True, highlight=False)


@cli.callback()
def _root() -> None:
    """kiln: schema, storage, REST and real-time in one process."""


AppDir = Annotated[Path, typer.Argument(help="The application folder (schema.graphql, ...).")]
Host = Annotated[str | None, typer.Option(help="Address to listen on (http.host).")]
Port = Annotated[int | None, typer.Option(help="Port to listen on (http.port).")]
Data = Annotated[
    Path | None, typer.Option(help="Data folder (storage.path; default APP_DIR/.kiln).")
]
AccessLog = Annotated[bool | None, typer.Option("--access-log", help="Log one line per request.")]


@cli.command()
def run(
    app_dir: AppDir,
    host: Host = None,
    port: Port = None,
    data: Data = None,
    access_log: AccessLog = None,
) -> None:
    """Serve the application in APP_DIR until interrupted."""
    app, _ = _start(app_dir, host, port, data, access_log)
    # the banner waits for the MQTT listeners, to name only those that listen
    _serve_until_stopped(lambda: serve(app, lambda mqtt: print(banner(app, mqtt), flush=True)))


def _start(
    app_dir: Path, host: str | None, port: int | None, data: Path | None, access_log: bool | None
) -> tuple[App, dict[str, object]]:
    """Load the app with the command line's settings; exit 2 on a mistake.

    Returns the app and the command-line settings (``dev`` applies them to every reload).
    """
    overrides: dict[str, object] = {
        "http.host": host,
        "http.port": port,
        "storage.path": str(data.resolve()) if data is not None else None,
        "http.accessLog": access_log,
    }
    try:
        app = open_app(app_dir, overrides)
    except KilnError as error:
        _report(error)
        raise typer.Exit(2) from None
    return app, overrides


def _serve_until_stopped(server: Callable[[], Coroutine[Any, Any, bool | None]]) -> None:
    """Run ``server()`` on uvloop, then leave: exit 1 if it says a worker failed, 2 on a
    mistake found while starting (an MQTT port set in the settings that is taken)."""
    try:
        clean = uvloop.run(server())
    except KilnError as error:
        _report(error)
        raise typer.Exit(2) from None
    exit_now(1 if clean is False else 0)


def _report(error: KilnError) -> None:
    """Print a mistake: ``error: file:LINE:COL: message`` and, below it, the hint."""
    console.print(Text("error: ", style="bold red") + Text(str(error)), soft_wrap=True)


@cli.command()
def init(
    app_dir: Annotated[Path, typer.Argument(help="The folder to create (new or empty).")],
) -> None:
    """Create an application in APP_DIR: schema.graphql, config.yaml and resources.py."""
    try:
        written = create_app(app_dir)
    except KilnError as error:
        _report(error)
        raise typer.Exit(1) from None
    quoted = shlex.quote(str(app_dir))
    print(f"created {', '.join(str(path) for path in written)}")
    print(f"add a user:   kiln user add admin --role super_user --app {quoted}")
    print(f"run it with:  kiln run {quoted}")
    print(f"or, to reload it on every change:  kiln dev {quoted}")


@cli.command()
def dev(
    app_dir: AppDir,
    host: Host = None,
    port: Port = None,
    data: Data = None,
    access_log: AccessLog = None,
) -> None:
    """Serve the application in APP_DIR like run, reloading it whenever its files change."""
    app, overrides = _start(app_dir, host, port, data, access_log)

    def ready(mqtt: MqttServer) -> None:
        print(banner(app, mqtt), flush=True)
        print(f"  watching {', '.join(APP_FILES)} for changes", flush=True)
        if app.config.http.workers > 1:
            print("  one process: http.workers applies to kiln run, not to kiln dev", flush=True)

    _serve_until_stopped(lambda: develop(app, overrides, _report, ready))


@cli.command()
def drop(
    app_dir: AppDir,
    table: Annotated[str, typer.Argument(help="The table to delete, removed from the schema.")],
    data: Data = None,
    database: Annotated[
        str | None, typer.Option(help="The database holding it, when several hold one.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete without asking.")] = False,
) -> None:
    """Delete the stored records and indexes of TABLE, a table removed from the schema.

    Run it while the app is stopped.
    """
    overrides = {"storage.path": str(data.resolve()) if data is not None else None}
    try:
        config = read_config(app_dir, overrides)
        found = removed_table(app_dir, config, table, database)
    except KilnError as error:
        _report(error)
        raise typer.Exit(2) from None
    except OSError as error:
        _report(_unusable_data_folder(error))
        raise typer.Exit(2) from None
    where = config.storage.path / found.database
    count = f"{found.records} record{'' if found.records == 1 else 's'}"
    what = f"table {found.entry.name} ({count}) from {where}"
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone."):
        print("nothing deleted")
        raise typer.Exit(1)
    drop_table(config.storage.path, found, map_size=config.storage.map_size)
    print(f"deleted {what}")


_T = TypeVar("_T")

user_cli = typer.Typer(
    no_args_is_help=True,
    help="Manage the users of an app: add, list, passwd, role, remove. Works on the app's "
    "data folder whether the app is stopped or running (a running server sees a change at "
    "its next request).",
)
cli.add_typer(user_cli, name="user")

UserName = Annotated[str, typer.Argument(help="The user's name.")]
UserApp = Annotated[
    Path, typer.Option("--app", help="The application folder (default: the current folder).")
]
UserData = Annotated[
    Path | None, typer.Option("--data", help="The data folder (storage.path), if not the app's.")
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


@user_cli.command("add")
def user_add(
    name: UserName,
    role: Annotated[str, typer.Option(help="Its role: super_user, or one config.yaml declares.")],
    app: UserApp = Path("."),
    data: UserData = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add a user, asking for its password."""
    with _accounts(app, data) as accounts:
        _or_exit(lambda: accounts.check_role(role))  # before asking for the password
        user = _or_exit(lambda: accounts.add(name, _password(password_stdin), role))
        print(f"added user {user.name} ({user.role}) in {accounts.store.path}")


@user_cli.command("list")
def user_list(app: UserApp = Path("."), data: UserData = None) -> None:
    """List the users and their roles."""
    with _accounts(app, data) as accounts:
        users = accounts.users()
        for user in users:
            undeclared = accounts.roles is not None and user.role not in accounts.roles
            note = "  (config.yaml declares no such role: it may do nothing)" if undeclared else ""
            print(f"{user.name}\t{user.role}{note}")
        if not users:
            print(
                f"no users in {accounts.store.path}; add one with `kiln user add NAME --role ...`"
            )


@user_cli.command("passwd")
def user_passwd(
    name: UserName,
    app: UserApp = Path("."),
    data: UserData = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Give a user a new password; its tokens and remembered logins stop working."""
    with _accounts(app, data) as accounts:
        _or_exit(lambda: accounts.passwd(name, _password(password_stdin)))
        print(f"changed the password of {name}")


@user_cli.command("role")
def user_role(
    name: UserName,
    role: Annotated[str, typer.Argument(help="The new role.")],
    app: UserApp = Path("."),
    data: UserData = None,
) -> None:
    """Give a user another role."""
    with _accounts(app, data) as accounts:
        _or_exit(lambda: accounts.set_role(name, role))
        print(f"{name} now has the role {role}")


@user_cli.command("remove")
def user_remove(name: UserName, app: UserApp = Path("."), data: UserData = None) -> None:
    """Remove a user; its tokens and remembered logins stop working."""
    with _accounts(app, data) as accounts:
        _or_exit(lambda: accounts.remove(name))
        print(f"removed user {name}")


def _accounts(app: Path, data: Path | None) -> Accounts:
    """The users of the app (or data folder); exit 2 on a mistake in its settings."""
    try:
        return open_accounts(app, data)
    except KilnError as error:
        _report(error)
        raise typer.Exit(_exit_code(error)) from None
    except OSError as error:
        _report(_unusable_data_folder(error))
        raise typer.Exit(2) from None


def _unusable_data_folder(error: OSError) -> KilnError:
    """The mistake an OS error opening the data folder shows (``kiln run`` names the setting
    too: :func:`kiln.serve.data_folder_error`)."""
    where = f" ({error.filename})" if error.filename else ""
    return KilnError(
        f"cannot use the data folder: {error.strerror or error}{where}",
        hint=data_folder_hint(error),
    )


def _or_exit(action: Callable[[], _T]) -> _T:
    """``action()``, or exit after printing the mistake it raised (:func:`_exit_code`)."""
    try:
        return action()
    except KilnError as error:
        _report(error)
        raise typer.Exit(_exit_code(error)) from None


def _exit_code(error: KilnError) -> int:
    """2 for a mistake in the app's files, 1 for any other."""
    return 2 if isinstance(error, ConfigError | SchemaError) else 1


def _password(from_stdin: bool) -> str:
    """The new password: the first line of standard input, or asked for twice."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def main() -> None:
    """Entry point of the ``kiln`` console script."""
    cli(prog_name="kiln")


if __name__ == "__main__":
    sys.exit(main())
