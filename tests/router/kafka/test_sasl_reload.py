"""Reloading the Kafka listener's SASL users file (service.py's ``reload_users``,
which SIGHUP runs on the server's main thread): a real KafkaService on 127.0.0.1,
its users file written by ``add_user`` (what ``plinth kafka-user add`` runs), and
clients logging in with SASL PLAIN over real sockets. A reload lets new users in
at once, refuses the removed ones' new logins and closes their connections at
their next request; a file that fails the checks changes nothing and says why;
beside CurveZMQ a user added gets its internal key, let in by the router."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
import zmq

from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.messages import API_VERSIONS, SASL_AUTHENTICATE, SASL_HANDSHAKE
from plinth.router.kafka.sasl_users import add_user
from plinth.router.kafka.service import KafkaListenerOptions, KafkaService
from plinth.router.security import Security
from tests.router.kafka.test_listener import closed_by_peer, read_response
from tests.router.kafka.test_listener_login import connect, frame, works
from tests.support import curve_key_pair

ITERATIONS = 4096        # the fewest allowed: the tests' logins stay quick
SERVICE_LOGGER = "plinth.router.kafka.service"
NO_ROUTER = "tcp://127.0.0.1:8799"   # the backend is never asked: no request needs it


def write_users(path: Path, passwords: dict[str, str]) -> None:
    """Replace the users file as an operator would: a new file written by add_user,
    renamed over the old one (so the listener never reads half of it)."""
    fresh = path.with_name("fresh-" + path.name)
    for name, password in passwords.items():
        add_user(fresh, name, password, ITERATIONS)
    os.replace(fresh, path)


@pytest.fixture
def users_file(tmp_path) -> Path:
    path = tmp_path / "users.json"
    write_users(path, {"alice": "alice-pw"})
    return path


@pytest.fixture
def service(users_file):
    service = KafkaService(KafkaListenerOptions("127.0.0.1:0", sasl_users=users_file),
                           NO_ROUTER, "test-cluster")
    service.start()
    yield service
    service.stop()


def plain_login(address, user: str, password: str) -> tuple[socket.socket, int]:
    """A new connection and the error code of its PLAIN login (PLAIN: on loopback)."""
    sock = connect(address)
    sock.sendall(frame(SASL_HANDSHAKE, 1, 1, {"mechanism": "PLAIN"}))
    assert read_response(sock, SASL_HANDSHAKE, 1)[1]["error_code"] == kafka.NONE
    token = b"\0" + user.encode() + b"\0" + password.encode()
    sock.sendall(frame(SASL_AUTHENTICATE, 2, 2, {"auth_bytes": token}))
    return sock, read_response(sock, SASL_AUTHENTICATE, 2)[1]["error_code"]


def refused(address, user: str, password: str) -> bool:
    sock, code = plain_login(address, user, password)
    sock.close()
    return code == kafka.SASL_AUTHENTICATION_FAILED


def test_a_reload_lets_a_new_user_in_and_cuts_a_removed_one_off_on_its_open_connection(
        service, users_file, caplog):
    address = service.address
    # Given alice logged in and served
    alice, code = plain_login(address, "alice", "alice-pw")
    assert code == kafka.NONE and works(alice, 3)
    # And bob, not in the file yet, refused
    assert refused(address, "bob", "bob-pw")
    # When the file is rewritten without alice and with bob, and reloaded
    write_users(users_file, {"bob": "bob-pw"})
    with caplog.at_level(logging.INFO, logger=SERVICE_LOGGER):
        assert service.reload_users() is None
    # Then the log says what changed, in one line
    [line] = [r.getMessage() for r in caplog.records if r.name == SERVICE_LOGGER]
    assert line.startswith(f"reloaded: 1 Kafka SASL users in {users_file} (1 added, "
                           f"1 removed, 0 changed)"), line
    # And alice's open connection is closed at its next request, unanswered
    alice.sendall(frame(API_VERSIONS, 0, 4, {}))
    assert closed_by_peer(alice)
    alice.close()
    # And her next login is refused, while bob logs in and is served
    assert refused(address, "alice", "alice-pw")
    bob, code = plain_login(address, "bob", "bob-pw")
    assert code == kafka.NONE and works(bob, 3)
    bob.close()


def test_a_reload_that_changes_a_password_cuts_off_the_connections_made_with_the_old_one(
        service, users_file):
    # Given alice logged in with her password
    old, _ = plain_login(service.address, "alice", "alice-pw")
    # When she is given a new one and the file is reloaded
    write_users(users_file, {"alice": "alices-new-pw"})
    assert service.reload_users() is None
    # Then the connection made with the old one is closed at its next request
    old.sendall(frame(API_VERSIONS, 0, 3, {}))
    assert closed_by_peer(old)
    # And the new password logs in, the old one no longer
    assert refused(service.address, "alice", "alice-pw")
    new, code = plain_login(service.address, "alice", "alices-new-pw")
    assert code == kafka.NONE and works(new, 3)
    new.close()


@pytest.mark.parametrize("spoil, why", [
    (lambda path: path.write_text('{"alice": {"mechanism": "SCRAM-SHA-256"'),
     "cannot read SASL users file"),
    (lambda path: path.write_text('{"alice": {}}'), "missing fields"),
    (lambda path: path.chmod(0o644), "has mode 644: other users may read or change it"),
    (lambda path: path.unlink(), "No such file or directory"),
])
def test_a_reload_of_a_file_that_fails_the_checks_keeps_the_users_in_force_and_says_why(
        service, users_file, caplog, spoil, why):
    # Given alice logged in
    alice, _ = plain_login(service.address, "alice", "alice-pw")
    # When the file is broken (cut mid-edit, a field missing, loose mode, gone) and reloaded
    spoil(users_file)
    with caplog.at_level(logging.INFO, logger=SERVICE_LOGGER):
        reason = service.reload_users()
    # Then the reload is refused, the log saying why at ERROR
    assert why in reason and str(users_file) in reason
    [record] = [r for r in caplog.records if r.name == SERVICE_LOGGER]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == f"reload refused, the SASL users in force stay: {reason}"
    # And the users in force stay, whole: alice's connection is served, and she logs in
    assert works(alice, 3)
    alice.close()
    again, code = plain_login(service.address, "alice", "alice-pw")
    assert code == kafka.NONE
    again.close()


def test_beside_curvezmq_a_user_added_by_a_reload_gets_a_key_the_router_lets_in(
        tmp_path, users_file):
    # Given a Kafka listener beside a router with CurveZMQ keys
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    _, server_secret = curve_key_pair(tmp_path, "server")
    security = Security(Path(server_secret), authorized)
    service = KafkaService(KafkaListenerOptions("127.0.0.1:0", sasl_users=users_file),
                           NO_ROUTER, "test-cluster", security=security)
    service.start()
    try:
        stranger, _ = zmq.curve_keypair()
        assert not security.callback("*", stranger)
        # When bob is added and the file reloaded
        write_users(users_file, {"alice": "alice-pw", "bob": "bob-pw"})
        assert service.reload_users() is None
        # Then the key his requests will carry is let in by the router (the ZAP check)
        # and named User:bob, as alice's is User:alice
        bob_public = service._keys["bob"][0]
        assert security.callback("*", bob_public)
        assert service._keys["alice"] != service._keys["bob"]
        assert security._internal[bob_public.decode()] == "User:bob"
    finally:
        service.stop()
