"""Deleting a partition's older records (Kafka's DeleteRecords) against a real
``plinth serve --kafka-listen``: Plinth's ``Admin.delete_records`` and ``plinth topic
delete-records``, kafka-python's ``KafkaAdminClient.delete_records`` and
confluent-kafka's ``AdminClient.delete_records``; then a consumer from the earliest
offset starts exactly at the new log start offset, even inside a batch.

One broker (Ray, two shards, the router and its Kafka listener) for the module;
each test has its own topic.
"""

from __future__ import annotations

import pytest

from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from plinth import topics
from plinth.errors import (InvalidTopicError, OffsetOutOfRangeError, PartitionOutOfRangeError,
                           UnknownTopicError)
from tests.e2e.test_cli_e2e import plinth
from tests.support import unique_topic

TIMEOUT_S = 60
RECORDS = 10


def topic_with_records(broker, partitions: int = 1) -> str:
    """A topic whose partition 0 holds RECORDS records in two batches (0-4 and 5-9)."""
    topic = unique_topic("delrec")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=partitions)
    with Producer(broker=broker.url, linger_ms=50) as producer:
        for first in (0, 5):
            for n in range(first, first + 5):
                producer.send(topic, f"v{n}".encode(), partition=0)
            producer.flush(TIMEOUT_S)
    return topic


def plinth_values_from_earliest(broker, topic: str, count: int) -> list[tuple[int, bytes]]:
    """(offset, value) of the first ``count`` records a Plinth consumer from the earliest
    offset of partition 0 reads."""
    got = []
    with Consumer(broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=TIMEOUT_S * 1000) as consumer:
        consumer.assign([(topic, 0)])
        for record in consumer:
            got.append((record.offset, record.value))
            if len(got) == count:
                break
    return got


def test_admin_delete_records_moves_the_earliest_offset_inside_a_batch(kafka_broker):
    # Given 10 records in two batches
    topic = topic_with_records(kafka_broker)
    with Admin(broker=kafka_broker.url) as admin:
        # When the records before offset 3 (inside the first batch) are deleted
        low_watermarks = admin.delete_records({(topic, 0): 3})
        # Then the answer is the new low watermark, and the earliest offset is it
        assert low_watermarks == {(topic, 0): 3}
        assert admin.list_offsets(topic, 0).start_offset == 3
    # And a consumer from the earliest offset reads from offset 3 on, nothing before
    assert plinth_values_from_earliest(kafka_broker, topic, RECORDS - 3) == [
        (n, f"v{n}".encode()) for n in range(3, RECORDS)]


def test_admin_delete_records_refuses_wrong_calls_with_typed_errors(kafka_broker):
    topic = topic_with_records(kafka_broker)
    with Admin(broker=kafka_broker.url) as admin:
        with pytest.raises(OffsetOutOfRangeError, match="high watermark 10"):
            admin.delete_records({(topic, 0): RECORDS + 1})
        with pytest.raises(ValueError, match="offset -2"):
            admin.delete_records({(topic, 0): -2})
        with pytest.raises(PartitionOutOfRangeError):
            admin.delete_records({(topic, 5): 1})
        with pytest.raises(UnknownTopicError):
            admin.delete_records({(unique_topic("nope"), 0): 1})
        with pytest.raises(InvalidTopicError, match="internal.*may not delete from it"):
            admin.delete_records({(topics.OFFSETS_TOPIC, 0): 1})
        # and none of them moved anything
        assert admin.list_offsets(topic, 0).start_offset == 0
        # while -1 deletes up to the high watermark
        assert admin.delete_records({(topic, 0): -1}) == {(topic, 0): RECORDS}


