"""Quotas: per client key byte rates for produce and fetch, kept by slowing clients down.

Runs in the router's loop thread only: router.py calls ``on_request`` and
``on_reply`` for the traffic of every client, and forwards or relays what
``due`` hands back. The rates are Kafka's ``producer_byte_rate`` and
``consumer_byte_rate`` from the ACL file (router/acl.py), per client key and
shared by all of that key's connections to this router; each router meters
on its own.

Measuring. Each (key, direction) keeps one number: the time at which the
bytes counted so far would have gone through at exactly the quota (the
theoretical arrival time of the generic cell rate algorithm). Counting n bytes
moves it to max(it, now) + n / rate. The key is over its quota by as much as
that time runs ahead of now, less QUOTA_BURST_MS: a client within its quota on
average may send a burst's worth at once, and one over it is slowed by
exactly its excess.

Slowing, never failing (as Kafka's throttling):
- Produce: a batch's bytes count when its request arrives, and it is
  forwarded at once. Its reply is held here while the key is over its produce
  quota, then relayed saying in ``throttleTimeMs`` how long it was held. A
  held reply still counts as in flight at the router, so a client that does
  not wait for its replies meets CLIENT_REQUESTS_IN_FLIGHT_MAX instead of
  outrunning its quota. An acks=0 produce gets no reply, so while the key is
  over, the request itself is held and forwarded when the key is not.
- Fetch: the bytes of the log entries a fetch returns count when its reply
  passes; a reply that leaves the key over its fetch quota says in
  ``throttleTimeMs`` how long the client's next fetch will wait, and fetches
  that arrive while the key is over are held here (the header alone: a fetch
  request carries no data) and forwarded when it is not. A fetch asks for at
  most a burst's worth of the quota (the router lowers its ``maxBytes``), so
  that one reply cannot put the key further over than one hold makes up for.
No hold lasts longer than QUOTA_THROTTLE_MS_MAX, below the clients' request
timeout, so a throttled request is never taken for lost and retried. So a
client is held back by at most that much per request: one produce batch larger
than the quota × QUOTA_THROTTLE_MS_MAX, or many batches in flight at once on
different partitions, go faster than the quota (a fetch returns at least one
whole batch, however small its ``maxBytes``). Clients need not do anything
about ``throttleTimeMs``; Plinth's do not.

Bounds (plinth/limits.py): QUOTA_HELD_MAX replies and requests held in all (a
reply beyond it is relayed at once, a request gets tooManyRequests);
QUOTA_REQUESTS_HELD_PER_CLIENT_MAX requests per client connection and
QUOTA_HELD_PAYLOAD_BYTES_MAX bytes of acks=0 batches in all (beyond them,
tooManyRequests, as beyond the in-flight limit); QUOTA_CLIENTS_TRACKED_MAX
client connections remembered, the least recently active forgotten first.
Meters: two per key with a quota, and keys are bounded by the authorized keys.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable

import zmq

from plinth import limits, protocol, protocol_hot
from plinth.errors import TooManyRequestsError
from plinth.router import reply_header
from plinth.router.acl import Acl, QuotaRates

PRODUCE, FETCH = "produce", "fetch"
_BURST_S = limits.QUOTA_BURST_MS / 1000
_HOLD_S_MAX = limits.QUOTA_THROTTLE_MS_MAX / 1000

# What ``due`` hands back: a reply to relay, or a request to forward.
HeldReply = tuple[str, str, list]                         # ("reply", shard id, frames)
HeldRequest = tuple[str, list, protocol.Request]          # ("request", frames, request)


class _Meter:
    """One key's bytes in one direction, against its rate."""

    __slots__ = ("seconds_per_byte", "due_s")

    def __init__(self, byte_rate: int):
        self.seconds_per_byte = 1.0 / byte_rate
        self.due_s = 0.0            # when the bytes counted would have gone through at the rate

    def count(self, byte_count: int, now_s: float) -> None:
        self.due_s = max(self.due_s, now_s) + byte_count * self.seconds_per_byte

    def over_s(self, now_s: float) -> float:
        """How long the key is over its quota from ``now_s`` on; <= 0: it is not."""
        return self.due_s - now_s - _BURST_S


