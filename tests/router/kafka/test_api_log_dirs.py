"""DescribeLogDirs' authorization (router/kafka/api_log_dirs.py), over a real
listener and a real SASL PLAIN login on 127.0.0.1: with an ACL file, a user
without the cluster operation (Kafka's DESCRIBE on the cluster) gets
CLUSTER_AUTHORIZATION_FAILED and no log dir, neither the data dir's path nor its
volume's sizes. What a user with the grant is answered, against a real broker:
tests/e2e/test_kafka_admin_e2e.py and test_kafka_acls_e2e.py."""

from __future__ import annotations

import json
import logging

import pytest

from plinth import limits
from plinth.router.acl import Acl
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.gateway import KafkaGateway
from plinth.router.kafka.listener import KafkaListener
from plinth.router.kafka.messages import DESCRIBE_LOG_DIRS, SASL_AUTHENTICATE, SASL_HANDSHAKE
from plinth.router.kafka.sasl_users import credential_for
from tests.router.kafka.test_listener import read_response
from tests.router.kafka.test_listener_login import connect, frame

PASSWORDS = {"kbob": "kbob-secret-pw", "root": "root-secret-pw"}
ACL = {"User:kbob": [{"operations": ["consume"], "topics": "b.*", "groups": "gb"}],
       "User:root": [{"operations": ["cluster"]}]}


@pytest.fixture
def secured_listener(tmp_path):
    """A listener whose gateway has SASL users and an ACL file; no router behind it (a
    refused DescribeLogDirs never reaches one)."""
    acl_file = tmp_path / "acl.json"
    acl_file.write_text(json.dumps(ACL))
    users = {name: credential_for(password, 4096) for name, password in PASSWORDS.items()}
    gateway = KafkaGateway(backend=None, cluster=None, sasl_users=users,
                           log_dir=str(tmp_path / "data"), acl=Acl.load(acl_file))
    gateway.sasl_plain_allowed = True    # loopback
    listener = KafkaListener("127.0.0.1", 0, gateway.handle,
                             first_request_bytes_max=limits.KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX)
    listener.start()
    yield listener
    listener.stop()


def logged_in(address, user: str):
    sock = connect(address)
    sock.sendall(frame(SASL_HANDSHAKE, 1, 1, {"mechanism": "PLAIN"}))
    assert read_response(sock, SASL_HANDSHAKE, 1)[1]["error_code"] == kafka.NONE
    token = f"\0{user}\0{PASSWORDS[user]}".encode()
    sock.sendall(frame(SASL_AUTHENTICATE, 2, 2, {"auth_bytes": token}))
    assert read_response(sock, SASL_AUTHENTICATE, 2)[1]["error_code"] == kafka.NONE
    return sock


@pytest.mark.parametrize("version", [1, 4])
def test_a_user_without_the_cluster_grant_is_refused_and_told_nothing_of_the_disk(
        secured_listener, caplog, version):
    caplog.set_level(logging.INFO, logger="plinth.router.kafka.api_log_dirs")
    # Given a user whose grants are to consume some topics, not the cluster operation
    with logged_in(secured_listener.address, "kbob") as sock:
        # When it asks for the log dirs
        sock.sendall(frame(DESCRIBE_LOG_DIRS, version, 3, {"topics": None}))
        _, answer = read_response(sock, DESCRIBE_LOG_DIRS, version)
    # Then it gets no log dir, so no path nor size (v3+ also says why, as Kafka does)
    assert answer["results"] == []
    if version >= 3:
        assert answer["error_code"] == kafka.CLUSTER_AUTHORIZATION_FAILED
    # And the broker's log names the user and the grant it lacks
    assert ("User:kbob may not describe the log dirs (DescribeLogDirs): it needs a grant of "
            "the cluster operation") in caplog.text
