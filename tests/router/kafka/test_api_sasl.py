"""The gateway's login gate (gateway.py) and its SASL APIs (api_sasl.py), called
as the listener calls them: before a login only ApiVersions, SaslHandshake and
SaslAuthenticate are served; a SCRAM-SHA-256 login made by a real client
computation sets the principal, which each later request's task acts for
(backend.PRINCIPAL); a failed login closes the connection at its next request;
out-of-order or unsupported SASL requests get Kafka's SASL error codes; over a
real listener, failed logins under a fresh user name each write a bounded number
of lines."""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import pytest

from plinth import limits
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import PRINCIPAL
from plinth.router.kafka.codec import API_KEYS, RequestHeader
from plinth.router.kafka.gateway import KafkaGateway
from plinth.router.kafka.listener import CloseConnection, ConnectionInfo, KafkaListener
from plinth.router.kafka.messages import API_VERSIONS, SASL_AUTHENTICATE, SASL_HANDSHAKE
from plinth.router.kafka.sasl_users import credential_for
from tests.router.kafka.test_listener import closed_by_peer, read_response
from tests.router.kafka.test_listener_login import closed_after_any_answer, connect, frame
from tests.router.kafka.test_sasl_scram import client_final_for

USERS = {"alice": credential_for("alice-pw", 4096)}

SASL_LOGGER = "plinth.router.kafka.api_sasl"


def header(api: str, version: int) -> RequestHeader:
    return RequestHeader(API_KEYS[api], version, 7, "test")


def call(gateway, connection, api: str, version: int, body: dict):
    return asyncio.run(gateway.handle(connection, header(api, version), body))


@pytest.fixture
def gateway() -> KafkaGateway:
    gateway = KafkaGateway(backend=None, cluster=None, sasl_users=USERS)
    gateway.sasl_plain_allowed = True   # as on loopback or with TLS (service.py)
    seen = []

    async def probe(gateway_, header_, body, connection):   # stands for any Plinth-backed API
        seen.append(PRINCIPAL.get())
        return {"error_code": kafka.NONE}

    gateway._handlers[API_KEYS["Metadata"]] = probe
    gateway.seen = seen
    return gateway


def connection() -> ConnectionInfo:
    return ConnectionInfo(1, ("127.0.0.1", 5555), request_bytes_max=512 * 1024)


def test_before_a_login_only_api_versions_and_sasl_are_served(gateway):
    conn = connection()
    assert call(gateway, conn, "ApiVersions", 3, {})["error_code"] == kafka.NONE
    with pytest.raises(CloseConnection, match="before a SASL login"):
        call(gateway, conn, "Metadata", 1, {"topics": None})
    assert gateway.seen == []


def test_a_scram_login_sets_the_principal_that_later_requests_act_for(gateway):
    conn = connection()
    answer = call(gateway, conn, "SaslHandshake", 1, {"mechanism": "SCRAM-SHA-256"})
    assert answer["error_code"] == kafka.NONE and "PLAIN" in answer["mechanisms"]
    first = b"n,,n=alice,r=clientnonce"
    server_first = call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": first})["auth_bytes"]
    final = client_final_for("alice-pw", server_first, first[3:])
    answer = call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": final})
    assert answer["error_code"] == kafka.NONE and answer["auth_bytes"].startswith(b"v=")
    call(gateway, conn, "Metadata", 1, {"topics": None})
    assert gateway.seen == ["alice"] and PRINCIPAL.get() is None   # set in the task only
    assert conn.request_bytes_max is None   # the listener's bound from the login on
    assert conn.principal == "alice"        # the user whose connections the listener bounds


def test_a_failed_login_is_answered_and_the_next_request_closes_the_connection(gateway):
    conn = connection()
    call(gateway, conn, "SaslHandshake", 1, {"mechanism": "PLAIN"})
    answer = call(gateway, conn, "SaslAuthenticate", 1, {"auth_bytes": b"\0alice\0bad-pass-123"})
    assert answer["error_code"] == kafka.SASL_AUTHENTICATION_FAILED
    assert "user 'alice'" in answer["error_message"] and "bad-pass-123" not in answer["error_message"]
    with pytest.raises(CloseConnection, match="after a failed SASL login"):
        call(gateway, conn, "ApiVersions", 3, {})


