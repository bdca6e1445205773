"""The Kafka listener's transport: an asyncio TCP server in a thread of its own.

The router process starts it beside its ZeroMQ loop (``start`` returns the bound
address; ``stop`` closes everything and joins). It frames, decodes (codec.py),
calls the handler, encodes and writes; it knows nothing of what a request means.
Its accepts are acceptor.py's, not asyncio's server's, which floods the log at
the open-file limit.

Frames. Each request and response on a Kafka connection is:

    int32  size      big-endian, the bytes that follow
    size   bytes     the request (header + body) or the response

A declared size that is negative or over ``request_bytes_max``
(KAFKA_REQUEST_BYTES_MAX, Kafka's socket.request.max.bytes), or over the
connection's own lower bound (``ConnectionInfo.request_bytes_max``: with
SASL, KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX until the client logs in, as
Kafka's sasl.server.max.receive.size) closes the connection after a log line naming the peer and the size: the body is never
read, so a declared 2 GB costs nothing.

Order and bounds. Requests on one connection are handled concurrently, each in
a task of its own, but their responses are written in request order, as Kafka
requires: a FIFO of the tasks, awaited in turn by the connection's writer. A
connection has at most ``requests_in_flight_max`` requests read and not yet
answered and at most ``request_bytes_in_flight_max`` of their bytes (a bigger
request waits for the earlier ones), and all connections together at most
``request_bytes_in_flight_total_max`` bytes (KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX,
Kafka's queued.max.request.bytes): a request that would pass it waits, first
come first served, until answers on any connection free room. Bytes count from
the moment the size is read, before the body arrives, as Kafka's memory pool
takes them. A request fits whenever nothing else is in flight, so some
connection always progresses. A connection that has not logged in yet (SASL)
takes nothing from that budget: its requests are small
(KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX), its connections bounded in number and
closed at their login deadline, and anyone can open one, so that clients who
cannot log in cannot hold the budget that those who did need. A client that
declares a large request and sends it slowly holds its bytes until it sends
the rest, closes, or is closed idle (``connection_idle_ms_max``), as in Kafka. While a connection waits, the listener stops reading
from that socket (asyncio's StreamReader then pauses the transport, and TCP's
window pushes back on the client); it is not closed, as Kafka mutes, not
closes, such a channel. Responses go out as lists of buffers with
sendmsg, never joined (gather_writer.py: asyncio's ``writelines`` joins them on
Python 3.11; TLS connections use ``writelines``), and each is in the kernel
before the next is written, so a client that does not read stalls only its own
connection.
Connections. At most ``connections_max`` connections are kept; a new one
beyond them is closed at once, and one with nothing in flight that sends no
whole request for ``connection_idle_ms_max`` (KAFKA_CONNECTION_IDLE_MS_MAX,
Kafka's connections.max.idle.ms) is closed.

Login. A listener given ``first_request_bytes_max`` (the bound of a connection
that has not logged in: service.py gives it with SASL) is one whose connections
must log in, and a connection has logged in once a handler lifts that bound to
None (api_sasl.py does at a SASL login). Anyone can open a connection, so one
that has not logged in holds its slot briefly and takes it from a small pool: it
is closed if it has not logged in ``login_timeout_ms`` after it was accepted
(KAFKA_LOGIN_TIMEOUT_MS, its TLS handshake included), and a new connection is
closed at once while ``connections_before_login_max`` others wait for their
login (KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX), or while
``connections_before_login_per_address_max`` others from its peer's IP address
(any port) do (KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX, Kafka's
max.connections.per.ip for this pool only), so that one address reopening
connections cannot keep the whole pool full. The rest of ``connections_max`` is
left to the clients that logged in. Without that bound (no SASL) every
connection counts as logged in.

Users. A handler that logs a connection in names its user (``ConnectionInfo.
principal``), and one user holds at most ``connections_per_principal_max``
connections logged in at once (KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX): the one
over it is closed just after its login, with a line (one per user per
``log_interval_s``) naming the user and the bound, so that one user cannot
take every connection from the others. A connection whose user is not known
(no SASL) is not bounded so.

TLS. Given an ``ssl_context`` (server side, with its certificate loaded), every
connection is TLS: the listener accepts TCP and runs the handshake itself
(within ``login_timeout_ms``), so that a connection counts against the limits
from its accept and a failed handshake is logged with OpenSSL's reason. On a
listener without TLS, a first frame that starts as a TLS record (a client
configured for TLS) is named as such, not as a size over the limit. SASL is the
handlers' business (SaslHandshake v1 and SaslAuthenticate are ordinary requests;
v0's raw tokens are not framed as requests and are not supported).

Log lines. Whoever connects can cause the lines about a connection that has not
authenticated (a refusal, a failed handshake, a bad frame, a login deadline): they
go through a LogLimit (plinth/log_limit.py), one line per kind and peer address per
``log_interval_s`` (UNAUTHENTICATED_LOG_INTERVAL_S), the next saying how many were
dropped, and at most UNAUTHENTICATED_LOG_LINES_MAX of them in all per interval. On a listener without SASL no connection is authenticated.

Errors. A frame that does not decode (KafkaDecodeError) closes its
connection only, with a log line; the listener keeps serving the others. An
ApiVersions request in a version we do not serve is answered in version 0
with UNSUPPORTED_VERSION and our ranges, as Kafka does, so that the client
retries with one we do; any other unknown API key or version closes the
connection. A handler that raises, or returns a body that does not encode,
is a bug: it is logged and closes that connection.

A handler that raises ``CloseConnection`` (the gateway, for a request before
a SASL login; Produce, for a failed acks=0 one) closes its connection with a
log line naming why; a handler
may lower or lift its connection's ``request_bytes_max`` (see Frames).

Counts. Every response's error codes, and every connection closed or refused
for what its client did (each once, under one reason), are counted in
``counts`` (error_counts.py) before the client can see the answer or the
close, for the metrics endpoint.

Threads. ``start`` and ``stop`` are called by the thread that owns the
listener (the router's main thread). Everything else - the handler included -
runs in the listener's own thread, on its event loop (``loop``); code on
other threads reaches it with ``loop.call_soon_threadsafe`` or
``asyncio.run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections import deque
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plinth.errors import KafkaDecodeError, KafkaUnsupportedVersionError
from plinth.limits import (
    KAFKA_CONNECTION_IDLE_MS_MAX, KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX,
    KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX, KAFKA_CONNECTIONS_MAX,
    KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX,
    KAFKA_IDLE_CHECK_INTERVAL_MS_MAX, KAFKA_LISTENER_STOP_WAIT_S, KAFKA_LOGIN_TIMEOUT_MS,
    KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX, KAFKA_REQUEST_BYTES_IN_FLIGHT_PER_CONNECTION_MAX,
    KAFKA_REQUEST_BYTES_MAX,
    KAFKA_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX, UNAUTHENTICATED_LOG_INTERVAL_S)
from plinth.log_limit import LogLimit
from plinth.router.kafka import acceptor, error_codes
from plinth.router.kafka.error_counts import KafkaErrorCounts
from plinth.router.kafka.codec import (
    API_VERSIONS_KEY, RequestHeader, decode_request, encode_response, supported_api_keys)
from plinth.router.kafka.gather_writer import GatherWriter

logger = logging.getLogger(__name__)

__all__ = ["CloseConnection", "ConnectionInfo", "Handler", "KafkaListener"]

_SIZE_BYTES = 4
# A TLS record header: content type 22 (handshake), then major version 3. As a
# Kafka size (0x1603....) it is over 369 MB, so a valid frame never starts so.
_TLS_HANDSHAKE_RECORD = b"\x16\x03"


@dataclass
class ConnectionInfo:
    """One Kafka connection, as its handler sees it. ``state`` is the handlers'
    own per-connection dict (SASL progress, the principal, the client's
    software name); only the listener's thread touches it."""

    connection_id: int
    peer: tuple[str, int]
    state: dict = field(default_factory=dict)
    # A bound on this connection's requests below the listener's; None: the
    # listener's. Starts at the listener's ``first_request_bytes_max``; a handler
    # may lift it (the gateway, at a SASL login).
    request_bytes_max: int | None = None
    # The user this connection logged in as, named by the handler that lifts its
    # bound (api_sasl.py); None: no one is known (no SASL), and no per-user bound holds.
    principal: str | None = None

    def logged_in(self) -> bool:
        """Whether this connection has no bound of its own: a handler lifted it (a
        SASL login), or the listener gives none (no login needed)."""
        return self.request_bytes_max is None