class Quotas:
    """Loop thread only."""

    def __init__(self, acl: Acl, clock_s: Callable[[], float] = time.monotonic):
        self._acl = acl
        self._clock_s = clock_s
        self._meters: dict[tuple[str, str], _Meter] = {}
        self._key_of: OrderedDict[bytes, str] = OrderedDict()   # client id -> key with a quota
        self._held: list[tuple[float, int, HeldReply | HeldRequest]] = []   # heap by release time
        self._order = itertools.count()          # keeps the heap's ties in arrival order
        self._requests_held: dict[bytes, int] = {}   # client id -> requests held
        self._payload_bytes_held = 0
        # Client id -> when its last held reply, and its last held request, go: a later
        # one never overtakes them (replies for a partition keep their order).
        self._replies_until_s: dict[bytes, float] = {}
        self._requests_until_s: dict[bytes, float] = {}

    def use_acl(self, acl: Acl | None) -> None:
        """Meter by ``acl``'s quotas from now on (a reload, router/security.py: any
        thread; the reference is swapped whole, and a key whose rate changed gets a
        new meter at its next request). None (the ACL was dropped) keeps the last."""
        if acl is not None:
            self._acl = acl

    # --- Requests ---------------------------------------------------------------------

    def on_request(self, client: bytes, key: str, frames: list, request: protocol.Request) -> bool:
        """Count a produce's bytes, or hold a request while its key is over its quota.
        True: forward it now; False: held (``due`` hands it back). Raises
        TooManyRequestsError when it should be held and cannot be."""
        rates = self._acl.quota_for(key)
        if rates is None:
            return True
        self._remember(client, key)
        kind, now_s, over_s = type(request), self._clock_s(), 0.0
        if kind is protocol.ProduceRequest and rates.producer_byte_rate:
            meter = self._meter(key, PRODUCE, rates.producer_byte_rate)
            if request.acks == 0:   # no reply to hold: the request waits instead
                over_s = meter.over_s(now_s)
            meter.count(sum(len(frame) for frame in frames[2:]), now_s)
        elif kind is protocol.FetchRequest and rates.consumer_byte_rate:
            over_s = self._meter(key, FETCH, rates.consumer_byte_rate).over_s(now_s)
            _cap_fetch_bytes(frames, request, rates.consumer_byte_rate)
        elif not isinstance(request, protocol.PARTITION_REQUESTS):
            return True   # group and admin requests are never held
        # A request behind one held for its client is held too: they stay in order.
        return not self._hold_request(client, frames, request, now_s, over_s)

    def _hold_request(self, client: bytes, frames: list, request, now_s: float,
                      over_s: float) -> bool:
        """Hold the request if its key is over (or the client's earlier one is held)."""
        release_s = _release_s(self._requests_until_s, client, now_s, over_s)
        if release_s is None:
            return False
        held = self._requests_held.get(client, 0)
        payload_bytes = sum(len(frame) for frame in frames[2:])
        if held >= limits.QUOTA_REQUESTS_HELD_PER_CLIENT_MAX or \
                len(self._held) >= limits.QUOTA_HELD_MAX or \
                self._payload_bytes_held + payload_bytes > limits.QUOTA_HELD_PAYLOAD_BYTES_MAX:
            raise TooManyRequestsError(
                f"client is over its {request.kind} quota and has {held} requests held (at most "
                f"{limits.QUOTA_REQUESTS_HELD_PER_CLIENT_MAX}; the router holds {len(self._held)} "
                f"of {limits.QUOTA_HELD_MAX}, and {self._payload_bytes_held} bytes of batches of "
                f"{limits.QUOTA_HELD_PAYLOAD_BYTES_MAX}); wait for replies")
        self._requests_held[client] = held + 1
        self._payload_bytes_held += payload_bytes
        self._requests_until_s[client] = release_s
        self._push(release_s, ("request", frames, request))
        return True

    # --- Replies ------------------------------------------------------------------------

    def on_reply(self, shard_id: str, frames: list) -> bool:
        """Count a fetch reply's bytes (it then says how long the next fetch waits), or
        hold a produce reply while its key is over its produce quota. True: held
        (``due`` hands it back); False: relay it now (``frames[1]`` may be rewritten)."""
        if not self._key_of:
            return False
        key = self._key_of.get(frames[0].bytes)
        if key is None:
            return False
        rates = self._acl.quota_for(key)
        if rates is None:   # a client remembered under a quota the file no longer has
            return False
        if len(frames) > 2:     # a fetch reply: its payload is log entries
            if rates.consumer_byte_rate:
                self._count_fetched(key, rates, frames)
            return False
        if not rates.producer_byte_rate or not _is_produce_reply(frames[1]):
            return False
        now_s = self._clock_s()
        over_s = self._meter(key, PRODUCE, rates.producer_byte_rate).over_s(now_s)
        client = frames[0].bytes
        release_s = _release_s(self._replies_until_s, client, now_s, over_s)
        if release_s is None or len(self._held) >= limits.QUOTA_HELD_MAX:
            return False
        _say_throttle_time(frames, release_s - now_s)
        self._replies_until_s[client] = release_s
        self._push(release_s, ("reply", shard_id, frames))
        return True

    def _count_fetched(self, key: str, rates: QuotaRates, frames: list) -> None:
        now_s = self._clock_s()
        meter = self._meter(key, FETCH, rates.consumer_byte_rate)
        meter.count(len(frames[2]), now_s)
        over_s = meter.over_s(now_s)
        if over_s > 0:
            _say_throttle_time(frames, min(over_s, _HOLD_S_MAX))

    # --- Releasing ---------------------------------------------------------------------

    def due(self) -> list[HeldReply | HeldRequest]:
        """What is held and due now, oldest release first; the caller relays or forwards it."""
        if not self._held:
            return []
        now_s = self._clock_s()
        released = []
        while self._held and self._held[0][0] <= now_s:
            release_s, _, item = heapq.heappop(self._held)
            if item[0] == "request":
                self._forget_request(item[1], release_s)
            else:
                _forget_until(self._replies_until_s, item[2][0].bytes, release_s)
            released.append(item)
        return released

    def wait_ms(self) -> int | None:
        """Milliseconds until the next release (0: due now), or None if nothing is held."""
        if not self._held:
            return None
        return max(0, int((self._held[0][0] - self._clock_s()) * 1000) + 1)

    def _forget_request(self, frames: list, release_s: float) -> None:
        client = frames[0].bytes
        left = self._requests_held.get(client, 0) - 1
        if left > 0:
            self._requests_held[client] = left
        else:
            self._requests_held.pop(client, None)
        self._payload_bytes_held -= sum(len(frame) for frame in frames[2:])
        _forget_until(self._requests_until_s, client, release_s)

    def _push(self, release_s: float, item) -> None:
        heapq.heappush(self._held, (release_s, next(self._order), item))

    # --- State -------------------------------------------------------------------------

    def _remember(self, client: bytes, key: str) -> None:
        self._key_of[client] = key
        self._key_of.move_to_end(client)
        if len(self._key_of) > limits.QUOTA_CLIENTS_TRACKED_MAX:
            self._key_of.popitem(last=False)

    def _meter(self, key: str, direction: str, byte_rate: int) -> _Meter:
        meter = self._meters.get((key, direction))
        if meter is None or meter.seconds_per_byte != 1.0 / byte_rate:   # new, or reloaded
            meter = self._meters[(key, direction)] = _Meter(byte_rate)
        return meter


