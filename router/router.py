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

import bisect
import logging
import pickle
import queue
import threading
import time
from collections import OrderedDict

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import limits, placement, protocol
from plinth.errors import (BrokerError, InternalError, MalformedRequestError, NotAuthorizedError,
                           PartitionOutOfRangeError, RecordTooLargeError, RequestTimedOutError,
                           TooManyRequestsError, UnavailableError, UnknownTopicError)
from plinth.router.unsent_replies import UnsentReplies

log = logging.getLogger(__name__)

ADMIN_QUEUED_MAX = 1000
HELD_PER_TOPIC_MAX = 1000
UNKNOWN_TOPIC_TTL_S = 1.0
UNKNOWN_TOPICS_REMEMBERED_MAX = 10_000
_ADMIN_ADDRESS_FORMAT = "inproc://plinth-router-admin-{}"


class Router:
    """Construct, ``start()`` and ``stop()`` from the server's main thread."""

    def __init__(self, listen: str, controller, context: zmq.Context | None = None,
                 security=None, controller_lookup=None):
        self.listen = listen
        self._security = security   # router.security.Security, or None for plaintext
        self._controller = controller
        # Finds the controller again after it died (a standalone router outlives
        # restarts of its server); raises ValueError while there is none.
        self._controller_lookup = controller_lookup
        self._context = context or zmq.Context.instance()
        self._admin_queue: queue.Queue = queue.Queue(maxsize=ADMIN_QUEUED_MAX)
        self._admin_address = _ADMIN_ADDRESS_FORMAT.format(id(self))
        self._routes: dict[str, list[str]] = {}           # topic -> shard id per partition
        # topic -> partition -> [[start offset, shard id], ...] for partitions that moved:
        # a fetch goes to the shard holding its offset.
        self._ranges: dict[str, dict[int, list]] = {}
        self._backends: dict[str, tuple[str, zmq.Socket]] = {}  # shard id -> (address, DEALER)
        self._shard_of_socket: dict[zmq.Socket, str] = {}
        self._shard_ids: list[str] = []    # every shard, running or not: groups hash over them
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

    @property
    def controller(self):
        """The controller's current handle (replaced when it is found again)."""
        return self._controller

    # --- Lifecycle ---------------------------------------------------------------

    def start(self, routing: dict) -> None:
        """Bind the front socket and start both threads. ``routing``: controller.routing()."""
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
            view = protocol.decode_request(header.buffer)
        except MalformedRequestError as exc:
            self._reply(client_id, protocol.encode_error(0, exc))
            return
        if self._security is not None:
            try:
                self._security.authorize(header, view)
            except NotAuthorizedError as exc:
                self._reply(client_id, protocol.encode_error(view.request_id, exc))
                return
        if view.kind in protocol.PARTITION_KINDS:
            self._route(frames, view)
        elif view.kind in protocol.GROUP_KINDS:
            self._route_group(frames, view)
        else:
            self._submit_admin(client_id, ("request", client_id.bytes, view))

    def _route(self, frames: list, view: protocol.RequestView) -> None:
        client_id = frames[0]
        owners = self._routes.get(view.topic)
        if owners is None:
            self._hold(frames, view)
            return
        if view.partition >= len(owners):
            self._reply(client_id, protocol.encode_error(view.request_id, PartitionOutOfRangeError(
                f"partition {view.partition} of topic {view.topic!r} does not exist: "
                f"it has {len(owners)} partitions (0 to {len(owners) - 1})")))
            return
        if view.kind == "produce" and len(frames) > 2 and len(frames[2]) > limits.BATCH_BYTES_MAX:
            self._reply(client_id, protocol.encode_error(view.request_id, RecordTooLargeError(
                f"batch of {len(frames[2])} bytes for {view.topic}-{view.partition} is over "
                f"the limit of {limits.BATCH_BYTES_MAX} bytes")))
            return
        moved = self._ranges.get(view.topic, {}).get(view.partition)
        if moved is None:
            self._forward(owners[view.partition], frames, view)
        elif view.kind == "fetch":
            starts = [start for start, _ in moved]
            holder = moved[max(0, bisect.bisect_right(starts, view.offset) - 1)][1]
            self._forward(holder, frames, view)
        elif view.kind == "listOffsets":   # spans shards: the controller merges them
            self._submit_admin(client_id, ("request", client_id.bytes, view))
        else:
            self._forward(owners[view.partition], frames, view)

    def _route_group(self, frames: list, view: protocol.RequestView) -> None:
        """Forward to the shard coordinating the group: rendezvous hash of its name."""
        if not self._shard_ids:
            self._reply(frames[0], protocol.encode_error(view.request_id, UnavailableError(
                "no shard is known to coordinate groups")))
            return
        shard_id = placement.shard_for_group(view.group, self._shard_ids)
        self._forward(shard_id, frames, view)

    def _forward(self, shard_id: str, frames: list, view: protocol.RequestView) -> None:
        client = frames[0].bytes
        counted = not (view.kind == "produce" and view.acks == 0)   # those get no reply
        in_flight = sum(per_client.get(client, 0) for per_client in self._in_flight.values())
        if counted and in_flight >= limits.CLIENT_REQUESTS_IN_FLIGHT_MAX:
            self._reply(frames[0], protocol.encode_error(view.request_id, TooManyRequestsError(
                f"client has {in_flight} requests in flight, the limit is "
                f"{limits.CLIENT_REQUESTS_IN_FLIGHT_MAX}; wait for replies")))
            return
        if shard_id not in self._backends or shard_id in self._down:
            self._reply(frames[0], protocol.encode_error(view.request_id, UnavailableError(
                f"{view.topic or view.group}: its shard {shard_id} is unavailable (not "
                f"running or not connected; its node may be down); retry later")))
            return
        _, backend = self._backends[shard_id]
        try:
            backend.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._reply(frames[0], protocol.encode_error(view.request_id, TooManyRequestsError(
                f"{shard_id} has {limits.SOCKET_MESSAGES_HWM} requests queued; retry later")))
            return
        if counted:
            per_client = self._in_flight.setdefault(shard_id, {})
            per_client[client] = per_client.get(client, 0) + 1

    def _hold(self, frames: list, view: protocol.RequestView) -> None:
        client_id = frames[0]
        forget_at = self._unknown.get(view.topic)
        if forget_at is not None and forget_at > time.monotonic():
            self._reply(client_id, protocol.encode_error(
                view.request_id, UnknownTopicError(f"unknown topic {view.topic!r}")))
            return
        held = self._held.get(view.topic)
        if held is None:
            self._held[view.topic] = [(frames, view)]
            self._submit_admin(client_id, ("resolve", view.topic))
        elif len(held) >= HELD_PER_TOPIC_MAX:
            self._reply(client_id, protocol.encode_error(view.request_id, TooManyRequestsError(
                f"{HELD_PER_TOPIC_MAX} requests already wait for topic {view.topic!r} to resolve")))
        else:
            held.append((frames, view))

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
        if topic not in self._routes:
            self._unknown[topic] = time.monotonic() + UNKNOWN_TOPIC_TTL_S
            while len(self._unknown) > UNKNOWN_TOPICS_REMEMBERED_MAX:
                self._unknown.popitem(last=False)
        for frames, view in self._held.pop(topic, []):
            if topic in self._routes:
                self._route(frames, view)
            else:
                self._reply(frames[0], protocol.encode_error(
                    view.request_id, UnknownTopicError(f"unknown topic {topic!r}")))

    def _apply_routing(self, routing: dict) -> None:
        """Adopt the controller's routing table (loop thread, or start())."""
        self._routes = routing["topics"]
        self._ranges = routing.get("ranges", self._ranges)
        self._shard_ids = routing.get("shard_ids", self._shard_ids)
        for topic in routing["topics"]:
            self._unknown.pop(topic, None)
        for shard_id, address in routing["shards"].items():
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
            routing = self._control_or_none("routing")
            return [("routing", routing or {"shards": {}, "topics": self._routes}, job[1])]
        _, client_id, view = job
        try:
            reply, changed = self._admin_request(view)
        except BrokerError as exc:
            reply, changed = protocol.encode_error(view.request_id, exc), False
        results = [("reply", client_id, reply)]
        if changed:
            routing = self._control_or_none("routing")
            if routing is not None:
                results.insert(0, ("routing", routing, None))
        return results

    def _admin_request(self, view: protocol.RequestView) -> tuple[bytes, bool]:
        """Answer one admin request; also say whether the routing table changed."""
        rid = view.request_id
        if view.kind == "createTopic":
            info = self._control("create_topic", view.topic,
                                 view.partition_count, view.config)
            return protocol.encode_topics_reply(rid, [info]), True
        if view.kind == "alterTopic":
            info = self._control("alter_topic", view.topic, view.config)
            return protocol.encode_topics_reply(rid, [info]), False
        if view.kind == "deleteTopic":
            self._control("delete_topic", view.topic)
            return protocol.encode_ok(rid), True
        if view.kind == "describeTopic":
            info = self._control("describe_topic", view.topic)
            return protocol.encode_topics_reply(rid, [info]), False
        if view.kind == "listOffsets":
            info = self._control("partition_offsets", view.topic, view.partition)
            return protocol.encode_offsets_reply(rid, info), False
        if view.kind in ("addShards", "removeShards"):
            change = "add_shards" if view.kind == "addShards" else "remove_shards"
            moves = self._control(change, view.partition_count)
            return protocol.encode_moves_reply(rid, moves), True
        if view.kind == "status":
            return protocol.encode_status_reply(rid, self._control("status")), False
        if view.kind == "listGroups":
            return protocol.encode_groups_reply(rid, self._control("list_groups")), False
        if view.kind in ("listTopics", "metadata"):
            infos = self._control("list_topics")
            if view.kind == "metadata" and view.topics:
                infos = self._only(infos, view.topics)
            return protocol.encode_topics_reply(rid, infos), False
        raise MalformedRequestError(f"unknown request kind {view.kind!r}")

    @staticmethod
    def _only(infos: list, names: list[str]) -> list:
        by_name = {info.name: info for info in infos}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise UnknownTopicError(f"unknown topic {missing[0]!r}")
        return [by_name[name] for name in names]

    def _control_or_none(self, method: str, *args):
        try:
            return self._control(method, *args)
        except BrokerError as exc:
            log.warning("router: control call %s failed: %s", method, exc)
            return None

    def _control(self, method: str, *args):
        """Call the controller's ``method`` through Ray; re-raise its BrokerErrors as
        they are. A dead controller (its server restarted) is looked up again by name,
        once per call, if this router was given a way to."""
        import ray

        try:
            return self._call_controller(method, *args)
        except ray.exceptions.RayActorError:
            if self._controller_lookup is None:
                raise UnavailableError("the broker's controller is gone (its server stopped)") from None
        try:
            self._controller = self._controller_lookup()
        except ValueError:
            raise UnavailableError("the broker's controller is not running (is its server "
                                   "restarting?); retry later") from None
        log.info("router: found the broker's controller again")
        return self._call_controller(method, *args)

    def _call_controller(self, method: str, *args):
        import ray

        try:
            return ray.get(getattr(self._controller, method).remote(*args),
                           timeout=limits.CONTROL_CALL_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise RequestTimedOutError(
                f"the controller did not answer within {limits.CONTROL_CALL_TIMEOUT_S} s") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BrokerError):
                raise cause from None
            raise InternalError(f"controller failed: {cause or exc}") from None
        except ray.exceptions.RayActorError:
            raise
        except ray.exceptions.RayError as exc:
            raise InternalError(f"controller unreachable: {exc}") from None
