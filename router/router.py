"""The router: the broker's front door.

Runs in the server process (``plinth serve``), in two threads:

- The loop thread owns every socket. Clients' DEALERs connect to its ROUTER
  socket; it keeps one DEALER connected to each shard's ROUTER. It decodes
  only the small Request header of each message, finds the shard that owns
  (topic, partition) in its routing table, and forwards the frames untouched
  and uncopied (``copy=False``); shard replies come back on the DEALER with
  the client's identity first and are relayed as they are. It never blocks
  on Ray.
- The admin thread makes the control calls to the controller actor (create,
  delete, list and describe topics, metadata, routing refreshes) and hands
  their results back to the loop over an inproc socket.

Ordering. Requests for a topic the routing table does not know yet are held,
in arrival order, until the admin thread has asked the controller about the
topic, then forwarded in that order, so a client's pipelined requests to one
partition reach its shard in the order they were sent.

Bounds. Every socket has a high-water mark; when a shard's queue is full the
client gets ``tooManyRequests`` at once instead of the router buffering.
Requests held for resolution and admin requests are bounded too, and so are
the bytes of fetch replies waiting for clients that do not read them
(``unsent_replies.py``).
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections import OrderedDict

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import limits, protocol
from plinth.control import placement
from plinth.control.controller_handle import ControllerHandle
from plinth.control.routing_table import RoutingTable
from plinth.errors import (BrokerError, MalformedRequestError, NotAuthorizedError,
                           PartitionOutOfRangeError, RecordTooLargeError, TooManyRequestsError,
                           UnavailableError, UnknownTopicError)
from plinth.router.unsent_replies import UnsentReplies

log = logging.getLogger(__name__)

ADMIN_QUEUED_MAX = 1000
HELD_PER_TOPIC_MAX = 1000
UNKNOWN_TOPIC_TTL_S = 1.0
UNKNOWN_TOPICS_REMEMBERED_MAX = 10_000
_ADMIN_ADDRESS_FORMAT = "inproc://plinth-router-admin-{}"


class Router:
    """Construct, ``start()`` and ``stop()`` from the server's main thread."""

    def __init__(self, listen: str, controller: ControllerHandle,
                 context: zmq.Context | None = None, security=None):
        self.listen = listen
        self._security = security   # router.security.Security, or None for plaintext
        self.controller = controller
        self._context = context or zmq.Context.instance()
        self._admin_queue: queue.Queue = queue.Queue(maxsize=ADMIN_QUEUED_MAX)
        self._admin_address = _ADMIN_ADDRESS_FORMAT.format(id(self))
        self._routing = RoutingTable()
        self._backends: dict[str, tuple[str, zmq.Socket]] = {}  # shard id -> (address, DEALER)
        self._shard_of_socket: dict[zmq.Socket, str] = {}
        # Connection monitors of the shard DEALERs: a shard whose connection dropped
        # (its process or node died) is down until it reconnects or moves.
        self._monitor_of: dict[zmq.Socket, str] = {}
        self._monitor_socket: dict[str, zmq.Socket] = {}
        self._down: set[str] = set()
        self._held: dict[str, list] = {}                    # topic -> frames awaiting routing
        self._unknown: OrderedDict[str, float] = OrderedDict()  # topic -> forget-at time
        # shard id -> client id -> requests forwarded and not yet answered. Per shard,
        # so that a shard restarting (its requests lost) can be forgotten whole.
        self._in_flight: dict[str, dict[bytes, int]] = {}
        self._unsent = UnsentReplies()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- Lifecycle ---------------------------------------------------------------

    def start(self, routing: RoutingTable) -> None:
        """Bind the front socket and start both threads. ``routing``: the controller's."""
        self._frontend = self._context.socket(zmq.ROUTER)
        self._frontend.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        self._frontend.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        self._frontend.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        self._frontend.setsockopt(zmq.LINGER, 0)
        if self._security is not None:
            self._security.start(self._context)
            self._security.apply(self._frontend)
        try:
            self._frontend.bind(self.listen)
        except zmq.ZMQError as exc:
            self._frontend.close()
            raise OSError(f"cannot listen on {self.listen}: {exc}") from None
        self._admin_pull = self._context.socket(zmq.PULL)
        self._admin_pull.bind(self._admin_address)
        self._apply_routing(routing)
        for target, name in ((self._run, "router-loop"), (self._run_admin, "router-admin")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._admin_queue.put(None)
        for thread in self._threads:
            thread.join(10)
        if self._security is not None:
            self._security.stop()

    # --- Loop thread ---------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._frontend, zmq.POLLIN)
        poller.register(self._admin_pull, zmq.POLLIN)
        registered: set = set()
        next_refresh_s = time.monotonic() + limits.ROUTING_REFRESH_INTERVAL_S
        while not self._stopping.is_set():
            if time.monotonic() >= next_refresh_s:
                # Picks up shards that restarted at a new address.
                self._submit_admin(None, ("resolve", None))
                self._unsent.sweep()
                next_refresh_s = time.monotonic() + limits.ROUTING_REFRESH_INTERVAL_S
            for sock in self._shard_of_socket:
                if sock not in registered:
                    poller.register(sock, zmq.POLLIN)
                    registered.add(sock)
            for sock, _ in poller.poll(200):
                if sock is self._frontend:
                    self._drain(self._frontend, self._on_request)
                elif sock is self._admin_pull:
                    self._drain(self._admin_pull, self._on_admin_result)
                elif sock in self._monitor_of:
                    self._on_monitor_event(sock)
                else:
                    shard_id = self._shard_of_socket[sock]
                    self._drain(sock, lambda frames: self._on_shard_reply(shard_id, frames))
            registered = self._forget_closed(poller, registered)
        self._close_sockets()

    def _on_monitor_event(self, monitor: zmq.Socket) -> None:
        """A shard connection came up or went down: its partitions follow."""
        shard_id = self._monitor_of[monitor]
        for _ in range(64):
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED:
                self._down.add(shard_id)
            elif event in (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED):
                self._down.discard(shard_id)

    def _forget_closed(self, poller: zmq.Poller, registered: set) -> set:
        live = {backend for _, backend in self._backends.values()}
        live |= {monitor for monitor, shard_id in self._monitor_of.items()
                 if self._backends[shard_id][1] in live and self._monitor_socket[shard_id] is monitor}
        for sock in registered - live:
            poller.unregister(sock)
            self._shard_of_socket.pop(sock, None)
            self._monitor_of.pop(sock, None)
            sock.close(linger=0)
        return registered & live

    def _close_sockets(self) -> None:
        for monitor in self._monitor_of:
            monitor.close(linger=0)
        for _, backend in self._backends.values():
            backend.close(linger=0)
        self._frontend.close(linger=0)
        self._admin_pull.close(linger=0)

    @staticmethod
    def _drain(sock: zmq.Socket, handle, batch_max: int = 256) -> None:
        for _ in range(batch_max):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            handle(frames)

    def _on_request(self, frames: list) -> None:
        if len(frames) < 2:
            log.warning("router: dropped a message of %d frame(s) with no header", len(frames))
            return
        client_id, header = frames[0], frames[1]
        try:
            request = protocol.decode_request(header.buffer)
        except BrokerError as exc:   # malformed, or a header over its limit
            self._reply(client_id, protocol.encode_error(0, exc))
            return
        if self._security is not None:
            try:
                self._security.authorize(header, request)
            except NotAuthorizedError as exc:
                self._reply(client_id, protocol.encode_error(request.request_id, exc))
                return
        if isinstance(request, protocol.PARTITION_REQUESTS):
            self._route(frames, request)
        elif isinstance(request, protocol.GROUP_REQUESTS):
            self._route_group(frames, request)
        else:
            self._submit_admin(client_id, ("request", client_id.bytes, request))

    def _route(self, frames: list, request) -> None:
        """A produce, fetch or listOffsets: to the shard holding the partition."""
        client_id = frames[0]
        topic, partition = request.topic, request.partition
        partition_count = self._routing.partition_count(topic)
        if partition_count is None:
            self._hold(frames, request)
            return
        if partition >= partition_count:
            self._reply(client_id, protocol.encode_error(request.request_id, PartitionOutOfRangeError(
                f"partition {partition} of topic {topic!r} does not exist: "
                f"it has {partition_count} partitions (0 to {partition_count - 1})")))
            return
        if type(request) is protocol.ProduceRequest and len(frames) > 2 and \
                len(frames[2]) > limits.BATCH_BYTES_MAX:
            self._reply(client_id, protocol.encode_error(request.request_id, RecordTooLargeError(
                f"batch of {len(frames[2])} bytes for {topic}-{partition} is over "
                f"the limit of {limits.BATCH_BYTES_MAX} bytes")))
            return
        if type(request) is protocol.FetchRequest:
            self._forward(self._routing.holder(topic, partition, request.offset), frames, request)
        elif type(request) is protocol.ListOffsetsRequest and \
                self._routing.spans_shards(topic, partition):   # the controller merges them
            self._submit_admin(client_id, ("request", client_id.bytes, request))
        else:
            self._forward(self._routing.owner(topic, partition), frames, request)

    def _route_group(self, frames: list, request) -> None:
        """Forward to the shard coordinating the group: rendezvous hash of its name."""
        if not self._routing.shard_ids:
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                "no shard is known to coordinate groups")))
            return
        shard_id = placement.shard_for_group(request.group, list(self._routing.shard_ids))
        self._forward(shard_id, frames, request)

    def _forward(self, shard_id: str, frames: list, request) -> None:
        client = frames[0].bytes
        # acks=0 produces get no reply
        counted = not (type(request) is protocol.ProduceRequest and request.acks == 0)
        in_flight = sum(per_client.get(client, 0) for per_client in self._in_flight.values())
        if counted and in_flight >= limits.CLIENT_REQUESTS_IN_FLIGHT_MAX:
            self._reply(frames[0], protocol.encode_error(request.request_id, TooManyRequestsError(
                f"client has {in_flight} requests in flight, the limit is "
                f"{limits.CLIENT_REQUESTS_IN_FLIGHT_MAX}; wait for replies")))
            return
        if shard_id not in self._backends or shard_id in self._down:
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                f"{getattr(request, 'topic', None) or request.group}: its shard {shard_id} is unavailable (not "
                f"running or not connected; its node may be down); retry later")))
            return
        _, backend = self._backends[shard_id]
        try:
            backend.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._reply(frames[0], protocol.encode_error(request.request_id, TooManyRequestsError(
                f"{shard_id} has {limits.SOCKET_MESSAGES_HWM} requests queued; retry later")))
            return
        if counted:
            per_client = self._in_flight.setdefault(shard_id, {})
            per_client[client] = per_client.get(client, 0) + 1

    def _hold(self, frames: list, request) -> None:
        client_id = frames[0]
        forget_at = self._unknown.get(request.topic)
        if forget_at is not None and forget_at > time.monotonic():
            self._reply(client_id, protocol.encode_error(
                request.request_id, UnknownTopicError(f"unknown topic {request.topic!r}")))
            return
        held = self._held.get(request.topic)
        if held is None:
            self._held[request.topic] = [(frames, request)]
            self._submit_admin(client_id, ("resolve", request.topic))
        elif len(held) >= HELD_PER_TOPIC_MAX:
            self._reply(client_id, protocol.encode_error(request.request_id, TooManyRequestsError(
                f"{HELD_PER_TOPIC_MAX} requests already wait for topic {request.topic!r} to resolve")))
        else:
            held.append((frames, request))

    def _submit_admin(self, client_id, job: tuple) -> None:
        try:
            self._admin_queue.put_nowait(job)
        except queue.Full:
            if client_id is None:
                return   # a routing refresh; the next one will do
            request_id = job[2].request_id if job[0] == "request" else 0
            self._reply(client_id, protocol.encode_error(request_id, TooManyRequestsError(
                f"router admin queue is full ({ADMIN_QUEUED_MAX} requests)")))

    def _on_shard_reply(self, shard_id: str, frames: list) -> None:
        per_client = self._in_flight.get(shard_id, {})
        client = frames[0].bytes
        left = per_client.get(client, 0) - 1
        if left > 0:
            per_client[client] = left
        else:
            per_client.pop(client, None)
        if len(frames) > 2 and len(frames[2]) >= limits.REPLY_BYTES_TRACKED_MIN:
            self._relay_large_reply(client, frames)
            return
        try:
            self._frontend.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("router: reply dropped, client is not reading")

    def _relay_large_reply(self, client: bytes, frames: list) -> None:
        """Relay a fetch reply with data, tracked until it is written to the client's
        connection; a client (or router) over its unsent-bytes budget gets an error."""
        refused = self._unsent.over_budget(client)
        if refused is not None:
            request_id = protocol.decode_reply(frames[1].buffer).request_id
            self._reply(frames[0], protocol.encode_error(request_id, TooManyRequestsError(refused)))
            return
        # Buffers, not the received Frames: pyzmq tracks only messages it creates.
        tracker = self._frontend.send_multipart(
            [client, frames[1].bytes, frames[2].buffer], zmq.NOBLOCK, copy=False, track=True)
        self._unsent.add(client, tracker, len(frames[2]))

    def _on_admin_result(self, frames: list) -> None:
        result = pickle.loads(frames[0].bytes)
        if result[0] == "reply":
            _, client_id, reply = result
            self._reply(client_id, reply)
        elif result[0] == "routing":
            _, routing, topic = result
            self._apply_routing(routing)
            self._release_held(topic)

    def _release_held(self, topic: str | None) -> None:
        if topic is None:
            return
        known = self._routing.partition_count(topic) is not None
        if not known:
            self._unknown[topic] = time.monotonic() + UNKNOWN_TOPIC_TTL_S
            while len(self._unknown) > UNKNOWN_TOPICS_REMEMBERED_MAX:
                self._unknown.popitem(last=False)
        for frames, request in self._held.pop(topic, []):
            if known:
                self._route(frames, request)
            else:
                self._reply(frames[0], protocol.encode_error(
                    request.request_id, UnknownTopicError(f"unknown topic {topic!r}")))

    def _apply_routing(self, routing: RoutingTable | None) -> None:
        """Adopt the controller's routing table (loop thread, or start()); None (the
        controller did not answer) keeps the current one."""
        if routing is None:
            return
        self._routing = routing
        for topic in routing.owners:
            self._unknown.pop(topic, None)
        for shard_id, address in routing.shard_addresses.items():
            current = self._backends.get(shard_id)
            if current is not None and current[0] == address:
                continue
            backend = self._context.socket(zmq.DEALER)
            backend.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
            backend.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
            backend.setsockopt(zmq.LINGER, 0)
            monitor = backend.get_monitor_socket(
                zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            backend.connect(address)
            self._backends[shard_id] = (address, backend)
            self._shard_of_socket[backend] = shard_id
            self._shard_of_socket[monitor] = shard_id
            self._monitor_of[monitor] = shard_id
            self._monitor_socket[shard_id] = monitor
            self._down.discard(shard_id)   # a new address: up until it says otherwise
            # Requests sent to the shard's old address will never be answered.
            self._in_flight.pop(shard_id, None)

    def _reply(self, client_id, reply: bytes) -> None:
        try:
            self._frontend.send_multipart([client_id, reply], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("router: reply dropped, client is not reading")

    # --- Admin thread ---------------------------------------------------------------

    def _run_admin(self) -> None:
        push = self._context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._admin_address)
        try:
            while True:
                job = self._admin_queue.get()
                if job is None:
                    return
                for result in self._admin_job(job):
                    push.send_pyobj(result)
        finally:
            push.close()

    def _admin_job(self, job: tuple) -> list[tuple]:
        if job[0] == "resolve":
            return [("routing", self._routing_or_none(), job[1])]
        _, client_id, request = job
        try:
            reply, changed = self._admin_request(request)
        except BrokerError as exc:
            reply, changed = protocol.encode_error(request.request_id, exc), False
        results = [("reply", client_id, reply)]
        if changed:
            results.insert(0, ("routing", self._routing_or_none(), None))
        return results

    def _admin_request(self, request) -> tuple[bytes, bool]:
        """Answer one admin request; also say whether the routing table changed."""
        rid, controller = request.request_id, self.controller
        match request:
            case protocol.CreateTopicRequest(topic=topic, partitions=partitions, config=config):
                info = controller.create_topic(topic, partitions, config)
                return protocol.encode_topics_reply(rid, [info]), True
            case protocol.AlterTopicRequest(topic=topic, config=config):
                info = controller.alter_topic(topic, config)
                return protocol.encode_topics_reply(rid, [info]), False
            case protocol.DeleteTopicRequest(topic=topic):
                controller.delete_topic(topic)
                return protocol.encode_ok(rid), True
            case protocol.DescribeTopicRequest(topic=topic):
                return protocol.encode_topics_reply(rid, [controller.describe_topic(topic)]), False
            case protocol.ListOffsetsRequest(topic=topic, partition=partition):
                info = controller.partition_offsets(topic, partition)
                return protocol.encode_offsets_reply(rid, info), False
            case protocol.AddShardsRequest(shard_count=count):
                return protocol.encode_moves_reply(rid, controller.add_shards(count)), True
            case protocol.RemoveShardsRequest(shard_count=count):
                return protocol.encode_moves_reply(rid, controller.remove_shards(count)), True
            case protocol.StatusRequest():
                return protocol.encode_status_reply(rid, controller.status()), False
            case protocol.ListGroupsRequest():
                return protocol.encode_groups_reply(rid, controller.list_groups()), False
            case protocol.ListTopicsRequest():
                return protocol.encode_topics_reply(rid, controller.list_topics()), False
            case protocol.MetadataRequest(topics=names):
                infos = controller.list_topics()
                return protocol.encode_topics_reply(rid, self._only(infos, names) if names else infos), False
        raise MalformedRequestError(f"the router does not serve {request.kind} requests")

    @staticmethod
    def _only(infos: list, names: tuple[str, ...]) -> list:
        by_name = {info.name: info for info in infos}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise UnknownTopicError(f"unknown topic {missing[0]!r}")
        return [by_name[name] for name in names]

    def _routing_or_none(self) -> RoutingTable | None:
        try:
            return self.controller.routing()
        except BrokerError as exc:
            log.warning("router: the routing refresh failed: %s", exc)
            return None
