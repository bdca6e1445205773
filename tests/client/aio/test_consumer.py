"""AIOConsumer against a scripted broker (tests/client/scripted_broker.py): what is
new in it, the position resets getmany does not wait for (client/position_resets.py,
as the sync consumer's), and polling that awaits the socket."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from plinth import limits, protocol
from plinth.client.aio.consumer import AIOConsumer, TopicPartition
from plinth.errors import (ClosedError, CorruptDataError, OffsetOutOfRangeError,
                           PartitionNotAssignedError, RecordDeserializationError,
                           UnavailableError, UnknownTopicError, WrongEventLoopError)
from tests.client.test_consumer import (BAD_COMMITS, BAD_OPTIONS, BAD_PARTITION_CALLS,
                                        BAD_POLL_TIMEOUTS, GroupBroker, RestartedCoordinator,
                                        fetched, joins_after_first_refused_commit,
                                        partitions_of, unknown_topic)
from tests.client.test_group_membership import left
from tests.client.test_position_resets import T0, Shard

BOUND_S = 20
AT_ONCE_S = 5   # far more than a refusal takes
# getone and async for poll in slices of this: without the stop() that ends a wait, a
# stop() waited for the rest of one
ONE_SLICE_S = limits.CONSUMER_ITERATION_POLL_SLICE_MS / 1000
ON_A_CLOSED_LOOP = (r"AIOConsumer\.{call}\(\) was awaited on an event loop other than the one "
                    r"this AIOConsumer was started on, which is closed: .* create the "
                    r"AIOConsumer inside the loop that uses it")


def offsets(start: int, end: int):
    """A script step: the answer to listOffsets."""
    return lambda request: [protocol.encode_offsets_reply(
        request.request_id, protocol.PartitionInfo(0, start_offset=start, end_offset=end))]


async def records_of(consumer: AIOConsumer, count: int) -> list:
    got = []
    while len(got) < count:
        got += [r for rs in (await consumer.getmany(timeout_ms=200)).values() for r in rs]
    return got


def run(broker, scenario, **options):
    async def main():
        # The script answers fetches in order: none of the direct routes' metadata asks.
        consumer = AIOConsumer(broker=broker.url, fetch_max_wait_ms=100, request_timeout_ms=5_000,
                               direct_to_shards=False, **options)
        await consumer.start()
        try:
            return await asyncio.wait_for(scenario(consumer), BOUND_S)
        finally:
            await consumer.stop()

    return asyncio.run(main())


def test_an_offset_out_of_range_is_reset_as_auto_offset_reset_says_before_the_next_fetch(
        scripted):
    broker = scripted([OffsetOutOfRangeError("offset 100 is past the end 10"), offsets(5, 10),
                       fetched(5, [b"a", b"b"], 7)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 100)
        got = await records_of(consumer, 2)
        return got, await consumer.position("t", 0)

    got, position = run(broker, scenario, auto_offset_reset="earliest")
    assert [(r.offset, r.value) for r in got] == [(5, b"a"), (6, b"b")] and position == 7
    kinds = [type(request).__name__ for _, request in broker.requests[:3]]
    assert kinds[1] == "ListOffsetsRequest" and broker.requests[2][1].offset == 5


def test_a_partition_without_a_position_starts_at_the_end_by_default(scripted):
    broker = scripted([offsets(0, 42), fetched(42, [b"new"], 43)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        return await records_of(consumer, 1)

    got = run(broker, scenario)
    assert [(r.offset, r.value) for r in got] == [(42, b"new")]
    assert broker.requests[1][1].offset == 42


def test_with_auto_offset_reset_none_a_partition_without_a_position_raises(scripted):
    broker = scripted([])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        with pytest.raises(OffsetOutOfRangeError, match="auto_offset_reset='none'"):
            await consumer.getmany(timeout_ms=100)

    run(broker, scenario, auto_offset_reset="none")


def test_a_partition_whose_fetches_fail_transiently_is_among_fetch_errors_until_one_succeeds(
        scripted):
    # Given a broker whose object storage is down for two fetches, then answers
    down = UnavailableError("object storage: connection refused")
    broker = scripted([down, down, fetched(0, [b"a"], 1)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        before = consumer.fetch_errors()
        # When getmanys end while its fetches are being retried
        deadline = time.monotonic() + 10
        while not consumer.fetch_errors() and time.monotonic() < deadline:
            assert await consumer.getmany(timeout_ms=20) == {}
        failing = {tp: str(error) for tp, error in consumer.fetch_errors().items()}
        # And a later one gets the record
        got = await records_of(consumer, 1)
        return before, failing, got, consumer.fetch_errors()

    before, failing, got, after = run(broker, scenario)
    # Then the partition was failing, with the error, only until a fetch succeeded
    assert before == {} and after == {}
    assert failing == {TopicPartition("t", 0): "object storage: connection refused"}
    assert [r.value for r in got] == [b"a"]


async def getmany_until(consumer: AIOConsumer, predicate) -> list:
    """getmany in 100 ms slices until ``predicate(records got so far)`` (the scenario's
    wait_for bounds it); the records got meanwhile."""
    got = []
    while not predicate(got):
        got += [r for rs in (await consumer.getmany(timeout_ms=100)).values() for r in rs]
    return got


def reset_scenario(broker, scenario):
    """Run ``scenario(consumer)`` on an AIOConsumer assigned t-0 without a position
    (auto_offset_reset='earliest', request_timeout_ms=RESET_TIMEOUT_MS)."""
    async def main():
        consumer = AIOConsumer(broker=broker.url, auto_offset_reset="earliest",
                               request_timeout_ms=RESET_TIMEOUT_MS, fetch_max_wait_ms=100,
                               direct_to_shards=False)
        await consumer.start()
        try:
            consumer.assign([("t", 0)])
            return await scenario(consumer)
        finally:
            await consumer.stop()

    return asyncio.run(asyncio.wait_for(main(), BOUND_S))


RESET_TIMEOUT_MS = 1_000


def test_getmany_returns_within_its_timeout_while_a_position_reset_goes_unanswered(
        scripted, caplog):
    # Given a partition without a position whose shard does not answer its listOffsets
    shard = Shard()
    broker = scripted([shard] * 10_000)
    caplog.set_level(logging.INFO, logger="plinth.client.position_resets")

    async def scenario(consumer):
        # When a getmany shorter than request_timeout_ms is awaited meanwhile
        started_s = time.monotonic()
        got = await consumer.getmany(timeout_ms=200)
        took_s = time.monotonic() - started_s
        # And later ones go on until the reset is unanswered for request_timeout_ms
        await getmany_until(consumer, lambda got: T0 in consumer.fetch_errors())
        failing = consumer.fetch_errors()
        # And the shard answers again
        shard.answer_resets.set()
        records = await getmany_until(consumer, lambda got: got and not consumer.fetch_errors())
        return got, took_s, failing, records, consumer.fetch_errors()

    got, took_s, failing, records, after = reset_scenario(broker, scenario)
    # Then that getmany returned nothing within its timeout (not PlinthTimeoutError after
    # request_timeout_ms)
    assert got == {} and took_s < RESET_TIMEOUT_MS / 1000 / 2
    # And the partition was failing with the reset's timeout, said once at WARNING
    assert {tp: str(error) for tp, error in failing.items()} == {T0: (
        f"no answer to the position reset (listOffsets) of t-0 within "
        f"request_timeout_ms={RESET_TIMEOUT_MS}")}
    # And the reset was asked again, the record read from its position, and the end of
    # the failure said at INFO
    assert [(r.offset, r.value) for r in records] == [(5, b"a")] and after == {}
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


def test_a_reset_answered_with_a_transient_error_is_asked_again_by_later_getmanys(scripted):
    # Given a shard that answers the first two resets "unavailable", then the offsets
    shard = Shard(reset_errors=[UnavailableError("shard-0 is restarting")] * 2)
    broker = scripted([shard] * 10_000)

    async def scenario(consumer):
        # When the consumer getmanys / Then it is failing with that error meanwhile
        await getmany_until(consumer, lambda got: T0 in consumer.fetch_errors())
        failing = str(consumer.fetch_errors()[T0])
        shard.answer_resets.set()
        records = await getmany_until(consumer, lambda got: got and not consumer.fetch_errors())
        return failing, records

    failing, records = reset_scenario(broker, scenario)
    # And the third reset's answer gives the position; the record is read
    assert failing == "shard-0 is restarting"
    assert [r.value for r in records] == [b"a"] and shard.resets_asked >= 3


def test_a_reset_refused_for_good_is_raised_by_getmany(scripted):
    # Given a shard whose answer to the reset is an error no retry changes
    broker = scripted([Shard(reset_errors=[UnknownTopicError("unknown topic 't'")])] * 10_000)

    async def scenario(consumer):
        # When the consumer getmanys / Then getmany raises it
        with pytest.raises(UnknownTopicError, match="unknown topic 't'"):
            await getmany_until(consumer, lambda got: False)

    reset_scenario(broker, scenario)


def test_stop_ends_a_position_reset_in_progress_at_once(scripted):
    # Given a consumer whose partition's reset goes unanswered
    broker = scripted([lambda request: None])

    async def scenario():
        consumer = AIOConsumer(broker=broker.url, request_timeout_ms=10_000,
                               direct_to_shards=False)
        await consumer.start()
        consumer.assign([("t", 0)])
        assert await consumer.getmany(timeout_ms=50) == {}
        # When it is stopped, Then stop() does not wait for the reset's request
        started_s = time.monotonic()
        await consumer.stop()
        return time.monotonic() - started_s

    assert asyncio.run(asyncio.wait_for(scenario(), BOUND_S)) < AT_ONCE_S


def test_a_non_transient_fetch_error_is_raised_from_getmany(scripted):
    broker = scripted([CorruptDataError("entry at offset 0 fails its CRC")])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        with pytest.raises(CorruptDataError, match="fails its CRC"):
            await records_of(consumer, 1)

    run(broker, scenario)


def test_async_for_yields_records_one_by_one_and_ends_after_consumer_timeout_ms(scripted):
    broker = scripted([fetched(0, [b"a", b"b", b"c"], 3)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        return [record.value async for record in consumer]

    assert run(broker, scenario, consumer_timeout_ms=500) == [b"a", b"b", b"c"]


def test_calls_before_start_raise_closed_error():
    async def scenario():
        consumer = AIOConsumer(broker="tcp://127.0.0.1:1")
        with pytest.raises(ClosedError, match="not started"):
            await consumer.getmany()
        # (aiokafka's seek before start() fails too, with an AttributeError)
        with pytest.raises(ClosedError, match="not started"):
            consumer.seek("t", 0, 5)

    asyncio.run(scenario())


def test_assign_before_start_is_applied_by_start_as_aiokafkas_assign_then_start(scripted):
    # Given a broker with t-0's records from offset 42
    broker = scripted([offsets(0, 42), fetched(42, [b"new"], 43)])

    async def main():
        consumer = AIOConsumer(broker=broker.url, fetch_max_wait_ms=100, request_timeout_ms=5_000,
                               direct_to_shards=False)
        # When partitions are assigned before start(), as aiokafka's documentation does
        consumer.assign([TopicPartition("t", 0)])
        before = consumer.assignment()
        await consumer.start()
        try:
            # Then assignment() says them at once, and once started they are read
            return before, consumer.assignment(), await records_of(consumer, 1)
        finally:
            await consumer.stop()

    before, after, got = asyncio.run(asyncio.wait_for(main(), BOUND_S))
    assert before == after == {TopicPartition("t", 0)}
    assert [(r.offset, r.value) for r in got] == [(42, b"new")]


def test_before_start_the_last_of_assign_subscribe_and_unsubscribe_is_what_start_applies(
        scripted):
    # Given a broker whose topic t has 2 partitions
    broker = scripted([partitions_of(2)])

    async def main():
        consumer = AIOConsumer(broker=broker.url, request_timeout_ms=5_000,
                               direct_to_shards=False)
        # When a subscribe() follows an assign() before start()
        consumer.assign([("x", 0)])
        consumer.subscribe(["t"])
        subscribed = consumer.assignment(), consumer.subscription()
        await consumer.start()
        started = consumer.assignment()
        await consumer.stop()
        # and an unsubscribe() follows an assign() before start()
        unsubscribed = AIOConsumer(broker=broker.url, direct_to_shards=False)
        unsubscribed.assign([("x", 0)])
        unsubscribed.unsubscribe()
        return subscribed, started, unsubscribed.assignment()

    subscribed, started, dropped = asyncio.run(asyncio.wait_for(main(), BOUND_S))
    # Then the subscription replaced the assignment, and unsubscribe() dropped it
    assert subscribed == (set(), {"t"})
    assert started == {TopicPartition("t", 0), TopicPartition("t", 1)}
    assert dropped == set()


def test_assign_before_start_of_a_group_member_is_refused_naming_subscribe():
    consumer = AIOConsumer("t", broker="tcp://127.0.0.1:1", group="g")
    with pytest.raises(ValueError, match=r"consumer is in group 'g': partitions come from the "
                                         r"group; use subscribe"):
        consumer.assign([("t", 0)])
    assert consumer.subscription() == {"t"}


def test_a_commit_without_a_group_is_refused_naming_the_option_it_needs(scripted):
    # Given an asyncio consumer of assigned partitions, no group
    async def scenario(consumer):
        consumer.assign([("t", 0)])
        # When it commits, Then it is told that commits need a group, in its own class's words
        with pytest.raises(ValueError, match=r"commit needs a consumer group: "
                                             r"AIOConsumer\(\.\.\., group='name'\)"):
            await consumer.commit()
        return True

    assert run(scripted([]), scenario)


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS)
def test_an_option_out_of_range_is_refused_in_the_constructor_naming_it_and_its_range(
        options, error, message):
    with pytest.raises(error, match=message):
        AIOConsumer("t", broker="tcp://127.0.0.1:1", **{"group": "g", **options})


@pytest.mark.parametrize("max_records, error", [(0, ValueError), (-1, ValueError),
                                                (1.5, TypeError)])
def test_getmany_refuses_a_max_records_that_could_never_hand_out_a_record(scripted, max_records,
                                                                          error):
    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        with pytest.raises(error, match="max_records"):
            await consumer.getmany(timeout_ms=100, max_records=max_records)
        return [r.value for r in await records_of(consumer, 1)]

    assert run(scripted([fetched(0, [b"a"], 1)]), scenario) == [b"a"]


@pytest.mark.parametrize("timeout_ms, error, message", BAD_POLL_TIMEOUTS)
def test_getmany_refuses_a_timeout_that_is_not_a_number_of_ms_0_or_more_naming_it(
        scripted, timeout_ms, error, message):
    broker = scripted([fetched(0, [b"a"], 1)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        with pytest.raises(error, match=message):
            await consumer.getmany(timeout_ms=timeout_ms)
        # nothing was fetched: the record is there for the next getmany
        assert broker.requests == []
        return [r.value for r in await records_of(consumer, 1)]

    assert run(broker, scenario) == [b"a"]


@pytest.mark.parametrize("offsets, error, message", BAD_COMMITS)
def test_a_commit_of_an_offset_that_is_not_an_int_0_or_more_is_refused_before_it_is_sent(
        scripted, offsets, error, message):
    broker = scripted([GroupBroker().answer] * 1_000)

    async def scenario():
        consumer = AIOConsumer("t", broker=broker.url, group="g", direct_to_shards=False)
        await consumer.start()
        try:
            with pytest.raises(error, match=message):
                await consumer.commit(offsets)
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(scenario(), BOUND_S))
    assert not any(type(r) is protocol.CommitOffsetsRequest for _, r in broker.requests)


def test_a_seek_to_an_offset_that_is_not_an_int_0_or_more_is_refused_and_changes_nothing(
        scripted):
    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        with pytest.raises(TypeError, match="offset must be an int in 0"):
            consumer.seek("t", 0, "3")
        return [r.value for r in await records_of(consumer, 1)]

    assert run(scripted([fetched(0, [b"a"], 1)]), scenario) == [b"a"]


def test_offsets_for_times_refuses_a_time_past_an_int64_before_asking(scripted):
    async def scenario(consumer):
        with pytest.raises(ValueError, match=r"the time for t-0 is 9223372036854775808"):
            await consumer.offsets_for_times({("t", 0): 2**63})
        return True

    broker = scripted([])
    assert run(broker, scenario) and broker.requests == []


def test_subscribe_to_a_str_is_refused_rather_than_read_as_its_characters():
    consumer = AIOConsumer(broker="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match=r"subscribe takes a list of topic names, not a str"):
        consumer.subscribe("t")
    with pytest.raises(TypeError, match=r"topic patterns are not supported"):
        consumer.subscribe([], pattern="t.*")
    with pytest.raises(ValueError, match=r"subscribe\(\[\]\) names no topic"):
        consumer.subscribe([])


def test_start_after_stop_raises_closed_error_even_when_stop_came_before_start():
    async def scenario():
        consumer = AIOConsumer(broker="tcp://127.0.0.1:1")
        await consumer.stop()
        with pytest.raises(ClosedError, match=r"consumer is closed: stop\(\) was called; an "
                                              r"AIOConsumer cannot start again"):
            await consumer.start()

    asyncio.run(asyncio.wait_for(scenario(), BOUND_S))


def test_a_group_member_awaited_on_a_second_asyncio_run_raises_at_once_instead_of_reading_on(
        scripted):
    # Given a group member that read a record under a first asyncio.run (its heartbeat
    # task ended with that loop)
    broker = scripted([GroupBroker().answer] * 1_000)
    consumer = AIOConsumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                           enable_auto_commit=False, fetch_max_wait_ms=100,
                           direct_to_shards=False)

    async def first():
        await consumer.start()
        return await records_of(consumer, 1)

    assert len(asyncio.run(asyncio.wait_for(first(), BOUND_S))) == 1
    asked = len(broker.requests)

    # When a second asyncio.run polls, commits and stops it
    async def second():
        for call, coroutine in [("getmany", consumer.getmany(timeout_ms=100)),
                                ("commit", consumer.commit()),
                                ("committed", consumer.committed("t", 0)),
                                ("position", consumer.position("t", 0))]:
            with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call=call)):
                await asyncio.wait_for(coroutine, AT_ONCE_S)
        with pytest.raises(WrongEventLoopError, match=r"Its sockets are closed; member 'm-1' did "
                                                      r"not leave group 'g' \(its partitions move "
                                                      r"to other members once session_timeout_ms"):
            await asyncio.wait_for(consumer.stop(), AT_ONCE_S)

    asyncio.run(asyncio.wait_for(second(), BOUND_S))
    # Then each raised at once: nothing more was fetched, committed or sent to leave
    assert len(broker.requests) == asked
    assert consumer._conn.closed and consumer._membership._conn.closed


def test_a_commit_refused_as_an_unknown_member_rejoins_without_waiting_for_a_lost_heartbeat(
        scripted):
    # Given a group member with a 10 s session whose coordinator restarted while its
    # heartbeat was on the way (never answered), auto-committing every 100 ms
    broker = scripted([RestartedCoordinator().answer] * 50_000)
    lost = []

    async def main():
        consumer = AIOConsumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                               auto_commit_interval_ms=100, fetch_max_wait_ms=100,
                               session_timeout_ms=10_000, direct_to_shards=False,
                               on_revoke=lost.append)
        await consumer.start()
        try:
            # When it polls on and its first commit is refused as an unknown member's
            deadline_s = time.monotonic() + 8
            while time.monotonic() < deadline_s and \
                    not joins_after_first_refused_commit(list(broker.requests))[1]:
                await consumer.getmany(timeout_ms=100)
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(main(), BOUND_S))
    # Then it drops t-0 as lost and joins again at once, not after the heartbeat's
    # timeout or the session timeout (10 s)
    refused_s, joins = joins_after_first_refused_commit(broker.requests)
    assert joins and joins[0] - refused_s < 5.0
    assert lost == [{("t", 0)}]


def test_a_consumer_without_a_group_is_refused_on_a_second_asyncio_run_alike(scripted):
    # Given a consumer of an assigned partition that read under a first asyncio.run
    broker = scripted([fetched(0, [b"a"], 2), fetched(1, [b"b"], 2)])
    consumer = AIOConsumer(broker=broker.url, fetch_max_wait_ms=100, direct_to_shards=False)

    async def first():
        await consumer.start()
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        return [r.value for r in await records_of(consumer, 1)]

    assert asyncio.run(asyncio.wait_for(first(), BOUND_S)) == [b"a"]

    # When a second asyncio.run polls it, Then it is refused as a group member would be
    async def second():
        with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call="getmany")):
            await asyncio.wait_for(consumer.getmany(timeout_ms=100), AT_ONCE_S)
        with pytest.raises(WrongEventLoopError, match=r"Its sockets are closed\Z"):
            await consumer.stop()

    asyncio.run(asyncio.wait_for(second(), BOUND_S))
    assert consumer._conn.closed


def test_getone_and_async_for_on_a_second_asyncio_run_are_refused_naming_themselves(scripted):
    # Given a consumer of an assigned partition started under a first asyncio.run
    broker = scripted([fetched(0, [b"a"], 2)])
    consumer = AIOConsumer(broker=broker.url, fetch_max_wait_ms=100, direct_to_shards=False)

    async def first():
        await consumer.start()
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)

    asyncio.run(asyncio.wait_for(first(), BOUND_S))

    # When a second asyncio.run awaits getone, then iterates it
    async def second():
        # Then each is refused naming the call made, not the getmany inside it
        with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call="getone")):
            await asyncio.wait_for(consumer.getone(), AT_ONCE_S)
        with pytest.raises(WrongEventLoopError, match=ON_A_CLOSED_LOOP.format(call="__anext__")):
            await asyncio.wait_for(consumer.__anext__(), AT_ONCE_S)
        with pytest.raises(WrongEventLoopError):
            await consumer.stop()

    asyncio.run(asyncio.wait_for(second(), BOUND_S))


def test_position_committed_and_seek_take_aiokafkas_topic_partition_as_the_two_argument_form(
        scripted):
    # Given a consumer of t-0 that read two records
    broker = scripted([fetched(0, [b"a", b"b"], 2)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek(TopicPartition("t", 0), 0)   # aiokafka's seek(tp, offset)
        await records_of(consumer, 2)
        # When its position is asked with a TopicPartition, Then it is the same answer
        assert await consumer.position(TopicPartition("t", 0)) == \
            await consumer.position("t", 0) == 2
        # And committed(TopicPartition) is taken (and refused only for want of a group)
        with pytest.raises(ValueError, match=r"committed\(\) needs a consumer group"):
            await consumer.committed(TopicPartition("t", 0))
        # And a topic alone is refused naming both forms
        with pytest.raises(TypeError, match=r"position\(\) takes a TopicPartition or a topic "
                                            r"and a partition, got 't' alone"):
            await consumer.position("t")

    run(broker, scenario)


def test_getmany_and_getone_given_partitions_hand_out_only_theirs_and_keep_the_others(scripted):
    # Given a consumer of t-0 and t-1 with records of both fetched
    broker = scripted([fetched(0, [b"a0", b"a1"], 2), fetched(0, [b"b0"], 1)])

    async def scenario(consumer):
        consumer.assign([("t", 0), ("t", 1)])
        consumer.seek("t", 0, 0)
        consumer.seek("t", 1, 0)
        # When getmany is given t-1 (aiokafka's form), Then only t-1's records come
        only_1 = await consumer.getmany(TopicPartition("t", 1), timeout_ms=2_000)
        while len(broker.requests) < 2:   # (t-0's reply too, buffered meanwhile)
            await consumer.getmany(TopicPartition("t", 1), timeout_ms=50)
        # And getone given t-0 hands out t-0's first record, then getmany the rest
        one = await consumer.getone(TopicPartition("t", 0))
        rest = await consumer.getmany(timeout_ms=2_000)
        # And a timeout given by position is refused, saying to give it by keyword
        with pytest.raises(TypeError, match=r"getmany\(100\): give timeout_ms by keyword"):
            await consumer.getmany(100)
        # And a partition not assigned is refused naming it
        with pytest.raises(PartitionNotAssignedError, match="t-5 is not assigned"):
            await consumer.getmany(TopicPartition("t", 5), timeout_ms=10)
        return only_1, one, rest

    only_1, one, rest = run(broker, scenario)
    assert {tp: [r.value for r in rs] for tp, rs in only_1.items()} == {
        TopicPartition("t", 1): [b"b0"]}
    assert (one.partition, one.value) == (0, b"a0")
    assert {tp: [r.value for r in rs] for tp, rs in rest.items()} == {
        TopicPartition("t", 0): [b"a1"]}


def test_subscribe_with_a_pattern_alone_is_refused_naming_the_pattern():
    # Given a consumer, When aiokafka's subscribe(pattern=...) is called
    consumer = AIOConsumer(broker="tcp://127.0.0.1:45999")
    # Then it is refused saying patterns are not supported, not that topics is missing
    with pytest.raises(TypeError, match=r"subscribe\(pattern='\^c1\$'\): topic patterns are "
                                        r"not supported"):
        consumer.subscribe(pattern="^c1$")


class NotAListener:
    def on_partitions_assigned(self, assigned):
        pass


@pytest.mark.parametrize("listener, message", [
    (5, r"listener must be a ConsumerRebalanceListener \(an object with on_partitions_revoked "
        r"and on_partitions_assigned methods\), got 5 \(int\), which has no callable "
        r"on_partitions_revoked nor on_partitions_assigned"),
    (lambda partitions: None, r"listener must be a ConsumerRebalanceListener .*\(function\)"),
    (NotAListener(), r"\(NotAListener\), which has no callable on_partitions_revoked$"),
])
def test_subscribe_refuses_a_listener_without_the_rebalance_methods_and_changes_nothing(
        listener, message):
    # Given a consumer whose group would call the listener at its first rebalance
    consumer = AIOConsumer(broker="tcp://127.0.0.1:1", group="g", on_assign=print)
    # When it subscribes with something that is not a listener / Then TypeError names it
    with pytest.raises(TypeError, match=message):
        consumer.subscribe(["t"], listener=listener)
    # And neither the subscription nor the callbacks changed
    assert consumer._subscription is None and consumer._on_assign is print


def test_subscribe_takes_aiokafkas_positional_order_topics_pattern_listener():
    # Given a listener, given as aiokafka's subscribe(topics, pattern, listener) takes it
    class Listener:
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            pass

    listener = Listener()
    consumer = AIOConsumer(broker="tcp://127.0.0.1:1", group="g")
    # When it subscribes with the pattern None and the listener third
    consumer.subscribe(["t"], None, listener)
    # Then the listener's methods are the group's callbacks
    assert consumer._on_assign == listener.on_partitions_assigned
    assert consumer._on_revoke == listener.on_partitions_revoked


@pytest.mark.parametrize("call, message", BAD_PARTITION_CALLS)
def test_a_call_given_something_that_is_not_a_topic_partition_is_refused_naming_it(
        scripted, call, message):
    # Given a consumer reading t-0 from offset 0
    broker = scripted([fetched(0, [b"a"], 1)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        # When a call is given something that is not a (topic, partition) / Then TypeError
        with pytest.raises(TypeError, match=message):
            outcome = call(consumer)
            if asyncio.iscoroutine(outcome):
                await outcome
        # And nothing changed: the assignment and position are the same
        assert consumer.assignment() == {("t", 0)} and await consumer.position("t", 0) == 0
        return await records_of(consumer, 1)

    assert [r.value for r in run(broker, scenario)] == [b"a"]
    assert [type(r).__name__ for _, r in broker.requests] == ["FetchRequest"]


def test_getone_names_a_record_the_deserializer_raises_on_until_a_seek_past_it(scripted):
    # Given a partition whose record at offset 1 the value deserializer cannot take
    broker = scripted([fetched(0, [b"0", b"x", b"2"], 3), fetched(2, [b"2"], 3)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        first = await consumer.getone()
        # When getone reaches it / Then each call raises the error naming it
        for _ in range(2):
            with pytest.raises(RecordDeserializationError, match=r"at offset 1 of t-0: "
                                                                 r"ValueError") as raised:
                await consumer.getone()
            assert await consumer.position("t", 0) == 1
        # And a seek past it reads on
        consumer.seek("t", 0, raised.value.offset + 1)
        return first, await consumer.getone()

    first, after = run(broker, scenario, value_deserializer=int)
    assert (first.offset, first.value, after.offset, after.value) == (0, 0, 2, 2)


def test_a_subscription_to_an_unknown_topic_fails_every_getmany_until_an_assign_replaces_it(
        scripted):
    # Given a consumer without a group reading t-0
    broker = scripted([fetched(0, [b"a"], 1), unknown_topic, unknown_topic,
                       fetched(1, [b"b"], 2)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        got = await records_of(consumer, 1)
        # When it subscribes to a topic that does not exist
        consumer.subscribe(["nosuch"])
        # Then every getmany raises (it raised once, then the old assignment went on)
        for _ in range(2):
            with pytest.raises(UnknownTopicError, match="nosuch"):
                await consumer.getmany(timeout_ms=100)
        # And an assign replaces the failed subscription
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 1)
        return got + await records_of(consumer, 1)

    assert [r.value for r in run(broker, scenario)] == [b"a", b"b"]
    assert [type(r).__name__ for _, r in broker.requests] == [
        "FetchRequest", "MetadataRequest", "MetadataRequest", "FetchRequest"]


async def stopped_while_waiting(consumer, broker, call):
    """Start ``call`` (a coroutine of the consumer) in a task, stop the consumer from this
    task once that call awaits a fetch's reply (the broker got the fetch, the script has
    no answer), and return how long stop() took and the task."""
    consumer.assign([("t", 0)])
    consumer.seek("t", 0, 0)
    task = asyncio.get_running_loop().create_task(call)
    # The fetch is sent right before the wait, in one step of the task: once it
    # arrived the task awaits the socket.
    await asyncio.to_thread(broker.wait_for_requests, 1)
    started_s = time.monotonic()
    await consumer.stop()
    return time.monotonic() - started_s, task


def test_stop_from_another_task_ends_a_getmany_in_progress_at_once_and_it_returns_nothing(
        scripted):
    # Given a broker that never answers a fetch
    broker = scripted([])

    async def scenario(consumer):
        # When one task awaits getmany with a long timeout and another stops the consumer
        took_s, getmany = await stopped_while_waiting(consumer, broker,
                                                      consumer.getmany(timeout_ms=60_000))
        # Then stop() does not wait for the getmany's timeout, which returns {}
        return took_s, await getmany

    took_s, got = run(broker, scenario)
    assert took_s < AT_ONCE_S and got == {}


def test_stop_from_another_task_ends_a_getone_in_progress_at_once_with_closed_error(scripted):
    # Given a broker that never answers a fetch
    broker = scripted([])

    async def scenario(consumer):
        # When one task awaits getone (a record, however long it takes) and another stops
        # the consumer
        took_s, getone = await stopped_while_waiting(consumer, broker, consumer.getone())
        # Then getone raises ClosedError, and stop() waited for no slice of its polling
        with pytest.raises(ClosedError):
            await getone
        return took_s

    assert run(broker, scenario) < ONE_SLICE_S / 2


def test_stop_from_another_task_ends_an_async_for_in_progress_at_once(scripted):
    # Given a broker that never answers a fetch, and a consumer iterated without a
    # consumer_timeout_ms
    broker = scripted([])

    async def iterate(consumer):
        return [record async for record in consumer]

    async def scenario(consumer):
        # When another task stops the consumer while the iteration awaits a record
        took_s, iteration = await stopped_while_waiting(consumer, broker, iterate(consumer))
        # Then the iteration ends, having yielded nothing, and stop() waited for no slice
        # of its polling
        return took_s, await iteration

    took_s, got = run(broker, scenario)
    assert took_s < ONE_SLICE_S / 2 and got == []


def test_a_paused_partition_is_not_fetched_nor_handed_out_until_resumed(scripted):
    # Given a consumer that has taken 1 of the 2 records of its first fetch
    broker = scripted([fetched(0, [b"a", b"b"], 2), fetched(2, [b"c"], 3)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        assert [r.value for r in (await consumer.getmany(timeout_ms=5_000, max_records=1))[
            TopicPartition("t", 0)]] == [b"a"]
        # When it pauses the partition and asks for more
        consumer.pause(TopicPartition("t", 0))
        assert consumer.paused() == {("t", 0)}
        # Then it gets none, the position stays, and nothing more is fetched
        assert await consumer.getmany(timeout_ms=300) == {}
        assert await consumer.position("t", 0) == 1 and len(broker.requests) == 1
        # And once resumed it reads on from there: the record it had, then a new fetch
        consumer.resume(TopicPartition("t", 0))
        assert [r.value for r in await records_of(consumer, 2)] == [b"b", b"c"]
        assert broker.requests[1][1].offset == 2

    run(broker, scenario)


def test_pause_of_a_partition_not_assigned_is_refused_naming_it_and_before_start_is_closed(
        scripted):
    broker = scripted([])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        with pytest.raises(PartitionNotAssignedError,
                           match=r"^u-0 is not assigned to this consumer; assigned: t-0$"):
            consumer.pause(("t", 0), ("u", 0))
        assert consumer.paused() == set()

    run(broker, scenario)

    async def before_start():
        with pytest.raises(ClosedError, match="not started"):
            AIOConsumer(broker=broker.url).pause(("t", 0))

    asyncio.run(before_start())


def test_subscription_is_the_topics_subscribed_and_partitions_for_topic_knows_theirs_once_applied(
        scripted):
    # Given a broker whose topic t has two partitions, each starting at offset 0
    broker = scripted([partitions_of(2), offsets(0, 0), offsets(0, 0)])

    async def scenario(consumer):
        assert consumer.subscription() == set()
        # When the consumer subscribes to t / Then that is its subscription at once
        consumer.subscribe(["t"])
        assert consumer.subscription() == {"t"}
        # And once applied (by a getmany) it knows t's partitions, and no other topic's
        assert consumer.partitions_for_topic("t") is None
        await consumer.getmany(timeout_ms=0)
        assert consumer.partitions_for_topic("t") == {0, 1}
        assert consumer.partitions_for_topic("u") is None
        # And an assign replaces the subscription
        consumer.assign([("t", 0)])
        assert consumer.subscription() == set()

    run(broker, scenario)
    assert [type(r).__name__ for _, r in broker.requests][:1] == ["MetadataRequest"]
    assert AIOConsumer("t", "u", broker=broker.url).subscription() == {"t", "u"}


def test_beginning_and_end_offsets_and_highwater_answer_as_the_sync_consumers(scripted):
    broker = scripted([offsets(3, 8), offsets(3, 8), fetched(3, [b"d"], 8)])

    async def scenario(consumer):
        consumer.assign([("t", 0)])
        assert await consumer.beginning_offsets([("t", 0)]) == {TopicPartition("t", 0): 3}
        assert await consumer.end_offsets([TopicPartition("t", 0)]) == {TopicPartition("t", 0): 8}
        assert consumer.highwater(("t", 0)) is None
        consumer.seek("t", 0, 3)
        assert [r.value for r in await records_of(consumer, 1)] == [b"d"]
        assert consumer.highwater(TopicPartition("t", 0)) == 8

    run(broker, scenario)
    # And only the beginning asked that a tiered shard has listed object storage (a
    # start from an incomplete remote log would skip the records below it)
    asked = [r.require_listed for _, r in broker.requests if r.kind == "listOffsets"]
    assert asked == [True, False]


def test_a_stopped_aio_consumer_refuses_a_subscribe_and_keeps_its_subscription():
    async def scenario():
        consumer = AIOConsumer("t", broker="tcp://127.0.0.1:1")
        await consumer.stop()
        with pytest.raises(ClosedError, match=r"^consumer is closed: stop\(\) was called"):
            consumer.subscribe(["u"])
        assert consumer.subscription() == {"t"}

    asyncio.run(scenario())


def test_after_a_failed_start_every_call_says_that_start_failed_and_why(scripted):
    # Given a consumer whose start() failed: its topic does not exist
    broker = scripted([unknown_topic])

    async def scenario():
        consumer = AIOConsumer("nosuch", broker=broker.url, request_timeout_ms=5_000,
                               direct_to_shards=False)
        with pytest.raises(UnknownTopicError, match="nosuch"):
            await consumer.start()
        # Then each later call names the failed start and its error, not only "closed"
        failed = (r"^consumer is closed: start\(\) failed \(UnknownTopicError: unknown topic "
                  r"'nosuch'\); an AIOConsumer cannot start again, make a new one$")
        with pytest.raises(ClosedError, match=failed):
            await consumer.getmany(timeout_ms=100)
        with pytest.raises(ClosedError, match=failed):
            consumer.subscribe(["t"])
        with pytest.raises(ClosedError, match=failed):
            await consumer.start()
        await consumer.stop()   # and stop() is still a no-op

    asyncio.run(asyncio.wait_for(scenario(), BOUND_S))


# --- stop() cancelled --------------------------------------------------------------------


class StoppingGroup(GroupBroker):
    """GroupBroker's answers to t's member m-1, with its commits and its leave answered,
    or held (no answer: the request times out) when named in ``held``."""

    def __init__(self, held: frozenset = frozenset()):
        super().__init__()
        self.held = held

    def answer(self, request):
        match request:
            case protocol.CommitOffsetsRequest():
                return None if "commit" in self.held else [protocol.encode_ok(request.request_id)]
            case protocol.GroupHeartbeatRequest(member_epoch=protocol.LEAVE_EPOCH):
                return None if "leave" in self.held else left(request)
        return super().answer(request)


def group_member(broker, **options) -> AIOConsumer:
    return AIOConsumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                       fetch_max_wait_ms=100, direct_to_shards=False,
                       **{"request_timeout_ms": 1_000, **options})


def asked(broker, kind) -> list:
    """The requests of ``kind`` (a predicate) the broker got so far."""
    return [request for _, request in list(broker.requests) if kind(request)]


def is_commit(request) -> bool:
    return type(request) is protocol.CommitOffsetsRequest


def is_leave(request) -> bool:
    return type(request) is protocol.GroupHeartbeatRequest and \
        request.member_epoch == protocol.LEAVE_EPOCH


async def until(predicate):
    """The predicate's first truthy value, polled on the loop (bounded by the caller)."""
    while not (value := predicate()):
        await asyncio.sleep(0.01)
    return value


