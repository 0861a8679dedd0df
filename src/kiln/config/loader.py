"""Read an application's settings from ``config.yaml``, ``KILN_*`` variables and overrides.

:func:`load_config` takes each setting from the first place that gives it (the
command line, then the environment, then ``APP_DIR/config.yaml``, then the
default), checks it with its :class:`~kiln.config.Kind` and resolves it into a
:class:`~kiln.config.Config`. Every mistake raises a
:class:`~kiln.errors.ConfigError` that names where it was made and how to fix it.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kiln.config.kinds import InvalidValue
from kiln.config.settings import (
    _SECTIONS,
    CONFIG_FILE,
    ENV_PREFIX,
    RESERVED_ENV,
    SETTINGS,
    Config,
    Setting,
    Source,
    _attribute,
)
from kiln.errors import ConfigError


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


_MISNAMED_CONFIG = ("config.yml", "Config.yaml", "config.YAML", "kiln.yaml", "settings.yaml")
"""Files an app folder without ``config.yaml`` may hold its settings in by mistake."""


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
    if not (app_dir / CONFIG_FILE).exists():
        warnings.extend(
            f"{name} is not read: kiln reads {CONFIG_FILE}; rename it to use its settings"
            for name in _MISNAMED_CONFIG
            if (app_dir / name).exists()
        )
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


_UNCLOSED = {
    "quoted scalar": ("quoted text", "its closing quote"),
    "flow sequence": ("list `[`", "its closing `]`"),
    "flow mapping": ("map `{`", "its closing `}`"),
}
"""What PyYAML's context words name when the file ends inside it, and what closes it."""


def _syntax_error(error: yaml.MarkedYAMLError) -> ConfigError:
    problem = error.problem or error.context or "invalid YAML"
    ended = "end of stream" in problem or "<stream end>" in problem
    unclosed = next(
        (found for words, found in _UNCLOSED.items() if words in (error.context or "")), None
    )
    if ended and unclosed is not None and error.context_mark is not None:
        # A quote or a bracket is never closed: where it opens is the place.
        mark, (opened, closing) = error.context_mark, unclosed
        return ConfigError(
            f"YAML syntax error: the {opened} that starts here never ends",
            file=CONFIG_FILE,
            line=mark.line + 1,
            column=mark.column + 1,
            hint=f"add {closing}",
        )
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


# --------------------------------------------------------------------------- positions


def locate(app_dir: Path, path: Iterable[str], *, value: bool = False) -> tuple[int, int] | None:
    """The 1-based (line, column) of the key ``path`` in ``APP_DIR/config.yaml``, if written there.

    ``value`` gives the position of the key's value instead of the key. Used to point
    an error found after loading (a role naming a table the schema lacks) at its line.

    >>> locate(Path("/nonexistent"), ["http", "port"]) is None
    True
    """
    try:
        text = (app_dir / CONFIG_FILE).read_text(encoding="utf-8")
        node: Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    found: Node | None = None
    for name in path:
        if not isinstance(node, MappingNode):
            return None
        pair = next((pair for pair in node.value if pair[0].value == name), None)
        if pair is None:
            return None
        found, node = pair
    if found is None or node is None:
        return None
    mark = (node if value else found).start_mark
    return mark.line + 1, mark.column + 1
