"""The Kafka listener's way into Plinth: Plinth requests to the router, awaited.

Runs on the Kafka listener's event loop thread only (router/kafka/listener.py).
The listener translates each Kafka request into Plinth requests
(schemas/protocol.capnp) and sends them over one ZeroMQ DEALER to the
router's own client socket, exactly as a Plinth client would, so routing,
quotas, held requests and replication behave for a Kafka client as for any
other: a Kafka produce is a Plinth produce whose payload is the Kafka batch
(``batchFormat`` 2). Replies are matched to their requests by request id.

Which socket. Beside a plaintext router in the same process, the DEALER
connects to the router's inproc endpoint, in the router's own ZeroMQ context
(``in_process``): a request and its reply cross no TCP connection and no I/O
thread, and a Kafka batch reaches the router's loop without a copy. Before
session 18 it went over 127.0.0.1, one hop more than a Plinth client with
direct routes. A router with CurveZMQ is reached over TCP, as below.

Two lanes. Changes (``ask_change``: topics created, deleted, grown or altered)
go through a DEALER of their own, so that the router, which answers each
client's admin requests one after another, holds no other Kafka request
behind a change waiting for a stopped shard: another connection's Metadata,
which a client needs to find a partition's new leader, is answered meanwhile.
A connection's own requests after a change still wait for it (gateway.py).

Principals. Beside a CurveZMQ router, the backend holds one DEALER per SASL
user and lane, each with that user's internal key pair (service.py makes them; the
router's Security maps each key back to ``"User:<name>"``), so the router
checks every Plinth request of a Kafka user against that user's grants, cuts
the answers to them and meters its quotas, exactly as for a Plinth client
with a key. Which user a call is made for is ``PRINCIPAL``, a context
variable the gateway sets in each request's task (tasks it starts inherit
it), so the handlers pass nothing. Without CurveZMQ there is one DEALER.

Values a Plinth request cannot carry. A Kafka request's numbers are int32 and
int16; Plinth's fields for some are unsigned (a partition, a partition's max
bytes, a replication factor). The handlers refuse the values Kafka refuses
with Kafka's own codes before encoding (a partition of -1 is
UNKNOWN_TOPIC_OR_PARTITION), and ``ask`` turns an encoder's refusal of any
value they missed into that one entry's error (malformedRequest: Kafka's
INVALID_REQUEST) instead of a failed handler, which would close the client's
connection with every request pipelined on it.

Bounds: at most KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX requests wait for a
reply at once (a semaphore; the listener's per-connection bound keeps one
client from taking them all), and each waits at most its deadline, after
which its future fails with PlinthTimeoutError and a late reply is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import struct
import time
from collections.abc import Callable

import capnp
import zmq
import zmq.asyncio

from plinth import limits, protocol
from plinth.errors import (ClosedError, MalformedReplyError, MalformedRequestError, PlinthError,
                           PlinthTimeoutError)

log = logging.getLogger(__name__)

# The SASL user the current request's task acts for (gateway.py sets it); None
# without SASL.
PRINCIPAL: contextvars.ContextVar[str | None] = contextvars.ContextVar("kafka_principal",
                                                                      default=None)


class PlinthBackend:
    """DEALERs to the router. Construct anywhere; every other method on the
    listener's event loop thread.

    ``curve``: (the router's public key, {user: (public, secret) key pair}) to reach a
    CurveZMQ router with one socket per user; None for a plaintext router.
    ``shared_context``: the router's context, when ``router_url`` is its inproc
    endpoint (shadowed here, never terminated: the router owns it)."""

    def __init__(self, router_url: str,
                 curve: tuple[bytes, dict[str, tuple[bytes, bytes]]] | None = None,
                 shared_context: zmq.Context | None = None):
        assert shared_context is None or curve is None, "inproc carries no CurveZMQ keys"
        self.router_url = router_url
        self._curve = curve
        self._shared_context = shared_context
        self._context: zmq.asyncio.Context | None = None
        # (principal, whether it carries changes) -> its DEALER
        self._sockets: dict[tuple[str | None, bool], zmq.asyncio.Socket] = {}
        self._waiting: dict[int, asyncio.Future] = {}
        self._request_ids = itertools.count(1)
        self._slots: asyncio.Semaphore | None = None
        self._readers: list[asyncio.Task] = []

    def _socket(self, change: bool = False) -> zmq.asyncio.Socket:
        """The socket of the current principal's lane (``change``: the changes'),
        connected on its first request, so that it happens on the listener's event
        loop, whichever thread built this."""
        principal = PRINCIPAL.get() if self._curve is not None else None
        sock = self._sockets.get((principal, change))
        return sock if sock is not None else self._connect(principal, change)

    def _connect(self, principal: str | None, change: bool) -> zmq.asyncio.Socket:
        if self._context is None:
            self._context = (zmq.asyncio.Context() if self._shared_context is None
                             else zmq.asyncio.Context.shadow(self._shared_context.underlying))
            self._slots = asyncio.Semaphore(limits.KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX)
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, limits.KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX)
        sock.setsockopt(zmq.RCVHWM, limits.KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX)
        if self._curve is not None:
            server_key, keys = self._curve
            # The gateway serves nothing but SASL before a login, so there is a user.
            assert principal in keys, f"no internal key for Kafka user {principal!r}"
            sock.curve_serverkey = server_key
            sock.curve_publickey, sock.curve_secretkey = keys[principal]
        sock.connect(self.router_url)
        self._sockets[(principal, change)] = sock
        self._readers.append(asyncio.get_running_loop().create_task(self._read_replies(sock)))
        return sock

    def close(self) -> None:
        """Close the socket, failing what still waits. Once the listener's event loop
        has stopped (any thread then)."""
        for future in self._waiting.values():
            if not future.done() and not future.get_loop().is_closed():
                future.get_loop().call_soon_threadsafe(
                    future.set_exception, ClosedError("the Kafka listener is stopping"))
        self._waiting.clear()
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
        if self._context is not None and self._shared_context is None:
            self._context.term()
        self._context = None

    def next_request_id(self) -> int:
        return next(self._request_ids)

    async def call(self, request_id: int, header: bytes, payload=None,
                   timeout_ms: int = limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS,
                   change: bool = False) -> tuple[protocol.ReplyView, zmq.Frame | None]:
        """Send one request (``header`` encoded with ``request_id``; ``change``: through
        the changes' lane) and await its reply: (reply view, payload frame or None). A
        reply carrying an error is returned, not raised: the caller maps it to a Kafka
        error code. Raises PlinthTimeoutError after ``timeout_ms`` and ClosedError when
        the listener stops."""
        sock = self._socket(change)
        async with self._slots:
            future = asyncio.get_running_loop().create_future()
            self._waiting[request_id] = future
            try:
                frames = [header] if payload is None else [header, payload]
                # The send is inside the timeout too: a router that stopped reading
                # (a full queue) must not hold the Kafka request for good.
                return await asyncio.wait_for(self._exchange(sock, frames, future),
                                              timeout_ms / 1000)
            except asyncio.TimeoutError:
                raise PlinthTimeoutError(
                    f"no reply from the router at {self.router_url} within {timeout_ms} ms "
                    f"(request {request_id})") from None
            finally:
                self._waiting.pop(request_id, None)

    @staticmethod
    async def _exchange(sock: zmq.asyncio.Socket, frames: list, future: asyncio.Future):
        await sock.send_multipart(frames, copy=False)
        return await future

    async def _read_replies(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            try:
                reply = protocol.decode_reply(frames[0].buffer)
            except MalformedReplyError as exc:
                log.error("dropped a reply from the router that is not one: %s", exc)
                continue
            future = self._waiting.get(reply.request_id)
            if future is None or future.done():
                continue   # timed out already
            future.set_result((reply, frames[1] if len(frames) > 1 else None))


async def ask(backend, encode: Callable[[int], bytes], payload=None,
              timeout_ms: int = limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS, change: bool = False,
              ) -> tuple[protocol.ReplyView, zmq.Frame | None]:
    """One Plinth request, ``encode(request_id) -> header``, and its reply: (reply,
    payload frame or None). A client-side failure (no reply within ``timeout_ms``,
    the listener stopping, a value the request cannot carry) comes back as a reply
    whose ``error`` is that error, so that a handler reads one ``reply.error``
    whatever went wrong. Event loop."""
    request_id = backend.next_request_id()
    try:
        header = encode(request_id)
    except PlinthError as exc:
        return protocol.ReplyView(request_id, "none", exc), None
    except _UNENCODABLE as exc:
        return protocol.ReplyView(request_id, "none", _unencodable(exc)), None
    try:
        return await backend.call(request_id, header, payload, timeout_ms, change)
    except PlinthError as exc:
        return protocol.ReplyView(request_id, "none", exc), None


def change_deadline_s(timeout_ms: int | None = None) -> float:
    """When a Kafka change stops being awaited (time.monotonic()): the request's own
    ``timeout_ms`` (CreateTopics, DeleteTopics and CreatePartitions carry one; 0 or
    below, or none, is the backend's), at most KAFKA_BACKEND_REQUEST_TIMEOUT_MS."""
    wait_ms = limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS
    if timeout_ms is not None and timeout_ms > 0:
        wait_ms = min(wait_ms, timeout_ms)
    return time.monotonic() + wait_ms / 1000


async def ask_change(backend, deadline_s: float, encode: Callable[..., bytes], *args,
                     **options) -> tuple[protocol.ReplyView, zmq.Frame | None]:
    """``ask`` of the change ``encode(request_id, *args, **options)``, waiting until
    ``deadline_s`` (change_deadline_s) and no longer. Its request carries the time
    left as its timeoutMs, so the router does not make a change that waited for the
    ones before it past the Kafka client's timeout (it answers requestTimedOut:
    Kafka's REQUEST_TIMED_OUT). Sent through the changes' lane (see the module).
    Event loop."""
    wait_ms = max(1, int((deadline_s - time.monotonic()) * 1000))
    reply, payload = await ask(
        backend, lambda rid: encode(rid, *args, timeout_ms=wait_ms, **options),
        timeout_ms=wait_ms, change=True)
    if isinstance(reply.error, PlinthTimeoutError):   # said for a Kafka user, not a router
        reply.error = PlinthTimeoutError(
            f"the change was not answered within {wait_ms} ms, the request's timeout: it "
            f"waits for a shard that does not answer, or for the changes before it. If it "
            f"had begun, it is made once its shards answer; if not, it is never made")
    return reply, payload


# What Plinth's encoders raise for a value that its field cannot hold: pycapnp's
# KjException (a negative number in a UInt32), struct.error (protocol_hot.py's
# fixed layouts), OverflowError and ValueError.
_UNENCODABLE = (capnp.KjException, struct.error, OverflowError, ValueError)


def _unencodable(exc: Exception) -> MalformedRequestError:
    # pycapnp's message ends with a native stack trace: keep its first line.
    reason = str(exc).split("\nstack:", 1)[0].strip()
    return MalformedRequestError(f"the Kafka request holds a value that Plinth's request "
                                 f"cannot carry: {reason}")
