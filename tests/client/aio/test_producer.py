"""AIOProducer against an in-process broker (tests/client/produce_broker.py: a real
ROUTER socket that stores batches as a shard does, and injects faults).

What is new in the asyncio producer is held here: send as a coroutine with the
sync producer's checks and errors, the sender task's retries, a full buffer
awaited on the loop, stop() delivering what was sent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import pytest

from plinth import limits
from plinth.client.aio.producer import AIOProducer
from plinth.client.fetcher import TopicPartition
from plinth.client.futures import RecordMetadata
from plinth.errors import (ClosedError, InvalidTopicError, NotLeaderError,
                           PartitionOutOfRangeError, PlinthTimeoutError, ProducerBufferFullError,
                           UnknownTopicError, WrongEventLoopError)
from tests.client.produce_broker import DROP, LOSE_REPLY, ProduceBroker
from tests.client.test_producer import (BAD_OPTIONS, key_of_partition, metadata_asked,
                                        producer_ids)

PARTITIONS = 4


@pytest.fixture
def broker():
    broker = ProduceBroker({"t": PARTITIONS})
    yield broker
    broker.close()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


AT_ONCE_S = 5   # far more than a refusal takes; a send no task drains never ends
ON_A_CLOSED_LOOP = (r"AIOProducer\.{call}\(\) was awaited on an event loop other than the one "
                    r"this AIOProducer was started on, which is closed: .* create the "
                    r"AIOProducer inside the loop that uses it")


def end_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on a loop a test left idle, then close it."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def test_every_way_of_calling_send_queues_the_record_it_describes(broker):
    async def scenario():
        async with AIOProducer(broker=broker.url, linger_ms=1) as producer:
            futures = [
                await producer.send("t", b"positional", key=b"k", partition=0),
                await producer.send("t", value=b"by keyword", partition=0, timestamp_ms=5),
                await producer.send("t", partition=0),
                await producer.send("t", b"headers", partition=0, headers=[("h", b"1")]),
                await producer.send("t", bytearray(b"bytearray"), key=memoryview(b"mv"),
                                    partition=0),
            ]
            return [await f for f in futures]

    metadata = run(scenario())
    records = broker.records("t", 0)
    assert [(r.key, r.value) for r in records] == [
        (b"k", b"positional"), (None, b"by keyword"), (None, None), (None, b"headers"),
        (b"mv", b"bytearray")]
    assert records[1].timestamp_ms == 5 and records[3].headers == [("h", b"1")]
    assert metadata == [RecordMetadata("t", 0, i) for i in range(5)]


@pytest.mark.parametrize("call, error", [
    (lambda p: p.send("t", b"v", partition=PARTITIONS), PartitionOutOfRangeError),
    (lambda p: p.send("t", "text"), TypeError),
    (lambda p: p.send("t", b"v", key=3), TypeError),
    (lambda p: p.send(["t"], b"v"), TypeError),
    (lambda p: p.send("t", b"v", headers=[("h", "not bytes")]), TypeError),
    (lambda p: p.send("t", b"v", timestamp_ms=-1), ValueError),
    (lambda p: p.send("unknown", b"v"), UnknownTopicError),
])
def test_send_refuses_what_the_sync_producer_refuses_with_the_same_error_and_no_trace(
        broker, call, error):
    async def scenario():
        async with AIOProducer(broker=broker.url) as producer:
            await producer.send_and_wait("t", b"first", partition=0)
            with pytest.raises(error):
                await call(producer)
            await producer.send_and_wait("t", b"last", partition=0)

    run(scenario())
    assert [r.value for r in broker.records("t", 0)] == [b"first", b"last"]


def test_send_before_start_and_after_stop_raises_closed_error(broker):
    async def scenario():
        producer = AIOProducer(broker=broker.url, linger_ms=60_000)
        with pytest.raises(ClosedError, match="not started"):
            await producer.send("t", b"early")
        await producer.start()
        await producer.send("t", b"open a batch", partition=0)
        await producer.stop()
        with pytest.raises(ClosedError, match="closed"):
            await producer.send("t", b"late", partition=0)   # the fast path refuses too

    run(scenario())
    assert [r.value for r in broker.records("t", 0)] == [b"open a batch"]


def test_a_lost_reply_is_retried_and_the_record_is_stored_once(broker):
    broker.faults.append(LOSE_REPLY)

    async def scenario():
        async with AIOProducer(broker=broker.url, request_timeout_ms=300,
                               retry_backoff_ms=10) as producer:
            return await producer.send_and_wait("t", b"once", partition=1)

    assert run(scenario()) == RecordMetadata("t", 1, 0)
    assert [r.value for r in broker.records("t", 1)] == [b"once"]
    assert len(broker.produces()) == 2   # the first attempt and its retry


def test_stop_delivers_every_record_sent_before_it(broker):
    async def scenario():
        producer = AIOProducer(broker=broker.url, linger_ms=60_000)
        await producer.start()
        futures = [await producer.send("t", b"%d" % i, partition=i % PARTITIONS)
                   for i in range(1_000)]
        assert not any(f.done() for f in futures)   # lingering: nothing sent yet
        await producer.stop()
        return futures

    futures = run(scenario())
    assert all(f.done() and f.exception() is None for f in futures)
    assert broker.record_count() == 1_000


def test_a_full_buffer_is_awaited_on_the_loop_until_batches_are_acknowledged(broker):
    broker.hold()

    async def scenario():
        async with AIOProducer(broker=broker.url, buffer_memory=4_096, linger_ms=0,
                               batch_bytes_max=1_024) as producer:
            try:
                # 4 records of 900 bytes (and their overhead) leave no room for a fifth
                first = [await producer.send("t", b"x" * 900, partition=0) for _ in range(4)]
                blocked = asyncio.get_running_loop().create_task(
                    producer.send("t", b"y" * 900, partition=0))
                await asyncio.sleep(0.2)   # the send waits for room: the loop goes on meanwhile
                assert not blocked.done()
            finally:
                broker.release()
            late = await asyncio.wait_for(blocked, 10)
            return [await f for f in first] + [await late]

    metadata = run(scenario())
    assert [m.offset for m in metadata] == list(range(5))


def test_a_buffer_full_past_max_block_ms_raises_producer_buffer_full_error_naming_the_bytes(
        broker):
    broker.hold()

    async def scenario():
        async with AIOProducer(broker=broker.url, buffer_memory=4_096, linger_ms=0,
                               max_block_ms=200, batch_bytes_max=1_024) as producer:
            try:
                for _ in range(4):
                    await producer.send("t", b"x" * 900, partition=0)
                with pytest.raises(ProducerBufferFullError, match="buffer_memory=4096") as raised:
                    await producer.send("t", b"y" * 900, partition=0)
                assert isinstance(raised.value, PlinthTimeoutError)   # as the sync producer's
            finally:
                broker.release()

    run(scenario())


def test_flush_awaits_every_acknowledgement_and_times_out_naming_the_seconds(broker):
    async def scenario():
        async with AIOProducer(broker=broker.url, linger_ms=60_000) as producer:
            futures = [await producer.send("t", b"%d" % i, partition=2) for i in range(10)]
            await producer.flush()
            assert all(f.done() for f in futures)
            broker.hold()
            try:
                await producer.send("t", b"held", partition=2)
                with pytest.raises(PlinthTimeoutError, match="within 0.2 s"):
                    await producer.flush(0.2)
            finally:
                broker.release()

    run(scenario())


def test_an_acks_0_flush_awaits_the_shards_answer_to_every_request_sent(broker):
    async def scenario():
        # Given an acks=0 AIOProducer, and a broker that holds its answers
        async with AIOProducer(broker=broker.url, acks=0, linger_ms=0) as producer:
            broker.hold()
            # When records are sent: their futures complete once sent, with offset -1
            futures = [await producer.send("t", b"%d" % i, partition=i % PARTITIONS)
                       for i in range(8)]
            assert {(await f).offset for f in futures} == {-1}
            # Then a flush does not return while the shard has not answered them
            with pytest.raises(PlinthTimeoutError, match="acks=0 requests sent still await"):
                await producer.flush(0.3)
            # And when the broker answers, the flush returns, every record stored
            broker.release()
            await producer.flush(10)
            assert broker.record_count() == 8

    run(scenario())


def test_flush_after_stop_raises_closed_error(broker):
    async def scenario():
        producer = AIOProducer(broker=broker.url, linger_ms=0)
        await producer.start()
        await producer.send_and_wait("t", b"x", partition=0)
        await producer.stop()
        with pytest.raises(ClosedError, match="producer is stopped"):
            await producer.flush(1)

    run(scenario())


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS)
def test_an_option_out_of_range_is_refused_in_the_constructor_naming_it_and_its_range(
        options, error, message):
    with pytest.raises(error, match=message):
        AIOProducer(broker="tcp://127.0.0.1:1", **options)


@pytest.mark.parametrize("acks", [0, 1])
def test_an_explicit_idempotence_with_acks_0_or_1_is_refused_naming_both_options(broker, acks):
    # Given Kafka's rule (aiokafka's too): idempotence needs acks="all"
    # When an AIOProducer is asked for both idempotence and acks 0 or 1
    with pytest.raises(ValueError, match=rf"enable_idempotence=True needs acks='all' \(got "
                                         rf"acks={acks}\).*pass acks='all', or "
                                         rf"enable_idempotence=False"):
        AIOProducer(broker=broker.url, acks=acks, enable_idempotence=True)
    # Then it is refused in the constructor, before it asked the broker anything
    assert broker.arrivals == []


def test_acks_1_without_an_explicit_idempotence_sends_without_a_producer_id(broker):
    # Given an acks=1 AIOProducer that leaves enable_idempotence unset
    async def scenario():
        async with AIOProducer(broker=broker.url, acks=1, linger_ms=0) as producer:
            # When it sends a record
            return await producer.send_and_wait("t", b"v", partition=0)

    assert run(scenario()) == RecordMetadata("t", 0, 0)
    # Then its batch carries no producer id and no sequence: idempotence is off
    assert producer_ids(broker) == {(-1, -1)}


def test_acks_1_without_an_explicit_idempotence_retries_a_batch_refused_with_not_leader_and_delivers_it(
        broker):
    # Given a partition that refuses one produce for a passing reason
    broker.faults.append(NotLeaderError("t-0: this shard no longer leads it"))

    async def scenario():
        async with AIOProducer(broker=broker.url, acks=1, linger_ms=0,
                               retry_backoff_ms=10) as producer:
            # When an acks=1 AIOProducer, not idempotent, sends a record
            return await producer.send_and_wait("t", b"kept", partition=0)

    # Then it is retried, as aiokafka's producer retries without idempotence, and stored
    assert run(scenario()) == RecordMetadata("t", 0, 0)
    assert len(broker.produces()) == 2 and producer_ids(broker) == {(-1, -1)}
    assert [r.value for r in broker.records("t", 0)] == [b"kept"]


def test_stop_with_a_timeout_takes_at_most_that_timeout_in_all_and_fails_what_is_pending(broker):
    async def scenario():
        # Given a producer with a record whose request the broker never answers
        producer = AIOProducer(broker=broker.url, linger_ms=0)
        await producer.start()
        await producer.send_and_wait("t", b"x", partition=0)
        broker.hold()
        try:
            future = await producer.send("t", b"pending", partition=0)
            # When it is stopped with a timeout of 1 s
            started_s = time.monotonic()
            await producer.stop(timeout=1)
            took_s = time.monotonic() - started_s
        finally:
            broker.release()
        # Then flush and the sender task's end took 1 s together, and the record failed
        assert 1.0 <= took_s < 1.6
        with pytest.raises(ClosedError):
            await future

    run(scenario())


def test_stop_with_a_timeout_says_a_record_in_flight_may_be_stored_and_one_never_sent_was_not(
        broker):
    async def scenario():
        # Given a producer with one request in flight at most, whose request for
        # partition 0 the broker holds, and a record for partition 1 waiting behind it
        producer = AIOProducer(broker=broker.url, linger_ms=0,
                               max_in_flight_requests_per_connection=1)
        await producer.start()
        await producer.send_and_wait("t", b"x", partition=0)
        broker.hold()
        try:
            in_flight = await producer.send("t", b"in flight", partition=0)
            while len(broker.produces()) < 2:
                await asyncio.sleep(0.01)   # polls the broker thread's record of arrivals
            never_sent = await producer.send("t", b"never sent", partition=1)
            # When it is stopped with a timeout, and the broker then answers
            await producer.stop(timeout=0.3)
        finally:
            broker.release()
        # Then the record in flight fails saying it may have been stored (the broker
        # stores it once released); the one that never left says it was not sent
        with pytest.raises(ClosedError, match="before the record was acknowledged; it was "
                                              "sent, so it may have been stored"):
            await in_flight
        with pytest.raises(ClosedError, match="before the record was sent"):
            await never_sent

    run(scenario())
    deadline_s = time.monotonic() + AT_ONCE_S
    while [r.value for r in broker.records("t", 0)] != [b"x", b"in flight"]:
        assert time.monotonic() < deadline_s, "the held record was not stored"
        time.sleep(0.01)


def test_a_producer_awaited_on_a_second_asyncio_run_raises_at_once_and_keeps_what_was_acknowledged(
        broker):
    # Given a producer started, and its record acknowledged, under a first asyncio.run
    producer = AIOProducer(broker=broker.url, linger_ms=0)

    async def first():
        await producer.start()
        return await producer.send_and_wait("t", b"acknowledged", partition=0)

    assert run(first()) == RecordMetadata("t", 0, 0)

    # When a second asyncio.run sends, flushes and stops with it
    async def second():
        with pytest.raises(WrongEventLoopError,
                           match=ON_A_CLOSED_LOOP.format(call="send_and_wait")):
            await asyncio.wait_for(producer.send_and_wait("t", b"late", partition=0), AT_ONCE_S)
        with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call="send")):
            await asyncio.wait_for(producer.send("t", b"late", partition=0), AT_ONCE_S)
        with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call="flush")):
            await asyncio.wait_for(producer.flush(), AT_ONCE_S)
        with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call="partitions_for")):
            await asyncio.wait_for(producer.partitions_for("t"), AT_ONCE_S)
        # Then each raised at once, and stop() closes the sockets and says so, not
        # "Event loop is closed"
        with pytest.raises(WrongEventLoopError, match="Its sockets are closed; no record was "
                                                      "waiting for an acknowledgement"):
            await asyncio.wait_for(producer.stop(), AT_ONCE_S)
        assert producer._conn.closed

    run(second())
    # And the acknowledged record is stored, the refused one is not
    assert [r.value for r in broker.records("t", 0)] == [b"acknowledged"]


def test_stop_on_another_loop_fails_every_record_the_producers_idle_loop_left_unsent(broker):
    # Given a producer on a loop left idle (not closed) with one record acknowledged and
    # three lingering in a batch
    loop = asyncio.new_event_loop()
    producer = AIOProducer(broker=broker.url, linger_ms=60_000)

    async def first():
        await producer.start()
        acknowledged = await producer.send("t", b"acknowledged", partition=1)
        await producer.flush()
        lingering = [await producer.send("t", b"%d" % i, partition=1) for i in range(3)]
        return acknowledged, lingering

    try:
        acknowledged, lingering = loop.run_until_complete(asyncio.wait_for(first(), 30))
        # When another loop stops it
        with pytest.raises(WrongEventLoopError, match=r"which is not running: .* Its sockets "
                                                      r"are closed; 1 batches not acknowledged "
                                                      r"\(of t\[1\]\) failed with this error"):
            run(producer.stop())
    finally:
        end_loop(loop)
    # Then every lingering record's future raises that error: none is silently dropped
    assert all(isinstance(f.exception(), WrongEventLoopError) for f in lingering)
    # And the acknowledged one stays acknowledged and stored
    assert acknowledged.result() == RecordMetadata("t", 1, 0)
    assert [r.value for r in broker.records("t", 1)] == [b"acknowledged"]


def test_stop_after_the_producers_loop_closed_under_a_task_awaiting_a_record_fails_the_record(
        broker):
    # Given a producer whose loop was closed (not run to its end) while a task awaited
    # one of its records
    loop = asyncio.new_event_loop()
    producer = AIOProducer(broker=broker.url, linger_ms=60_000)

    async def first():
        await producer.start()
        future = await producer.send("t", b"never sent", partition=2)
        awaiting = asyncio.get_running_loop().create_task(asyncio.wait({future}))
        await asyncio.sleep(0)   # one turn: the task starts awaiting the record
        return future, awaiting

    future, awaiting = loop.run_until_complete(asyncio.wait_for(first(), 30))
    assert not awaiting.done()
    loop.close()
    # When another loop stops it, Then it raises the clear error, not "Event loop is closed"
    with pytest.raises(WrongEventLoopError, match=r"which is closed: .* 1 batches not "
                                                  r"acknowledged \(of t\[2\]\)"):
        run(producer.stop())
    # And the record's future holds that error
    assert isinstance(future.exception(), WrongEventLoopError)
    assert broker.records("t", 2) == []


def test_stop_on_another_loop_while_the_producers_loop_runs_in_another_thread_releases_nothing(
        broker):
    # Given a producer whose loop runs in another thread, with a record lingering
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    on_its_loop = lambda coroutine: asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)
    try:
        producer = AIOProducer(broker=broker.url, linger_ms=60_000)
        on_its_loop(producer.start())
        future = on_its_loop(producer.send("t", b"kept", partition=3))
        # When this thread's loop stops it, Then it is refused, naming the way that works
        with pytest.raises(WrongEventLoopError, match=r"which is running in another thread: .* "
                                                      r"Nothing was released: await stop\(\) on "
                                                      r"that loop"):
            run(producer.stop())
        # And the producer is untouched: stopped on its own loop, it delivers the record
        on_its_loop(producer.stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
    assert future.result() == RecordMetadata("t", 3, 0)
    assert [r.value for r in broker.records("t", 3)] == [b"kept"]


@pytest.mark.parametrize("call", ["send", "send_and_wait", "flush", "partitions_for"])
def test_a_call_from_another_threads_loop_while_the_producers_runs_is_refused_at_once_naming_it(
        broker, call):
    # Given a producer whose loop runs in another thread, and which knows the partition
    # count of "t" (so that a send need not ask the broker, where the check used to be)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    on_its_loop = lambda coroutine: asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)
    calls = {"send": lambda p: p.send("t", b"elsewhere", partition=1),
             "send_and_wait": lambda p: p.send_and_wait("t", b"elsewhere", partition=1),
             "flush": lambda p: p.flush(),
             "partitions_for": lambda p: p.partitions_for("t")}
    try:
        producer = AIOProducer(broker=broker.url, linger_ms=0)
        on_its_loop(producer.start())
        on_its_loop(producer.send_and_wait("t", b"known", partition=0))
        # When this thread's loop calls it, Then it is refused at once, naming the call
        with pytest.raises(WrongEventLoopError, match=rf"AIOProducer\.{call}\(\) was awaited on "
                                                      rf"an event loop other than .* which is "
                                                      rf"running in another thread"):
            asyncio.run(asyncio.wait_for(calls[call](producer), AT_ONCE_S))
        # And the producer is untouched: it stops on its own loop at once
        on_its_loop(asyncio.wait_for(producer.stop(), AT_ONCE_S))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
    # And nothing the other loop gave it was stored
    assert [r.value for r in broker.records("t", 0)] == [b"known"]
    assert broker.records("t", 1) == []


def test_record_metadata_has_aiokafkas_topic_partition_and_says_why_it_has_no_timestamp(broker):
    async def scenario():
        async with AIOProducer(broker=broker.url) as producer:
            return await producer.send_and_wait("t", b"v", partition=2)

    # Given the metadata of a record sent
    metadata = run(scenario())
    # Then it has aiokafka's topic_partition
    assert metadata.topic_partition == TopicPartition("t", 2)
    # And asking for a field the produce reply does not carry says so
    for name in ("timestamp", "timestamp_type", "log_start_offset"):
        with pytest.raises(AttributeError, match=rf"RecordMetadata has no {name}: Plinth's "
                                                 rf"produce reply carries only the offset"):
            getattr(metadata, name)


def test_a_topic_re_created_with_fewer_partitions_takes_every_record_sent_after_one_was_refused(
        broker):
    async def scenario():
        # Given a producer that learnt that "t" has 4 partitions
        async with AIOProducer(broker=broker.url, linger_ms=0) as producer:
            await producer.send_and_wait("t", b"first", partition=3)
            # When the topic is re-created with 1 partition
            broker.topics["t"] = 1
            # Then a record the partitioner placed on a partition that is gone fails with
            # the broker's error
            with pytest.raises(PartitionOutOfRangeError, match=r"t\[3\] does not exist"):
                await producer.send_and_wait("t", b"gone", key=key_of_partition(3, 4))
            asked_before = metadata_asked(broker, "t")
            # And every record sent after it by many tasks at once, keyed or not, is stored
            # in partition 0, the count asked once for them all
            sent = await asyncio.gather(*(producer.send_and_wait("t", b"%d" % i,
                                                                 key=b"k%d" % i if i % 2 else None)
                                          for i in range(40)))
            assert {m.partition for m in sent} == {0}
            assert metadata_asked(broker, "t") == asked_before + 1

    run(scenario())


def test_a_send_to_a_partition_a_grown_topic_gained_awaits_the_count_and_is_stored(
        broker):

    async def scenario():
        async with AIOProducer(broker=broker.url) as producer:
            await producer.send_and_wait("t", b"a", partition=0)
            broker.topics["t"] = 6
            assert (await producer.send_and_wait("t", b"b", partition=5)).partition == 5
            with pytest.raises(PartitionOutOfRangeError, match="it has 6 partitions"):
                await producer.send("t", b"c", partition=6)

    run(scenario())


def test_a_wait_that_is_not_seconds_is_refused_by_flush_and_stop_and_the_producer_stays_open(
        broker):
    async def scenario():
        producer = AIOProducer(broker=broker.url, linger_ms=0)
        await producer.start()
        try:
            with pytest.raises(TypeError, match="flush timeout must be a number of seconds"):
                await producer.flush("x")
            with pytest.raises(ValueError, match=r"stop timeout=-1 is outside 0\.\."):
                await producer.stop(timeout=-1)
            # the refused stop left it open: it still sends
            assert (await producer.send_and_wait("t", b"y", partition=0)).offset == 0
        finally:
            await producer.stop()

    run(scenario())


def test_send_and_wait_refuses_an_unknown_argument_naming_itself_not_send(broker):
    async def scenario():
        async with AIOProducer(broker=broker.url) as producer:
            with pytest.raises(TypeError, match=r"send_and_wait\(\) got an unexpected keyword "
                                                r"argument 'foo'"):
                await producer.send_and_wait("t", b"x", foo=1)
            # And every argument of send still reaches it
            return await producer.send_and_wait("t", b"v", key=b"k", partition=1,
                                                headers=[("h", b"1")], timestamp_ms=5)

    metadata = run(scenario())
    assert metadata.partition == 1
    (record,) = broker.records("t", 1)
    assert (record.key, record.value, record.headers, record.timestamp_ms) == (
        b"k", b"v", [("h", b"1")], 5)


def test_start_after_stop_raises_closed_error_as_the_consumers_does(broker):
    async def scenario():
        producer = AIOProducer(broker=broker.url)
        await producer.start()
        await producer.stop()
        with pytest.raises(ClosedError, match=r"producer is stopped: a stopped AIOProducer "
                                              r"cannot start again; make a new one"):
            await producer.start()

    run(scenario())


def test_a_send_to_an_unknown_topic_whose_name_breaks_the_rules_raises_invalid_topic_error(
        broker):
    async def scenario():
        async with AIOProducer(broker=broker.url) as producer:
            with pytest.raises(InvalidTopicError, match=r"topic name 'bad name' may contain "
                                                        r"only ASCII letters"):
                await producer.send("bad name", b"x")

    run(scenario())


def test_a_send_cancelled_while_it_awaits_a_missing_topics_count_leaves_no_unretrieved_error(
        broker):
    reported = []

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reported.append(context["message"]))
        async with AIOProducer(broker=broker.url) as producer:
            # Given a send awaiting the count of a topic the broker does not have, whose
            # answer the broker holds
            broker.hold(("metadata",))
            send = asyncio.get_running_loop().create_task(producer.send("unknown", b"v"))
            await asyncio.sleep(0)   # one step of the send task: it awaits the count now
            asking = [task for task in asyncio.all_tasks()
                      if task.get_name() == "plinth-aio-partitions-unknown"]
            assert len(asking) == 1
            # When the send is cancelled, and the question then ends with the broker's error
            send.cancel()
            with pytest.raises(asyncio.CancelledError):
                await send
            broker.release()
            await asyncio.wait(asking)
            del asking
            gc.collect()   # asyncio reports an unretrieved error when the task is collected
            # Then the next send asks again and raises the error
            with pytest.raises(UnknownTopicError, match="unknown"):
                await producer.send("unknown", b"v")

    run(scenario())
    # and asyncio had no error of the question's task to report
    assert reported == []


def test_a_stopped_producer_asks_the_broker_nothing_and_send_raises_only_closed_error(
        broker, monkeypatch, caplog):
    # Given a producer that may ask a count again at once, and a send refused for a
    # partition the topic lacks, which leaves the topic's count due
    monkeypatch.setattr(limits, "PRODUCER_METADATA_REFRESH_MS_MIN", 0)

    async def scenario():
        producer = AIOProducer(broker=broker.url)
        await producer.start()
        await producer.send_and_wait("t", b"x", partition=0)
        with pytest.raises(PartitionOutOfRangeError):
            await producer.send("t", b"x", partition=PARTITIONS)
        await producer.stop()
        asked = metadata_asked(broker, "t")
        # When it is stopped, and then sent to and asked its partitions
        with caplog.at_level(logging.WARNING, logger="plinth"):
            with pytest.raises(ClosedError, match="producer is closed"):
                await producer.send("t", b"late")
            with pytest.raises(ClosedError, match="producer is closed"):
                await producer.partitions_for("t")
        # Then each raised ClosedError alone: nothing was asked of the broker, and
        # nothing logged
        assert metadata_asked(broker, "t") == asked
        assert caplog.records == []

    run(scenario())


def test_a_stop_that_waited_out_a_delivery_timeout_warns_how_many_records_failed_and_why(
        broker, caplog):
    async def scenario():
        # Given a producer whose records the broker loses from now on
        producer = AIOProducer(broker=broker.url, request_timeout_ms=100,
                               delivery_timeout_ms=300)
        await producer.start()
        await producer.send_and_wait("t", b"x", partition=0)
        broker.faults.extend([DROP] * 1000)
        future = await producer.send("t", b"lost", partition=0)
        # When it is stopped: the stop waits for the record's delivery deadline
        with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
            await producer.stop()
        # Then the stop's last word is one WARNING saying how many failed and why
        assert caplog.records[-1].getMessage() == (
            "producer closed with 1 records not delivered: 1 not acknowledged within "
            "delivery_timeout_ms=300 (sent, so they may have been stored); each record's "
            "future raises its error")
        with pytest.raises(PlinthTimeoutError, match="may have been stored"):
            await future

    run(scenario())


def test_a_producer_never_stopped_warns_when_asyncio_run_ends_how_many_records_it_dropped(
        broker, caplog):
    # Given a producer whose record waits out its linger when its coroutine returns
    producer = AIOProducer(broker=broker.url, linger_ms=60_000)

    async def forgetful():
        await producer.start()
        return await producer.send("t", b"never sent", partition=0)

    # When asyncio.run ends without stop(), cancelling the sender task
    with caplog.at_level(logging.WARNING, logger="plinth.client"):
        future = asyncio.run(forgetful())
    # Then one WARNING names the mistake and one counts the records it dropped
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("AIOProducer was never stopped: its sender task was "
                                  "cancelled (did the event loop end?)")
    assert messages[1].startswith("producer closed with 1 records not delivered: 1 ")
    assert len(messages) == 2
    # And the record's future says it was not stored
    assert isinstance(future.exception(), ClosedError)
    assert broker.records("t", 0) == []


def test_a_producer_never_stopped_with_every_record_acknowledged_warns_of_nothing(
        broker, caplog):
    producer = AIOProducer(broker=broker.url, linger_ms=0)

    async def forgetful():
        await producer.start()
        await producer.send_and_wait("t", b"acknowledged", partition=0)

    with caplog.at_level(logging.WARNING, logger="plinth.client"):
        asyncio.run(forgetful())
    assert caplog.records == []
    assert [r.value for r in broker.records("t", 0)] == [b"acknowledged"]
