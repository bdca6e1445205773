"""DirectRoutes: a client's sockets to the leader shards' direct sockets, and which
partition goes where.

Client side, on the thread that owns the Connection (connection.py), which
asks it where to send each produce or fetch and hands it every reply.

The router stays the front door: a client knows only the router's address,
and learns from the router's metadata replies (``TopicInfo.direct_addresses``)
each partition's leader's direct socket, if the broker offers them (plaintext
on loopback: see plinth/server.py). A partition with a direct address gets its
produce and fetch requests sent there, on one DEALER per shard address
(at most CLIENT_DIRECT_SOCKETS_MAX); everything else, and every other request,
goes through the router, exactly as without direct routes.

Failures fall back to the router at once, never to a request's timeout:

- a direct socket that is not connected (ZMQ_IMMEDIATE: a send there fails at
  once) sends through the router instead;
- a reply from a direct socket saying notLeader or unavailable (the leader
  changed, a partition moved), or unknownTopic (the shard deleted the topic:
  shards/deleted_partitions.py), drops that partition's route;
- a direct socket whose connection drops (its monitor's disconnect event; its
  ZMQ heartbeats notice a shard that stops answering within
  DIRECT_HEARTBEAT_TIMEOUT_MS) drops every route to it, and every request in
  flight on it is answered here, unavailable, so that its sender retries (an
  idempotent producer's retry is deduplicated by the shard, as after a lost
  router reply).

In each case the partition's topic is asked for again (at most every
CLIENT_METADATA_REFRESH_INTERVAL_MS_MIN), and its requests go through the
router until a reply names a direct address for it. A reply that names none
for a partition whose route was lost (its election has not finished) does
not end the asking: the topic is asked again, the wait between asks doubling
up to CLIENT_METADATA_REFRESH_INTERVAL_MS_MAX, until the new leader is named;
the first success through the router for such a partition (the election is
over) brings the next ask forward to the minimum wait. Requests keep their ids
on either path. A partition's requests stay on one path while any of them is
in flight, so that pipelined requests (a producer without idempotence) keep
their order (the producer asks its acks=0 produces as acks=1, so they are
tracked too: client/sender.py).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import limits, protocol
from plinth.errors import NotLeaderError, UnavailableError, UnknownTopicError
from plinth.socket_monitor import monitor_socket

log = logging.getLogger(__name__)

ROUTER = ""   # the path of a request sent through the router
_MONITORED_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
# The leader is not where the route says; or the shard there deleted the topic (a
# topic of the name created again is elsewhere, or the router answers it unknown).
_ROUTE_ERRORS = (NotLeaderError, UnavailableError, UnknownTopicError)


class DirectSocket:
    """One DEALER to a shard's direct socket, and its connection monitor."""

    __slots__ = ("address", "dealer", "monitor")

    def __init__(self, address: str, dealer: zmq.Socket, monitor: zmq.Socket):
        self.address, self.dealer, self.monitor = address, dealer, monitor


