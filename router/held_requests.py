"""Requests held while the router finds out about their topic.

Runs in the router's loop thread only. A produce, fetch or listOffsets for a
topic the routing table does not know (just created through another router,
or misspelt) is held here, in arrival order, while the admin bridge asks the
controller. When a routing table that knows the topic arrives, the router
forwards the held requests in that order before any later request for the
topic, so a client's pipelined requests to one partition reach its shard in
the order they were sent. If the controller does not know the topic either,
they are answered unknownTopic, and so is every request for the topic during
``ROUTER_UNKNOWN_TOPIC_TTL_S`` without asking again.

Bounds: ``ROUTER_HELD_REQUESTS_PER_TOPIC_MAX`` requests per topic; a topic is
held only while its look-up is queued, under way or its result not yet taken,
so the topics are bounded by the admin bridge's two queues;
``ROUTER_UNKNOWN_TOPICS_REMEMBERED_MAX`` unknown topics (the oldest are
forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from plinth import limits, protocol

HeldRequest = tuple[list, protocol.Request]     # (the frames as received, the request)


class HeldRequests:
    """Loop thread only."""

    def __init__(self) -> None:
        self._by_topic: dict[str, list[HeldRequest]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()   # topic -> forget-at time

    def topics(self) -> list[str]:
        """The topics with requests held, in the order their first request came."""
        return list(self._by_topic)

    def is_waiting(self, topic: str) -> bool:
        """Whether requests for ``topic`` are held (its look-up is under way)."""
        return topic in self._by_topic

    def hold(self, topic: str, frames: list, request: protocol.Request) -> bool:
        """Hold one more request for ``topic``; False if its topic holds the most already."""
        held = self._by_topic.setdefault(topic, [])
        if len(held) >= limits.ROUTER_HELD_REQUESTS_PER_TOPIC_MAX:
            return False
        held.append((frames, request))
        return True

    def release(self, topic: str) -> list[HeldRequest]:
        """The requests held for ``topic``, oldest first, no longer held."""
        return self._by_topic.pop(topic, [])

    def is_recently_unknown(self, topic: str) -> bool:
        forget_at_s = self._unknown.get(topic)
        return forget_at_s is not None and forget_at_s > time.monotonic()

    def remember_unknown(self, topic: str) -> None:
        self._unknown[topic] = time.monotonic() + limits.ROUTER_UNKNOWN_TOPIC_TTL_S
        self._unknown.move_to_end(topic)
        while len(self._unknown) > limits.ROUTER_UNKNOWN_TOPICS_REMEMBERED_MAX:
            self._unknown.popitem(last=False)

    def forget_unknown(self, topics: Iterable[str]) -> None:
        """These topics exist now (a routing table knows them)."""
        for topic in topics:
            self._unknown.pop(topic, None)
