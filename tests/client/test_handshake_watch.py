"""client/handshake_watch.py, through client/connection.py: what a client is told when
the broker's handshake refuses it, against a real CurveZMQ ROUTER whose keys are
checked by the router's own ZAP handler (router/security.py), on loopback.

libzmq drops a connection's pipe for good once the ZAP handler refuses its key; a
send that came after that used to block for ever (CI saw an Admin hang there)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from plinth import limits, protocol
from plinth.client.aio.connection import AIOConnection
from plinth.client.connection import Connection
from plinth.errors import HandshakeRefusedError, PlinthTimeoutError, UnavailableError
from plinth.router.security import Security
from tests.support import curve_key_pair

WAIT_S = 10.0   # the bound on waiting for the handshake's verdict


class CurveBroker:
    """A CURVE ROUTER on its own context, admitting the keys in ``authorized``; it
    answers every request with an empty listOffsets reply, unless not ``answers``."""

    def __init__(self, keys: Path, authorized: Path, curve: bool = True, answers: bool = True,
                 reply_delay_s: float = 0.0):
        self.answers = answers
        self.reply_delay_s = reply_delay_s   # a slow broker: each reply that much later
        self.context = zmq.Context()
        self.security = None
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve:
            self.security = Security(keys / "server.key_secret", authorized)
            self.security.start(self.context)
            self.security.apply(self.socket)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(50):
                continue
            client, header, *_ = self.socket.recv_multipart()
            if not self.answers:
                continue
            time.sleep(self.reply_delay_s)   # the broker's own slowness, not a synchronisation
            request_id = protocol.decode_request(header).request_id
            self.socket.send_multipart(
                [client, protocol.encode_offsets_reply(request_id, protocol.PartitionInfo(0))])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        if self.security is not None:
            self.security.stop()
        self.socket.close()
        self.context.term()


@pytest.fixture
def keys(tmp_path):
    """The server's key pair, "admitted" (authorized) and "stranger" (not), and the
    authorized-keys directory."""
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    keys.mkdir()
    authorized.mkdir()
    for name in ("server", "admitted", "stranger"):
        curve_key_pair(keys, name)
    (authorized / "admitted.key").write_text((keys / "admitted.key").read_text())
    return keys, authorized


@pytest.fixture
def broker(keys):
    """``broker(curve=True, answers=True, authorized=None, reply_delay_s=0)``: a
    CurveBroker (``authorized``: its keys directory, else the one admitting "admitted"),
    closed at the end."""
    made = []

    def make(curve: bool = True, answers: bool = True, authorized: Path | None = None,
             reply_delay_s: float = 0.0) -> CurveBroker:
        made.append(CurveBroker(keys[0], authorized or keys[1], curve=curve, answers=answers,
                                reply_delay_s=reply_delay_s))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def connections():
    made = []

    def make(url: str, keys_dir: Path | None, client: str = "admitted",
             server: str = "server", kind=Connection) -> Connection:
        address = url
        if keys_dir is not None:
            from plinth.client.connection import broker_address
            address = broker_address(url, curve_key_file=str(keys_dir / f"{client}.key_secret"),
                                     curve_server_key_file=str(keys_dir / f"{server}.key"))
        made.append(kind(address))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


def list_offsets(request_id: int) -> bytes:
    return protocol.encode_list_offsets(request_id, "t", 0)


def verdict(conn: Connection) -> str:
    """The handshake's failure as the connection's watch reads it, waited for (the
    handshake is libzmq's, on its I/O thread)."""
    deadline = time.monotonic() + WAIT_S
    while (cause := conn._handshakes.cause()) is None:
        assert time.monotonic() < deadline, "no handshake failure seen"
        conn.socket.poll(10)   # a bounded wait for libzmq's I/O thread, not a synchronisation
    return cause


@pytest.mark.timeout(60)
def test_a_client_whose_key_was_refused_is_told_so_at_once_not_left_blocked_in_send(
        keys, broker, connections):
    # Given a client whose key the broker's ZAP handler has already refused (libzmq
    # then keeps no connection that a request could be queued on)
    conn = connections(broker().url, keys[0], client="stranger")
    assert "refused this client's CurveZMQ key" in verdict(conn)
    # When it sends a request, then Then it is told why, within the connect wait
    started = time.monotonic()
    with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key "
                                                 "\\(ZAP status 400\\).*--authorized-keys"):
        conn.request(list_offsets(1), 1, 5_000)
    assert time.monotonic() - started < limits.CLIENT_ROUTER_CONNECT_WAIT_MS / 1000 + 2


@pytest.mark.timeout(60)
def test_a_refused_client_that_sent_before_the_refusal_gets_the_refusal_not_a_timeout(
        keys, broker, connections):
    conn = connections(broker().url, keys[0], client="stranger")
    # A request queued at once, before the handshake's verdict, is never answered...
    conn.send(list_offsets(1))
    # ...and waiting for it ends with the refusal named, as soon as the handshake's
    # verdict is in, not at the end of its timeout
    started = time.monotonic()
    with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
        conn.wait_for(1, 30_000)
    assert time.monotonic() - started < 10


@pytest.mark.timeout(60)
def test_a_refused_asyncio_client_waiting_for_a_reply_gets_the_refusal_not_a_timeout(
        keys, broker, connections):
    conn = connections(broker().url, keys[0], client="stranger", kind=AIOConnection)
    conn.send(list_offsets(1))

    async def wait():
        return await conn.wait_for_async(1, 30_000)

    started = time.monotonic()
    with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
        asyncio.run(wait())
    assert time.monotonic() - started < 10


