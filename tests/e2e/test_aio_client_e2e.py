"""The asyncio client against a real broker: AIOProducer, AIOConsumer and AIOAdmin.

Each test runs its coroutine with ``asyncio.run`` on the test's thread (no
pytest-asyncio); waits are bounded by ``asyncio.wait_for`` or the client's own
timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from plinth import Admin
from plinth.aio import (AIOAdmin, AIOConsumer, AIOProducer, ConsumerRebalanceListener,
                        TopicPartition)
from plinth.errors import ClosedError, UnknownGroupError, UnknownTopicError, WrongEventLoopError
from tests.shard_processes import shard_pids
from tests.support import (check_exactly_once_in_order, read_all, unique_topic,
                           values_to_high_watermark, wait_until)

WAIT_S = 60


def run(coroutine):
    """The test's coroutine on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coroutine, 240))


async def consume(url: str, topic: str, count: int, **options) -> list:
    """``count`` records of ``topic`` from the start, through an AIOConsumer."""
    got = []
    async with AIOConsumer(topic, broker=url, auto_offset_reset="earliest", **options) as consumer:
        while len(got) < count:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1_000), WAIT_S)
            for records in batches.values():
                got.extend(records)
    return got


async def read_values(consumer, count: int) -> list[int]:
    """The int values of the next ``count`` records the consumer hands out."""
    got = []
    while len(got) < count:
        for records in (await asyncio.wait_for(consumer.getmany(timeout_ms=500),
                                               WAIT_S)).values():
            got.extend(int(r.value) for r in records)
    return got



@pytest.fixture
def sync_admin(shared_broker):
    """A sync Admin of the shared broker, closed after the test (one left open kept a
    socket whose monitor's name a later client could not bind)."""
    with Admin(broker=shared_broker.url) as admin:
        yield admin

def test_records_sent_by_the_aio_producer_come_back_through_the_aio_consumer_with_keys_headers_and_timestamps(
        shared_broker):
    topic = unique_topic("aio")

    async def scenario():
        async with AIOAdmin(broker=shared_broker.url) as admin:
            await admin.create_topic(topic, 3)
        async with AIOProducer(broker=shared_broker.url, linger_ms=2) as producer:
            futures = [await producer.send(topic, b"v%d" % i, key=b"k%d" % i,
                                           headers=[("n", b"%d" % i)], timestamp_ms=1_000 + i)
                       for i in range(300)]
            metadata = await asyncio.gather(*futures)
            last = await producer.send_and_wait(topic, b"last", key=b"k0")
        records = await consume(shared_broker.url, topic, 301)
        return metadata, last, records

    metadata, last, records = run(scenario())
    assert len({(m.partition, m.offset) for m in metadata}) == 300
    by_value = {r.value: r for r in records}
    assert len(records) == 301 and set(by_value) == {b"v%d" % i for i in range(300)} | {b"last"}
    for i in range(300):
        record = by_value[b"v%d" % i]
        assert (record.key, record.timestamp_ms, record.headers) == (
            b"k%d" % i, 1_000 + i, [("n", b"%d" % i)])
        assert (record.partition, record.offset) == (metadata[i].partition, metadata[i].offset)
    # The same key goes to the same partition as the sync producer's murmur2 would
    assert last.partition == metadata[0].partition
    assert by_value[b"last"].offset == last.offset


@pytest.mark.parametrize("compression_type", ["gzip", "snappy", "lz4", "zstd"])
def test_each_compression_type_of_the_aio_producer_reads_back_through_the_sync_consumer(
        shared_broker, sync_admin, compression_type):
    topic = unique_topic("aio-codec")
    sync_admin.create_topic(topic, 1)

    async def scenario():
        async with AIOProducer(broker=shared_broker.url,
                               compression_type=compression_type) as producer:
            for i in range(50):
                await producer.send(topic, b"%d" % i * 20, key=b"%d" % i)

    run(scenario())
    records = read_all(shared_broker.url, topic)
    assert [(r.key, r.value) for r in records] == [(b"%d" % i, b"%d" % i * 20) for i in range(50)]


