"""The Kafka listener's TLS and SASL against a real ``plinth serve`` (issue 15).

One broker for the module, with CurveZMQ keys and an ACL on its router, and a
Kafka listener on 127.0.0.1 with a self-signed certificate (made here with
``cryptography``) and a users file written by ``plinth kafka-user add``:
kafka-python and confluent-kafka (librdkafka) log in over SASL_SSL with PLAIN
and with SCRAM-SHA-256 and produce and consume; a wrong password fails the
login cleanly and is logged without the password; a user without the grant
gets Kafka's authorization errors; a connection that has not logged in is
served ApiVersions and closed at anything else; idle connections that never log
in, from one address (127.0.0.2 and up reach the loopback listener as other
client addresses) or from several, do not lock a user out; on a broker of its own
with a users file and no CurveZMQ, SIGHUP reloads the users file: a removed user's
open connection can no longer produce and its new login is refused, a user added
logs in, and a broken file keeps the users in force. The start-up refusals (a
non-loopback listener without TLS or SASL; SASL missing beside CurveZMQ) run
``plinth serve`` to its refusal only: no traffic goes to 0.0.0.0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from plinth import Admin, limits
from plinth.router.kafka import codec, error_codes
from plinth.router.kafka.codec import RequestHeader
from plinth.router.kafka.messages import API_VERSIONS, METADATA, SASL_AUTHENTICATE, SASL_HANDSHAKE
from tests.conftest import Broker, StandaloneRouter
from tests.e2e.test_security_e2e import keygen, public_key
from tests.router.kafka.self_signed import self_signed_certificate
from tests.support import free_port, unique_topic, wait_until

TIMEOUT_S = 60
CLUSTER_NAME = unique_topic("kafka-sec")   # the Ray namespace of this module's broker
PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}


def add_users(users_file, passwords: dict[str, str] = PASSWORDS) -> None:
    for name, password in passwords.items():
        subprocess.run([sys.executable, "-m", "plinth.cli", "kafka-user", "add", str(users_file),
                        name, "--password-stdin"], input=password + "\n", text=True,
                       check=True, capture_output=True)


@pytest.fixture(scope="module")
def secure_kafka(ray_cluster, tmp_path_factory):
    directory = tmp_path_factory.mktemp("kafka-sec")
    keys, authorized = directory / "keys", directory / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    admin_public, admin_secret = keygen(keys, "admin")
    (authorized / admin_public.name).write_text(admin_public.read_text())
    acl = directory / "acl.json"
    acl.write_text(json.dumps({
        public_key(admin_public): [{"operations": ["produce", "consume", "admin"], "topics": "*"}],
        "User:alice": [{"operations": ["produce", "consume"], "topics": "ks-*",
                        "groups": "alice-*"}],
        "User:bob": [{"operations": ["consume"], "topics": "ks-*"}],
    }))
    users = directory / "users.json"
    add_users(users)
    cert, key = self_signed_certificate(directory)
    port = free_port()
    secure_args = (
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
        "--acl", str(acl), "--kafka-tls-cert", str(cert), "--kafka-tls-key", str(key),
        "--kafka-sasl-users", str(users))
    broker = Broker(directory / "data", ray_cluster, shards=1, extra_args=(
        *secure_args, "--cluster-name", CLUSTER_NAME, "--kafka-listen", f"127.0.0.1:{port}"))
    broker.kafka_address, broker.cert = f"127.0.0.1:{port}", cert
    broker.secure_args = secure_args
    broker.as_admin = dict(curve_key_file=str(admin_secret),
                           curve_server_key_file=str(server_public))
    broker.start()
    yield broker
    broker.stop()


def _create(broker) -> str:
    topic = unique_topic("ks")
    with Admin(broker=broker.url, **broker.as_admin) as admin:
        admin.create_topic(topic, partitions=1)
    return topic


def _kafka_python(broker, user: str, mechanism: str, password: str | None = None) -> dict:
    return dict(bootstrap_servers=broker.kafka_address, security_protocol="SASL_SSL",
                ssl_cafile=str(broker.cert), sasl_mechanism=mechanism,
                sasl_plain_username=user,
                sasl_plain_password=PASSWORDS[user] if password is None else password)


def _confluent(broker, user: str, mechanism: str, password: str | None = None) -> dict:
    return {"bootstrap.servers": broker.kafka_address, "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(broker.cert), "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": PASSWORDS[user] if password is None else password}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_kafka_python_logs_in_over_tls_and_produces_and_consumes(secure_kafka, mechanism):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = _create(secure_kafka)
    producer = KafkaProducer(acks="all", **_kafka_python(secure_kafka, "alice", mechanism))
    offsets = [producer.send(topic, b"v%d" % i, partition=0).get(TIMEOUT_S).offset
               for i in range(3)]
    producer.close()
    assert offsets == [0, 1, 2]
    consumer = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=TIMEOUT_S * 1000,
                             **_kafka_python(secure_kafka, "bob", mechanism))
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    assert [next(consumer).value for _ in range(3)] == [b"v0", b"v1", b"v2"]
    consumer.close()
    assert f"logged in as 'alice' ({mechanism})" in secure_kafka.log()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_confluent_kafka_logs_in_over_tls_and_produces_and_consumes_in_a_group(
        secure_kafka, mechanism):
    from confluent_kafka import Consumer, Producer

    topic = _create(secure_kafka)
    producer = Producer(_confluent(secure_kafka, "alice", mechanism))
    for i in range(5):
        producer.produce(topic, b"m%d" % i, partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    consumer = Consumer({**_confluent(secure_kafka, "alice", mechanism),
                         "group.id": unique_topic("alice"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []

    def poll() -> bool:
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            got.append(message.value())
        return len(got) >= 5

    wait_until(poll, TIMEOUT_S)
    consumer.close()
    assert got == [b"m%d" % i for i in range(5)]


def test_a_wrong_password_fails_the_login_cleanly_and_is_logged_without_the_password(
        secure_kafka, caplog):
    from confluent_kafka import KafkaError, Producer
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    # Given the right user with a wrong password, over PLAIN on a bare TLS connection
    with _tls_socket(secure_kafka) as sock:
        assert _exchange(sock, SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}, 1)["error_code"] == 0
        # When it authenticates, Then the answer is SASL_AUTHENTICATION_FAILED naming the user
        answer = _exchange(sock, SASL_AUTHENTICATE, 2,
                           {"auth_bytes": b"\0alice\0not-alices-password"}, 2)
        assert answer["error_code"] == error_codes.SASL_AUTHENTICATION_FAILED
        assert "user 'alice'" in answer["error_message"]
        assert "not-alices-password" not in answer["error_message"]
        # And the connection is closed at its next request
        assert _exchange(sock, API_VERSIONS, 0, {}, 3) is None
    # And librdkafka (SCRAM-SHA-256) reports an authentication error
    errors = _librdkafka_errors(Producer, {**_confluent(secure_kafka, "alice", "SCRAM-SHA-256",
                                                        password="also-wrong")})
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors
    # And kafka-python (SCRAM-SHA-256, as bob: the log keeps one line per user and
    # mechanism a minute) sees Kafka's SaslAuthenticationFailedError and gives up
    # (its bootstrap retries for bootstrap_timeout_ms, 30 s by default)
    with pytest.raises(KafkaTimeoutError):
        KafkaProducer(**_kafka_python(secure_kafka, "bob", "SCRAM-SHA-256",
                                      password="wrong-again"), max_block_ms=3_000,
                      bootstrap_timeout_ms=3_000)
    assert "SaslAuthenticationFailedError" in caplog.text
    # And the broker logged each failure with the user and the peer, never the password
    wait_until(lambda: secure_kafka.log().count("SASL login failed") >= 3, TIMEOUT_S)
    log = secure_kafka.log()
    assert "user 'alice'" in log and "user 'bob'" in log and "from 127.0.0.1:" in log
    for password in ("not-alices-password", "also-wrong", "wrong-again"):
        assert password not in log


def _librdkafka_errors(client_class, config: dict) -> list:
    """The errors a librdkafka client reports until its first one; the client is gone
    after (it would retry in the background for as long as it lives)."""
    errors = []
    client = client_class({**config, "error_cb": errors.append})
    wait_until(lambda: client.poll(0.1) is not None and errors, TIMEOUT_S)
    return errors


def test_a_user_without_the_grant_gets_kafkas_authorization_errors(secure_kafka):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    topic = _create(secure_kafka)
    # Given bob, who may consume ks-* topics but not produce, nor use any group
    producer = KafkaProducer(acks="all", retries=0,
                             **_kafka_python(secure_kafka, "bob", "SCRAM-SHA-256"))
    # When he produces, Then the answer is TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(TopicAuthorizationFailedError):
        producer.send(topic, b"no", partition=0).get(TIMEOUT_S)
    producer.close()
    # And joining a group he has no grant on is GROUP_AUTHORIZATION_FAILED
    consumer = KafkaConsumer(topic, group_id="bobs-group", enable_auto_commit=False,
                             **_kafka_python(secure_kafka, "bob", "PLAIN"))
    with pytest.raises(GroupAuthorizationFailedError):
        for _ in range(50):
            consumer.poll(200)
    consumer.close()
    assert "denied produce from User:bo" in secure_kafka.log()


def test_a_topic_a_user_has_no_grant_on_is_topic_authorization_failed_whether_it_exists_or_not(
        secure_kafka):
    from confluent_kafka import KafkaError
    from confluent_kafka import Producer as KafkaProducer
    from kafka import KafkaProducer as PyProducer
    from kafka.errors import TopicAuthorizationFailedError

    # Given a topic alice has no grant on (hers are ks-*), and a name no topic has
    secret = unique_topic("secret")
    with Admin(broker=secure_kafka.url, **secure_kafka.as_admin) as admin:
        admin.create_topic(secret, partitions=1)
    for topic in (secret, unique_topic("nothing")):
        # When alice produces to it with kafka-python
        producer = PyProducer(acks="all", retries=0, max_block_ms=TIMEOUT_S * 1000,
                              **_kafka_python(secure_kafka, "alice", "PLAIN"))
        # Then she is told at once she may not (she was left to wait for the topic's
        # metadata, max_block_ms), whether it exists or not
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(topic, b"no").get(TIMEOUT_S)
        producer.close()
        # And librdkafka fails the record with TOPIC_AUTHORIZATION_FAILED, not a timeout
        errors = []
        rdkafka = KafkaProducer({**_confluent(secure_kafka, "alice", "PLAIN"),
                                 "message.timeout.ms": TIMEOUT_S * 1000})
        rdkafka.produce(topic, b"no", on_delivery=lambda error, _: errors.append(error))
        rdkafka.flush(TIMEOUT_S)
        assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


class SecureRouter(StandaloneRouter):
    """``plinth router`` with the broker's keys and ACL and a Kafka listener of its own."""

    def __init__(self, ray_address: str, extra_args: tuple[str, ...]):
        super().__init__(ray_address, CLUSTER_NAME)
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return super().command() + list(self.extra_args)