@pytest.mark.parametrize("steps, code", [
    ([("SaslHandshake", 0, {"mechanism": "PLAIN"})], kafka.UNSUPPORTED_VERSION),
    ([("SaslHandshake", 1, {"mechanism": "GSSAPI"})], kafka.UNSUPPORTED_SASL_MECHANISM),
    ([("SaslAuthenticate", 2, {"auth_bytes": b"\0alice\0alice-pw"})], kafka.ILLEGAL_SASL_STATE),
    ([("SaslHandshake", 1, {"mechanism": "PLAIN"}), ("SaslHandshake", 1, {"mechanism": "PLAIN"})],
     kafka.ILLEGAL_SASL_STATE),
    ([("SaslHandshake", 1, {"mechanism": "PLAIN"}),
      ("SaslAuthenticate", 2, {"auth_bytes": b"\0alice\0" + b"x" * 5000})],
     kafka.SASL_AUTHENTICATION_FAILED),
])
def test_sasl_requests_out_of_order_or_unsupported_get_kafkas_sasl_errors(gateway, steps, code):
    conn = connection()
    answers = [call(gateway, conn, api, version, body) for api, version, body in steps]
    assert answers[-1]["error_code"] == code
    assert "principal" not in conn.state and conn.request_bytes_max == 512 * 1024


def test_a_second_plain_round_while_the_first_is_checked_is_an_illegal_state(gateway):
    # Given a PLAIN login whose password check runs off the loop
    conn = connection()
    call(gateway, conn, "SaslHandshake", 1, {"mechanism": "PLAIN"})

    async def two_rounds():
        first = asyncio.ensure_future(gateway.handle(
            conn, header("SaslAuthenticate", 2), {"auth_bytes": b"\0alice\0alice-pw"}))
        await asyncio.sleep(0)   # one turn of the loop: the first runs up to its check
        assert conn.state.get("sasl_checking")
        second = await gateway.handle(conn, header("SaslAuthenticate", 2),
                                      {"auth_bytes": b"\0alice\0alice-pw"})
        return await first, second

    # When a second round comes meanwhile, Then it is refused and the first logs in
    first, second = asyncio.run(two_rounds())
    assert second["error_code"] == kafka.ILLEGAL_SASL_STATE
    assert first["error_code"] == kafka.NONE and conn.state["principal"] == "alice"


def test_without_tls_off_loopback_plain_is_refused_before_the_password_is_sent(gateway, caplog):
    # Given a listener on a non-loopback address without TLS (service.py decides)
    gateway.sasl_plain_allowed = False
    conn = connection()
    # When a client asks for PLAIN
    with caplog.at_level(logging.WARNING, logger="plinth.router.kafka.api_sasl"):
        answer = call(gateway, conn, "SaslHandshake", 1, {"mechanism": "PLAIN"})
    # Then the handshake is refused, SCRAM-SHA-256 the one mechanism offered, so the
    # client never sends its password; and the log says why and what to use instead
    assert answer == {"error_code": kafka.UNSUPPORTED_SASL_MECHANISM,
                      "mechanisms": ["SCRAM-SHA-256"]}
    assert "sasl_mechanism" not in conn.state
    [line] = [r.getMessage() for r in caplog.records if r.name == SASL_LOGGER]
    assert line.endswith(
        "SaslHandshake v1 for 'PLAIN' refused (error 33): PLAIN would send the password in "
        "the clear, and this listener has no TLS and is not on loopback; log in with "
        "SCRAM-SHA-256, or give the listener --kafka-tls-cert and --kafka-tls-key")
    # And SCRAM-SHA-256 is served as before
    answer = call(gateway, connection(), "SaslHandshake", 1, {"mechanism": "SCRAM-SHA-256"})
    assert answer == {"error_code": kafka.NONE, "mechanisms": ["SCRAM-SHA-256"]}


def _failed_login(gateway, mechanism: str, user: str) -> None:
    conn = connection()
    call(gateway, conn, "SaslHandshake", 1, {"mechanism": mechanism})
    if mechanism == "PLAIN":
        token = b"\0" + user.encode() + b"\0wrong-pw"
    else:
        first = f"n,,n={user},r=clientnonce".encode()
        server_first = call(gateway, conn, "SaslAuthenticate", 2,
                            {"auth_bytes": first})["auth_bytes"]
        token = client_final_for("wrong-pw", server_first, first[3:])
    answer = call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": token})
    assert answer["error_code"] == kafka.SASL_AUTHENTICATION_FAILED


