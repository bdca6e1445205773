"""A client's ZeroMQ DEALER connection to a router.

A Connection belongs to one thread at a time (ZeroMQ sockets are not
thread-safe): the caller's thread for Admin and Consumer, the sender thread
for Producer, the heartbeat thread for a group membership. Requests carry ids
from ``next_request_id()``; replies are matched by id, so many requests may be
in flight, and a reply that arrives while ``wait_for`` waits for another is
kept for the next ``recv`` (or ``wait_for``) in the order it came.

With several routers (comma-separated URLs) the DEALER connects to all of them
and queues requests only on connections that are up (ZMQ_IMMEDIATE), so
requests go to the routers that are up and not to one that is down. ZMQ
heartbeats (CLIENT_ROUTER_HEARTBEAT_TIMEOUT_MS) drop a connection whose router
stopped answering them without closing it (a stopped or hung process, a host
gone), so a hung router stops taking requests too, and a lone router's
connection is made again rather than kept half open until TCP gives up.

A send never blocks for good. When a request cannot be queued (with several
routers none is up; with one, the broker refused this client's handshake, after
which libzmq keeps no connection to queue on, or the router stopped reading) it
waits ``CLIENT_ROUTER_CONNECT_WAIT_MS`` for a connection to take it, then fails
with UnavailableError. A handshake the broker ended for good is named as such:
the connection's HandshakeWatch (handshake_watch.py) reads what the handshakes
said, and a send that cannot be queued or a request that gets no reply raises
HandshakeRefusedError once the broker has refused this client's CurveZMQ key,
or one side uses CurveZMQ and the other does not.

Direct routes (``direct=True``, Producer and Consumer by default): produce and
fetch requests sent with ``send_to`` go straight to their partition's leader
shard when the router's metadata names its direct socket (direct_routes.py),
else through the router. Replies from every socket come out of the same
``recv`` and ``wait_for``, in the order they were read. A connection with
CurveZMQ keys never goes direct (the broker offers no direct sockets then).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import zmq

from plinth import limits, protocol
from plinth.client.arguments import checked_key_file
from plinth.client.direct_routes import ROUTER, DirectRoutes
from plinth.client.handshake_watch import HandshakeWatch
from plinth.errors import (ClosedError, HandshakeRefusedError, InvalidConfigError,
                           NotLeaderError, PlinthTimeoutError, UnavailableError)
from plinth.secret_files import check_given_secret

log = logging.getLogger(__name__)

# What request_retrying retries by default: answers that say "not now, here", which
# any request may get and none has acted on.
RETRIED_ERRORS = (UnavailableError, NotLeaderError)


@dataclass(frozen=True)
class BrokerAddress:
    """Where the router is, and the CurveZMQ keys to reach it with (all or none)."""

    url: str
    curve_public_key: bytes | None = None
    curve_secret_key: bytes | None = None
    curve_server_key: bytes | None = None


def broker_url(broker: str | None) -> str:
    """Normalize a broker address: None -> $PLINTH_BROKER or the default; add tcp://.

    Several routers may be given, comma-separated: the client spreads requests
    over those it is connected to and fails over when one goes away. ValueError,
    naming the address, for one that is not tcp://HOST:PORT (ipc://PATH and
    inproc://NAME are ZeroMQ's too), or an empty one: checked here, before any
    socket, so that a mistake is told as such and not as a connection failure.
    """
    if broker is None:
        broker = os.environ.get("PLINTH_BROKER") or limits.BROKER_URL_DEFAULT
    if not broker.strip():
        raise ValueError(f"broker {broker!r} names no router: give tcp://HOST:PORT")
    urls = [url if "://" in url else f"tcp://{url}" for url in map(str.strip, broker.split(","))]
    for url in urls:
        check_url(url, "broker" if len(urls) == 1 else f"broker {broker!r}: address")
    return ",".join(urls)


# A ZeroMQ tcp:// address: a host name or interface, an IPv4 address or a bracketed
# IPv6 one (or * to bind every interface), and a decimal port.
_TCP_URL = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*|\*):"
                      r"(?P<port>[0-9]+)")
_OTHER_TRANSPORTS = ("ipc://", "inproc://")
PORT_MAX = 65535   # TCP's


def tcp_host_port(url: str) -> tuple[str, int] | None:
    """(host, port) of a tcp:// URL as check_url takes it (an IPv6 host without its
    brackets; "*" for every interface), or None for another transport or no URL."""
    match = _TCP_URL.fullmatch(url)
    if match is None:
        return None
    return match["host"].strip("[]"), int(match["port"])


def check_url(url: str, what: str, *, bind: bool = False) -> None:
    """ValueError naming ``what`` and ``url`` unless it is tcp://HOST:PORT with a port in
    1..PORT_MAX (HOST * only with ``bind``: a client cannot connect to every interface),
    or ipc://PATH or inproc://NAME. ZeroMQ itself takes a port beyond 65535 modulo
    65536 and says only "Invalid argument" about the rest."""
    if url.startswith(_OTHER_TRANSPORTS) and url.partition("://")[2]:
        return
    match = _TCP_URL.fullmatch(url)
    if match is None or (match["host"] == "*" and not bind):
        raise ValueError(f"{what} {url!r} is not tcp://HOST:PORT (HOST a name or an IP "
                         f"address{', or * for every interface' if bind else ''})")
    if not 1 <= int(match["port"]) <= PORT_MAX:
        raise ValueError(f"{what} {url!r} has port {int(match['port'])}: a port must be "
                         f"1..{PORT_MAX}")


def broker_address(broker=None, curve_key_file: str | None = None,
                   curve_server_key_file: str | None = None,
                   bootstrap_servers: str | list[str] | None = None) -> BrokerAddress:
    """The address to connect to; keys from the arguments or $PLINTH_CURVE_KEY_FILE and
    $PLINTH_CURVE_SERVER_KEY_FILE (the client's .key_secret and the server's .key).
    ``bootstrap_servers`` (kafka-python's and aiokafka's name) is ``broker`` under
    another name, also as a list of addresses; ValueError if both are given. A key
    file that is not a path is a TypeError naming its option (every client's
    constructor comes here), not a complaint that only one of the two was given."""
    checked_key_file("curve_key_file", curve_key_file)
    checked_key_file("curve_server_key_file", curve_server_key_file)
    broker = _one_broker_option(broker, bootstrap_servers)
    if isinstance(broker, BrokerAddress):
        return broker
    key_file = curve_key_file or os.environ.get("PLINTH_CURVE_KEY_FILE")
    server_file = curve_server_key_file or os.environ.get("PLINTH_CURVE_SERVER_KEY_FILE")
    if bool(key_file) != bool(server_file):
        raise ValueError("CurveZMQ needs both curve_key_file (this client's .key_secret) and "
                         "curve_server_key_file (the server's .key)")
    if not key_file:
        return BrokerAddress(broker_url(broker))
    public, secret = _load_key(key_file)
    if secret is None:
        raise ValueError(f"{key_file} holds no secret key; pass the .key_secret file")
    _check_secret_key_file(key_file)
    server_public, server_secret = _load_key(server_file)
    if server_secret is not None:
        # It works (the public key is in it too), but whoever holds the server's secret
        # key can pose as the server: it must not be spread to clients.
        raise ValueError(f"{server_file} holds the server's secret key; give clients the "
                         f"server's public .key file, and keep the .key_secret on the server")
    return BrokerAddress(broker_url(broker), public, secret, server_public)


def _one_broker_option(broker, bootstrap_servers):
    """``broker``, or ``bootstrap_servers`` as one comma-separated string of routers."""
    if bootstrap_servers is None:
        return broker
    if broker is not None:
        raise ValueError(f"broker={broker!r} and bootstrap_servers={bootstrap_servers!r} both "
                         f"name the broker; give one")
    if isinstance(bootstrap_servers, str) and bootstrap_servers.strip():
        return bootstrap_servers
    if isinstance(bootstrap_servers, (list, tuple)) and bootstrap_servers and all(
            isinstance(url, str) and url.strip() and "," not in url for url in bootstrap_servers):
        return ",".join(bootstrap_servers)
    raise ValueError(f"bootstrap_servers={bootstrap_servers!r}: give a router's address "
                     f"('127.0.0.1:7400'), or a list of them")


def _load_key(path: str) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None) of a key file as ``plinth keygen`` writes them;
    ValueError naming the file if it cannot be read or holds no key."""
    import zmq.auth

    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the CurveZMQ key file {path}: {exc}") from None