class CloseConnection(Exception):
    """Raised by a handler: close this connection now (its message says why). Counted
    under ``close_reason`` (error_counts.CLOSE_REASONS); ``body``, if given, is the
    response it stands for, whose error codes are counted as if it had been sent
    (a Produce with acks=0 that failed: Kafka's closeConnection does the same)."""

    def __init__(self, message: str, *, close_reason: str = "refused_by_handler",
                 body: dict | None = None):
        super().__init__(message)
        self.close_reason = close_reason
        self.body = body


# async handle(connection, header, body) -> response body, or None for no
# response (Produce with acks=0).
Handler = Callable[[ConnectionInfo, RequestHeader, dict], Awaitable["dict | None"]]


class KafkaListener:
    """A TCP server for Kafka clients, in a daemon thread with its own event loop."""

    def __init__(self, host: str, port: int, handle: Handler, *,
                 request_bytes_max: int = KAFKA_REQUEST_BYTES_MAX,
                 requests_in_flight_max: int = KAFKA_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
                 request_bytes_in_flight_max: int = KAFKA_REQUEST_BYTES_IN_FLIGHT_PER_CONNECTION_MAX,
                 request_bytes_in_flight_total_max: int = KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX,
                 connections_max: int = KAFKA_CONNECTIONS_MAX,
                 connection_idle_ms_max: int = KAFKA_CONNECTION_IDLE_MS_MAX,
                 ssl_context: ssl.SSLContext | None = None,
                 first_request_bytes_max: int | None = None,
                 login_timeout_ms: int = KAFKA_LOGIN_TIMEOUT_MS,
                 connections_before_login_max: int = KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX,
                 connections_before_login_per_address_max: int =
                 KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX,
                 connections_per_principal_max: int = KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX,
                 log_interval_s: float = UNAUTHENTICATED_LOG_INTERVAL_S):
        assert requests_in_flight_max >= 1 and connections_max >= 1 and connection_idle_ms_max > 0
        assert login_timeout_ms > 0 and connections_before_login_max >= 1
        assert connections_before_login_per_address_max >= 1 and connections_per_principal_max >= 1
        assert 0 < request_bytes_max <= request_bytes_in_flight_max
        assert request_bytes_max <= request_bytes_in_flight_total_max
        self.host, self.port = host, port
        self.handle = handle
        self.request_bytes_max = request_bytes_max
        self.requests_in_flight_max = requests_in_flight_max
        self.request_bytes_in_flight_max = request_bytes_in_flight_max
        # The bytes of every connection's requests read (or being read) and not yet
        # answered; made in the loop thread (_serve), which alone uses it.
        self.request_bytes_in_flight_total_max = request_bytes_in_flight_total_max
        self.request_bytes: _BytesInFlight | None = None
        self.connections_max = connections_max
        self.connection_idle_s_max = connection_idle_ms_max / 1000
        self.ssl_context = ssl_context
        self.first_request_bytes_max = first_request_bytes_max
        self.login_required = first_request_bytes_max is not None
        self.login_timeout_s = login_timeout_ms / 1000
        self.connections_before_login_max = connections_before_login_max
        self.connections_before_login_per_address_max = connections_before_login_per_address_max
        self.connections_per_principal_max = connections_per_principal_max
        self.unauthenticated_log = LogLimit(logger, interval_s=log_interval_s)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self._transports_in_making: set[asyncio.Task] = set()   # _connected's, until made
        self._waiting_for_login: set[_Connection] = set()
        # peer IP address -> how many of _waiting_for_login are from it; an address
        # has an entry only while it has one, so the table is bounded by the pool.
        self._waiting_for_login_per_address: dict[str, int] = {}
        # user -> its connections logged in and kept; a user has an entry only while
        # it has one, so the table is bounded by the connections.
        self._logged_in_per_principal: dict[str, int] = {}
        self._ids = itertools.count(1)
        # Error answers and closed connections, for the metrics (error_counts.py).
        self.counts = KafkaErrorCounts()

    def start(self) -> tuple[str, int]:
        """Binds (port 0 = any free port), starts the loop thread; returns the bound
        address. Raises OSError naming the address if it cannot bind. Owner's thread."""
        assert self._thread is None, "a KafkaListener starts once"
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), daemon=True,
                                        name=f"kafka-listener-{self.host}:{self.port}")
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        assert self.address is not None
        return self.address

    def stop(self) -> None:
        """Closes the server and every connection, then joins the thread. Owner's
        thread; safe to call twice."""
        thread, loop, stopping = self._thread, self.loop, self._stopping
        if thread is None or not thread.is_alive():
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(KAFKA_LISTENER_STOP_WAIT_S)
        if thread.is_alive():
            logger.error("Kafka listener on %s did not stop within %.0f s", self.address,
                         KAFKA_LISTENER_STOP_WAIT_S)

    def connection_count(self) -> int:
        """Connections open now (a snapshot; any thread)."""
        return len(self._connections)

    def request_bytes_in_flight(self) -> int:
        """Bytes of requests read, or being read, on every connection and not yet
        answered (a snapshot; any thread)."""
        return 0 if self.request_bytes is None else self.request_bytes.bytes

    def request_bytes_waiting_count(self) -> int:
        """Connections whose next request waits for room in the listener's bytes in
        flight (a snapshot; any thread)."""
        return 0 if self.request_bytes is None else self.request_bytes.waiting_count()

    def waiting_for_login_count(self, address: str | None = None) -> int:
        """Connections open now that have not logged in yet, from peer IP ``address``
        only if given (a snapshot; any thread)."""
        if address is None:
            return len(self._waiting_for_login)
        return self._waiting_for_login_per_address.get(address, 0)

    def logged_in_count(self, principal: str) -> int:
        """Connections open now logged in as ``principal`` (a snapshot; any thread)."""
        return self._logged_in_per_principal.get(principal, 0)

    def log_unauthenticated(self, level: int, kind: str, peer: tuple[str, int],
                            message: str, *args) -> None:
        """Log a line that a client which has not authenticated caused: at most one
        per ``kind`` and peer address per interval. Listener thread."""
        self.unauthenticated_log.log(level, f"{kind} {peer[0]}", message, *args)

    def _run(self, ready: threading.Event, failure: list) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve(ready, failure))
        except BaseException as e:       # a bug in the loop itself: report it to start()
            logger.exception("Kafka listener on %s:%s failed", self.host, self.port)
            if not ready.is_set():
                failure.append(e)
        finally:
            ready.set()
            self._end_tasks_left()
            self.loop.close()

    def _end_tasks_left(self) -> None:
        """Cancel the tasks still pending once ``_serve`` returned, and run the loop
        until they end (at most KAFKA_LISTENER_STOP_WAIT_S), as ``asyncio.run`` does: a
        cancelled handler cancels its own tasks without waiting for them (api_fetch's
        parked fetches), and a task the closed loop destroys while pending is an
        ERROR in the server's log. Listener thread."""
        tasks = asyncio.all_tasks(self.loop)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.wait(tasks, timeout=KAFKA_LISTENER_STOP_WAIT_S))

    async def _serve(self, ready: threading.Event, failure: list) -> None:
        self._stopping = asyncio.Event()
        self.request_bytes = _BytesInFlight(self.request_bytes_in_flight_total_max)
        try:
            sock = acceptor.bind(self.host, self.port)
        except OSError as e:
            failure.append(OSError(e.errno, f"Kafka listener cannot bind {self.host}:{self.port}: "
                                            f"{e.strerror}"))
            return
        accepts = acceptor.Acceptor(asyncio.get_running_loop(), sock, self._connected)
        accepts.start()
        self.address = sock.getsockname()[:2]
        logger.info("Kafka listener on %s:%s", *self.address)
        ready.set()
        idle_check = asyncio.create_task(self._close_idle_connections())
        await self._stopping.wait()
        idle_check.cancel()
        accepts.close()
        connections = list(self._connections)
        for connection in connections:
            connection.task.cancel()
        await asyncio.gather(*(c.task for c in connections), return_exceptions=True)
        await asyncio.sleep(0)                   # the aborted transports' close callbacks

    def _connected(self, sock: socket.socket) -> None:
        """An accepted connection (acceptor.py): its transport is made in a task, as
        asyncio's server makes it, which ``_accept`` then serves. Listener thread."""
        task = asyncio.get_running_loop().create_task(self._make_transport(sock))
        self._transports_in_making.add(task)
        task.add_done_callback(self._transports_in_making.discard)

    async def _make_transport(self, sock: socket.socket) -> None:
        protocol = _StreamProtocol(self._accept, tls=self.ssl_context is not None)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock)
        except OSError as exc:   # the peer gone already, or no file for the transport
            logger.info("Kafka connection lost before it was served: %s", exc)
            sock.close()

    async def _close_idle_connections(self) -> None:
        interval_s = min(self.connection_idle_s_max / 4, KAFKA_IDLE_CHECK_INTERVAL_MS_MAX / 1000)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            for connection in list(self._connections):
                idle_s = loop.time() - connection.last_active
                if connection.requests_handled() == 0 and idle_s > self.connection_idle_s_max:
                    connection.count_close("idle")
                    logger.info("%s closed: idle for %.1f s (the limit is %.1f s)",
                                connection.describe(), idle_s, self.connection_idle_s_max)
                    connection.task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        info = ConnectionInfo(next(self._ids), tuple(peer[:2]),
                              request_bytes_max=self.first_request_bytes_max)
        refusal = self._refusal(info.peer[0])
        if refusal is not None:
            kind, close_reason, reason = refusal
            self.counts.closed(close_reason)
            self.log_unauthenticated(logging.WARNING, kind, info.peer,
                                     "Kafka connection %d from %s:%s refused: %s",
                                     info.connection_id, *info.peer, reason)
            writer.transport.abort()
            return
        connection = _Connection(self, info, reader, writer)
        self._connections.add(connection)
        if not info.logged_in():
            self._wait_for_login(connection)
            connection.login_deadline = asyncio.get_running_loop().call_later(
                self.login_timeout_s, self._login_deadline, connection)
        try:
            await connection.task
        except asyncio.CancelledError:
            pass
        except Exception:                # a bug in this module: lose the connection, not the listener
            logger.exception("%s failed", connection.describe())
        finally:
            self._connections.discard(connection)
            self.logged_in(connection)
            self._uncount_principal(connection)

    def _refusal(self, address: str) -> tuple[str, str, str] | None:
        """Why a new connection from peer IP ``address`` must be closed at once, as
        (the kind of its log line, its error_counts.CLOSE_REASONS, the reason), or
        None to serve it. Listener thread."""
        if len(self._connections) >= self.connections_max:
            return ("refused", "connections_max",
                    f"{len(self._connections)} connections open, the limit")
        if not self.login_required:
            return None
        # The address before the pool: when both are full, the line names the one
        # address that holds more than its share, not only the pool it fills.
        waiting_here = self._waiting_for_login_per_address.get(address, 0)
        if waiting_here >= self.connections_before_login_per_address_max:
            return "refused per address", "before_login_per_address_max", (
                f"{waiting_here} connections from {address} have not logged in yet (the limit "
                f"for one address is {self.connections_before_login_per_address_max})")
        if len(self._waiting_for_login) >= self.connections_before_login_max:
            return "refused", "before_login_max", (
                f"{len(self._waiting_for_login)} connections have not logged in "
                f"yet, the limit for them (of {self.connections_max} connections)")
        return None

    def _wait_for_login(self, connection: _Connection) -> None:
        """Counts ``connection`` in the pool waiting for their login, and against its
        peer's address. Listener thread."""
        address = connection.info.peer[0]
        self._waiting_for_login.add(connection)
        table = self._waiting_for_login_per_address
        table[address] = table.get(address, 0) + 1
        assert len(table) <= len(self._waiting_for_login)

    def logged_in(self, connection: _Connection) -> None:
        """``connection`` waits for its login no more (it logged in, or it closed).
        Listener thread; safe to call twice."""
        if connection in self._waiting_for_login:      # counted once, so uncounted once
            self._waiting_for_login.remove(connection)
            address = connection.info.peer[0]
            table = self._waiting_for_login_per_address
            table[address] -= 1
            if table[address] == 0:
                del table[address]                      # the table keeps waiting addresses only
        if connection.login_deadline is not None:
            connection.login_deadline.cancel()
            connection.login_deadline = None

    def count_principal(self, connection: _Connection) -> None:
        """Counts a connection that has logged in against its user, once; closes it,
        after a line limited per user, if the user already holds as many as it may.
        Listener thread."""
        principal = connection.info.principal
        if principal is None or connection.principal_counted or connection.task.done():
            return
        held = self._logged_in_per_principal.get(principal, 0)
        if held >= self.connections_per_principal_max:
            connection.count_close("per_user_max")
            self.unauthenticated_log.warning(
                f"principal bound {principal}",
                "%s closed after its login: user %r holds %d connections logged in at this "
                "listener (the limit for one user is %d)", connection.describe(), principal,
                held, self.connections_per_principal_max)
            connection.task.cancel()
            return
        self._logged_in_per_principal[principal] = held + 1
        connection.principal_counted = True

    def _uncount_principal(self, connection: _Connection) -> None:
        if not connection.principal_counted:
            return
        connection.principal_counted = False
        table, principal = self._logged_in_per_principal, connection.info.principal
        table[principal] -= 1
        if table[principal] == 0:
            del table[principal]                        # the table keeps holding users only

    def _login_deadline(self, connection: _Connection) -> None:
        connection.login_deadline = None
        if connection in self._waiting_for_login and not connection.info.logged_in():
            connection.count_close("login_deadline")
            self.log_unauthenticated(logging.INFO, "login deadline", connection.info.peer,
                                     "%s closed: not logged in %.1f s after it was accepted "
                                     "(the limit)", connection.describe(), self.login_timeout_s)
            connection.task.cancel()


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """What ``asyncio.start_server`` builds for each connection, made ready for a
    TLS handshake that starts after the accept: a TLS connection's reading is paused
    from its first moment, so that its ClientHello is not read into the stream
    before ``loop.start_tls`` (which resumes it) takes the transport over; and its
    end of stream closes it, as TLS requires."""

    def __init__(self, accept, *, tls: bool):
        super().__init__(asyncio.StreamReader(), accept)
        self.tls = tls

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.tls:
            transport.pause_reading()

    def eof_received(self) -> bool:
        keep_open = super().eof_received()
        return keep_open and not self.tls


