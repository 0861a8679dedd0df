"""``kiln init``: write a new application folder with its three files, ready to run.

:func:`create_app` writes ``schema.graphql`` (one example table),
``config.yaml`` (every setting commented out at its default, generated from
:data:`~kiln.config.SETTINGS` so a new setting appears without editing this
module) and ``resources.py`` (a commented example). It refuses a folder that
already holds anything, and then writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kiln.config import CONFIG_FILE, DURATION, SETTINGS, SIZE, Setting
from kiln.errors import KilnError

SCHEMA_FILE = "schema.graphql"
RESOURCES_FILE = "resources.py"
APP_FILES = (SCHEMA_FILE, CONFIG_FILE, RESOURCES_FILE)
"""The three files of an application, in the order ``kiln init`` writes them."""

SCHEMA_TEMPLATE = """\
# The tables of this app. Each `type` with `@table` is a table stored under .kiln/;
# `@export` serves it over REST at /Dog/ (GET /Dog/1, PUT /Dog/1, POST /Dog/, GET /Dog/, ...).
# Under `kiln dev`, saving this file reloads the app and keeps the stored records.

type Dog @table @export {
  id: Int @primaryKey       # the record's key, as in /Dog/1
  name: String!             # `!` makes an attribute required
  breed: String @indexed    # @indexed keeps an index on the attribute, for queries
  birthday: Date            # ISO-8601 text ("2020-05-01") or epoch milliseconds
}
"""

RESOURCES_TEMPLATE = '''\
"""Python logic and endpoints for this app.

kiln imports this file at start-up and serves every public class defined here
that extends a table (tables.Dog) or Resource, at /<ClassName>/. Uncomment the
examples below to try them; `kiln dev` reloads on save.
"""

# from datetime import UTC, datetime
#
# from kiln import Resource, tables
#
#
# class DogProfile(tables.Dog):
#     """Dog records with an `ageInDays` field, computed when a record is read."""
#
#     def get(self, target):
#         record = super().get(target)
#         if isinstance(record, dict) and record.get("birthday") is not None:
#             record["ageInDays"] = (datetime.now(UTC) - record["birthday"]).days
#         return record
#
#
# class Greeting(Resource):
#     """An endpoint that is not a table: GET /Greeting/ answers {"hello": "world"}."""
#
#     def get(self, target):
#         return {"hello": "world"}
'''

_CONFIG_HEADER = """\
## The settings of this app. Every key is optional; each line below shows its default.
## To change a setting, uncomment its line and its section's (delete the leading "#").
## A KILN_* environment variable or a command-line option (kiln run --port ...) beats this file.
##
## Every request to a table needs credentials (or an `anonymous` role, see `roles` below).
## Add the first user, in this folder:   kiln user add admin --role super_user
## (or start once with KILN_ADMIN_USER and KILN_ADMIN_PASSWORD set), then:
##   curl -u admin localhost:9926/Dog/\
"""

_EXAMPLES = {
    "roles": """\
## For example: anyone may read dogs; an editor may read, add and change them, but
## sees and writes only name and breed (an attributes map is an allow-list):
## roles:
##   anonymous:
##     data:                # the database (@table(database:), default data)
##       Dog: {read: true}
##   editor:
##     data:
##       Dog:
##         read: true
##         insert: true
##         update: true
##         attributes:
##           name: {read: true}
##           breed: {read: true, update: false}""",
}
"""Commented examples shown below a setting whose default says little (``roles: {}``)."""


def create_app(directory: Path) -> list[Path]:
    """Write a new application into ``directory`` (created if absent).

    Returns:
        The files written, in the order of :data:`APP_FILES`.

    Raises:
        KilnError: ``directory`` is a file or already holds something; nothing was written.
    """
    _check_empty(directory)
    contents = {
        SCHEMA_FILE: SCHEMA_TEMPLATE,
        CONFIG_FILE: config_template(),
        RESOURCES_FILE: RESOURCES_TEMPLATE,
    }
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in APP_FILES:
            path = directory / name
            with path.open("x", encoding="utf-8") as file:
                file.write(contents[name])
            written.append(path)
    except OSError as error:
        raise KilnError(
            f"cannot write the app: {error.strerror}",
            where=str(error.filename or directory),
            hint="choose a folder you may write to",
        ) from None
    return written


def _check_empty(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise KilnError(
            "it is a file, not a folder",
            where=str(directory),
            hint="give the path of a new folder",
        )
    existing = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if existing:
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise KilnError(
            f"the folder is not empty (it holds {shown}); kiln init wrote nothing",
            where=str(directory),
            hint="choose a new or empty folder, or edit the existing app in place",
        )


def config_template() -> str:
    """A ``config.yaml`` with every setting of :data:`SETTINGS` commented out at its default.

    Uncommenting every line (deleting each line's first ``#``) leaves valid
    YAML that sets each setting to its default.
    """
    lines = [_CONFIG_HEADER]
    _render(_tree(SETTINGS), 0, lines)
    return "\n".join(lines) + "\n"


def _tree(settings: tuple[Setting, ...]) -> dict[str, Any]:
    """The settings as nested maps, in their order: section name -> map, last segment -> Setting."""
    tree: dict[str, Any] = {}
    for setting in settings:
        *sections, last = setting.key.split(".")
        branch = tree
        for name in sections:
            branch = branch.setdefault(name, {})
        branch[last] = setting
    return tree


def _render(tree: dict[str, Any], depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    for name, child in tree.items():
        if isinstance(child, Setting):
            if depth == 0:
                lines.append("")
            env = f" Env: {child.env}." if child.env else ""
            lines.append(f"#{indent} # {child.help}{env}")
            lines.append(f"#{indent} {name}: {_yaml_value(child)}")
            if child.key in _EXAMPLES:
                lines.append(_EXAMPLES[child.key])
        else:
            if depth == 0:
                lines.append("")
            lines.append(f"#{indent} {name}:")
            _render(child, depth + 1, lines)


def _yaml_value(setting: Setting) -> str:
    """The setting's default as YAML; sizes and durations with the largest unit that divides
    them (``10MiB``, ``15s``, ``3d``)."""
    value = setting.default
    if setting.kind is SIZE and isinstance(value, int):
        for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % factor == 0:
                return f"{value // factor}{unit}"
    if setting.kind is DURATION and isinstance(value, int | float) and value > 0:
        for unit, factor in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if value % factor == 0:
                return f"{int(value // factor)}{unit}"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
