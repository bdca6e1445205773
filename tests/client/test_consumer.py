"""The consumer against a scripted broker (tests/client/scripted_broker.py), so its
handling of each answer is checked exactly (no Ray, no shards)."""

from __future__ import annotations

import time

import pytest

from plinth import Consumer, limits, protocol
from plinth.client.consumer import OffsetAndTimestamp, TopicPartition
from plinth.errors import (ClosedError, CorruptDataError, InvalidConfigError, InvalidGroupError,
                           PartitionNotAssignedError, RecordDeserializationError,
                           TooManyRequestsError, UnavailableError, UnknownMemberIdError,
                           UnknownTopicError)
from tests.client.scripted_broker import entry


def fetched(base_offset: int, values: list[bytes], high_watermark: int, *more_entries: bytes):
    """A script step: answer the fetch with one log entry holding ``values``, then
    ``more_entries``."""
    payload = entry(base_offset, values) + b"".join(more_entries)
    return lambda view: [protocol.encode_fetch_reply(view.request_id, high_watermark, 0),
                         payload]


def consumer_of(broker) -> Consumer:
    # The script answers fetches in order: none of the direct routes' metadata asks.
    consumer = Consumer(broker=broker.url, fetch_max_wait_ms=100, request_timeout_ms=5_000,
                        direct_to_shards=False)
    consumer.assign([("t", 0)])
    consumer.seek("t", 0, 0)
    return consumer


def poll_until(consumer: Consumer, count: int, timeout_s: float = 10) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records += [r for rs in consumer.poll(200).values() for r in rs]
    return records


def test_transient_fetch_errors_are_retried_after_a_backoff_and_never_raised(scripted):
    # Given a broker whose first answers are "unavailable" and "too many requests"
    broker = scripted([UnavailableError("shard-0 is restarting"),
                       TooManyRequestsError("queue full"),
                       fetched(0, [b"a", b"b"], 2)])
    with consumer_of(broker) as consumer:
        # When the consumer polls / Then it gets the records, without an error
        assert [r.value for r in poll_until(consumer, 2)] == [b"a", b"b"]
    # And it asked again each time, from the same offset, after at least the backoff
    arrivals = [t for t, _ in broker.requests[:3]]
    assert [view.offset for _, view in broker.requests[:3]] == [0, 0, 0]
    backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
    assert all(later - earlier >= backoff_s * 0.9 for earlier, later in zip(arrivals, arrivals[1:]))


def test_a_partition_whose_fetches_fail_transiently_is_among_fetch_errors_until_one_succeeds(
        scripted):
    # Given a broker whose object storage is down for two fetches, then answers
    down = UnavailableError("object storage: connection refused")
    broker = scripted([down, down, fetched(0, [b"a"], 1)])
    with consumer_of(broker) as consumer:
        assert consumer.fetch_errors() == {}
        # When polls end while its fetches are being retried
        deadline = time.monotonic() + 10
        while not consumer.fetch_errors() and time.monotonic() < deadline:
            assert consumer.poll(20) == {}
        # Then the partition is failing, with the error; nothing is raised
        assert {tp: str(error) for tp, error in consumer.fetch_errors().items()} == {
            TopicPartition("t", 0): "object storage: connection refused"}
        # And once a fetch succeeds, no partition is
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
        assert consumer.fetch_errors() == {}


def test_a_non_transient_fetch_error_is_raised_to_the_application(scripted):
    broker = scripted([CorruptDataError("entry at offset 0 fails its CRC")])
    with consumer_of(broker) as consumer:
        with pytest.raises(CorruptDataError, match="fails its CRC"):
            poll_until(consumer, 1)


def test_the_retry_backoff_doubles_while_transient_errors_go_on(scripted):
    # Given a broker that answers "unavailable" five times, then with records
    broker = scripted([UnavailableError("shard-0 is down")] * 5 + [fetched(0, [b"a"], 1)])
    with consumer_of(broker) as consumer:
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
    # Then the gaps between its fetches grow (50, 100, 200, 400, 800 ms, within bounds)
    arrivals = [t for t, _ in broker.requests[:6]]
    gaps_s = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    base_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
    assert all(gap >= base_s * 2 ** i * 0.9 for i, gap in enumerate(gaps_s)), gaps_s
    assert max(gaps_s) < limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000 + 0.5, gaps_s


def test_poll_hands_out_at_most_max_records_in_order_across_the_batches_of_a_fetch(scripted):
    # Given one fetch answered with three batches of 3, 1 and 4 records
    values = [b"%d" % i for i in range(8)]
    broker = scripted([fetched(0, values[:3], 8, entry(3, values[3:4]), entry(4, values[4:]))])
    with consumer_of(broker) as consumer:
        polled = [consumer.poll(5_000, max_records=2)]
        # When polled two records at a time (the first poll brings the fetch)
        polled += [consumer.poll(0, max_records=2) for _ in range(4)]
        # Then each poll gets the next two, across batch boundaries, and the
        # position follows the last record handed out
        assert [[r.value for r in p.get(("t", 0), [])] for p in polled] == [
            values[0:2], values[2:4], values[4:6], values[6:8], []]
        assert consumer.position("t", 0) == 8