class DirectRoutes:
    """The owning Connection's thread only. It registers its sockets with the
    Connection's ``poller`` as it makes them and unregisters them as it closes them."""

    def __init__(self, context: zmq.Context, poller: zmq.Poller):
        self._context = context
        self._poller = poller
        self._routes: dict[tuple[str, int], str] = {}        # partition -> direct address
        self._sockets: dict[str, DirectSocket] = {}          # address -> its socket
        self._by_dealer: dict[zmq.Socket, DirectSocket] = {}
        self._by_monitor: dict[zmq.Socket, DirectSocket] = {}
        # request id -> (partition, path): requests in flight that expect a reply
        self._sent: dict[int, tuple[tuple[str, int], str]] = {}
        self._pending: dict[tuple[str, int], list] = {}      # partition -> [path, count]
        self._asked_s: dict[str, float] = {}                 # topic -> when last asked
        self._stale: set[str] = set()                        # topics to ask again
        # topic -> its partitions whose route dropped and whose new leader is not yet named
        self._leaderless: dict[str, set[int]] = {}
        self._ask_interval_ms: dict[str, int] = {}           # topic -> wait before asking again
        # metadata request id -> topic; bounded, oldest forgotten (the router lost it)
        self._asking: OrderedDict[int, str] = OrderedDict()

    # --- Sending ----------------------------------------------------------------------

    def socket_for(self, tp: tuple[str, int]) -> DirectSocket | None:
        """The direct socket to send ``tp``'s next request on, or None: the router."""
        pending = self._pending.get(tp)
        address = pending[0] if pending is not None else self._routes.get(tp, ROUTER)
        return self._sockets.get(address) if address else None

    def sent(self, tp: tuple[str, int], request_id: int, path: str) -> None:
        """A request for ``tp`` that expects a reply went out on ``path`` (an address,
        or ROUTER)."""
        self._sent[request_id] = (tp, path)
        pending = self._pending.get(tp)
        if pending is None:
            self._pending[tp] = [path, 1]
        else:
            pending[1] += 1

    def not_sendable(self, tp: tuple[str, int], socket: DirectSocket) -> None:
        """``socket`` took no request (not connected, or full): ``tp`` goes through the
        router until a metadata reply names its leader again."""
        log.info("direct socket %s is not connected; %s-%d goes through the router",
                 socket.address, *tp)
        self._drop_route(tp)

    def forget(self, request_id: int) -> None:
        """Its sender gave up on the request: no reply will be waited for."""
        entry = self._sent.pop(request_id, None)
        if entry is not None:
            self._uncount(entry[0])

    def topics_to_ask(self, topic: str, now_s: float) -> bool:
        """Whether to ask the router for ``topic``'s metadata now: never asked, or its
        routes failed and the last ask is old enough (module docstring)."""
        asked_s = self._asked_s.get(topic)
        if asked_s is None:
            return True
        if topic not in self._stale and topic not in self._leaderless:
            return False
        # (A topic with lost routes is asked again even if the last answer never came.)
        interval_ms = self._ask_interval_ms.get(topic,
                                                limits.CLIENT_METADATA_REFRESH_INTERVAL_MS_MIN)
        return now_s - asked_s >= interval_ms / 1000

    def asking(self, topic: str, request_id: int, now_s: float) -> None:
        """A metadata request for ``topic`` went to the router as ``request_id``."""
        self._asked_s[topic] = now_s
        self._stale.discard(topic)
        if topic in self._leaderless:   # asked during an election: the next ask waits longer
            interval_ms = self._ask_interval_ms.get(
                topic, limits.CLIENT_METADATA_REFRESH_INTERVAL_MS_MIN)
            self._ask_interval_ms[topic] = min(2 * interval_ms,
                                               limits.CLIENT_METADATA_REFRESH_INTERVAL_MS_MAX)
        self._asking[request_id] = topic
        if len(self._asking) > limits.CLIENT_ABANDONED_REQUESTS_KEPT:
            self._asking.popitem(last=False)

    # --- Replies ----------------------------------------------------------------------

    def take_metadata(self, view: protocol.ReplyView) -> bool:
        """If ``view`` answers a metadata request made here, learn the routes it gives
        and return True (the reply is nobody else's)."""
        topic = self._asking.pop(view.request_id, None)
        if topic is None:
            return False
        if view.error is not None:
            log.info("metadata of %s for direct routes: %s", topic, view.error)
            return True
        for info in view.topics:
            self._learn(info)
        self._close_unused()
        return True

    def answered(self, view: protocol.ReplyView, path: str) -> None:
        """A reply came on ``path``: its request is no longer in flight; an error that
        says the leader is elsewhere drops a direct route."""
        entry = self._sent.pop(view.request_id, None)
        if entry is None:
            return
        tp = entry[0]
        self._uncount(tp)
        if not path and view.error is None and tp[1] in self._leaderless.get(tp[0], ()):
            # Its leader answers again (through the router): the election is over, so
            # the next ask need not wait out the backoff.
            self._ask_interval_ms.pop(tp[0], None)
        elif path and isinstance(view.error, _ROUTE_ERRORS):
            log.info("%s-%d at %s: %s; through the router until the new leader is known",
                     *tp, path, view.error)
            self._drop_route(tp)

    def path_of(self, sock: zmq.Socket) -> str | None:
        """The address of a direct DEALER, or None for any other socket."""
        direct = self._by_dealer.get(sock)
        return None if direct is None else direct.address

    def on_monitor(self, sock: zmq.Socket) -> list[protocol.ReplyView] | None:
        """For a monitor socket the poller reported: its events are read, and a dropped
        connection's requests in flight come back as unavailable replies to hand out
        ([] if none). None if ``sock`` is not a monitor of this."""
        direct = self._by_monitor.get(sock)
        if direct is None:
            return None
        for _ in range(limits.CLIENT_MONITOR_EVENTS_PER_READ_MAX):
            try:
                event = recv_monitor_message(direct.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return []
            if event == zmq.EVENT_DISCONNECTED:
                return self._lost(direct)
        return []

    def close(self) -> None:
        for direct in list(self._sockets.values()):
            self._close(direct)

    # --- Inside ---------------------------------------------------------------------------

    def _learn(self, info: protocol.TopicInfo) -> None:
        """Routes from one topic's metadata. A partition without a direct address (or
        past CLIENT_DIRECT_SOCKETS_MAX sockets) goes through the router; if its route
        was lost, the topic is asked for again, later each time (module docstring)."""
        lost = self._leaderless.pop(info.name, set())
        for partition, address in enumerate(info.direct_addresses):
            tp = (info.name, partition)
            if address and (address in self._sockets or self._open(address)):
                self._routes[tp] = address
                lost.discard(partition)
            else:
                self._routes.pop(tp, None)
        for tp in [tp for tp in self._routes if tp[0] == info.name
                   and tp[1] >= len(info.direct_addresses)]:
            del self._routes[tp]
        lost = {partition for partition in lost if partition < len(info.direct_addresses)}
        if lost:
            self._leaderless[info.name] = lost
        else:
            self._ask_interval_ms.pop(info.name, None)

    def _open(self, address: str) -> bool:
        if len(self._sockets) >= limits.CLIENT_DIRECT_SOCKETS_MAX:
            return False
        if not address.startswith(("tcp://", "ipc://")):
            log.warning("ignored direct address %r: not tcp:// or ipc://", address)
            return False
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        dealer.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        dealer.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        dealer.setsockopt(zmq.IMMEDIATE, 1)   # a send fails at once while not connected
        dealer.setsockopt(zmq.HEARTBEAT_IVL, limits.DIRECT_HEARTBEAT_IVL_MS)
        dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, limits.DIRECT_HEARTBEAT_TIMEOUT_MS)
        monitor = monitor_socket(dealer, _MONITORED_EVENTS)
        try:
            dealer.connect(address)
        except zmq.ZMQError as exc:
            log.warning("cannot connect to direct address %s: %s", address, exc)
            dealer.disable_monitor()
            monitor.close(linger=0)
            dealer.close(linger=0)
            return False
        direct = DirectSocket(address, dealer, monitor)
        self._sockets[address] = direct
        self._by_dealer[dealer] = direct
        self._by_monitor[monitor] = direct
        self._poller.register(dealer, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)
        return True

    def _lost(self, direct: DirectSocket) -> list[protocol.ReplyView]:
        """``direct``'s connection dropped: its routes go, its socket closes, and its
        requests in flight are answered unavailable."""
        log.info("direct socket %s lost its connection; its partitions go through the "
                 "router until their leaders are known", direct.address)
        for tp in [tp for tp, address in self._routes.items() if address == direct.address]:
            self._drop_route(tp)
        lost = [request_id for request_id, (_, path) in self._sent.items()
                if path == direct.address]
        replies = []
        for request_id in lost:
            self.forget(request_id)
            replies.append(protocol.ReplyView(request_id, "error", UnavailableError(
                f"the direct connection to {direct.address} dropped with request "
                f"{request_id} in flight (its shard may have died); it may or may not have "
                f"been applied; retry")))
        self._close(direct)
        return replies

    def _drop_route(self, tp: tuple[str, int]) -> None:
        self._routes.pop(tp, None)
        self._leaderless.setdefault(tp[0], set()).add(tp[1])
        self._stale.add(tp[0])

    def _uncount(self, tp: tuple[str, int]) -> None:
        pending = self._pending[tp]
        pending[1] -= 1
        if not pending[1]:
            del self._pending[tp]

    def _close_unused(self) -> None:
        """Close the sockets no route and no request in flight uses."""
        used = set(self._routes.values()) | {pending[0] for pending in self._pending.values()}
        for address in [a for a in self._sockets if a not in used]:
            self._close(self._sockets[address])

    def _close(self, direct: DirectSocket) -> None:
        for sock in (direct.dealer, direct.monitor):
            self._poller.unregister(sock)
        del self._sockets[direct.address]
        del self._by_dealer[direct.dealer]
        del self._by_monitor[direct.monitor]
        # The monitor stops before its socket closes (router/shard_connections.py says why).
        direct.dealer.disable_monitor()
        direct.monitor.close(linger=0)
        direct.dealer.close(linger=0)