def test_a_plinth_router_serves_kafka_users_with_their_grants_too(secure_kafka, ray_cluster):
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    # Given a second router, with its own Kafka listener and the same keys, ACL and users
    port = free_port()
    router = SecureRouter(ray_cluster, (*secure_kafka.secure_args,
                                        "--kafka-listen", f"127.0.0.1:{port}")).start()
    try:
        topic = _create(secure_kafka)
        address = dict(bootstrap_servers=f"127.0.0.1:{port}")
        # When alice produces through it, Then her records are written
        producer = KafkaProducer(acks="all", **{**_kafka_python(secure_kafka, "alice", "PLAIN"),
                                                **address})
        assert producer.send(topic, b"via-router", partition=0).get(TIMEOUT_S).offset == 0
        producer.close()
        # And bob, who may not produce, is refused there as at the server
        producer = KafkaProducer(acks="all", retries=0,
                                 **{**_kafka_python(secure_kafka, "bob", "SCRAM-SHA-256"),
                                    **address})
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(topic, b"no", partition=0).get(TIMEOUT_S)
        producer.close()
    finally:
        router.stop()


def _tls_socket(broker, source: str = "127.0.0.1") -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(broker.cert))
    host, port = broker.kafka_address.split(":")
    raw = socket.create_connection((host, int(port)), timeout=TIMEOUT_S,
                                   source_address=(source, 0))
    return context.wrap_socket(raw, server_hostname=host)


