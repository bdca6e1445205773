"""AIOConnection: a client Connection whose waits are awaited on an asyncio loop.

Client side. The sockets, the direct routes to leader shards, the matching of
replies to requests and the bookkeeping of abandoned requests are the sync
Connection's (client/connection.py), unchanged: its ``send_to``, ``recv(0)``
and ``forget`` never wait. What blocks there is replaced here by coroutines:
``wait_async`` awaits, through ``zmq.asyncio.Poller``, until one of the
connection's sockets (the router's DEALER, the direct ones, their monitors) may
be read or an extra fd is readable; ``wait_for_async``, ``request_async`` and
``request_retrying_async`` are ``wait_for``, ``request`` and
``request_retrying`` built on it. Nothing runs on another thread.

Tasks. Only the event loop's thread calls it, and only one task at a time may
wait for replies on one connection: a reply read by one task for another is
kept (``_early``), but the other, awaiting its socket, is not woken by that.
The asyncio clients serialize their calls with an asyncio.Lock for this.

Sending never waits either: when no connection takes a request (several
routers, ZMQ_IMMEDIATE, none up; or the broker stopped reading) ``send`` raises
UnavailableError at once instead of polling CLIENT_ROUTER_CONNECT_WAIT_MS for
one, and the retrying paths back off on the loop. As in the sync Connection, a
handshake the broker ended for good is HandshakeRefusedError.
"""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio

from plinth import limits, protocol
from plinth.client.connection import Connection
from plinth.errors import ClosedError, NotLeaderError, PlinthTimeoutError, UnavailableError


class AIOConnection(Connection):
    def __init__(self, broker=None, *, direct: bool = False):
        super().__init__(broker, direct=direct)

    def send(self, header: bytes, payload=None) -> None:
        """Send one request without waiting (see the module). Event loop thread.
        RequestTooLargeError for a header over HEADER_BYTES_MAX, before anything is sent,
        as the sync Connection's ``send``."""
        protocol.check_header_bytes(header)
        if self.closed:
            raise ClosedError(f"connection to {self.url} is closed")
        frames = [header] if payload is None else [header, payload]
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK, copy=payload is None)
            return
        except zmq.Again:
            pass
        raise self._unsendable(0)

    def _watched(self) -> list[tuple[zmq.Socket, int]]:
        """The sockets a reply (or a direct socket's event) may come from."""
        if self._direct is None:
            return [(self.socket, zmq.POLLIN)]
        return list(self._poller.sockets)

    def _reply_waiting(self) -> bool:
        return bool(self._early) or (self._direct is not None and bool(self._arrived))

    async def wait_async(self, timeout_ms: float, fd: int | None = None) -> bool:
        """Await up to ``timeout_ms`` until a reply may be read (``recv(0)``) or ``fd`` is
        readable; whether ``fd`` was seen readable. Event loop thread."""
        if self._reply_waiting():
            timeout_ms = 0
        poller = zmq.asyncio.Poller()
        for sock, mask in self._watched():
            poller.register(sock, mask)
        if fd is not None:
            poller.register(fd, zmq.POLLIN)
        events = await poller.poll(max(0, int(timeout_ms)))
        return fd is not None and any(sock == fd for sock, _ in events)

    async def wait_for_async(self, request_id: int, timeout_ms: float):
        """``wait_for``, awaiting: the reply to ``request_id`` (view, payload); raises its
        error, or PlinthTimeoutError after ``timeout_ms``. Event loop thread."""
        deadline = time.monotonic() + timeout_ms / 1000
        while request_id not in self._early:
            got = self._recv_socket(0)
            if got is not None:
                self._early[got[0].request_id] = got
                continue
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                self._abandon(request_id)
                raise PlinthTimeoutError(
                    f"no reply from {self.url} to request {request_id} within {timeout_ms:.0f} ms"
                    f"{self._silence_hint()}")
            if not self._handshakes.settled:   # a refused handshake ends the wait now
                self._raise_refusal(request_id)
                remaining_ms = min(remaining_ms, limits.CLIENT_HANDSHAKE_CHECK_MS)
            await self.wait_async(remaining_ms + 1)
        view, payload = self._early.pop(request_id)
        if view.error is not None:
            raise view.error
        return view, payload

    async def request_async(self, header: bytes, request_id: int, timeout_ms: float,
                            payload=None):
        """Send one request and await its reply; raises the reply's error."""
        self.send(header, payload)
        return await self.wait_for_async(request_id, timeout_ms)

    async def request_retrying_async(self, encode, timeout_ms: float):
        """``request_retrying``, awaiting: retried with backoff (on the loop) while the
        answer is "unavailable" or "notLeader", until ``timeout_ms`` runs out."""
        deadline = time.monotonic() + timeout_ms / 1000
        backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
        while True:
            request_id = self.next_request_id()
            remaining_ms = max(1.0, (deadline - time.monotonic()) * 1000)
            try:
                return await self.request_async(encode(request_id), request_id, remaining_ms)
            except (UnavailableError, NotLeaderError):
                if time.monotonic() + backoff_s >= deadline:
                    raise
                await asyncio.sleep(backoff_s)   # a backoff between retries
                backoff_s = min(2 * backoff_s, limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000)
