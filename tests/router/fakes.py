"""The router's neighbours, faked so that they speak the real protocol.

- ``FakeShard``: a real ZeroMQ ROUTER socket on 127.0.0.1, in its own thread,
  that receives what the router forwards (router identity, client identity,
  Request header, payload) and answers with real Reply frames, as a shard does.
- ``FakeController``: a plain object with the ControllerHandle methods the
  router calls, returning real RoutingTable / TopicInfo / ... values from a
  small in-memory metadata; its routing calls can be held at a gate to stand
  for a slow controller.
- ``Client``: a real DEALER socket, as a client library has (a CurveZMQ client when
  given keys).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import NamedTuple

import zmq

from plinth import protocol
from plinth.control.routing_table import RoutingTable
from plinth.errors import (RequestTimedOutError, TopicExistsError, UnavailableError,
                           UnknownTopicError, UnknownTopicIdError)
from plinth.name_pages import NamesPage, page_of
from plinth.topics import new_topic_id

WAIT_S = 10.0   # the bound on every wait in these tests


def answer(request: protocol.Request, shard_id: str) -> list[bytes]:
    """A shard's reply to ``request``, in real Reply frames: produce and fetch replies
    carry no records; listOffsets names the shard; group requests get their offsets."""
    rid = request.request_id
    match request:
        case protocol.ProduceRequest():
            return [protocol.encode_produce_reply(rid, 0)]
        case protocol.FetchRequest():
            return [protocol.encode_fetch_reply(rid, 0, 0)]
        case protocol.ListOffsetsRequest(partition=partition):
            return [protocol.encode_offsets_reply(rid, protocol.PartitionInfo(partition, shard_id))]
    return [protocol.encode_committed_reply(rid, {})]


class FakeShard:
    """``handler(request) -> reply frames, or None for no reply`` (default: ``answer``).
    With ``holding`` set, requests wait unanswered until ``release``. ``reading=False``
    leaves every request in the socket's queues."""

    def __init__(self, shard_id: str, port: int | None = None, handler=None, *,
                 reading: bool = True, receive_hwm: int | None = None):
        self.shard_id = shard_id
        self.handler = handler or (lambda request: answer(request, shard_id))
        self.holding = False
        self.received: list[tuple[bytes, protocol.Request, int]] = []  # (client, request, payload bytes)
        self._held: list[tuple[bytes, bytes, protocol.Request]] = []   # (router, client, request)
        self._releases = 0
        self._arrived = threading.Condition()
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if receive_hwm is not None:
            self._socket.setsockopt(zmq.RCVHWM, receive_hwm)
            self._socket.setsockopt(zmq.RCVBUF, 64 * 1024)
        if port is None:
            port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        else:
            self._socket.bind(f"tcp://127.0.0.1:{port}")
        self.port = port
        self.address = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run if reading else self._stop.wait,
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._socket.poll(20):
                self._receive()
            self._answer_released()

    def _receive(self) -> None:
        router, client, header, *payload = self._socket.recv_multipart()
        request = protocol.decode_request(header)
        with self._arrived:
            self.received.append((client, request, sum(map(len, payload))))
            self._arrived.notify_all()
            if self.holding:
                self._held.append((router, client, request))
                return
        self._send(router, client, request)

    def _answer_released(self) -> None:
        with self._arrived:
            count = min(self._releases, len(self._held))
            released, self._held = self._held[:count], self._held[count:]
            self._releases -= count
        for router, client, request in released:
            self._send(router, client, request)

    def _send(self, router: bytes, client: bytes, request: protocol.Request) -> None:
        reply = self.handler(request)
        if reply is not None:
            self._socket.send_multipart([router, client, *reply])

    def release(self, count: int) -> None:
        """Answer the ``count`` oldest held requests (with the handler), in order."""
        with self._arrived:
            self._releases += count

    def requests(self) -> list[protocol.Request]:
        with self._arrived:
            return [request for _, request, _ in self.received]

    def wait_for_requests(self, count: int) -> list[protocol.Request]:
        """The first ``count`` requests received, once they are there."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= count, WAIT_S):
                raise AssertionError(f"{self.shard_id} received {len(self.received)} requests "
                                     f"within {WAIT_S} s, not {count}")
            return [request for _, request, _ in self.received[:count]]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self._socket.close(linger=0)


class FakeController:
    """Topics (name -> partitions), each partition owned by a shard chosen round-robin
    unless ``owners`` says; ``ranges`` as RoutingTable.ranges."""

    def __init__(self, shard_addresses: dict[str, str], topics: dict[str, int] | None = None,
                 owners: dict[str, tuple[str, ...]] | None = None, ranges=None):
        self.shard_addresses = dict(shard_addresses)
        self.shard_ids = tuple(shard_addresses)
        self.topics: dict[str, protocol.TopicInfo] = {}
        self.owners: dict[str, tuple[str, ...]] = {}
        self.ranges = dict(ranges or {})
        self.groups = ["audit"]
        self.group_states: dict[str, str] = {}        # list_groups' states; else "Empty"
        self.groups_unanswered: list[str] = []        # shards list_groups_page lacks
        self.time_lookups: list[int] = []             # partition_offsets' timestamp_ms, in order
        self.remote_not_listed = ""                   # partition_offsets' remote_not_listed
        self.replication_factors: dict[str, int] = {}   # topic -> the factor it was created with
        self.fail_with: Exception | None = None      # raised by every admin call
        self._gate = threading.Condition()
        self._routing_permits: int | None = None      # routing calls allowed; None: any
        self.routing_failures: int = 0                # routing calls to fail from now on
        self.routing_waiting = 0
        self.routing_calls = 0                        # answered
        self._admin_held = False                      # admin calls wait until allowed
        self._topics_held: set[str] = set()           # so do describes of these topics
        self.admin_waiting = 0
        self.change_deadlines: list[float | None] = []   # each change's deadline_unix_s
        for name, partitions in (topics or {}).items():
            self.add_topic(name, partitions, (owners or {}).get(name))

    # --- Test controls ----------------------------------------------------------

    def add_topic(self, name: str, partitions: int, owners: tuple[str, ...] | None = None) -> None:
        with self._gate:
            self.topics[name] = protocol.TopicInfo(name, partitions, {},
                                                   topic_id=new_topic_id())
            self.owners[name] = owners or tuple(self.shard_ids[p % len(self.shard_ids)]
                                                for p in range(partitions))

    def hold_routing(self) -> None:
        """From now on, routing calls wait until ``allow_routing``."""
        with self._gate:
            self._routing_permits = 0

    def allow_routing(self, calls: int | None = None) -> None:
        """Let ``calls`` more routing calls through (None: every one, from now on)."""
        with self._gate:
            self._routing_permits = calls
            self._gate.notify_all()

    def fail_routing(self, calls: int) -> None:
        """The next ``calls`` routing calls raise UnavailableError (the controller is
        down); 0 makes them answer again."""
        with self._gate:
            self.routing_failures = calls

    def wait_for_routing_calls(self, count: int) -> None:
        """Until ``count`` routing calls have been answered."""
        with self._gate:
            if not self._gate.wait_for(lambda: self.routing_calls >= count, WAIT_S):
                raise AssertionError(f"{self.routing_calls} routing calls answered within "
                                     f"{WAIT_S} s, not {count}")

    def hold_admin(self, topic: str | None = None) -> None:
        """From now on, admin calls (all but routing; given ``topic``, only the calls
        that describe it: describe, alter, delete) wait until ``allow_admin``."""
        with self._gate:
            if topic is None:
                self._admin_held = True
            else:
                self._topics_held.add(topic)

    def allow_admin(self) -> None:
        with self._gate:
            self._admin_held = False
            self._topics_held.clear()
            self._gate.notify_all()

    def wait_for_admin_call(self) -> None:
        """Until an admin call waits at its gate."""
        with self._gate:
            if not self._gate.wait_for(lambda: self.admin_waiting > 0, WAIT_S):
                raise AssertionError(f"no admin call within {WAIT_S} s")

    def wait_for_routing_call(self) -> None:
        """Until a routing call waits at the gate."""
        with self._gate:
            if not self._gate.wait_for(lambda: self.routing_waiting > 0, WAIT_S):
                raise AssertionError(f"no routing call within {WAIT_S} s")

    # --- ControllerHandle's methods ------------------------------------------------

    def routing(self, known: RoutingTable | None = None) -> RoutingTable:
        """``known`` if it is still the table (as the controller answers), else a new one."""
        with self._gate:
            self.routing_waiting += 1
            self._gate.notify_all()
            allowed = self._gate.wait_for(
                lambda: self._routing_permits is None or self._routing_permits > 0, WAIT_S)
            self.routing_waiting -= 1
            if not allowed:
                raise RequestTimedOutError("the fake controller's routing gate stayed shut")
            if self._routing_permits is not None:
                self._routing_permits -= 1
            self.routing_calls += 1
            self._gate.notify_all()
            if self.routing_failures > 0:
                self.routing_failures -= 1
                raise UnavailableError("the fake controller is down")
            table = RoutingTable(dict(self.shard_addresses), self.shard_ids, dict(self.owners),
                                 dict(self.ranges), version=(0, self.routing_calls))
            # The controller's answer to a caller that has the current table: that one.
            if known is not None and replace(known, version=table.version) == table:
                return known
            return table

    def create_topic(self, name: str, partitions: int, config: dict[str, str],
                     replication_factor: int = 0, *, deadline_unix_s: float | None = None
                     ) -> protocol.TopicInfo:
        self.change_deadlines.append(deadline_unix_s)
        self._maybe_fail()
        self.replication_factors[name] = replication_factor
        if name in self.topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        self.add_topic(name, partitions)
        self.topics[name].config = dict(config)
        return self.topics[name]

    def alter_topic(self, name: str, changes: dict[str, str],
                    delete_config: tuple[str, ...] = (), *,
                    deadline_unix_s: float | None = None) -> protocol.TopicInfo:
        self.change_deadlines.append(deadline_unix_s)
        info = self.describe_topic(name)
        for key in delete_config:
            info.config.pop(key, None)
        info.config.update(changes)
        return info

    def delete_topic(self, name: str, topic_id: str = "", *,
                     deadline_unix_s: float | None = None) -> None:
        self.change_deadlines.append(deadline_unix_s)
        info = self.describe_topic(name)
        if topic_id and topic_id != info.topic_id:
            raise UnknownTopicIdError(f"topic {name!r} has topic id {info.topic_id} now, "
                                      f"not {topic_id}")
        with self._gate:
            del self.topics[name], self.owners[name]

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        self._maybe_fail(name)
        if name not in self.topics:
            raise UnknownTopicError(f"unknown topic {name!r}")
        return self.topics[name]

    def list_topics(self) -> list[protocol.TopicInfo]:
        self._maybe_fail()
        return sorted(self.topics.values(), key=lambda info: info.name)

    def partition_offsets(self, topic: str, partition: int,
                          timestamp_ms: int = protocol.NO_TIME_LOOKUP) -> protocol.PartitionInfo:
        self._maybe_fail()
        self.time_lookups.append(timestamp_ms)
        return protocol.PartitionInfo(partition, "controller", 0, 150,
                                      remote_not_listed=self.remote_not_listed)

    def add_shards(self, count: int, *, deadline_unix_s: float | None = None
                   ) -> list[protocol.PartitionMove]:
        self.change_deadlines.append(deadline_unix_s)
        self._maybe_fail()
        return [protocol.PartitionMove("t", 0, "shard-0", f"shard-{len(self.shard_ids)}", 7)]

    def remove_shards(self, count: int, *, deadline_unix_s: float | None = None
                      ) -> list[protocol.PartitionMove]:
        self.change_deadlines.append(deadline_unix_s)
        self._maybe_fail()
        return []

    def status(self) -> protocol.StatusInfo:
        self._maybe_fail()
        return protocol.StatusInfo([("node-1", "127.0.0.1", True)], [], [])

    def list_groups(self) -> list[protocol.GroupListing]:
        self._maybe_fail()
        return [protocol.GroupListing(name, self.group_states.get(name, "Empty"))
                for name in self.groups]

    def list_topics_page(self, prefix: str, after: str, limit: int) -> NamesPage:
        self._maybe_fail()
        return page_of(sorted(self.topics), prefix, after, limit)

    def list_groups_page(self, prefix: str, after: str, limit: int) -> NamesPage:
        self._maybe_fail()
        return replace(page_of(sorted(self.groups), prefix, after, limit),
                       unanswered=list(self.groups_unanswered))

    def _maybe_fail(self, topic: str | None = None) -> None:
        """Every admin call's start (of one about ``topic``): wait while admin calls (or
        those about ``topic``) are held, then raise ``fail_with`` if set."""
        with self._gate:
            self.admin_waiting += 1
            self._gate.notify_all()
            allowed = self._gate.wait_for(
                lambda: not self._admin_held and topic not in self._topics_held, WAIT_S)
            self.admin_waiting -= 1
        if not allowed:
            raise RequestTimedOutError("the fake controller's admin gate stayed shut")
        if self.fail_with is not None:
            raise self.fail_with


class CurveKeys(NamedTuple):
    """A client's CurveZMQ key pair and the server's public key (Z85)."""

    public: bytes
    secret: bytes
    server_public: bytes


class Client:
    """A client's DEALER connected to the router; ``receive_hwm`` and a small receive
    buffer make it a client that stops reading; ``curve`` makes it a CurveZMQ client;
    ``routing_id`` is the identity it asks the router's socket to know it by."""

    def __init__(self, url: str, receive_hwm: int | None = None, curve: CurveKeys | None = None,
                 routing_id: bytes | None = None):
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:   # chosen by the client, not the router's socket
            self.socket.setsockopt(zmq.ROUTING_ID, routing_id)
        if receive_hwm is not None:
            self.socket.setsockopt(zmq.RCVHWM, receive_hwm)
            self.socket.setsockopt(zmq.RCVBUF, 64 * 1024)
        if curve is not None:
            self.socket.curve_publickey, self.socket.curve_secretkey = curve.public, curve.secret
            self.socket.curve_serverkey = curve.server_public
        self.socket.connect(url)

    def send(self, header: bytes, payload: bytes | None = None) -> None:
        self.socket.send_multipart([header] if payload is None else [header, payload])

    def recv(self, timeout_s: float = WAIT_S) -> tuple[protocol.ReplyView, bytes | None]:
        """The next reply (view, payload or None); AssertionError if none comes in time."""
        if not self.socket.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no reply within {timeout_s} s")
        frames = self.socket.recv_multipart()
        return protocol.decode_reply(frames[0]), (frames[1] if len(frames) > 1 else None)

    def request(self, header: bytes, payload: bytes | None = None) -> protocol.ReplyView:
        self.send(header, payload)
        return self.recv()[0]

    def has_reply(self, timeout_s: float) -> bool:
        return bool(self.socket.poll(int(timeout_s * 1000)))

    def close(self) -> None:
        self.socket.close(linger=0)