def test_records_in_flight_when_stop_is_called_are_all_delivered(shared_broker, sync_admin):
    topic = unique_topic("aio-stop")
    sync_admin.create_topic(topic, 2)
    count = 20_000

    async def scenario():
        producer = AIOProducer(broker=shared_broker.url, linger_ms=50)
        await producer.start()
        futures = [await producer.send(topic, b"%d" % i) for i in range(count)]
        pending = sum(not f.done() for f in futures)
        await producer.stop()
        return pending, [f.result() for f in futures]

    pending, metadata = run(scenario())
    assert pending > 0   # stop() really had records in flight
    assert len(metadata) == count
    records = read_all(shared_broker.url, topic)
    assert sorted(int(r.value) for r in records) == list(range(count))


def test_aio_clients_used_on_a_second_asyncio_run_raise_at_once_and_every_acknowledged_record_stays(
        shared_broker, sync_admin):
    # Given a producer that had 20 records acknowledged and a group member that read,
    # both under a first asyncio.run
    topic = unique_topic("aio-loops")
    sync_admin.create_topic(topic, 2)
    producer = AIOProducer(broker=shared_broker.url, linger_ms=0)
    consumer = AIOConsumer(topic, broker=shared_broker.url, group=unique_topic("aio-loops-g"),
                           auto_offset_reset="earliest")

    async def first():
        await producer.start()
        acknowledged = [await producer.send_and_wait(topic, b"%d" % i) for i in range(20)]
        await consumer.start()
        while not await consumer.getmany(timeout_ms=1_000):
            pass
        return acknowledged

    acknowledged = run(first())

    # When a second asyncio.run sends, polls and stops with them
    async def second():
        with pytest.raises(WrongEventLoopError,
                           match=r"AIOProducer\.send_and_wait\(\) .* which is closed"):
            await asyncio.wait_for(producer.send_and_wait(topic, b"late"), 10)
        with pytest.raises(WrongEventLoopError, match=r"AIOConsumer\.getmany\(\) .* which is "
                                                      r"closed"):
            await asyncio.wait_for(consumer.getmany(timeout_ms=1_000), 10)
        with pytest.raises(WrongEventLoopError, match="Its sockets are closed; no record was "
                                                      "waiting for an acknowledgement"):
            await asyncio.wait_for(producer.stop(), 10)
        with pytest.raises(WrongEventLoopError, match="did not leave group"):
            await asyncio.wait_for(consumer.stop(), 10)

    run(second())
    # Then each raised at once (within the 10 s bounds), and every acknowledged record,
    # only those, is stored
    assert len({(m.partition, m.offset) for m in acknowledged}) == 20
    records = read_all(shared_broker.url, topic)
    assert sorted(int(r.value) for r in records) == list(range(20))


def test_an_idempotent_aio_producer_keeps_every_record_once_in_order_across_a_shard_kill_9(
        broker_factory):
    broker = broker_factory(shards=2)
    topic = unique_topic("aio-kill")
    partitions = 4
    Admin(broker=broker.url).create_topic(topic, partitions)
    acked: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []

    async def writer(producer, stop: asyncio.Event):
        n = 0
        while not stop.is_set():
            chunk = [(n + i, await producer.send(topic, b"%d" % (n + i), partition=(n + i) % partitions))
                     for i in range(200)]
            n += 200
            for number, future in chunk:
                future.add_done_callback(lambda f, number=number: record(number, f))
            await asyncio.sleep(0)   # let the sender task run between chunks

    def record(number, future):
        if future.exception() is not None:
            errors.append(future.exception())
        else:
            acked[number] = (future.result().partition, future.result().offset)

    async def until(count: int):
        while len(acked) < count:
            await asyncio.sleep(0.01)   # a poll of a condition, bounded by wait_for below

    async def scenario():
        async with AIOProducer(broker=broker.url, linger_ms=0) as producer:
            stop = asyncio.Event()
            task = asyncio.get_running_loop().create_task(writer(producer, stop))
            await asyncio.wait_for(until(2_000), WAIT_S)
            pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 2 and found,
                              timeout_s=60)
            shard_id = sorted(pids)[0]
            os.kill(pids[shard_id], signal.SIGKILL)
            await asyncio.wait_for(until(len(acked) + 4_000), 120)
            stop.set()
            await task
            await producer.flush(120)
            return producer.pipelined_sends

    pipelined = run(scenario())
    records = read_all(broker.url, topic)
    check_exactly_once_in_order(records, acked, partitions)
    assert not errors, errors[:3]
    assert pipelined > 0


