"""What a setting's value may be: the :class:`Kind` of each setting, and its parsers.

A :class:`Kind` checks a value as YAML gives it, reads it from text (a
``KILN_*`` variable or a command-line option) and resolves it against the
application folder; its parsers raise :class:`InvalidValue` with a hint when a
value does not fit. The kinds are :data:`STRING`, :data:`BOOL`, :data:`PORT`,
:data:`SIZE`, :data:`COUNT`, :data:`MAP`, :data:`ORIGINS`, and the families
:func:`choice` and :func:`directory`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any


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


def _check_host(value: object) -> str:
    host = _check_string(value).strip()
    if not host:
        raise InvalidValue("write an address, such as 127.0.0.1 or 0.0.0.0")
    if "://" in host or "/" in host:
        raise InvalidValue("write the address alone, without a scheme or a path, e.g. 127.0.0.1")
    if host.startswith("[") and host.endswith("]"):
        raise InvalidValue(f"write an IPv6 address without brackets ({host[1:-1]})")
    address, colon, port = host.rpartition(":")
    if colon and port.isdigit() and (host.count(":") == 1 or address.endswith("]")):
        raise InvalidValue(
            f"write the address alone ({address.strip('[]')}); the port goes in http.port"
        )
    return host


HOST = Kind("host", "an address to listen on", _check_host, parse_text=_check_host)
"""A host name or an IP address, without a port."""


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


def _whole_number_advice(value: object, example: int) -> str:
    """What to write instead of ``value`` where a whole number belongs."""
    if isinstance(value, str):
        return f"write the number without quotes, e.g. {example}"
    return f"write a whole number, e.g. {example}"


def _check_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(_whole_number_advice(value, 9926))
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


def _check_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(_whole_number_advice(value, 100))
    if value < 1:
        raise InvalidValue("a count must be at least 1")
    return value


def _parse_count(text: str) -> int:
    digits = text.strip()
    if digits.startswith("-") and digits[1:].isascii() and digits[1:].isdigit():
        raise InvalidValue("a count must be at least 1")
    if not digits.isascii() or not digits.isdigit():
        raise InvalidValue("write the number alone, e.g. 100")
    return _check_count(int(digits))


COUNT = Kind("count", "a whole number of at least 1", _check_count, parse_text=_parse_count)
"""A number of things (rows, records), at least 1."""


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


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_TEXT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")
_DURATION_HINT = 'units are ms, s, m, h and d, e.g. "15s" or "3d"; a bare number is seconds'


def _parse_duration(text: str) -> float:
    match = _DURATION_TEXT.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(f"write a number and a unit; {_DURATION_HINT}")
    number, unit = match.groups()
    factor = _DURATION_UNITS.get(unit.lower() or "s")
    if factor is None:
        raise InvalidValue(f'unknown unit "{unit}"; {_DURATION_HINT}')
    return _check_duration(float(number) * factor)


def _check_duration(value: object) -> float:
    if isinstance(value, str):
        return _parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"write a number of seconds or a string with a unit; {_DURATION_HINT}")
    if value <= 0:
        raise InvalidValue("a duration must be more than 0")
    return float(value)


DURATION = Kind(
    "duration",
    'a duration, such as 15 (seconds), "500ms", "15s", "10m", "1h" or "3d"',
    _check_duration,
    parse_text=_parse_duration,
)
"""A length of time, held in seconds: a number, or a string with a unit (``"3d"``)."""


def _check_map(value: object) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise InvalidValue("write its entries indented below the key")
    return MappingProxyType(dict(value))


MAP = Kind("map", "a map", _check_map)
"""Any mapping (null reads as an empty one), checked by its user; it has no ``KILN_*`` variable."""


_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?", re.ASCII)
_ORIGIN_HINT = (
    'write each origin as scheme://host[:port] without a path, e.g. "https://app.example.com", '
    'or "*" for any origin'
)


def _check_origins(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return _parse_origins(value)
    if not isinstance(value, list | tuple):
        raise InvalidValue(f"write a list of origins; {_ORIGIN_HINT}")
    origins = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidValue(f"every origin is text; {_ORIGIN_HINT}")
        origin = item.strip().lower()
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise InvalidValue(f'"{item}" is not an origin; {_ORIGIN_HINT}')
        origins.append(origin)
    return tuple(origins)


def _parse_origins(text: str) -> tuple[str, ...]:
    return _check_origins([part for part in text.split(",") if part.strip()])


ORIGINS = Kind(
    "origins",
    'a list of origins, such as ["https://app.example.com"], or ["*"] for any',
    _check_origins,
    parse_text=_parse_origins,
)
"""Web origins (``scheme://host[:port]``, or ``*``), lower-cased; as text, comma-separated.

>>> ORIGINS.check(["https://App.example.com:8443", "*"])
('https://app.example.com:8443', '*')
"""


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