def _exchange(sock, api, version: int, body: dict, correlation_id: int) -> dict | None:
    """Send one request; its response body, or None if the connection closed instead."""
    header = RequestHeader(api.key, version, correlation_id, "raw-test")
    sock.sendall(b"".join(bytes(part) for part in codec.encode_request(header, body)))
    size = sock.recv(4)
    if not size:
        return None
    frame = b""
    while len(frame) < int.from_bytes(size, "big"):
        frame += sock.recv(65536)
    assert codec.decode_response(api.key, version, frame)[0] == correlation_id
    return codec.decode_response(api.key, version, frame)[1]


def test_a_connection_that_has_not_logged_in_gets_api_versions_and_is_closed_at_anything_else(
        secure_kafka):
    # Given a TLS connection that sends no SASL
    with _tls_socket(secure_kafka) as sock:
        # When it asks ApiVersions, Then it is answered, SASL's APIs among them
        versions = _exchange(sock, API_VERSIONS, 0, {}, 1)
        keys = {entry["api_key"] for entry in versions["api_keys"]}
        assert versions["error_code"] == error_codes.NONE
        assert {codec.API_KEYS["SaslHandshake"], codec.API_KEYS["SaslAuthenticate"]} <= keys
        # And when it asks Metadata, Then the connection is closed without an answer
        assert _exchange(sock, METADATA, 1, {"topics": None}, 2) is None
    # (the server's log line may land after the close the client saw)
    wait_until(lambda: "before a SASL login" in secure_kafka.log(), TIMEOUT_S)


