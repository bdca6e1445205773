"""The router's connections to the shards: one DEALER per shard, and whether it is up.

Runs in the router's process, on its loop thread (and in ``Router.start`` before
the loop runs). For each shard of the routing table the router keeps a DEALER
connected to the shard's ROUTER; requests go out on it with the client's
identity as the first frame, and the shard's replies come back on it the same
way. Each DEALER has a connection monitor (a ZeroMQ PAIR socket carrying its
connect and disconnect events): a shard whose connection dropped (its process
or node died) is down, and its requests are answered unavailable at once
instead of queueing, until the connection comes back or the shard moves to a
new address. A shard at a new address gets a new DEALER; the old one is closed
with whatever it had queued, since those requests will never be answered.

A dropped connection also gets a new DEALER, to the same address: the requests
sent before the drop will never be answered (the shard's replies went to the
connection that is gone), and the ones still queued in the old DEALER must
never reach a shard that comes back there later (a restarted shard reuses its
Unix socket): the router answers all of them unavailable (``take_lost``), and
a client that retries one must not have the old copy arrive after it, such as
an older commit after a newer one.

Every socket here is registered with the loop's poller as it is made and
unregistered as it is closed.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import limits
from plinth.cluster_keys import ClusterKeys, is_ipc
from plinth.socket_monitor import monitor_socket

_MONITORED_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
_UP_EVENTS = (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED)


class _ShardConnection:
    __slots__ = ("shard_id", "address", "dealer", "monitor")

    def __init__(self, shard_id: str, address: str, dealer: zmq.Socket, monitor: zmq.Socket):
        self.shard_id, self.address = shard_id, address
        self.dealer, self.monitor = dealer, monitor


class ShardConnections:
    """Loop thread only (construction and the first ``apply`` may happen before it runs)."""

    def __init__(self, context: zmq.Context, poller: zmq.Poller,
                 cluster_keys: ClusterKeys | None = None):
        """``cluster_keys``: the DEALERs speak CurveZMQ as cluster members (shards admit
        no one else); None only for shards without keys (tests on loopback)."""
        self._context = context
        self._cluster_keys = cluster_keys
        self._poller = poller
        self._by_shard: dict[str, _ShardConnection] = {}
        self._by_dealer: dict[zmq.Socket, _ShardConnection] = {}
        self._by_monitor: dict[zmq.Socket, _ShardConnection] = {}
        self._down: set[str] = set()
        self._lost: list[str] = []   # shards whose connection dropped, not yet taken

    def apply(self, shard_addresses: dict[str, str]) -> list[str]:
        """Connect to every shard at its address in the routing table; returns the
        shards newly connected (new, or at a new address): requests sent to them
        before are lost. A shard missing from the table keeps its connection."""
        connected = []
        for shard_id, address in shard_addresses.items():
            current = self._by_shard.get(shard_id)
            if current is not None and current.address == address:
                continue
            if current is not None:
                self._close(current)
            self._connect(shard_id, address)
            self._down.discard(shard_id)   # a new address: up until it says otherwise
            connected.append(shard_id)
        return connected

    def dealer_if_up(self, shard_id: str) -> zmq.Socket | None:
        """The DEALER to send ``shard_id`` requests on, or None if the shard is not known
        or its connection is down."""
        if shard_id in self._down:
            return None
        connection = self._by_shard.get(shard_id)
        return None if connection is None else connection.dealer

    def is_up(self, shard_id: str) -> bool:
        return self.dealer_if_up(shard_id) is not None

    def on_readable(self, sock: zmq.Socket) -> str | None:
        """For a socket the poller reported: a monitor's events are handled here (None
        is returned); for a shard's DEALER, its shard id is returned and the caller reads
        the replies. A socket closed earlier in the same round is ignored (None)."""
        connection = self._by_dealer.get(sock)
        if connection is not None:
            return connection.shard_id
        connection = self._by_monitor.get(sock)
        if connection is not None:
            self._on_monitor_events(connection)
        return None

    def take_lost(self) -> list[str]:
        """The shards whose connection dropped since the last call, each with a new
        DEALER since: every request sent to them before will never be answered."""
        lost, self._lost = self._lost, []
        return lost

    def close(self) -> None:
        for connection in list(self._by_shard.values()):
            self._close(connection)

    def _on_monitor_events(self, connection: _ShardConnection) -> None:
        """The connection came up or went down: its shard's partitions follow."""
        for _ in range(limits.ROUTER_MONITOR_EVENTS_PER_ROUND_MAX):
            try:
                event = recv_monitor_message(connection.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED:
                self._down.add(connection.shard_id)
                self._reconnect(connection)
                return   # its monitor is closed: the new one reports what comes next
            elif event in _UP_EVENTS:
                self._down.discard(connection.shard_id)

    def _reconnect(self, connection: _ShardConnection) -> None:
        """A new DEALER to the same address, the shard still down until it connects;
        what the old one had queued is dropped with it."""
        self._close(connection)
        self._connect(connection.shard_id, connection.address)
        self._lost.append(connection.shard_id)

    def _connect(self, shard_id: str, address: str) -> None:
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        dealer.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        dealer.setsockopt(zmq.LINGER, 0)
        if self._cluster_keys is not None and not is_ipc(address):   # see cluster_keys.py
            self._cluster_keys.apply_client(dealer)
        monitor = monitor_socket(dealer, _MONITORED_EVENTS)
        dealer.connect(address)
        connection = _ShardConnection(shard_id, address, dealer, monitor)
        self._by_shard[shard_id] = connection
        self._by_dealer[dealer] = connection
        self._by_monitor[monitor] = connection
        self._poller.register(dealer, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)

    def _close(self, connection: _ShardConnection) -> None:
        for sock in (connection.dealer, connection.monitor):
            self._poller.unregister(sock)
        del self._by_dealer[connection.dealer]
        del self._by_monitor[connection.monitor]
        if self._by_shard.get(connection.shard_id) is connection:
            del self._by_shard[connection.shard_id]
        # Stop the monitor before closing the socket it writes to: libzmq's I/O thread
        # sends each event with a blocking send, and an event with nobody left to
        # read it (a disconnect racing the close) blocks that thread, and with it
        # every socket of the context, for good.
        connection.dealer.disable_monitor()
        connection.monitor.close(linger=0)
        connection.dealer.close(linger=0)
