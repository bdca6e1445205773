"""Numbers of a Kafka request that Kafka's broker refuses, refused here with its codes.

Pure functions; any thread (the handlers call them on the Kafka listener's
event loop thread). Kafka's numbers are signed (int32, int16); several of the
Plinth fields they go into are not (a partition, a partition count, a
replication factor, a fetch's max bytes), so a value out of Kafka's range
would also make the Plinth encoder fail. Each handler checks its entries here
first and answers a refused one with Kafka's error for that entry alone;
backend.ask catches whatever an encoder still refuses (INVALID_REQUEST).

Kafka's rules (ReplicationControlManager.createTopics): -1 is the broker's
default partition count or replication factor; 0 and below -1 are refused.
"""

from __future__ import annotations

import uuid

from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.wire import UUID_ZERO

DEFAULT = -1   # CreateTopics' num_partitions and replication_factor: the broker's default


def kafka_topic_id(topic_id: str) -> uuid.UUID:
    """Plinth's topic id (32 hex digits; "" where an answer has none) as Kafka's topic
    id (KIP-516): the same 128 bits; Kafka's ZERO_UUID for none."""
    return uuid.UUID(hex=topic_id) if topic_id else UUID_ZERO


def partition_error(partition: int) -> int:
    """UNKNOWN_TOPIC_OR_PARTITION for a negative partition index (no topic has one), as
    Kafka answers; NONE otherwise (the shard answers for one beyond the topic's)."""
    return kafka.UNKNOWN_TOPIC_OR_PARTITION if partition < 0 else kafka.NONE


def new_topic_error(name: str, partitions: int, factor: int) -> tuple[int, str] | None:
    """(Kafka error code, message) if CreateTopics' counts for ``name`` are refused."""
    if partitions != DEFAULT and partitions <= 0:
        return kafka.INVALID_PARTITIONS, (
            f"topic {name!r}: num_partitions {partitions} is not positive "
            f"({DEFAULT}: the broker's default)")
    if factor != DEFAULT and factor <= 0:
        return kafka.INVALID_REPLICATION_FACTOR, (
            f"topic {name!r}: replication_factor {factor} is not positive "
            f"({DEFAULT}: the broker's default)")
    return None


def partition_count_error(name: str, count: int) -> tuple[int, str] | None:
    """(INVALID_PARTITIONS, message) for a CreatePartitions count below 1 (Plinth's
    alterTopic would read 0 as "unchanged")."""
    if count < 1:
        return kafka.INVALID_PARTITIONS, (
            f"topic {name!r}: a partition count of {count} is not positive")
    return None


def fetch_bytes_error(partition_bytes_max: int) -> int:
    """INVALID_REQUEST for a negative partition_max_bytes (Kafka's log read throws
    IllegalArgumentException for it, answered as that partition's error), else NONE."""
    return kafka.INVALID_REQUEST if partition_bytes_max < 0 else kafka.NONE