def test_a_seek_drops_the_records_buffered_and_reads_from_the_new_offset(scripted):
    # Given a consumer that has taken 1 of the 4 records a fetch brought
    broker = scripted([fetched(0, [b"a", b"b"], 4, entry(2, [b"c", b"d"])),
                       fetched(0, [b"a", b"b"], 4, entry(2, [b"c", b"d"]))])
    with consumer_of(broker) as consumer:
        assert [r.value for r in consumer.poll(5_000, max_records=1)[("t", 0)]] == [b"a"]
        # When it seeks back to the first offset
        consumer.seek("t", 0, 0)
        # Then it fetches again from there and gets all four records in order
        records = poll_until(consumer, 4)
        assert [(r.offset, r.value) for r in records] == [
            (0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
        assert broker.requests[1][1].offset == 0


def test_position_committed_and_seek_take_kafka_pythons_topic_partition_too(scripted):
    # Given a consumer of t-0 (the fixture's) that seeks with kafka-python's form
    broker = scripted([fetched(0, [b"a", b"b"], 2)])
    with consumer_of(broker) as consumer:
        consumer.seek(TopicPartition("t", 0), 0)
        assert [r.value for r in poll_until(consumer, 2)] == [b"a", b"b"]
        # When its position is asked with a TopicPartition / Then it is the same answer
        assert consumer.position(TopicPartition("t", 0)) == consumer.position("t", 0) == 2
        # And committed(TopicPartition) is taken (refused only for want of a group)
        with pytest.raises(ValueError, match=r"committed\(\) needs a consumer group"):
            consumer.committed(TopicPartition("t", 0))
        # And a topic alone is refused naming both forms
        with pytest.raises(TypeError, match=r"position\(\) takes a TopicPartition or a topic "
                                            r"and a partition, got 't' alone"):
            consumer.position("t")


def test_iterating_yields_the_records_in_order_and_moves_the_position_with_each(scripted):
    # Given a fetch of two batches, and polls of at most 3 records
    broker = scripted([fetched(0, [b"a", b"b"], 4, entry(2, [b"c", b"d"]))])
    with consumer_of(broker) as consumer:
        consumer.max_poll_records = 3
        # When iterated record by record
        for offset, value in enumerate([b"a", b"b", b"c", b"d"]):
            record = next(consumer)
            # Then each comes in order, and the position is just past it
            assert (record.offset, record.value) == (offset, value)
            assert consumer.position("t", 0) == offset + 1


def test_a_seek_while_iterating_drops_the_records_not_yet_yielded(scripted):
    # Given a consumer that has yielded the first of four records fetched
    broker = scripted([fetched(0, [b"a", b"b"], 4, entry(2, [b"c", b"d"])),
                       fetched(2, [b"c", b"d"], 4)])
    with consumer_of(broker) as consumer:
        assert next(consumer).value == b"a"
        # When it seeks to offset 3
        consumer.seek("t", 0, 3)
        # Then the next record is the one at offset 3, fetched again
        record = next(consumer)
        assert (record.offset, record.value) == (3, b"d")
        assert broker.requests[1][1].offset == 3


class GroupBroker:
    """Script steps answering a one-partition topic t's group member: its heartbeats
    (t-0 assigned, a heartbeat every 30 s: far beyond the test's 10 s, so a heartbeat
    within it was asked for), its offset reads (nothing committed), its fetches (one
    record at a time) and its commits, each refused as an unknown member."""

    def __init__(self):
        self.fetched = 0

    def answer(self, request):
        rid = request.request_id
        match request:
            case protocol.MetadataRequest():
                return [protocol.encode_topics_reply(rid, [protocol.TopicInfo("t", 1)])]
            case protocol.GroupHeartbeatRequest():
                return [protocol.encode_heartbeat_reply(rid, "m-1", 1, 30_000, {("t", 0)})]
            case protocol.FetchOffsetsRequest():
                return [protocol.encode_committed_reply(rid, {})]
            case protocol.ListOffsetsRequest():
                return [protocol.encode_offsets_reply(rid, protocol.PartitionInfo(0, "shard-0"))]
            case protocol.FetchRequest(offset=offset):
                self.fetched += 1
                return [protocol.encode_fetch_reply(rid, offset + 1, 0), entry(offset, [b"v"])]
            case protocol.CommitOffsetsRequest():
                return [protocol.encode_error(rid, UnknownMemberIdError(
                    "member m-1 is not in group 'g' for this client; rejoin"))]
        raise AssertionError(f"unexpected {request!r}")


def test_a_commit_refused_as_an_unknown_member_makes_the_member_heartbeat_at_once(scripted):
    # Given a group member told to heartbeat every 30 s, auto-committing every 100 ms,
    # whose coordinator moved: it refuses the member's commits as unknown
    script = GroupBroker()
    # Steps for the test's 10 s of polling: each fetch takes one, and on a quiet machine
    # 500 ran out before the first auto-commit (no reply came, and nothing was tested).
    broker = scripted([script.answer] * 50_000)
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        auto_commit_interval_ms=100, fetch_max_wait_ms=100)
    try:
        assert poll_until(consumer, 1)
        heartbeats_s = lambda: [arrived for arrived, request in broker.requests
                                if type(request) is protocol.GroupHeartbeatRequest]
        # When it polls on, committing what it read
        deadline_s = time.monotonic() + 10
        while not any(type(request) is protocol.CommitOffsetsRequest
                      for _, request in broker.requests) and time.monotonic() < deadline_s:
            consumer.poll(100)
        committed_s = next(arrived for arrived, request in broker.requests
                           if type(request) is protocol.CommitOffsetsRequest)
        while len([s for s in heartbeats_s() if s > committed_s]) < 1 and \
                time.monotonic() < deadline_s:
            consumer.poll(100)
        # Then a heartbeat follows the refused commit at once, not at the 30 s interval
        # (the bound leaves room for a loaded machine's stalls: a 1.5 s one failed in CI)
        after = [s for s in heartbeats_s() if s > committed_s]
        assert after and after[0] - committed_s < 5.0
    finally:
        consumer.close()


class RestartedCoordinator(GroupBroker):
    """GroupBroker whose coordinator restarts once member m-1 owns t-0: the heartbeat
    m-1 sends then goes with the old process, never answered, and the new one knows m-1
    no more (membership is soft state): its commits and later heartbeats are refused as
    an unknown member's. A new member's join is answered (m-2, t-0 again), and so is a
    commit without a member (the group has none)."""

    def __init__(self):
        super().__init__()
        self.heartbeats_of_m1 = 0

    def answer(self, request):
        rid = request.request_id
        match request:
            case protocol.GroupHeartbeatRequest(member_id="") if self.heartbeats_of_m1:
                return [protocol.encode_heartbeat_reply(rid, "m-2", 1, 30_000, {("t", 0)})]
            case protocol.GroupHeartbeatRequest(member_id="m-2"):
                return [protocol.encode_heartbeat_reply(rid, "m-2", 1, 30_000, {("t", 0)})]
            case protocol.GroupHeartbeatRequest(member_id="m-1"):
                self.heartbeats_of_m1 += 1
                if self.heartbeats_of_m1 == 1:
                    return None   # lost with the old process
                return [protocol.encode_error(rid, UnknownMemberIdError(
                    "member m-1 is not in group 'g' for this client; rejoin"))]
            case protocol.CommitOffsetsRequest(member_id=""):
                return [protocol.encode_committed_reply(rid, {})]
        return super().answer(request)


def joins_after_first_refused_commit(requests) -> tuple[float | None, list[float]]:
    """(when the first commit as m-1 arrived, or None, and when each join after it
    arrived)."""
    refused_s = next((arrived for arrived, request in requests
                      if type(request) is protocol.CommitOffsetsRequest
                      and request.member_id == "m-1"), None)
    return refused_s, [arrived for arrived, request in requests
                       if refused_s is not None and type(request) is protocol.GroupHeartbeatRequest
                       and request.member_id == "" and arrived > refused_s]


def test_a_commit_refused_as_an_unknown_member_rejoins_without_waiting_for_a_lost_heartbeat(
        scripted):
    # Given a group member with a 10 s session whose coordinator restarted while its
    # heartbeat was on the way (never answered), auto-committing every 100 ms
    broker = scripted([RestartedCoordinator().answer] * 50_000)
    lost = []
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        auto_commit_interval_ms=100, fetch_max_wait_ms=100,
                        session_timeout_ms=10_000, direct_to_shards=False,
                        on_revoke=lost.append)
    try:
        # When it polls on and its first commit is refused as an unknown member's
        deadline_s = time.monotonic() + 8
        while time.monotonic() < deadline_s and \
                not joins_after_first_refused_commit(list(broker.requests))[1]:
            consumer.poll(100)
        # Then it drops t-0 as lost and joins again at once, not after the heartbeat's
        # timeout or the session timeout (10 s)
        refused_s, joins = joins_after_first_refused_commit(broker.requests)
        assert joins and joins[0] - refused_s < 5.0
        assert lost == [{("t", 0)}]
    finally:
        consumer.close()


