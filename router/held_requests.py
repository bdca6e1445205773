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

A look-up the controller did not answer (``lookup_failed``) is retried by the
next routing refresh: a refresh is fetched after the failed look-up, so a
table from it that does not know the topic answers it as the look-up would
have. A request held ``ROUTER_REQUEST_HELD_S_MAX`` (no table came) is given
back by ``expired``, for the router to answer unavailable.

Bounds. A held request counts toward its client's requests in flight (the
router checks ``count_for``), and its bytes, every frame, toward its client's
share ``CLIENT_REQUEST_BYTES_HELD_MAX`` and the router's budget
``ROUTER_REQUEST_BYTES_HELD_MAX``; at most ``ROUTER_REQUESTS_HELD_MAX``
requests are held in all and ``ROUTER_HELD_REQUESTS_PER_TOPIC_MAX`` per
topic (``refusal`` says which bound one more request would break). So the
topics held are bounded too. ``ROUTER_UNKNOWN_TOPICS_REMEMBERED_MAX``
unknown topics are remembered (the oldest are forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from plinth import limits, protocol


@dataclass(slots=True)
class HeldRequest:
    frames: list                  # as received: [client id, header, payload?]
    request: protocol.Request
    client: bytes
    size_bytes: int               # every frame's bytes
    held_at_s: float              # time.monotonic()


@dataclass(slots=True)
class _Topic:
    requests: deque = field(default_factory=deque)   # of HeldRequest, oldest first
    lookup_pending: bool = True


class HeldRequests:
    """Loop thread only."""

    def __init__(self) -> None:
        self._by_topic: dict[str, _Topic] = {}
        self._count_by_client: dict[bytes, int] = {}
        self._bytes_by_client: dict[bytes, int] = {}
        self._count = 0
        self.total_bytes = 0
        self._unknown: OrderedDict[str, float] = OrderedDict()   # topic -> forget-at time

    def topics(self) -> list[str]:
        """The topics with requests held, in the order their first request came."""
        return list(self._by_topic)

    def is_waiting(self, topic: str) -> bool:
        """Whether requests for ``topic`` are held (its look-up is under way, or failed
        and waits for the next refresh)."""
        return topic in self._by_topic

    def is_lookup_pending(self, topic: str) -> bool:
        held = self._by_topic.get(topic)
        return held is not None and held.lookup_pending

    def lookup_failed(self, topic: str) -> None:
        """The controller did not answer ``topic``'s look-up: the next refresh decides."""
        held = self._by_topic.get(topic)
        if held is not None:
            held.lookup_pending = False

    def count_for(self, client: bytes) -> int:
        """Requests of ``client`` held now."""
        return self._count_by_client.get(client, 0)

    def bytes_for(self, client: bytes) -> int:
        return self._bytes_by_client.get(client, 0)

    def refusal(self, topic: str, client: bytes, size_bytes: int) -> str | None:
        """Why one more request of ``size_bytes`` from ``client`` cannot be held for
        ``topic``, or None if it can."""
        held = self._by_topic.get(topic)
        if held is not None and len(held.requests) >= limits.ROUTER_HELD_REQUESTS_PER_TOPIC_MAX:
            return (f"{limits.ROUTER_HELD_REQUESTS_PER_TOPIC_MAX} requests already wait for "
                    f"topic {topic!r} to resolve")
        client_bytes = self.bytes_for(client)
        if client_bytes + size_bytes > limits.CLIENT_REQUEST_BYTES_HELD_MAX:
            return (f"this client has {client_bytes} bytes of requests waiting for their "
                    f"topics to resolve; {size_bytes} more would pass its limit of "
                    f"{limits.CLIENT_REQUEST_BYTES_HELD_MAX} bytes")
        if self.total_bytes + size_bytes > limits.ROUTER_REQUEST_BYTES_HELD_MAX:
            return (f"the router holds {self.total_bytes} bytes of requests waiting for their "
                    f"topics to resolve; {size_bytes} more would pass its limit of "
                    f"{limits.ROUTER_REQUEST_BYTES_HELD_MAX} bytes")
        if self._count >= limits.ROUTER_REQUESTS_HELD_MAX:
            return (f"the router holds {self._count} requests waiting for their topics to "
                    f"resolve, its limit")
        return None

    def hold(self, topic: str, frames: list, request: protocol.Request, client: bytes,
             size_bytes: int) -> None:
        """Hold one more request for ``topic`` (``refusal`` said it may be held)."""
        held = self._by_topic.get(topic)
        if held is None:
            held = self._by_topic[topic] = _Topic()
        held.requests.append(HeldRequest(frames, request, client, size_bytes, time.monotonic()))
        self._count_by_client[client] = self._count_by_client.get(client, 0) + 1
        self._bytes_by_client[client] = self._bytes_by_client.get(client, 0) + size_bytes
        self._count += 1
        self.total_bytes += size_bytes

    def release(self, topic: str) -> list[HeldRequest]:
        """The requests held for ``topic``, oldest first, no longer held."""
        held = self._by_topic.pop(topic, None)
        if held is None:
            return []
        for request in held.requests:
            self._forget(request)
        return list(held.requests)

    def expired(self, now_s: float) -> list[HeldRequest]:
        """The requests held ``ROUTER_REQUEST_HELD_S_MAX`` or longer, no longer held,
        oldest first per topic."""
        oldest_held_at_s = now_s - limits.ROUTER_REQUEST_HELD_S_MAX
        out = []
        for topic, held in list(self._by_topic.items()):
            while held.requests and held.requests[0].held_at_s <= oldest_held_at_s:
                out.append(held.requests.popleft())
                self._forget(out[-1])
            if not held.requests:
                del self._by_topic[topic]
        return out

    def _forget(self, request: HeldRequest) -> None:
        client = request.client
        count = self._count_by_client[client] - 1
        if count:
            self._count_by_client[client] = count
            self._bytes_by_client[client] -= request.size_bytes
        else:
            del self._count_by_client[client], self._bytes_by_client[client]
        self._count -= 1
        self.total_bytes -= request.size_bytes

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