def _open_without_login(broker, count: int, source: str) -> list[ssl.SSLSocket]:
    """``count`` TLS connections from client address ``source`` that send nothing (the
    ones the listener refuses at once fail their handshake and are not returned)."""
    held = []
    for _ in range(count):
        try:
            held.append(_tls_socket(broker, source))
        except (ssl.SSLError, ConnectionError):
            pass
    return held


def test_one_address_reopening_connections_takes_only_its_share_and_a_user_logs_in_at_once(
        secure_kafka):
    from confluent_kafka.admin import AdminClient

    per_address = limits.KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX
    # Given one address opening more idle TLS connections than the whole pool for logins
    held = _open_without_login(secure_kafka, limits.KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX + 10,
                               source="127.0.0.7")
    try:
        # Then it holds only its share; the others were refused at once
        assert len(held) == per_address
        # And a user from another address logs in before any login deadline frees a slot
        started_s = time.monotonic()
        admin = AdminClient(_confluent(secure_kafka, "bob", "SCRAM-SHA-256"))
        assert admin.list_topics(timeout=TIMEOUT_S).topics is not None
        assert time.monotonic() - started_s < limits.KAFKA_LOGIN_TIMEOUT_MS / 1000
    finally:
        for sock in held:
            sock.close()
    # And the refusals were one line naming the address, the count and the limit
    line = (f"refused: {per_address} connections from 127.0.0.7 have not logged in yet "
            f"(the limit for one address is {per_address})")
    wait_until(lambda: line in secure_kafka.log(), TIMEOUT_S)
    assert secure_kafka.log().count(line) == 1