def offsets_found(found_offset: int, found_timestamp_ms: int):
    """A script step: answer a listOffsets with this record found."""
    return lambda request: [protocol.encode_offsets_reply(request.request_id, protocol.PartitionInfo(
        request.partition, "shard-0", 0, 100, found_offset=found_offset,
        found_timestamp_ms=found_timestamp_ms))]


def test_offsets_for_times_asks_each_partition_at_its_time_and_answers_as_kafka_python(scripted):
    # Given a broker that finds a record in partition 0 and none in partition 1
    broker = scripted([offsets_found(42, 1_700_000_000_005), offsets_found(-1, -1)])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        # When the consumer asks for the first records at or after two times
        found = consumer.offsets_for_times({("t", 0): 1_700_000_000_000, ("t", 1): 5})
    # Then it answers kafka-python's shape: OffsetAndTimestamp or None per partition
    assert found == {("t", 0): OffsetAndTimestamp(42, 1_700_000_000_005), ("t", 1): None}
    assert (found[("t", 0)].offset, found[("t", 0)].timestamp) == (42, 1_700_000_000_005)
    # And each partition was asked at its own time
    assert [(r.kind, r.partition, r.timestamp_ms) for _, r in broker.requests] == [
        ("listOffsets", 0, 1_700_000_000_000), ("listOffsets", 1, 5)]


# A time of the wrong type is a TypeError, as the README says (it was a ValueError)
@pytest.mark.parametrize("timestamp, error", [(-1, ValueError), (-3, ValueError), (1.5, TypeError),
                                              (True, TypeError), ("2026-12-03", TypeError)])
def test_offsets_for_times_refuses_a_time_that_is_not_ms_since_the_epoch_before_asking(
        scripted, timestamp, error):
    broker = scripted([])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        with pytest.raises(error, match=rf"the time for t-1 is {timestamp!r}: it must be"):
            consumer.offsets_for_times({("t", 0): 5, ("t", 1): timestamp})
    assert broker.requests == []


def test_a_commit_without_a_group_is_refused_naming_the_option_it_needs(scripted):
    # Given a consumer of assigned partitions, no group
    consumer = consumer_of(scripted([]))
    try:
        # When it commits, Then it is told that commits need a group, in its own class's words
        with pytest.raises(ValueError, match=r"commit needs a consumer group: "
                                             r"Consumer\(\.\.\., group='name'\)"):
            consumer.commit()
    finally:
        consumer.close()


# --- Options checked in the constructor (Consumer's and AIOConsumer's alike) ----------

