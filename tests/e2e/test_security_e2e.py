"""CurveZMQ and ACLs against a real broker: keys from `plinth keygen`; an
unauthenticated client gets no reply, an authenticated one without the grant
gets NotAuthorizedError, and both refusals are logged; a tenant's grants on its
topics give it nothing of another tenant's group nor of the cluster; an ACL file
that could grant more than meant stops the broker from starting."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import zmq.auth

from plinth import Admin, Consumer, Producer, protocol
from plinth.client.connection import Connection, broker_address
from plinth.errors import HandshakeRefusedError, NotAuthorizedError, PlinthError
from tests.support import free_port, unique_topic, wait_until


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


def as_client(secret, server_public) -> dict:
    """A client's CurveZMQ options: its .key_secret and the server's .key."""
    return dict(curve_key_file=str(secret), curve_server_key_file=str(server_public))


def admin_and_reader(secured) -> tuple[dict, dict]:
    """The CurveZMQ options of ``secured``'s admin and reader clients."""
    _, server_public, admin_secret, reader_secret, _ = secured
    return as_client(admin_secret, server_public), as_client(reader_secret, server_public)


def test_keys_and_acls_decide_who_may_do_what(secured):
    broker, server_public, _, reader_secret, stranger_secret = secured
    as_admin, as_reader = admin_and_reader(secured)
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
    # A client whose key is not authorized, or who has no key, never gets a reply; it is
    # told why (by its handshake's failure) instead of waiting, whether its request went
    # out before the broker's refusal or after it (libzmq then has nowhere to queue it)
    for options, hint in (
            (dict(curve_key_file=str(stranger_secret), curve_server_key_file=str(server_public)),
             "the broker refused this client's CurveZMQ key \\(ZAP status 400\\)"),
            ({}, "the handshake failed: the broker requires CurveZMQ and this client has no keys")):
        with Admin(broker=broker.url, **options) as admin:
            started = time.monotonic()
            with pytest.raises(HandshakeRefusedError, match=f"{broker.url}: {hint}"):
                admin.list_topics()
            assert time.monotonic() - started < 10   # not the 30 s request timeout
            # and so is every later call
            with pytest.raises(HandshakeRefusedError, match=hint):
                admin.describe_topic(topic)
    # So are a producer's sends and a consumer's polls, and neither hangs its close
    stranger = dict(curve_key_file=str(stranger_secret), curve_server_key_file=str(server_public))
    started = time.monotonic()
    with Producer(broker=broker.url, **stranger) as producer:
        with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
            producer.send(topic, b"from a stranger").get(30)
    with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
        with Consumer(topic, broker=broker.url, **stranger) as consumer:
            consumer.poll(timeout_ms=10_000)
    assert time.monotonic() - started < 20
    # And a client given the server's secret key file as the server's key is refused
    server_secret = server_public.with_name("server.key_secret")
    with pytest.raises(ValueError, match="holds the server's secret key; give clients the "
                                         "server's public .key file"):
        Admin(broker=broker.url, curve_key_file=str(reader_secret),
              curve_server_key_file=str(server_secret))
    log = broker.log()
    assert "refused a client with key" in log and "denied deleteTopic" in log


def test_serve_refuses_plaintext_on_a_non_loopback_address(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "tcp://0.0.0.0:7499"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "without CurveZMQ keys" in result.stderr


def test_serve_refuses_a_key_file_with_no_public_key_in_one_line_naming_it(tmp_path):
    # Given an authorized-keys directory with a stray file among the keys
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    _, server_secret = keygen(keys, "server")
    client_public, _ = keygen(keys, "client")
    (authorized / "client.key").write_text(client_public.read_text())
    (authorized / "junk.key").write_text("garbage\n")
    # When plinth serve starts with it
    result = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", f"tcp://127.0.0.1:{free_port()}", "--curve-secret-key", str(server_secret),
         "--authorized-keys", str(authorized)], capture_output=True, text=True, timeout=60)
    # Then it exits 1 with one line naming the option, the directory and the file
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: InvalidConfigError: --authorized-keys {authorized}: {authorized / 'junk.key'} "
        f"holds no CurveZMQ public key (No public key found in {authorized / 'junk.key'}); each "
        f"*.key file there must be a client's public key as `plinth keygen` writes it"]
    assert not (tmp_path / "d").exists()


def public_key(public_file) -> str:
    return zmq.auth.load_certificate(str(public_file))[0].decode()


