"""Parse a collection URL's query string into an unbound :class:`Query`.

The grammar follows Harper's, read straight from the raw (still percent-encoded)
string so that an encoded character is never syntax: ``%26`` in a value is a
literal ``&``, ``%3D`` a literal ``=``, ``%28`` a literal ``(``. Names and values
are percent-decoded exactly once, after they are cut out::

    query     := or-expr
    or-expr   := and-expr ('|' and-expr)*            # & binds tighter than |
    and-expr  := term? ('&' term?)*                  # empty terms are ignored
    term      := '(' or-expr ')' | '[' or-expr ']' | function | condition
    condition := path op value | ('lt'|'le') '=' value   # range chaining
    path      := name ('.' name)*
    op        := '=' | '==' | '===' | '!=' | '!==' | '=' word '='
    value     := ['number:'|'string:'|'boolean:'|'date:'] text | 'null'
    function  := select(...) | limit(END) | limit(START,END) | sort(+a,-b) | explain() | explain

``==text*`` (a raw trailing ``*``) means "starts with". A term ``lt=20`` or
``le=20`` right after a ``=gt=``/``=ge=`` condition continues that condition's
attribute (``price=gt=10&lt=20``). Functions go at the top level, joined with
``&``; one inside a group or an ``|`` is an error. Errors name the 1-based
position in the raw string where reading failed, so a client sees what to change.

>>> parse_query("limit(5)").end
5
>>> parse_query("name=Ann&age=gt=3").where.items[1].comparator
'gt'
"""

from __future__ import annotations

import re
from typing import cast
from urllib.parse import unquote

from kiln.errors import BadRequest
from kiln.query.model import (
    And,
    Comparator,
    Condition,
    Field,
    Node,
    Or,
    Query,
    Selection,
    SortKey,
    ValueType,
)

__all__ = ["parse_query"]

_FUNCTIONS = ("explain", "limit", "select", "sort")
_NAMED_COMPARATORS: dict[str, Comparator] = {
    "ne": "ne",
    "gt": "gt",
    "ge": "ge",
    "lt": "lt",
    "le": "le",
    "sw": "sw",
    "ew": "ew",
    "ct": "ct",
}
_COMPARATORS_HELP = "=, ==, !=, " + ", ".join(f"={word}=" for word in _NAMED_COMPARATORS)
_PREFIXES: tuple[ValueType, ...] = ("number", "string", "boolean", "date")
_MAX_DEPTH = 32  # deeper nesting is a mistake, and would exhaust the stack

_WORD = re.compile(r"[A-Za-z]+(?==)")
_NUMBER = re.compile(r"[0-9]+")


def _up_to(stops: str) -> re.Pattern[str]:
    """A pattern matching the text up to (not including) the first of the characters ``stops``."""
    return re.compile(f"[^{re.escape(stops)}]*")


_NAME_END = _up_to("=!&|()[]{},")
_VALUE_END = _up_to("&|)]([=")  # the last three are errors inside a value
_TERM_END = frozenset("&|)]")
_SELECT_NAME_END = _up_to(",(){}[]&|=")
_ARGUMENT_END = _up_to(")&|([]")
_ENCODED = {"(": "%28", "[": "%5B", "=": "%3D"}
_CLOSERS = {"(": ")", "[": "]"}
_SIGNS = {"+": False, "-": True, "%2B": False, "%2D": True}  # sort sign → descending


def parse_query(query_string: str) -> Query:
    """The :class:`Query` of a raw (still percent-encoded) query string.

    Args:
        query_string: the part of the URL after ``?``, not yet percent-decoded.

    Returns:
        An unbound query: paths as written, values as decoded text with any forced type.

    Raises:
        BadRequest: ``query position N: ...`` naming where reading failed and what was expected.
    """
    simple = _ONE_EQUALITY.fullmatch(query_string)
    if simple is not None and simple[2] != "null":
        return Query(Condition((simple[1],), "eq", simple[2], None, 1))
    return _Reader(query_string).query()


