"""Real-time delivery: the change bus, subscriptions and their events.

:class:`~kiln.realtime.bus.ChangeBus` reads each database's audit log after every
commit and hands the entries to :class:`~kiln.realtime.subscription.Subscription`
objects, which the protocol adapters (Server-Sent Events, WebSocket, MQTT) read.
"""

from kiln.realtime.bus import ChangeBus
from kiln.realtime.events import Event, EventType, Topic
from kiln.realtime.subscription import Subscription

__all__ = ["ChangeBus", "Event", "EventType", "Subscription", "Topic"]
