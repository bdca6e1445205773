"""The Kafka listener's way into Plinth: Plinth requests to the router, awaited.

Runs on the Kafka listener's event loop thread only (router/kafka/listener.py).
The listener translates each Kafka request into Plinth requests
(schemas/protocol.capnp) and sends them over one ZeroMQ DEALER to the
router's own client socket, exactly as a Plinth client would, so routing,
quotas, held requests and replication behave for a Kafka client as for any
other: a Kafka produce is a Plinth produce whose payload is the Kafka batch
(``batchFormat`` 2). Replies are matched to their requests by request id.

Bounds: at most KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX requests wait for a
reply at once (a semaphore; the listener's per-connection bound keeps one
client from taking them all), and each waits at most its deadline, after
which its future fails with PlinthTimeoutError and a late reply is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import zmq
import zmq.asyncio

from plinth import limits, protocol
from plinth.errors import ClosedError, MalformedReplyError, PlinthTimeoutError

log = logging.getLogger(__name__)


class PlinthBackend:
    """One DEALER to the router. Construct anywhere; every other method on the
    listener's event loop thread."""

    def __init__(self, router_url: str):
        self.router_url = router_url
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._request_ids = itertools.count(1)
        self._slots: asyncio.Semaphore | None = None
        self._reader: asyncio.Task | None = None

    def _start(self) -> None:
        """Connect and start reading replies: on the first request, so that it happens
        on the listener's event loop, whichever thread built this. Event loop thread."""
        self._context = zmq.asyncio.Context()
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, limits.KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX)
        sock.setsockopt(zmq.RCVHWM, limits.KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX)
        sock.connect(self.router_url)
        self._socket = sock
        self._slots = asyncio.Semaphore(limits.KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX)
        self._reader = asyncio.get_running_loop().create_task(self._read_replies())

    def close(self) -> None:
        """Close the socket, failing what still waits. Once the listener's event loop
        has stopped (any thread then)."""
        for future in self._waiting.values():
            if not future.done() and not future.get_loop().is_closed():
                future.get_loop().call_soon_threadsafe(
                    future.set_exception, ClosedError("the Kafka listener is stopping"))
        self._waiting.clear()
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def next_request_id(self) -> int:
        return next(self._request_ids)

    async def call(self, request_id: int, header: bytes, payload=None,
                   timeout_ms: int = limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS,
                   ) -> tuple[protocol.ReplyView, zmq.Frame | None]:
        """Send one request (``header`` encoded with ``request_id``) and await its reply:
        (reply view, payload frame or None). A reply carrying an error is returned, not
        raised: the caller maps it to a Kafka error code. Raises PlinthTimeoutError after
        ``timeout_ms`` and ClosedError when the listener stops."""
        if self._socket is None:
            self._start()
        async with self._slots:
            future = asyncio.get_running_loop().create_future()
            self._waiting[request_id] = future
            try:
                frames = [header] if payload is None else [header, payload]
                await self._socket.send_multipart(frames, copy=False)
                return await asyncio.wait_for(future, timeout_ms / 1000)
            except asyncio.TimeoutError:
                raise PlinthTimeoutError(
                    f"no reply from the router at {self.router_url} within {timeout_ms} ms "
                    f"(request {request_id})") from None
            finally:
                self._waiting.pop(request_id, None)

    async def send_only(self, header: bytes, payload) -> None:
        """Send a request that gets no reply (a produce with acks 0). Event loop."""
        if self._socket is None:
            self._start()
        await self._socket.send_multipart([header, payload], copy=False)

    async def _read_replies(self) -> None:
        while True:
            frames = await self._socket.recv_multipart(copy=False)
            try:
                reply = protocol.decode_reply(frames[0].buffer)
            except MalformedReplyError as exc:
                log.error("dropped a reply from the router that is not one: %s", exc)
                continue
            future = self._waiting.get(reply.request_id)
            if future is None or future.done():
                continue   # timed out already
            future.set_result((reply, frames[1] if len(frames) > 1 else None))