BAD_OPTIONS = [
    ({"session_timeout_ms": 400}, ValueError, r"session_timeout_ms=400 is outside 500\.\.300000"),
    ({"session_timeout_ms": 1}, ValueError, r"session_timeout_ms=1 is outside 500\.\.300000"),
    ({"session_timeout_ms": 300_001}, ValueError, r"session_timeout_ms=300001 is outside"),
    ({"session_timeout_ms": "10000"}, TypeError, r"session_timeout_ms must be an int in 500"),
    ({"max_poll_interval_ms": 99}, ValueError, r"max_poll_interval_ms=99 is outside 100\.\."),
    ({"max_poll_interval_ms": 2**31}, ValueError, r"max_poll_interval_ms=2147483648 is outside"),
    ({"max_poll_interval_ms": 1.5e3}, TypeError, r"max_poll_interval_ms must be an int"),
    ({"group_assignor": "roundrobin"}, ValueError,
     r"group_assignor='roundrobin' is not one of \('sticky', 'range'\)"),
    ({"group_assignor": None}, TypeError, r"group_assignor must be a str"),
    ({"group": 5}, TypeError, r"group must be a str, got 5"),
    # a name the coordinator refuses was refused only at the first poll
    ({"group": ""}, InvalidGroupError, r"group name '' must be 1 to 249 bytes of printable ASCII"),
    ({"group": "a b"}, InvalidGroupError, r"group name 'a b' must be 1 to 249 bytes"),
    ({"group": "team/app"}, InvalidGroupError, r"without spaces or '/'"),
    ({"group": ".."}, InvalidGroupError, r"and not '\.' or '\.\.'"),
    ({"group": "caf\u00e9"}, InvalidGroupError, r"printable ASCII"),
    ({"request_timeout_ms": 0}, ValueError, r"request_timeout_ms=0 is outside 1\.\."),
    ({"request_timeout_ms": float("nan")}, ValueError, r"request_timeout_ms=nan is outside"),
    ({"max_poll_records": 0}, ValueError, r"max_poll_records=0 is outside 1\.\.2147483647"),
    ({"max_poll_records": -1}, ValueError, r"max_poll_records=-1 is outside 1\.\."),
    ({"max_poll_records": 2.0}, TypeError, r"max_poll_records must be an int"),
    ({"fetch_max_bytes": "1"}, TypeError, r"fetch_max_bytes must be an int"),
    # a str read from a config file was taken as True ("false" too)
    ({"enable_auto_commit": "false"}, TypeError,
     r"enable_auto_commit must be True or False, got 'false' \(str\)"),
    ({"enable_auto_commit": 0}, TypeError, r"enable_auto_commit must be True or False, got 0"),
    ({"direct_to_shards": "no"}, TypeError, r"direct_to_shards must be True or False"),
    # -1 ended iteration at once; "1000" failed as a bare TypeError at the first next()
    ({"consumer_timeout_ms": -1}, ValueError,
     r"consumer_timeout_ms=-1 is outside 0\.\.2147483647 ms, or inf \(never"),
    ({"consumer_timeout_ms": "1000"}, TypeError,
     r"consumer_timeout_ms must be a number of ms in 0\.\.2147483647, or inf"),
    ({"consumer_timeout_ms": float("nan")}, ValueError, r"consumer_timeout_ms=nan is outside"),
    ({"consumer_timeout_ms": float("-inf")}, ValueError, r"consumer_timeout_ms=-inf is outside"),
    ({"auto_commit_interval_ms": -5}, ValueError,
     r"auto_commit_interval_ms=-5 is outside 0\.\.2147483647 ms"),
    ({"auto_commit_interval_ms": "5"}, TypeError,
     r"auto_commit_interval_ms must be a number of ms in 0\.\.2147483647, got '5'"),
    # one option, two names: refused even when they agree, as broker and bootstrap_servers are
    ({"group_id": "g"}, ValueError,
     r"group='g' and group_id='g' both name the consumer group; give one"),
    # not callable: they failed only at the first record or the first rebalance
    ({"value_deserializer": 5}, TypeError,
     r"value_deserializer must be a callable turning a value's bytes into a value, or None, "
     r"got 5 \(int\)"),
    ({"key_deserializer": "json"}, TypeError, r"key_deserializer must be a callable .*'json'"),
    ({"on_assign": 5}, TypeError,
     r"on_assign must be a callable taking the set of partitions assigned, or None, got 5"),
    ({"on_revoke": "log"}, TypeError, r"on_revoke must be a callable taking the set of partitions"),
]


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS)
def test_an_option_out_of_range_is_refused_in_the_constructor_naming_it_and_its_range(
        options, error, message):
    # A group's options are refused whether or not the consumer is in a group
    with pytest.raises(error, match=message):
        Consumer("t", broker="tcp://127.0.0.1:1", **{"group": "g", **options})


def test_consumer_timeout_ms_takes_inf_for_never_and_a_finite_number_of_ms():
    for consumer_timeout_ms in (float("inf"), 0, 1000, 2.5):
        Consumer(broker="tcp://127.0.0.1:1", consumer_timeout_ms=consumer_timeout_ms).close()


def test_the_assignors_the_client_accepts_are_the_ones_the_coordinator_runs():
    from plinth.shards import assignors
    assert protocol.GROUP_ASSIGNORS == assignors.ASSIGNORS


class RefusingCoordinator(GroupBroker):
    """Refuses every heartbeat as the coordinator refuses an assignor it does not run."""

    def answer(self, request):
        if type(request) is protocol.GroupHeartbeatRequest:
            return [protocol.encode_error(request.request_id, InvalidConfigError(
                "assignor 'range2' for group 'g' is not one of sticky, range"))]
        return super().answer(request)


def test_a_heartbeat_the_coordinator_refuses_for_good_is_raised_by_poll_not_retried(scripted):
    # Given a group member whose coordinator refuses its heartbeats for good
    broker = scripted([RefusingCoordinator().answer] * 1_000)
    consumer = Consumer("t", broker=broker.url, group="g", direct_to_shards=False)
    try:
        # When it polls / Then the refusal is raised within the bound, not {} for ever
        deadline_s = time.monotonic() + 10
        with pytest.raises(InvalidConfigError, match="range2"):
            while time.monotonic() < deadline_s:
                consumer.poll(100)
        heartbeats = [r for _, r in broker.requests if type(r) is protocol.GroupHeartbeatRequest]
        assert len(heartbeats) == 1
    finally:
        consumer.close()


@pytest.mark.parametrize("max_records, error", [(0, ValueError), (-1, ValueError),
                                                (1.5, TypeError)])
def test_poll_refuses_a_max_records_that_could_never_hand_out_a_record(scripted, max_records,
                                                                       error):
    broker = scripted([fetched(0, [b"a"], 1)])
    consumer = consumer_of(broker)
    try:
        with pytest.raises(error, match=rf"max_records"):
            consumer.poll(100, max_records=max_records)
        # And the records are still there for a poll that may take them
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
    finally:
        consumer.close()


BAD_POLL_TIMEOUTS = [
    ("100", TypeError, r"timeout_ms must be a number of ms in 0\.\.2147483647, got '100'"),
    (None, TypeError, r"timeout_ms must be a number of ms in 0\.\.2147483647, got None"),
    (-1, ValueError, r"timeout_ms=-1 is outside 0\.\.2147483647 ms"),
    (float("nan"), ValueError, r"timeout_ms=nan is outside 0\.\.2147483647 ms"),
    (True, TypeError, r"timeout_ms must be a number of ms"),
]


