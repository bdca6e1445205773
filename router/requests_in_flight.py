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

Each is also kept with the partition it waits for (``Where``: its kind, topic,
partition, and a fetch's offset; a group request of a replicated group: its
group's slot of ``__consumer_offsets``, whose leader coordinates it), stored as
the value of its shard's entry, so that keeping it costs no second insert. When
a routing table shows that its shard no longer leads that partition (no longer
holds a fetch's offset) while the request waits there (``deposed``: the shard
stopped, or its node is gone, and its connection has not dropped), it is
answered unavailable, retriable, at once. Without that, a Kafka client, whose
partitions all share one connection answered in request order, had every other
partition's replies held behind it until its request timed out (30 s; tester
T-rk's F1), although the partition had a new leader within seconds. Each kind
is safe to answer so: a deposed leader cannot commit an acks=all produce or a
group's commit (its followers now follow the new leader, so its high watermark
does not move), and its acks=1 tail is truncated when it follows; a produce
may have been stored or not, and an idempotent producer's retry is
deduplicated; fetches, offset look-ups and group membership (soft state) read
nothing they would change, so they may be retried at the new leader at once.
Such a request may still be answered by the old shard later: that answer
counts nothing (``answered`` says so), an acks=0 produce's is dropped (its
client heard of it once), any other is relayed and its client drops it (no
request id of it is waiting any more).

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

# What a request waits for at its shard: (its kind, topic, partition, a fetch's offset
# or None). A group request's: (its kind, "__consumer_offsets", its group's slot, None).
Where = tuple[str, str, int, int | None]

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
        # shard -> its unanswered (client, request id), in the order they were sent, and
        # the partition each waits for (None: one whose shard cannot be deposed)
        self._by_shard: dict[str, dict[tuple[bytes, int], Where | None]] = {}
        self._shard_of: dict[tuple[bytes, int], str] = {}
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
                  where: Where | None = None, size_bytes: int = 0) -> None:
        """A counted request of ``client``, of ``size_bytes`` (every frame), went to
        ``shard_id`` (``refusal`` said None); ``where``: the partition it waits for
        there (None: a request no routing table can depose, e.g. of a group whose
        offsets are not replicated)."""
        key = (client, request_id)
        if key in self._shard_of:
            raise AssertionError(f"request {request_id} of {client!r} counted twice")
        self._by_shard.setdefault(shard_id, {})[key] = where
        self._shard_of[key] = shard_id
        self._by_client[client] = self._by_client.get(client, 0) + 1
        if size_bytes:
            self._bytes_of[key] = size_bytes
            self._bytes_by_client[client] = self._bytes_by_client.get(client, 0) + size_bytes
            self._total_bytes += size_bytes

    def answered(self, shard_id: str, client: bytes, request_id: int) -> bool:
        """``shard_id`` answered request ``request_id`` of ``client``: whether that
        uncounted it (an answer to one not counted there, e.g. sent before the shard
        was forgotten or after it was deposed, counts nothing: False)."""
        key = (client, request_id)
        if self._shard_of.get(key) != shard_id:
            return False
        del self._shard_of[key], self._by_shard[shard_id][key]
        self._uncount(key)
        return True

    def forget_shard(self, shard_id: str) -> list[tuple[bytes, int]]:
        """The requests sent to ``shard_id`` will never be answered (its connection
        dropped, or it moved): uncounted, and returned as (client, request id), oldest
        first, for the router to answer."""
        lost = list(self._by_shard.pop(shard_id, {}))
        for key in lost:
            del self._shard_of[key]
            self._uncount(key)
        return lost

    def deposed(self, serves: Callable[[str, Where], bool]
                ) -> list[tuple[str, bytes, int, Where]]:
        """Uncount the requests waiting at a shard that no longer serves what they wait
        for (``serves(shard, where)``: whether it still does, by the routing table now)
        and return them, (shard, client, request id, where), oldest first at each
        shard. Costs one ``serves`` per request in flight: for a new routing table."""
        gone = [(shard_id, *key, where) for shard_id, waiting in self._by_shard.items()
                for key, where in waiting.items()
                if where is not None and not serves(shard_id, where)]
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
