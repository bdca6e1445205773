"""Clients' produce and fetch straight to the leader shard, through a real ``plinth
serve`` (real Ray, ZeroMQ, disk): the router's metadata names each partition's
leader's direct socket on a plaintext loopback broker, and none with CurveZMQ or
``--direct-clients off``; a direct producer and consumer skip the router (the
shards count requests by socket), and a direct producer whose leader dies goes
on through the new leader without losing or duplicating a record."""

from __future__ import annotations

import os
import signal
import threading
import time

from plinth import Admin, Consumer, Producer, protocol
from plinth.client.connection import Connection
from tests.e2e.test_security_e2e import keygen
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until

REQUEST_TIMEOUT_MS = 60_000


def direct_addresses(url: str, topic: str, **keys) -> list[str]:
    """The metadata reply's direct addresses of ``topic``, as a client gets them."""
    conn = Connection(url if not keys else _address(url, **keys))
    try:
        request_id = conn.next_request_id()
        view, _ = conn.request(protocol.encode_metadata(request_id, [topic]), request_id, 30_000)
        return view.topics[0].direct_addresses
    finally:
        conn.close()


def _address(url: str, curve_key_file: str, curve_server_key_file: str):
    from plinth.client.connection import broker_address

    return broker_address(url, curve_key_file, curve_server_key_file)


def requests_by_shard(admin: Admin) -> dict[str, tuple[int, int]]:
    """shard id -> (requests direct, requests via a router)."""
    return {s.shard_id: (s.requests_direct, s.requests_via_router) for s in admin.status().shards}


def produce_and_consume(url: str, topic: str, count: int, direct: bool,
                        counted=lambda: None) -> list[bytes]:
    """``count`` records produced one at a time and consumed, by one producer and one
    consumer, after 20 records each has gone through first (while a direct client's
    metadata request is answered, through the router); ``counted()`` is called
    between the two."""
    with Producer(broker=url, linger_ms=0, direct_to_shards=direct) as producer, \
            Consumer(topic, broker=url, auto_offset_reset="earliest",
                     consumer_timeout_ms=10_000, direct_to_shards=direct) as consumer:
        for phase, phase_count in (("warm-up", 20), ("counted", count)):
            if phase == "counted":
                counted()
            for i in range(phase_count):
                producer.send(topic, b"%s-%d" % (phase.encode(), i)).get(30)
            # (range first: zip stops at it without asking the consumer for one more
            # record, which would wait out consumer_timeout_ms)
            values = [record.value for _, record in zip(range(phase_count), consumer)]
    return values


def test_a_plaintext_loopback_broker_names_each_leaders_direct_socket_and_clients_use_it(
        shared_broker):
    # Given a topic of 2 partitions on a plaintext broker on loopback
    topic = unique_topic("direct")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 2)
        status = {s.shard_id: s for s in admin.status().shards}
        # Then the metadata names a direct socket on loopback for every partition, the
        # one its shard reports
        addresses = direct_addresses(shared_broker.url, topic)
        assert len(addresses) == 2 and all(a.startswith("tcp://127.") for a in addresses)
        assert set(addresses) <= {s.direct_address for s in status.values()}
        # When a producer and a consumer, past their first records, go through 200
        # more, one at a time
        counts = {}
        values = produce_and_consume(shared_broker.url, topic, 200, direct=True,
                                     counted=lambda: counts.update(requests_by_shard(admin)))
        after = requests_by_shard(admin)
    # Then every record came back, and (nearly) every request skipped the router
    assert sorted(values) == sorted(b"counted-%d" % i for i in range(200))
    direct = sum(after[s][0] - counts[s][0] for s in after)
    via_router = sum(after[s][1] - counts[s][1] for s in after)
    assert direct >= 200 and direct > 10 * via_router, (direct, via_router)


def test_a_client_told_not_to_go_direct_goes_through_the_router(shared_broker):
    topic = unique_topic("routed")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)
        before = requests_by_shard(admin)
        values = produce_and_consume(shared_broker.url, topic, 50, direct=False)
        after = requests_by_shard(admin)
    assert len(values) == 50
    assert sum(after[s][0] - before[s][0] for s in after) == 0
    assert sum(after[s][1] - before[s][1] for s in after) >= 70   # the produces alone


def test_with_direct_clients_off_no_shard_has_a_direct_socket(broker_factory):
    broker = broker_factory(shards=1, extra_args=("--direct-clients", "off"))
    topic = unique_topic("off")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
        assert [s.direct_address for s in admin.status().shards] == [""]
        assert direct_addresses(broker.url, topic) == [""]
        produce_and_consume(broker.url, topic, 20, direct=True)
        assert requests_by_shard(admin)["shard-0"][0] == 0


