"""Fetch (router/kafka/api_fetch.py) within the listener's fetch bytes in flight:
a partition the router refuses for tooManyRequests is answered empty, not
failed; the parked round asks each partition for at most
KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX. The router is a scripted stand-in that
decodes the real Plinth requests and answers real Plinth replies."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from plinth import limits, protocol
from plinth.errors import TooManyRequestsError
from plinth.protocol_hot import encode_fetch_reply
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_fetch import fetch

CLIENT_PARTITION_BYTES = 10 * 1024 * 1024     # librdkafka's max.partition.fetch.bytes, raised


class ScriptedRouter:
    """Answers each Plinth fetch with ``answer(request)``: "refuse" (tooManyRequests)
    or "empty" (no records, high watermark 0). Keeps every request it got."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[protocol.FetchRequest] = []
        self._ids = iter(range(1, 1_000_000))

    def next_request_id(self) -> int:
        return next(self._ids)

    async def call(self, request_id, header, payload=None, timeout_ms=0, change=False):
        request = protocol.decode_request(header)
        self.requests.append(request)
        if self.answer(request) == "refuse":
            reply = protocol.encode_error(request_id, TooManyRequestsError("fetch bytes in flight"))
        else:
            reply = encode_fetch_reply(request_id, 0, 0)
        return protocol.decode_reply(reply), None


def _fetch_body(partitions: int, max_wait_ms: int) -> dict:
    return {"max_wait_ms": max_wait_ms, "min_bytes": 1,
            "topics": [{"topic": "t", "partitions": [
                {"partition": p, "fetch_offset": 0, "partition_max_bytes": CLIENT_PARTITION_BYTES}
                for p in range(partitions)]}]}


def test_a_partition_the_router_refuses_for_too_many_fetch_bytes_is_answered_empty_without_error():
    # Given a router that refuses partition 1's fetches (tooManyRequests)
    router = ScriptedRouter(lambda r: "refuse" if r.partition == 1 else "empty")
    # When a Kafka fetch asks for partitions 0 and 1 without waiting
    answer = asyncio.run(fetch(SimpleNamespace(backend=router), None, _fetch_body(2, 0), None))
    # Then both are answered, empty and without error
    partitions = answer["responses"][0]["partitions"]
    assert [(p["partition_index"], p["error_code"], p["records"]) for p in partitions] == [
        (0, kafka.NONE, []), (1, kafka.NONE, [])]


def test_the_parked_round_asks_each_partition_for_at_most_the_parked_limit():
    # Given a router with nothing new in any partition
    router = ScriptedRouter(lambda r: "empty")
    # When a Kafka fetch with a wait asks 10 MiB of each of 3 partitions
    asyncio.run(fetch(SimpleNamespace(backend=router), None, _fetch_body(3, 5), None))
    # Then the first round asks for the client's 10 MiB, the parked round for the limit
    at_once = [r.bytes_max for r in router.requests if r.wait_ms_max == 0]
    parked = [r.bytes_max for r in router.requests if r.wait_ms_max > 0]
    assert at_once == [CLIENT_PARTITION_BYTES] * 3
    assert parked == [limits.KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX] * 3


def _answered(partition: int, batch_sizes: list[int]):
    from plinth.router.kafka.api_fetch import _PartitionFetch

    part = _PartitionFetch("t", partition, 0, CLIENT_PARTITION_BYTES)
    part.answer["records"] = [bytes(size) for size in batch_sizes]
    part.records_bytes = sum(batch_sizes)
    return part


def _batch_sizes(parts) -> list[list[int]]:
    return [[len(batch) for batch in part.answer["records"]] for part in parts]


def test_batches_beyond_the_response_max_bytes_are_left_for_the_next_fetch_in_request_order():
    from plinth.router.kafka.api_fetch import keep_within_response_bytes

    # Given three partitions answered with 400-byte batches
    parts = [_answered(0, [400, 400]), _answered(1, [400, 400]), _answered(2, [400])]
    # When the response may hold 1,000 bytes
    keep_within_response_bytes(parts, 1000)
    # Then the first two batches fit, and nothing after the first that does not
    assert _batch_sizes(parts) == [[400, 400], [], []]
    assert [part.records_bytes for part in parts] == [800, 0, 0]


def test_the_first_batch_goes_even_when_larger_than_the_response_max_bytes():
    from plinth.router.kafka.api_fetch import keep_within_response_bytes

    # Given an empty first partition and a second whose first batch is 5,000 bytes
    parts = [_answered(0, []), _answered(1, [5000, 10]), _answered(2, [10])]
    # When the response may hold 1,000 bytes
    keep_within_response_bytes(parts, 1000)
    # Then that batch goes alone, so the consumer makes progress
    assert _batch_sizes(parts) == [[], [5000], []]


def test_answers_within_the_response_max_bytes_are_left_whole():
    from plinth.router.kafka.api_fetch import keep_within_response_bytes

    parts = [_answered(0, [300, 300]), _answered(1, [400])]
    keep_within_response_bytes(parts, 1000)
    assert _batch_sizes(parts) == [[300, 300], [400]]
