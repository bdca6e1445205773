"""Produce (router/kafka/api_produce.py): what a Kafka producer is answered when the
router or the shard refuses its batch. The router is a stand-in (router_backend.py)
answering real Plinth replies."""

from __future__ import annotations

import asyncio
import struct

import pytest

from plinth import protocol
from plinth.errors import InvalidTopicError, StorageError, TooManyRequestsError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_produce import produce
from tests.router.kafka.router_backend import Gateway, RouterBackend

# A RecordBatch's first 12 bytes: baseOffset, then batchLength (the bytes after it).
BATCH = struct.pack(">qi", 0, 49) + bytes(49)


class Refusing(RouterBackend):
    """Answers every produce with ``error``."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def answer(self, request_id, request):
        return protocol.encode_error(request_id, self.error)


def produced(error) -> dict:
    """The partition answer of a Produce v9 of one batch the router answers ``error``."""
    body = {"acks": -1, "timeout_ms": 30_000, "transactional_id": None, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": BATCH}]}]}
    header = type("Header", (), {"api_version": 9, "client_id": "test"})()
    response = asyncio.run(produce(Gateway(Refusing(error)), header, body, None))
    return response["responses"][0]["partition_responses"][0]


def test_a_produce_the_router_refuses_for_its_budgets_is_answered_retriable_as_not_stored():
    # librdkafka fails a produce answered THROTTLING_QUOTA_EXCEEDED for good (its
    # rd_kafka_err_action default); NOT_ENOUGH_REPLICAS it retries as not persisted
    answer = produced(TooManyRequestsError("the router has 536870912 bytes of its clients' "
                                           "requests in flight"))
    assert answer["error_code"] == kafka.NOT_ENOUGH_REPLICAS
    assert "536870912 bytes" in answer["error_message"]
    assert answer["base_offset"] == -1


@pytest.mark.parametrize("error, code", [
    (StorageError("disk full"), kafka.KAFKA_STORAGE_ERROR),
    (InvalidTopicError("bad name"), kafka.INVALID_TOPIC_EXCEPTION),
])
def test_other_refusals_keep_their_kafka_codes(error, code):
    assert produced(error)["error_code"] == code
