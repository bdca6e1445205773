"""The requests each client has at the shards, counted so that none can exceed its limit.

Runs in the router's loop thread only. A client may have
``CLIENT_REQUESTS_IN_FLIGHT_MAX`` requests forwarded to the shards and not yet
answered (and held for their topic, which ``held_requests.py`` counts). Every
forwarded request is counted until its shard answers it.

A produce with acks=0 gets no reply from the broker unless it fails, so the
router sends it to the shard as acks=1 (the shard stores both alike and answers
the second) with its client's identity frame marked (``mark``), and counts it
under the marked identity: the shard's answer comes back with the mark and
uncounts it there; the router relays it only if it is an error. So a client's
acks=0 produces have bounds of their own, the same count and bytes as its
other requests, and their answers never free a place in its own count.
Otherwise a client could alternate bogus acks=0 produces with long polls, each
error reply freeing a place for one more parked fetch, and park thousands.
Before they were counted, acks=0 produces were bounded only by the DEALER's
high-water mark, 1,000 messages per shard: up to 16 GB of 16 MiB batches
(BATCH_BYTES_MAX) queued in the router behind a stopped shard.

The mark is a prefix no identity the router's socket assigns can have:
libzmq's own identities are 5 bytes that start with a zero byte; a client may
choose its identity (ZMQ_ROUTING_ID, any 1 to 255 bytes), so one that starts
with the mark is refused (``is_marked``).

Each counted request is kept by its client and request id, per shard, so that
the requests of a shard whose connection dropped (its process or node died)
or that moved to a new address, which will never be answered, can be
answered by the router at once: unavailable, retriable (shard_connections.py
replaces the DEALER, so none of them can still reach the shard). Without
that, a client would wait its whole request timeout (30 s by default) for
each, although its partition has a new leader within seconds (Kafka's clients
fail a dead connection's requests the same way). A request id a client has in
flight already is refused (ids must not be reused while in flight). Counts
are also kept per client, so that the check costs one look-up.

Group requests (heartbeats, commits, offset reads) are also kept with the slot
of ``__consumer_offsets`` their group lives in (``deposed``): a
group request gets unavailable when a routing table shows that its shard no
longer leads that slot while the request waits there (the shard stopped, or
its node is gone, and its connection has not dropped): a deposed leader cannot
make a commit durable (its followers now follow the new leader, so its high
watermark does not move), and membership is soft state, so the member may
retry at the new coordinator at once. Such a request may still be answered by
the old shard later; that second reply goes to the client, which drops it.

Requests are also counted by their bytes (every frame: a produce's batch above
all), per client (``bytes_for``): a client may have
``CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX`` of them at the shards and held for their
topic together (the router checks), so that one client sending large produces
and never reading the replies cannot make the router hold a gigabyte behind
them (the count bound alone let 256 frames of 64 MiB wait). Plinth's producer
never meets it: its unacknowledged batches are bounded by its buffer_memory.
Every client's together (``total_bytes``, and the held ones) may be
``ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX``, so that many clients within their own
shares cannot add up to more than the router should hold.

Fetches are also counted by the bytes they may bring back (``FetchBytesInFlight``):
the router and its shards share one connection per shard, so every reply a
shard sends waits behind the replies before it. A client that asks for
gigabytes of replies it never reads (the router refuses them once they are
over its share of unsent bytes, but only after the shard has read and sent
them) would hold every other client's replies from that shard behind its own.
A client's fetches at the shards may ask for ``CLIENT_FETCH_BYTES_IN_FLIGHT_MAX``
in all, each counted as at least ``FETCH_BYTES_COUNTED_MIN`` (a fetch brings
back at least one whole entry, however small its maximum); beyond that a
fetch is answered tooManyRequests, which a consumer retries.
"""

from __future__ import annotations

from collections.abc import Callable

from plinth import limits

# [0x00]"uncounted"[0x00] + the client's identity: the envelope of an acks=0 produce.
# (The name predates counting them: they are counted apart, under this identity.)
UNCOUNTED_MARK = b"\x00uncounted\x00"


def mark(client: bytes) -> bytes:
    """The identity frame an acks=0 produce is forwarded and counted with."""
    return UNCOUNTED_MARK + client


def is_marked(identity: bytes) -> bool:
    return identity.startswith(UNCOUNTED_MARK)


def unmark(identity: bytes) -> bytes:
    """The client a reply marked by ``mark`` goes to."""
    return identity[len(UNCOUNTED_MARK):]


