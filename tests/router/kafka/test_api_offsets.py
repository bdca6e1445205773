"""ListOffsets (router/kafka/api_offsets.py): Kafka's special timestamps and seek by time,
answered from Plinth's listOffsets by a backend that plays the router."""

from __future__ import annotations

import asyncio

from plinth import limits, protocol
from plinth.errors import UnavailableError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_offsets import list_offsets
from tests.router.kafka.router_backend import Gateway, RouterBackend


class ShardLikeBackend(RouterBackend):
    """A backend that plays the router: answers each request with ``info(request)`` as
    an offsets reply, or with the error ``error_for(request)`` returns."""

    def answer(self, request_id: int, request: protocol.Request) -> bytes:
        error = self.error_for(request)
        if error is not None:
            return protocol.encode_error(request_id, error)
        return protocol.encode_offsets_reply(request_id, self.info(request))


class PlinthBackend(ShardLikeBackend):
    """Answers listOffsets as a shard whose partition holds offsets 5..50 and finds
    offset 17 (stamped 1_000_017) for any time asked; records what it was asked.
    ``tiered``: offsets 5..30 are in object storage and 20..50 on the shard's disk."""

    def __init__(self, error=None, tiered: bool = False):
        super().__init__()
        self._error = error
        self._tiered = tiered
        self.remote_not_listed = ""

    def error_for(self, request):
        return self._error

    def info(self, request) -> protocol.PartitionInfo:
        found = request.timestamp_ms != protocol.NO_TIME_LOOKUP
        remote = (5, 30) if self._tiered else (protocol.NO_REMOTE_OFFSET,) * 2
        return protocol.PartitionInfo(request.partition, "shard-0", 5, 50,
                                      local_start_offset=20 if self._tiered else 5,
                                      remote_start_offset=remote[0], remote_end_offset=remote[1],
                                      found_offset=17 if found else -1,
                                      found_timestamp_ms=1_000_017 if found else -1,
                                      remote_not_listed=self.remote_not_listed)


def answers(backend, *timestamps: int) -> list[tuple[int, int, int]]:
    body = {"topics": [{"name": "t", "partitions": [
        {"partition_index": i, "timestamp": t} for i, t in enumerate(timestamps)]}]}
    reply = asyncio.run(list_offsets(Gateway(backend), None, body, None))
    return [(p["error_code"], p["offset"], p["timestamp"]) for p in reply["topics"][0]["partitions"]]


def test_earliest_and_latest_are_the_start_and_end_offsets_without_a_time_look_up():
    backend = PlinthBackend()
    assert answers(backend, -2, -1) == [(kafka.NONE, 5, -1), (kafka.NONE, 50, -1)]
    assert [r.timestamp_ms for r in backend.asked] == [-1, -1]


def test_only_the_earliest_offset_needs_the_shards_remote_log_listed():
    # Given a shard that answers every listOffsets
    backend = PlinthBackend(tiered=True)
    # When a Kafka client asks for earliest, latest, earliest local, latest tiered and a time
    answers(backend, -2, -1, -4, -5, 7)
    # Then only the earliest asks that the shard has listed object storage (it answers
    # unavailable, retriable, until then): the others need no exact start
    assert [(r.timestamp_ms, r.require_listed) for r in backend.asked] == [
        (-1, True), (-1, False), (-1, False), (-1, False), (7, False)]


def test_the_latest_tiered_offset_of_a_remote_log_not_listed_yet_is_retriable():
    # Given a shard whose remote log is not listed yet, so its remote end may be behind
    backend = PlinthBackend(tiered=True)
    backend.remote_not_listed = "shard-0 has not listed object storage since it began ..."
    # When a Kafka client asks for the latest tiered offset, and the latest
    # Then the first is NOT_LEADER_OR_FOLLOWER (retried), the second is answered
    assert answers(backend, -5, -1) == [(kafka.NOT_LEADER_OR_FOLLOWER, -1, -1),
                                        (kafka.NONE, 50, -1)]