def test_two_aio_consumers_in_a_group_share_the_partitions_and_their_callbacks_run(
        shared_broker, sync_admin):
    topic = unique_topic("aio-group")
    group = unique_topic("g")
    partitions = 4
    sync_admin.create_topic(topic, partitions)
    events: list[tuple[str, str, frozenset]] = []

    class Listener(ConsumerRebalanceListener):
        def __init__(self, name):
            self.name = name

        async def on_partitions_assigned(self, assigned):
            events.append((self.name, "assigned", frozenset(assigned)))

        def on_partitions_revoked(self, revoked):
            events.append((self.name, "revoked", frozenset(revoked)))

    def owned(name):
        out = set()
        for who, what, tps in events:
            if who == name:
                out = out | tps if what == "assigned" else out - tps
        return out

    values: set[int] = set()

    async def member(name, stop: asyncio.Event):
        consumer = AIOConsumer(broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", session_timeout_ms=6_000)
        consumer.subscribe([topic], listener=Listener(name))
        await consumer.start()
        got = []
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                got.extend(records)
                values.update(int(r.value) for r in records)
        await consumer.commit()
        await consumer.stop()
        return got

    async def scenario():
        async with AIOProducer(broker=shared_broker.url) as producer:
            for i in range(400):
                await producer.send(topic, b"%d" % i, partition=i % partitions)
            await producer.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        first = loop.create_task(member("a", stop))

        async def until(predicate):
            while not predicate():
                await asyncio.sleep(0.05)   # a poll of a condition, bounded by wait_for

        await asyncio.wait_for(until(lambda: len(owned("a")) == partitions), WAIT_S)
        second = loop.create_task(member("b", stop))
        await asyncio.wait_for(until(lambda: owned("a") and owned("b")
                                     and len(owned("a") | owned("b")) == partitions
                                     and not owned("a") & owned("b")), WAIT_S)
        await asyncio.wait_for(until(lambda: len(values) == 400), WAIT_S)
        stop.set()
        return await first, await second

    got_a, got_b = run(scenario())
    assert any(who == "a" and what == "revoked" for who, what, _ in events)
    assert {int(r.value) for r in got_a + got_b} == set(range(400))
    # The commits read back by the sync Admin: every partition at its end
    with Admin(broker=shared_broker.url) as admin:
        lag = admin.group_lag(group)
    assert [(row[0], row[1], row[2]) for row in lag] == [
        (topic, p, 100) for p in range(partitions)]


def test_a_commit_of_the_aio_consumer_is_read_back_by_the_sync_admin_and_the_aio_admin(
        shared_broker, sync_admin):
    topic = unique_topic("aio-commit")
    group = unique_topic("g")
    sync_admin.create_topic(topic, 1)

    async def scenario():
        async with AIOProducer(broker=shared_broker.url) as producer:
            for i in range(10):
                await producer.send(topic, b"%d" % i)
        async with AIOConsumer(topic, broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
            got = []
            async for record in consumer:
                got.append(record)
                if len(got) == 7:
                    break
            await consumer.commit()
            committed = await consumer.committed(topic, 0)
            position = await consumer.position(topic, 0)
        async with AIOAdmin(broker=shared_broker.url) as admin:
            lag = await admin.group_lag(group)
        return committed, position, lag

    committed, position, aio_lag = run(scenario())
    assert committed == position == 7
    assert aio_lag == [(topic, 0, 7, 10, 3)]
    assert sync_admin.describe_group(group).committed == {(topic, 0): 7}


def test_the_aio_consumer_and_admin_commit_and_reset_more_offsets_than_one_header_holds(
        shared_broker, sync_admin):
    # Given a record in each of 1,500 partitions (more than one commit's header holds)
    partitions = 1500
    topic, group = unique_topic("aio-wide"), unique_topic("g")
    sync_admin.create_topic(topic, partitions)

    async def scenario():
        async with AIOProducer(broker=shared_broker.url) as producer:
            for partition in range(partitions):
                await producer.send(topic, b"x", partition=partition)
        # When an AIOConsumer of the group reads them all and commits
        async with AIOConsumer(topic, broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
            read = set()
            async for record in consumer:
                read.add(record.partition)
                if len(read) == partitions:
                    break
            await consumer.commit()
        committed = sync_admin.describe_group(group).committed
        # And the AIOAdmin resets them all
        async with AIOAdmin(broker=shared_broker.url) as admin:
            await admin.reset_group_offsets(group, {(topic, p): 0 for p in range(partitions)})
        return read, committed

    try:
        read, committed = run(scenario())
        # Then every partition was read, committed and reset
        assert read == set(range(partitions))
        assert committed == {(topic, p): 1 for p in range(partitions)}
        assert sync_admin.describe_group(group).committed == {
            (topic, p): 0 for p in range(partitions)}
    finally:
        sync_admin.delete_topic(topic)


def test_wrong_calls_raise_the_sync_clients_errors(shared_broker, sync_admin):
    topic = unique_topic("aio-wrong")
    sync_admin.create_topic(topic, 1)

    async def scenario():
        producer = AIOProducer(broker=shared_broker.url)
        with pytest.raises(ClosedError, match="not started"):
            await producer.send(topic, b"x")
        await producer.start()
        try:
            with pytest.raises(TypeError, match="value must be bytes"):
                await producer.send(topic, "text")
            with pytest.raises(TypeError, match="topic must be a str"):
                await producer.send(7, b"x")
            with pytest.raises(UnknownTopicError):
                await producer.send(unique_topic("missing"), b"x")
            assert (await producer.send_and_wait(topic, b"fine")).offset == 0
        finally:
            await producer.stop()
        with pytest.raises(ClosedError, match="closed"):
            await producer.send(topic, b"after stop")
        with pytest.raises(ValueError, match="acks="):
            AIOProducer(broker=shared_broker.url, acks=2)
        consumer = AIOConsumer(unique_topic("missing"), broker=shared_broker.url)
        with pytest.raises(UnknownTopicError):
            await consumer.start()
        with pytest.raises(ClosedError, match="not started"):
            await AIOConsumer(topic, broker=shared_broker.url).getmany()

    run(scenario())
    # The sync clients agree the refused calls left no record behind: one record, read up
    # to the high watermark (not until 2 s pass without one, which a loaded machine missed)
    with Admin(broker=shared_broker.url) as admin:
        assert admin.describe_topic(topic).partition_info[0].high_watermark == 1
    assert values_to_high_watermark(shared_broker.url, topic) == {b"fine"}


def test_the_aio_admin_answers_as_the_sync_admin_does(shared_broker):
    topic = unique_topic("aio-admin")
    group = unique_topic("g")

    async def scenario():
        async with AIOAdmin(broker=shared_broker.url) as admin:
            created = await admin.create_topic(topic, 2, config={"retention.ms": 60_000})
            altered = await admin.alter_topic(topic, {"retention.ms": 120_000})
            grown = await admin.create_partitions(topic, 3)
            async with AIOProducer(broker=shared_broker.url) as producer:
                await producer.send_and_wait(topic, b"x", partition=1)
            described = await admin.describe_topic(topic)
            offsets = await admin.list_offsets(topic, 1)
            await admin.reset_group_offsets(group, {(topic, 0): 0, (topic, 1): 1})
            groups, lag = await admin.list_groups(), await admin.group_lag(group)
            listed, status = await admin.list_topics(), await admin.status()
            pages = (await admin.list_topics_page(prefix=topic, limit=1),
                     await admin.list_groups_page(prefix=group, limit=1))
            stats = await admin.topic_stats([topic])
            await admin.delete_topic(topic)
            return (created, altered, grown, described, offsets, groups, lag, listed, status,
                    await admin.list_topics(), pages, stats)

    (created, altered, grown, described, offsets, groups, lag, listed, status,
     after, pages, stats) = run(scenario())
    assert [(page.names, page.more) for page in pages] == [([topic], False), ([group], False)]
    assert stats[topic].partitions == 3 and stats[topic].size_bytes > 0
    with Admin(broker=shared_broker.url) as sync_admin:
        assert len(status.shards) == len(sync_admin.status().shards) == 2
    assert created.partitions == 2 and altered.config["retention.ms"] == "120000"
    assert grown.partitions == 3
    assert [(p.start_offset, p.end_offset) for p in described.partition_info] == [
        (0, 0), (0, 1), (0, 0)]
    assert (offsets.start_offset, offsets.end_offset) == (0, 1)
    assert group in groups
    assert lag == [(topic, 0, 0, 0, 0), (topic, 1, 1, 1, 0), (topic, 2, None, 0, None)]
    assert topic in listed and topic not in after


def test_the_asyncio_admin_elects_leaders_as_the_sync_one_does(shared_broker, sync_admin):
    # Given a factor-1 topic of 2 partitions (one copy: never an election to hold)
    topic = unique_topic("aio-elect")
    sync_admin.create_topic(topic, 2)

    async def scenario():
        async with AIOAdmin(broker=shared_broker.url) as admin:
            named = await admin.elect_leaders("preferred", {topic: [1, 0, 5]})
            with pytest.raises(ValueError, match="neither 'preferred' .0. nor 'unclean' .1."):
                await admin.elect_leaders("dirty", None)
            return named

    # Then each partition named has its answer, by partition: none needed, and the one
    # past the topic's count is out of range
    results = run(scenario())
    assert [(r.partition, type(r.error).__name__) for r in results] == [
        (0, "ElectionNotNeededError"), (1, "ElectionNotNeededError"),
        (5, "PartitionOutOfRangeError")]
    assert results[0].leader == sync_admin.describe_topic(
        topic).partition_info[0].shard


def test_code_written_with_aiokafkas_option_names_produces_and_consumes(shared_broker):
    # Given code written for aiokafka: bootstrap_servers as host:port, and a group_id
    bootstrap = shared_broker.url.removeprefix("tcp://")
    topic = unique_topic("aio-ported")

    async def scenario():
        async with AIOAdmin(bootstrap_servers=bootstrap) as admin:
            await admin.create_topic(topic, 1)
        async with AIOProducer(bootstrap_servers=bootstrap) as producer:
            await producer.send_and_wait(topic, b"ported")
        async with AIOConsumer(topic, bootstrap_servers=bootstrap, group_id=topic,
                               auto_offset_reset="earliest") as consumer:
            return await asyncio.wait_for(consumer.getone(), WAIT_S)

    # Then the record comes back
    assert run(scenario()).value == b"ported"


def test_the_aio_consumer_lists_the_topics_and_its_topics_partitions_as_aiokafkas_does(
        shared_broker):
    topic = unique_topic("aio")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 3)

    async def scenario():
        async with AIOConsumer(topic, broker=shared_broker.url) as consumer:
            return (consumer.subscription(), await consumer.topics(),
                    consumer.partitions_for_topic(topic),
                    consumer.partitions_for_topic(unique_topic("aio")))

    subscription, topics, partitions, unknown = run(scenario())
    assert subscription == {topic} and topic in topics
    assert (partitions, unknown) == ({0, 1, 2}, None)


def test_the_aio_consumer_answers_beginning_and_end_offsets_and_highwater(shared_broker):
    topic = unique_topic("aio")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)

    async def scenario():
        async with AIOProducer(broker=shared_broker.url) as producer:
            for i in range(4):
                await producer.send_and_wait(topic, b"%d" % i)
        async with AIOConsumer(topic, broker=shared_broker.url,
                               auto_offset_reset="earliest") as consumer:
            tp = TopicPartition(topic, 0)
            offsets = (await consumer.beginning_offsets([tp]), await consumer.end_offsets([tp]),
                       consumer.highwater(tp))
            while not await consumer.getmany(timeout_ms=1_000):
                pass
            return offsets + (consumer.highwater(tp),)

    tp = TopicPartition(topic, 0)
    assert run(scenario()) == ({tp: 0}, {tp: 4}, None, 4)


def test_the_aio_consumer_unsubscribes_at_once_leaves_at_its_next_turn_and_joins_again(
        shared_broker, sync_admin):
    topic, group, partitions = unique_topic("aio-unsub"), unique_topic("g"), 3
    sync_admin.create_topic(topic, partitions)
    revoked: list[set] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            pass

        async def on_partitions_revoked(self, partitions_revoked):
            revoked.append(set(partitions_revoked))

    async def produce(start: int, count: int) -> None:
        async with AIOProducer(broker=shared_broker.url) as producer:
            for i in range(start, start + count):
                await producer.send(topic, b"%d" % i, partition=i % partitions)

    async def scenario():
        await produce(0, 30)
        consumer = AIOConsumer(broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", session_timeout_ms=6_000)
        consumer.subscribe([topic], listener=Listener())
        await consumer.start()
        try:
            # Given a member alone in its group that has read all 30 records
            assert sorted(await read_values(consumer, 30)) == list(range(30))
            everything = consumer.assignment()
            # When it unsubscribes (a plain call, as aiokafka's)
            consumer.unsubscribe()
            # Then it owns nothing and has no subscription, at once
            assert (consumer.assignment(), consumer.subscription()) == (set(), set())
            # And its next turn commits what it read, revokes its partitions and leaves
            assert await consumer.getmany(timeout_ms=0) == {}
            assert revoked == [everything]
            async with AIOAdmin(broker=shared_broker.url) as admin:
                described = await admin.describe_group(group)
            assert described.members == []
            assert sum(described.committed.values()) == 30
            # And subscribing again, it joins anew and reads on from its commits
            consumer.subscribe([topic])
            await produce(30, 6)
            assert sorted(await read_values(consumer, 6)) == list(range(30, 36))
            assert consumer.assignment() == everything
        finally:
            await consumer.stop()

    run(scenario())


def test_the_aio_consumer_subscribing_again_leaves_and_joins_with_the_new_topics(shared_broker):
    first, second, group = unique_topic("aio-re"), unique_topic("aio-re"), unique_topic("g")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(first, 2)
        admin.create_topic(second, 2)
    heard: list[tuple[str, str, set]] = []

    class Listener(ConsumerRebalanceListener):
        def __init__(self, name):
            self.name = name

        def on_partitions_assigned(self, assigned):
            heard.append((self.name, "assigned", set(assigned)))

        def on_partitions_revoked(self, revoked):
            heard.append((self.name, "revoked", set(revoked)))

    async def scenario():
        async with AIOProducer(broker=shared_broker.url) as producer:
            for i in range(10):
                await producer.send(first, b"%d" % i, partition=i % 2)
                await producer.send(second, b"%d" % (100 + i), partition=i % 2)
        consumer = AIOConsumer(broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", session_timeout_ms=6_000)
        consumer.subscribe([first], listener=Listener("old"))
        await consumer.start()
        try:
            # Given a member that read the first topic's 10 records
            assert sorted(await read_values(consumer, 10)) == list(range(10))
            owned_first = consumer.assignment()
            # When it subscribes again, to both topics, with another listener
            consumer.subscribe([first, second], listener=Listener("new"))
            # Then it reads the second topic's records, and none of the first's again
            assert sorted(await read_values(consumer, 10)) == list(range(100, 110))
            # And the old listener heard the first topic's partitions go, the new one
            # its new partitions come
            assert ("old", "revoked", owned_first) in heard
            assert heard[-1][:2] == ("new", "assigned")
            assert {tp.topic for tp in consumer.assignment()} == {first, second}
        finally:
            await consumer.stop()

    run(scenario())


def test_an_aio_unsubscribe_from_another_task_while_a_listener_awaits_ends_the_rebalance(
        shared_broker, sync_admin):
    topic, group = unique_topic("aio-race"), unique_topic("g")
    sync_admin.create_topic(topic, 3)
    heard: list[tuple[str, set]] = []

    async def scenario():
        in_callback, release = asyncio.Event(), asyncio.Event()

        class Awaiting(ConsumerRebalanceListener):
            async def on_partitions_assigned(self, assigned):
                heard.append(("assigned", set(assigned)))
                in_callback.set()
                await release.wait()   # an aiokafka listener may await anything

            async def on_partitions_revoked(self, revoked):
                heard.append(("revoked", set(revoked)))

        consumer = AIOConsumer(broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", session_timeout_ms=6_000)
        consumer.subscribe([topic], listener=Awaiting())
        await consumer.start()
        try:
            # Given a getmany awaiting the listener of the member's first assignment
            # (once unsubscribed it has nothing to fetch, and ends at its timeout, as
            # aiokafka's does; 10 s leaves the join, which this poll drives, time under load)
            polling = asyncio.ensure_future(consumer.getmany(timeout_ms=10_000))
            await asyncio.wait_for(in_callback.wait(), WAIT_S)
            # When another task unsubscribes, and the listener returns
            consumer.unsubscribe()
            release.set()
            # Then the getmany ends without an error, and the next one leaves the group
            assert await asyncio.wait_for(polling, WAIT_S) == {}
            assert await consumer.getmany(timeout_ms=0) == {}
            async with AIOAdmin(broker=shared_broker.url) as admin:
                with pytest.raises(UnknownGroupError):   # no members, and nothing committed
                    await admin.describe_group(group)
            # And the partitions were heard to come, then go, once each
            assert [what for what, _ in heard] == ["assigned", "revoked"]
            assert heard[0][1] == heard[1][1] and len(heard[0][1]) == 3
        finally:
            await consumer.stop()

    run(scenario())


def test_an_aio_subscription_replaced_while_its_counts_are_awaited_is_never_joined(
        shared_broker):
    first, second, group = unique_topic("aio-a"), unique_topic("aio-b"), unique_topic("g")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(first, 2)
        admin.create_topic(second, 2)

    async def members() -> list:
        async with AIOAdmin(broker=shared_broker.url) as admin:
            try:
                return [m.topics for m in (await admin.describe_group(group)).members]
            except UnknownGroupError:   # no members, and no commits
                return []

    async def scenario():
        consumer = AIOConsumer(first, broker=shared_broker.url, group=group,
                               auto_offset_reset="earliest", session_timeout_ms=6_000)
        await consumer.start()
        try:
            # Given partition counts held back (as by a slow broker) until the test lets
            # them through, and a getmany applying a new subscription to the second topic
            asking, answer = asyncio.Event(), asyncio.Event()
            count_of = consumer._admin.partition_count

            async def held_count(topic):
                asking.set()
                await answer.wait()
                return await count_of(topic)

            consumer._admin.partition_count = held_count
            consumer.subscribe([second])
            polling = asyncio.ensure_future(consumer.getmany(timeout_ms=2_000))
            await asyncio.wait_for(asking.wait(), WAIT_S)
            # When the subscription is replaced meanwhile (back to the first topic), and
            # the count comes
            consumer.subscribe([first])
            answer.set()
            await asyncio.wait_for(polling, WAIT_S)
            # Then the group has one member, of the first topic alone, never a second one
            # left behind for the replaced subscription
            while not await members():
                await asyncio.sleep(0.05)   # a poll of the broker's state, bounded by run()
            assert await members() == [[first]]
            assert consumer.subscription() == {first}
        finally:
            await consumer.stop()

    run(scenario())


def test_an_aio_member_that_unsubscribes_and_then_idles_hands_its_partitions_over_at_once(
        shared_broker, sync_admin):
    topic, group = unique_topic("aio-idle"), unique_topic("g")
    sync_admin.create_topic(topic, 3)

    async def scenario():
        options = dict(broker=shared_broker.url, group=group, auto_offset_reset="earliest",
                       session_timeout_ms=60_000)
        idler, taker = AIOConsumer(topic, **options), AIOConsumer(topic, **options)
        await idler.start()
        try:
            # Given a member that owns every partition
            while len(idler.assignment()) < 3:
                await asyncio.wait_for(idler.getmany(timeout_ms=200), WAIT_S)
            # When it unsubscribes and then calls nothing more, while another joins
            idler.unsubscribe()
            await taker.start()
            # Then the other is given every partition, long before the idler's session
            # (60 s) could end: the idler left by itself
            async def given_all():
                while len(taker.assignment()) < 3:
                    await taker.getmany(timeout_ms=200)

            await asyncio.wait_for(given_all(), 30)
        finally:
            await taker.stop()
            await idler.stop()

    run(scenario())


def test_an_aio_member_whose_stop_was_cancelled_leaves_at_the_next_stop_and_its_partitions_move(
        shared_broker, sync_admin):
    topic, group = unique_topic("aio-ghost"), unique_topic("g")
    sync_admin.create_topic(topic, 2)

    async def scenario():
        options = dict(broker=shared_broker.url, group=group, auto_offset_reset="earliest",
                       session_timeout_ms=60_000)
        # Given a member that owns every partition
        member, taker = AIOConsumer(topic, **options), AIOConsumer(topic, **options)
        await member.start()
        while len(member.assignment()) < 2:
            await asyncio.wait_for(member.getmany(timeout_ms=200), WAIT_S)
        # When its stop() is cancelled (wait_for running out at once), then stop() again
        try:
            await asyncio.wait_for(member.stop(), 0.001)
        except asyncio.TimeoutError:
            pass
        await asyncio.wait_for(member.stop(), WAIT_S)
        # Then it has left the group (long before its 60 s session could end), no task
        # of it is left, and a new member is given every partition
        async with AIOAdmin(broker=shared_broker.url) as admin:
            members = (await admin.describe_group(group)).members
        left_over = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        await taker.start()
        try:
            async def given_all():
                while len(taker.assignment()) < 2:
                    await taker.getmany(timeout_ms=200)

            await asyncio.wait_for(given_all(), 30)
        finally:
            await taker.stop()
        return members, left_over

    members, left_over = asyncio.run(scenario())
    assert members == [] and left_over == []
