"""Check a record sent by a client against its table's declared attributes.

:func:`validate_record` takes a decoded request body and returns the record to
store (values converted: ISO dates to aware UTC datetimes, base64 to bytes,
``3.0`` to ``3`` for an ``Int``...), or raises one
:class:`~kiln.errors.ValidationError` listing every violation, each a
:class:`~kiln.errors.FieldError` with its path (``$.address.zip``, ``$.tags[2]``).

This runs on every write, so the work that depends only on the schema is done
once: the first call for a :class:`~kiln.schema.TableDef` compiles a validator
(an attribute name → checker table, the required names, the nested types'
validators) and keeps it in a module-level dict keyed by the table's type name.
An entry is reused only while it was built from the very same ``TableDef`` and
``Schema`` objects, so reloading the schema simply replaces it.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kiln.errors import FieldError, KilnError, ValidationError
from kiln.schema import SCALARS, Attribute, ObjectType, Schema, TableDef, TypeRef

__all__ = ["validate_record"]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
"""The range of an ``Int`` attribute (32-bit)."""
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
"""The range of a ``Long`` attribute (64-bit)."""
_SAFE_FLOAT_INT = 2**53  # beyond this a float is no longer an exact whole number
MAX_DIGITS = 4300
"""The most decimal digits of a stored whole number: Python's own limit for turning an
integer into text (``sys.get_int_max_str_digits``), so every stored number can be sent as
JSON. Only CBOR and MessagePack bodies can carry a longer one."""
_DIGITS_BOUND = 10**MAX_DIGITS
MAX_FREE_DEPTH = 500
"""The deepest nesting of arrays and objects in an ``Any`` value or an undeclared attribute:
well within what a stored record can be read back with (msgspec's decoders stop near
1,000 levels, counted from wherever the reading code stands)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DECIMAL = re.compile(r"[+-]?[0-9]+", re.ASCII)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_DATE_EXAMPLE = '"2024-05-01T10:00:00Z"'

# Scalar name → (what it expects, what to send), for messages.
_EXPECT: dict[str, tuple[str, str]] = {
    "ID": ("ID (a string)", "send a string"),
    "String": ("String (a string)", "send a string"),
    "Int": (f"Int (a whole number from {INT_MIN} to {INT_MAX})", "send a number"),
    "Long": (f"Long (a whole number from {LONG_MIN} to {LONG_MAX})", "send a number"),
    "BigInt": (
        "BigInt (a whole number, or a string of decimal digits)",
        'send a number or a string of digits like "-12345678901234567890"',
    ),
    "Float": ("Float (a finite number)", "send a number"),
    "Boolean": ("Boolean (true or false)", "send true or false"),
    "Date": (
        "Date (an ISO-8601 string or epoch milliseconds)",
        f"send a string like {_DATE_EXAMPLE} or the milliseconds since 1970-01-01 UTC",
    ),
    "Bytes": ("Bytes (a base64 string)", "send the bytes base64-encoded"),
}


class _Reject(Exception):
    """Raised by a checker when a value is invalid; ``text`` follows the attribute's name."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


_Check = Callable[[Any], Any]
"""A scalar checker: the converted value, or :class:`_Reject`."""

_Composite = Callable[[Any, str, list[FieldError]], Any]
"""A list or object checker: gets its path and appends its items' errors itself."""


def validate_record(
    table: TableDef, schema: Schema, data: object, *, partial: bool = False
) -> dict[str, Any]:
    """Check ``data`` against ``table`` and return the record to store.

    Args:
        table: the table the record is written to.
        schema: the schema ``table`` comes from (for nested object types).
        data: the decoded request body.
        partial: a PATCH: attributes left out are fine (an explicit ``null`` for
            a required attribute is still an error).

    Returns:
        A new dict in the input's key order: declared attributes converted,
        undeclared ones kept as sent, ``@createdTime``/``@updatedTime`` values dropped.

    Raises:
        ValidationError: listing every violation as a :class:`FieldError`.
    """
    return _validator(table, schema).validate(data, partial)