def test_the_cli_deletes_records_and_says_the_new_log_start(kafka_broker):
    topic = topic_with_records(kafka_broker)
    done = plinth(kafka_broker.url, "topic", "delete-records", topic, "--partition", "0",
                  "--before-offset", "7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{topic}-0: log start offset (low watermark) now 7"
    refused = plinth(kafka_broker.url, "topic", "delete-records", topic, "--partition", "0",
                     "--before-offset", "99")
    assert refused.returncode == 1 and "high watermark 10" in refused.stderr
    with Admin(broker=kafka_broker.url) as admin:
        assert admin.list_offsets(topic, 0).start_offset == 7


def test_kafka_pythons_delete_records_then_a_kafka_consumer_starts_at_the_floor(kafka_broker):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import OffsetOutOfRangeError as KafkaOffsetOutOfRange
    from kafka.errors import UnknownTopicOrPartitionError

    topic = topic_with_records(kafka_broker)
    tp = TopicPartition(topic, 0)
    client = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address,
                              request_timeout_ms=TIMEOUT_S * 1000)
    try:
        # When kafka-python deletes the records before offset 4
        result = client.delete_records({tp: 4})
        # Then it gets the low watermark, without error
        assert result[tp]["low_watermark"] == 4 and result[tp]["error_code"] == 0
        # And its wrong calls get Kafka's errors
        with pytest.raises(KafkaOffsetOutOfRange):
            client.delete_records({tp: RECORDS + 5})
        with pytest.raises(UnknownTopicOrPartitionError):
            client.delete_records({TopicPartition(unique_topic("nope"), 0): 1})
    finally:
        client.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=TIMEOUT_S * 1000)
    try:
        consumer.assign([tp])
        assert consumer.beginning_offsets([tp]) == {tp: 4}
        got = []
        for record in consumer:
            got.append(record.offset)
            if len(got) == RECORDS - 4:
                break
        assert got == list(range(4, RECORDS))
    finally:
        consumer.close()


