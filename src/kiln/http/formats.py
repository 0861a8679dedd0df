"""The wire formats kiln speaks: media type → how to encode, decode and stream values.

Every codec is built once, at import: msgspec ``Encoder``/``Decoder`` objects for
JSON and MessagePack, cbor2's functions for CBOR, the csv module for CSV (which
is a response format only). :data:`FORMATS` lists them in the order kiln prefers
them when an ``Accept`` header ranks several equally.

How the awkward types travel:

- JSON: a Date is an ISO-8601 UTC string, Bytes base64, a BigInt an exact number.
- CBOR: a Date is tag 1 (epoch seconds, an integer or a float), Bytes a byte
  string, a BigInt beyond 64 bits a bignum (tags 2 and 3).
- MessagePack: a Date is the timestamp extension (-1), Bytes ``bin``, a BigInt
  beyond 64 bits extension type 1 holding its two's-complement big-endian bytes.
- CSV: one cell per declared attribute; a Date and Bytes as in JSON without quotes,
  lists and objects as JSON text.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import cbor2
import msgspec

from kiln.errors import BadRequest

Columns = tuple[str, ...] | None
"""The attributes a tabular format (CSV) writes, in order; None: those of the first record."""

BIG_INT_EXT = 1
"""The MessagePack extension type of an integer beyond 64 bits (signed big-endian bytes)."""

_STREAM_FLUSH_BYTES = 64 * 1024
_STREAM_BATCH = 32
"""Records of a stream encoded in one step: few enough that the first leave early."""
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_PLAIN = (type(None), bool, int, float, str, bytes, datetime)


@dataclass(frozen=True, slots=True)
class Format:
    """One wire format: its media type and its codec functions.

    ``encode(value, columns)`` encodes a whole body; a stream is ``head(columns)``,
    then ``item(value, columns)`` for each record with ``separator`` between two,
    then ``tail``. ``decode`` reads a request body (None: the format is only sent).
    ``broken`` is sent when a stream fails midway: bytes no reader of the format
    accepts, so a cut-off stream never parses as a complete one (JSON and CBOR need
    none: without their ``tail`` they are incomplete already). ``many``, when set,
    encodes several items with their separators in one call (see :meth:`items`).
    """

    media_type: str
    content_type: str
    encode: Callable[[Any, Columns], bytes]
    decode: Callable[[bytes], Any] | None
    head: Callable[[Columns], bytes]
    item: Callable[[Any, Columns], bytes]
    separator: bytes = b""
    tail: bytes = b""
    tabular: bool = False
    broken: bytes = b""
    many: Callable[[list[Any], Columns], bytes] | None = None

    def items(self, records: list[Any], columns: Columns) -> bytes:
        """``records`` as stream items, ``separator`` between two."""
        if self.many is not None:
            return self.many(records, columns)
        return self.separator.join([self.item(record, columns) for record in records])


def _constant(data: bytes) -> Callable[[Columns], bytes]:
    return lambda _columns: data


# --------------------------------------------------------------------------- JSON

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def _encode_json(value: Any, _columns: Columns = None) -> bytes:
    return _json_encoder.encode(value)


def _encode_json_items(values: list[Any], _columns: Columns = None) -> bytes:
    return _json_encoder.encode(values)[1:-1]  # an array's items are joined by commas


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        return _json_decoder.decode(body)
    except msgspec.DecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {_json_problem(body, error)}") from None
    except UnicodeDecodeError as error:  # msgspec's, for a string that is not UTF-8
        raise BadRequest(
            f"the body is not valid JSON: it is not UTF-8 (byte {error.start})"
        ) from None
    except RecursionError:
        raise BadRequest(
            "the body nests arrays or objects too deeply to read; flatten it"
        ) from None


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?')
"""A JSON string or number: what :func:`_out_of_range` scans, so digits inside a string are
never taken for a number."""


def _json_problem(body: bytes, error: msgspec.DecodeError) -> str:
    """What is wrong with ``body``, with a position where msgspec's message lacks one."""
    problem = str(error)
    if "out of range" in problem:
        return _out_of_range(body) or problem
    if "truncated" not in problem:
        return problem
    try:  # msgspec says "truncated" both for a cut-off body and for a lone surrogate escape
        json.loads(body)
    except json.JSONDecodeError as stdlib_error:
        return f"{stdlib_error.msg} (byte {stdlib_error.pos})"
    except UnicodeDecodeError as decode_error:
        return f"it is not UTF-8 (byte {decode_error.start})"
    return "it contains an unpaired surrogate escape (such as \\ud800); send whole UTF-16 pairs"


