"""End to end: a running producer follows a topic re-created with fewer partitions.

On a real ``plinth serve``, a producer (sync, then asyncio) learns that a topic has 4
partitions, the topic is deleted and re-created with 1, and the same producer goes on
sending keyed and keyless records. A record placed on a partition that is gone may
fail (PartitionOutOfRangeError, reported, not placed again), but only before the
producer has asked the count again (client/partition_counts.py): every record sent
after the first failure is acknowledged, in partition 0, where the topic holds it.
"""

from __future__ import annotations

import asyncio

from plinth import Admin, Producer
from plinth.aio import AIOProducer
from plinth.client.partitioner import partition_for_key
from plinth.errors import PartitionOutOfRangeError
from tests.support import unique_topic

TIMEOUT_S = 60
RECORDS_AFTER = 40


def key_of_partition(partition: int, partition_count: int) -> bytes:
    """A key Kafka's partitioner places on ``partition`` of ``partition_count``."""
    return next(key for key in (b"key-%d" % i for i in range(1000))
                if partition_for_key(key, partition_count) == partition)


def records_after() -> list[tuple[bytes, bytes | None]]:
    """(value, key): first a key the old count places on partition 3, then keyed and
    keyless records in turn."""
    return [(b"gone?", key_of_partition(3, 4))] + [
        (b"after-%d" % i, b"k%d" % i if i % 2 else None) for i in range(RECORDS_AFTER)]


def re_create(admin: Admin, topic: str) -> None:
    admin.delete_topic(topic)
    admin.create_topic(topic, partitions=1)


def check_outcomes(outcomes: list, admin: Admin, topic: str) -> None:
    """At most one record failed, with PartitionOutOfRangeError, and every record sent
    after it was acknowledged in partition 0, which holds them all."""
    failed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)]
    assert all(isinstance(outcomes[i], PartitionOutOfRangeError) for i in failed), outcomes
    assert len(failed) <= 1, [outcomes[i] for i in failed]
    acknowledged = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert {m.partition for m in acknowledged} == {0}
    assert sorted(m.offset for m in acknowledged) == list(range(len(acknowledged)))
    assert admin.list_offsets(topic, 0).end_offset == len(acknowledged)


def test_a_running_producer_sends_every_record_after_a_refusal_to_a_partition_the_re_created_topic_has(
        shared_broker):
    # Given a topic of 4 partitions and a producer that has sent to it
    topic = unique_topic("recreated")
    with Admin(broker=shared_broker.url, request_timeout_ms=TIMEOUT_S * 1000) as admin:
        admin.create_topic(topic, partitions=4)
        with Producer(broker=shared_broker.url) as producer:
            producer.send(topic, b"first").get(TIMEOUT_S)
            # When the topic is deleted and re-created with 1 partition under it
            re_create(admin, topic)
            # And the same producer sends keyed and keyless records, one at a time
            outcomes = []
            for value, key in records_after():
                try:
                    outcomes.append(producer.send(topic, value, key=key).get(TIMEOUT_S))
                except PartitionOutOfRangeError as exc:
                    outcomes.append(exc)
        # Then only a record placed before the producer asked again failed, and every
        # later one is in partition 0
        check_outcomes(outcomes, admin, topic)


def test_a_running_asyncio_producer_sends_every_record_after_a_refusal_to_a_partition_the_re_created_topic_has(
        shared_broker):
    topic = unique_topic("recreated-aio")

    async def scenario(admin: Admin) -> list:
        async with AIOProducer(broker=shared_broker.url) as producer:
            await producer.send_and_wait(topic, b"first")
            re_create(admin, topic)
            outcomes = []
            for value, key in records_after():
                try:
                    outcomes.append(await producer.send_and_wait(topic, value, key=key))
                except PartitionOutOfRangeError as exc:
                    outcomes.append(exc)
            return outcomes

    with Admin(broker=shared_broker.url, request_timeout_ms=TIMEOUT_S * 1000) as admin:
        admin.create_topic(topic, partitions=4)
        outcomes = asyncio.run(asyncio.wait_for(scenario(admin), TIMEOUT_S * 2))
        check_outcomes(outcomes, admin, topic)