def test_confluent_kafkas_delete_records_then_a_consumer_starts_at_the_floor(kafka_broker):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = topic_with_records(kafka_broker)
    admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})
    # When librdkafka deletes the records before offset 6 (the second batch's 2nd record)
    futures = admin.delete_records([TopicPartition(topic, 0, 6)],
                                   request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S)
    deleted = futures[TopicPartition(topic, 0)].result(timeout=TIMEOUT_S)
    # Then its answer names the new low watermark
    assert deleted.low_watermark == 6
    consumer = KafkaConsumer({"bootstrap.servers": kafka_broker.kafka_address,
                              "group.id": unique_topic("g"), "auto.offset.reset": "earliest",
                              "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S)
        assert (low, high) == (6, RECORDS)
        consumer.assign([TopicPartition(topic, 0)])
        got = []
        while len(got) < RECORDS - 6:
            message = consumer.poll(TIMEOUT_S)
            assert message is not None, f"no record after offsets {got}"
            assert message.error() is None, message.error()
            got.append(message.offset())
        assert got == list(range(6, RECORDS))
    finally:
        consumer.close()


def floors_on_disk(data_dir, topic: str) -> list[int]:
    """The log start floor each replica of ``topic``-0 saved, from its directory."""
    from plinth.shards.log_start_floor import load_floor

    return sorted(load_floor(path).floor for path in data_dir.rglob(f"{topic}-0")
                  if path.is_dir())


def floors_by_shard(data_dir, topic: str) -> dict[str, int]:
    """shard id -> the log start floor its replica of ``topic``-0 saved."""
    from plinth.shards.log_start_floor import load_floor

    return {path.parent.name: load_floor(path).floor
            for path in (data_dir / "shards").glob(f"*/{topic}-0")}


def replicated_topic(broker_factory, prefix: str):
    """(broker, admin, topic, shard pids): a factor-3 topic of RECORDS records on three
    shards of one node (replicas allowed to share it), produced with acks="all". The
    caller closes the admin."""
    from tests.shard_processes import shard_pids
    from tests.support import wait_until

    broker = broker_factory(shards=3, extra_args=("--allow-replicas-on-one-node",))
    topic = unique_topic(prefix)
    admin = Admin(broker=broker.url)
    admin.create_topic(topic, 1, replication_factor=3)
    with Producer(broker=broker.url, acks="all") as producer:
        for n in range(RECORDS):
            producer.send(topic, f"v{n}".encode(), partition=0)
        producer.flush(TIMEOUT_S)
    pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 3 and found,
                      timeout_s=60)
    return broker, admin, topic, pids


def test_delete_records_is_answered_only_once_every_in_sync_replica_holds_the_floor(
        broker_factory):
    import os
    import signal

    from tests.support import wait_until

    # Given a factor-3 topic on three shards, one follower's process stopped (SIGSTOP)
    broker, admin, topic, pids = replicated_topic(broker_factory, "delisr")
    with admin:
        leader = admin.describe_topic(topic).partition_info[0].shard
        stopped = sorted(shard for shard in pids if shard != leader)[0]
        os.kill(pids[stopped], signal.SIGSTOP)
        try:
            # When the records before 4 are deleted
            assert admin.delete_records({(topic, 0): 4}) == {(topic, 0): 4}
            # Then by its answer every replica still in the in-sync set holds the floor:
            # the stopped one was waited for until it left the set
            floors = floors_by_shard(broker.data_dir, topic)
            in_sync = admin.describe_topic(topic).partition_info[0].in_sync_replicas
            assert stopped not in in_sync and floors[stopped] == 0
            assert {shard: floors[shard] for shard in in_sync} == {shard: 4 for shard in in_sync}
        finally:
            os.kill(pids[stopped], signal.SIGCONT)
        # And once it runs again it catches up, floor included
        wait_until(lambda: floors_by_shard(broker.data_dir, topic)[stopped] == 4, timeout_s=60)


def test_after_delete_records_and_a_leader_kill_the_new_leader_does_not_start_lower(
        broker_factory):
    from tests.shard_processes import kill_after_failover
    from tests.support import wait_until

    # Given a factor-3 topic on three shards (one node, replicas allowed to share it)
    broker, admin, topic, pids = replicated_topic(broker_factory, "delrep")
    with admin:
        before = admin.describe_topic(topic).partition_info[0]
        # When the records before 4 are deleted
        assert admin.delete_records({(topic, 0): 4}) == {(topic, 0): 4}
        # Then, by the time it is answered, every replica has saved the floor (the
        # answer waits for the in-sync followers)
        assert floors_on_disk(broker.data_dir, topic) == [4, 4, 4]
        # And when the leader's shard process is stopped right after the answer, and
        # killed once another replica leads
        kill_after_failover(
            pids[before.shard],
            lambda: admin.describe_topic(topic).partition_info[0].shard not in ("", before.shard),
            timeout_s=60)
        after = wait_until(lambda: (info := admin.describe_topic(topic).partition_info[0])
                           .leader_epoch > before.leader_epoch and info.shard and info,
                           timeout_s=60)
        assert after.shard != before.shard
        # Then the new leader's log start offset is not lower, and a consumer from the
        # earliest offset starts there
        assert admin.list_offsets(topic, 0).start_offset == 4
    assert plinth_values_from_earliest(broker, topic, RECORDS - 4) == [
        (n, f"v{n}".encode()) for n in range(4, RECORDS)]


def test_the_asyncio_admin_deletes_records_of_several_partitions_at_once(kafka_broker):
    import asyncio

    from plinth.client.aio.admin import AIOAdmin

    topic = topic_with_records(kafka_broker, partitions=2)

    async def delete() -> dict:
        async with AIOAdmin(broker=kafka_broker.url) as admin:
            return await admin.delete_records({(topic, 0): 2, (topic, 1): -1})

    # (partition 1 is empty: -1 deletes up to its high watermark, 0)
    assert asyncio.run(delete()) == {(topic, 0): 2, (topic, 1): 0}
