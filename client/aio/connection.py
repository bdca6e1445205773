"""AIOConnection: a client Connection whose waits are awaited on an asyncio loop.

Client side. The sockets, the direct routes to leader shards, the matching of
replies to requests and the bookkeeping of abandoned requests are the sync
Connection's (client/connection.py), unchanged: its ``send_to``, ``recv(0)``
and ``forget`` never wait. What blocks there is replaced here by coroutines:
``wait_async`` awaits, through the loop's readers on their fds, until one of
the connection's sockets (the router's DEALER, the direct ones, their monitors)
may be read or an extra fd is readable; ``wait_for_async``, ``request_async`` and
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

from plinth import limits, protocol
from plinth.client.connection import RETRIED_ERRORS, Connection, RetriedErrors
from plinth.errors import ClosedError, PlinthTimeoutError


class AIOConnection(Connection):
    def __init__(self, broker=None, *, direct: bool = False):
        super().__init__(broker, direct=direct)
        self._waiter: asyncio.Future | None = None   # the wait in progress's; see wait_async
        self._woken = False   # wake() ended the wait in progress

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
        """Await up to ``timeout_ms`` until a reply may be read (``recv(0)``), ``fd`` is
        readable or ``wake()`` is called; whether ``fd`` was seen readable. Event loop
        thread, one task at a time (see the module).

        The loop's readers on the sockets' fds are this wait's alone and are removed
        before it returns, even when it is cancelled: zmq.asyncio's Poller removed them
        in a callback one loop iteration after a cancellation, by which time a new wait
        of the same task had put its own reader on the same fd, so that wait was never
        woken and ran out its whole timeout (a commit in ``finally`` after a cancelled
        getmany took request_timeout_ms)."""
        items = self._watched()
        if fd is not None:
            items.append((fd, zmq.POLLIN))
        if timeout_ms <= 0:
            return _seen(zmq.zmq_poll(items, 0), fd)
        if self._waiter is not None:   # the asyncio clients' turns (asyncio.Lock) prevent it
            raise AssertionError(f"two tasks await replies on the connection to {self.url} at "
                                 f"once: the second would take the first's readers")
        loop = asyncio.get_running_loop()
        fds = [each if isinstance(each, int) else each.FD for each, _ in items]
        deadline_s = loop.time() + timeout_ms / 1000
        self._woken = False
        self._waiter = loop.create_future()
        timer = loop.call_at(deadline_s, self._end_wait)
        for each in fds:
            loop.add_reader(each, self._end_wait)
        try:
            if self._reply_waiting() or zmq.zmq_poll(items, 0):
                # Ready at once: let the loop run once all the same, as zmq.asyncio's
                # Poller did. A driver that leaves something readable unread (the
                # producer's sender, idle, leaves a direct socket's monitor events) calls
                # again at once, forever, and no other task would run.
                await asyncio.sleep(0)
                return _seen(zmq.zmq_poll(items, 0), fd)
            # A ZMQ socket's fd only says that its state may have changed, and reading
            # that state (zmq_poll) is what makes the fd signal the next change: look
            # first (above), then await a signal; woken without a reply (the change was
            # another one), look again. Bounded by the deadline.
            while True:
                await self._waiter
                self._waiter = loop.create_future()
                ready = zmq.zmq_poll(items, 0)
                if ready or self._woken or loop.time() >= deadline_s:
                    return _seen(ready, fd)
        finally:
            timer.cancel()
            for each in fds:
                loop.remove_reader(each)
            self._waiter = None

    def wake(self) -> None:
        """End the wait in progress (``wait_async``) at once, as if it had timed out;
        nothing if no task waits. Any task on the event loop's thread (the AIOConsumer's
        stop() ends another task's getmany with it)."""
        if self._waiter is not None:
            self._woken = True
            self._end_wait()

    def _end_wait(self) -> None:
        """A reader's, the timer's or wake()'s callback: the waiting task looks again."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_for_async(self, request_id: int, timeout_ms: float, *, give_up=None):
        """``wait_for``, awaiting: the reply to ``request_id`` (view, payload); raises its
        error, or PlinthTimeoutError after ``timeout_ms``. Event loop thread. ``give_up``:
        None, or a callable asked whenever the wait ends without the reply (``wake()``
        ends it: call it after whatever makes ``give_up`` answer True); once it answers
        True the request is abandoned (its late reply dropped) and None is returned."""
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
            if give_up is not None and give_up():
                self._abandon(request_id)
                return None
            if not self._handshakes.settled:   # a refused handshake ends the wait now
                self._raise_refusal(request_id)
                remaining_ms = min(remaining_ms, limits.CLIENT_HANDSHAKE_CHECK_MS)
            await self.wait_async(remaining_ms + 1)
        view, payload = self._early.pop(request_id)
        if view.error is not None:
            raise view.error
        return view, payload

    async def request_async(self, header: bytes, request_id: int, timeout_ms: float,
                            payload=None, *, give_up=None):
        """Send one request and await its reply; raises the reply's error. ``give_up``: as
        ``wait_for_async``'s."""
        self.send(header, payload)
        return await self.wait_for_async(request_id, timeout_ms, give_up=give_up)

    async def request_retrying_async(self, encode, timeout_ms: float,
                                     retried: tuple = RETRIED_ERRORS):
        """``request_retrying``, awaiting: retried with backoff (on the loop) while the
        answer is "unavailable", "notLeader" or another of ``retried``, until
        ``timeout_ms`` runs out."""
        deadline = time.monotonic() + timeout_ms / 1000
        backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
        tries = RetriedErrors()
        while True:
            request_id = self.next_request_id()
            remaining_ms = max(1.0, (deadline - time.monotonic()) * 1000)
            try:
                return await self.request_async(encode(request_id), request_id, remaining_ms)
            except PlinthTimeoutError as exc:
                tries.raise_timeout(exc, timeout_ms)
            except retried as exc:
                tries.note(exc)
                if time.monotonic() + backoff_s >= deadline:
                    raise
                await asyncio.sleep(backoff_s)   # a backoff between retries
                backoff_s = min(2 * backoff_s, limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000)


def _seen(ready: list, fd: int | None) -> bool:
    """Whether zmq_poll's answer ``ready`` has ``fd`` readable."""
    return fd is not None and any(each == fd for each, _ in ready)