@pytest.mark.parametrize("timeout_ms, error, message", BAD_POLL_TIMEOUTS)
def test_poll_refuses_a_timeout_that_is_not_a_number_of_ms_0_or_more_naming_it(
        scripted, timeout_ms, error, message):
    # Given a consumer with a record to read
    broker = scripted([fetched(0, [b"a"], 1)])
    consumer = consumer_of(broker)
    try:
        # When it polls with a timeout that is no number of ms / Then that is refused
        with pytest.raises(error, match=message):
            consumer.poll(timeout_ms)
        # And nothing was fetched: the record is there for the next poll
        assert broker.requests == []
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
    finally:
        consumer.close()


def test_a_commit_async_with_nothing_to_commit_calls_its_callback_in_the_next_poll(scripted):
    # Given a group member that has not polled yet, so has handed out nothing
    broker = scripted([GroupBroker().answer] * 1_000)
    consumer = Consumer("t", broker=broker.url, group="g", enable_auto_commit=False,
                        direct_to_shards=False)
    try:
        outcomes = []
        # When it commits asynchronously
        consumer.commit_async(callback=lambda offsets, error: outcomes.append((offsets, error)))
        # Then the callback waits for a poll (kafka-python's order), and runs in the first
        assert outcomes == []
        consumer.poll(0)
        assert outcomes == [({}, None)]
        # And runs once, with nothing sent: there was nothing to commit
        consumer.poll(0)
        assert outcomes == [({}, None)]
        assert not any(type(r) is protocol.CommitOffsetsRequest for _, r in broker.requests)
    finally:
        consumer.close()


# --- Arguments checked before anything is sent ------------------------------------------

BAD_COMMITS = [
    ({("t", 0): "1"}, TypeError, r"commit: the offset of \('t', 0\) must be an int in 0\.\."),
    ({"t": 1}, TypeError, r"commit: 't' is not a \(topic, partition\) pair"),
    ({("t", 0): -5}, ValueError, r"commit: the offset of \('t', 0\)=-5 is outside 0\.\."),
    ({("t", 0): 2**64}, ValueError, r"the offset of \('t', 0\)=18446744073709551616 is outside"),
    ({("t", True): 1}, TypeError, r"commit: the partition of \('t', True\) must be an int"),
]


@pytest.mark.parametrize("offsets, error, message", BAD_COMMITS)
def test_a_commit_of_an_offset_that_is_not_an_int_0_or_more_is_refused_before_it_is_sent(
        scripted, offsets, error, message):
    # Given a group member
    broker = scripted([GroupBroker().answer] * 1_000)
    consumer = Consumer("t", broker=broker.url, group="g", direct_to_shards=False)
    try:
        # When it commits a bad offset / Then it is refused, and no commit was sent
        with pytest.raises(error, match=message):
            consumer.commit(offsets)
        assert not any(type(r) is protocol.CommitOffsetsRequest for _, r in broker.requests)
    finally:
        consumer.close()


@pytest.mark.parametrize("offset, error", [("3", TypeError), (3.0, TypeError), (-1, ValueError),
                                           (2**63, ValueError), (True, TypeError)])
def test_a_seek_to_an_offset_that_is_not_an_int_0_or_more_is_refused_and_changes_nothing(
        scripted, offset, error):
    consumer = consumer_of(scripted([fetched(0, [b"a"], 1)]))
    try:
        with pytest.raises(error, match="offset"):
            consumer.seek("t", 0, offset)
        # And polling goes on from where it was (no struct.error from every poll after it)
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
    finally:
        consumer.close()


def test_offsets_for_times_refuses_a_time_past_an_int64_before_asking(scripted):
    broker = scripted([])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        with pytest.raises(ValueError, match=r"the time for t-0 is 9223372036854775808: it must "
                                             r"be an int of ms since the epoch, 0\.\."):
            consumer.offsets_for_times({("t", 0): 2**63})
    assert broker.requests == []


@pytest.mark.parametrize("call, message", [
    (lambda c: c.subscribe("t"), r"subscribe takes a list of topic names, not a str: \['t'\]"),
    (lambda c: c.subscribe(["t", 5]), r"each topic name in subscribe must be a str, got 5"),
    (lambda c: c.subscribe([], pattern="t.*"),
     r"subscribe\(pattern='t\.\*'\): topic patterns are not supported"),
    # kafka-python's form, without topics, was told "missing 'topics'"
    (lambda c: c.subscribe(pattern="t.*"),
     r"subscribe\(pattern='t\.\*'\): topic patterns are not supported"),
])
def test_subscribe_takes_a_list_of_topic_names_not_a_str_nor_a_pattern(scripted, call, message):
    broker = scripted([])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        with pytest.raises(TypeError, match=message):
            call(consumer)
    assert broker.requests == []   # no topic named 't'... asked for


def test_subscribe_to_no_topic_is_refused_pointing_to_unsubscribe(scripted):
    broker = scripted([])
    with Consumer(broker=broker.url, group="g", request_timeout_ms=5_000,
                  direct_to_shards=False) as consumer:
        with pytest.raises(ValueError, match=r"subscribe\(\[\]\) names no topic: give at "
                                             r"least one, or call unsubscribe\(\)"):
            consumer.subscribe([])
        assert consumer.subscription() is None
    assert broker.requests == []   # no member joined


# Calls taking (topic, partition)s, each refusing what is not one before anything changes
# or is asked: assign("t1") raised TypeError from inside TopicPartition, a list given to
# offsets_for_times an AttributeError, a str partition "t1-'0' is not assigned".
BAD_PARTITION_CALLS = [
    (lambda c: c.assign("t"), r"assign takes a list of \(topic, partition\) pairs, not 't': "
                              r"\['t'\], or every partition of the topic through subscribe"),
    (lambda c: c.assign(("t", 0)), r"assign takes a list of \(topic, partition\) pairs, not "
                                   r"\('t', 0\): \[\('t', 0\)\]"),
    (lambda c: c.assign([("t", "0")]), r"assign: the partition of \('t', '0'\) must be an int"),
    (lambda c: c.assign([["t", 0]]), r"assign: \['t', 0\] is not a \(topic, partition\) pair"),
    (lambda c: c.assign(5), r"assign takes a list of \(topic, partition\) pairs, got 5 \(int\)"),
    (lambda c: c.offsets_for_times([("t", 0)]),
     r"offsets_for_times takes \{\(topic, partition\): ms since the epoch\}, got "
     r"\[\('t', 0\)\] \(list\)"),
    (lambda c: c.seek("t", "0", 5), r"seek: the partition of \('t', '0'\) must be an int"),
    (lambda c: c.seek(5, 0, 5), r"seek: the topic of \(5, 0\) must be a str"),
    (lambda c: c.seek_to_beginning("t"), r"seek_to_beginning: 't' is not a \(topic, partition\)"),
    (lambda c: c.seek_to_end(("t", 0), "t"), r"seek_to_end: 't' is not a \(topic, partition\)"),
    (lambda c: c.position("t", None), r"position: the partition of \('t', None\) must be an int"),
    (lambda c: c.committed(("t", 0), 0), r"committed: the topic of \(\('t', 0\), 0\) must be"),
    # without the offset: Python's own message said the partition was missing
    (lambda c: c.seek(TopicPartition("t", 0)),
     r"seek\(TopicPartition\(topic='t', partition=0\)\) gives no offset: seek\(topic, "
     r"partition, offset\) or seek\(TopicPartition\(topic, partition\), offset\)"),
    (lambda c: c.seek("t", 0), r"seek\('t', 0\) gives no offset"),
]


