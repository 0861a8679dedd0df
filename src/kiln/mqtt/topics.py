"""Topic names and filters (MQTT spec 4.7, 4.8.2): validity, matching, shared subscriptions."""

from __future__ import annotations


def shared_subscription(topic_filter: str) -> tuple[str, str] | None:
    """Split a shared subscription ``$share/{group}/{filter}`` into (group, filter).

    >>> shared_subscription("$share/workers/jobs/#")
    ('workers', 'jobs/#')
    >>> shared_subscription("jobs/#") is None
    True
    """
    if not topic_filter.startswith("$share/"):
        return None
    group, _, inner = topic_filter[7:].partition("/")
    return group, inner


def valid_topic_filter(topic_filter: str) -> bool:
    """Whether ``topic_filter`` is a well-formed filter, shared ones (``$share/g/f``) included.

    ``#`` must be a whole level and the last; ``+`` must be a whole level; a filter is not empty.

    >>> [valid_topic_filter(f) for f in ("a/+/c", "a/#", "#", "a#", "a/#/c", "a/b+")]
    [True, True, True, False, False, False]
    """
    shared = shared_subscription(topic_filter)
    if shared is not None:
        group, topic_filter = shared
        if not group or "+" in group or "#" in group:
            return False
    if not topic_filter or "\x00" in topic_filter:
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return True
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether the (non-shared, valid) ``topic_filter`` matches the topic name ``topic``.

    A filter starting with a wildcard does not match topics starting with ``$`` (spec 4.7.2).

    >>> topic_matches("sport/#", "sport"), topic_matches("+/b", "a/b"), topic_matches("#", "$SYS/x")
    (True, True, False)
    """
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    levels = topic.split("/")
    filter_levels = topic_filter.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(filter_levels) == len(levels)