def other_tasks() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]


def released(consumer: AIOConsumer) -> bool:
    """Whether every socket of the consumer and of its membership is closed."""
    return consumer._conn.closed and consumer._membership._conn.closed


@pytest.mark.parametrize("held, at", [("commit", is_commit), ("leave", is_leave)])
def test_a_stop_cancelled_while_its_commit_or_leave_is_unanswered_is_finished_by_the_next_stop(
        scripted, held, at):
    # Given a group member that read a record, whose broker does not answer its last
    # commit (or its leave) before request_timeout_ms=1000 runs out
    broker = scripted([StoppingGroup(frozenset({held})).answer] * 1_000)

    async def main():
        async with asyncio.timeout(BOUND_S):
            consumer = group_member(broker)
            await consumer.start()
            await records_of(consumer, 1)
            # When a stop() is cancelled while it awaits that answer
            stopping = asyncio.get_running_loop().create_task(consumer.stop())
            await until(lambda: asked(broker, at))
            stopping.cancel()
            await asyncio.wait({stopping})
            # and stop() is awaited again
            await consumer.stop()
            # Then the second stop() returned once the member had left and every task
            # and socket of the consumer had ended
            return stopping.cancelled(), other_tasks(), released(consumer)

    cancelled, tasks, closed = asyncio.run(main())
    assert cancelled and tasks == [] and closed
    assert [leave.member_id for leave in asked(broker, is_leave)] == ["m-1"]