def test_the_package_exports_the_topic_partition_the_consumers_take():
    # kafka-python users import theirs from the package; it was only in plinth.aio
    from plinth import TopicPartition as FromThePackage
    from plinth.aio import TopicPartition as FromAio
    assert FromThePackage is FromAio is TopicPartition


@pytest.mark.parametrize("call, message", BAD_PARTITION_CALLS)
def test_a_call_given_something_that_is_not_a_topic_partition_is_refused_naming_it(
        scripted, call, message):
    # Given a consumer reading t-0 from offset 0
    broker = scripted([fetched(0, [b"a"], 1)])
    consumer = consumer_of(broker)
    try:
        # When a call is given something that is not a (topic, partition) / Then TypeError
        with pytest.raises(TypeError, match=message):
            call(consumer)
        # And nothing changed: the assignment and position are the same, nothing was asked
        assert consumer.assignment() == {("t", 0)} and consumer.position("t", 0) == 0
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
        assert [type(r).__name__ for _, r in broker.requests] == ["FetchRequest"]
    finally:
        consumer.close()


def test_a_record_a_deserializer_raises_on_is_named_after_the_records_before_it_until_a_seek(
        scripted):
    # Given a partition whose record at offset 1 the value deserializer cannot take
    broker = scripted([fetched(0, [b"0", b"x", b"2"], 3), fetched(2, [b"2"], 3)])
    consumer = Consumer(broker=broker.url, fetch_max_wait_ms=100, request_timeout_ms=5_000,
                        direct_to_shards=False, value_deserializer=int)
    try:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        # When it polls / Then the record before the bad one is handed out first
        assert [r.value for r in poll_until(consumer, 1)] == [0]
        # And then every poll raises the error naming the record, its cause chained,
        # the position left at it
        for _ in range(2):
            with pytest.raises(RecordDeserializationError,
                               match=r"the value_deserializer raised on the record at offset 1 "
                                     r"of t-0: ValueError: .*; to skip the record, seek to "
                                     r"offset 2") as raised:
                consumer.poll(100)
            error = raised.value
            assert (error.topic, error.partition, error.offset) == ("t", 0, 1)
            assert isinstance(error.__cause__, ValueError)
            assert consumer.position("t", 0) == 1
        # And a seek past it reads on from there
        consumer.seek("t", 0, error.offset + 1)
        assert [r.value for r in poll_until(consumer, 1)] == [2]
        assert [r.offset for _, r in broker.requests] == [0, 2]
    finally:
        consumer.close()


def test_a_paused_partition_is_not_fetched_until_resumed_then_read_on_from_its_position(
        scripted):
    # Given a consumer that has read both records of its first fetch
    broker = scripted([fetched(0, [b"a", b"b"], 2), fetched(2, [b"c"], 3)])
    with consumer_of(broker) as consumer:
        assert [r.value for r in poll_until(consumer, 2)] == [b"a", b"b"]
        # When it pauses the partition, given as a TopicPartition, and polls
        consumer.pause(TopicPartition("t", 0))
        assert consumer.paused() == {TopicPartition("t", 0)}
        assert consumer.poll(300) == {}
        # Then nothing more was fetched, and the position did not move
        assert len(broker.requests) == 1 and consumer.position("t", 0) == 2
        # And once resumed (a plain pair works too) it reads on from there
        consumer.resume(("t", 0))
        assert consumer.paused() == set()
        assert [r.value for r in poll_until(consumer, 1)] == [b"c"]
        assert broker.requests[1][1].offset == 2


def test_records_fetched_before_a_pause_are_not_handed_out_until_the_resume(scripted):
    # Given a consumer that has taken 1 of the 3 records a fetch brought
    broker = scripted([fetched(0, [b"a", b"b", b"c"], 3)])
    with consumer_of(broker) as consumer:
        assert [r.value for r in consumer.poll(5_000, max_records=1)[("t", 0)]] == [b"a"]
        # When it pauses the partition / Then a poll hands out none of the other two
        consumer.pause(("t", 0))
        assert consumer.poll(300) == {}
        assert consumer.position("t", 0) == 1
        # And after the resume they come, in order
        consumer.resume(("t", 0))
        assert [r.value for r in poll_until(consumer, 2)] == [b"b", b"c"]


def test_a_pause_while_iterating_drops_the_records_not_yet_yielded_and_reads_them_again(
        scripted):
    # Given a consumer iterating 2 records a poll, which has yielded the first of them
    broker = scripted([fetched(0, [b"a", b"b", b"c"], 3), fetched(1, [b"b", b"c"], 3)])
    with consumer_of(broker) as consumer:
        consumer.max_poll_records = 2
        assert next(consumer).value == b"a"
        # When it pauses and resumes the partition
        consumer.pause(("t", 0))
        consumer.resume(("t", 0))
        # Then the next records are the ones not yielded, fetched again from the position
        assert [next(consumer).value for _ in range(2)] == [b"b", b"c"]
        assert broker.requests[1][1].offset == 1


