"""Numbers a Kafka request may hold that Plinth's requests cannot carry
(router/kafka/request_values.py, backend.ask): Kafka's refusals, and the
encoder's refusal answered as one entry's error rather than raised."""

from __future__ import annotations

import asyncio

from plinth import protocol
from plinth.errors import MalformedRequestError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask
from plinth.router.kafka.request_values import (new_topic_error, partition_count_error,
                                                 partition_error)


class AnsweringBackend:
    """Plays the router: answers every request it is sent with ok; records them."""

    def __init__(self):
        self.sent: list[bytes] = []

    def next_request_id(self) -> int:
        return len(self.sent) + 1

    async def call(self, request_id, header, payload=None, timeout_ms=0, change=False):
        self.sent.append(header)
        return protocol.decode_reply(protocol.encode_ok(request_id)), None


def test_a_value_the_encoder_cannot_carry_comes_back_as_the_requests_error_unsent():
    # Given a partition of -1, which Plinth's UInt32 cannot hold
    backend = AnsweringBackend()
    # When it is asked of the router
    reply, _ = asyncio.run(ask(backend, lambda rid: protocol.encode_list_offsets(rid, "t", -1)))
    # Then the reply carries a malformedRequest naming the value, and nothing was sent
    assert isinstance(reply.error, MalformedRequestError)
    assert "value = -1" in str(reply.error) and "stack" not in str(reply.error)
    assert backend.sent == []


def test_a_fetch_of_a_negative_max_bytes_comes_back_as_the_requests_error_unsent():
    backend = AnsweringBackend()
    reply, _ = asyncio.run(ask(backend, lambda rid: protocol.encode_fetch(rid, "t", 0, 0, -1, 0)))
    assert isinstance(reply.error, MalformedRequestError)
    assert backend.sent == []


def test_a_negative_partition_is_unknown_and_any_other_is_left_to_the_shard():
    assert partition_error(-1) == partition_error(-2**31) == kafka.UNKNOWN_TOPIC_OR_PARTITION
    assert partition_error(0) == partition_error(2**31 - 1) == kafka.NONE


def test_minus_one_is_the_default_and_zero_or_below_minus_one_is_refused_as_kafka_does():
    assert new_topic_error("t", -1, -1) is None
    assert new_topic_error("t", 3, 2) is None
    for partitions in (0, -2, -2**31):
        code, message = new_topic_error("t", partitions, -1)
        assert code == kafka.INVALID_PARTITIONS and str(partitions) in message
    for factor in (0, -2, -2**15):
        code, message = new_topic_error("t", 1, factor)
        assert code == kafka.INVALID_REPLICATION_FACTOR and str(factor) in message


def test_a_partition_count_below_one_is_refused_not_read_as_unchanged():
    assert partition_count_error("t", 0)[0] == kafka.INVALID_PARTITIONS
    assert partition_count_error("t", -5)[0] == kafka.INVALID_PARTITIONS
    assert partition_count_error("t", 1) is None
