"""Load an application's ``resources.py``: import it, find its resource classes, build routes.

:func:`load_resources` imports the file under a fresh module name (so a reload
imports it anew) once :data:`kiln.tables` holds the schema's table classes. Its
endpoints are the public classes *defined in that module* that subclass
:class:`~kiln.resource.Resource`, tables included: each is served at
``/<ClassName>/``, or at its own ``path``, unless it sets ``exported = False``.
Nothing registers itself; the module is inspected once, here.

Every mistake is a :class:`~kiln.errors.ResourceError` that names the class,
its line in ``resources.py`` and the fix: a file that is not text in its encoding,
an exception (``sys.exit()`` included) while importing (a ``@tables.X.computed(...)``
for an attribute that is not ``@computed`` among them), a seam method whose
parameters are not the seam's, an ``allow_`` method that is no permission hook,
two classes (or a class and a schema table) claiming one route. A method named
like a seam method but not one (``gett``) is logged as a warning.
:func:`check_computed` refuses a ``@computed`` attribute that ``resources.py``
gives no function.

The app folder is importable from ``resources.py`` (``from helpers import x`` for a
``helpers.py`` beside it): it is first on ``sys.path`` from the import until
:func:`unload_resources` (when the app closes). Each import of ``resources.py``
first forgets the modules the folder provided before, so a reload reads them anew.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import io
import itertools
import logging
import re
import signal
import sys
import threading
import tokenize
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, FunctionType, ModuleType
from typing import NoReturn

from kiln.errors import HTTPError, KilnError, ResourceError, UnknownTable
from kiln.namespace import filled
from kiln.resource import PERMISSION_OF, SIGNATURES, Resource, Table, as_written
from kiln.schema import Schema

log = logging.getLogger(__name__)

_imports = itertools.count()

_HOOKS = tuple(name for name in SIGNATURES if name.startswith("allow_"))
"""The permission hooks kiln calls."""

_SEAM = tuple(name for name in SIGNATURES if name not in _HOOKS)
"""The seam methods kiln calls."""

_HOOK_FOR = {**PERMISSION_OF, "create": "allow_insert"}
"""The hook an ``allow_<word>`` method means when the word is not a hook's: a seam method
(``allow_post``), or Harper's ``allowCreate``."""


def load_resources(
    path: Path, taken: Mapping[str, str], *, warn: bool = True
) -> dict[str, Resource]:
    """The routes of the resource classes in ``path``, route name → instance.

    Call it once :data:`kiln.tables` holds the app's table classes.

    Args:
        path: the app's ``resources.py``.
        taken: the routes the schema's exported tables serve, route → table name.
        warn: log a warning for each method named like a seam method but not one.

    Raises:
        ResourceError: ``path`` is not text, importing it failed, or a class is wrong
            (signature, hook name, route).
        KeyboardInterrupt: Ctrl-C was pressed while ``path`` was imported.
    """
    path = path.resolve()  # tracebacks name the file as its module spec does: absolute
    source = _source(path)
    module = _import(path, source)
    lines = _class_lines(source, path)
    routes: dict[str, Resource] = {}
    owners: dict[str, type] = {}
    for cls in _resource_classes(module):
        _check_methods(cls, path, lines, warn=warn)
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
            load_resources(path, taken, warn=False)  # the load that follows warns
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


