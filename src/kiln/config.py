"""An application's settings: ``config.yaml``, ``KILN_*`` variables and command-line options.

Every setting is one :class:`Setting` in :data:`SETTINGS`; the environment
names, error suggestions and docs are all derived from that tuple. To add a
setting, add a :class:`Setting` entry and a field of the same name (in
snake_case) to its section's dataclass below.

:func:`load_config` reads the settings, each from the first place that gives
it: the command line, then the environment, then ``APP_DIR/config.yaml``, then
the default. Nothing is read at import.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kiln.errors import ConfigError

__all__ = [
    "BOOL",
    "CONFIG_FILE",
    "ENV_PREFIX",
    "MAP",
    "PORT",
    "RESERVED_ENV",
    "SETTINGS",
    "SIZE",
    "STRING",
    "Config",
    "HttpConfig",
    "InvalidValue",
    "Kind",
    "LoggingConfig",
    "Setting",
    "Source",
    "StorageConfig",
    "choice",
    "directory",
    "env_name",
    "load_config",
]

CONFIG_FILE = "config.yaml"
"""The settings file's name inside the application folder."""

ENV_PREFIX = "KILN_"
"""Every environment override starts with this."""

RESERVED_ENV = frozenset({"KILN_ADMIN_USER", "KILN_ADMIN_PASSWORD"})
"""``KILN_*`` variables that are not settings but are read elsewhere (never warned about)."""


class Source(StrEnum):
    """Where a setting's effective value came from (also the ``file`` of a :class:`ConfigError`)."""

    DEFAULT = "default"
    FILE = CONFIG_FILE
    ENVIRONMENT = "environment"
    COMMAND_LINE = "command line"


# --------------------------------------------------------------------------- kinds


class InvalidValue(ValueError):
    """Raised by a :class:`Kind`'s parsers when a value does not fit; ``hint`` says why."""

    def __init__(self, hint: str | None = None):
        super().__init__(hint or "invalid value")
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Kind:
    """What a setting's value is: how it is checked, read from text and resolved.

    Args:
        name: a short name for docs (``"port"``, ``"size"``).
        expects: what a good value is, completing "``key`` expects ...".
        check: takes a value as YAML (or a caller) gives it and returns the
            setting's value, or raises :class:`InvalidValue`.
        parse_text: the same for a string from the environment or the command
            line; ``None`` when the kind has no text form (then it has no
            ``KILN_*`` variable).
        resolve: turns a checked value into what :class:`Config` holds, given
            the application folder (``None``: the value as is).
    """

    name: str
    expects: str
    check: Callable[[Any], Any]
    parse_text: Callable[[str], Any] | None = None
    resolve: Callable[[Any, Path], Any] | None = None