def wait_for_reply(client: Client, make_header, accept, attempts_max: int = 200):
    """Send ``make_header(attempt)`` until a reply satisfies ``accept(view)`` (each
    attempt waits up to 0.5 s for its reply); returns that reply."""
    deadline = time.monotonic() + WAIT_S
    for attempt in range(attempts_max):
        client.send(make_header(attempt))
        while client.has_reply(0.5):
            view, _ = client.recv()
            if accept(view):
                return view
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no accepted reply after {attempt + 1} attempts")


def send_one_maximal_produce_too_many(client, acks: int):
    """Send maximal produces with ``acks`` (a batch of BATCH_BYTES_MAX each) to a shard that
    holds them, one more than fit the client's request bytes, and read the refusal of the
    last: returns (how many fit, the batch, the refusal's ReplyView)."""
    from plinth import limits

    batch = bytes(limits.BATCH_BYTES_MAX)
    fit = limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX // (len(batch) + 1)   # each with a header
    for request_id in range(1, fit + 2):
        client.send(protocol.encode_produce(request_id, "t", 0, acks), batch)
    view, _ = client.recv()
    return fit, batch, view


def holding_shard_under_a_router_budget_of_three_batches(router_rig, monkeypatch):
    """A rig whose router may hold three maximal batches with their headers
    (ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX), topic t on shard-0, which holds every request
    unanswered: returns (rig, that shard, a maximal batch, the budget)."""
    from plinth import limits

    batch = bytes(limits.BATCH_BYTES_MAX)
    limit = 3 * (len(batch) + 1024)
    monkeypatch.setattr(limits, "ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX", limit)
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    return rig, shard, batch, limit