def _source(path: Path) -> str:
    """The text of ``path``, decoded as Python decodes source: UTF-8 unless a coding line
    names another encoding.

    Raises:
        ResourceError: the file is not text in that encoding, at the line of the first bad byte.
    """
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:  # the first lines are not UTF-8, or a coding line names no encoding
        encoding = "utf-8"  # (the import reports that one as a syntax error)
    utf8 = encoding in ("utf-8", "utf-8-sig")
    try:  # decoding a BOM as UTF-8 keeps the byte offsets those of the file
        return data.decode("utf-8" if utf8 else encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise ResourceError(
            f"the file is not {'UTF-8' if utf8 else encoding} text (byte {error.start})",
            file=path.name,
            line=data.count(b"\n", 0, error.start) + 1,
            hint="save it as UTF-8"
            if utf8
            else f"save it as {encoding}, as its coding line says, or as UTF-8 without that line",
        ) from None


def _import(path: Path, source: str) -> ModuleType:
    """Execute ``path`` (whose text is ``source``) as a new module; an exception becomes
    ``resources.py:LINE: message``, ``sys.exit()`` included.

    Its folder goes first on ``sys.path`` (and stays), and the modules the folder
    provided to an earlier import are forgotten, so they are read as they are now.

    Raises:
        ResourceError: the import raised.
        KeyboardInterrupt: Ctrl-C was pressed meanwhile (one the file raises is a mistake).
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
    with _noting_interrupts() as interrupted:
        try:
            spec.loader.exec_module(module)
        except BaseException as error:  # SystemExit, KeyboardInterrupt: a mistake too
            del sys.modules[name]
            if isinstance(error, KeyboardInterrupt) and interrupted:
                raise  # a real Ctrl-C stops kiln; load_app closes what it opened
            raise _import_error(error, path, source) from error
    return module


@contextmanager
def _noting_interrupts() -> Iterator[list[int]]:
    """Note in the list yielded each SIGINT (Ctrl-C) that arrives while the block runs;
    it still raises KeyboardInterrupt.

    Only where Python's own handler is in place (the main thread before the server
    starts): elsewhere SIGINT never raises KeyboardInterrupt, so one raised came
    from the code the block runs.
    """
    received: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield received
        return

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _import_error(error: BaseException, path: Path, source: str) -> ResourceError:
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
        if isinstance(error, HTTPError) and error.errors:  # a seed write that failed validation
            message += "".join(f"\n    {field.path}: {field.message}" for field in error.errors)
            hint = "each indented line names a field and what it takes; fix the record there"
    else:
        message, hint = _described(error, path)
        if frames and frames[-1].filename != str(path):
            inner = frames[-1]
            hint += f" (the error was raised at {inner.filename}:{inner.lineno})"
    owner = _class_at(source, line)
    if owner is not None and isinstance(error, UnknownTable):
        message = f"class {owner} extends tables.{error.name}, but {message}"
    elif owner is not None:
        message = f"class {owner}: {message}"
    return ResourceError(message, file=path.name, line=line, hint=hint)


def _described(error: BaseException, path: Path) -> tuple[str, str]:
    """The message and hint for an exception that is not kiln's, raised importing ``path``."""
    stop = "raise an exception (`raise RuntimeError('...')`) to stop start-up with a message"
    if isinstance(error, SystemExit):
        call = "sys.exit()" if error.code is None else f"sys.exit({error.code!r})"
        return (
            f"{path.name} called {call} while kiln imported it",
            f"kiln imports {path.name} to serve what it defines, so it cannot exit kiln; "
            f"{stop}, or keep script code under `if __name__ == '__main__':`",
        )
    if isinstance(error, KeyboardInterrupt):
        return (
            f"{path.name} raised KeyboardInterrupt while kiln imported it",
            f"KeyboardInterrupt stands for Ctrl-C; {stop}",
        )
    return (
        f"{type(error).__name__}: {error}",
        f"importing {path.name} runs its top level; fix the line it failed at",
    )


def _class_lines(source: str, path: Path) -> dict[str, int]:
    """The line of each top-level class statement in ``source`` (``path``'s), by class name."""
    tree = ast.parse(source, str(path))
    return {node.name: node.lineno for node in tree.body if isinstance(node, ast.ClassDef)}


def _class_at(source: str, line: int | None) -> str | None:
    """The top-level class of ``source`` whose statement (header or body) spans ``line``."""
    if line is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
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