# --------------------------------------------------------------------------- cache

_CACHE: dict[str, tuple[TableDef, Schema, _ObjectValidator]] = {}


def _validator(table: TableDef, schema: Schema) -> _ObjectValidator:
    """The compiled validator of ``table``, built on first use and kept in :data:`_CACHE`."""
    entry = _CACHE.get(table.name)
    if entry is not None and entry[0] is table and entry[1] is schema:
        return entry[2]
    validator = _Compiler(schema).table(table)
    _CACHE[table.name] = (table, schema, validator)
    return validator


# --------------------------------------------------------------------------- messages


def _brief(value: Any) -> str:
    """A short rendering of a received value for a message: JSON-like, at most ~40 chars."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, int):
        if value.bit_length() < 128:
            return str(value)
        return f"a whole number of about {int(value.bit_length() * math.log10(2))} digits"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return f"a {type(value).__name__}"


def _child(prefix: str, key: object) -> str:
    """The path of ``key`` inside the object at ``prefix`` (``$.name``, ``$["a b"]``)."""
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{prefix}.{key}"
    shown = json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)
    return f"{prefix}[{shown}]"


def _label(path: str) -> str:
    """How a message names the value at ``path``: the path without its ``$.``."""
    return path[2:] if path.startswith("$.") else path


def _expects(type_name: str, value: Any, why: str = "", advice: str = "") -> _Reject:
    """A :class:`_Reject` reading ``expects Int (...), got "old"; send a number``."""
    expect, default_advice = _EXPECT[type_name]
    return _Reject(f"expects {expect}, got {_brief(value)}{why}; {advice or default_advice}")


# --------------------------------------------------------------------------- scalar checkers


def _check_string(type_name: str) -> _Check:
    def check(value: Any) -> Any:
        if type(value) is str:
            return value
        if isinstance(value, str):
            return str(value)
        raise _expects(type_name, value)

    return check


def _whole(type_name: str, value: Any) -> int:
    """``value`` as an int if it is one (a float with an integral value counts), else reject."""
    if isinstance(value, bool):
        raise _expects(type_name, value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _expects(type_name, value, ", which is not a whole number", "send a whole number")
        if abs(value) > _SAFE_FLOAT_INT:
            digits = " or as a string of digits" if type_name == "BigInt" else ""
            raise _expects(
                type_name,
                value,
                ", a decimal number too large to be exact",
                f"send it as a whole number without a decimal point{digits}",
            )
        return int(value)
    if type_name == "BigInt" and isinstance(value, str):
        if _DECIMAL.fullmatch(value):
            try:
                return int(value)
            except ValueError:  # more digits than sys.get_int_max_str_digits()
                raise _expects(type_name, value, ", which has too many digits") from None
        raise _expects(
            type_name,
            value,
            ", which is not a whole number",
            'send digits with an optional sign, like "-123"',
        )
    raise _expects(type_name, value)


def _check_int(type_name: str, low: int, high: int, wider: str) -> _Check:
    def check(value: Any) -> Any:
        number = value if type(value) is int else _whole(type_name, value)
        if low <= number <= high:
            return number
        raise _expects(
            type_name,
            value,
            ", which is out of range",
            f"send a number in that range, or declare the attribute as {wider}",
        )

    return check


def _check_bigint(value: Any) -> Any:
    number = value if type(value) is int else _whole("BigInt", value)
    if -_DIGITS_BOUND < number < _DIGITS_BOUND:
        return number
    raise _expects("BigInt", value, f", which has more than {MAX_DIGITS:,} digits")


def _check_float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value
        raise _expects(
            "Float", value, "", "send a finite number (NaN and Infinity cannot be stored)"
        )
    if kind is int or (isinstance(value, int | float) and kind is not bool):
        try:
            number = float(value)
        except OverflowError:
            raise _expects("Float", value, ", which is too large for a Float") from None
        if math.isfinite(number):
            return number
        raise _expects(
            "Float", value, "", "send a finite number (NaN and Infinity cannot be stored)"
        )
    raise _expects("Float", value)


def _check_boolean(value: Any) -> Any:
    if value is True or value is False:
        return value
    raise _expects("Boolean", value)


def _check_date(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return _in_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _expects(
                "Date",
                value,
                ", which is not an ISO-8601 date",
                f'send a string like {_DATE_EXAMPLE} or "2024-05-01"',
            ) from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return _in_utc(parsed)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _expects("Date", value)
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise _expects(
                "Date",
                value,
                ", which is outside the years 1 to 9999",
                "send the milliseconds since 1970-01-01 UTC",
            ) from None
    raise _expects("Date", value)


def _in_utc(moment: datetime) -> datetime:
    """``moment`` (which has an offset) in UTC, or reject it when UTC takes it past year 9999
    or before year 1."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise _expects(
            "Date",
            moment,
            ", which is outside the years 1 to 9999 in UTC",
            "send a moment from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
        ) from None