class RequestsInFlight:
    """Loop thread only."""

    def __init__(self) -> None:
        # shard -> its unanswered (client, request id), in the order they were sent
        self._by_shard: dict[str, dict[tuple[bytes, int], None]] = {}
        self._shard_of: dict[tuple[bytes, int], str] = {}
        # group requests of a replicated group: (client, request id) -> its slot
        self._slot_of: dict[tuple[bytes, int], int] = {}
        self._by_client: dict[bytes, int] = {}
        # counted request -> its bytes (every frame), and each client's sum of them
        self._bytes_of: dict[tuple[bytes, int], int] = {}
        self._bytes_by_client: dict[bytes, int] = {}
        self._total_bytes = 0

    @property
    def total_bytes(self) -> int:
        """Bytes of every client's counted requests at the shards, not yet answered."""
        return self._total_bytes

    def count(self, client: bytes) -> int:
        """Counted requests of ``client`` at the shards, not yet answered."""
        return self._by_client.get(client, 0)

    def bytes_for(self, client: bytes) -> int:
        """Bytes of the counted requests of ``client`` at the shards, not yet answered."""
        return self._bytes_by_client.get(client, 0)

    def refusal(self, client: bytes, request_id: int) -> str | None:
        """Why request ``request_id`` of ``client`` may not be counted, or None."""
        shard_id = self._shard_of.get((client, request_id))
        if shard_id is None:
            return None
        return (f"request {request_id} is in flight already (at {shard_id}): request ids "
                f"must not be reused while in flight")

    def forwarded(self, shard_id: str, client: bytes, request_id: int,
                  slot: int | None = None, size_bytes: int = 0) -> None:
        """A counted request of ``client``, of ``size_bytes`` (every frame), went to
        ``shard_id`` (``refusal`` said None); ``slot``: a group request's slot of
        ``__consumer_offsets`` (None: not one, or its group's offsets are not
        replicated)."""
        key = (client, request_id)
        if key in self._shard_of:
            raise AssertionError(f"request {request_id} of {client!r} counted twice")
        self._by_shard.setdefault(shard_id, {})[key] = None
        self._shard_of[key] = shard_id
        if slot is not None:
            self._slot_of[key] = slot
        self._by_client[client] = self._by_client.get(client, 0) + 1
        if size_bytes:
            self._bytes_of[key] = size_bytes
            self._bytes_by_client[client] = self._bytes_by_client.get(client, 0) + size_bytes
            self._total_bytes += size_bytes

    def answered(self, shard_id: str, client: bytes, request_id: int) -> None:
        """``shard_id`` answered request ``request_id`` of ``client`` (an answer to one
        not counted there, or sent before the shard was forgotten, counts nothing)."""
        key = (client, request_id)
        if self._shard_of.get(key) != shard_id:
            return
        del self._shard_of[key], self._by_shard[shard_id][key]
        self._slot_of.pop(key, None)
        self._uncount(key)

    def forget_shard(self, shard_id: str) -> list[tuple[bytes, int]]:
        """The requests sent to ``shard_id`` will never be answered (its connection
        dropped, or it moved): uncounted, and returned as (client, request id), oldest
        first, for the router to answer."""
        lost = list(self._by_shard.pop(shard_id, {}))
        for key in lost:
            del self._shard_of[key]
            self._slot_of.pop(key, None)
            self._uncount(key)
        return lost

    def deposed(self, leader_of: Callable[[int], str]) -> list[tuple[str, bytes, int, int]]:
        """Uncount the group requests waiting at a shard that no longer leads their
        group's slot (``leader_of(slot)``: its leader now) and return them, (shard,
        client, request id, slot), oldest first."""
        gone = [(self._shard_of[key], *key, slot) for key, slot in self._slot_of.items()
                if leader_of(slot) != self._shard_of[key]]
        for shard_id, client, request_id, _ in gone:
            self.answered(shard_id, client, request_id)
        return gone

    def _uncount(self, key: tuple[bytes, int]) -> None:
        client = key[0]
        _take_from(self._by_client, client, 1, "requests")
        size_bytes = self._bytes_of.pop(key, 0)
        if size_bytes:
            _take_from(self._bytes_by_client, client, size_bytes, "request bytes")
            self._total_bytes -= size_bytes


def _take_from(counts: dict[bytes, int], client: bytes, amount: int, what: str) -> None:
    """Count ``amount`` of ``client``'s ``what`` as answered; its entry goes at 0."""
    left = counts[client] - amount
    if left < 0:
        raise AssertionError(f"client {client!r}: {left} {what} in flight after {amount} "
                             f"answered")
    if left:
        counts[client] = left
    else:
        del counts[client]


class FetchBytesInFlight:
    """The bytes each client's fetches at the shards may bring back. Loop thread only.

    Entries are bounded by the requests in flight (each client's count is), and
    leave with their reply or their shard."""

    def __init__(self) -> None:
        self._by_request: dict[tuple[bytes, int], tuple[str, int]] = {}   # -> (shard, bytes)
        self._by_client: dict[bytes, int] = {}

    def bytes_for(self, client: bytes) -> int:
        return self._by_client.get(client, 0)

    def refusal(self, client: bytes, request_id: int, bytes_max: int) -> str | None:
        """Why a fetch of ``client`` asking for ``bytes_max`` may not go to a shard, or None."""
        held = self.bytes_for(client)
        if held + counted_bytes(bytes_max) <= limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX:
            return None
        return (f"client has fetches asking for {held} bytes at the shards; with this one "
                f"({counted_bytes(bytes_max)} bytes) it would be over its limit of "
                f"{limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX}; read the replies, then retry")

    def forwarded(self, shard_id: str, client: bytes, request_id: int, bytes_max: int) -> None:
        counted = counted_bytes(bytes_max)
        self._by_request[(client, request_id)] = (shard_id, counted)
        self._by_client[client] = self._by_client.get(client, 0) + counted

    def answered(self, client: bytes, request_id: int) -> None:
        """A reply to request ``request_id`` of ``client`` came (not a fetch's: no-op)."""
        entry = self._by_request.pop((client, request_id), None)
        if entry is not None:
            self._uncount(client, entry[1])

    def forget_shard(self, shard_id: str) -> None:
        """The fetches sent to ``shard_id`` will never be answered (its connection
        dropped, or it moved): uncount them."""
        lost = [key for key, (shard, _) in self._by_request.items() if shard == shard_id]
        for key in lost:
            self._uncount(key[0], self._by_request.pop(key)[1])

    def _uncount(self, client: bytes, counted: int) -> None:
        left = self._by_client[client] - counted
        if left < 0:
            raise AssertionError(f"client {client!r}: {left} fetch bytes in flight")
        if left:
            self._by_client[client] = left
        else:
            del self._by_client[client]


def counted_bytes(bytes_max: int) -> int:
    """What a fetch asking for ``bytes_max`` counts: at least one entry's worth."""
    return max(limits.FETCH_BYTES_COUNTED_MIN, min(bytes_max, limits.FETCH_BYTES_MAX))