def _check_string(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidValue("write it as text; quote it if YAML reads it as something else")
    return value


STRING = Kind("string", "a string", _check_string, parse_text=lambda text: text)
"""Any text."""


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue("write true or false, without quotes")
    return value


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidValue("use true or false (1/0, yes/no and on/off also work)")


BOOL = Kind("boolean", "true or false", _check_bool, parse_text=_parse_bool)
"""A YAML boolean; as text, ``true``/``false``, ``1``/``0``, ``yes``/``no`` or ``on``/``off``."""


def _check_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("write the number without quotes, e.g. 9926")
    if not 1 <= value <= 65535:
        raise InvalidValue("ports run from 1 to 65535")
    return value


def _parse_port(text: str) -> int:
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit():
        raise InvalidValue("write the number alone, e.g. 9926")
    return _check_port(int(digits))


PORT = Kind("port", "a port number from 1 to 65535", _check_port, parse_text=_parse_port)
"""A TCP port, 1 to 65535."""


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_TEXT = re.compile(r"([0-9]+)\s*([A-Za-z]*)")
_SIZE_UNITS_HINT = (
    "units are B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024), "
    'in any case, e.g. "10MiB"'
)


def _parse_size(text: str) -> int:
    match = _SIZE_TEXT.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(
            f"write a whole number of bytes or a number and a unit; {_SIZE_UNITS_HINT}"
        )
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise InvalidValue(f'unknown unit "{unit}"; {_SIZE_UNITS_HINT}')
    return _check_size(int(number) * factor)


def _check_size(value: object) -> int:
    if isinstance(value, str):
        return _parse_size(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(
            f"write a whole number of bytes or a string with a unit; {_SIZE_UNITS_HINT}"
        )
    if value < 1:
        raise InvalidValue("a size must be at least 1 byte")
    return value


SIZE = Kind(
    "size",
    'a size in bytes, such as 10485760 or "10MiB"',
    _check_size,
    parse_text=_parse_size,
)
"""A number of bytes: an integer, or a string with a unit (``"512KB"``, ``"10MiB"``)."""


def _check_map(value: object) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise InvalidValue("write its entries indented below the key")
    return MappingProxyType(dict(value))


MAP = Kind("map", "a map", _check_map)
"""Any mapping (null reads as an empty one), checked by its user; it has no ``KILN_*`` variable."""


def choice(*options: str) -> Kind:
    """A kind whose value is one of ``options`` (matched ignoring case and surrounding spaces)."""
    listed = ", ".join(options)

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise InvalidValue(f"write one of {listed}")
        word = value.strip().lower()
        if word in options:
            return word
        close = difflib.get_close_matches(word, options, n=1)
        raise InvalidValue(f'did you mean "{close[0]}"?' if close else f"write one of {listed}")

    return Kind("choice", f"one of {listed}", check, parse_text=check)


def directory(null_means: str) -> Kind:
    """A directory: a path relative to the application folder, or null for ``null_means``.

    :class:`Config` holds it as an absolute :class:`~pathlib.Path`. As text, an
    empty string means null.
    """

    def check(value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            raise InvalidValue(f"write a path, or null for APP_DIR/{null_means}")
        return value

    def parse_text(text: str) -> str | None:
        return check(text.strip() or None)

    def resolve(value: str | None, app_dir: Path) -> Path:
        chosen = Path(null_means if value is None else value).expanduser()
        return (app_dir / chosen).resolve()

    return Kind(
        "path",
        f"a directory path, or null for APP_DIR/{null_means}",
        check,
        parse_text=parse_text,
        resolve=resolve,
    )


# --------------------------------------------------------------------------- settings


def env_name(key: str) -> str:
    """The environment variable for ``key``: ``http.maxBodySize`` -> ``KILN_HTTP_MAXBODYSIZE``."""
    return ENV_PREFIX + key.upper().replace(".", "_")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its dotted ``key``, its :class:`Kind`, its default and a line of help."""

    key: str
    kind: Kind
    default: Any
    help: str

    @property
    def env(self) -> str | None:
        """The ``KILN_*`` variable that overrides it, or ``None`` for kinds with no text form."""
        return env_name(self.key) if self.kind.parse_text is not None else None


SETTINGS: tuple[Setting, ...] = (
    Setting("http.host", STRING, "127.0.0.1", "The address to listen on."),
    Setting("http.port", PORT, 9926, "The port to listen on."),
    Setting(
        "http.maxBodySize",
        SIZE,
        10 * 1024**2,
        'The largest request body accepted, in bytes or with a unit ("10MiB").',
    ),
    Setting("http.accessLog", BOOL, False, "Log one line per request."),
    Setting(
        "storage.path",
        directory(".kiln"),
        None,
        "The database directory, relative to the app folder; null means APP_DIR/.kiln.",
    ),
    Setting(
        "storage.mapSize",
        SIZE,
        256 * 1024**2,
        "The initial LMDB map size; it grows automatically.",
    ),
    Setting(
        "logging.level",
        choice("debug", "info", "warning", "error"),
        "info",
        "The least severe level logged.",
    ),
)
"""Every setting kiln reads, in the order docs and the ``config.yaml`` template list them."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The ``http`` section."""

    host: str
    """``http.host``: the address to listen on."""
    port: int
    """``http.port``: the port to listen on."""
    max_body_size: int
    """``http.maxBodySize``: the largest request body accepted, in bytes."""
    access_log: bool
    """``http.accessLog``: whether to log one line per request."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The ``storage`` section."""

    path: Path
    """``storage.path``: the database directory, absolute."""
    map_size: int
    """``storage.mapSize``: the initial LMDB map size, in bytes."""


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The ``logging`` section."""

    level: Literal["debug", "info", "warning", "error"]
    """``logging.level``: the least severe level logged."""


_SECTIONS: dict[str, type] = {
    "http": HttpConfig,
    "storage": StorageConfig,
    "logging": LoggingConfig,
}
"""Each section's dataclass; a setting ``section.someKey`` is its field ``some_key``."""


@dataclass(frozen=True, slots=True)
class Config:
    """An application's effective settings, each from the first place that gave it.

    Read ``config.http.port``; or by key, ``config.value("http.port")`` and
    ``config.source("http.port")`` (a :class:`Source`).
    """

    app_dir: Path
    """The application folder, absolute."""
    http: HttpConfig
    """The ``http.*`` settings."""
    storage: StorageConfig
    """The ``storage.*`` settings."""
    logging: LoggingConfig
    """The ``logging.*`` settings."""
    _values: Mapping[str, Any] = field(repr=False)
    _sources: Mapping[str, Source] = field(repr=False)
    warnings: tuple[str, ...] = ()
    """Things worth telling the user that did not stop kiln (an unknown ``KILN_*`` variable)."""

    def value(self, key: str) -> Any:
        """The effective value of the setting ``key`` (``"http.port"``)."""
        return self._values[_known(key)]

    def source(self, key: str) -> Source:
        """Where the setting ``key`` came from."""
        return self._sources[_known(key)]


def _known(key: str) -> str:
    if key not in _BY_KEY:
        close = difflib.get_close_matches(key, _BY_KEY, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no setting {key!r}{suggestion}")
    return key


_BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}


def _attribute(name: str) -> str:
    """The Python name of a key segment: ``maxBodySize`` -> ``max_body_size``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).replace(".", "_").lower()


def load_config(
    app_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read the settings of the application in ``app_dir``.

    Args:
        app_dir: the application folder; its ``config.yaml`` is optional.
        env: the environment to read ``KILN_*`` variables from (default ``os.environ``).
        overrides: command-line values by setting key (``{"http.port": 8080}``);
            ``None`` values mean "not given".

    Raises:
        ConfigError: a mistake in ``config.yaml``, a variable or an override.
    """
    app_dir = Path(app_dir).resolve()
    values, sources, warnings = _read(
        app_dir, os.environ if env is None else env, overrides or {}, SETTINGS
    )
    resolved: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    for setting in SETTINGS:
        value = values[setting.key]
        if setting.kind.resolve is not None:
            value = setting.kind.resolve(value, app_dir)
        resolved[setting.key] = value
        head, _, rest = setting.key.partition(".")
        if rest:
            sections[head][_attribute(rest)] = value
        else:
            top[_attribute(head)] = value
    return Config(
        app_dir=app_dir,
        **{name: cls(**sections[name]) for name, cls in _SECTIONS.items()},
        **top,
        warnings=tuple(warnings),
        _values=MappingProxyType(resolved),
        _sources=MappingProxyType(sources),
    )


def _read(
    app_dir: Path,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    settings: Iterable[Setting],
) -> tuple[dict[str, Any], dict[str, Source], list[str]]:
    """Each setting's checked (unresolved) value and source, and the warnings."""
    by_key = {setting.key: setting for setting in settings}
    values = {key: setting.default for key, setting in by_key.items()}
    sources = dict.fromkeys(by_key, Source.DEFAULT)

    for key, value in _read_file(app_dir / CONFIG_FILE, by_key).items():
        values[key], sources[key] = value, Source.FILE

    env_values, warnings = _read_env(env, by_key)
    for key, value in env_values.items():
        values[key], sources[key] = value, Source.ENVIRONMENT

    for key, value in _read_overrides(overrides, by_key).items():
        values[key], sources[key] = value, Source.COMMAND_LINE

    return values, sources, warnings


# --------------------------------------------------------------------------- messages


def _show(value: object) -> str:
    """A value as the user would have written it in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def _expects(setting: Setting, value: object) -> str:
    return f"`{setting.key}` expects {setting.kind.expects}, got {_show(value)}"


def _bad_value_hint(setting: Setting, problem: InvalidValue) -> str:
    return problem.hint or f"the default is {_show(setting.default)}"


def _suggest(written: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``written`` (ignoring case and underscores), if any is close."""
    by_folded = {name.lower().replace("_", ""): name for name in valid}
    close = difflib.get_close_matches(written.lower().replace("_", ""), by_folded, n=1)
    return by_folded[close[0]] if close else None


# --------------------------------------------------------------------------- config.yaml

_Tree = dict[str, Any]
"""Settings as nested maps: a section name -> a ``_Tree``, a last key segment -> a Setting."""


def _tree(settings: Iterable[Setting]) -> _Tree:
    tree: _Tree = {}
    for setting in settings:
        *sections, last = setting.key.split(".")
        branch = tree
        for name in sections:
            branch = branch.setdefault(name, {})
        branch[last] = setting
    return tree


def _file_error(message: str, node: Node | None = None, hint: str | None = None) -> ConfigError:
    if node is None:
        return ConfigError(message, file=CONFIG_FILE, hint=hint)
    mark = node.start_mark
    return ConfigError(
        message, file=CONFIG_FILE, line=mark.line + 1, column=mark.column + 1, hint=hint
    )


def _read_file(path: Path, by_key: Mapping[str, Setting]) -> dict[str, Any]:
    """The settings ``config.yaml`` gives, checked; ``{}`` when it is absent or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"the file is not UTF-8 text (byte {error.start})",
            file=CONFIG_FILE,
            hint="save it as UTF-8",
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot read the file: {error.strerror}", file=CONFIG_FILE) from None

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
            return {}
        if not isinstance(root, MappingNode):
            raise _file_error(
                f"{CONFIG_FILE} must be a map of settings, got {_describe(loader, root)}",
                root,
                hint="write sections such as `http:` with their settings indented below",
            )
        found: dict[str, Any] = {}
        _walk(loader, root, _tree(by_key.values()), "", found)
        return found
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML: {error}", file=CONFIG_FILE) from None
    finally:
        loader.dispose()


_NULL_TAG = "tag:yaml.org,2002:null"


def _describe(loader: yaml.SafeLoader, node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a map"
    if isinstance(node, SequenceNode):
        return "a list"
    return _show(loader.construct_object(node, deep=True))


def _syntax_error(error: yaml.MarkedYAMLError) -> ConfigError:
    problem = error.problem or error.context or "invalid YAML"
    if "'\\t'" in problem:
        hint = "indent with spaces; YAML does not allow tabs"
    elif error.context and error.problem and error.context_mark is not None:
        mark = error.context_mark
        hint = f"{error.context} at line {mark.line + 1}, column {mark.column + 1}"
    else:
        hint = "indent with spaces (not tabs) and put a space after each `key:`"
    mark = error.problem_mark or error.context_mark
    if mark is None:
        return ConfigError(f"YAML syntax error: {problem}", file=CONFIG_FILE, hint=hint)
    return ConfigError(
        f"YAML syntax error: {problem}",
        file=CONFIG_FILE,
        line=mark.line + 1,
        column=mark.column + 1,
        hint=hint,
    )


def _walk(
    loader: yaml.SafeLoader, node: MappingNode, tree: _Tree, prefix: str, found: dict[str, Any]
) -> None:
    """Check one map of ``config.yaml`` against ``tree``; add the settings it gives to ``found``."""
    loader.flatten_mapping(node)  # apply YAML merge keys (`<<: *defaults`)
    seen: dict[str, Node] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            raise _file_error(
                f"a key must be a name, got {_describe(loader, key_node)}",
                key_node,
                hint=_valid_names_hint(prefix, tree),
            )
        name = key_node.value
        key = prefix + name
        if name not in tree:
            raise _file_error(
                f"unknown setting `{key}`", key_node, hint=_unknown_key_hint(name, prefix, tree)
            )
        if name in seen:
            first = seen[name].start_mark
            raise _file_error(
                f"`{key}` is given twice",
                key_node,
                hint=f"it is first given at line {first.line + 1}; keep one",
            )
        seen[name] = key_node

        child = tree[name]
        if isinstance(child, Setting):
            value = loader.construct_object(value_node, deep=True)
            try:
                found[key] = child.kind.check(value)
            except InvalidValue as problem:
                raise _file_error(
                    _expects(child, value), value_node, hint=_bad_value_hint(child, problem)
                ) from None
        elif isinstance(value_node, MappingNode):
            _walk(loader, value_node, child, key + ".", found)
        elif not (isinstance(value_node, ScalarNode) and value_node.tag == _NULL_TAG):
            # A section left empty (`http:` with every line below commented out) is fine.
            raise _file_error(
                f"`{key}` is a section and must be a map of settings, "
                f"got {_describe(loader, value_node)}",
                value_node,
                hint=f"write its settings indented below `{name}:`; "
                + _valid_names_hint(key + ".", child),
            )


def _valid_names_hint(prefix: str, tree: _Tree) -> str:
    names = ", ".join(tree)
    return f"`{prefix.rstrip('.')}` holds: {names}" if prefix else f"the sections are: {names}"


def _unknown_key_hint(name: str, prefix: str, tree: _Tree) -> str:
    close = _suggest(name, tree)
    if close is not None:
        return f"did you mean `{prefix}{close}`?"
    return _valid_names_hint(prefix, tree)


# --------------------------------------------------------------------------- environment


def _read_env(
    env: Mapping[str, str], by_key: Mapping[str, Setting]
) -> tuple[dict[str, Any], list[str]]:
    """The settings the ``KILN_*`` variables give, checked, and a warning per unknown variable."""
    by_env = {setting.env: setting for setting in by_key.values() if setting.env is not None}
    found: dict[str, Any] = {}
    warnings: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        setting = by_env.get(name)
        if setting is None:
            close = difflib.get_close_matches(name, by_env, n=1)
            advice = f"did you mean {close[0]}?" if close else "see the settings in the docs"
            warnings.append(f"{name} is not a kiln setting and was ignored; {advice}")
            continue
        text = env[name]
        try:
            found[setting.key] = _parse_text(setting, text)
        except InvalidValue as problem:
            raise ConfigError(
                f"{name} (`{setting.key}`) expects {setting.kind.expects}, got {_show(text)}",
                file=Source.ENVIRONMENT.value,
                hint=_bad_value_hint(setting, problem),
            ) from None
    return found, warnings


def _parse_text(setting: Setting, text: str) -> Any:
    parse = setting.kind.parse_text
    if parse is None:
        raise InvalidValue("it cannot be given as text")
    return parse(text.strip())


# --------------------------------------------------------------------------- command line


def _read_overrides(
    overrides: Mapping[str, object], by_key: Mapping[str, Setting]
) -> dict[str, Any]:
    """The settings the command line gives (strings are read like variables), checked."""
    found: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        setting = by_key.get(key)
        if setting is None:
            close = _suggest(key, by_key)
            raise ConfigError(
                f"unknown setting `{key}`",
                file=Source.COMMAND_LINE.value,
                hint=f"did you mean `{close}`?"
                if close
                else "the settings are: " + ", ".join(by_key),
            )
        try:
            if isinstance(value, str) and setting.kind.parse_text is not None:
                found[key] = _parse_text(setting, value)
            else:
                found[key] = setting.kind.check(value)
        except InvalidValue as problem:
            raise ConfigError(
                _expects(setting, value),
                file=Source.COMMAND_LINE.value,
                hint=_bad_value_hint(setting, problem),
            ) from None
    return found