_ONE_EQUALITY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([^&|()\[\]{}=!*:%]*)")
"""The most common query, ``name=value`` with nothing to decode, which :func:`parse_query`
reads without the general reader (the same result, a fifth of the time)."""


def _error(position: int, message: str) -> BadRequest:
    return BadRequest(f"query position {position}: {message}")


def _join(kind: type[And] | type[Or], items: list[Node]) -> Node:
    """``items`` joined by ``kind``; nested nodes of the same kind are flattened."""
    flat: list[Node] = []
    for item in items:
        if isinstance(item, kind):
            flat.extend(item.items)
        else:
            flat.append(item)
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


class _Reader:
    """One pass over a raw query string; ``pos`` is the 0-based index being read."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0
        self.functions: dict[str, int] = {}  # name → 1-based position, to reject repeats
        self.select: Selection | None = None
        self.sort: tuple[SortKey, ...] = ()
        self.start = 0
        self.end: int | None = None
        self.explain = False

    # ----------------------------------------------------------------- helpers

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def decode(self, raw: str, position: int) -> str:
        try:
            return unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise _error(
                position, f"{raw!r} is not valid percent-encoded UTF-8; encode the text as UTF-8"
            ) from None

    def scan(self, up_to: re.Pattern[str]) -> str:
        """The raw text from ``pos`` that ``up_to`` matches (see :func:`_up_to`)."""
        start = self.pos
        self.pos = cast(re.Match[str], up_to.match(self.text, start)).end()
        return self.text[start : self.pos]

    # ----------------------------------------------------------------- structure

    def query(self) -> Query:
        where = self.or_expr()
        if self.pos < len(self.text):
            found = self.peek()
            raise _error(self.pos + 1, f"unexpected {found!r} with no matching opening bracket")
        return Query(where, self.select, self.sort, self.start, self.end, self.explain)

    def or_expr(self) -> Node | None:
        alternatives = [self.and_expr()]
        bars: list[int] = []
        while self.peek() == "|":
            bars.append(self.pos + 1)
            self.pos += 1
            alternatives.append(self.and_expr())
        if not bars:
            return alternatives[0]
        if self.depth == 0 and self.functions:
            name, position = next(iter(self.functions.items()))
            raise _error(
                position,
                f"{name}() cannot be combined with '|'; group the alternatives and put the "
                f"function beside the group: [a=1|b=2]&{name}(...)",
            )
        if alternatives[0] is None:
            raise _error(bars[0], "expected a condition before '|'")
        items: list[Node] = []
        for bar, alternative in zip(bars, alternatives[1:], strict=True):
            if alternative is None:
                raise _error(bar + 1, "expected a condition after '|'")
            items.append(alternative)
        return _join(Or, [alternatives[0], *items])

    def and_expr(self) -> Node | None:
        items: list[Node] = []
        previous: Condition | None = None
        while True:
            while self.peek() == "&":
                self.pos += 1
            char = self.peek()
            if not char or char in "|)]":
                break
            start = self.pos
            if char in _CLOSERS:
                items.append(self.group())
                previous = None
            else:
                node = self.term(previous)
                if node is not None:
                    items.append(node)
                previous = node if isinstance(node, Condition) else None
            following = self.peek()
            if following and following not in _TERM_END:
                shown = self.text[start : self.pos]
                raise _error(self.pos + 1, f"expected '&', '|' or the end after {shown!r}")
        return _join(And, items) if items else None

    def group(self) -> Node:
        opener_position = self.pos + 1
        opener = self.peek()
        closer = _CLOSERS[opener]
        if self.depth >= _MAX_DEPTH:
            raise _error(opener_position, f"groups nest deeper than {_MAX_DEPTH} levels")
        self.pos += 1
        self.depth += 1
        inner = self.or_expr()
        self.depth -= 1
        found = self.peek()
        if found != closer:
            seen = f", found {found!r}" if found else ""
            raise _error(
                self.pos + 1,
                f"expected {closer!r} to close the {opener!r} at position {opener_position}{seen}",
            )
        if inner is None:
            raise _error(self.pos + 1, f"expected a condition inside {opener}{closer}")
        self.pos += 1
        return inner

    # ----------------------------------------------------------------- terms

    def term(self, previous: Condition | None) -> Condition | None:
        """A condition, or None after a function (which sets its part of the query)."""
        start = self.pos
        raw_name = self.scan(_NAME_END)
        stop = self.peek()
        if stop == "(":
            self.function(raw_name, start)
            return None
        if not stop or stop in _TERM_END:
            if raw_name == "explain":
                self.record("explain", start + 1)
                self.explain = True
                return None
            raise _error(
                self.pos + 1,
                f"expected a comparator after {raw_name!r}; one of {_COMPARATORS_HELP}",
            )
        if not raw_name:
            raise _error(start + 1, f"expected an attribute name before {stop!r}")
        if stop == "!" and self.text[self.pos + 1 : self.pos + 2] != "=":
            raise _error(self.pos + 2, "expected '=' after '!' (write '!=' for not equal)")
        if stop not in "=!":
            raise _error(self.pos + 1, f"unexpected {stop!r} in the attribute name {raw_name!r}")
        if (
            stop == "="
            and previous is not None
            and previous.comparator in ("gt", "ge")
            and raw_name in ("lt", "le")
            and self.text[self.pos : self.pos + 2] != "=="
        ):
            self.pos += 1
            chained: Comparator = "lt" if raw_name == "lt" else "le"
            return self.condition(previous.path, chained, start, wildcard=False)
        path = self.path(raw_name, start)
        comparator, wildcard = self.comparator()
        return self.condition(path, comparator, start, wildcard=wildcard)

    def path(self, raw_name: str, start: int) -> tuple[str, ...]:
        segments = []
        offset = start
        for raw in raw_name.split("."):
            if not raw:
                raise _error(offset + 1, f"empty attribute name in the path {raw_name!r}")
            segments.append(self.decode(raw, offset + 1))
            offset += len(raw) + 1
        return tuple(segments)

    def comparator(self) -> tuple[Comparator, bool]:
        """The comparator at ``pos`` (consumed) and whether ``==text*`` may mean starts-with."""
        text, pos = self.text, self.pos
        if text[pos] == "!":
            self.pos += 3 if text.startswith("!==", pos) else 2
            return "ne", False
        if text.startswith("==", pos):
            self.pos += 3 if text.startswith("===", pos) else 2
            return "eq", True
        word = _WORD.match(text, pos + 1)
        if word is None:
            self.pos += 1
            return "eq", False
        comparator = _NAMED_COMPARATORS.get(word.group())
        if comparator is None:
            raise _error(
                pos + 1,
                f"unknown comparator '={word.group()}='; the comparators are {_COMPARATORS_HELP}",
            )
        self.pos = word.end() + 1
        return comparator, False

    def condition(
        self, path: tuple[str, ...], comparator: Comparator, start: int, *, wildcard: bool
    ) -> Condition:
        value_start = self.pos
        raw = self.scan(_VALUE_END)
        bad = self.peek()
        if bad in _ENCODED:
            raise _error(
                self.pos + 1,
                f"unexpected {bad!r} in the value of {'.'.join(path)!r}; "
                f"write a literal {bad!r} as {_ENCODED[bad]}",
            )
        if wildcard and raw.endswith("*"):
            comparator, raw = "sw", raw[:-1]
        if raw == "null":
            return Condition(path, comparator, None, "null", start + 1)
        forced: ValueType | None = None
        for prefix in _PREFIXES:
            if raw.startswith(prefix + ":"):
                forced, raw = prefix, raw[len(prefix) + 1 :]
                value_start += len(prefix) + 1
                break
        return Condition(path, comparator, self.decode(raw, value_start + 1), forced, start + 1)

    # ----------------------------------------------------------------- functions

    def record(self, name: str, position: int) -> None:
        if self.depth > 0:
            raise _error(
                position,
                f"{name}() cannot be inside a group; put it at the top level, joined with '&'",
            )
        if name in self.functions:
            raise _error(
                position,
                f"{name}() is given twice (first at position {self.functions[name]}); keep one",
            )
        self.functions[name] = position

    def function(self, name: str, start: int) -> None:
        if name not in _FUNCTIONS:
            known = ", ".join(f"{function}()" for function in _FUNCTIONS)
            raise _error(start + 1, f"unknown function {name}(); the functions are: {known}")
        self.record(name, start + 1)
        self.pos += 1  # the '('
        if name == "select":
            self.select = self.selection(start)
            return
        arguments = self.scan(_ARGUMENT_END)
        if name == "limit":  # checked before the ')' so that limit(x reads as a bad number
            self.start, self.end = self.limit(arguments, start)
        self.close(start)
        if name == "sort":
            self.sort = self.sort_keys(arguments, start)
        elif name == "explain":
            if arguments:
                raise _error(start + 1, f"explain({arguments}) takes no arguments; write explain()")
            self.explain = True

    def close(self, start: int) -> None:
        """Consume the ``)`` ending the function call that began at ``start``."""
        if self.peek() != ")":
            raise _error(self.pos + 1, f"expected ')' after {self.text[start : self.pos]!r}")
        self.pos += 1

    def limit(self, arguments: str, start: int) -> tuple[int, int | None]:
        parts = [self.decode(part, start + 1).strip() for part in arguments.split(",")]
        if len(parts) > 2 or not all(_NUMBER.fullmatch(part) for part in parts):
            raise _error(
                start + 1,
                f"limit({arguments}) needs one or two whole numbers: "
                "limit(END) or limit(START,END)",
            )
        if any(len(part) > 18 for part in parts):
            raise _error(start + 1, f"limit({arguments}) has a number too large to be a limit")
        numbers = [int(part) for part in parts]
        if len(numbers) == 1:
            return 0, numbers[0]
        if numbers[1] < numbers[0]:
            raise _error(
                start + 1, f"limit({arguments}) ends before it starts; END must be >= START"
            )
        return numbers[0], numbers[1]

    def sort_keys(self, arguments: str, start: int) -> tuple[SortKey, ...]:
        keys = []
        offset = start + len("sort(")
        for raw in arguments.split(","):
            sign = raw[:1] if raw[:1] in ("+", "-") else raw[:3].upper()
            if sign not in _SIGNS:
                sign = ""
            name = raw[len(sign) :]
            if not name:
                raise _error(offset + 1, f"expected an attribute to sort by in sort({arguments})")
            path = self.path(name, offset + len(sign))
            keys.append(SortKey(path, _SIGNS.get(sign, False), offset + 1))
            offset += len(raw) + 1
        return tuple(keys)

    def selection(self, start: int) -> Selection:
        if self.peek() == "[":
            self.pos += 1
            fields, _ = self.fields("]", 0)
            self.pos += 1
            self.close(start)
            return Selection(fields, "array")
        fields, trailing_comma = self.fields(")", 0)
        self.pos += 1
        single = len(fields) == 1 and not trailing_comma
        return Selection(fields, "value" if single else "object")

    def fields(self, closer: str, depth: int) -> tuple[tuple[Field, ...], bool]:
        """The fields up to ``closer`` (left unconsumed) and whether a comma ended them."""
        if depth >= _MAX_DEPTH:
            raise _error(self.pos + 1, f"select() nests deeper than {_MAX_DEPTH} levels")
        fields: list[Field] = []
        while True:
            name_start = self.pos
            raw = self.scan(_SELECT_NAME_END)
            if not raw:
                raise _error(name_start + 1, "expected an attribute name in select()")
            nested = None
            if self.peek() == "{":
                self.pos += 1
                inner, _ = self.fields("}", depth + 1)
                self.pos += 1
                nested = Selection(inner, "object")
            fields.append(Field(self.decode(raw, name_start + 1), nested))
            found = self.peek()
            if found == ",":
                self.pos += 1
                if self.peek() == closer:
                    return tuple(fields), True
            elif found == closer:
                return tuple(fields), False
            else:
                seen = f", found {found!r}" if found else ""
                raise _error(
                    self.pos + 1,
                    f"expected ',' or {closer!r} after {self.text[name_start : self.pos]!r}{seen}",
                )
