"""The router: the broker's front door.

Runs in the server process (``plinth serve``, or ``plinth router``), in two
threads:

- The loop thread owns every socket. Clients' DEALERs connect to its ROUTER
  socket; it keeps one DEALER connected to each shard's ROUTER
  (``shard_connections.py``). It decodes only the small Request header of each
  message, finds the shard that owns (topic, partition) in its routing table,
  and forwards the frames untouched and uncopied (``copy=False``); shard
  replies come back on the DEALER with the client's identity first and are
  relayed as they are. It never blocks on Ray.
- The admin bridge thread (``admin_bridge.py``) makes the control calls to the
  controller (admin requests, topic look-ups, routing refreshes) and hands
  typed results back to the loop through a bounded queue and a wake-up pipe.

Ordering. Requests for a topic the routing table does not know yet are held,
in arrival order, until a routing table that knows the topic arrives, then
forwarded in that order (``held_requests.py``), so a client's pipelined
requests to one partition reach its shard in the order they were sent.

Bounds. Every socket has a high-water mark; when a shard's queue is full the
client gets ``tooManyRequests`` at once instead of the router buffering. A
client may have ``CLIENT_REQUESTS_IN_FLIGHT_MAX`` requests at the shards.
Requests held for a topic and admin jobs are bounded too, and so are the bytes
of fetch replies waiting for clients that do not read them
(``unsent_replies.py``).
"""

from __future__ import annotations

import logging
import threading
import time

import zmq

from plinth import limits, protocol
from plinth.control import placement
from plinth.control.controller_handle import ControllerHandle
from plinth.control.routing_table import RoutingTable
from plinth.errors import (BrokerError, NotAuthorizedError, PartitionOutOfRangeError,
                           RecordTooLargeError, TooManyRequestsError, UnavailableError,
                           UnknownTopicError)
from plinth.router.admin_bridge import AdminBridge, AdminReply, RoutingUpdate
from plinth.router.held_requests import HeldRequests
from plinth.router.shard_connections import ShardConnections
from plinth.router.unsent_replies import UnsentReplies

log = logging.getLogger(__name__)