def secure_options(directory, names: list[str], acl_of) -> tuple[tuple[str, ...], dict]:
    """Keys for a server and for each of ``names``, and the ACL ``acl_of({name: public
    key})``, under ``directory``: the ``plinth serve`` arguments that use them, and each
    name's client options (curve_key_file, curve_server_key_file)."""
    keys, authorized = directory / "keys", directory / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    publics, options = {}, {}
    for name in names:
        public, secret = keygen(keys, name)
        (authorized / public.name).write_text(public.read_text())
        publics[name] = public_key(public)
        options[name] = dict(curve_key_file=str(secret), curve_server_key_file=str(server_public))
    acl = directory / "acl.json"
    acl.write_text(json.dumps(acl_of(publics)))
    return ("--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
            "--acl", str(acl)), options


def read_until(consumer, expected: list[bytes], got: list[bytes] | None = None) -> list[bytes]:
    """Poll ``consumer`` until the values read (added to ``got``) are ``expected``."""
    got = [] if got is None else got

    def read() -> bool:
        got.extend(r.value for records in consumer.poll(200).values() for r in records)
        return got == expected

    wait_until(read)
    return got


def test_a_consumer_in_a_group_its_key_has_no_grant_on_is_told_so_by_poll_and_the_cli(secured):
    # Given a reader key that may consume every topic, but has no grant on any group
    broker, server_public, admin_secret, reader_secret, _ = secured
    topic = unique_topic("sec")
    with Admin(broker=broker.url, **as_client(admin_secret, server_public)) as admin:
        admin.create_topic(topic, 1)
    # When it consumes in group billing
    consumer = Consumer(topic, broker=broker.url, group="billing",
                        **as_client(reader_secret, server_public))
    try:
        # Then poll raises the refusal (it used to return nothing for ever, logging it)
        deadline_s = time.monotonic() + 30
        with pytest.raises(NotAuthorizedError, match="may not consume in group 'billing'"):
            while time.monotonic() < deadline_s:
                consumer.poll(timeout_ms=200)
    finally:
        consumer.close()
    # And the CLI exits non-zero saying so (it waited for ever, or exited 0)
    consumed = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "--broker", broker.url, "--curve-key-file",
         str(reader_secret), "--curve-server-key-file", str(server_public), "consume", topic,
         "--group", "billing", "--max-messages", "1"], capture_output=True, text=True,
        timeout=120)
    assert consumed.returncode == 1, consumed
    assert "NotAuthorizedError" in consumed.stderr and "group 'billing'" in consumed.stderr


