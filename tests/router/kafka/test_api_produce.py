"""Produce (router/kafka/api_produce.py): what a Kafka producer is answered when the
router or the shard refuses its batch, and what an acks=0 producer, answered nothing,
is told (its connection is closed). The router is a stand-in (router_backend.py)
answering real Plinth replies; the listener is a real one on 127.0.0.1."""

from __future__ import annotations

import asyncio
import struct

import pytest

from plinth import limits, protocol, protocol_hot
from plinth.errors import (InvalidTopicError, NotEnoughReplicasBeforeWriteError,
                           NotEnoughReplicasError, NotLeaderError, StorageError,
                           TooManyRequestsError)
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_produce import produce
from plinth.router.kafka.listener import CloseConnection, KafkaListener
from plinth.router.kafka.messages import HEARTBEAT, PRODUCE
from tests.router.kafka.router_backend import Gateway, RouterBackend
from tests.router.kafka.test_listener import closed_by_peer, connect, read_response, request

# A RecordBatch's first 12 bytes: baseOffset, then batchLength (the bytes after it).
BATCH = struct.pack(">qi", 0, 49) + bytes(49)


class Refusing(RouterBackend):
    """Answers every produce with ``error``."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def answer(self, request_id, request):
        return protocol.encode_error(request_id, self.error)


class Storing(RouterBackend):
    """Stores every produce: answers it with offset 7."""

    def answer(self, request_id, request):
        return protocol_hot.encode_produce_reply(request_id, 7)


def produce_body(acks: int, partitions: int = 1) -> dict:
    """A Produce of one batch to each of ``partitions`` partitions of topic t."""
    return {"acks": acks, "timeout_ms": 30_000, "transactional_id": None, "topic_data": [
        {"name": "t", "partition_data": [{"index": index, "records": BATCH}
                                         for index in range(partitions)]}]}


HEADER = type("Header", (), {"api_version": 9, "client_id": "test", "correlation_id": 5})()


def produced(error) -> dict:
    """The partition answer of a Produce v9 of one batch the router answers ``error``."""
    response = asyncio.run(produce(Gateway(Refusing(error)), HEADER, produce_body(-1), None))
    return response["responses"][0]["partition_responses"][0]


def test_a_produce_the_router_refuses_for_its_budgets_is_answered_retriable_as_not_stored():
    # librdkafka fails a produce answered THROTTLING_QUOTA_EXCEEDED for good (its
    # rd_kafka_err_action default); NOT_ENOUGH_REPLICAS it retries as not persisted
    answer = produced(TooManyRequestsError("the router has 536870912 bytes of its clients' "
                                           "requests in flight"))
    assert answer["error_code"] == kafka.NOT_ENOUGH_REPLICAS
    assert "536870912 bytes" in answer["error_message"]
    assert answer["base_offset"] == -1


def test_not_enough_replicas_after_an_append_is_kafkas_after_append_code_and_before_it_not():
    # A produce that waited and was answered as the in-sync set shrank was appended:
    # NOT_ENOUGH_REPLICAS_AFTER_APPEND (possibly persisted), as Kafka answers it
    waited = produced(NotEnoughReplicasError("t-0: in-sync replicas ['s0'] are 1, fewer "
                                             "than min.insync.replicas=2"))
    assert waited["error_code"] == kafka.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    # One refused before the append is NOT_ENOUGH_REPLICAS: nothing was persisted
    refused = produced(NotEnoughReplicasBeforeWriteError("t-0: 1 in-sync replicas ['s0'], "
                                                         "fewer than min.insync.replicas 2"))
    assert refused["error_code"] == kafka.NOT_ENOUGH_REPLICAS


@pytest.mark.parametrize("error, code", [
    (StorageError("disk full"), kafka.KAFKA_STORAGE_ERROR),
    (InvalidTopicError("bad name"), kafka.INVALID_TOPIC_EXCEPTION),
])
def test_other_refusals_keep_their_kafka_codes(error, code):
    assert produced(error)["error_code"] == code


def test_an_acks_0_produce_that_was_stored_gets_no_response():
    assert asyncio.run(produce(Gateway(Storing()), HEADER, produce_body(0), None)) is None


def test_an_acks_0_produce_that_failed_closes_its_connection_naming_the_partitions():
    # Given a router that answers every partition's batch: not the leader
    refusing = Gateway(Refusing(NotLeaderError("t-3 moved to shard 2")))
    partitions = limits.PRODUCE_ACKS0_FAILURES_NAMED_MAX + 2
    # When an acks=0 Produce of that many partitions is handled
    with pytest.raises(CloseConnection) as raised:
        asyncio.run(produce(refusing, HEADER, produce_body(0, partitions), None))
    # Then the connection is closed, counted under its reason, with the answer it
    # stands for, and the line names the request, the first partitions, their error,
    # and how many more
    error = raised.value
    assert error.close_reason == "produce_acks0_failed"
    answers = error.body["responses"][0]["partition_responses"]
    assert [answer["error_code"] for answer in answers] == \
        [kafka.NOT_LEADER_OR_FOLLOWER] * partitions
    assert str(error).startswith("a Produce with acks=0 (correlation id 5, client id 'test') "
                                 "failed for t-0: NOT_LEADER_OR_FOLLOWER (")
    assert "t-3 moved to shard 2" in str(error)
    assert f"t-{limits.PRODUCE_ACKS0_FAILURES_NAMED_MAX - 1}: " in str(error)
    assert f"t-{limits.PRODUCE_ACKS0_FAILURES_NAMED_MAX}: " not in str(error)
    assert "; and 2 more partitions: closed so that the client learns of it" in str(error)


def test_a_real_listener_closes_the_connection_of_a_failed_acks_0_produce_and_counts_it():
    # Given a listener whose produces the router refuses: not the leader
    gateway = Gateway(Refusing(NotLeaderError("t-0 moved")))

    async def handle(connection, header, body):
        if header.api_key == PRODUCE.key:
            return await produce(gateway, header, body, connection)
        return {"error_code": body["generation_id"]}

    listener = KafkaListener("127.0.0.1", 0, handle)
    address = listener.start()
    try:
        with connect(address) as sock, connect(address) as other:
            # When one client sends an acks=0 Produce, then a Heartbeat behind it
            sock.sendall(request(PRODUCE, 9, 1, produce_body(0))
                         + request(HEARTBEAT, 4, 2, {"group_id": "g", "generation_id": 0}))
            # Then its connection is closed before any answer; the other is still served
            assert closed_by_peer(sock)
            other.sendall(request(HEARTBEAT, 4, 3, {"group_id": "g", "generation_id": 0}))
            assert read_response(other, HEARTBEAT, 4)[0] == 3
        # And the close is counted under its reason, and the partition's error as answered
        assert listener.counts.closes() == {"produce_acks0_failed": 1}
        assert listener.counts.errors() == {("Produce", "NOT_LEADER_OR_FOLLOWER"): 1}
    finally:
        listener.stop()
