"""MQTT payloads ↔ values: the MQTT 5 content type when a message has one, else
``mqtt.payloadFormat``.

The formats are REST's (:mod:`kiln.http.formats`): JSON, CBOR and MessagePack, named by
their media types (``application/json``, ``application/cbor``, ``application/x-msgpack`` or
``application/msgpack``; parameters such as ``; charset=utf-8`` are ignored).

>>> payloads = Payloads("json")
>>> payloads.decode(b'{"name": "Rex"}', None)
{'name': 'Rex'}
>>> payloads.encode({"name": "Rex"}), payloads.content_type
(b'{"name":"Rex"}', 'application/json')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.errors import UnsupportedMediaType
from kiln.http.formats import CBOR, FORMATS, JSON, MSGPACK, Format

BY_SETTING: dict[str, Format] = {"json": JSON, "cbor": CBOR, "msgpack": MSGPACK}
"""``mqtt.payloadFormat`` → its format."""

READABLE: dict[str, Callable[[bytes], Any]] = {
    media_type: fmt.decode for media_type, fmt in FORMATS.items() if fmt.decode is not None
}
"""The content types a payload may declare, and how each is read."""


class Payloads:
    """Decodes incoming payloads and encodes outgoing values for one broker.

    Args:
        default: ``mqtt.payloadFormat``: ``json``, ``cbor`` or ``msgpack``.
    """

    def __init__(self, default: str):
        self.format = BY_SETTING[default]
        self.content_type = self.format.media_type
        """The content type of what :meth:`encode` makes (sent as the MQTT 5 property)."""
        self._decode = READABLE[self.content_type]

    def decode(self, payload: bytes, content_type: str | None) -> Any:
        """The value ``payload`` holds, read in ``content_type`` (None: the default format).

        Raises:
            UnsupportedMediaType: a content type kiln does not read.
            BadRequest: the payload is not valid in its format (the detail says where).
        """
        decode = self._decode
        if content_type is not None:
            media_type = content_type.partition(";")[0].strip().lower()
            found = READABLE.get(media_type)
            if found is None:
                readable = ", ".join(READABLE)
                raise UnsupportedMediaType(
                    f"the payload's content type {content_type!r} is not one kiln reads",
                    hint=f"send one of {readable}, or leave the content type out for "
                    f"mqtt.payloadFormat ({self.content_type})",
                )
            decode = found
        return decode(payload)

    def encode(self, value: Any) -> bytes:
        """``value`` in the default format."""
        return self.format.encode(value, None)