def test_a_thousand_connections_that_never_log_in_do_not_lock_a_user_out(secure_kafka):
    from confluent_kafka.admin import AdminClient

    # Given as many idle TLS connections as the listener keeps, none logging in, from
    # one address more than it takes to fill the pool for logins, each at its share
    per_address = limits.KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX
    sources = [f"127.0.0.{2 + i}"
               for i in range(-(-limits.KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX // per_address) + 1)]
    held = {source: _open_without_login(secure_kafka,
                                        limits.KAFKA_CONNECTIONS_MAX // len(sources), source)
            for source in sources}
    try:
        # Then only the pool for logins took them, at most its share from each
        # address; the others were refused at once
        assert sum(map(len, held.values())) == limits.KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX
        assert max(map(len, held.values())) == per_address
        # And when a user logs in with a new client, it gets in and is served (once
        # the login deadline has closed the idle ones, at the latest)
        admin = AdminClient(_confluent(secure_kafka, "bob", "SCRAM-SHA-256"))
        assert admin.list_topics(timeout=TIMEOUT_S).topics is not None
    finally:
        for sock in (sock for socks in held.values() for sock in socks):
            sock.close()
    # And the refusals at a full pool were logged once per address, not once each
    # (twice only if the test took longer than a minute): an address holding less than
    # its share found the pool full
    found_it_full = sum(len(socks) < per_address for socks in held.values())
    refusals = secure_kafka.log().count("have not logged in yet, the limit for them")
    assert 1 <= found_it_full <= refusals <= 2 * found_it_full, (found_it_full, refusals)


def _refusal(tmp_path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode != 0, result.stdout
    assert not (tmp_path / "d").exists()
    return result.stderr


def test_serve_refuses_a_non_loopback_kafka_listener_without_tls_and_sasl(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    users = tmp_path / "users.json"
    add_users(users)
    stderr = _refusal(tmp_path, "--kafka-listen", f"0.0.0.0:{free_port()}")
    assert "without TLS (--kafka-tls-cert, --kafka-tls-key) and SASL (--kafka-sasl-users)" \
        in stderr, stderr
    stderr = _refusal(tmp_path, "--kafka-listen", f"0.0.0.0:{free_port()}",
                      "--kafka-tls-cert", str(cert), "--kafka-tls-key", str(key))
    assert "without SASL (--kafka-sasl-users)" in stderr, stderr
    stderr = _refusal(tmp_path, "--kafka-listen", f"0.0.0.0:{free_port()}",
                      "--kafka-sasl-users", str(users))
    assert "without TLS (--kafka-tls-cert, --kafka-tls-key)" in stderr, stderr


def test_serve_refuses_a_kafka_listener_without_sasl_beside_curvezmq(tmp_path):
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    _, server_secret = keygen(keys, "server")
    stderr = _refusal(tmp_path, "--curve-secret-key", str(server_secret), "--authorized-keys",
                      str(authorized), "--kafka-listen", f"127.0.0.1:{free_port()}")
    assert "--kafka-listen beside --curve-secret-key needs --kafka-sasl-users" in stderr, stderr


def test_serve_refuses_secret_files_others_may_read_an_encrypted_key_and_an_expired_certificate(
        tmp_path):
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    _, server_secret = keygen(keys, "server")
    users = tmp_path / "users.json"
    add_users(users)
    cert, key = self_signed_certificate(tmp_path)
    listen = ("--kafka-listen", f"127.0.0.1:{free_port()}")
    # Given the server's secret key, the users file or the TLS key readable by others
    for loose, what in ((server_secret, "CurveZMQ server secret key"),
                        (users, "SASL users file"), (key, "Kafka TLS key")):
        loose.chmod(0o644)
        # Then serve refuses to start, naming the file, its mode and the chmod
        stderr = _refusal(tmp_path, "--curve-secret-key", str(server_secret),
                          "--authorized-keys", str(authorized), *listen,
                          "--kafka-sasl-users", str(users), "--kafka-tls-cert", str(cert),
                          "--kafka-tls-key", str(key))
        assert what in stderr and f"{loose} has mode 644" in stderr, stderr
        assert f"Run `chmod 600 {loose}`" in stderr, stderr
        loose.chmod(0o600)
    # And an encrypted TLS key is refused at once, with no passphrase prompt
    cert, key = self_signed_certificate(tmp_path, passphrase=b"phrase", stem="encrypted")
    stderr = _refusal(tmp_path, *listen, "--kafka-tls-cert", str(cert), "--kafka-tls-key",
                      str(key))
    assert f"{key} is encrypted (it asks for a passphrase)" in stderr, stderr
    assert "pass phrase" not in stderr, stderr
    # And a certificate that expired is refused, naming its notAfter
    cert, key = self_signed_certificate(tmp_path, valid_from_s=-86400, valid_for_s=3600,
                                        stem="expired")
    stderr = _refusal(tmp_path, *listen, "--kafka-tls-cert", str(cert), "--kafka-tls-key",
                      str(key))
    assert f"certificate {cert} expired on" in stderr and "(notAfter)" in stderr, stderr


def _sighup_and_wait(broker, line: str) -> None:
    """SIGHUP the broker; return once its log has one more line holding ``line``."""
    before = broker.log().count(line)
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: broker.log().count(line) > before, TIMEOUT_S,
               explain=lambda: "".join(broker.output[-10:]))


def test_sighup_reloads_the_sasl_users_file_cutting_off_a_removed_user_and_letting_a_new_one_in(
        broker_factory, tmp_path):
    from confluent_kafka import KafkaError, Producer
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as PyKafkaError

    # Given a broker whose only security is a users file with alice (no CurveZMQ: before
    # the reload, SIGHUP ended such a broker), on loopback, where PLAIN is offered
    users = tmp_path / "users.json"
    add_users(users, {"alice": "alice-pw"})
    port = free_port()
    broker = broker_factory(shards=1, extra_args=(
        "--kafka-listen", f"127.0.0.1:{port}", "--kafka-sasl-users", str(users)))
    topic = unique_topic("reload")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=1)

    def kafka_python(user: str, password: str) -> dict:
        return dict(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism="PLAIN", sasl_plain_username=user,
                    sasl_plain_password=password)

    def confluent(user: str, password: str) -> dict:
        return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user,
                "sasl.password": password}

    # And alice producing over a connection logged in
    alice = KafkaProducer(acks="all", retries=0, request_timeout_ms=10_000,
                          max_block_ms=10_000, **kafka_python("alice", "alice-pw"))
    assert alice.send(topic, b"before", partition=0).get(TIMEOUT_S).offset == 0
    # When the file is replaced by one without alice and with bob (written by
    # plinth kafka-user add, renamed over it), and the broker gets SIGHUP
    fresh = tmp_path / "fresh-users.json"
    add_users(fresh, {"bob": "bob-pw"})
    os.replace(fresh, users)
    _sighup_and_wait(broker, "reloaded: 1 Kafka SASL users")
    assert "(1 added, 1 removed, 0 changed)" in broker.log()
    assert broker.proc.poll() is None
    # Then alice's open connection can no longer produce: its next request closes it
    with pytest.raises(PyKafkaError):
        alice.send(topic, b"after", partition=0).get(TIMEOUT_S)
    alice.close(timeout=5)
    wait_until(lambda: "user 'alice' was removed from the SASL users file" in broker.log(),
               TIMEOUT_S)
    # And her new login is refused
    errors = _librdkafka_errors(Producer, confluent("alice", "alice-pw"))
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors
    # And bob logs in and produces, after alice's one record: hers after the reload
    # was never written
    bob = KafkaProducer(acks="all", **kafka_python("bob", "bob-pw"))
    assert bob.send(topic, b"bob", partition=0).get(TIMEOUT_S).offset == 1
    # When a second SIGHUP finds the file broken mid-edit
    users.write_text('{"bob": {"mechanism": "SCRAM-SHA-256"')
    _sighup_and_wait(broker, "reload refused, the SASL users in force stay")
    # Then the log names the file, and bob keeps producing, on his open connection
    # and on a new one
    assert str(users) in broker.log().split("reload refused, the SASL users")[-1].splitlines()[0]
    assert bob.send(topic, b"bob", partition=0).get(TIMEOUT_S).offset == 2
    bob.close()
    rdkafka = Producer(confluent("bob", "bob-pw"))
    rdkafka.produce(topic, b"bob again", partition=0)
    assert rdkafka.flush(TIMEOUT_S) == 0
    assert broker.proc.poll() is None
