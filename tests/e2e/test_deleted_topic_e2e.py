"""A topic deleted while clients produce to it, through a real ``plinth serve`` (real Ray,
ZeroMQ, disk, its Kafka listener): a request routed by a map older than the delete is
answered "topic ... was deleted" (unknownTopic; Kafka's UNKNOWN_TOPIC_OR_PARTITION), never
"not on this shard; retry" (tester T-rk's F5, shards/deleted_partitions.py), and the
topic created again under the same name is served.

The deletes go through a second router (``plinth router``), so that the serve's router,
which the producers use, learns of them only at its next timed refresh (up to
ROUTING_REFRESH_INTERVAL_S later): until then it sends them to the shard that deleted
the partition, as a router between refreshes does.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
import zmq

from plinth import Admin, Producer, protocol
from plinth.errors import UnknownTopicError
from plinth.router.kafka import codec
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.messages import PRODUCE
from tests.conftest import Broker
from tests.e2e.test_direct_clients_e2e import direct_addresses
from tests.e2e.test_kafka_hostile_e2e import good_batch, read_exactly, request
from tests.support import free_port, unique_topic, wait_until

WAIT_S = 30.0
PRODUCE_VERSION = 9    # its partition responses carry an error message


@pytest.fixture(scope="module")
def cluster(ray_cluster, tmp_path_factory):
    """(a broker with a Kafka listener, a second router of its cluster for the deletes)."""
    from tests.conftest import StandaloneRouter

    name, port = unique_topic("deleted-cluster"), free_port()
    broker = Broker(tmp_path_factory.mktemp("deleted"), ray_cluster, shards=2,
                    extra_args=("--cluster-name", name, "--kafka-listen", f"127.0.0.1:{port}"))
    broker.kafka_address = ("127.0.0.1", port)
    broker.start()
    other = StandaloneRouter(ray_cluster, name)
    try:
        other.start()
        yield broker, other
    finally:
        other.stop()
        broker.stop()
        broker.end_leftover_shards()


def kafka_produce(sock: socket.socket, topic: str, correlation_id: int) -> tuple[int, str]:
    """One acks=1 Produce of a small batch to ``topic``-0: (error code, error message)."""
    sock.sendall(request(PRODUCE, PRODUCE_VERSION, correlation_id, {
        "transactional_id": None, "acks": 1, "timeout_ms": 5_000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0,
                                                           "records": good_batch(1)}]}]}))
    size = read_exactly(sock, 4)
    assert size is not None, "the listener closed the connection of an acks=1 produce"
    _, body = codec.decode_response(PRODUCE.key, PRODUCE_VERSION,
                                    read_exactly(sock, struct.unpack(">i", size)[0]))
    answer = body["responses"][0]["partition_responses"][0]
    return answer["error_code"], answer["error_message"] or ""


def test_a_direct_producers_request_after_the_delete_is_told_the_topic_was_deleted(cluster):
    # Given a topic of one partition, and a client at its shard's direct socket (whose
    # route, as a direct client's, lasts until it asks the router again)
    broker, other = cluster
    topic = unique_topic("del-direct")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    [address] = direct_addresses(broker.url, topic)
    assert address.startswith("tcp://127."), address
    direct = zmq.Context.instance().socket(zmq.DEALER)
    direct.setsockopt(zmq.LINGER, 0)
    direct.connect(address)
    try:
        assert produce_direct(direct, topic, 1).error is None
        # When the topic is deleted
        with Admin(broker=other.url) as admin:
            admin.delete_topic(topic)
        # Then the next produce is answered unknownTopic naming the topic as deleted, not
        # "partition ... is not on shard-N; retry"
        view = produce_direct(direct, topic, 2)
        assert isinstance(view.error, UnknownTopicError), view.error
        assert f"topic {topic!r}" in str(view.error) and "was deleted" in str(view.error)
    finally:
        direct.close()
    # And the topic created again under the same name takes records at once
    with Admin(broker=other.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=broker.url, linger_ms=0, direct_to_shards=True) as producer:
        assert producer.send(topic, b"again").get(WAIT_S).offset == 0


def produce_direct(sock: zmq.Socket, topic: str, request_id: int) -> protocol.ReplyView:
    sock.send_multipart([protocol.encode_produce(request_id, topic, 0, 1), good_plinth_batch()])
    assert sock.poll(WAIT_S * 1000), "no reply from the direct socket"
    return protocol.decode_reply(sock.recv_multipart()[0])


def good_plinth_batch() -> bytes:
    from plinth.format.record_batch import BatchBuilder

    builder = BatchBuilder()
    builder.append(None, b"v", int(time.time() * 1000), None)
    return builder.build()


def test_a_kafka_producer_sending_while_the_topic_is_deleted_hears_unknown_topic_never_retry(
        cluster):
    # Given a topic of one partition and a Kafka client producing to it with acks=1, one
    # request after another
    broker, other = cluster
    topic = unique_topic("del-kafka")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def produce() -> None:
        with socket.create_connection(broker.kafka_address, timeout=WAIT_S) as sock:
            correlation_id = 0
            while not stop.is_set():
                correlation_id += 1
                answers.append((time.monotonic(), *kafka_produce(sock, topic, correlation_id)))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sum(code == kafka.NONE for _, code, _ in answers) >= 50,
                   timeout_s=WAIT_S, explain=lambda: answers[-3:])
        # When the topic is deleted (the producers' router hears of it at its next refresh)
        with Admin(broker=other.url) as admin:
            admin.delete_topic(topic)
        deleted_s = time.monotonic()
        wait_until(lambda: any(at > deleted_s + 2.0 for at, _, _ in answers), timeout_s=WAIT_S)
    finally:
        stop.set()
        thread.join(WAIT_S)
    # Then every answer after the delete is UNKNOWN_TOPIC_OR_PARTITION naming the topic
    # (the shard's "was deleted" until the router refreshes, then the router's own), and
    # none NOT_LEADER_OR_FOLLOWER "retry"
    after = [(code, message) for at, code, message in answers if at > deleted_s]
    refused = [(code, message) for code, message in after if code != kafka.NONE]
    assert refused and all(code == kafka.UNKNOWN_TOPIC_OR_PARTITION and repr(topic) in message
                           for code, message in refused), sorted(set(refused))[:5]
    # And the topic created again under the same name is served, once the router has its map
    with Admin(broker=other.url) as admin:
        admin.create_topic(topic, 1)
    with socket.create_connection(broker.kafka_address, timeout=WAIT_S) as sock:
        served = wait_until(lambda: kafka_produce(sock, topic, 1)[0] == kafka.NONE,
                            timeout_s=WAIT_S)
    assert served