class _BytesInFlight:
    """The listener's budget of request bytes in flight, shared by its connections and
    given out first come first served: a request that does not fit waits, and so
    does every one after it, so that small requests cannot starve a large one. A
    request fits whenever nothing is in flight, however large (the listener's
    bound on one request is no larger than the budget anyway). Listener thread only.

    Bounded: a waiter per connection at most (a connection reads one request at a
    time), so at most ``connections_max`` waiters.
    """

    def __init__(self, bytes_max: int):
        assert bytes_max > 0
        self.bytes_max = bytes_max
        self.bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def waiting_count(self) -> int:
        return len(self._waiters)

    async def take(self, size: int) -> None:
        """Returns once ``size`` bytes are taken from the budget, for the caller to
        ``give_back``. Cancelled meanwhile, it takes nothing."""
        if not self._waiters and self._fits(size):
            self.bytes += size
            return
        granted = asyncio.get_running_loop().create_future()
        waiter = (size, granted)
        self._waiters.append(waiter)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():   # granted, then cancelled
                self.give_back(size)
            else:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._grant()                  # it may have held back those behind it
            raise

    def give_back(self, size: int) -> None:
        self.bytes -= size
        if self.bytes < 0:
            raise AssertionError(f"{self.bytes} Kafka request bytes in flight after "
                                 f"{size} given back")
        self._grant()

    def _fits(self, size: int) -> bool:
        return self.bytes == 0 or self.bytes + size <= self.bytes_max

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, granted = self._waiters.popleft()
            if granted.done():                 # its connection closed while it waited
                continue
            self.bytes += size
            granted.set_result(None)