class Router:
    """Construct, ``start()`` and ``stop()`` from the server's main thread; everything
    else runs on the loop thread."""

    def __init__(self, listen: str, controller: ControllerHandle,
                 context: zmq.Context | None = None, security=None):
        self.listen = listen
        self._security = security   # router.security.Security, or None for plaintext
        self.controller = controller
        self._context = context or zmq.Context.instance()
        self._bridge = AdminBridge(controller)
        self._routing = RoutingTable()
        self._held = HeldRequests()
        # shard id -> client id -> requests forwarded and not yet answered. Per shard,
        # so that a shard restarting (its requests lost) can be forgotten whole.
        self._in_flight: dict[str, dict[bytes, int]] = {}
        self._unsent = UnsentReplies()
        self._stopping = threading.Event()
        self._loop_thread: threading.Thread | None = None

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
        self._poller = zmq.Poller()
        self._poller.register(self._frontend, zmq.POLLIN)
        self._poller.register(self._bridge.wakeup.fd, zmq.POLLIN)
        self._shards = ShardConnections(self._context, self._poller)
        self._apply_routing(routing)
        self._bridge.start()
        self._loop_thread = threading.Thread(target=self._run, name="router-loop", daemon=True)
        self._loop_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._loop_thread is not None:
            self._loop_thread.join(limits.ROUTER_STOP_WAIT_S)
        self._bridge.stop()
        if self._security is not None:
            self._security.stop()

    # --- Loop thread ---------------------------------------------------------------

    def _run(self) -> None:
        wakeup_fd = self._bridge.wakeup.fd
        next_sweep_s = time.monotonic() + limits.ROUTER_UNSENT_SWEEP_INTERVAL_S
        while not self._stopping.is_set():
            if time.monotonic() >= next_sweep_s:
                self._unsent.sweep()
                next_sweep_s = time.monotonic() + limits.ROUTER_UNSENT_SWEEP_INTERVAL_S
            for sock, _ in self._poller.poll(limits.ROUTER_POLL_TIMEOUT_MS):
                if sock is self._frontend:
                    self._drain(self._frontend, self._on_request)
                elif sock == wakeup_fd:
                    self._on_admin_results()
                else:
                    shard_id = self._shards.on_readable(sock)
                    if shard_id is not None:
                        self._drain(sock, lambda frames: self._on_shard_reply(shard_id, frames))
        self._shards.close()
        self._frontend.close(linger=0)

    @staticmethod
    def _drain(sock: zmq.Socket, handle) -> None:
        for _ in range(limits.ROUTER_SOCKET_READS_PER_ROUND_MAX):
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
            self._submit_admin(client_id, request)

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
            self._submit_admin(client_id, request)
        else:
            self._forward(self._routing.owner(topic, partition), frames, request)

    def _route_group(self, frames: list, request) -> None:
        """Forward to the shard coordinating the group: rendezvous hash of its name."""
        if not self._routing.shard_ids:
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                "no shard is known to coordinate groups")))
            return
        shard_id = placement.shard_for_group(request.group, list(self._routing.shard_ids))
        # The client's key goes last, for the coordinator to tie members to it.
        client_key = frames[1].get("User-Id").encode() if self._security is not None else b""
        self._forward(shard_id, [*frames, client_key], request)

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
        dealer = self._shards.dealer_if_up(shard_id)
        if dealer is None:
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                f"{getattr(request, 'topic', None) or request.group}: its shard {shard_id} is "
                f"unavailable (not running or not connected; its node may be down); retry later")))
            return
        try:
            dealer.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._reply(frames[0], protocol.encode_error(request.request_id, TooManyRequestsError(
                f"{shard_id} has {limits.SOCKET_MESSAGES_HWM} requests queued; retry later")))
            return
        if counted:
            per_client = self._in_flight.setdefault(shard_id, {})
            per_client[client] = per_client.get(client, 0) + 1

    def _hold(self, frames: list, request) -> None:
        """Hold a request for a topic being looked up (starting the look-up if needed)."""
        client_id, topic = frames[0], request.topic
        if self._held.is_recently_unknown(topic):
            self._reply(client_id, protocol.encode_error(
                request.request_id, UnknownTopicError(f"unknown topic {topic!r}")))
            return
        if not self._held.is_waiting(topic) and not self._bridge.resolve_topic(topic):
            self._reply(client_id, protocol.encode_error(request.request_id, TooManyRequestsError(
                f"router admin queue is full ({limits.ROUTER_ADMIN_JOBS_QUEUED_MAX} jobs); "
                f"cannot look up topic {topic!r}")))
            return
        if not self._held.hold(topic, frames, request):
            self._reply(client_id, protocol.encode_error(request.request_id, TooManyRequestsError(
                f"{limits.ROUTER_HELD_REQUESTS_PER_TOPIC_MAX} requests already wait for topic "
                f"{topic!r} to resolve")))

    def _submit_admin(self, client_id, request) -> None:
        if not self._bridge.submit_request(client_id.bytes, request):
            self._reply(client_id, protocol.encode_error(request.request_id, TooManyRequestsError(
                f"router admin queue is full ({limits.ROUTER_ADMIN_JOBS_QUEUED_MAX} jobs)")))

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

    def _on_admin_results(self) -> None:
        for result in self._bridge.take_results():
            if type(result) is AdminReply:
                self._reply(result.client_id, result.reply)
            elif type(result) is RoutingUpdate:
                self._apply_routing(result.routing)
                self._release_held(result.resolved_topic)
            else:
                raise AssertionError(f"unknown admin bridge result {result!r}")

    def _release_held(self, resolved_topic: str | None) -> None:
        """Forward the requests held for every topic the routing table now knows; those
        for ``resolved_topic``, if it still does not, are answered unknownTopic."""
        for topic in self._held.topics():
            if self._routing.partition_count(topic) is not None:
                for frames, request in self._held.release(topic):
                    self._route(frames, request)
            elif topic == resolved_topic:
                self._held.remember_unknown(topic)
                for frames, request in self._held.release(topic):
                    self._reply(frames[0], protocol.encode_error(
                        request.request_id, UnknownTopicError(f"unknown topic {topic!r}")))

    def _apply_routing(self, routing: RoutingTable | None) -> None:
        """Adopt the controller's routing table (loop thread, or start()); None (the
        controller did not answer) keeps the current one."""
        if routing is None:
            return
        self._routing = routing
        self._held.forget_unknown(routing.owners)
        for shard_id in self._shards.apply(routing.shard_addresses):
            # Requests sent to the shard's old address will never be answered.
            self._in_flight.pop(shard_id, None)

    def _reply(self, client_id, reply: bytes) -> None:
        try:
            self._frontend.send_multipart([client_id, reply], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("router: reply dropped, client is not reading")
