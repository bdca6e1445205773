"""Fetch replies a loop has handed to ZeroMQ but not yet written to the client.

Used by the router's loop thread for its client socket, and by a shard's loop
thread for its direct socket (shards/shard_server.py); each owns one instance.
ZeroMQ bounds a peer's outgoing queue in messages (SNDHWM), not bytes, and a
client whose connection stops draining (it does not read, its host froze, a
hostile peer set a tiny receive buffer) makes the sender hold every reply sent
to it. With fetch replies of up to ``FETCH_BYTES_MAX`` each, a message bound
alone lets one client pin gigabytes.

So the loop sends each large fetch reply zero-copy with a pyzmq
``MessageTracker`` (done once libzmq has written the frame to the socket, or
dropped it with the connection) and keeps the trackers per client here. A
reply that would take a client past its share ``CLIENT_REPLY_BYTES_UNSENT_MAX``,
or the owner past its ``total_bytes_max``, is not queued: the loop answers
``tooManyRequests`` instead, and the client asks again later. Unsent bytes
therefore stay under each bound.

A client's share is a sixteenth of the router's budget, so clients that stop
reading cannot use it up before they are disconnected: a TCP socket closes a
client connection whose queued replies make no progress for
``CLIENT_REPLIES_STALLED_MS_MAX`` (ZMQ_TCP_MAXRT), and libzmq drops what it
held, which this module then sees as done. A shard's ipc:// direct socket has
no such timer; its clients are the data directory owner's own processes, and
each still holds at most its share.
"""

from __future__ import annotations

from collections import deque

import zmq

from plinth import limits


class UnsentReplies:
    """Per client: the trackers and sizes of its large replies still in ZeroMQ's queue."""

    def __init__(self, owner: str, total_bytes_max: int) -> None:
        """``owner``: who holds the replies, for messages ("the router"); at most
        ``total_bytes_max`` unsent bytes over all its clients."""
        self.owner = owner
        self.total_bytes_max = total_bytes_max
        self._by_client: dict[bytes, deque] = {}     # client id -> deque of (tracker, bytes)
        self._bytes_by_client: dict[bytes, int] = {}
        self.total_bytes = 0

    def add(self, client: bytes, tracker, size_bytes: int) -> None:
        if tracker.done:
            return
        self._by_client.setdefault(client, deque()).append((tracker, size_bytes))
        self._bytes_by_client[client] = self._bytes_by_client.get(client, 0) + size_bytes
        self.total_bytes += size_bytes

    def send(self, sock: zmq.Socket, client: bytes, header: bytes, payload) -> str | None:
        """Send the reply [client][header][payload] zero-copy and track it, or, if it
        would pass a budget, send nothing and return why (the caller answers
        tooManyRequests with it). ``client`` and ``header`` as bytes, ``payload`` a
        buffer: pyzmq tracks only messages it creates, not received Frames. Raises
        zmq.Again as the socket's send does."""
        refused = self.over_budget(client, len(payload))
        if refused is not None:
            return refused
        tracker = sock.send_multipart([client, header, payload], zmq.NOBLOCK, copy=False,
                                      track=True)
        self.add(client, tracker, len(payload))
        return None

    def bytes_for(self, client: bytes) -> int:
        """Bytes of this client's replies not yet written to its connection."""
        self._prune(client)
        return self._bytes_by_client.get(client, 0)

    def over_budget(self, client: bytes, size_bytes: int) -> str | None:
        """Why a new reply of ``size_bytes`` to ``client`` must not be queued, or None
        if it may."""
        client_bytes = self.bytes_for(client)
        if client_bytes + size_bytes > limits.CLIENT_REPLY_BYTES_UNSENT_MAX:
            # (A consumer that reads may meet it too, when fetches of large maximums
            # answer at once: tester M, session 40; it asks again after a backoff.)
            return (f"{client_bytes} bytes of earlier fetch replies to this client are not "
                    f"yet written to its connection (it is not reading them, or they came "
                    f"at once), and this one has {size_bytes}; the limit is "
                    f"{limits.CLIENT_REPLY_BYTES_UNSENT_MAX} bytes per client")
        if self.total_bytes + size_bytes > self.total_bytes_max:
            self.sweep()
            if self.total_bytes + size_bytes > self.total_bytes_max:
                return (f"{self.owner} holds {self.total_bytes} bytes of fetch replies its "
                        f"clients have not read, and this one has {size_bytes}; the limit "
                        f"is {self.total_bytes_max} bytes")
        return None

    def sweep(self) -> None:
        """Forget every reply that has been sent (or dropped with its connection)."""
        for client in list(self._by_client):
            self._prune(client)

    def _prune(self, client: bytes) -> None:
        pending = self._by_client.get(client)
        if pending is None:
            return
        # A peer's queue drains in order, so sent replies are at the left.
        while pending and pending[0][0].done:
            _, size_bytes = pending.popleft()
            self._bytes_by_client[client] -= size_bytes
            self.total_bytes -= size_bytes
        if not pending:
            del self._by_client[client]
            del self._bytes_by_client[client]