def _check_secret_key_file(path: str) -> None:
    """ValueError, naming the file, its mode and the chmod that fixes it, for a client
    secret key others may read or change: as ssh refuses such a private key, and as
    the server refuses its own (plinth/secret_files.py). Whoever reads it is this client
    to the broker, with its grants."""
    try:
        check_given_secret(Path(path), "the CurveZMQ secret key file")
    except InvalidConfigError as exc:
        raise ValueError(str(exc)) from None



class RetriedErrors:
    """The "unavailable" and "notLeader" answers a retried request got (either client's
    ``request_retrying``), so that a last try that gets no reply at all is reported with
    them: the timeout alone named that try's remaining milliseconds and hid why the
    request had waited the rest of request_timeout_ms."""

    __slots__ = ("count", "last")

    def __init__(self):
        self.count, self.last = 0, None

    def note(self, error: Exception) -> None:
        self.count, self.last = self.count + 1, error

    def raise_timeout(self, timeout: PlinthTimeoutError, timeout_ms: float) -> None:
        """Raise ``timeout`` as it is if no try was answered; else a PlinthTimeoutError
        naming the whole wait, the answers, and the last try's own timeout."""
        if self.last is None:
            raise timeout
        raise PlinthTimeoutError(
            f"no answer within {timeout_ms:.0f} ms: {self.count} {'try' if self.count == 1 else 'tries'} "
            f"answered {type(self.last).__name__}: {self.last}; then {timeout}") from timeout