def test_pausing_a_partition_not_assigned_is_refused_naming_it_and_pauses_none(scripted):
    broker = scripted([])
    with consumer_of(broker) as consumer:
        # When one of the partitions to pause is not assigned
        with pytest.raises(PartitionNotAssignedError,
                           match=r"^t-1 is not assigned to this consumer; assigned: t-0$"):
            consumer.pause(("t", 0), ("t", 1))
        # Then none is paused; resuming it is refused alike, and it is a ValueError
        assert consumer.paused() == set()
        with pytest.raises(ValueError, match="t-1 is not assigned"):
            consumer.resume(("t", 1))
        with pytest.raises(TypeError, match=r"pause: 't' is not a \(topic, partition\)"):
            consumer.pause("t")


def partitions_of(count: int):
    """A script step: the answer to a metadata request for one topic of ``count`` partitions."""
    return lambda request: [protocol.encode_topics_reply(
        request.request_id, [protocol.TopicInfo(request.topics[0], count)])]


def unknown_topic(request):
    """A script step: the answer to a metadata request for a topic the broker lacks."""
    assert type(request).__name__ == "MetadataRequest", request
    return [protocol.encode_error(request.request_id, UnknownTopicError(
        f"unknown topic {request.topics[0]!r}"))]


def test_subscription_is_the_set_of_topics_subscribed_and_none_without_one_or_after_assign(
        scripted):
    broker = scripted([partitions_of(2), partitions_of(1)])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        # Given a consumer that has not subscribed / Then it has no subscription
        assert consumer.subscription() is None
        # When it subscribes to two topics / Then they are its subscription
        consumer.subscribe(["t", "u"])
        assert consumer.subscription() == {"t", "u"}
        assert consumer.assignment() == {("t", 0), ("t", 1), ("u", 0)}
        # And an assign replaces it, as kafka-python's does
        consumer.assign([("t", 0)])
        assert consumer.subscription() is None


def test_partitions_for_topic_asks_the_broker_and_answers_none_for_a_topic_it_lacks(scripted):
    broker = scripted([partitions_of(3), unknown_topic])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        assert consumer.partitions_for_topic("t") == {0, 1, 2}
        assert consumer.partitions_for_topic("nosuch") is None
        with pytest.raises(TypeError, match="topic must be a str"):
            consumer.partitions_for_topic(("t", 0))
    assert [r.topics for _, r in broker.requests] == [("t",), ("nosuch",)]


def offsets_of(start: int, end: int):
    """A script step: the answer to a listOffsets: the partition's start and end."""
    return lambda request: [protocol.encode_offsets_reply(
        request.request_id, protocol.PartitionInfo(request.partition, "shard-0", start, end))]


def test_beginning_and_end_offsets_ask_each_partition_and_answer_by_topic_partition(scripted):
    broker = scripted([offsets_of(2, 9), offsets_of(0, 4), offsets_of(2, 9)])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        # When asked for two partitions, one not a TopicPartition but a pair
        # Then each is answered under its TopicPartition: the start, or the end
        assert consumer.beginning_offsets([TopicPartition("t", 0), ("t", 1)]) == {
            TopicPartition("t", 0): 2, TopicPartition("t", 1): 0}
        assert consumer.end_offsets({("t", 0)}) == {TopicPartition("t", 0): 9}
        # And a pair alone, or a str, is refused before anything is asked
        with pytest.raises(TypeError, match=r"end_offsets takes a list of \(topic, partition\) "
                                            r"pairs, got \('t', 0\) \(tuple\)"):
            consumer.end_offsets(("t", 0))
        with pytest.raises(TypeError, match=r"beginning_offsets: 't' is not a \(topic, "):
            consumer.beginning_offsets([("t", 0), "t"])
    assert [(type(r).__name__, r.partition) for _, r in broker.requests] == [
        ("ListOffsetsRequest", 0), ("ListOffsetsRequest", 1), ("ListOffsetsRequest", 0)]


def test_highwater_is_the_high_watermark_the_last_fetch_reply_brought(scripted):
    # Given a partition whose fetch reply says its high watermark is 7
    broker = scripted([fetched(0, [b"a", b"b"], 7)])
    with consumer_of(broker) as consumer:
        # Then before the reply it is not known, and after it it is
        assert consumer.highwater(TopicPartition("t", 0)) is None
        assert len(poll_until(consumer, 2)) == 2
        assert consumer.highwater(("t", 0)) == 7
        # And a partition not assigned is refused
        with pytest.raises(PartitionNotAssignedError, match="t-1 is not assigned"):
            consumer.highwater(("t", 1))


class AsyncListener:
    async def on_partitions_revoked(self, revoked):
        pass

    async def on_partitions_assigned(self, assigned):
        pass


@pytest.mark.parametrize("listener, message", [
    (print, r"listener must be a ConsumerRebalanceListener .*\(builtin_function_or_method\), "
            r"which has no callable on_partitions_revoked nor on_partitions_assigned"),
    (AsyncListener(), r"listener\.on_partitions_revoked is a coroutine function: the sync "
                      r"Consumer would never run it; .* or use AIOConsumer, which awaits it"),
])
def test_subscribe_refuses_what_the_sync_consumer_cannot_call_as_a_listener_and_asks_nothing(
        scripted, listener, message):
    # Given a group consumer that has not subscribed yet (kafka-python's way)
    broker = scripted([])
    with Consumer(broker=broker.url, group="g", request_timeout_ms=5_000,
                  direct_to_shards=False) as consumer:
        # When it subscribes with a listener it could not call / Then TypeError names it
        with pytest.raises(TypeError, match=message):
            consumer.subscribe(["t"], listener=listener)
        # And nothing was asked, nor subscribed: a commit says the subscription is missing
        assert consumer.subscription() is None and consumer.poll(0) == {}
        with pytest.raises(ValueError, match=r"^commit needs a subscription: the consumer in "
                                             r"group 'g' has not subscribed to any topic$"):
            consumer.commit()
    assert broker.requests == []


