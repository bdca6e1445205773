"""Fetch (router/kafka/api_fetch.py) within the listener's fetch bytes in flight:
a partition the router refuses for tooManyRequests is answered empty, not
failed; the parked round asks each partition for at most
KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX; a fetch waits for its min_bytes across
several parked rounds. The router is a scripted stand-in that decodes the real
Plinth requests and answers real Plinth replies, with real log entries."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace

from plinth import limits, protocol
from plinth.errors import TooManyRequestsError
from plinth.format.kafka_batch import kafka_batch_from_records
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2, build_entry_header
from plinth.format.record_batch import ConsumerRecord
from plinth.protocol_hot import encode_fetch_reply
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_fetch import fetch
from plinth.router.requests_in_flight import FetchBytesInFlight

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


class ArrivingLog(ScriptedRouter):
    """A router over one partition whose records arrive one batch at a time while a
    fetch is parked: a fetch without a wait finds none new; a parked fetch is answered
    with the next batch to arrive (as a shard answers at its first new batch), until
    ``batches`` have arrived. Each batch is one record of ``value_bytes``."""

    def __init__(self, batches: int, value_bytes: int = 100):
        super().__init__(answer=None)
        self.batches, self.value_bytes = batches, value_bytes
        self.arrived = 0

    async def call(self, request_id, header, payload=None, timeout_ms=0, change=False):
        request = protocol.decode_request(header)
        self.requests.append(request)
        if request.wait_ms_max == 0 or self.arrived == self.batches:
            return protocol.decode_reply(encode_fetch_reply(request_id, self.arrived, 0)), None
        assert request.offset == self.arrived, "asked again from where its records end"
        offset = self.arrived
        self.arrived += 1
        batch = kafka_batch_from_records(
            [ConsumerRecord("t", 0, offset, None, bytes(self.value_bytes), [], 1_000)],
            base_offset=offset)
        entry = build_entry_header(offset, 1_000, 1, batch, BATCH_FORMAT_KAFKA_V2) + batch
        reply = protocol.decode_reply(encode_fetch_reply(request_id, self.arrived, 0))
        return reply, SimpleNamespace(buffer=memoryview(entry))


def _answered_batches(log: ArrivingLog, min_bytes: int, max_wait_ms: int = 5000) -> list:
    body = {"max_wait_ms": max_wait_ms, "min_bytes": min_bytes,
            "topics": [{"topic": "t", "partitions": [
                {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}]}
    answer = asyncio.run(fetch(SimpleNamespace(backend=log), None, body, None))
    [partition] = answer["responses"][0]["partitions"]
    assert partition["error_code"] == kafka.NONE
    return partition["records"]


def test_a_fetch_waits_for_its_min_bytes_over_several_batches_arriving_one_at_a_time():
    # Given a partition whose records arrive one 100-byte record per batch
    log = ArrivingLog(batches=20)
    # When a Kafka fetch asks for at least 1,000 bytes
    batches = _answered_batches(log, min_bytes=1000)
    # Then it is answered once they have come, in one answer, offsets in order
    assert sum(len(batch) for batch in batches) >= 1000
    assert 1 < len(batches) < 20
    assert [struct.unpack_from(">q", batch)[0] for batch in batches] == list(range(len(batches)))


def test_a_fetch_of_min_bytes_1_is_answered_at_the_first_batch():
    log = ArrivingLog(batches=20)
    assert len(_answered_batches(log, min_bytes=1)) == 1
    assert [r.wait_ms_max > 0 for r in log.requests] == [False, True]


def test_a_fetch_whose_min_bytes_never_come_is_answered_with_what_came():
    # Given 3 batches that arrive, fewer bytes than the fetch's min_bytes
    log = ArrivingLog(batches=3)
    # Then it is answered with all 3 once its wait ran out
    assert len(_answered_batches(log, min_bytes=1 << 20, max_wait_ms=300)) == 3


class BudgetedRouter:
    """The router as the listener meets it: one client whose Plinth fetches in flight
    are counted as the real router counts them (CLIENT_REQUESTS_IN_FLIGHT_MAX, and
    requests_in_flight.FetchBytesInFlight's CLIENT_FETCH_BYTES_IN_FLIGHT_MAX), those
    beyond refused tooManyRequests. Each partition holds one record at offset 0; a
    fetch finding nothing and allowed to wait stays at its "shard", counted, until its
    wait ends, even when the listener stopped awaiting it (as a real parked fetch)."""

    CLIENT = b"kafka-listener"

    def __init__(self, value_bytes: int = 70):
        self.value_bytes = value_bytes
        self.fetch_bytes = FetchBytesInFlight()
        self.in_flight = self.in_flight_max = self.parked = self.parked_max = 0
        self.asked: list[protocol.FetchRequest] = []
        self._ids = iter(range(1, 1_000_000))

    def next_request_id(self) -> int:
        return next(self._ids)

    async def call(self, request_id, header, payload=None, timeout_ms=0, change=False):
        request = protocol.decode_request(header)
        self.asked.append(request)
        why = self.fetch_bytes.refusal(self.CLIENT, request_id, request.bytes_max)
        if why is None and self.in_flight >= limits.CLIENT_REQUESTS_IN_FLIGHT_MAX:
            why = f"{self.in_flight} requests in flight"
        if why is not None:
            return protocol.decode_reply(
                protocol.encode_error(request_id, TooManyRequestsError(why))), None
        self.fetch_bytes.forwarded("shard-0", self.CLIENT, request_id, request.bytes_max)
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        # shielded: the listener giving up on a parked fetch does not answer it at the shard
        return await asyncio.shield(asyncio.ensure_future(self._shard(request_id, request)))

    async def _shard(self, request_id: int, request: protocol.FetchRequest):
        try:
            reply = protocol.decode_reply(encode_fetch_reply(request_id, 1, 0))
            if request.offset == 0:
                await asyncio.sleep(0.001)
                return reply, SimpleNamespace(buffer=memoryview(self._entry(request.partition)))
            self.parked += 1
            self.parked_max = max(self.parked_max, self.parked)
            await asyncio.sleep(request.wait_ms_max / 1000)
            self.parked -= 1
            return reply, None
        finally:
            self.in_flight -= 1
            self.fetch_bytes.answered(self.CLIENT, request_id)

    def _entry(self, partition: int) -> bytes:
        batch = kafka_batch_from_records(
            [ConsumerRecord("t", partition, 0, None, bytes(self.value_bytes), [], 1_000)],
            base_offset=0)
        return build_entry_header(0, 1_000, 1, batch, BATCH_FORMAT_KAFKA_V2) + batch


LIBRDKAFKA_PARTITION_BYTES = 1024 * 1024      # librdkafka's default max.partition.fetch.bytes


def _consume(router: BudgetedRouter, partitions: int, fetches_max: int,
             response_bytes_max: int = 50 * 1024 * 1024) -> tuple[int, set[int]]:
    """A consumer of ``partitions`` from offset 0: Kafka fetches (max_wait_ms 50) until
    it has every partition's record or made ``fetches_max``. Returns (fetches made,
    partitions read)."""
    offsets = dict.fromkeys(range(partitions), 0)

    async def run() -> int:
        for fetches in range(1, fetches_max + 1):
            body = {"max_wait_ms": 50, "min_bytes": 1, "max_bytes": response_bytes_max,
                    "topics": [{"topic": "t", "partitions": [
                        {"partition": p, "fetch_offset": offset,
                         "partition_max_bytes": LIBRDKAFKA_PARTITION_BYTES}
                        for p, offset in offsets.items()]}]}
            answer = await fetch(SimpleNamespace(backend=router), None, body, None)
            for partition in answer["responses"][0]["partitions"]:
                assert partition["error_code"] == kafka.NONE
                if partition["records"]:
                    offsets[partition["partition_index"]] = 1
            if all(offsets.values()):
                return fetches
        return fetches_max

    fetches = asyncio.run(run())
    return fetches, {p for p, offset in offsets.items() if offset}


def test_a_fetch_of_more_partitions_than_the_listener_has_in_flight_gets_every_record_at_once():
    # Given 1000 partitions holding one record each, more than the listener's fetches
    # (requests and bytes) in flight allow at once
    router = BudgetedRouter()
    # When a consumer fetches them all, librdkafka's defaults, for at most 3 fetches
    fetches, read = _consume(router, partitions=1000, fetches_max=3)
    # Then every partition's record came, in the first fetch
    assert len(read) == 1000
    assert fetches == 1


def test_a_kafka_fetch_keeps_its_fetches_and_parked_fetches_at_once_within_their_limits():
    # Given 1000 partitions holding one record each
    router = BudgetedRouter()
    # When a consumer reads them, then fetches once more (nothing new: it parks)
    _consume(router, partitions=1000, fetches_max=3)
    asyncio.run(fetch(SimpleNamespace(backend=router), None, {
        "max_wait_ms": 50, "min_bytes": 1, "topics": [{"topic": "t", "partitions": [
            {"partition": p, "fetch_offset": 1, "partition_max_bytes": LIBRDKAFKA_PARTITION_BYTES}
            for p in range(1000)]}]}, None))
    # Then no more than its window was in flight at once, nor parked
    assert router.in_flight_max <= limits.KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX
    assert 0 < router.parked_max <= limits.KAFKA_FETCH_PARKED_PARTITIONS_MAX


def test_partitions_after_a_full_response_are_not_fetched():
    # Given 1000 partitions holding one record each (about 150 bytes a batch)
    router = BudgetedRouter()
    # When a consumer's fetch may bring back 1,000 bytes
    fetches, read = _consume(router, partitions=1000, fetches_max=1, response_bytes_max=1000)
    # Then it gets what fits, and the router is not asked for all 1000 partitions
    assert 1 <= len(read) < 10
    assert len(router.asked) <= len(read) + limits.KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX


class WakingRouter(BudgetedRouter):
    """A BudgetedRouter whose partitions get records while fetches are parked, as a
    shard's purgatory wakes them: ``arrive(partition)`` appends one record and
    answers every fetch parked there (including those the listener stopped
    awaiting); a parked fetch otherwise answers empty when its wait ends."""

    def __init__(self):
        super().__init__()
        self.ends: dict[int, int] = {}
        self.woken: dict[int, asyncio.Event] = {}

    def arrive(self, partition: int) -> None:
        self.ends[partition] = self.ends.get(partition, 0) + 1
        self.woken.pop(partition, asyncio.Event()).set()

    async def _shard(self, request_id: int, request: protocol.FetchRequest):
        try:
            end = self.ends.get(request.partition, 0)
            if request.offset >= end and request.wait_ms_max:
                self.parked += 1
                self.parked_max = max(self.parked_max, self.parked)
                woken = self.woken.setdefault(request.partition, asyncio.Event())
                try:
                    await asyncio.wait_for(woken.wait(), request.wait_ms_max / 1000)
                except asyncio.TimeoutError:
                    pass
                self.parked -= 1
                end = self.ends.get(request.partition, 0)
            reply = protocol.decode_reply(encode_fetch_reply(request_id, end, 0))
            if request.offset >= end:
                return reply, None
            return reply, SimpleNamespace(buffer=memoryview(self._entry(request.partition,
                                                                        request.offset)))
        finally:
            self.in_flight -= 1
            self.fetch_bytes.answered(self.CLIENT, request_id)

    def _entry(self, partition: int, offset: int = 0) -> bytes:
        batch = kafka_batch_from_records(
            [ConsumerRecord("t", partition, offset, None, bytes(self.value_bytes), [], 1_000)],
            base_offset=offset)
        return build_entry_header(offset, 1_000, 1, batch, BATCH_FORMAT_KAFKA_V2) + batch


def _long_poll_latencies(partitions: int, records: int, max_wait_ms: int) -> tuple[list, int]:
    """One connection's consumer of ``partitions`` (nothing in them yet), fetching with
    ``max_wait_ms`` and min_bytes 1 while one record arrives, 20 ms into each fetch, in
    partition after partition. Returns (each fetch's seconds until answered, the most
    fetches parked at once)."""
    router = WakingRouter()
    connection = SimpleNamespace(state={})
    offsets = dict.fromkeys(range(partitions), 0)

    async def run() -> list:
        loop = asyncio.get_running_loop()
        took = []
        for index in range(records):
            partition = index * 7 % partitions
            loop.call_later(0.02, router.arrive, partition)
            body = {"max_wait_ms": max_wait_ms, "min_bytes": 1, "topics": [{
                "topic": "t", "partitions": [
                    {"partition": p, "fetch_offset": offset,
                     "partition_max_bytes": LIBRDKAFKA_PARTITION_BYTES}
                    for p, offset in offsets.items()]}]}
            start_s = loop.time()
            answer = await fetch(SimpleNamespace(backend=router), None, body, connection)
            took.append(loop.time() - start_s)
            for got in answer["responses"][0]["partitions"]:
                offsets[got["partition_index"]] += len(got["records"])
            assert offsets[partition] == router.ends[partition], "the record came"
        return took

    took = asyncio.run(run())
    return took, router.parked_max


def test_a_record_in_any_parked_partition_answers_the_fetch_at_once_fetch_after_fetch():
    # Given a consumer of 48 partitions whose every fetch is answered early, by a
    # record in one partition, while the others' parked fetches stay at the shards
    took, parked_max = _long_poll_latencies(partitions=48, records=40, max_wait_ms=3000)
    # Then each fetch is answered at its record, not after its wait (the next fetch
    # takes the fetches still parked over instead of parking 48 more, which filled
    # the listener's fetch bytes in flight, refused, within a few fetches)
    assert max(took) < 1.0, sorted(took)[-5:]
    assert parked_max <= 48 + 1


def test_a_connection_holds_at_most_the_parked_limit_of_parked_fetches():
    # Given a consumer of more partitions than the parked limit
    partitions = limits.KAFKA_FETCH_PARKED_PARTITIONS_MAX + 16
    _, parked_max = _long_poll_latencies(partitions=partitions, records=10, max_wait_ms=200)
    # Then its fetches never have more than the limit parked at once
    assert 0 < parked_max <= limits.KAFKA_FETCH_PARKED_PARTITIONS_MAX