def test_grants_on_its_own_topics_give_a_tenant_nothing_of_anothers_group_nor_the_cluster(
        tmp_path, broker_factory):
    # Given tenant A with every operation on topics a.*, tenant B owning group payments
    # on its topics pay.* (issue 11, finding 2), and an auditor that may consume in group
    # payments but topics a.* only
    extra_args, options = secure_options(tmp_path, ["tenant_a", "tenant_b", "auditor"], lambda k: {
        k["tenant_a"]: [{"operations": ["produce", "consume", "admin"], "topics": "a.*"}],
        k["tenant_b"]: [{"operations": ["produce", "consume", "admin"], "topics": "pay.*",
                         "groups": "payments"}],
        k["auditor"]: [{"operations": ["consume"], "topics": "a.*", "groups": "payments"}]})
    broker = broker_factory(shards=1, extra_args=extra_args)
    as_a, as_b = options["tenant_a"], options["tenant_b"]
    with Admin(broker=broker.url, **as_b) as admin:
        admin.create_topic("pay.orders", 1)
    with Admin(broker=broker.url, **as_a) as admin:
        admin.create_topic("a.events", 1)
    with Producer(broker=broker.url, **as_b) as producer:
        producer.send("pay.orders", b"first").get(30)
    # And B's consumer in group payments, which read and committed the first record
    b_consumer = Consumer("pay.orders", broker=broker.url, group="payments",
                          auto_offset_reset="earliest", **as_b)
    try:
        got = read_until(b_consumer, [b"first"])
        b_consumer.commit()
        with Admin(broker=broker.url, **as_b) as admin:
            (b_member,) = admin.describe_group("payments").members
        # When A reads payments' offsets, describes it, heartbeats as B's member, joins
        # it (with B's topic or its own), reads status and adds or removes shards
        a_conn = Connection(broker_address(broker.url, **as_a))
        attempts = {
            "fetchOffsets": lambda rid: protocol.encode_group_request(rid, "fetchOffsets", "payments"),
            "describeGroup": lambda rid: protocol.encode_group_request(rid, "describeGroup", "payments"),
            "heartbeat as B": lambda rid: protocol.encode_group_heartbeat(
                rid, "payments", b_member.member_id, b_member.member_epoch, ["pay.orders"], set(), 0, ""),
            "leave as B": lambda rid: protocol.encode_group_heartbeat(
                rid, "payments", b_member.member_id, protocol.LEAVE_EPOCH, [], set(), 0, ""),
            "join with B's topic": lambda rid: protocol.encode_group_heartbeat(
                rid, "payments", "", 0, ["pay.orders"], set(), 0, ""),
            "join with its own topic": lambda rid: protocol.encode_group_heartbeat(
                rid, "payments", "", 0, ["a.events"], set(), 0, ""),
            "status": protocol.encode_status_request,
            "addShards": lambda rid: protocol.encode_shards_change(rid, "addShards", 1),
            "removeShards": lambda rid: protocol.encode_shards_change(rid, "removeShards", 1),
        }
        outcomes = {}
        for what, encode in attempts.items():
            request_id = a_conn.next_request_id()
            try:
                a_conn.request(encode(request_id), request_id, 10_000)
                outcomes[what] = "answered"
            except NotAuthorizedError:
                outcomes[what] = "refused"
            except PlinthError as exc:   # let through, then failed or still at work
                outcomes[what] = f"let through: {type(exc).__name__}"
        a_conn.close()
        with Admin(broker=broker.url, **as_a) as admin:
            a_sees_groups, a_sees_topics = admin.list_groups(), admin.list_topics()
        # Then every one was refused, and A lists no group nor topic of B's
        assert outcomes == dict.fromkeys(attempts, "refused")
        assert a_sees_groups == [] and a_sees_topics == ["a.events"]
        # And payments' offsets show B its topic, and the auditor none of it
        assert committed_offsets(broker.url, as_b, "payments") == {("pay.orders", 0): 1}
        assert committed_offsets(broker.url, options["auditor"], "payments") == {}
        # And B's member is still there, with its id, and reads on
        with Producer(broker=broker.url, **as_b) as producer:
            producer.send("pay.orders", b"second").get(30)
        read_until(b_consumer, [b"first", b"second"], got)
        with Admin(broker=broker.url, **as_b) as admin:
            assert [m.member_id for m in admin.describe_group("payments").members] == [b_member.member_id]
            assert admin.list_groups() == ["payments"]
    finally:
        b_consumer.close()
    assert "denied fetchOffsets" in broker.log() and "denied status" in broker.log()


def committed_offsets(url: str, client_options: dict, group: str) -> dict:
    """The answer to a fetchOffsets of ``group`` sent with ``client_options``."""
    conn = Connection(broker_address(url, **client_options))
    try:
        request_id = conn.next_request_id()
        view, _ = conn.request(protocol.encode_group_request(request_id, "fetchOffsets", group),
                               request_id, 10_000)
        return view.committed
    finally:
        conn.close()


TYPO_GRANT = {"operations": ["consume"], "topic": "orders.*"}   # "topic": a typo of "topics"


def refusal_of(command: list[str], timeout_s: float = 60) -> str:
    """Run a plinth command that must refuse to start; its stderr."""
    result = subprocess.run([sys.executable, "-m", "plinth.cli", *command], capture_output=True,
                            text=True, timeout=timeout_s)
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_serve_and_router_refuse_to_start_with_an_acl_that_could_grant_more_than_meant(
        tmp_path, ray_cluster):
    # Given an ACL file whose grant misspells "topics" (it used to grant every topic)
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    _, server_secret = keygen(keys, "server")
    client_public, _ = keygen(keys, "client")
    key = public_key(client_public)
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({key: [TYPO_GRANT]}))
    secured = ["--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
               "--acl", str(acl), "--listen", f"tcp://127.0.0.1:{free_port()}"]
    # When plinth serve, and plinth router, start with it
    for command in (["serve", "--data-dir", str(tmp_path / "d"), "--ray-address", ray_cluster],
                    ["router", "--ray-address", ray_cluster, "--cluster-name", "nobody"]):
        stderr = refusal_of([*command, *secured])
        # Then each refuses, naming the file, the key and the field
        assert str(acl) in stderr and key in stderr and "unknown field 'topic'" in stderr, stderr
    assert not (tmp_path / "d").exists()
