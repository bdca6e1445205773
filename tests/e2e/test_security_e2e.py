"""CurveZMQ and ACLs against a real broker: keys from `plinth keygen`; an
unauthenticated client gets no reply, an authenticated one without the grant
gets NotAuthorizedError, and both refusals are logged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import zmq.auth

from plinth import Admin, Consumer, Producer
from plinth.errors import NotAuthorizedError, PlinthTimeoutError
from tests.support import unique_topic


def keygen(directory, name):
    subprocess.run([sys.executable, "-m", "plinth.cli", "keygen", name, "--out", str(directory)],
                   check=True, capture_output=True)
    return directory / f"{name}.key", directory / f"{name}.key_secret"


@pytest.fixture
def secured(tmp_path, broker_factory):
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    admin_public, admin_secret = keygen(keys, "admin")
    reader_public, reader_secret = keygen(keys, "reader")
    _, stranger_secret = keygen(keys, "stranger")
    for public in (admin_public, reader_public):
        (authorized / public.name).write_text(public.read_text())
    admin_key = zmq.auth.load_certificate(str(admin_public))[0].decode()
    reader_key = zmq.auth.load_certificate(str(reader_public))[0].decode()
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({
        admin_key: [{"operations": ["produce", "consume", "admin"], "topics": "*"}],
        reader_key: [{"operations": ["consume"], "topics": "*"}]}))
    broker = broker_factory(shards=1, extra_args=(
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
        "--acl", str(acl)))
    return broker, server_public, admin_secret, reader_secret, stranger_secret


def test_keys_and_acls_decide_who_may_do_what(secured):
    broker, server_public, admin_secret, reader_secret, stranger_secret = secured
    as_admin = dict(curve_key_file=str(admin_secret), curve_server_key_file=str(server_public))
    as_reader = dict(curve_key_file=str(reader_secret), curve_server_key_file=str(server_public))
    topic = unique_topic("sec")
    # An authorized admin key can do everything
    with Admin(broker=broker.url, **as_admin) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=broker.url, **as_admin) as producer:
        producer.send(topic, b"secret").get(30)
    # A reader can consume, but not produce: a clear error
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=3_000, **as_reader) as consumer:
        assert [r.value for r in consumer] == [b"secret"]
    with Admin(broker=broker.url, **as_reader) as admin:
        with pytest.raises(NotAuthorizedError, match="may not admin"):
            admin.delete_topic(topic)
    # A client whose key is not authorized, or who has no key, never gets a reply
    for options in (dict(curve_key_file=str(stranger_secret), curve_server_key_file=str(server_public)), {}):
        with Admin(broker=broker.url, request_timeout_ms=1_500, **options) as admin:
            with pytest.raises(PlinthTimeoutError):
                admin.list_topics()
    log = broker.log()
    assert "refused a client with key" in log and "denied deleteTopic" in log


def test_serve_refuses_plaintext_on_a_non_loopback_address(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "tcp://0.0.0.0:7499"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "without CurveZMQ keys" in result.stderr
