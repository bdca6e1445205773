"""The listener's defences before a login (router/kafka/listener.py), over real
sockets on 127.0.0.1: connections that have not logged in take a small pool of
their own and are closed at the login deadline (the TLS handshake included), so
that idle connections opened by anyone cannot lock out the clients that log in,
and one address takes at most its share of that pool (other addresses are
127.0.0.2 and 127.0.0.3, which Linux routes to loopback as 127.0.0.1); a TLS client on a plaintext listener is told so; failed TLS handshakes are
logged with their reason; the lines such clients cause are rate limited per
address.

"Logging in" here is the handler lifting the connection's own request bound, as
api_sasl.py does at a SASL login: a SaslAuthenticate carrying b"let me in", or
b"let me in as NAME", which also names the connection's user as api_sasl.py does;
one user's connections logged in are bounded."""

from __future__ import annotations

import logging
import socket
import ssl

import pytest

from plinth.router.kafka import codec
from plinth.router.kafka.codec import RequestHeader
from plinth.router.kafka.listener import KafkaListener
from plinth.router.kafka.messages import API_VERSIONS, SASL_AUTHENTICATE
from tests.router.kafka.self_signed import self_signed_certificate
from tests.router.kafka.test_listener import closed_by_peer, read_response, wait_for

WAIT_S = 10.0
BOUND_BYTES = 4096          # a connection's own request bound until it logs in
LONG_MS = 60_000            # a login deadline no test reaches


async def handler(connection, header, body):
    """ApiVersions answers; a SaslAuthenticate with b"let me in" logs the connection in,
    one with b"let me in as NAME" as user NAME."""
    if header.api_key == SASL_AUTHENTICATE.key:
        login, _, user = body["auth_bytes"].partition(b" as ")
        if login == b"let me in":
            connection.principal = user.decode() or None
            connection.request_bytes_max = None
        return {"error_code": 0, "error_message": None, "auth_bytes": b""}
    return {"api_keys": codec.supported_api_keys()}


def frame(api, version: int, correlation_id: int, body: dict) -> bytes:
    header = RequestHeader(api.key, version, correlation_id, "t")
    return b"".join(bytes(p) for p in codec.encode_request(header, body))


