"""Produce and InitProducerId: Kafka batches into Plinth's log, byte for byte.

Runs on the Kafka listener's event loop thread (gateway.py). Each partition's
records field must be exactly one Kafka RecordBatch v2 (as Kafka requires of
produce v3 and later); it goes to the shard as the payload of a Plinth produce
with ``batchFormat`` 2, unparsed here: the shard checks it
(format/kafka_batch.py) and stores it as sent but for its base offset and
leader epoch. The partitions of one request are produced concurrently.

Produce is advertised from v0 (librdkafka stops compressing when it is not,
KAFKA-18659) but versions below 3, which carry the old message formats, are
refused per partition with UNSUPPORTED_VERSION.

Idempotence: InitProducerId hands out a fresh random 62-bit producer id with
epoch 0, the same space Plinth's own producers draw from, and the shard checks
each batch's producerId and baseSequence as it does Plinth's. An epoch bump
(KIP-360: the client sends its current id and epoch) also gets a fresh id,
because the shard keeps sequences per producer id, and a bumped epoch starts
its sequences at 0 again. Transactions are not supported: InitProducerId with
a transactional id is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
which clients treat as fatal (librdkafka's rd_kafka_idemp_check_error:
init_transactions() fails at once; it retried UNSUPPORTED_VERSION every
500 ms until its timeout). InitProducerId has no error message field: the
code is the whole answer. A transactional produce is refused per partition
with UNSUPPORTED_VERSION (a client cannot get that far).

A produce the router or a shard refuses for its budgets (tooManyRequests) is
answered NOT_ENOUGH_REPLICAS, retriable and not persisted in every client
(``_produce_code``), with Plinth's message naming the budget.

acks=0 gets no response, so a partition that failed is told the only way left:
the connection is closed (``CloseConnection``, with a WARNING naming the
partitions and their errors), as Kafka's KafkaApis.handleProduceRequest does,
so that the client refreshes its metadata and learns of a leader moved or a
topic gone. Answered nothing, it went on sending to a partition that dropped
every batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct

from plinth import limits, protocol
from plinth.counted import counted
from plinth.errors import NotEnoughReplicasError, TooManyRequestsError
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask
from plinth.router.kafka.error_counts import error_name
from plinth.router.kafka.listener import CloseConnection
from plinth.router.kafka.plinth_errors import kafka_code, kafka_message
from plinth.router.kafka.request_values import partition_error

PRODUCE_VERSION_MIN = 3       # v2 message format (RecordBatch) and later
_BATCH_LENGTH = struct.Struct(">i")   # RecordBatch.batchLength at byte 8
_BATCH_LENGTH_POSITION = 8
_BATCH_LENGTH_EXCLUDED_BYTES = 12     # baseOffset and batchLength precede what it counts
_ACKS_KAFKA = (-1, 0, 1)
PRODUCER_ID_BITS = 62

log = logging.getLogger(__name__)


async def init_producer_id(gateway, header, body: dict, connection) -> dict:
    if body.get("transactional_id") is not None:
        log.info("Kafka InitProducerId from %s with transactional id %r refused: Plinth has "
                 "no transactions", header.client_id, body["transactional_id"])
        return {"throttle_time_ms": 0, "error_code": kafka.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "producer_id": -1, "producer_epoch": -1}
    return {"throttle_time_ms": 0, "error_code": kafka.NONE,
            "producer_id": random.getrandbits(PRODUCER_ID_BITS), "producer_epoch": 0}


async def produce(gateway, header, body: dict, connection) -> dict | None:
    """Every partition's batch to its shard; None (no response) for acks 0."""
    acks = body.get("acks", 1)
    work, answers = [], []
    for topic in body.get("topic_data") or []:
        partitions = []
        answers.append({"name": topic["name"], "partition_responses": partitions})
        for data in topic.get("partition_data") or []:
            answer = {"index": data["index"], "base_offset": -1, "log_append_time_ms": -1,
                      "log_start_offset": -1, "record_errors": [], "error_message": None}
            partitions.append(answer)
            refusal = _refusal(header.api_version, acks, body, data["index"], data.get("records"))
            if refusal is not None:
                answer["error_code"], answer["error_message"] = refusal
                continue
            work.append(_produce_one(gateway, topic["name"], data["index"], acks,
                                     data["records"], answer))
    await asyncio.gather(*work)
    if acks == 0:
        _close_if_any_failed(header, answers)
        return None
    return {"responses": answers, "throttle_time_ms": 0}


