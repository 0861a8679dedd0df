"""Load an application's ``resources.py``: import it, find its resource classes, build routes.

:func:`load_resources` imports the file under a fresh module name (so a reload
imports it anew) once :data:`kiln.tables` holds the schema's table classes. Its
endpoints are the public classes *defined in that module* that subclass
:class:`~kiln.resource.Resource`, tables included: each is served at
``/<ClassName>/``, or at its own ``path``, unless it sets ``exported = False``.
Nothing registers itself; the module is inspected once, here.

Every mistake is a :class:`~kiln.errors.ResourceError` that names the class,
its line in ``resources.py`` and the fix: an exception while importing (a
``@tables.X.computed(...)`` for an attribute that is not ``@computed`` among
them), a seam method whose parameters are not the seam's, two classes (or a
class and a schema table) claiming one route. :func:`check_computed` refuses a
``@computed`` attribute that ``resources.py`` gives no function.

The app folder is importable from ``resources.py`` (``from helpers import x`` for a
``helpers.py`` beside it): it is first on ``sys.path`` from the import until
:func:`unload_resources` (when the app closes). Each import of ``resources.py``
first forgets the modules the folder provided before, so a reload reads them anew.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import itertools
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from kiln.errors import KilnError, ResourceError, UnknownTable
from kiln.namespace import filled
from kiln.resource import SIGNATURES, Resource, Table
from kiln.schema import Schema

_imports = itertools.count()


def load_resources(path: Path, taken: Mapping[str, str]) -> dict[str, Resource]:
    """The routes of the resource classes in ``path``, route name → instance.

    Call it once :data:`kiln.tables` holds the app's table classes.

    Args:
        path: the app's ``resources.py``.
        taken: the routes the schema's exported tables serve, route → table name.

    Raises:
        ResourceError: importing ``path`` failed, or a class is wrong (signature, route).
    """
    path = path.resolve()  # tracebacks name the file as its module spec does: absolute
    module = _import(path)
    lines = _class_lines(path)
    routes: dict[str, Resource] = {}
    owners: dict[str, type] = {}
    for cls in _resource_classes(module):
        _check_signatures(cls, path, lines)
        if cls.__name__.startswith("_") or cls.__dict__.get("exported", True) is False:
            continue
        route = _route(cls, path, lines)
        if route in taken:
            raise _error(
                cls,
                path,
                lines,
                f"claims the route /{route}/, which the schema's exported table "
                f"{taken[route]} serves",
                f"rename the class or set path = '...' on it to serve it elsewhere, or remove "
                f"@export from {taken[route]} in schema.graphql to serve that table only here",
            )
        if route in owners:
            other = owners[route]
            raise _error(
                cls,
                path,
                lines,
                f"claims the route /{route}/, which class {other.__name__} "
                f"(line {lines.get(other.__name__, '?')}) claims too",
                "give one of them its own path = '...', or set exported = False on one",
            )
        cls.path = route  # what its messages and Location headers name
        owners[route] = cls
        try:
            routes[route] = cls()
        except Exception as error:
            raise _error(
                cls,
                path,
                lines,
                f"cannot be created without arguments: {type(error).__name__}: {error}",
                "kiln makes one instance of each resource class with cls(); "
                "give __init__ no required parameters",
            ) from error
    return routes


def check_resources(path: Path, schema: Schema) -> None:
    """Import ``path`` against ``schema``'s tables without storage, as a check before a reload.

    :data:`kiln.tables` holds storage-less table classes during the check and
    the running app's afterwards. A file that uses ``records`` while it is imported
    (seed data) is checked up to that line; loading it checks the rest.

    Raises:
        ResourceError: what :func:`load_resources` would raise.
    """
    classes = {
        name: type(
            name,
            (Table,),
            {
                "definition": table,
                "schema": schema,
                "path": table.export_name or name,
                "computed_functions": {},
                "records": _NoRecords(),
            },
        )
        for name, table in schema.tables.items()
    }
    taken = {table.export_name or table.name: table.name for table in schema.exported()}
    serving = str(path.resolve().parent) in sys.path  # the running app's folder stays
    with filled(classes):
        try:
            load_resources(path, taken)
        except ResourceError as error:
            if isinstance(error.__cause__, _StorageNeeded):
                return
            raise
        finally:
            if not serving:
                unload_resources(path.parent)
    check_computed(schema, classes, path)


class _StorageNeeded(Exception):
    """``resources.py`` used ``records`` while :func:`check_resources` imported it."""


class _NoRecords:
    """``records`` of the storage-less classes of a check: using it ends the check."""

    def __get__(self, instance: object, owner: type) -> NoReturn:
        raise _StorageNeeded(f"{owner.__name__}.records has no storage during a check")


def check_computed(schema: Schema, classes: Mapping[str, type[Table]], path: Path) -> None:
    """Every ``@computed`` attribute of ``schema`` has a function registered in ``path``.

    Raises:
        ResourceError: at the attribute's line in the schema, showing the function to add.
    """
    for name, table in schema.tables.items():
        for attribute in table.computed:
            if attribute in classes[name].computed_functions:
                continue
            declared = table.attributes[attribute]
            where = "has no such function" if path.is_file() else "does not exist"
            raise ResourceError(
                f"`{name}.{attribute}` is @computed, but {path.name} {where}: kiln cannot "
                "derive its value",
                file=schema.file,
                line=declared.line or None,
                column=declared.column or None,
                hint=f"add to {path.name}: `@tables.{name}.computed({attribute!r})` over "
                f"`def {_snake(attribute)}(record): return ...` (with `from kiln import "
                "tables`), or remove `@computed` and store the attribute",
            )


def _snake(name: str) -> str:
    """``fullName`` → ``full_name``, for the example function in a hint."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def unload_resources(directory: Path) -> None:
    """Take the app folder ``directory`` off ``sys.path`` and forget the modules it provided
    (its ``resources.py`` and what that imported from the folder)."""
    folder = directory.resolve()
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    _forget_modules(folder)