def _out_of_range(body: bytes) -> str | None:
    """Where the first number too large to read is in ``body``, and what to send instead."""
    for token in _JSON_TOKEN.finditer(body):
        text = token.group()
        if text.startswith(b'"'):
            continue
        whole = not any(mark in text for mark in b".eE")
        if whole and len(text.lstrip(b"-")) > sys.get_int_max_str_digits() > 0:
            return (
                f"the whole number at byte {token.start()} has {len(text.lstrip(b'-')):,} "
                f"digits, over the {sys.get_int_max_str_digits():,} kiln reads; "
                "send it as a string of digits"
            )
        if not whole and math.isinf(float(text)):
            shown = text.decode() if len(text) <= 24 else text[:21].decode() + "..."
            return (
                f"the number at byte {token.start()} ({shown}) is too large for a 64-bit "
                "float; send a smaller one, or a string"
            )
    return None


# --------------------------------------------------------------------------- plain data


def _check_plain(value: Any, path: str, name: str) -> None:
    """Refuse decoded values a record cannot hold (sets, UUIDs, non-text map keys, ...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise BadRequest(
                    f"the {name} map at {path} has the key {key!r}, which is not a text "
                    f"string; send maps with text keys"
                )
            _check_plain(item, f"{path}.{key}", name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{path}[{index}]", name)
    elif not isinstance(value, _PLAIN):
        raise BadRequest(
            f"the {name} value at {path} decodes to a {type(value).__name__}, which a record "
            "cannot hold; send null, booleans, numbers, text, bytes, dates, arrays and maps"
        )


def _plain(value: Any, name: str) -> Any:
    try:
        _check_plain(value, "$", name)
    except RecursionError:
        raise BadRequest(
            f"the {name} body nests arrays or maps too deeply to read; flatten it"
        ) from None
    return value


# --------------------------------------------------------------------------- CBOR

_encode_cbor_value = partial(cbor2.dumps, datetime_as_timestamp=True)


def _encode_cbor(value: Any, _columns: Columns = None) -> bytes:
    return _encode_cbor_value(value)


_REFUSED_TAGS = {
    25: "a string reference",
    256: "string references",
    28: "a shared value",
    29: "a shared value",
    4: "a decimal fraction",
    5: "a bigfloat",
    30: "a rational number",
    35: "a regular expression",
    36: "a MIME message",
}
"""Tags cbor2 would decode at a cost out of proportion to their bytes: a reference to a value
sent earlier (resolved, a few bytes become a huge value), a fraction of two huge numbers
(computed in quadratic time), a pattern to compile or a message to parse. Refused while
decoding, before anything is computed or walked. The other tags kiln does not read (a set,
a UUID, an address, ...) decode cheaply and are refused after, naming where they are."""


class _Refused(Exception):
    """A CBOR tag kiln refuses, raised while decoding (the message is the client's)."""


def _refuser(tag: int) -> Callable[..., Any]:
    def refuse(*_args: Any) -> Any:
        raise _Refused(
            f"the body uses {_REFUSED_TAGS[tag]} (CBOR tag {tag}), which kiln does not read; "
            "send each value in full, as JSON's types, a date (tag 0 or 1) or a bignum"
        )

    return refuse


_ONLY_KILNS_TAGS = {tag: _refuser(tag) for tag in _REFUSED_TAGS}


def _decode_cbor(body: bytes) -> Any:
    if not body:
        raise BadRequest("the body is empty; send a CBOR map")
    stream = io.BytesIO(body)
    try:
        value = cbor2.CBORDecoder(stream, semantic_decoders=_ONLY_KILNS_TAGS).decode()
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as error:
        refused = error.__cause__ if isinstance(error.__cause__, _Refused) else None
        if refused is not None:
            raise BadRequest(str(refused)) from None
        raise BadRequest(
            f"the body is not valid CBOR: {error} (byte {stream.tell()}); send one CBOR map"
        ) from None
    if stream.tell() != len(body):
        raise BadRequest(
            f"the body is not valid CBOR: {len(body) - stream.tell()} bytes follow the first "
            f"value (from byte {stream.tell()}); send one CBOR map"
        )
    return _plain(value, "CBOR")


# --------------------------------------------------------------------------- MessagePack

_msgpack_encoder = msgspec.msgpack.Encoder()


def _big_int_ext(value: int) -> msgspec.msgpack.Ext:
    size = (value.bit_length() + 8) // 8
    return msgspec.msgpack.Ext(BIG_INT_EXT, value.to_bytes(size, "big", signed=True))


def _with_big_ints_wrapped(value: Any) -> Any:
    """``value`` with every integer beyond 64 bits replaced by its extension form."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64_MIN <= value <= _UINT64_MAX else _big_int_ext(value)
    if isinstance(value, dict):
        return {key: _with_big_ints_wrapped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_with_big_ints_wrapped(item) for item in value]
    return value


def _encode_msgpack(value: Any, _columns: Columns = None) -> bytes:
    try:
        return _msgpack_encoder.encode(value)
    except OverflowError:  # only integers beyond 64 bits take the slow path
        return _msgpack_encoder.encode(_with_big_ints_wrapped(value))


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == BIG_INT_EXT:
        return int.from_bytes(data, "big", signed=True)
    raise BadRequest(
        f"the MessagePack body holds extension type {code}, which kiln does not read; "
        f"send integers beyond 64 bits as extension type {BIG_INT_EXT} or as decimal text"
    )


_msgpack_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def _decode_msgpack(body: bytes) -> Any:
    if not body:
        raise BadRequest("the body is empty; send a MessagePack map")
    try:
        value = _msgpack_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:  # a str that is not UTF-8
        raise BadRequest(
            f"the body is not valid MessagePack: {error}; send one MessagePack map"
        ) from None
    except RecursionError:
        raise BadRequest(
            "the MessagePack body nests arrays or maps too deeply to read; flatten it"
        ) from None
    return _plain(value, "MessagePack")


# --------------------------------------------------------------------------- CSV


def _cell(value: Any) -> str:
    """One CSV cell: text as is, null empty, anything else as its JSON text."""
    if value is None:
        return ""
    if type(value) is str:
        return value
    text = _json_encoder.encode(value).decode()
    return text[1:-1] if isinstance(value, datetime | bytes) else text


def _csv_lines(rows: Iterable[Iterable[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def _csv_row(value: Any, columns: Columns) -> list[str]:
    if isinstance(value, list) and columns is not None and len(value) == len(columns):
        return [_cell(item) for item in value]  # select([a,b]): one cell per selected field
    if not isinstance(value, dict):
        return [_cell(value)]
    return [_cell(value.get(column)) for column in columns or value]


def _csv_head(columns: Columns) -> bytes:
    return _csv_lines([columns or ()])


def _encode_csv_item(value: Any, columns: Columns) -> bytes:
    return _csv_lines([_csv_row(value, columns)])


def _encode_csv(value: Any, columns: Columns) -> bytes:
    records = value if isinstance(value, list) else [value]
    if columns is None:
        columns = _columns_of(records[0] if records else None)
    return _csv_lines([columns, *(_csv_row(record, columns) for record in records)])


def _columns_of(record: Any) -> tuple[str, ...]:
    return tuple(record) if isinstance(record, dict) else ("value",)


# --------------------------------------------------------------------------- the registry

JSON = Format(
    "application/json",
    "application/json",
    _encode_json,
    _decode_json,
    _constant(b"["),
    _encode_json,
    b",",
    b"]",
    many=_encode_json_items,
)
"""JSON (msgspec): the default, both ways."""
CBOR = Format(
    "application/cbor",
    "application/cbor",
    _encode_cbor,
    _decode_cbor,
    _constant(b"\x9f"),  # an indefinite-length array ...
    _encode_cbor,
    b"",
    b"\xff",  # ... closed by the break code
)
"""CBOR (cbor2): Dates as tag 1, BigInts beyond 64 bits as bignums."""
MSGPACK = Format(
    "application/x-msgpack",
    "application/x-msgpack",
    _encode_msgpack,
    _decode_msgpack,
    _constant(b""),  # a stream is the values one after the other, without an array header
    _encode_msgpack,
    broken=b"\xc1",  # the one byte MessagePack never uses
)
"""MessagePack (msgspec): Dates as timestamps, BigInts beyond 64 bits as extension type 1."""
CSV = Format(
    "text/csv",
    "text/csv; charset=utf-8",
    _encode_csv,
    None,
    _csv_head,
    _encode_csv_item,
    tabular=True,
    broken=b'"kiln: the stream failed here; see the server log\r\n',  # an unclosed quote
)
"""CSV: responses only, one row per record under a header row."""

FORMATS: dict[str, Format] = {
    fmt.media_type: fmt
    for fmt in (
        JSON,
        CBOR,
        MSGPACK,
        dataclasses.replace(
            MSGPACK, media_type="application/msgpack", content_type="application/msgpack"
        ),
        CSV,
    )
}
"""Media type → format, in the order kiln prefers them when ``Accept`` ranks several equally."""


async def encode_stream(
    fmt: Format, records: Iterable[Any] | AsyncIterator[Any], columns: Columns
) -> AsyncIterator[bytes]:
    """``records`` as one ``fmt`` stream, in chunks of about 64 KiB (the last one shorter).

    Records of a plain iterator are encoded :data:`_STREAM_BATCH` at a time: an
    async step, or an encoder call, per record would cost more than encoding it.
    """
    chunks = _Chunks(fmt, columns)
    if isinstance(records, AsyncIterator):
        async for record in records:
            chunk = chunks.add([record])
            if chunk is not None:
                yield chunk
    else:
        iterator = iter(records)
        while batch := list(itertools.islice(iterator, _STREAM_BATCH)):
            chunk = chunks.add(batch)
            if chunk is not None:
                yield chunk
    yield chunks.finish()


def encode_if_small(
    fmt: Format, records: Iterable[Any], columns: Columns
) -> tuple[bytes | None, Iterable[Any]]:
    """``records`` as one whole ``fmt`` body when they are fewer than a batch, else None.

    Returns:
        ``(body, ())`` for a small result (most pages of a query), which is sent
        without the machinery of a stream; else ``(None, the same records)`` to give
        :func:`encode_stream`.
    """
    iterator = iter(records)
    batch = list(itertools.islice(iterator, _STREAM_BATCH))
    if len(batch) == _STREAM_BATCH:
        return None, itertools.chain(batch, iterator)
    chunks = _Chunks(fmt, columns)
    early = chunks.add(batch) if batch else None  # a batch of large records fills a chunk
    last = chunks.finish()
    return (last if early is None else early + last), ()


class _Chunks:
    """Encodes records, a batch at a time, into a stream's chunks of about 64 KiB."""

    def __init__(self, fmt: Format, columns: Columns):
        self.fmt = fmt
        self.columns = columns
        self.parts: list[bytes] = []
        self.size = 0
        self.first = True

    def add(self, records: list[Any]) -> bytes | None:
        """Encode ``records`` (at least one); a chunk to send when enough is gathered."""
        fmt = self.fmt
        if self.first:
            if self.columns is None and fmt.tabular:
                self.columns = _columns_of(records[0])
            self.parts.append(fmt.head(self.columns))
            self.first = False
        elif fmt.separator:
            self.parts.append(fmt.separator)
        encoded = fmt.items(records, self.columns)
        self.parts.append(encoded)
        self.size += len(encoded)
        if self.size < _STREAM_FLUSH_BYTES:
            return None
        chunk = b"".join(self.parts)
        self.parts, self.size = [], 0
        return chunk

    def finish(self) -> bytes:
        """The last chunk: what is left, and the format's tail."""
        if self.first:
            self.parts.append(self.fmt.head(self.columns))
        self.parts.append(self.fmt.tail)
        return b"".join(self.parts)