def test_a_stop_cancelled_at_any_point_is_finished_by_the_next_stop_which_leaves_the_group(
        scripted):
    # Given a broker that answers everything at once
    broker = scripted([StoppingGroup().answer] * 5_000)

    async def stopped_after(timeout_s: float):
        # Given a group member that read a record
        consumer = group_member(broker)
        await consumer.start()
        await records_of(consumer, 1)
        # When wait_for(stop(), timeout_s) cancels it wherever it is, and stop() follows
        try:
            await asyncio.wait_for(consumer.stop(), timeout_s)
        except asyncio.TimeoutError:
            pass
        await consumer.stop()
        # Then no task of it is left, its sockets are closed, and it left the group
        return other_tasks(), released(consumer), len(asked(broker, is_leave))

    async def main():
        async with asyncio.timeout(BOUND_S * 2):
            return [await stopped_after(timeout_s)
                    for timeout_s in (0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.03)]

    outcomes = asyncio.run(main())
    assert outcomes == [([], True, leaves) for leaves in range(1, len(outcomes) + 1)]


def test_a_worker_cancelled_twice_inside_async_with_still_leaves_and_leaves_no_task(scripted):
    # Given a worker reading in `async with` a group member whose last commit the broker
    # does not answer before request_timeout_ms=1000 runs out
    script = StoppingGroup(frozenset({"commit"}))
    broker = scripted([script.answer] * 1_000)

    async def main():
        async with asyncio.timeout(BOUND_S):
            consumer = group_member(broker)

            async def worker():
                async with consumer:
                    while True:
                        await consumer.getmany(timeout_ms=200)

            working = asyncio.get_running_loop().create_task(worker())
            await until(lambda: script.fetched > 1)   # a record was handed out
            # When it is cancelled, and cancelled again while __aexit__'s stop() awaits
            # the commit, and nothing stops the consumer after that
            working.cancel()
            await until(lambda: asked(broker, is_commit))
            working.cancel()
            await asyncio.wait({working})
            # Then the stop goes on by itself: the member leaves and every task of the
            # consumer ends
            await until(lambda: not other_tasks())
            return working.cancelled(), released(consumer)

    assert asyncio.run(main()) == (True, True)
    assert [leave.member_id for leave in asked(broker, is_leave)] == ["m-1"]