def test_unsubscribe_without_a_group_drops_the_subscription_and_every_partition(scripted):
    broker = scripted([partitions_of(2)])
    with Consumer(broker=broker.url, request_timeout_ms=5_000, direct_to_shards=False) as consumer:
        # Given a consumer of both partitions of t
        consumer.subscribe(["t"])
        assert consumer.assignment() == {("t", 0), ("t", 1)}
        # When it unsubscribes / Then it reads nothing, and has no subscription
        consumer.unsubscribe()
        assert (consumer.assignment(), consumer.subscription()) == (set(), None)
        assert consumer.poll(100) == {}
    assert [type(r).__name__ for _, r in broker.requests] == ["MetadataRequest"]


def test_lost_partitions_are_committed_only_where_ahead_of_the_groups_commits():
    # Given a consumer that handed out t-0..t-2 up to offset 20 each (its membership
    # then lost: another member may have read further, committed, and left)
    consumer = Consumer(broker="tcp://127.0.0.1:1")
    try:
        lost = {TopicPartition("t", p) for p in range(3)}
        consumer.assign(sorted(lost))
        for tp in lost:
            consumer.seek(*tp, 20)
        # When the group's commits are 98 for t-0, 10 for t-1, none for t-2
        committed = {TopicPartition("t", 0): 98, TopicPartition("t", 1): 10}
        # Then only the positions ahead of them are worth committing: never one behind
        assert consumer._lost_positions(lost, committed) == {("t", 1): 20, ("t", 2): 20}
    finally:
        consumer.close()


@pytest.mark.parametrize("call", [
    lambda c: c.subscribe(["t"]), lambda c: c.unsubscribe(), lambda c: c.topics(),
    lambda c: c.partitions_for_topic("t"), lambda c: c.assign([("t", 0)]),
    lambda c: c.seek("t", 0, 1), lambda c: c.seek_to_beginning(), lambda c: c.seek_to_end(),
    lambda c: c.pause(("t", 0)), lambda c: c.resume(("t", 0)), lambda c: c.paused(),
    lambda c: c.position("t", 0), lambda c: c.highwater(("t", 0)),
    lambda c: c.beginning_offsets([("t", 0)]), lambda c: c.end_offsets([("t", 0)]),
    lambda c: c.offsets_for_times({("t", 0): 0}), lambda c: c.commit(),
    lambda c: c.commit_async(), lambda c: c.committed("t", 0), lambda c: c.poll()])
def test_a_closed_consumer_refuses_every_call_but_close_saying_it_is_closed(call):
    # Given a consumer reading t-0, closed
    consumer = Consumer(broker="tcp://127.0.0.1:1", group="g")
    consumer._fetcher.assign([("t", 0)])
    consumer.close()
    # When it is called / Then ClosedError says why, whatever the call
    with pytest.raises(ClosedError, match="^consumer is closed$"):
        call(consumer)
    consumer.close()   # (close again is fine)


# --- A deleted topic ---------------------------------------------------------------------

class DeletingBroker(GroupBroker):
    """GroupBroker whose topic t is deleted after its first record: the next fetch of t-0
    is answered as the shard answers a fetch parked at the deletion, the ones after as
    the router answers; the coordinator, which knows it too, assigns nothing from the
    next heartbeat on. Commits are taken."""

    def __init__(self):
        super().__init__()
        self.deleted_s: float | None = None

    def answer(self, request):
        rid = request.request_id
        match request:
            case protocol.FetchRequest() if self.fetched:
                first = self.deleted_s is None
                self.deleted_s = self.deleted_s or time.monotonic()
                return [protocol.encode_error(rid, UnknownTopicError(
                    "topic 't' was deleted" if first else "unknown topic 't'"))]
            case protocol.GroupHeartbeatRequest() if self.deleted_s is not None:
                return [protocol.encode_heartbeat_reply(rid, "m-1", 1, 30_000, set())]
            case protocol.CommitOffsetsRequest():
                return [protocol.encode_ok(rid)]
        return super().answer(request)


def test_a_group_member_whose_topic_is_deleted_drops_its_partitions_without_raising(scripted):
    # Given a group member of t (a heartbeat every 30 s) that has read t-0's first record
    script = DeletingBroker()
    broker = scripted([script.answer] * 50_000)
    revoked = []
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        fetch_max_wait_ms=100, direct_to_shards=False, on_revoke=revoked.append)
    try:
        assert [r.value for r in poll_until(consumer, 1)] == [b"v"]
        # When t is deleted, and the member polls on / Then no poll raises
        deadline_s = time.monotonic() + 10
        while consumer.assignment() and time.monotonic() < deadline_s:
            consumer.poll(100)
        # And its partition went with the coordinator's next answer, asked for at once
        # (not at the 30 s interval; the bound leaves room for a loaded machine's stalls)
        assert consumer.assignment() == set() and revoked == [{("t", 0)}]
        heartbeats_after = [arrived for arrived, request in broker.requests
                            if type(request) is protocol.GroupHeartbeatRequest
                            and arrived > script.deleted_s]
        assert heartbeats_after and heartbeats_after[0] - script.deleted_s < 5.0
        # And the revocation committed nothing of the deleted topic (the coordinator
        # refuses an offset of a topic it no longer has, and the whole commit with it)
        assert not any(type(request) is protocol.CommitOffsetsRequest and request.offsets
                       for arrived, request in broker.requests if arrived > script.deleted_s)
    finally:
        consumer.close()


def test_an_assigned_partition_of_a_deleted_topic_stays_assigned_and_failing_not_raised(
        scripted):
    # Given a consumer of t-0 whose fetch finds t deleted, then unknown
    broker = scripted([UnknownTopicError("topic 't' was deleted"),
                       UnknownTopicError("unknown topic 't'")])
    with consumer_of(broker) as consumer:
        # When it polls past the retry (CLIENT_RETRY_BACKOFF_MAX_MS) / Then none raises
        deadline_s = time.monotonic() + 10
        while len(broker.requests) < 2 and time.monotonic() < deadline_s:
            assert consumer.poll(100) == {}
        # And t-0 is still assigned, at its position, failing with the topic's error, as
        # kafka-python keeps an assigned partition of a topic that is gone
        assert consumer.assignment() == {("t", 0)} and consumer.position("t", 0) == 0
        assert {tp: str(e) for tp, e in consumer.fetch_errors().items()} == {
            ("t", 0): "topic 't' was deleted"}
