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
- The admin bridge's two threads (``admin_bridge.py``) make the control calls to
  the controller (one the admin requests, the other the topic look-ups and
  routing refreshes, so that a slow describe never delays a new leader's table)
  and hand typed results back to the loop through a bounded queue and a wake-up
  pipe.

Leaders. A replicated partition's owner in the routing table is its leader.
When a shard answers notLeader (the leader changed since the table was made),
or a request's shard is down, the reply goes to the client, which retries (the
error is transient), and the router asks for a new table at once
(``AdminBridge.refresh_routing``, at most every
ROUTING_REFRESH_ON_DEMAND_INTERVAL_S), so the retry finds the new leader.
Requests that can no longer be answered are not left to their clients'
timeouts (30 s by default): when a shard's connection drops, or it moves, every
request forwarded to it is answered unavailable at once (``_answer_lost``), and
when a routing table shows that a shard no longer leads a partition (or a
group's slot), so are the requests waiting there for it (``_answer_deposed``,
requests_in_flight.py says why that is safe): a Kafka client's partitions
share one connection answered in order, so one stopped leader's requests would
hold every other partition's replies behind them.

Direct clients. A plaintext router on loopback names, in its metadata replies,
each partition's leader's direct socket (admin_bridge.py), where clients may
send produce and fetch without this hop (shards/shard_server.py); with
CurveZMQ (and so with an ACL) it names none, so that no request skips its
checks. Whatever a client sends here is served here as before.

Ordering. Requests for a topic the routing table does not know yet are held,
in arrival order, until a routing table that knows the topic arrives, then
forwarded in that order (``held_requests.py``), so a client's pipelined
requests to one partition reach its shard in the order they were sent.