def _release_s(until_s: dict[bytes, float], client: bytes, now_s: float,
               over_s: float) -> float | None:
    """When to release a client's reply or request: after ``over_s`` (at most the
    longest hold), and not before the client's last one held; None: at once."""
    after_s = until_s.get(client)
    if over_s <= 0 and after_s is None:
        return None
    release_s = now_s + min(max(over_s, 0.0), _HOLD_S_MAX)
    return release_s if after_s is None else max(release_s, after_s)


def _forget_until(until_s: dict[bytes, float], client: bytes, release_s: float) -> None:
    """The client's last held item is gone: nothing of it is held any more."""
    if until_s.get(client) == release_s:
        del until_s[client]


def _cap_fetch_bytes(frames: list, request: protocol.FetchRequest, byte_rate: int) -> None:
    """Ask for at most a burst's worth of the key's quota (``frames[1]`` rewritten)."""
    bytes_max = max(1, int(byte_rate * _BURST_S))
    if request.bytes_max == 0 or request.bytes_max > bytes_max:   # 0: the shard's default
        frames[1] = zmq.Frame(protocol_hot.encode_fetch(
            request.request_id, request.topic, request.partition, request.offset, bytes_max,
            request.wait_ms_max))


def _is_produce_reply(header: zmq.Frame) -> bool:
    hot = protocol_hot.decode_reply(header.buffer)
    return hot is not None and hot[1] == "produce"


def _say_throttle_time(frames: list, throttle_s: float) -> None:
    """Write the throttle time into the reply header ``frames[1]`` (a zmq.Frame)."""
    patched = reply_header.with_throttle_time(frames[1].buffer, round(throttle_s * 1000))
    if patched is not None:
        frames[1] = zmq.Frame(patched)
