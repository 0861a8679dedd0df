"""Content negotiation: which format a body is in, which one to answer in, which coding.

``Accept`` and ``Accept-Encoding`` are read with their q-values and wildcards
(RFC 9110 §12.5); a header value's answer is cached, since clients send few
distinct ones.
"""

from __future__ import annotations

from functools import lru_cache

from kiln.errors import NotAcceptable, UnsupportedMediaType
from kiln.http.formats import FORMATS, JSON, Format

CODINGS = ("br", "gzip")
"""The content codings kiln compresses with, the one it prefers first."""

_SENT = ", ".join(FORMATS)
_READ = ", ".join(media_type for media_type, fmt in FORMATS.items() if fmt.decode is not None)


def quality_list(header: str) -> list[tuple[str, float]]:
    """The elements of an ``Accept``-style header, lower-cased, each with its q-value.

    An element with a q-value that is not a number is left out.

    >>> quality_list("text/csv;q=0.5, application/json")
    [('text/csv', 0.5), ('application/json', 1.0)]
    """
    elements = []
    for element in header.split(","):
        token, *params = element.split(";")
        token = token.strip().lower()
        if not token:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    break
        else:
            elements.append((token, quality))
    return elements


def _range_quality(accepted: list[tuple[str, float]], media_type: str) -> float | None:
    """The q-value of the most specific range in ``accepted`` matching ``media_type``."""
    kind = media_type.partition("/")[0]
    best: tuple[int, float] | None = None
    for media_range, quality in accepted:
        if media_range == media_type:
            specificity = 2
        elif media_range == f"{kind}/*":
            specificity = 1
        elif media_range == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return None if best is None else best[1]


@lru_cache(maxsize=256)
def _negotiated(accept: str) -> Format | None:
    accepted = quality_list(accept)
    if not accepted:
        return JSON
    chosen, chosen_quality = None, 0.0
    for media_type, fmt in FORMATS.items():
        quality = _range_quality(accepted, media_type)
        if quality is not None and quality > chosen_quality:
            chosen, chosen_quality = fmt, quality
    return chosen


def response_format(accept: str | None) -> Format:
    """The format to answer in, given the request's ``Accept``; JSON when it has none.

    Raises:
        NotAcceptable: ``Accept`` allows none of the formats kiln sends.
    """
    if accept is None or accept == "*/*":
        return JSON
    fmt = _negotiated(accept)
    if fmt is None:
        raise NotAcceptable(
            f"kiln cannot answer in any type the Accept header allows ({accept!r}); "
            f"it sends {_SENT}: ask for one of them (or */*)"
        )
    return fmt


def request_format(content_type: str | None) -> Format:
    """The format of a request body, from its ``Content-Type``; JSON when it has none.

    Raises:
        UnsupportedMediaType: kiln does not read bodies of that type.
    """
    if content_type is None:
        return JSON
    fmt = FORMATS.get(content_type.split(";")[0].strip().lower())
    if fmt is None or fmt.decode is None:
        hint = (
            " (curl -d sends that type: add -H 'Content-Type: application/json' or use --json)"
            if content_type.startswith("application/x-www-form-urlencoded")
            else ""
        )
        raise UnsupportedMediaType(
            f"kiln reads bodies of type {_READ}, not {content_type!r}{hint}; "
            f"send one of them with a matching Content-Type"
        )
    return fmt


@lru_cache(maxsize=256)
def content_coding(accept_encoding: str | None) -> str | None:
    """The coding to compress a response with (``br`` or ``gzip``), or None for none.

    The client's highest q-value wins, ``br`` on a tie; ``*`` stands for codings
    the header does not name, and q=0 refuses one.

    >>> content_coding("gzip, br;q=0")
    'gzip'
    """
    if not accept_encoding:
        return None
    qualities = dict(quality_list(accept_encoding))
    wildcard = qualities.get("*", 0.0)
    chosen, chosen_quality = None, 0.0
    for coding in CODINGS:
        quality = qualities.get(coding, wildcard)
        if quality > chosen_quality:
            chosen, chosen_quality = coding, quality
    return chosen