class Connection:
    def __init__(self, broker: "str | BrokerAddress | None" = None,
                 context: zmq.Context | None = None, *, direct: bool = False):
        """``direct``: send produce and fetch requests straight to the leader shards
        where the broker offers it (see the module)."""
        self.address = broker_address(broker)
        self.url = self.address.url
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.DEALER)
        if self.address.curve_secret_key is not None:
            self.socket.curve_publickey = self.address.curve_public_key
            self.socket.curve_secretkey = self.address.curve_secret_key
            self.socket.curve_serverkey = self.address.curve_server_key
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        self.socket.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        self.socket.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, limits.CLIENT_ROUTER_HEARTBEAT_IVL_MS)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, limits.CLIENT_ROUTER_HEARTBEAT_TIMEOUT_MS)
        urls = self.url.split(",")
        # With several routers, queue only on live connections, so requests go
        # to the routers that are up rather than wait for one that is down.
        if len(urls) > 1:
            self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self._handshakes = HandshakeWatch(self.socket, self.address.curve_secret_key is not None,
                                          len(urls))
        self._made_s = time.monotonic()
        self._probed = False
        self._refused: list[str] = []   # the routers where nothing listened (_probe_once)
        try:
            for url in urls:
                self.socket.connect(url)
        except zmq.ZMQError as exc:
            self._handshakes.close()
            self.socket.close()
            raise ValueError(f"cannot connect to broker {self.url!r}: {exc}") from None
        self._ids = itertools.count(1)
        self._early: dict[int, tuple] = {}   # replies that arrived for other waiters
        # Requests wait_for gave up on: their late replies are dropped, not kept
        # in _early for good. Oldest forgotten first (their replies are lost).
        self._abandoned: OrderedDict[int, None] = OrderedDict()
        self.closed = False
        self._direct: DirectRoutes | None = None
        if direct and self.address.curve_secret_key is None:
            self._poller = zmq.Poller()
            self._poller.register(self.socket, zmq.POLLIN)
            self._direct = DirectRoutes(self._context, self._poller)
            self._arrived: deque = deque()   # replies read from the sockets, not handed out

    @property
    def handshake_settled(self) -> bool:
        """Whether a reply has come (some handshake succeeded): from then on the watch is
        read only when a send fails or a request times out."""
        return self._handshakes.settled

    def handshake_refusal(self) -> HandshakeRefusedError | None:
        """The error to raise once the broker has ended this connection's handshake for
        good, else None; reads the watch without waiting. The owner's thread."""
        cause = self._handshakes.cause()
        return HandshakeRefusedError(f"{self.url}: {cause}") if self._handshakes.final else None

    def _silence_hint(self) -> str:
        """What a timeout's message adds: what the failed handshakes said, if any did;
        else, while a connection that shook hands is up, that the broker is there and
        slow; else, if one shook hands but has dropped since, that the connection was
        lost and nothing answers there now; else that, besides a broker that is down, a
        CurveZMQ broker answers nothing at all to a client it does not admit, so the
        keys are worth checking. Raises HandshakeRefusedError instead once the broker
        has ended the handshake for good."""
        refusal = self.handshake_refusal()
        if refusal is not None:
            raise refusal
        cause = self._handshakes.cause()
        if cause is not None:
            return f"; {cause}"
        if self._handshakes.connected:
            return ("; the broker is there and admitted this client, but did not answer in "
                    "time: it is busy, or the request waits for a shard that does not answer "
                    "(plinth status names them; a change of a topic waits for its shards)")
        if self._refused and not self._handshakes.shook_hands:
            return (f"; the connection was refused at {', '.join(self._refused)}: nothing "
                    f"listened there (is the broker running, and on that port?)")
        if self._handshakes.shook_hands:
            lost = ("the connection to the broker was lost and has not come back"
                    if "," not in self.url else
                    "the connections to the routers were lost and none has come back")
            return (f"; {lost}: nothing answers there now (has the broker stopped, or the "
                    f"network to it failed?)")
        if self.address.curve_secret_key is not None:
            return ("; is a broker running there, does it admit this client's key (its "
                    "--authorized-keys), and is curve_server_key_file its .key? A CurveZMQ "
                    "broker answers nothing to a client it does not admit, and a plaintext "
                    "one nothing to a CurveZMQ client")
        return ("; is a broker running there? One that requires CurveZMQ answers nothing to a "
                "client without keys (curve_key_file, curve_server_key_file), and one at its "
                "open-file limit accepts no new connection (its log says \"cannot accept new "
                "connections\")")

    def _unsendable(self, waited_ms: int) -> UnavailableError:
        """The error of a request that could not be queued within ``waited_ms``."""
        if "," in self.url:
            return UnavailableError(f"none of the routers {self.url} is reachable "
                                    f"(waited {waited_ms} ms){self._silence_hint()}")
        return UnavailableError(f"cannot send to {self.url}: no connection to it took the "
                                f"request within {waited_ms} ms{self._silence_hint()}")

    def next_request_id(self) -> int:
        return next(self._ids)

    def send(self, header: bytes, payload=None) -> None:
        """Queue one request; RequestTooLargeError for a header over HEADER_BYTES_MAX,
        before anything is sent (a router from before it answered such a header with
        request id 0, so its caller waited out its timeout)."""
        protocol.check_header_bytes(header)
        if self.closed:
            raise ClosedError(f"connection to {self.url} is closed")
        frames = [header] if payload is None else [header, payload]
        for attempt in range(2):
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK, copy=payload is None)
                return
            except zmq.Again:
                pass
            # No connection takes it (yet): give the handshakes a moment, once.
            wait_ms = limits.CLIENT_ROUTER_CONNECT_WAIT_MS
            if attempt == 1 or not self.socket.poll(wait_ms, zmq.POLLOUT):
                raise self._unsendable(wait_ms)

    def send_to(self, tp: tuple[str, int], request_id: int, header: bytes,
                payload=None) -> None:
        """Send a produce or fetch request for partition ``tp``: to its leader's direct
        socket if known and connected, else through the router. Every one gets a reply
        (the producer asks acks=0 as acks=1: client/sender.py)."""
        direct = self._direct
        if direct is None:
            self.send(header, payload)
            return
        protocol.check_header_bytes(header)   # the shard's limit too (see send)
        if self.closed:
            raise ClosedError(f"connection to {self.url} is closed")
        now_s = time.monotonic()
        if direct.topics_to_ask(tp[0], now_s):
            self._ask_metadata(tp[0], now_s)
        path = ROUTER
        sock = direct.socket_for(tp)
        if sock is not None:
            frames = [header] if payload is None else [header, payload]
            try:
                sock.dealer.send_multipart(frames, zmq.NOBLOCK, copy=payload is None)
                path = sock.address
            except zmq.Again:
                direct.not_sendable(tp, sock)
        if not path:
            self.send(header, payload)
        direct.sent(tp, request_id, path)

    def forget(self, request_id: int) -> None:
        """The caller gave up waiting for ``request_id`` (its own timeout); any thread
        that owns the connection."""
        if self._direct is not None:
            self._direct.forget(request_id)

    def wait(self, timeout_ms: int, fd: int) -> bool:
        """Wait up to ``timeout_ms`` until a reply may be read (``recv``) or ``fd`` is
        readable (the caller's wake-up pipe); whether ``fd`` was seen readable."""
        if self._direct is None:
            readable, _, _ = zmq.select([self.socket, fd], [], [], timeout_ms / 1000)
            return fd in readable
        if self._arrived or self._early:
            timeout_ms = 0   # a reply is waiting: only look at fd
        self._poller.register(fd, zmq.POLLIN)
        try:
            return any(sock == fd for sock, _ in self._poller.poll(timeout_ms))
        finally:
            self._poller.unregister(fd)

    def _ask_metadata(self, topic: str, now_s: float) -> None:
        """Ask the router for ``topic``'s leaders' direct addresses; the reply is taken
        by the direct routes when it is read (never handed out)."""
        request_id = self.next_request_id()
        try:
            self.socket.send(protocol.encode_metadata(request_id, [topic]), zmq.NOBLOCK)
        except zmq.Again:
            return   # asked again with the next request for it
        self._direct.asking(topic, request_id, now_s)

    def recv(self, timeout_ms: float) -> tuple[protocol.ReplyView, object] | None:
        """One reply (view, payload frame or None), or None if none came in time.

        Replies that arrived while ``wait_for`` waited for another come first.
        """
        if self._early:
            return self._early.pop(next(iter(self._early)))
        return self._recv_socket(timeout_ms)

    def request(self, header: bytes, request_id: int, timeout_ms: float, payload=None, *,
                give_up=None):
        """Send one request and wait for its reply; raises the reply's error. ``give_up``:
        as ``wait_for``'s."""
        self.send(header, payload)
        return self.wait_for(request_id, timeout_ms, give_up=give_up)

    def request_retrying(self, encode, timeout_ms: float, retried: tuple = RETRIED_ERRORS):
        """``request(encode(request_id))``, retried with backoff while the answer is
        "unavailable" (a shard restarting, a consumer group moving to another shard)
        or "notLeader" (a partition's or group slot's leader changed: the router is
        fetching the new one), or another of ``retried`` (a read may add
        requestTimedOut: Admin.list_offsets), until ``timeout_ms`` runs out; then the
        last error is raised."""
        deadline = time.monotonic() + timeout_ms / 1000
        backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
        tries = RetriedErrors()
        while True:
            request_id = self.next_request_id()
            remaining_ms = max(1.0, (deadline - time.monotonic()) * 1000)
            try:
                return self.request(encode(request_id), request_id, remaining_ms)
            except retried as exc:
                tries.note(exc)
                if time.monotonic() + backoff_s >= deadline:
                    raise
                time.sleep(backoff_s)   # a backoff between retries, not a synchronisation
                backoff_s = min(2 * backoff_s, limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000)
            except PlinthTimeoutError as exc:
                tries.raise_timeout(exc, timeout_ms)

    def wait_for(self, request_id: int, timeout_ms: float, *, give_up=None):
        """The reply to ``request_id`` (view, payload); raises its error, or
        PlinthTimeoutError after ``timeout_ms``. ``give_up``: None, or a callable the wait
        asks every CLIENT_GIVE_UP_CHECK_MS (the caller's thread); once it answers True
        the request is abandoned (its late reply dropped) and None is returned."""
        deadline = time.monotonic() + timeout_ms / 1000
        while request_id not in self._early:
            remaining_ms = (deadline - time.monotonic()) * 1000
            wait_ms = remaining_ms
            if not self._handshakes.settled:
                wait_ms = min(wait_ms, limits.CLIENT_HANDSHAKE_CHECK_MS)
            if give_up is not None:
                wait_ms = min(wait_ms, limits.CLIENT_GIVE_UP_CHECK_MS)
            got = self._recv_socket(wait_ms) if remaining_ms > 0 else None
            if got is None and wait_ms < remaining_ms:
                if not self._handshakes.settled:
                    self._raise_refusal(request_id)
                if give_up is not None and give_up():
                    self._abandon(request_id)
                    return None
                continue
            if got is None:
                self._abandon(request_id)
                raise PlinthTimeoutError(
                    f"no reply from {self.url} to request {request_id} within {timeout_ms:.0f} ms"
                    f"{self._silence_hint()}")
            self._early[got[0].request_id] = got
        view, payload = self._early.pop(request_id)
        if view.error is not None:
            raise view.error
        return view, payload

    def _raise_refusal(self, request_id: int) -> None:
        """Give up ``request_id`` with the refusal, if the broker ended the handshake;
        else, once, ask whether anything listens at all (``_probe_once``)."""
        refusal = self.handshake_refusal()
        if refusal is not None:
            self._abandon(request_id)
            raise refusal
        self._probe_once()

    def _probe_once(self) -> None:
        """Once, CLIENT_CONNECT_PROBE_AFTER_MS after the connection was made, if no
        router has shaken hands and no handshake failed: whether anything listens at
        the routers' addresses (connect_probe.py). Each that refused is logged at
        WARNING now, and named by a timeout's message; the request waits on, as a
        broker may be starting."""
        if self._probed or (time.monotonic() - self._made_s
                            < limits.CLIENT_CONNECT_PROBE_AFTER_MS / 1000):
            return
        self._probed = True
        if self._handshakes.cause() is not None or self._handshakes.shook_hands:
            return
        from plinth.client.connect_probe import refused_urls   # (it parses URLs as here)

        self._refused = refused_urls(self.url)
        for url in self._refused:
            log.warning("%s: connection refused: nothing listens there (is the broker "
                        "running, and on that port?); waiting for one until the request "
                        "times out", url)

    def _abandon(self, request_id: int) -> None:
        self._abandoned[request_id] = None
        if len(self._abandoned) > limits.CLIENT_ABANDONED_REQUESTS_KEPT:
            self._abandoned.popitem(last=False)

    def _recv_socket(self, timeout_ms: float):
        """The next reply from the socket within ``timeout_ms``, skipping late replies
        to abandoned requests; None if none came."""
        if self._direct is not None:
            return self._recv_any(timeout_ms)
        deadline = time.monotonic() + max(0.0, timeout_ms) / 1000
        while self.socket.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            frames = self.socket.recv_multipart(copy=False)
            self._handshakes.settled = True
            view = protocol.decode_reply(frames[0].buffer)
            if view.request_id in self._abandoned:   # its waiter timed out: nobody takes it
                del self._abandoned[view.request_id]
                continue
            return view, (frames[1] if len(frames) > 1 else None)
        return None

    def _recv_any(self, timeout_ms: float):
        """``_recv_socket`` over the router's socket and the direct ones."""
        deadline = time.monotonic() + max(0.0, timeout_ms) / 1000
        arrived = self._arrived
        while not arrived:
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
            events = self._poller.poll(wait_ms)
            if not events:
                if wait_ms == 0:
                    return None
                continue
            for sock, _ in events:
                self._read(sock)
        return arrived.popleft()

    def _read(self, sock) -> None:
        """Read what ``sock`` (the router's DEALER, a direct one or a direct one's
        monitor) has, into the replies to hand out."""
        direct = self._direct
        if sock is not self.socket:
            path = direct.path_of(sock)
            if path is None:   # a monitor: a dropped connection answers its requests
                for view in direct.on_monitor(sock) or ():
                    self._arrived.append((view, None))
                return
        else:
            path = ROUTER
        for _ in range(limits.CLIENT_REPLIES_PER_DRAIN_MAX):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handshakes.settled = True
            view = protocol.decode_reply(frames[0].buffer)
            if not path and direct.take_metadata(view):
                continue
            direct.answered(view, path)
            if view.request_id in self._abandoned:   # its waiter timed out: nobody takes it
                del self._abandoned[view.request_id]
                continue
            self._arrived.append((view, frames[1] if len(frames) > 1 else None))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._direct is not None:
                self._direct.close()
            self._handshakes.close()
            self.socket.close(linger=0)