def test_a_remote_log_not_listed_yet_is_retriable_not_leader_for_a_kafka_client():
    # Given a shard whose remote log is not listed yet
    backend = PlinthBackend(UnavailableError("the remote log of t/0 is not listed yet; retry"))
    # When a Kafka client asks for the earliest offset
    # Then it is NOT_LEADER_OR_FOLLOWER, which every client retries after a metadata refresh
    assert answers(backend, -2) == [(kafka.NOT_LEADER_OR_FOLLOWER, -1, -1)]


def test_a_time_and_max_timestamp_answer_the_record_the_shard_found_with_its_timestamp():
    backend = PlinthBackend()
    assert answers(backend, 1_000_000, -3) == [(kafka.NONE, 17, 1_000_017)] * 2
    assert [r.timestamp_ms for r in backend.asked] == [1_000_000, protocol.MAX_TIMESTAMP]


def test_earliest_local_is_the_first_offset_on_disk_and_latest_tiered_the_last_uploaded():
    backend = PlinthBackend(tiered=True)
    assert answers(backend, -4, -5, -2) == [(kafka.NONE, 20, -1), (kafka.NONE, 29, -1),
                                            (kafka.NONE, 5, -1)]
    assert [r.timestamp_ms for r in backend.asked] == [-1, -1, -1]


def test_without_object_storage_earliest_local_is_the_start_and_latest_tiered_is_minus_one():
    assert answers(PlinthBackend(), -4, -5) == [(kafka.NONE, 5, -1), (kafka.NONE, -1, -1)]


def test_a_timestamp_of_a_version_not_offered_is_unsupported_and_not_asked():
    backend = PlinthBackend()
    assert answers(backend, -6, -7) == [(kafka.UNSUPPORTED_VERSION, -1, -1)] * 2
    assert backend.asked == []


def test_a_v10_timeout_bounds_the_wait_for_the_shard():
    backend = PlinthBackend()
    body = {"timeout_ms": 250, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "timestamp": 1_000_000}]}]}
    asyncio.run(list_offsets(Gateway(backend), None, body, None))
    body["timeout_ms"] = 10**9
    asyncio.run(list_offsets(Gateway(backend), None, body, None))
    assert backend.timeouts_ms == [250, limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS]


def test_a_plinth_error_becomes_its_kafka_code():
    backend = PlinthBackend(UnavailableError("shard-0 is restarting"))
    assert answers(backend, 1_000_000) == [(kafka.NOT_LEADER_OR_FOLLOWER, -1, -1)]


class DeletingBackend(ShardLikeBackend):
    """Answers deleteRecords as a shard would: partition 0's new low watermark is the
    offset asked; partition 1 refuses with ``errors[1]``, partition 2 with ``errors[2]``."""

    def __init__(self, errors: dict):
        super().__init__()
        self._errors = errors

    def error_for(self, request):
        return self._errors.get(request.partition)

    def info(self, request) -> protocol.PartitionInfo:
        return protocol.PartitionInfo(request.partition, "shard-0", request.offset, 50)


def test_delete_records_answers_each_partitions_low_watermark_or_its_kafka_error():
    from plinth.errors import NotAuthorizedError, OffsetOutOfRangeError
    from plinth.router.kafka.api_offsets import delete_records

    backend = DeletingBackend({
        1: OffsetOutOfRangeError("offset 99 past the high watermark 50"),
        2: NotAuthorizedError("User:bob may not administer topic 't' (deleteRecords)")})
    body = {"topics": [{"name": "t", "partitions": [
        {"partition_index": i, "offset": offset} for i, offset in ((0, 7), (1, 99), (2, 3))]}],
        "timeout_ms": 1000}
    reply = asyncio.run(delete_records(Gateway(backend), None, body, None))
    assert reply["topics"][0]["partitions"] == [
        {"partition_index": 0, "low_watermark": 7, "error_code": kafka.NONE},
        {"partition_index": 1, "low_watermark": -1, "error_code": kafka.OFFSET_OUT_OF_RANGE},
        {"partition_index": 2, "low_watermark": -1,
         "error_code": kafka.TOPIC_AUTHORIZATION_FAILED}]
    assert [(r.topic, r.partition, r.offset) for r in backend.asked] == [
        ("t", 0, 7), ("t", 1, 99), ("t", 2, 3)]