def _check_bytes(value: Any) -> Any:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _expects(
                "Bytes",
                value,
                ", which is not valid base64",
                "send standard base64 (A-Z, a-z, 0-9, + and /; the = padding is optional)",
            ) from None
    raise _expects("Bytes", value)


def _check_free(value: Any, path: str, errors: list[FieldError]) -> Any:
    """Check a value of no declared shape (``Any``, or an undeclared attribute): whatever a
    body format can carry, except what JSON cannot show (NaN, Infinity, a number of more
    than :data:`MAX_DIGITS` digits), a moment an offset takes out of the years 1 to 9999, and
    nesting deeper than :data:`MAX_FREE_DEPTH`. It walks the value without recursing.
    """
    pending = [(value, path, 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = ((_child(where, key), child) for key, child in item.items())
        elif isinstance(item, list | tuple):
            children = ((f"{where}[{index}]", child) for index, child in enumerate(item))
        else:
            problem = _unstorable(item)
            if problem is not None:
                errors.append(FieldError(where, f"`{_label(where)}` {problem}"))
            continue
        if depth == MAX_FREE_DEPTH:
            errors.append(
                FieldError(
                    where,
                    f"`{_label(where)}` nests arrays and objects more than {MAX_FREE_DEPTH} "
                    "levels deep; flatten it",
                )
            )
            continue
        # Reversed onto the stack, so that the errors come in the order of the body.
        pending.extend(reversed([(child, at, depth + 1) for at, child in children]))
    return value


def _unstorable(value: Any) -> str | None:
    """Why a scalar inside a free value cannot be stored, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return (
            f"is {_brief(value)}, which JSON cannot carry; send a finite number or null "
            "(NaN and Infinity cannot be stored)"
        )
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not -_DIGITS_BOUND < value < _DIGITS_BOUND
    ):
        return (
            f"is {_brief(value)}, over the {MAX_DIGITS:,} a stored number may have; "
            "send it as a string"
        )
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            return f"is {_brief(value)}, which is outside the years 1 to 9999 in UTC"
    return None


_SCALAR_CHECKS: dict[str, _Check] = {
    "ID": _check_string("ID"),
    "String": _check_string("String"),
    "Int": _check_int("Int", INT_MIN, INT_MAX, "Long"),
    "Long": _check_int("Long", LONG_MIN, LONG_MAX, "BigInt"),
    "BigInt": _check_bigint,
    "Float": _check_float,
    "Boolean": _check_boolean,
    "Date": _check_date,
    "Bytes": _check_bytes,
}
"""The checker of each scalar type but ``Any``, whose values are composite (:func:`_check_free`)."""


# --------------------------------------------------------------------------- composite checkers


def _required_message(path: str, type_ref: TypeRef, *, null: bool) -> FieldError:
    sent = ", not null" if null else ""
    return FieldError(path, f"`{_label(path)}` is required ({type_ref}); send a value{sent}")


def _check_list(type_ref: TypeRef, item: _Check | _Composite, composite: bool) -> _Composite:
    """A checker for a list attribute whose items follow ``item``."""
    item_required = type_ref.item_required
    item_ref = TypeRef(type_ref.name, required=True)
    shown = str(TypeRef(type_ref.name, is_list=True, item_required=item_required))

    def check(value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, list | tuple):
            raise _Reject(f"expects {shown} (an array), got {_brief(value)}; send an array")
        out = []
        append = out.append
        for index, element in enumerate(value):
            if element is None:
                if item_required:
                    errors.append(_required_message(f"{path}[{index}]", item_ref, null=True))
                append(None)
                continue
            try:
                append(item(element, f"{path}[{index}]", errors) if composite else item(element))
            except _Reject as reject:
                where = f"{path}[{index}]"
                errors.append(FieldError(where, f"`{_label(where)}` {reject.text}"))
        return out

    return check


# One declared attribute: (checker, is_composite, required, path suffix, type, dropped).
_Spec = tuple[Any, bool, bool, str, TypeRef, bool]


class _ObjectValidator:
    """The compiled checks of a table's records or of a nested type's values."""

    __slots__ = ("declared", "kind", "name", "required", "sealed", "specs", "virtual")

    def __init__(self, name: str, kind: str, sealed: bool):
        self.name = name
        self.kind = kind  # "table" or "type", for the @sealed message
        self.sealed = sealed
        self.specs: dict[str, _Spec] = {}
        self.required: tuple[tuple[str, str, TypeRef], ...] = ()
        self.declared: tuple[str, ...] = ()
        self.virtual: dict[str, str] = {}  # relationship name → why it cannot be written

    def validate(self, data: object, partial: bool) -> dict[str, Any]:
        """Check a whole record (the table's entry point)."""
        if not isinstance(data, dict):
            message = f"expected a JSON object with the attributes of {self.name}, got "
            message += "null" if data is None else _brief(data)
            raise ValidationError(
                f"the body is not a {self.name} record: {message}",
                errors=[FieldError("$", message)],
            )
        errors: list[FieldError] = []
        try:
            record = self.check_object(data, "$", errors, partial)
        except RecursionError:  # a type that contains itself, sent nested hundreds deep
            message = "nests objects hundreds of levels deep, too deep to check; flatten it"
            raise ValidationError(
                f"the {self.name} record {message}", errors=[FieldError("$", message)]
            ) from None
        if errors:
            count = len(errors)
            raise ValidationError(
                f"{count} invalid field{'' if count == 1 else 's'} in the {self.name} record",
                errors=errors,
                hint="each entry of `errors` names a field and what to send instead",
            )
        return record

    def check_nested(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        """Check the value of an attribute typed with this (nested) object type."""
        if not isinstance(value, dict):
            raise _Reject(
                f"expects {self.name} (an object), got {_brief(value)}; "
                f"send an object with the attributes of {self.name}"
            )
        return self.check_object(value, path, errors, False)

    def check_object(
        self, data: dict[Any, Any], prefix: str, errors: list[FieldError], partial: bool
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        specs = self.specs
        for key, value in data.items():
            spec = specs.get(key)
            if spec is None:
                if key in self.virtual:
                    path = _child(prefix, key)
                    errors.append(FieldError(path, f"`{_label(path)}` {self.virtual[key]}"))
                elif self.sealed:
                    errors.append(self.undeclared(key, prefix))
                else:
                    out[key] = _check_free(value, _child(prefix, key), errors)
                continue
            check, composite, required, suffix, type_ref, dropped = spec
            if dropped:
                continue
            if value is None:
                if required:
                    errors.append(_required_message(prefix + suffix, type_ref, null=True))
                else:
                    out[key] = None
                continue
            try:
                out[key] = check(value, prefix + suffix, errors) if composite else check(value)
            except _Reject as reject:
                path = prefix + suffix
                errors.append(FieldError(path, f"`{_label(path)}` {reject.text}"))
        if not partial:
            for name, suffix, type_ref in self.required:
                if name not in data:
                    errors.append(_required_message(prefix + suffix, type_ref, null=False))
        return out

    def undeclared(self, key: object, prefix: str) -> FieldError:
        path = _child(prefix, key)
        message = (
            f"`{_label(path)}` is not an attribute of {self.name} (the {self.kind} is @sealed)"
        )
        close = difflib.get_close_matches(str(key), self.declared, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean `{close[0]}`?"
        else:
            message += f"; remove it, or declare it in `type {self.name}`"
        return FieldError(path, message)


class _Compiler:
    """Builds the validators of one table and the nested types it reaches."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.nested: dict[str, _ObjectValidator] = {}

    def table(self, table: TableDef) -> _ObjectValidator:
        validator = _ObjectValidator(table.name, "table", table.sealed)
        dropped = {
            name
            for name, attribute in table.attributes.items()
            if attribute.created_time or attribute.updated_time
        }
        stored = {name: a for name, a in table.attributes.items() if not a.computed}
        self.fill(validator, stored, dropped, primary_key=table.primary_key)
        for name in table.computed:
            validator.virtual[name] = (
                "is @computed: resources.py derives it from the record when it is read, "
                "and it is never stored; remove it from the body"
            )
        for name, relationship in table.relationships.items():
            if relationship.from_attribute is not None:
                instead = f"set `{relationship.from_attribute}` to the {relationship.target}'s key"
            else:
                instead = f"set `{relationship.to_attribute}` on the {relationship.target} records"
            validator.virtual[name] = (
                f"is a relationship to {relationship.target}, computed when read and never "
                f"stored; remove it and {instead} instead"
            )
        return validator

    def object_type(self, name: str) -> _ObjectValidator:
        validator = self.nested.get(name)
        if validator is not None:
            return validator
        declared: ObjectType | None = self.schema.types.get(name)
        if declared is None:
            raise KilnError(
                f"attribute type `{name}` is neither a scalar nor a type of {self.schema.file}",
                hint="validate records with the Schema their TableDef was parsed from",
            )
        validator = _ObjectValidator(name, "type", declared.sealed)
        self.nested[name] = validator  # before filling: a type may contain itself
        self.fill(validator, declared.attributes, set(), primary_key=None)
        return validator

    def fill(
        self,
        validator: _ObjectValidator,
        attributes: dict[str, Attribute],
        dropped: set[str],
        *,
        primary_key: str | None,
    ) -> None:
        specs: dict[str, _Spec] = {}
        required: list[tuple[str, str, TypeRef]] = []
        for name, attribute in attributes.items():
            type_ref = attribute.type
            check, composite = self.checker(type_ref)
            is_required = type_ref.required and name != primary_key and name not in dropped
            suffix = _child("", name)
            specs[name] = (check, composite, is_required, suffix, type_ref, name in dropped)
            if is_required:
                required.append((name, suffix, type_ref))
        validator.specs = specs
        validator.required = tuple(required)
        validator.declared = tuple(attributes)

    def checker(self, type_ref: TypeRef) -> tuple[Any, bool]:
        """The checker of a type, and whether it is composite (takes a path and errors)."""
        if type_ref.name == "Any":
            item: Any = _check_free
            item_composite = True
        elif type_ref.name in SCALARS:
            item = _SCALAR_CHECKS[type_ref.name]
            item_composite = False
        else:
            item = self.object_type(type_ref.name).check_nested
            item_composite = True
        if type_ref.is_list:
            return _check_list(type_ref, item, item_composite), True
        return item, item_composite