Bounds. ZMQ_MAXMSGSIZE bounds each frame, not a message's frames. A header
that cannot be decoded (malformed, or over HEADER_BYTES_MAX) is answered with
its own requestId, read from the root struct alone (``request_id_of``), so that
its waiter hears at once; only where even that cannot be read (no root struct:
the client could not be waiting for any id) is the answer's id 0. The first
thing checked after the header is the frame count of its kind: one
payload frame (the RecordBatch) for a produce, none for anything else; any
other count is answered ``malformedRequest`` with the request's own id, and
its frames are dropped at once. Every socket has a high-water mark; when a
shard's queue is full the client gets ``tooManyRequests`` at once instead of
the router buffering. A client may have ``CLIENT_REQUESTS_IN_FLIGHT_MAX``
requests at the shards or held for their topic, and
``CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX`` of their bytes (every frame; one
request always goes when nothing of its client's is in flight), all clients
together ``ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX``. An acks=0 produce counts too,
apart from its client's other requests: it goes to the shard as acks=1, with a
marked identity frame, and is counted under that identity until the shard
answers, so that a client cannot make the router queue gigabytes of them behind
a slow shard; the answer reaches the client only if it is an error, and it
never frees a place in the client's own count (``requests_in_flight.py``).
Requests held for a topic are bounded in bytes per client
and per router (``held_requests.py``), admin jobs in number, and so are the
bytes of fetch replies waiting for clients that do not read them
(``unsent_replies.py``); a client whose replies make no progress for
``CLIENT_REPLIES_STALLED_MS_MAX`` is disconnected. At the process's open-file
limit, a connection the front socket cannot accept is a rate-limited WARNING
naming the limit (``accept_failures.py``), not a client's silent timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import capnp
import zmq

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.control.controller_handle import ControllerHandle
from plinth.control.routing_table import RoutingTable
from plinth.errors import (BrokerError, InvalidTopicError, MalformedReplyError,
                           MalformedRequestError, NotAuthorizedError, NotLeaderError,
                           PartitionOutOfRangeError, RecordTooLargeError, TooManyRequestsError,
                           UnavailableError, UnknownTopicError)
from plinth.router import reply_header
from plinth.router.accept_failures import AcceptFailures
from plinth.router.admin_bridge import AdminBridge, AdminReply, RoutingUpdate
from plinth.router.held_requests import HeldRequests
from plinth.router.quotas import Quotas
from plinth.router.requests_in_flight import (UNCOUNTED_MARK, FetchBytesInFlight,
                                             RequestsInFlight, Where, is_marked, mark, unmark)
from plinth.router.security import OffsetsFilter
from plinth.router.shard_connections import ShardConnections
from plinth.schemas import protocol as schema
from plinth.unsent_replies import UnsentReplies

log = logging.getLogger(__name__)

# A Request's root struct is 3 words (requestId and the union's tag, the body's
# pointer); reading its requestId reads no more, whatever follows it.
_ROOT_STRUCT_WORDS_MAX = 8


def request_id_of(frame) -> int:
    """The requestId of a Request header that could not be decoded whole (malformed, or
    over HEADER_BYTES_MAX), so that its refusal reaches the request's waiter; 0 if even
    the root struct cannot be read. Only the segment table and the root struct are read,
    in place (no copy), under a traversal limit of a few words: a header of any size up
    to FRAME_BYTES_MAX costs the same, and a crafted one cannot make it read more."""
    try:
        with schema.Request.from_bytes(frame, traversal_limit_in_words=_ROOT_STRUCT_WORDS_MAX,
                                       nesting_limit=1) as request:
            return request.requestId
    except (capnp.KjException, ValueError):   # no root struct; length not whole words
        return 0


def _is_error(kind: int | None, header) -> bool:
    """Whether a shard's Reply ``header`` (of union discriminant ``kind``, None if not in
    the canonical shape) is an error: one with a result never is, and is not decoded;
    one that is not a valid Reply counts as one (relayed as it is: the client decides)."""
    if kind not in (None, reply_header.NO_RESULT):
        return False
    try:
        return protocol.decode_reply(header.buffer).error is not None
    except MalformedReplyError:
        return True


class Router:
    """Construct, ``start()`` and ``stop()`` from the server's main thread; everything
    else runs on the loop thread."""

    def __init__(self, listen: str, controller: ControllerHandle,
                 context: zmq.Context | None = None, security=None, cluster_keys=None):
        self.listen = listen
        self._security = security   # router.security.Security, or None for plaintext
        self._cluster_keys = cluster_keys   # how to reach the shards (plinth/cluster_keys.py)
        self.controller = controller
        self._context = context or zmq.Context.instance()
        # Clients may go straight to the shards' direct sockets (plain TCP on 127.0.0.1)
        # only through a plaintext router on loopback: it checks nothing they could
        # skip, and its clients share the shards' 127.0.0.1.
        host = listen.split("://", 1)[-1].rsplit(":", 1)[0]
        self._bridge = AdminBridge(controller, advertise_direct=security is None and host in (
            "127.0.0.1", "localhost", "[::1]", "::1"))
        self._routing = RoutingTable()
        self._held = HeldRequests()
        self._in_flight = RequestsInFlight()
        self._fetch_bytes = FetchBytesInFlight()
        self._unsent = UnsentReplies("the router", limits.ROUTER_REPLY_BYTES_UNSENT_MAX)
        # The ACL's and quotas' hooks (_admit, _on_shard_reply_checked); None without them.
        acl = security.acl if security is not None else None
        self._offsets_filter = OffsetsFilter() if acl is not None else None
        self._quotas = Quotas(acl) if acl is not None and acl.has_quotas else None
        if self._quotas is not None:   # a reloaded ACL's quotas apply from then on
            security.on_reload(self._quotas.use_acl)
        self._stopping = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self.in_process_url: str | None = None   # set by start() on a plaintext router
        # The error replies this router made (its own refusals, and the controller's
        # answers to admin requests), by code: the metrics' plinth_errors_total beside
        # the shards' own. Counted on the loop thread; read by the metrics thread.
        self._errors: Counter[str] = Counter()

    @property
    def security(self):
        """The router's router.security.Security (its ``reload`` on SIGHUP), or None."""
        return self._security

    def errors(self) -> dict[str, int]:
        """The error replies this router made since it started, by code (the shards'
        relayed ones are theirs to count; notAuthorized is Security's, which counts the
        Kafka listener's refusals too). Any thread (the metrics endpoint's)."""
        return dict(self._errors)

    def memory_bytes(self) -> dict[str, tuple[int, int]]:
        """What this router holds against its budgets, by kind: (bytes now, the limit).
        Any thread (the metrics endpoint's reads the loop thread's counts as they are)."""
        return {
            "requests_in_flight": (self._in_flight.total_bytes + self._held.total_bytes,
                                   limits.ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX),
            "requests_held": (self._held.total_bytes, limits.ROUTER_REQUEST_BYTES_HELD_MAX),
            "replies_unsent": (self._unsent.total_bytes, limits.ROUTER_REPLY_BYTES_UNSENT_MAX),
        }

    @property
    def context(self) -> zmq.Context:
        """The ZeroMQ context of the router's sockets (``in_process_url`` is in it)."""
        return self._context

    @property
    def routing(self) -> RoutingTable:
        """The routing table the loop uses now (replaced whole, never changed in place:
        any thread may read it, e.g. the Kafka listener's brokers)."""
        return self._routing

    # --- Lifecycle ---------------------------------------------------------------

    def start(self, routing: RoutingTable) -> None:
        """Bind the front socket and start both threads. ``routing``: the controller's."""
        self._frontend = self._context.socket(zmq.ROUTER)
        self._frontend.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        self._frontend.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        self._frontend.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        self._frontend.setsockopt(zmq.LINGER, 0)
        # A client whose replies make no progress this long is disconnected (the
        # kernel's TCP_USER_TIMEOUT), and the replies it held are freed.
        self._frontend.setsockopt(zmq.TCP_MAXRT, limits.CLIENT_REPLIES_STALLED_MS_MAX)
        if self._security is not None:
            self._security.start(self._context)
            self._security.apply(self._frontend)
        try:
            self._frontend.bind(self.listen)
        except zmq.ZMQError as exc:
            self._frontend.close()
            raise OSError(f"cannot listen on {self.listen}: {exc}") from None
        if self._security is None:
            # The Kafka listener in this process reaches a plaintext router here, with
            # no TCP hop and no copy: inproc hands the frames over. Not beside CurveZMQ:
            # inproc has no handshake, so a request would carry no key for the ACL.
            self.in_process_url = f"inproc://plinth-router-{id(self):x}"
            self._frontend.bind(self.in_process_url)
        self._poller = zmq.Poller()
        self._poller.register(self._frontend, zmq.POLLIN)
        # At the open-file limit, accepts fail silently but for this (accept_failures.py)
        self._accept_failures = AcceptFailures(self._frontend)
        self._poller.register(self._accept_failures.monitor, zmq.POLLIN)
        self._poller.register(self._bridge.wakeup.fd, zmq.POLLIN)
        self._shards = ShardConnections(self._context, self._poller, self._cluster_keys)
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
                self._answer_held_too_long(time.monotonic())
                next_sweep_s = time.monotonic() + limits.ROUTER_UNSENT_SWEEP_INTERVAL_S
            if self._quotas is not None:
                self._release_throttled()
            for sock, _ in self._poller.poll(self._poll_timeout_ms()):
                if sock is self._frontend:
                    self._drain(self._frontend, self._on_request)
                elif sock == wakeup_fd:
                    self._on_admin_results()
                elif sock is self._accept_failures.monitor:
                    self._accept_failures.on_readable()
                else:
                    shard_id = self._shards.on_readable(sock)
                    if shard_id is not None:
                        self._drain(sock, lambda frames: self._on_shard_reply_checked(shard_id, frames))
                    else:   # a connection's monitor: it may have dropped
                        for lost in self._shards.take_lost():
                            self._answer_lost(lost, "lost its connection (its process or node "
                                                    "may have died)")
        self._shards.close()
        self._accept_failures.close()
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
            self._reply(client_id, protocol.encode_error(request_id_of(header.buffer), exc))
            return
        if not self._has_its_frames(frames, request):
            return
        if self._security is not None and not self._admit(frames, request):
            return
        if isinstance(request, protocol.PARTITION_REQUESTS):
            self._route(frames, request)
        elif isinstance(request, protocol.GROUP_REQUESTS):
            self._route_group(frames, request)
        else:
            self._submit_admin(client_id, request)

    def _has_its_frames(self, frames: list, request) -> bool:
        """Whether a request has the payload frames of its kind (one for a produce, none
        for the others); if not, it is answered malformed, with its own id."""
        try:
            protocol.check_payload_frames(request, frames[2:])
        except MalformedRequestError as exc:
            self._reply(frames[0], protocol.encode_error(request.request_id, exc))
            return False
        return True

    def _route(self, frames: list, request) -> None:
        """A produce, fetch, listOffsets or deleteRecords: to the shard holding the partition."""
        client_id = frames[0]
        topic, partition = request.topic, request.partition
        if type(request) in (protocol.ProduceRequest, protocol.DeleteRecordsRequest) and \
                topic == topics.OFFSETS_TOPIC:
            # (as Kafka refuses DeleteRecords of an internal topic: the groups' state is
            # rebuilt from the whole log)
            self._reply(client_id, protocol.encode_error(request.request_id, InvalidTopicError(
                f"topic {topic!r} is internal (the consumer groups' committed offsets); "
                f"clients may not {'produce to' if request.kind == 'produce' else 'delete from'} "
                f"it")))
            return
        if type(request) is protocol.ProduceRequest and len(frames[2]) > limits.BATCH_BYTES_MAX:
            self._reply(client_id, protocol.encode_error(request.request_id, RecordTooLargeError(
                f"batch of {len(frames[2])} bytes for {topic}-{partition} is over "
                f"the limit of {limits.BATCH_BYTES_MAX} bytes")))
            return
        partition_count = self._routing.partition_count(topic)
        if partition_count is None:
            self._hold(frames, request)
            return
        if partition >= partition_count:
            self._reply(client_id, protocol.encode_error(request.request_id, PartitionOutOfRangeError(
                f"partition {partition} of topic {topic!r} does not exist: "
                f"it has {partition_count} partitions (0 to {partition_count - 1})")))
            return
        if type(request) is protocol.FetchRequest:
            self._forward(self._fetch_shard(topic, partition, request.offset), frames, request,
                          ("fetch", topic, partition, request.offset))
        elif type(request) is protocol.ListOffsetsRequest and \
                self._routing.spans_shards(topic, partition):   # the controller merges them
            self._submit_admin(client_id, request)
        elif type(request) is protocol.DeleteRecordsRequest and \
                self._routing.spans_shards(topic, partition):
            # Its older ranges' shards would go on serving below the floor.
            self._reply(client_id, protocol.encode_error(request.request_id, MalformedRequestError(
                f"deleteRecords of {topic}-{partition} is not supported yet: its history "
                f"spans shards (its writes moved with plinth shards add/remove), and only "
                f"its current shard would keep the new log start offset")))
        else:
            self._forward(self._routing.owner(topic, partition), frames, request,
                          (request.kind, topic, partition, None))

    def _fetch_shard(self, topic: str, partition: int, offset: int) -> str:
        """The shard to fetch ``offset`` from: of a sealed range held by several replicas,
        the first this router is connected to (a sealed range stays readable while one
        of them is up); otherwise (or if none is up) the one holding it."""
        holders = self._routing.holders(topic, partition, offset)
        if len(holders) > 1:
            for shard_id in holders:
                if self._shards.is_up(shard_id):
                    return shard_id
        return holders[0]

    def _route_group(self, frames: list, request) -> None:
        """Forward to the shard coordinating the group: the leader of its slot of the
        internal topic (replicated offsets), else the rendezvous hash of its name."""
        if not self._routing.shard_ids:
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                "no shard is known to coordinate groups")))
            return
        slot = self._routing.group_slot(request.group)
        if slot is None:
            shard_id = placement.shard_for_group(request.group, list(self._routing.shard_ids))
        else:   # replicated offsets: the leader of the group's slot coordinates it
            shard_id = self._routing.owner(topics.OFFSETS_TOPIC, slot)
            if not shard_id:
                self._bridge.refresh_routing()
                self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                    f"group {request.group!r}: {topics.OFFSETS_TOPIC}-{slot}, which holds its "
                    f"offsets, has no leader (none of its in-sync replicas is up); retry later")))
                return
        # The client's key goes last, for the coordinator to tie members to it.
        client_key = frames[1].get("User-Id").encode() if self._security is not None else b""
        # (a hashed group's coordinator leads nothing a routing table could move)
        where = None if slot is None else (request.kind, topics.OFFSETS_TOPIC, slot, None)
        self._forward(shard_id, [*frames, client_key], request, where)

    def _forward(self, shard_id: str, frames: list, request, where: Where | None = None
                 ) -> None:
        """Send the request to ``shard_id``, or answer it with why not. ``where``: the
        partition it waits for there (requests_in_flight.Where; a group request's: its
        slot of the offsets topic), to be answered at once if a routing table deposes
        ``shard_id`` (``_answer_deposed``); None: nothing can depose it. Loop thread.

        An acks=0 produce goes to the shard as acks=1, with its client's identity
        marked, and is counted under the marked identity until the shard answers
        (``_on_shard_reply``): so its bytes are bounded as every other request's are,
        and its reply never frees a place in its client's own count."""
        client = frames[0].bytes
        if is_marked(client):
            self._reply(frames[0], protocol.encode_error(request.request_id, MalformedRequestError(
                f"a client's identity may not start with {UNCOUNTED_MARK!r}: the router "
                f"marks requests with it")))
            return
        acks_zero = type(request) is protocol.ProduceRequest and request.acks == 0
        if acks_zero:   # answered by the shard, as acks=1; the router keeps the answer
            frames = [frames[0], protocol.encode_produce(
                request.request_id, request.topic, request.partition, 1, request.batch_format),
                *frames[2:]]
            counted_as = mark(client)
        else:
            counted_as = client
        size_bytes = sum(len(frame) for frame in frames[1:])
        refusal = self._in_flight_refusal(counted_as, request.request_id, size_bytes)
        is_fetch = type(request) is protocol.FetchRequest
        if refusal is None and is_fetch:
            why = self._fetch_bytes.refusal(client, request.request_id, request.bytes_max)
            refusal = None if why is None else TooManyRequestsError(why)
        if refusal is not None:
            self._reply(frames[0], protocol.encode_error(request.request_id, refusal))
            return
        if not shard_id:   # a replicated partition without a leader
            self._bridge.refresh_routing()
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                f"{request.topic}-{request.partition} has no leader (offline: none of its "
                f"in-sync replicas is up); retry later")))
            return
        dealer = self._shards.dealer_if_up(shard_id)
        if dealer is None:
            self._bridge.refresh_routing()   # its partitions may have a new leader already
            self._reply(frames[0], protocol.encode_error(request.request_id, UnavailableError(
                f"{getattr(request, 'topic', None) or request.group}: its shard {shard_id} is "
                f"unavailable (not running or not connected; its node may be down); retry later")))
            return
        try:
            dealer.send_multipart([counted_as, *frames[1:]] if acks_zero else frames,
                                  zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._reply(frames[0], protocol.encode_error(request.request_id, TooManyRequestsError(
                f"{shard_id} has {limits.SOCKET_MESSAGES_HWM} requests queued; retry later")))
            return
        self._in_flight.forwarded(shard_id, counted_as, request.request_id, where, size_bytes)
        if is_fetch:
            self._fetch_bytes.forwarded(shard_id, client, request.request_id, request.bytes_max)

    def _in_flight_refusal(self, client: bytes, request_id: int | None = None,
                           size_bytes: int = 0) -> BrokerError | None:
        """Why ``client`` may not have one more request (``request_id``, if it goes to a
        shard now, of ``size_bytes``, every frame) at the shards or held, or None. A
        marked ``client`` is its client's acks=0 produces, counted apart."""
        reused = None if request_id is None else self._in_flight.refusal(client, request_id)
        if reused is not None:
            return MalformedRequestError(reused)
        what, then = (("acks=0 produces", "retry once its shard has stored them")
                      if is_marked(client) else ("requests", "wait for replies"))
        in_flight = self._in_flight.count(client) + self._held.count_for(client)
        if in_flight >= limits.CLIENT_REQUESTS_IN_FLIGHT_MAX:
            return TooManyRequestsError(
                f"client has {in_flight} {what} in flight, the limit is "
                f"{limits.CLIENT_REQUESTS_IN_FLIGHT_MAX}; {then}")
        held_bytes = self._in_flight.bytes_for(client) + self._held.bytes_for(client)
        if held_bytes and held_bytes + size_bytes > limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX:
            return TooManyRequestsError(
                f"client has {held_bytes} bytes of {what} in flight; with this one "
                f"({size_bytes} bytes) it would be over its limit of "
                f"{limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX} bytes; {then}")
        total_bytes = self._in_flight.total_bytes + self._held.total_bytes
        if total_bytes and total_bytes + size_bytes > limits.ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX:
            return TooManyRequestsError(
                f"the router has {total_bytes} bytes of its clients' requests in flight; with "
                f"this one ({size_bytes} bytes) it would be over its limit of "
                f"{limits.ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX} bytes; retry later")
        return None

    def _hold(self, frames: list, request) -> None:
        """Hold a request for a topic being looked up (starting the look-up if needed),
        within its client's requests in flight and the held requests' budgets."""
        client_id, topic = frames[0], request.topic
        if self._held.is_recently_unknown(topic):
            self._reply(client_id, protocol.encode_error(
                request.request_id, UnknownTopicError(f"unknown topic {topic!r}")))
            return
        client = client_id.bytes
        size_bytes = sum(len(frame) for frame in frames)
        refusal = self._in_flight_refusal(client, size_bytes=size_bytes)
        if refusal is None:
            why = self._held.refusal(topic, client, size_bytes)
            refusal = None if why is None else TooManyRequestsError(why)
        if refusal is None and not self._held.is_waiting(topic) and \
                not self._bridge.resolve_topic(topic):
            refusal = TooManyRequestsError(
                f"router admin queue is full ({limits.ROUTER_ADMIN_JOBS_QUEUED_MAX} jobs); "
                f"cannot look up topic {topic!r}")
        if refusal is not None:
            self._reply(client_id, protocol.encode_error(request.request_id, refusal))
            return
        self._held.hold(topic, frames, request, client, size_bytes)

    def _submit_admin(self, client_id, request, grants=None) -> None:
        refusal = self._bridge.submit_request(client_id.bytes, request, grants)
        if refusal is not None:
            self._reply(client_id, protocol.encode_error(request.request_id,
                                                         TooManyRequestsError(refusal)))

    def _on_shard_reply(self, shard_id: str, frames: list) -> None:
        """A shard's reply: uncount its request, and relay it. Loop thread."""
        kind = reply_header.kind_code(frames[1].buffer)
        if kind == reply_header.NO_RESULT:
            self._refresh_if_misrouted(frames[1])
        client = frames[0].bytes
        request_id = reply_header.request_id(frames[1].buffer)
        if request_id is None:   # not the canonical shape: decode it whole (rare)
            request_id = protocol.decode_reply(frames[1].buffer).request_id
        # Not counted: a late answer to a request answered when its shard was deposed
        # (the client may have reused its id since: its counts are not this one's)
        counted = self._in_flight.answered(shard_id, client, request_id)
        if is_marked(client):   # an acks=0 produce's: its client hears of failures only
            if counted and _is_error(kind, frames[1]):   # (a deposed one's, once)
                self._relay([unmark(client), *frames[1:]])
            return
        if counted and self._fetch_bytes.bytes_for(client):
            self._fetch_bytes.answered(client, request_id)
        if len(frames) > 2 and len(frames[2]) >= limits.REPLY_BYTES_TRACKED_MIN:
            self._relay_large_reply(client, frames)
            return
        self._relay(frames)

    def _refresh_if_misrouted(self, header) -> None:
        """A shard that answers notLeader no longer leads the partition the routing
        table sent the request to, one that answers unknownTopic deleted its topic
        (shards/deleted_partitions.py): fetch the new table now (the client retries, or
        asks for metadata, and is answered by it)."""
        try:
            error = protocol.decode_reply(header.buffer).error
        except MalformedReplyError:   # not a valid Reply: relayed as it is; the client decides
            return
        if type(error) is NotLeaderError or type(error) is UnknownTopicError:
            self._bridge.refresh_routing()

    def _relay(self, frames: list) -> None:
        try:
            self._frontend.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("router: reply dropped, client is not reading")

    def _relay_large_reply(self, client: bytes, frames: list) -> None:
        """Relay a fetch reply with data, tracked until it is written to the client's
        connection; a reply that would take the client (or router) past its unsent-bytes
        budget becomes an error."""
        refused = self._unsent.send(self._frontend, client, frames[1].bytes, frames[2].buffer)
        if refused is not None:
            request_id = protocol.decode_reply(frames[1].buffer).request_id
            self._reply(frames[0], protocol.encode_error(request_id, TooManyRequestsError(refused)))

    def _on_admin_results(self) -> None:
        for result in self._bridge.take_results():
            if type(result) is AdminReply:
                self._reply(result.client_id, result.reply)
            elif type(result) is RoutingUpdate:
                if result.routing is None:   # the controller did not answer
                    if result.resolved_topic is not None:
                        self._held.lookup_failed(result.resolved_topic)
                    continue
                self._apply_routing(result.routing)
                self._release_held(result.resolved_topic)
            else:
                raise AssertionError(f"unknown admin bridge result {result!r}")

    def _release_held(self, resolved_topic: str | None) -> None:
        """Forward the requests held for every topic the routing table now knows. Those
        for ``resolved_topic``, or for a topic whose look-up failed (this table came
        after it), are answered unknownTopic if the table does not know it either."""
        for topic in self._held.topics():
            if self._routing.partition_count(topic) is not None:
                for held in self._held.release(topic):
                    self._route(held.frames, held.request)
            elif topic == resolved_topic or not self._held.is_lookup_pending(topic):
                self._held.remember_unknown(topic)
                for held in self._held.release(topic):
                    self._reply(held.frames[0], protocol.encode_error(
                        held.request.request_id, UnknownTopicError(f"unknown topic {topic!r}")))

    def _answer_held_too_long(self, now_s: float) -> None:
        """Answer unavailable (retriable) the requests held ROUTER_REQUEST_HELD_S_MAX:
        no routing table has come from the controller meanwhile."""
        for held in self._held.expired(now_s):
            self._reply(held.frames[0], protocol.encode_error(
                held.request.request_id, UnavailableError(
                    f"topic {held.request.topic!r}: the controller has not answered its "
                    f"look-up within {limits.ROUTER_REQUEST_HELD_S_MAX} s; retry later")))

    def _apply_routing(self, routing: RoutingTable | None) -> None:
        """Adopt the controller's routing table (loop thread, or start()); None (the
        controller did not answer) keeps the current one."""
        if routing is None:
            return
        before, self._routing = self._routing, routing
        self._held.forget_unknown(routing.owners)
        for shard_id in self._shards.apply(routing.shard_addresses):
            self._answer_lost(shard_id, "moved to a new address (it restarted)")
        # (checking every request in flight takes ~20 ms at 65,536 of them: only for a
        # table that moved a partition, not one that changed addresses or brokers alone)
        if routing.owners != before.owners or routing.ranges != before.ranges:
            self._answer_deposed()

    def _serves(self, shard_id: str, where: Where) -> bool:
        """Whether ``shard_id`` still serves what a request waiting there waits for
        (requests_in_flight.Where), by the routing table now: it leads the partition (a
        fetch: holds its offset). A topic the table no longer has: left to the shard."""
        _, topic, partition, offset = where
        owners = self._routing.owners.get(topic)
        if owners is None:
            return True
        if partition >= len(owners):   # (the table shrank the internal topic)
            return False
        if offset is None:
            return owners[partition] == shard_id
        return shard_id in self._routing.holders(topic, partition, offset)

    def _answer_deposed(self) -> None:
        """Answer unavailable (retriable: a Kafka client's NOT_LEADER_OR_FOLLOWER) the
        requests waiting at a shard that no longer leads their partition or their
        group's slot, or holds their fetch's offset (requests_in_flight.py says why each
        kind is safe to answer so). A late answer from that shard counts nothing: an
        acks=0 produce's is dropped, any other relayed (``_on_shard_reply``)."""
        for shard_id, client, request_id, where in self._in_flight.deposed(self._serves):
            kind, topic, partition, _ = where
            if is_marked(client):   # an acks=0 produce: its client hears of it, once
                client = unmark(client)
            else:
                self._fetch_bytes.answered(client, request_id)   # (a parked fetch's)
            stored = ("; it may or may not have been stored (an idempotent producer's "
                      "retry is deduplicated)" if kind == "produce" else "")
            self._reply(client, protocol.encode_error(request_id, UnavailableError(
                f"{kind} request {request_id}: {topic}-{partition} is no longer led by "
                f"{shard_id}, which has not answered{stored}; retry at its new leader")))

    def _answer_lost(self, shard_id: str, why: str) -> None:
        """Answer unavailable (retriable) every request in flight at ``shard_id``, which
        will never answer them: its connection dropped, or it moved (either way its
        DEALER is new, so none of them can still reach it). At once, rather than after
        each client's request timeout: the partitions it led have a new leader within
        seconds, and consumers and members retry at the next leader or coordinator.
        The request may have been applied or not; a client's retry is safe (an
        idempotent producer's is deduplicated)."""
        self._fetch_bytes.forget_shard(shard_id)
        lost = self._in_flight.forget_shard(shard_id)
        if lost:
            self._bridge.refresh_routing()
        for client, request_id in lost:   # an acks=0 produce's client hears of it too
            self._reply(unmark(client) if is_marked(client) else client, protocol.encode_error(
                request_id, UnavailableError(
                    f"{shard_id} {why} with this request in flight; it may or may not have "
                    f"been applied; retry")))

    def _reply(self, client_id, reply: bytes) -> None:
        """Send a reply the router made (not a shard's: those are relayed), counting it
        by code if it is an error."""
        self._count_error(reply)
        try:
            self._frontend.send_multipart([client_id, reply], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("router: reply dropped, client is not reading")

    def _count_error(self, reply: bytes) -> None:
        # Only a reply with no result (an error, or a plain ok) is decoded: a result
        # (topics, offsets...) is never an error, and is read no further.
        if reply_header.kind_code(reply) not in (None, reply_header.NO_RESULT):
            return
        try:
            error = protocol.decode_reply(reply).error
        except MalformedReplyError:
            return
        if error is not None and type(error) is not NotAuthorizedError:
            self._errors[error.code_name] += 1

    # --- ACL and quotas (router/security.py, router/quotas.py) -------------------------

    def _admit(self, frames: list, request) -> bool:
        """Check a request against the allow-list, the ACL and the quotas; False if it
        was answered or held here."""
        client_id = frames[0]
        if not self._security.is_admitted(frames[1]):   # its key was removed since it connected
            self._reply(client_id, protocol.encode_error(request.request_id, NotAuthorizedError(
                f"client key {(frames[1].get('User-Id') or '')[:8]}... is no longer in "
                f"--authorized-keys {self._security.authorized_keys_dir} (removed since this "
                f"connection was made, and reloaded)")))
            return False
        if self._security.acl is None:   # CurveZMQ alone: every authenticated client may
            return True
        key = self._security.client_key(frames[1])
        try:
            grants = self._security.authorize(key, request)
            if grants is not None and type(request) in (
                    protocol.ListGroupsRequest, protocol.ListTopicsRequest, protocol.MetadataRequest,
                    protocol.ListGroupsPageRequest, protocol.ListTopicsPageRequest):
                self._submit_admin(client_id, request, grants)   # answered cut to its grants
                return False
            if grants is not None and type(request) is protocol.FetchOffsetsRequest:
                self._offsets_filter.expect(client_id.bytes, request.request_id, grants)
            if self._quotas is not None:
                return self._quotas.on_request(client_id.bytes, key, frames, request)
        except (NotAuthorizedError, TooManyRequestsError) as exc:
            self._reply(client_id, protocol.encode_error(request.request_id, exc))
            return False
        return True

    def _on_shard_reply_checked(self, shard_id: str, frames: list) -> None:
        """A shard's reply, cut to what its client may see and held while the client
        is over its quota, then relayed."""
        if self._offsets_filter is not None:
            self._offsets_filter.cut(frames)
        if self._quotas is not None and self._quotas.on_reply(shard_id, frames):
            return
        self._on_shard_reply(shard_id, frames)

    def _release_throttled(self) -> None:
        """Relay the replies and forward the requests whose throttle time is over."""
        for item in self._quotas.due():
            if item[0] == "reply":
                self._on_shard_reply(item[1], item[2])
            else:
                self._route(item[1], item[2])

    def _poll_timeout_ms(self) -> int:
        wait_ms = self._quotas.wait_ms() if self._quotas is not None else None
        return limits.ROUTER_POLL_TIMEOUT_MS if wait_ms is None else \
            min(wait_ms, limits.ROUTER_POLL_TIMEOUT_MS)