def _close_if_any_failed(header, answers: list) -> None:
    """Raises CloseConnection naming the partitions of an acks=0 produce that failed
    (at most PRODUCE_ACKS0_FAILURES_NAMED_MAX, and how many more), if any did."""
    failed = [f"{topic['name']}-{answer['index']}: {error_name(answer['error_code'])}"
              + (f" ({answer['error_message']})" if answer["error_message"] else "")
              for topic in answers for answer in topic["partition_responses"]
              if answer["error_code"] != kafka.NONE]
    if not failed:
        return
    named = failed[:limits.PRODUCE_ACKS0_FAILURES_NAMED_MAX]
    more = len(failed) - len(named)
    raise CloseConnection(
        f"a Produce with acks=0 (correlation id {header.correlation_id}, client id "
        f"{header.client_id!r}) failed for {'; '.join(named)}"
        + (f"; and {counted(more, 'more partition')}" if more else "")
        + ": closed so that the client learns of it (it expects no response), as Kafka does",
        close_reason="produce_acks0_failed", body={"responses": answers, "throttle_time_ms": 0})


def _produce_code(error: BaseException | None) -> int:
    """The Kafka code of a produce's Plinth error. tooManyRequests (the router's or
    a shard's budgets: nothing was appended) is NOT_ENOUGH_REPLICAS, which every
    client retries as not persisted, where the code other APIs get for it,
    THROTTLING_QUOTA_EXCEEDED, fails a librdkafka produce for good (its
    rd_kafka_err_action treats unlisted codes as permanent). notEnoughReplicas
    answering a batch that was appended (it waited, and the in-sync set shrank) is
    NOT_ENOUGH_REPLICAS_AFTER_APPEND, as Kafka's: possibly persisted, where
    NOT_ENOUGH_REPLICAS tells the client that nothing was."""
    if isinstance(error, TooManyRequestsError):
        return kafka.NOT_ENOUGH_REPLICAS
    if isinstance(error, NotEnoughReplicasError) and not error.before_write:
        return kafka.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    return kafka_code(error)


def _refusal(api_version: int, acks: int, body: dict, partition: int,
             records) -> tuple[int, str] | None:
    """(Kafka error code, message) if this partition's part cannot be produced."""
    if partition < 0:
        return partition_error(partition), f"partition {partition} is negative"
    if api_version < PRODUCE_VERSION_MIN:
        return kafka.UNSUPPORTED_VERSION, (
            f"produce v{api_version} carries the old message format; Plinth takes "
            f"v{PRODUCE_VERSION_MIN} and later (RecordBatch v2)")
    if body.get("transactional_id") is not None:
        return kafka.UNSUPPORTED_VERSION, "transactions are not supported by Plinth"
    if acks not in _ACKS_KAFKA:
        return kafka.INVALID_REQUIRED_ACKS, f"acks={acks} is none of -1, 0, 1"
    if records is None or len(records) < _BATCH_LENGTH_EXCLUDED_BYTES:
        records_bytes = 0 if records is None else len(records)
        return kafka.CORRUPT_MESSAGE, f"{records_bytes} bytes of records hold no RecordBatch"
    (batch_length,) = _BATCH_LENGTH.unpack_from(records, _BATCH_LENGTH_POSITION)
    if batch_length + _BATCH_LENGTH_EXCLUDED_BYTES != len(records):
        return kafka.INVALID_RECORD, (
            f"a produce must carry exactly one RecordBatch per partition: the first "
            f"declares {batch_length + _BATCH_LENGTH_EXCLUDED_BYTES} bytes of {len(records)}")
    return None


async def _produce_one(gateway, topic: str, partition: int, acks: int, records,
                       answer: dict) -> None:
    backend = gateway.backend
    # acks=0 is asked as acks=1 and awaited, its answer sent to no one: the connection's
    # bounds on requests in flight then hold its next requests back while the shard
    # stores them, as Kafka's broker reads a connection's requests one at a time. Sent
    # without waiting, every connection's acks=0 produces shared the router's one
    # allowance for this listener, and those past it were dropped (session 42).
    reply, _ = await ask(backend, lambda rid: protocol.encode_produce(
        rid, topic, partition, 1 if acks == 0 else acks, BATCH_FORMAT_KAFKA_V2), records)
    answer["error_code"] = _produce_code(reply.error)
    answer["error_message"] = kafka_message(reply.error)
    if reply.error is None:
        answer["base_offset"] = reply.base_offset