def test_failed_logins_are_logged_once_per_user_and_mechanism_per_interval(gateway, caplog):
    # When alice fails ten PLAIN logins, then once with SCRAM-SHA-256, and bob once
    with caplog.at_level(logging.WARNING, logger="plinth.router.kafka.api_sasl"):
        for _ in range(10):
            _failed_login(gateway, "PLAIN", "alice")
        _failed_login(gateway, "SCRAM-SHA-256", "alice")
        _failed_login(gateway, "PLAIN", "bob")
    # Then one line was written for each user and mechanism, not one per try
    # (only this module's: a kafka-python client an earlier test left warns meanwhile)
    lines = [r.getMessage() for r in caplog.records if r.name == SASL_LOGGER]
    assert len(lines) == 3, lines
    assert "PLAIN: user 'alice'" in lines[0] and "SCRAM-SHA-256: user 'alice'" in lines[1]
    assert "PLAIN: user 'bob'" in lines[2]


@pytest.fixture
def sasl_listener(gateway):
    """The gateway behind a real listener on 127.0.0.1, as service.py starts it."""
    listener = KafkaListener("127.0.0.1", 0, gateway.handle,
                             first_request_bytes_max=limits.KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX)
    listener.start()
    yield listener
    listener.stop()


def _scram_login_with_a_wrong_nonce(address, user: str) -> None:
    """One failed SCRAM-SHA-256 login as ``user`` over its own connection, as the tester's
    log flood sent them; returns once the listener closed the connection."""
    with _send_scram_login_with_a_wrong_nonce(address, user) as sock:
        answer = read_response(sock, SASL_AUTHENTICATE, 2)[1]
        assert answer["error_code"] == kafka.SASL_AUTHENTICATION_FAILED
        sock.sendall(frame(API_VERSIONS, 0, 4, {}))   # after a failed login: closes it
        assert closed_by_peer(sock)


def test_failed_logins_under_fresh_user_names_write_a_bounded_number_of_lines(
        gateway, sasl_listener, caplog):
    bound = limits.UNAUTHENTICATED_LOG_LINES_MAX
    gateway.failed_login_delay_s = 0     # this test counts lines, not time
    # When a client fails logins over real connections, a fresh user name for each
    with caplog.at_level(logging.WARNING, logger="plinth.router.kafka.api_sasl"):
        for n in range(bound + 30):
            _scram_login_with_a_wrong_nonce(sasl_listener.address, f"u{n}x")
    # Then at most the bound of lines a minute was written, not one per try
    failed = [r.getMessage() for r in caplog.records if "SASL login failed" in r.getMessage()]
    assert len(failed) == bound, len(failed)
    assert "user 'u0x'" in failed[0] and "the nonce does not end with the one the server sent" in failed[0]
    # And the last says that the next are dropped and counted
    assert failed[-1].endswith(f"(the last of {bound} such lines in 60 s, the limit: the next "
                               f"are dropped and counted)")


def _send_scram_login_with_a_wrong_nonce(address, user: str):
    """A connection whose SCRAM-SHA-256 login as ``user`` fails: its failing message is
    sent, its answer not read."""
    sock = connect(address)
    sock.sendall(frame(SASL_HANDSHAKE, 1, 1, {"mechanism": "SCRAM-SHA-256"}))
    assert read_response(sock, SASL_HANDSHAKE, 1)[1]["error_code"] == kafka.NONE
    first = f"n,,n={user},r=clientnonce".encode()
    sock.sendall(frame(SASL_AUTHENTICATE, 2, 2, {"auth_bytes": first}))
    assert read_response(sock, SASL_AUTHENTICATE, 2)[1]["error_code"] == kafka.NONE
    final = b"c=biws,r=not-the-servers-nonce,p=" + base64.b64encode(b"x" * 32)
    sock.sendall(frame(SASL_AUTHENTICATE, 2, 3, {"auth_bytes": final}))
    return sock