class _Answer:
    """A response ready at once (no handler): the v0 UNSUPPORTED_VERSION answer."""

    __slots__ = ("body",)

    def __init__(self, body: dict):
        self.body = body


class _Connection:
    """One client connection: a reading task and a writing task, in the loop thread."""

    def __init__(self, listener: KafkaListener, info: ConnectionInfo,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.listener, self.info = listener, info
        self.reader, self.writer = reader, writer
        self.gather: GatherWriter | None = None      # once the TLS handshake (if any) is done
        self.login_deadline: asyncio.TimerHandle | None = None   # while it waits for its login
        self.principal_counted = False        # against its user's bound (count_principal)
        self.close_counted = False            # in the listener's counts (count_close)
        self.frames_read = 0
        # (header, request bytes, task or _Answer), in request order; None ends it.
        self.pending: asyncio.Queue = asyncio.Queue()
        self.handlers: set[asyncio.Task] = set()
        self.requests_in_flight = 0            # counted from the room taken for its body
        self.bytes_in_flight = 0
        # What each of its requests read and not yet answered took of the listener's
        # bytes in flight (request_bytes), in request order (0: read before its login);
        # given back as each is answered, and all of it when it closes.
        self.bytes_taken: deque[int] = deque()
        self.reading_body = False             # the last one counted is still arriving
        self.room = asyncio.Condition()
        loop = asyncio.get_running_loop()
        self.last_active = loop.time()         # a whole request read or a response written
        self.task = loop.create_task(self._run())

    def count_close(self, reason: str) -> None:
        """Counts this connection closed by the listener for ``reason``, once
        (error_counts.CLOSE_REASONS): a second reason, while the first one's close is
        under way, is not a second connection. Listener thread."""
        if not self.close_counted:
            self.close_counted = True
            self.listener.counts.closed(reason)

    def requests_handled(self) -> int:
        """Requests read whole and not yet answered: a frame still arriving does not count."""
        return self.requests_in_flight - self.reading_body

    def describe(self) -> str:
        return f"Kafka connection {self.info.connection_id} from {self.info.peer[0]}:{self.info.peer[1]}"

    def authenticated(self) -> bool:
        """Whether this connection logged in on a listener that requires it: only
        then does a line about it name someone the broker knows."""
        return self.listener.login_required and self.info.logged_in()

    def warn_closed(self, close_reason: str, kind: str, reason: str, *args) -> None:
        """Counts this connection closed for ``close_reason`` (error_counts.CLOSE_REASONS)
        because of what its client did, and logs the line for it: rate limited (per
        kind and address) unless the client has authenticated."""
        self.count_close(close_reason)
        message = "%s closed: " + reason
        if self.authenticated():
            logger.warning(message, self.describe(), *args)
        else:
            self.listener.log_unauthenticated(logging.WARNING, kind, self.info.peer, message,
                                              self.describe(), *args)

    def _handler_done(self, task: asyncio.Task) -> None:
        self.handlers.discard(task)
        self._settle_login()

    def _settle_login(self) -> None:
        """A connection a handler logged in waits for its login no more, and counts
        against its user's bound (both once). Listener thread."""
        if self.info.logged_in():
            self.listener.logged_in(self)
            self.listener.count_principal(self)

    async def _start_tls(self, context: ssl.SSLContext) -> bool:
        """Runs the server side of the TLS handshake over the accepted TCP connection
        (within the login timeout); False, after a rate-limited line with OpenSSL's
        reason, if it failed. The reader keeps being fed by the same protocol, now
        through the TLS transport, which the new writer writes to."""
        loop = asyncio.get_running_loop()
        protocol = self.writer.transport.get_protocol()
        try:
            transport = await loop.start_tls(self.writer.transport, protocol, context,
                                             server_side=True,
                                             ssl_handshake_timeout=self.listener.login_timeout_s)
        except asyncio.CancelledError:            # the login deadline, or a stop
            self.writer.transport.abort()
            raise
        except OSError as e:                      # SSLError, a reset, the handshake timeout
            self.writer.transport.abort()
            reason = getattr(e, "reason", None) or str(e) or type(e).__name__
            hint = (": a plaintext client? this listener speaks only TLS (security.protocol "
                    "SSL/SASL_SSL)" if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST",
                                                   "UNKNOWN_PROTOCOL") else "")
            self.warn_closed("tls_handshake", "TLS handshake",
                             "its TLS handshake failed: %s%s", reason, hint)
            return False
        self.writer = asyncio.StreamWriter(transport, protocol, self.reader, loop)
        return True

    async def _run(self) -> None:
        context = self.listener.ssl_context
        if context is not None and not await self._start_tls(context):
            return
        self.gather = GatherWriter(self.writer)
        reading = asyncio.create_task(self._read_loop())
        writing = asyncio.create_task(self._write_loop())
        clean = False
        try:
            done, _ = await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
            if reading in done and reading.result():     # the client closed: answer what it sent
                self.pending.put_nowait(None)
                await writing
                clean = True
        finally:
            for task in (reading, writing, *self.handlers):
                task.cancel()
            self._retrieve_unanswered()
            self.listener.request_bytes.give_back(sum(self.bytes_taken))   # dropped unanswered
            self.bytes_taken.clear()
            self.gather.close()
            if clean:
                self.writer.close()              # flushes what is still buffered
            else:
                self.writer.transport.abort()    # now: unread requests are dropped

    def _retrieve_unanswered(self) -> None:
        """Takes the outcomes of the requests queued behind the write loop's end, which
        it will never await: a handler that already raised is logged here if it is a
        bug, and quietly dropped if it asked for the close too (CloseConnection).
        Unretrieved, each such exception was an ERROR traceback "Task exception was
        never retrieved" when the task was collected, long after the close (three
        pipelined acks=0 produces failed by a leader's death: tester T-rk, session 43)."""
        while not self.pending.empty():
            item = self.pending.get_nowait()
            outcome = None if item is None else item[2]
            if not isinstance(outcome, asyncio.Task) or not outcome.done() or \
                    outcome.cancelled():
                continue                         # answered already, or cancelled above
            error = outcome.exception()
            if error is not None and not isinstance(error, CloseConnection):
                logger.error("%s: the handler of a request left unanswered by the close failed",
                             self.describe(), exc_info=error)

    async def _read_loop(self) -> bool:
        """Reads and dispatches requests; True at the client's clean end of stream,
        False when this side must close the connection now."""
        limits = self.listener
        while True:
            try:
                prefix = await self.reader.readexactly(_SIZE_BYTES)
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                partial = getattr(e, "partial", b"")
                return not partial
            size = int.from_bytes(prefix, "big", signed=True)
            bytes_max = min(limits.request_bytes_max,
                            self.info.request_bytes_max or limits.request_bytes_max)
            if not 0 <= size <= bytes_max:
                self._warn_size(prefix, size, bytes_max)
                return False
            await self._wait_for_room(size)
            self.reading_body = True
            try:
                frame = await self.reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return False
            self.reading_body = False
            self.frames_read += 1
            self.last_active = asyncio.get_running_loop().time()
            if not self._dispatch(frame):
                return False

    def _warn_size(self, prefix: bytes, size: int, bytes_max: int) -> None:
        if (self.frames_read == 0 and self.listener.ssl_context is None
                and prefix.startswith(_TLS_HANDSHAKE_RECORD)):
            self.warn_closed("tls_on_plaintext", "TLS on plaintext",
                             "this looks like a TLS handshake, but this listener has no "
                             "--kafka-tls-cert: connect without TLS (security.protocol "
                             "PLAINTEXT/SASL_PLAINTEXT) or start the listener with TLS")
        else:
            self.warn_closed("request_size", "request size",
                             "it declared a request of %d bytes (the limit is %d)", size, bytes_max)

    async def _wait_for_room(self, size: int) -> None:
        """Waits for room for a request of ``size`` bytes in this connection's bounds,
        then in the listener's bytes in flight. The connection's room is not held
        while it waits for the listener's, so that its own answers can still free
        theirs (else a connection holding the whole budget would wait for itself)."""
        limits = self.listener
        async with self.room:
            await self.room.wait_for(lambda: self.requests_in_flight < limits.requests_in_flight_max
                                     and (self.bytes_in_flight == 0 or self.bytes_in_flight + size
                                          <= limits.request_bytes_in_flight_max))
            self.requests_in_flight += 1
            self.bytes_in_flight += size
        if not self.info.logged_in():          # see the module's Order and bounds
            self.bytes_taken.append(0)
            return
        await limits.request_bytes.take(size)
        self.bytes_taken.append(size)

    def _dispatch(self, frame: bytes) -> bool:
        """Decodes one request and queues its handling; False to close the connection."""
        try:
            header, body = decode_request(frame)
        except KafkaUnsupportedVersionError as e:
            if e.header.api_key != API_VERSIONS_KEY:
                self.warn_closed("bad_request", "bad request", "%s", e)
                return False
            answer = _Answer({"error_code": error_codes.UNSUPPORTED_VERSION,
                              "api_keys": supported_api_keys()})
            self.pending.put_nowait((e.header._replace(api_version=0), len(frame), answer))
            return True
        except KafkaDecodeError as e:
            self.warn_closed("bad_request", "bad request", "%s", e)
            return False
        task = asyncio.create_task(self.listener.handle(self.info, header, body))
        self.handlers.add(task)
        task.add_done_callback(self._handler_done)
        self.pending.put_nowait((header, len(frame), task))
        return True

    async def _write_loop(self) -> None:
        """Writes each response in request order; returns (closing the connection)
        when a handler fails or the client is gone."""
        while True:
            item = await self.pending.get()
            if item is None:
                return
            header, size, outcome = item
            try:
                body = outcome.body if isinstance(outcome, _Answer) else await outcome
                # Before the answer goes: a handler done before this await ran has its
                # done callback still queued, and a login answered uncounted let the
                # client see a count one short (and a user's next login pass its bound).
                self._settle_login()
                if body is not None:
                    self.listener.counts.answered(header.api_key, body)
                    await self.gather.write(encode_response(header, body))
                    self.last_active = asyncio.get_running_loop().time()
            except ConnectionError:
                return
            except CloseConnection as e:     # one kind per reason: the handler's few reasons
                if e.body is not None:
                    self.listener.counts.answered(header.api_key, e.body)
                self.warn_closed(e.close_reason, f"closed: {e}", "%s", e)
                return
            except Exception:
                self.count_close("handler_failed")
                logger.exception("%s closed: the handler of api %d v%d (correlation id %d) failed",
                                 self.describe(), header.api_key, header.api_version,
                                 header.correlation_id)
                return
            await self._release(size)

    async def _release(self, size: int) -> None:
        # At once: another connection may wait for them.
        self.listener.request_bytes.give_back(self.bytes_taken.popleft())
        async with self.room:
            self.requests_in_flight -= 1
            self.bytes_in_flight -= size
            self.room.notify_all()