def test_asyncio_run_ending_while_a_stop_awaits_the_leave_ends_its_tasks_and_closes_its_sockets(
        scripted):
    # Given a group member whose leave the broker does not answer (it would be awaited 5 s)
    broker = scripted([StoppingGroup(frozenset({"leave"})).answer] * 1_000)
    consumer = group_member(broker, request_timeout_ms=10_000)

    async def main():
        await consumer.start()
        await records_of(consumer, 1)
        # When asyncio.run ends (cancelling the tasks left) while a stop() awaits the leave
        asyncio.get_running_loop().create_task(consumer.stop())
        await until(lambda: asked(broker, is_leave))

    started_s = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), BOUND_S))
    # Then it did not wait for the leave, and the heartbeat task ended with its socket
    assert time.monotonic() - started_s < 5
    assert released(consumer) and consumer._membership._task.done()


def test_a_stop_whose_task_is_cancelled_before_it_ran_still_ends_every_task_and_socket(
        scripted):
    # Given a group member that read a record
    broker = scripted([StoppingGroup().answer] * 1_000)

    async def main():
        async with asyncio.timeout(BOUND_S):
            consumer = group_member(broker)
            await consumer.start()
            await records_of(consumer, 1)
            # When the task stop() starts is cancelled before its first step (as
            # asyncio.run ending right after a stop() began cancels it)
            stopping = asyncio.get_running_loop().create_task(consumer.stop())
            await asyncio.sleep(0)   # one turn: stopping has made the task, which waits
            consumer._stop_task.cancel()
            await asyncio.wait({stopping})
            await until(lambda: not other_tasks())
            # Then no task of the consumer is left and its sockets are closed (the
            # member leaves by its session's end: nothing was sent)
            return released(consumer), asked(broker, is_leave)

    assert asyncio.run(main()) == (True, [])