def test_an_admitted_client_is_answered_and_its_watch_saw_no_failure(keys, broker, connections):
    conn = connections(broker().url, keys[0])
    view, _ = conn.request(list_offsets(1), 1, 5_000)
    assert view.request_id == 1
    assert conn._handshakes.cause() is None


# (the broker uses CurveZMQ, the client's keys or None, its server key, what it is told)
MISMATCHES = [
    pytest.param(True, None, "server", HandshakeRefusedError,
                 "the broker requires CurveZMQ and this client has no keys", id="no keys"),
    # libzmq retries this handshake at each reconnect: a hint, not a final refusal
    pytest.param(True, "admitted", "stranger", PlinthTimeoutError,
                 "broke off: is curve_server_key_file the broker's public .key",
                 id="wrong server key"),
    pytest.param(False, "admitted", "server", HandshakeRefusedError,
                 "this client uses CurveZMQ .* and the broker does not", id="plaintext broker"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("curve, client, server, error, told", MISMATCHES)
def test_a_client_whose_security_does_not_match_the_brokers_is_told_what_its_handshake_said(
        keys, broker, connections, curve, client, server, error, told):
    conn = connections(broker(curve=curve).url, keys[0] if client else None,
                       client=client or "admitted", server=server)
    verdict(conn)
    with pytest.raises(error, match=told):
        conn.request(list_offsets(1), 1, 2_000)


@pytest.mark.timeout(60)
def test_an_asyncio_client_whose_key_was_refused_is_told_so_without_blocking_its_loop(
        keys, broker, connections):
    conn = connections(broker().url, keys[0], client="stranger", kind=AIOConnection)
    verdict(conn)

    async def ask():
        return await conn.request_async(list_offsets(1), 1, 5_000)

    with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
        asyncio.run(ask())


@pytest.mark.timeout(60)
def test_a_full_queue_to_a_router_that_reads_nothing_is_unavailable_not_a_blocked_send(
        connections, monkeypatch):
    # Given a router that accepts the connection but never reads (a hung router), and a
    # client whose queue to it is full
    monkeypatch.setattr(limits, "CLIENT_ROUTER_CONNECT_WAIT_MS", 200)
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.RCVHWM, 1)
    try:
        url = f"tcp://127.0.0.1:{silent.bind_to_random_port('tcp://127.0.0.1')}"
        conn = connections(url, None)
        payload = b"x" * 65_536
        # When it keeps sending, Then a send is refused (unavailable, naming the router
        # and the wait) instead of blocking
        with pytest.raises(UnavailableError, match=f"cannot send to {url}: no connection to it "
                                                   f"took the request within 200 ms"):
            for request_id in range(1, 10 * limits.SOCKET_MESSAGES_HWM):
                conn.send(list_offsets(request_id), payload)
    finally:
        silent.close(linger=0)
        context.term()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("curve", [True, False], ids=["CurveZMQ", "plaintext"])
def test_a_timeout_from_a_broker_that_admitted_the_client_says_the_broker_is_there_and_slow(
        keys, broker, connections, curve):
    # Given a broker that admits the client and takes its requests, but answers none
    # (a change waiting for a stopped shard)
    conn = connections(broker(curve=curve, answers=False).url, keys[0] if curve else None)
    # When a request times out / Then the client is told the broker is there, not asked
    # whether one runs
    with pytest.raises(PlinthTimeoutError, match="the broker is there and admitted this "
                                                 "client, but did not answer in time") as err:
        conn.request(list_offsets(1), 1, 1_000)
    assert "is a broker running there" not in str(err.value)


@pytest.mark.timeout(60)
def test_a_client_with_nothing_listening_at_its_address_is_asked_whether_a_broker_runs_there(
        connections):
    with socket.socket() as probe:   # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = connections(f"tcp://127.0.0.1:{port}", None)
    # (before the probe's time: after it, the refusal is named, test_connection.py)
    with pytest.raises((UnavailableError, PlinthTimeoutError),
                       match="is a broker running there"):
        conn.request(list_offsets(1), 1, limits.CLIENT_CONNECT_PROBE_AFTER_MS // 2)


@pytest.mark.timeout(60)
def test_a_client_of_several_routers_one_of_which_refuses_it_is_served_by_the_others(
        keys, broker, connections, tmp_path):
    # Given two routers, one whose --authorized-keys lacks the client's key, the other
    # admitting it and slow to answer
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    refusing = broker(authorized=nobody)
    slow = broker(reply_delay_s=0.3)
    conn = connections(f"{refusing.url},{slow.url}", keys[0])
    assert "refused this client's CurveZMQ key" in verdict(conn)
    # When it makes a request / Then the other router answers it, and the refusal,
    # naming its router, is only a hint
    view, _ = conn.request(list_offsets(1), 1, 5_000)
    assert view.request_id == 1
    assert conn.handshake_refusal() is None
    assert conn._handshakes.cause().startswith(f"{refusing.url}: the broker refused")


@pytest.mark.timeout(60)
def test_a_client_every_one_of_whose_routers_refuses_it_is_told_so(
        keys, broker, connections, tmp_path):
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    urls = ",".join(broker(authorized=nobody).url for _ in range(2))
    conn = connections(urls, keys[0])
    with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
        conn.request(list_offsets(1), 1, 10_000)
