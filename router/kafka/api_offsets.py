"""ListOffsets: a partition's earliest and latest offsets, and seek by time, from
Plinth's listOffsets; DeleteRecords: a partition's log start offset moved up, from
Plinth's deleteRecords.

Runs on the Kafka listener's event loop thread (gateway.py). Kafka's special
timestamps: -2 (earliest) is the log start offset, -1 (latest) the high
watermark (also the last stable offset: Plinth has no transactions), -4
(EARLIEST_LOCAL, v8, KIP-405) the first offset still on the shards' disks, and
-5 (LATEST_TIERED, v9, KIP-1005) the last offset in object storage, -1 when
the partition has none there (not tiered, or nothing uploaded yet), as Kafka
answers; all are answered with timestamp -1, as Kafka does. A timestamp >= 0
asks for the first record, in offset order, stamped at or after it, and -3
(MAX_TIMESTAMP, v7) for the record with the largest timestamp: the shard
answers both exactly, with the record's offset and timestamp, or -1/-1 when no
record qualifies (shards/time_lookup.py), in object storage too (the shard
reads the remote segment's time index and one chunk of its log:
shards/tier/remote_time_lookup.py; a store that cannot be reached is a
retriable error, never a guess). Other negative timestamps (-6, EARLIEST_PENDING_UPLOAD:
v11, which the listener does not offer) are UNSUPPORTED_VERSION.

v10's ``timeout_ms`` (how long a look-up in object storage may take) bounds the
wait for the shard's answer, at most KAFKA_BACKEND_REQUEST_TIMEOUT_MS; 0 or
absent: that limit.

DeleteRecords is one deleteRecords per partition, all at once; each answers its
new low watermark (the log start offset, now that offset even inside a batch),
saved on the leader before the answer, or its error as Kafka's:
OFFSET_OUT_OF_RANGE (past the high watermark, or negative but -1),
UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, TOPIC_AUTHORIZATION_FAILED
(it needs admin on the topic, as Kafka needs DELETE), REQUEST_TIMED_OUT when
the in-sync followers of a replicated partition did not all hold the new start
within DELETE_RECORDS_WAIT_MS_MAX (shards/deletion_waits.py; the leader's is
kept). The request's ``timeout_ms`` is not read: that bound is the broker's.
"""

from __future__ import annotations

import asyncio

from plinth import limits, protocol
from plinth.errors import UnavailableError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask
from plinth.router.kafka.plinth_errors import kafka_code
from plinth.router.kafka.request_values import partition_error

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = protocol.MAX_TIMESTAMP   # -3, as Kafka's
EARLIEST_LOCAL_TIMESTAMP = -4
LATEST_TIERED_TIMESTAMP = -5
_WITHOUT_TIME_LOOKUP = (LATEST_TIMESTAMP, EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP,
                        LATEST_TIERED_TIMESTAMP)
UNKNOWN_LEADER_EPOCH = -1


async def list_offsets(gateway, header, body: dict, connection) -> dict:
    timeout_ms = limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS
    if body.get("timeout_ms", 0) > 0:
        timeout_ms = min(body["timeout_ms"], timeout_ms)
    work, topics = [], []
    for topic in body.get("topics") or []:
        answers = []
        topics.append({"name": topic["name"], "partitions": answers})
        for wanted in topic.get("partitions") or []:
            answer = {"partition_index": wanted["partition_index"], "error_code": kafka.NONE,
                      "timestamp": -1, "offset": -1, "leader_epoch": UNKNOWN_LEADER_EPOCH}
            answers.append(answer)
            answer["error_code"] = partition_error(wanted["partition_index"])
            if wanted["timestamp"] < LATEST_TIERED_TIMESTAMP:
                answer["error_code"] = kafka.UNSUPPORTED_VERSION
            if answer["error_code"] != kafka.NONE:
                continue
            work.append(_list_one(gateway, topic["name"], wanted["partition_index"],
                                  wanted["timestamp"], answer, timeout_ms))
    await asyncio.gather(*work)
    return {"throttle_time_ms": 0, "topics": topics}


async def _list_one(gateway, topic: str, partition: int, timestamp: int,
                    answer: dict, timeout_ms: int) -> None:
    by_time = timestamp not in _WITHOUT_TIME_LOOKUP
    # While the shard has not listed object storage (a new leader, the store down), the
    # earliest and latest tiered offsets it knows may not be the store's: retriable
    # NOT_LEADER_OR_FOLLOWER, as a look-up by time is. An earliest offset answered
    # from an incomplete view skipped the records below it in a consumer's reset.
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_list_offsets(
        rid, topic, partition, timestamp if by_time else protocol.NO_TIME_LOOKUP,
        require_listed=timestamp == EARLIEST_TIMESTAMP), timeout_ms=timeout_ms)
    if reply.error is not None:
        answer["error_code"] = kafka_code(reply.error)
        return
    info = reply.offsets
    if timestamp == LATEST_TIERED_TIMESTAMP and info.remote_not_listed:
        answer["error_code"] = kafka_code(UnavailableError(info.remote_not_listed))
        return
    if by_time:
        answer["offset"], answer["timestamp"] = info.found_offset, info.found_timestamp_ms
    else:
        answer["offset"] = _special_offset(info, timestamp)


def _special_offset(info: protocol.PartitionInfo, timestamp: int) -> int:
    """The offset a special (negative) timestamp names, from the partition's offsets."""
    if timestamp == EARLIEST_TIMESTAMP:
        return info.start_offset
    if timestamp == EARLIEST_LOCAL_TIMESTAMP:
        return info.local_start_offset
    if timestamp == LATEST_TIERED_TIMESTAMP:
        return info.remote_end_offset - 1 if info.remote_end_offset > 0 else -1
    return info.end_offset


async def delete_records(gateway, header, body: dict, connection) -> dict:
    work, topics = [], []
    for topic in body.get("topics") or []:
        answers = []
        topics.append({"name": topic["name"], "partitions": answers})
        for wanted in topic.get("partitions") or []:
            answer = {"partition_index": wanted["partition_index"], "low_watermark": -1,
                      "error_code": kafka.NONE}
            answers.append(answer)
            work.append(_delete_one(gateway, topic["name"], wanted["partition_index"],
                                    wanted["offset"], answer))
    await asyncio.gather(*work)
    return {"throttle_time_ms": 0, "topics": topics}


async def _delete_one(gateway, topic: str, partition: int, offset: int, answer: dict) -> None:
    answer["error_code"] = partition_error(partition)
    if answer["error_code"] != kafka.NONE:
        return
    # A negative offset but -1 goes as it is: the shard refuses it as Kafka's broker
    # does (OFFSET_OUT_OF_RANGE).
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_delete_records(
        rid, topic, partition, offset))
    if reply.error is not None:
        answer["error_code"] = kafka_code(reply.error)
        return
    answer["low_watermark"] = reply.offsets.start_offset