def _forget_modules(folder: Path) -> None:
    """Drop from ``sys.modules`` the modules imported from ``folder``: ``resources.py`` and
    the modules and packages at its top level (not those of a virtualenv inside it)."""
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if location is None:  # a namespace package: the folder it stands for
            location = next(iter(getattr(module, "__path__", None) or ()), None)
        if not isinstance(location, str):
            continue
        try:
            first = Path(location).relative_to(folder).parts[0]
        except (ValueError, IndexError):
            continue
        top = name.partition(".")[0]
        if first in (top, f"{top}.py") or name.startswith("kiln_resources_"):
            del sys.modules[name]


def _import(path: Path) -> ModuleType:
    """Execute ``path`` as a new module; an exception becomes ``resources.py:LINE: message``.

    Its folder goes first on ``sys.path`` (and stays), and the modules the folder
    provided to an earlier import are forgotten, so they are read as they are now.
    """
    folder = path.parent
    _forget_modules(folder)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()  # a helper module created since the last import is found
    name = f"kiln_resources_{next(_imports)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has one
        raise ResourceError("cannot be imported", file=path.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look classes' modules up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise _import_error(error, path) from error
    return module


def _import_error(error: Exception, path: Path) -> ResourceError:
    if isinstance(error, SyntaxError) and error.filename == str(path):
        return ResourceError(
            f"syntax error: {error.msg}",
            file=path.name,
            line=error.lineno,
            column=error.offset,
            hint="fix the Python syntax at that position",
        )
    frames = traceback.extract_tb(error.__traceback__)
    ours = [frame for frame in frames if frame.filename == str(path)]
    line = ours[-1].lineno if ours else None
    if isinstance(error, KilnError):
        message, hint = error.message, error.hint
    else:
        message = f"{type(error).__name__}: {error}"
        hint = "importing resources.py runs its top level; fix the line it failed at"
        if frames and frames[-1].filename != str(path):
            inner = frames[-1]
            hint += f" (the error was raised at {inner.filename}:{inner.lineno})"
    owner = _class_at(path, line)
    if owner is not None and isinstance(error, UnknownTable):
        message = f"class {owner} extends tables.{error.name}, but {message}"
    elif owner is not None:
        message = f"class {owner}: {message}"
    return ResourceError(message, file=path.name, line=line, hint=hint)


def _class_lines(path: Path) -> dict[str, int]:
    """The line of each top-level class statement in ``path``, by class name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {node.name: node.lineno for node in tree.body if isinstance(node, ast.ClassDef)}


def _class_at(path: Path, line: int | None) -> str | None:
    """The top-level class whose statement (header or body) spans ``line``."""
    if line is None:
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, OSError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if first <= line <= (node.end_lineno or node.lineno):
                return node.name
    return None


def _resource_classes(module: ModuleType) -> list[type[Resource]]:
    """The Resource subclasses defined in ``module`` (not imported into it), in order."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Resource)
        and value.__module__ == module.__name__
    ]
    return list(dict.fromkeys(found))  # a class bound to two names is one class


def _route(cls: type[Resource], path: Path, lines: Mapping[str, int]) -> str:
    """The class's own ``path`` (surrounding slashes dropped), else its name."""
    declared = cls.__dict__.get("path")
    if declared is None:
        return cls.__name__
    route = declared.strip("/") if isinstance(declared, str) else ""
    if not route or "/" in route or route.startswith("_"):
        raise _error(
            cls,
            path,
            lines,
            f"has path = {declared!r}, which cannot name a route",
            "a path is one URL segment that does not start with '_', like path = 'dogs' "
            "(served at /dogs/)",
        )
    return route


def _check_signatures(cls: type, path: Path, lines: Mapping[str, int]) -> None:
    """Every seam method and permission hook ``cls`` defines takes the seam's parameters."""
    for name, expected in SIGNATURES.items():
        if name not in cls.__dict__ or cls.__dict__[name] is None:
            continue
        member = cls.__dict__[name]
        wanted = f"def {name}({', '.join(expected)}):"
        if not inspect.isfunction(inspect.unwrap(member)):
            raise _error(
                cls,
                path,
                lines,
                f"defines {name} as {type(member).__name__}, not a method",
                f"define it as `{wanted}` (or `async {wanted}`)",
            )
        parameters = list(inspect.signature(member).parameters.values())
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
        if plain and tuple(p.name for p in parameters) == expected:
            continue
        got = ", ".join(str(p) for p in parameters)
        line = inspect.unwrap(member).__code__.co_firstlineno
        raise ResourceError(
            f"{cls.__name__}.{name}({got}) does not match the seam: kiln calls "
            f"{name}({', '.join(expected[1:])})",
            file=path.name,
            line=line,
            hint=f"define it as `{wanted}` (or `async {wanted}`); the parameters are fixed",
        )


def _error(
    cls: type, path: Path, lines: Mapping[str, int], message: str, hint: str
) -> ResourceError:
    return ResourceError(
        f"class {cls.__name__} {message}",
        file=path.name,
        line=lines.get(cls.__name__),
        hint=hint,
    )
