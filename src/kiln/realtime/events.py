"""What subscribers receive: events, and the topics that choose them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kiln.types import Key, Record, Version

EventType = Literal["put", "patch", "delete", "message", "gap", "error", "sync"]
"""``put``, ``patch`` and ``delete`` are committed writes; ``message`` was published without
storing; ``gap`` says some requested history was pruned; ``error`` ends a subscription;
``sync`` ends a subscription's history (its version is where the live events resume from;
adapters use it as a resume point and do not show it as an event)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a record (or, for ``gap`` and ``error``, to the stream).

    ``value`` is the record after a write (None after a delete), a message's payload,
    or the detail of a ``gap`` or ``error``; ``patch`` holds a patch's changes.
    ``wire`` is what the protocol adapter that published a message attached to it
    (:data:`kiln.realtime.bus.published_wire`), so that adapter can relay the message to
    its own clients exactly as it arrived (MQTT: the payload bytes and properties);
    None for every other event and in a replay.
    """

    type: EventType
    id: Key | None
    version: Version
    value: Any = None
    patch: Record | None = None
    wire: Any = None

    def as_message(self) -> dict[str, Any]:
        """The event as one JSON-ready object: ``{type, id, version, value[, patch]}``."""
        message = {"type": self.type, "id": self.id, "version": self.version, "value": self.value}
        if self.patch is not None:
            message["patch"] = self.patch
        return message


@dataclass(frozen=True, slots=True)
class Topic:
    """What a subscription listens to in one channel (a table, or a plain resource's route).

    ``id`` picks one record; else ``prefix`` picks the string ids that start with it;
    with neither, every record of the channel.
    """

    channel: str
    id: Key | None = None
    prefix: str | None = None

    def matches(self, key: Key | None) -> bool:
        """Whether an event about the record ``key`` belongs to this topic."""
        if self.id is not None:
            return key == self.id
        if self.prefix is not None:
            return isinstance(key, str) and key.startswith(self.prefix)
        return True