def _check_methods(cls: type, path: Path, lines: Mapping[str, int], *, warn: bool) -> None:
    """Every seam method and permission hook ``cls`` defines takes the seam's parameters, and
    every ``allow_`` method (or ``allowRead``, Harper's spelling) is a hook; with ``warn``,
    log each method named like a seam method but not one (``gett``: kiln never calls it,
    yet ``posts`` may be a helper).
    """
    for name, member in cls.__dict__.items():
        if name.startswith("_") or member is None:
            continue
        function = _function(member)
        if name in SIGNATURES:
            _check_signature(cls, name, member, function, path, lines)
        elif function is None:
            continue  # an attribute, a property: not a method kiln could mean
        elif name.startswith("allow_") or _CAMEL_HOOK.fullmatch(name):
            meant = _hook_meant(_CAPITAL.sub(r"_\1", name).lower())
            raise ResourceError(
                f"{cls.__name__}.{name} is not a permission hook kiln calls"
                + (f"; did you mean {meant}?" if meant else ""),
                file=path.name,
                line=function.__code__.co_firstlineno,
                hint=f"the hooks are {', '.join(_HOOKS)}; rename it to the one you meant, or "
                "give a helper a name that starts neither with allow_ nor with allow and a "
                "capital letter",
            )
        elif warn and (close := difflib.get_close_matches(name.lower(), _SEAM, 1, 0.8)):
            log.warning(
                "%s:%d: %s.%s is not a seam method, so kiln never calls it; did you mean %s? "
                "(rename it if so; a helper of that name is fine)",
                path.name,
                function.__code__.co_firstlineno,
                cls.__name__,
                name,
                close[0],
            )


_CAMEL_HOOK = re.compile(r"allow[A-Z]\w*")
"""A method named as Harper names its hooks (``allowRead``): one kiln never calls."""

_CAPITAL = re.compile(r"(?<=[a-z0-9])([A-Z])")
"""Where ``allowRead`` takes an underscore to read as ``allow_read``."""


def _hook_meant(name: str) -> str | None:
    """The permission hook the method ``allow_<word>``, which is none, most likely means."""
    word = name.removeprefix("allow_")
    if word in _HOOK_FOR:
        return _HOOK_FOR[word]
    words = [hook.removeprefix("allow_") for hook in _HOOKS]
    close = difflib.get_close_matches(word, words, n=1, cutoff=0.75)
    return f"allow_{close[0]}" if close else None


def _function(member: object) -> FunctionType | None:
    """The function behind a class attribute (through ``staticmethod``, ``classmethod``
    and ``functools.wraps``), or None when it is no method."""
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    if not callable(member):
        return None
    try:
        function = inspect.unwrap(member)
    except ValueError:  # a __wrapped__ chain that never ends
        return None
    return function if isinstance(function, FunctionType) else None


def _check_signature(
    cls: type,
    name: str,
    member: object,
    function: FunctionType | None,
    path: Path,
    lines: Mapping[str, int],
) -> None:
    """The seam method or permission hook ``name`` of ``cls`` (``member``, defined by
    ``function``) takes the seam's parameters, ``self`` first."""
    expected = SIGNATURES[name]
    wanted = f"def {name}({', '.join(expected)}):"
    if function is None:
        raise _error(
            cls,
            path,
            lines,
            f"defines {name} as {type(member).__name__}, not a method",
            f"define it as `{wanted}` (or `async {wanted}`)",
        )
    if isinstance(member, staticmethod | classmethod):
        kind = type(member).__name__
        raise ResourceError(
            f"{cls.__name__}.{name} is a {kind}, but kiln calls {name} on the instance it "
            f"makes of {cls.__name__}: it must be an instance method taking self",
            file=path.name,
            line=function.__code__.co_firstlineno,
            hint=f"remove @{kind} and define it as `{wanted}` (or `async {wanted}`)",
        )
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
    if plain and tuple(p.name for p in parameters) == expected:
        return
    raise ResourceError(
        f"{cls.__name__}.{name}{as_written(signature)} does not match the seam: kiln calls "
        f"{name}({', '.join(expected[1:])})",
        file=path.name,
        line=function.__code__.co_firstlineno,
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