def connect(address, client_context: ssl.SSLContext | None = None, *,
            source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(address, timeout=WAIT_S, source_address=(source, 0))
    if client_context is not None:
        sock = client_context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def log_in(address, client_context=None, *, source: str = "127.0.0.1") -> socket.socket:
    return log_in_on(connect(address, client_context, source=source))


def log_in_on(sock, correlation_id: int = 1, *, user: str = "") -> socket.socket:
    """Logs an open connection in (the listener counts it as logged in before it answers),
    as ``user`` if given."""
    token = b"let me in" + (b" as " + user.encode() if user else b"")
    sock.sendall(frame(SASL_AUTHENTICATE, 0, correlation_id, {"auth_bytes": token}))
    assert read_response(sock, SASL_AUTHENTICATE, 0)[0] == correlation_id
    return sock


def waiting(address, count: int, *, source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` connections from ``source`` that have not logged in, each served (so
    counted by the listener) before the next is opened."""
    held = []
    for i in range(count):
        held.append(connect(address, source=source))
        assert works(held[-1], 100 + i)
    return held


def closed_after_any_answer(sock) -> bool:
    """True if the listener closed the connection within WAIT_S, whatever it wrote first
    (a login's answer may be on its way as the connection is closed)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def works(sock, correlation_id: int) -> bool:
    sock.sendall(frame(API_VERSIONS, 0, correlation_id, {}))
    return read_response(sock, API_VERSIONS, 0)[0] == correlation_id


@pytest.fixture
def tls(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = self_signed_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def start(**options) -> KafkaListener:
    listener = KafkaListener("127.0.0.1", 0, handler, first_request_bytes_max=BOUND_BYTES,
                             **options)
    listener.start()
    return listener


def test_idle_connections_that_never_log_in_do_not_lock_out_the_clients_that_do(tls, caplog):
    caplog.set_level(logging.INFO, logger="plinth.router.kafka.listener")
    server_context, client_context = tls
    listener = start(ssl_context=server_context, connections_max=8,
                     connections_before_login_max=3, login_timeout_ms=1000)
    idle = []
    try:
        # Given a client that logged in
        alice = log_in(listener.address, client_context)
        # When as many TCP connections as the listener keeps are opened and left idle
        idle = [connect(listener.address) for _ in range(8)]
        # Then only the pool for logins is taken: the others are closed at once
        wait_for(lambda: listener.connection_count() == 1 + 3, "three idle ones kept")
        assert sum(closed_by_peer(sock) for sock in idle[3:]) == 5
        # ... and the client that logged in keeps working
        assert works(alice, 2)
        # And once the login deadline has closed the idle ones, a new client logs in
        assert all(closed_by_peer(sock) for sock in idle[:3])
        with log_in(listener.address, client_context) as bob:
            assert works(bob, 3) and works(alice, 4)
        alice.close()
    finally:
        for sock in idle:
            sock.close()
        listener.stop()
    # (each refusal and each deadline was a line, at most one per address and kind)
    assert caplog.text.count("have not logged in yet, the limit for them") == 1
    assert caplog.text.count("not logged in 1.0 s after it was accepted") == 1


def test_an_address_holding_its_share_of_the_login_pool_has_its_next_connection_closed_at_once():
    listener = start(connections_before_login_per_address_max=2, login_timeout_ms=LONG_MS)
    held = []
    try:
        # Given an address holding two connections that have not logged in, its limit
        held = waiting(listener.address, 2)
        # When it opens a third, Then that one is closed at once (no deadline is near)
        with connect(listener.address) as third:
            assert closed_by_peer(third)
        # And when one of the two closes, a login from the same address is let in again
        held.pop().close()
        wait_for(lambda: listener.waiting_for_login_count("127.0.0.1") == 1, "one to stop counting")
        with log_in(listener.address) as member:
            assert works(member, 2)
            # And when the other one logs in, a new connection waits for its login again
            log_in_on(held[0], 3)
            held += waiting(listener.address, 2)
            assert listener.waiting_for_login_count("127.0.0.1") == 2
            assert works(held[0], 4) and works(member, 5)
    finally:
        for sock in held:
            sock.close()
        listener.stop()
    # (the table has no entry left for an address with nothing waiting)
    assert listener._waiting_for_login_per_address == {}


def test_connections_that_logged_in_do_not_count_against_their_address():
    listener = start(connections_before_login_per_address_max=2, login_timeout_ms=LONG_MS)
    members, held = [], []
    try:
        # Given three clients from one address that logged in, one more than its limit
        members = [log_in(listener.address) for _ in range(3)]
        # When the address opens two connections that do not log in, Then both are served
        held = waiting(listener.address, 2)
        # And only a third one waiting is one too many
        with connect(listener.address) as third:
            assert closed_by_peer(third)
        assert all(works(member, 2) for member in members)
        assert listener.connection_count() == 5
    finally:
        for sock in members + held:
            sock.close()
        listener.stop()


def test_another_address_is_let_in_while_one_address_is_at_its_limit(caplog):
    listener = start(connections_before_login_per_address_max=2, login_timeout_ms=LONG_MS,
                     log_interval_s=60)
    held = []
    try:
        # Given 127.0.0.1 at its limit, its connections over it refused again and again
        held = waiting(listener.address, 2)
        for _ in range(5):
            with connect(listener.address) as refused:
                assert closed_by_peer(refused)
        # When 127.0.0.2 connects, Then it is served and logs in
        with log_in(listener.address, source="127.0.0.2") as other:
            assert works(other, 2)
            # And it may hold as many waiting connections as any address, no more
            held += waiting(listener.address, 2, source="127.0.0.2")
            with connect(listener.address, source="127.0.0.2") as refused:
                assert closed_by_peer(refused)
            assert works(other, 3)
        assert listener.waiting_for_login_count() == 4
        wait_for(lambda: caplog.text.count("refused: 2 connections from") == 2, "both lines")
    finally:
        for sock in held:
            sock.close()
        listener.stop()
    # Then each address's refusals were one line naming the address, the count and the limit
    for address in ("127.0.0.1", "127.0.0.2"):
        assert caplog.text.count(f"refused: 2 connections from {address} have not logged in "
                                 f"yet (the limit for one address is 2)") == 1


def test_a_connection_that_has_not_logged_in_is_closed_at_the_login_deadline():
    listener = start(login_timeout_ms=300)
    try:
        # Given a connection that logged in and one that only asked ApiVersions
        with log_in(listener.address) as member, connect(listener.address) as stranger:
            assert works(stranger, 2)
            # Then the stranger is closed at the deadline, the member kept
            assert closed_by_peer(stranger)
            wait_for(lambda: listener.waiting_for_login_count() == 0, "the pool to empty")
            assert works(member, 3) and listener.connection_count() == 1
    finally:
        listener.stop()


def test_a_tls_handshake_not_started_is_closed_at_the_login_deadline(tls, caplog):
    server_context, _ = tls
    listener = start(ssl_context=server_context, login_timeout_ms=300)
    try:
        # Given a TCP connection to a TLS listener that never sends its ClientHello
        with connect(listener.address) as silent:
            # Then it is closed at the login deadline, not kept for its handshake
            assert closed_by_peer(silent)
        wait_for(lambda: listener.connection_count() == 0, "the connection to go")
    finally:
        listener.stop()


def test_a_tls_client_on_a_plaintext_listener_is_told_the_listener_has_no_tls(caplog):
    listener = KafkaListener("127.0.0.1", 0, handler)
    listener.start()
    try:
        # Given a client configured for TLS, When it connects to a plaintext listener
        with pytest.raises((ssl.SSLError, ConnectionError)):
            connect(listener.address, ssl.create_default_context())
        # Then the line says it looks like TLS, not that a request is too big
        wait_for(lambda: "looks like a TLS handshake" in caplog.text, "the line")
    finally:
        listener.stop()
    assert ("this looks like a TLS handshake, but this listener has no --kafka-tls-cert: "
            "connect without TLS (security.protocol PLAINTEXT/SASL_PLAINTEXT) or start the "
            "listener with TLS") in caplog.text
    assert "declared a request of" not in caplog.text


def test_failed_tls_handshakes_are_logged_with_the_reason(tls, caplog):
    server_context, _ = tls
    listener = start(ssl_context=server_context, log_interval_s=0.001)   # every line, here
    try:
        # Given a plaintext Kafka client on a TLS listener
        with connect(listener.address) as plain:
            plain.sendall(frame(API_VERSIONS, 0, 1, {}))
            assert closed_by_peer(plain)
        wait_for(lambda: "TLS handshake failed" in caplog.text, "the plaintext client's line")
        assert "its TLS handshake failed: WRONG_VERSION_NUMBER: a plaintext client?" in caplog.text
        # And a TLS client that does not trust the certificate: its alert is the reason
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(listener.address, ssl.create_default_context())
        wait_for(lambda: "UNKNOWN_CA" in caplog.text.upper(), "the distrusting client's line")
    finally:
        listener.stop()


def test_refusals_are_logged_once_per_address_per_interval_saying_how_many_were_dropped(caplog):
    listener = KafkaListener("127.0.0.1", 0, handler, connections_max=1, log_interval_s=60)
    listener.start()
    try:
        with connect(listener.address) as holder:
            assert works(holder, 1)
            # When twenty connections are refused from one address
            for _ in range(20):
                with connect(listener.address) as refused:
                    assert closed_by_peer(refused)
            # Then one line was written for them
            wait_for(lambda: "refused" in caplog.text, "the refusal line")
            assert caplog.text.count("refused: 1 connections open, the limit") == 1
    finally:
        listener.stop()
    # And with a short interval, a later line says how many were dropped meanwhile
    listener = KafkaListener("127.0.0.1", 0, handler, connections_max=1, log_interval_s=0.2)
    listener.start()
    try:
        with connect(listener.address) as holder:
            assert works(holder, 1)

            def refused_again() -> bool:
                with connect(listener.address) as refused:
                    assert closed_by_peer(refused)
                return "such lines of this source dropped" in caplog.text
            wait_for(refused_again, "a line counting the dropped ones")
    finally:
        listener.stop()


def test_one_user_holds_at_most_its_share_of_the_connections_and_other_users_log_in(caplog):
    listener = start(connections_max=8, connections_before_login_max=2,
                     connections_per_principal_max=3, login_timeout_ms=LONG_MS,
                     log_interval_s=60)
    held = []
    try:
        # Given a user holding three connections logged in, its bound
        held = [log_in_on(connect(listener.address, source=f"127.0.0.{i}"), user="kbob")
                for i in (1, 2, 3)]
        assert listener.logged_in_count("kbob") == 3
        # When it logs in more, from any address, Then each is closed just after its login
        for i in (4, 5, 6):
            with connect(listener.address, source=f"127.0.0.{i}") as extra:
                extra.sendall(frame(SASL_AUTHENTICATE, 0, 1, {"auth_bytes": b"let me in as kbob"}))
                assert closed_after_any_answer(extra)
        wait_for(lambda: listener.connection_count() == 3, "the extra ones to go")
        # And another user logs in, and the three kept keep working
        with log_in_on(connect(listener.address), user="kalice") as alice:
            assert works(alice, 2) and all(works(sock, 3) for sock in held)
            assert listener.logged_in_count("kalice") == 1
        # And once one of the three closes, the user logs in again
        held.pop().close()
        wait_for(lambda: listener.logged_in_count("kbob") == 2, "one to stop counting")
        held.append(log_in_on(connect(listener.address), user="kbob"))
        assert works(held[-1], 4) and listener.logged_in_count("kbob") == 3
    finally:
        for sock in held:
            sock.close()
        listener.stop()
    # Then the refusals were one line naming the user, its count and the bound
    assert caplog.text.count("user 'kbob' holds 3 connections logged in at this listener "
                             "(the limit for one user is 3)") == 1
    # (and the table has no entry left for a user with nothing open)
    assert listener._logged_in_per_principal == {}


def test_connections_without_a_user_are_not_bounded_per_user():
    listener = start(connections_per_principal_max=1, login_timeout_ms=LONG_MS)
    held = []
    try:
        # Given a listener whose handler names no user at the login (as without SASL)
        # When three connections log in, Then all three are kept
        held = [log_in(listener.address) for _ in range(3)]
        assert all(works(sock, 2) for sock in held) and listener.connection_count() == 3
    finally:
        for sock in held:
            sock.close()
        listener.stop()