def test_a_failed_login_is_answered_no_sooner_than_the_failed_login_delay(gateway, sasl_listener):
    # Given a delay (Kafka's connection.failed.authentication.delay.ms) long beside a
    # SCRAM failure's own time
    default_s = getattr(gateway, "failed_login_delay_s", None)
    gateway.failed_login_delay_s = 0.5
    # When a login fails (SCRAM's final message: no PBKDF2 spent on it)
    started_s = time.monotonic()
    with _send_scram_login_with_a_wrong_nonce(sasl_listener.address, "alice") as sock:
        answer = read_response(sock, SASL_AUTHENTICATE, 2)[1]
        waited_s = time.monotonic() - started_s
        # Then its answer came no sooner than the delay (a lower bound only)
        assert answer["error_code"] == kafka.SASL_AUTHENTICATION_FAILED
        assert waited_s >= 0.5, waited_s
        # And the connection is closed at its next request, as before
        sock.sendall(frame(API_VERSIONS, 0, 4, {}))
        assert closed_by_peer(sock)
    # (the delay is the limit's unless a test changes it)
    assert default_s == limits.KAFKA_FAILED_AUTHENTICATION_DELAY_MS / 1000


def test_a_failed_login_waiting_its_delay_holds_up_no_other_connection(gateway, sasl_listener):
    # Given a failed login whose answer waits a minute
    gateway.failed_login_delay_s = 60.0
    with _send_scram_login_with_a_wrong_nonce(sasl_listener.address, "mallory") as waiting:
        # When another client logs in meanwhile (PLAIN: its check on a thread of its own)
        with connect(sasl_listener.address) as sock:
            sock.sendall(frame(SASL_HANDSHAKE, 1, 1, {"mechanism": "PLAIN"}))
            assert read_response(sock, SASL_HANDSHAKE, 1)[1]["error_code"] == kafka.NONE
            sock.sendall(frame(SASL_AUTHENTICATE, 2, 2, {"auth_bytes": b"\0alice\0alice-pw"}))
            # Then it is logged in and served at once
            assert read_response(sock, SASL_AUTHENTICATE, 2)[1]["error_code"] == kafka.NONE
            sock.sendall(frame(API_VERSIONS, 0, 3, {}))
            assert read_response(sock, API_VERSIONS, 0)[0] == 3
        # And the failed one is still waiting for its answer, its connection open
        waiting.setblocking(False)
        with pytest.raises(BlockingIOError):
            waiting.recv(1)
        assert sasl_listener.waiting_for_login_count() == 1   # in the bounded pool


def test_a_user_logged_in_on_as_many_connections_as_it_may_has_its_next_closed(gateway):
    # Given a listener that lets one user hold two connections logged in
    listener = KafkaListener("127.0.0.1", 0, gateway.handle, connections_per_principal_max=2,
                             first_request_bytes_max=limits.KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX)
    listener.start()
    held = []
    try:
        def plain_login():
            sock = connect(listener.address)
            sock.sendall(frame(SASL_HANDSHAKE, 1, 1, {"mechanism": "PLAIN"}))
            assert read_response(sock, SASL_HANDSHAKE, 1)[1]["error_code"] == kafka.NONE
            sock.sendall(frame(SASL_AUTHENTICATE, 2, 2, {"auth_bytes": b"\0alice\0alice-pw"}))
            return sock
        # When alice logs in on two connections, then on a third (one after the other:
        # the PLAIN checks run in two threads, so logins sent together may end in any
        # order, and the one closed is whichever ends last)
        held = [plain_login() for _ in range(2)]
        assert all(read_response(sock, SASL_AUTHENTICATE, 2)[1]["error_code"] == kafka.NONE
                   for sock in held)
        held.append(plain_login())
        # Then the SASL login named her to the listener, which kept two and closed the third
        assert closed_after_any_answer(held[2])
        assert listener.logged_in_count("alice") == 2
    finally:
        for sock in held:
            sock.close()
        listener.stop()


# --- A reload of the users file (SIGHUP, service.py) and the connections logged in ---