def test_with_curvezmq_nothing_is_direct(tmp_path, broker_factory):
    # Given a broker with CurveZMQ and an ACL
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    client_public, client_secret = keygen(keys, "client")
    (authorized / client_public.name).write_text(client_public.read_text())
    import json

    import zmq.auth

    client_key = zmq.auth.load_certificate(str(client_public))[0].decode()
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({client_key: [
        {"operations": ["produce", "consume", "admin", "cluster"], "topics": "*"}]}))
    broker = broker_factory(shards=1, extra_args=(
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
        "--acl", str(acl)))
    keys_of = dict(curve_key_file=str(client_secret), curve_server_key_file=str(server_public))
    topic = unique_topic("curve")
    with Admin(broker=broker.url, **keys_of) as admin:
        admin.create_topic(topic, 1)
        # Then no shard binds a direct socket and the metadata names none
        assert [s.direct_address for s in admin.status().shards] == [""]
        assert direct_addresses(broker.url, topic, **keys_of) == []
        # and a client's records all pass the router (and its ACL)
        with Producer(broker=broker.url, linger_ms=0, **keys_of) as producer:
            for i in range(20):
                producer.send(topic, b"%d" % i).get(30)
        with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=5_000, **keys_of) as consumer:
            assert len([r for _, r in zip(range(20), consumer)]) == 20
        direct, via_router = requests_by_shard(admin)["shard-0"]
    assert direct == 0 and via_router >= 21


def test_a_direct_producer_goes_on_through_the_new_leader_when_the_leader_dies(broker_factory):
    # Given a factor-3 topic on three shards (one node), a direct producer sending
    # one record at a time
    broker = broker_factory(shards=3, extra_args=("--allow-replicas-on-one-node",))
    topic = unique_topic("failover")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1, replication_factor=3)
        described = admin.describe_topic(topic).partition_info[0]
        leader, epoch = described.shard, described.leader_epoch
        pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 3 and found,
                          timeout_s=60)
        acknowledged: list[bytes] = []
        slowest_s = [0.0]
        stop = threading.Event()

        def produce() -> None:
            with Producer(broker=broker.url, linger_ms=0, acks="all",
                          request_timeout_ms=REQUEST_TIMEOUT_MS,
                          delivery_timeout_ms=3 * REQUEST_TIMEOUT_MS) as producer:
                i = 0
                while not stop.is_set():
                    started = time.monotonic()
                    producer.send(topic, b"%d" % i).get(3 * REQUEST_TIMEOUT_MS / 1000)
                    slowest_s[0] = max(slowest_s[0], time.monotonic() - started)
                    acknowledged.append(b"%d" % i)
                    i += 1

        thread = threading.Thread(target=produce)
        thread.start()
        try:
            wait_until(lambda: len(acknowledged) >= 200, timeout_s=90,
                       explain=lambda: f"{len(acknowledged)} acknowledged")
            assert requests_by_shard(admin)[leader][0] > 100   # it went direct
            # When the leader's process is killed
            os.kill(pids[leader], signal.SIGKILL)
            # Then the producer goes on: through the router, then at the new leader's
            # direct socket
            # (a new leader epoch: Ray restarts the killed shard, which may lead again)
            new_leader = wait_until(
                lambda: (info := admin.describe_topic(topic).partition_info[0])
                .leader_epoch > epoch and info.shard, timeout_s=90,
                explain=lambda: admin.describe_topic(topic).partition_info[0])
            # (counted from here, not from the kill: on a loaded machine the producer
            # had made most of 300 sends direct before the new epoch could be read)
            before = requests_by_shard(admin).get(new_leader, (0, 0))[0]
            acknowledged_before = len(acknowledged)
            wait_until(lambda: len(acknowledged) >= acknowledged_before + 300, timeout_s=90,
                       explain=lambda: f"{len(acknowledged) - acknowledged_before} acknowledged "
                                       f"since")
            assert requests_by_shard(admin)[new_leader][0] > before + 100
        finally:
            stop.set()
            thread.join(3 * REQUEST_TIMEOUT_MS / 1000)
    # No record waited for a request timeout, and every acknowledged record is
    # stored once, in order
    print(f"slowest acknowledgement {slowest_s[0]:.2f} s; {len(acknowledged)} acknowledged")
    assert slowest_s[0] < REQUEST_TIMEOUT_MS / 1000 / 2, slowest_s[0]
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=10_000) as consumer:
        stored = [r.value for r in consumer]
    assert stored[:len(acknowledged)] == acknowledged
    assert len(stored) <= len(acknowledged) + 1   # at most the one in flight when it stopped