def _logged_in(gateway, mechanism: str, user: str, password: str) -> ConnectionInfo:
    """A connection logged in as ``user`` by a real login with ``mechanism``."""
    conn = connection()
    call(gateway, conn, "SaslHandshake", 1, {"mechanism": mechanism})
    if mechanism == "PLAIN":
        token = b"\0" + user.encode() + b"\0" + password.encode()
    else:
        first = f"n,,n={user},r=clientnonce".encode()
        server_first = call(gateway, conn, "SaslAuthenticate", 2,
                            {"auth_bytes": first})["auth_bytes"]
        token = client_final_for(password, server_first, first[3:])
    assert call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": token})["error_code"] == 0
    return conn


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_reload_that_removes_a_user_closes_its_connection_at_its_next_request(
        gateway, mechanism):
    # Given alice and bob logged in, each served
    gateway.sasl_users = {**USERS, "bob": credential_for("bob-pw", 4096)}
    alice, bob = (_logged_in(gateway, mechanism, "alice", "alice-pw"),
                  _logged_in(gateway, mechanism, "bob", "bob-pw"))
    call(gateway, alice, "Metadata", 1, {"topics": None})
    # When a reload swaps in users without alice
    gateway.sasl_users = {"bob": gateway.sasl_users["bob"]}
    # Then her connection's next request, whatever it is, closes it unserved
    for api, version, body in (("Metadata", 1, {"topics": None}), ("ApiVersions", 3, {})):
        with pytest.raises(CloseConnection, match="user 'alice' was removed .* log in again"):
            call(gateway, alice, api, version, body)
    assert gateway.seen == ["alice"]
    # And bob, still in the file with the same credentials, is served as before
    call(gateway, bob, "Metadata", 1, {"topics": None})
    assert gateway.seen == ["alice", "bob"]


def test_a_reload_that_changes_a_password_closes_the_connections_logged_in_with_the_old_one(
        gateway):
    # Given alice logged in with her old password
    old = _logged_in(gateway, "SCRAM-SHA-256", "alice", "alice-pw")
    # When a reload gives her a new one (kafka-user add again)
    gateway.sasl_users = {"alice": credential_for("alices-new-pw", 4096)}
    # Then the connection made with the old one is closed at its next request
    with pytest.raises(CloseConnection, match="its password changed"):
        call(gateway, old, "Metadata", 1, {"topics": None})
    # And a login with the new password is served, the old one refused
    call(gateway, _logged_in(gateway, "PLAIN", "alice", "alices-new-pw"), "Metadata", 1,
         {"topics": None})
    conn = connection()
    call(gateway, conn, "SaslHandshake", 1, {"mechanism": "PLAIN"})
    answer = call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": b"\0alice\0alice-pw"})
    assert answer["error_code"] == kafka.SASL_AUTHENTICATION_FAILED
    assert gateway.seen == ["alice"]


def test_a_scram_login_begun_before_a_reload_that_removed_its_user_is_closed_after_it(gateway):
    # Given alice's SCRAM login half done (the server-first sent) with the old users
    conn = connection()
    call(gateway, conn, "SaslHandshake", 1, {"mechanism": "SCRAM-SHA-256"})
    first = b"n,,n=alice,r=clientnonce"
    server_first = call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": first})["auth_bytes"]
    # When a reload removes her, then she sends her proof
    gateway.sasl_users = {"bob": credential_for("bob-pw", 4096)}
    final = client_final_for("alice-pw", server_first, first[3:])
    call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": final})
    # Then whatever the login's answer (it was checked against one file, whole), her
    # next request closes the connection: it is not served under the file in force
    with pytest.raises(CloseConnection, match="user 'alice' was removed"):
        call(gateway, conn, "Metadata", 1, {"topics": None})
    assert gateway.seen == []


def test_a_listener_without_sasl_lists_the_sasl_apis_and_answers_them_illegal_sasl_state(caplog):
    # Given a gateway without --kafka-sasl-users (a client configured for SASL meets it)
    gateway = KafkaGateway(backend=None, cluster=None, sasl_users=None)
    conn = connection()
    # Then ApiVersions lists both SASL APIs, as Kafka's does on any listener
    assert {API_KEYS["SaslHandshake"], API_KEYS["SaslAuthenticate"]} <= set(gateway.api_keys())
    # And each is answered ILLEGAL_SASL_STATE, as Kafka answers them without SASL, with
    # a line saying what to change (before: not listed, and kafkajs said only that the
    # broker did not support the API version)
    with caplog.at_level(logging.WARNING, logger=SASL_LOGGER):
        handshake = call(gateway, conn, "SaslHandshake", 1, {"mechanism": "SCRAM-SHA-256"})
        login = call(gateway, conn, "SaslAuthenticate", 2, {"auth_bytes": b"n,,n=a,r=x"})
    assert handshake == {"error_code": kafka.ILLEGAL_SASL_STATE, "mechanisms": []}
    assert login["error_code"] == kafka.ILLEGAL_SASL_STATE
    assert "has no SASL" in login["error_message"]
    assert "asked to log in with SASL, but this listener has no --kafka-sasl-users" in caplog.text
