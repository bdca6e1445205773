"""client/fetcher.py against the scripted broker (tests/client/scripted_broker.py): the
fetches it sends, and what it makes of each kind of reply. The consumer around it is
played by this test: it reads the Connection and hands the replies over, and its
reset (auto_offset_reset) is a seek to a fixed offset."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from plinth import limits, protocol
from plinth.client.connection import Connection
from plinth.client import fetcher as fetcher_module
from plinth.client.fetcher import Fetcher, Overdue, TopicPartition
from plinth.errors import (CorruptDataError, OffsetOutOfRangeError, TooManyRequestsError,
                           UnavailableError, UnknownTopicError)
from tests.client.scripted_broker import WAIT_S, Replies, entry
from tests.support import ManualClock

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


def fetch_reply(request_id: int, payload: bytes = b"", high_watermark: int = 0) -> list[bytes]:
    return [protocol.encode_fetch_reply(request_id, high_watermark, 0), payload]


def answer_with(*entries: bytes):
    """A script step: answer the fetch with these log entries."""
    return lambda request: fetch_reply(request.request_id, b"".join(entries))


def no_answer(request):
    return None


def fetches(broker) -> list[protocol.FetchRequest]:
    return [request for _, request in broker.requests if request.kind == "fetch"]


class Rig:
    """A Fetcher on a Connection to ``broker``; ``resets`` records the consumer's resets."""

    def __init__(self, broker, reset_offset: int = 0, **options):
        self.conn = Connection(broker.url)
        self.broker = broker
        self.resets: list[TopicPartition] = []
        options = {"fetch_max_bytes": 1024, "fetch_max_wait_ms": 100,
                   "request_timeout_ms": 5_000, "reset_out_of_range": True, **options}
        self.fetcher = Fetcher(self.conn, reset_position=self._reset, **options)
        self.reset_offset = reset_offset

    def _reset(self, tp: TopicPartition) -> None:
        self.resets.append(tp)
        self.fetcher.seek(tp, self.reset_offset)

    def pump(self, condition) -> None:
        """Send fetches and hand replies over, as poll() does, until ``condition()``."""
        deadline = time.monotonic() + WAIT_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {WAIT_S} s")
            self.fetcher.send_fetches()
            got = self.conn.recv(20)
            if got is not None:
                self.fetcher.on_reply(*got)

    def take_values(self, count: int, max_records: int = 1000) -> list[tuple[int, bytes]]:
        """(offset, value) of the next ``count`` records handed out."""
        taken: list = []

        def enough():
            taken.extend(r for records in self.fetcher.take(max_records).values() for r in records)
            return len(taken) >= count
        self.pump(enough)
        return [(record.offset, record.value) for record in taken]

    def sent_nothing_more(self, sent: int) -> bool:
        """Whether the broker got exactly ``sent`` fetches before a marker sent now: the
        connection is first in, first out, so a fetch sent earlier arrives first."""
        self.conn.send(protocol.encode_list_offsets(0, "marker", 0))
        return self.broker.wait_for_requests(sent + 1)[sent].kind == "listOffsets"

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def rig_of(scripted):
    """``rig_of(script, reset_offset=0, **fetcher options)``: a Rig on a scripted broker."""
    rigs = []

    def make(script, **options) -> Rig:
        rigs.append(Rig(scripted(script), **options))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_each_partition_has_at_most_one_fetch_in_flight(rig_of):
    # Given two partitions whose fetches are not answered
    rig = rig_of([])
    rig.fetcher.assign([T0, T1])
    rig.fetcher.seek(T0, 0)
    rig.fetcher.seek(T1, 7)
    # When fetches are sent three times over
    for _ in range(3):
        rig.fetcher.send_fetches()
    # Then each partition was asked once, from its position
    assert rig.sent_nothing_more(2)
    assert sorted((r.partition, r.offset) for r in fetches(rig.broker)) == [
        (0, 0), (1, 7)]


def test_many_partitions_share_the_fetch_bytes_a_connection_may_have_in_flight(rig_of):
    # Given a consumer of more partitions than the router lets one connection's fetches
    # ask bytes for (at the default fetch size), none of them answered
    count = 2 * limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_COUNTED_MIN
    rig = rig_of([], fetch_max_bytes=limits.FETCH_BYTES_DEFAULT)
    partitions = [TopicPartition("t", p) for p in range(count)]
    rig.fetcher.assign(partitions)
    for tp in partitions:
        rig.fetcher.seek(tp, 0)
    # When it sends its fetches, twice over
    rig.fetcher.send_fetches()
    rig.fetcher.send_fetches()
    # Then they ask for the least a fetch counts, and no more of them than fit the limit
    in_flight = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_COUNTED_MIN
    assert rig.sent_nothing_more(in_flight)
    assert {r.bytes_max for r in fetches(rig.broker)} == {limits.FETCH_BYTES_COUNTED_MIN}


def test_a_consumer_of_more_partitions_than_fetches_in_flight_fetches_every_one_in_turn(rig_of):
    # Given a consumer of twice as many partitions as it may have fetches in flight, at
    # the log end of each: every fetch is answered with no records
    in_flight = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_COUNTED_MIN
    count = 2 * in_flight
    rig = rig_of([lambda request: fetch_reply(request.request_id)] * (4 * count),
                 fetch_max_bytes=limits.FETCH_BYTES_DEFAULT)
    partitions = [TopicPartition("t", p) for p in range(count)]
    rig.fetcher.assign(partitions)
    for tp in partitions:
        rig.fetcher.seek(tp, 0)
    # When it fetches for a while (it used to ask the first partitions over and over)
    # Then every partition is fetched, before any is fetched a third time
    rig.pump(lambda: {r.partition for r in fetches(rig.broker)} == set(range(count)))
    asked = [r.partition for r in fetches(rig.broker)]
    assert max(asked.count(p) for p in range(count)) <= 2


@pytest.mark.parametrize("times_in_flight, wait_ms", [
    (1, 1000), (2, 500), (8, 125), (32, limits.FETCH_WAIT_MS_SHARED_MIN)])
def test_a_consumer_of_more_partitions_than_fetches_in_flight_parks_each_for_its_share_of_the_wait(
        rig_of, times_in_flight, wait_ms):
    # Given a consumer with a fetch wait of 1 s, of as many partitions as it may have
    # fetches in flight, or several times as many
    in_flight = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_COUNTED_MIN
    rig = rig_of([], fetch_max_bytes=limits.FETCH_BYTES_DEFAULT, fetch_max_wait_ms=1000)
    partitions = [TopicPartition("t", p) for p in range(times_in_flight * in_flight)]
    rig.fetcher.assign(partitions)
    for tp in partitions:
        rig.fetcher.seek(tp, 0)
    # When it sends its fetches
    rig.fetcher.send_fetches()
    # Then each may be parked for its share of the wait (so that each partition is
    # asked about every second), but not for less than the floor
    assert rig.sent_nothing_more(in_flight)
    assert {r.wait_ms_max for r in fetches(rig.broker)} == {wait_ms}


def test_a_few_partitions_fetch_their_full_fetch_max_bytes(rig_of):
    # Given a consumer of two partitions, with the default fetch size
    rig = rig_of([], fetch_max_bytes=limits.FETCH_BYTES_DEFAULT)
    rig.fetcher.assign([T0, T1])
    rig.fetcher.seek(T0, 0)
    rig.fetcher.seek(T1, 0)
    # When it fetches / Then each fetch asks for fetch_max_bytes
    rig.fetcher.send_fetches()
    assert rig.sent_nothing_more(2)
    assert [r.bytes_max for r in fetches(rig.broker)] == [limits.FETCH_BYTES_DEFAULT] * 2


def test_records_are_handed_out_in_order_and_the_next_fetch_starts_after_them(rig_of):
    # Given a fetch answered with two entries, the second not answered
    rig = rig_of([answer_with(entry(0, [b"a", b"b"]), entry(2, [b"c"])), no_answer])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    # Then its records come out in order
    assert rig.take_values(3) == [(0, b"a"), (1, b"b"), (2, b"c")]
    # And the next fetch asks from the offset after them
    rig.fetcher.send_fetches()
    assert rig.broker.wait_for_requests(2)[1].offset == 3


def test_a_partition_with_records_buffered_is_not_fetched(rig_of):
    rig = rig_of([answer_with(entry(0, [b"a", b"b"]))])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    rig.pump(lambda: len(rig.fetcher.partitions[T0].records) == 2)
    rig.fetcher.send_fetches()
    assert rig.sent_nothing_more(1)


def test_records_before_the_fetch_offset_are_skipped(rig_of):
    # Given a position in the middle of a batch
    rig = rig_of([answer_with(entry(0, [b"a", b"b", b"c", b"d"]))])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 2)
    # Then the whole batch comes back, and only the records from the position are kept
    assert rig.take_values(2) == [(2, b"c"), (3, b"d")]


def test_a_reply_to_a_fetch_that_a_seek_replaced_is_dropped(rig_of):
    # Given a fetch at 0 still unanswered when the partition is moved to offset 5
    stale = fetch_reply(1, entry(0, [b"old"]))
    rig = rig_of([no_answer,
                  lambda request: Replies([stale, fetch_reply(request.request_id,
                                                              entry(5, [b"new"]))])])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    rig.fetcher.send_fetches()
    rig.broker.wait_for_requests(1)
    rig.fetcher.seek(T0, 5)
    # When the old fetch's answer comes before the new one's
    # Then only the records at the new position are handed out
    assert rig.take_values(1) == [(5, b"new")]
    assert [r.offset for r in fetches(rig.broker)] == [0, 5]


def test_a_reply_for_a_removed_partition_is_dropped_and_a_new_assignment_fetches_again(rig_of):
    # Given a fetch at 0 unanswered when the partition is removed, then added at offset 4
    stale = fetch_reply(1, entry(0, [b"late"]))
    rig = rig_of([no_answer, lambda request: Replies([stale, fetch_reply(request.request_id,
                                                                         entry(4, [b"x"]))])])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    rig.fetcher.send_fetches()
    rig.broker.wait_for_requests(1)
    rig.fetcher.remove(T0)
    assert rig.fetcher.partitions == {}
    rig.fetcher.add(T0, 4)
    # Then it is fetched again from there, and the old fetch's late answer is dropped
    assert rig.take_values(1) == [(4, b"x")]
    assert [r.offset for r in fetches(rig.broker)] == [0, 4]


def test_transient_errors_back_off_doubling_until_a_reply_succeeds(rig_of, monkeypatch):
    # Given backoffs from 200 ms, and a broker answering unavailable, too many requests,
    # then records, then unavailable again
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MS", 200)
    rig = rig_of([UnavailableError("shard-0 is restarting"), TooManyRequestsError("full"),
                  answer_with(entry(0, [b"a"])), UnavailableError("again"), no_answer])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    state = rig.fetcher.partitions[T0]
    # Then each error is answered by a backoff, doubling while they go on
    backoffs_s = []
    for sent in (1, 2):
        rig.pump(lambda: len(rig.broker.requests) == sent and state.fetch_id is None)
        backoffs_s.append(state.retry_backoff_s)
        # And no fetch goes out before the backoff ends
        assert rig.fetcher.next_retry_s() > time.monotonic()
        rig.fetcher.send_fetches()
        assert state.fetch_id is None
    assert backoffs_s == [0.2, 0.4]
    # And after the records came, the next error starts the backoff again from the base
    assert rig.take_values(1) == [(0, b"a")]
    rig.pump(lambda: len(rig.broker.requests) == 4 and state.fetch_id is None)
    assert state.retry_backoff_s == 0.2
    assert [r.offset for r in fetches(rig.broker)] == [0, 0, 0, 1]


def test_a_partition_whose_fetches_fail_is_logged_once_at_warning_and_once_when_they_succeed_again(
        rig_of, monkeypatch, caplog):
    # Given a broker whose object storage is down for three fetches of t-0 at offset 100,
    # then answers with records, then is down again
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MS", 1)
    down = UnavailableError("object storage: get s3://b/t-0/100.log: connection refused")
    rig = rig_of([down, down, down, answer_with(entry(100, [b"a"])), down, no_answer])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 100)
    caplog.set_level(logging.DEBUG, logger="plinth.client.fetcher")
    state = rig.fetcher.partitions[T0]
    # When the fetcher retries through the outage and reads the record
    assert rig.take_values(1) == [(100, b"a")]
    # Then one warning names the partition, the offset, the error and the retrying
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [message for level, message in logged if level == logging.WARNING]
    assert warnings == ["fetch of t-0 at offset 100 failed: UnavailableError: object storage: "
                        "get s3://b/t-0/100.log: connection refused; retrying until it succeeds "
                        "(the first retry in 1 ms)"]
    # And the retries after it are at DEBUG only, and one INFO line says it works again
    assert [level for level, _ in logged] == [logging.WARNING, logging.DEBUG, logging.DEBUG,
                                              logging.INFO]
    assert logged[-1][1].startswith("fetch of t-0 at offset 100 succeeded again after 3 failed "
                                    "in ")
    assert state.fetch_error is None
    # And when the store goes down again, the partition is warned about again, once
    caplog.clear()
    rig.pump(lambda: len(rig.broker.requests) == 5 and state.fetch_id is None)
    assert [(r.levelno, r.getMessage()[:40]) for r in caplog.records] == [
        (logging.WARNING, "fetch of t-0 at offset 101 failed: Unava")]


def test_the_partitions_whose_fetches_are_failing_are_those_answered_with_an_error_last(
        rig_of, monkeypatch):
    # Given two partitions, t-0 answered unavailable, t-1 with records
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MS", 10_000)
    down = UnavailableError("down")
    rig = rig_of([down, answer_with(entry(0, [b"a"]))])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    assert rig.fetcher.fetch_errors() == {}
    rig.pump(lambda: rig.fetcher.partitions[T0].fetch_error is not None)
    rig.fetcher.add(T1, 0)
    assert rig.take_values(1) == [(0, b"a")]
    # Then only t-0 is failing, with its error
    assert {tp: repr(error) for tp, error in rig.fetcher.fetch_errors().items()} == {
        T0: "UnavailableError('down')"}


def test_the_next_retry_is_the_earliest_backoff_of_the_partitions_still_assigned(
        rig_of, monkeypatch):
    # Given two partitions whose fetches were answered unavailable, each backing off
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MS", 10_000)
    rig = rig_of([UnavailableError("a"), UnavailableError("b")])
    rig.fetcher.assign([T0, T1])
    rig.fetcher.seek(T0, 0)
    rig.fetcher.seek(T1, 0)
    states = rig.fetcher.partitions
    rig.pump(lambda: len(rig.broker.requests) == 2
             and all(state.fetch_id is None for state in states.values()))
    first, second = sorted((T0, T1), key=lambda tp: states[tp].retry_at_s)
    # Then the next retry is the earlier backoff's end
    assert rig.fetcher.next_retry_s() == states[first].retry_at_s
    # And once that partition is removed, the other's
    later = states[second]
    rig.fetcher.remove(first)
    assert rig.fetcher.next_retry_s() == later.retry_at_s
    # And once its backoff has passed (its end moved back here), there is none
    later.retry_at_s = time.monotonic() - 1
    assert rig.fetcher.next_retry_s() is None


def test_the_backoff_stops_growing_at_its_maximum(rig_of, monkeypatch):
    # Given backoffs from 1 ms to at most 8 ms, and a broker that stays unavailable
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MS", 1)
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MAX_MS", 8)
    rig = rig_of([UnavailableError("down")] * 6 + [no_answer])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    state = rig.fetcher.partitions[T0]
    backoffs_s = []

    def errors_seen(count):
        if state.fetch_id is None and state.retry_backoff_s not in backoffs_s[-1:]:
            backoffs_s.append(state.retry_backoff_s)
        return len(rig.broker.requests) == count and state.fetch_id is None
    rig.pump(lambda: errors_seen(6))
    # Then it doubled up to the maximum and stayed there
    assert backoffs_s == [0.0, 0.001, 0.002, 0.004, 0.008]


def test_offset_out_of_range_resets_the_position_and_fetches_from_there(rig_of):
    rig = rig_of([OffsetOutOfRangeError("offset 0 is before the log start 10"),
                  answer_with(entry(10, [b"x"]))], reset_offset=10)
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    assert rig.take_values(1) == [(10, b"x")]
    assert rig.resets == [T0]
    assert [r.offset for r in fetches(rig.broker)] == [0, 10]


def test_offset_out_of_range_is_raised_when_the_consumer_does_not_reset(rig_of):
    rig = rig_of([OffsetOutOfRangeError("offset 0 is before the log start 10")],
                 reset_out_of_range=False)
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    with pytest.raises(OffsetOutOfRangeError, match="before the log start 10"):
        rig.pump(lambda: False)
    assert rig.resets == []


def test_a_partition_without_a_position_is_reset_before_its_first_fetch(rig_of):
    rig = rig_of([answer_with(entry(7, [b"x"]))], reset_offset=7)
    rig.fetcher.assign([T0])
    assert rig.take_values(1) == [(7, b"x")]
    assert rig.resets == [T0] and rig.broker.requests[0][1].offset == 7


def test_a_fetch_unanswered_past_its_wait_and_the_request_timeout_is_sent_again(rig_of):
    # Given fetches that wait 0 ms at the shard, a request timeout of 200 ms, and a
    # broker that loses the first fetch
    rig = rig_of([no_answer, answer_with(entry(0, [b"a"]))], fetch_max_wait_ms=0,
                 request_timeout_ms=200)
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    # Then the fetch is sent again, from the same offset, no sooner than that
    assert rig.take_values(1) == [(0, b"a")]
    (first_s, first), (second_s, second) = rig.broker.requests
    assert (first.offset, second.offset) == (0, 0) and second_s - first_s >= 0.2 * 0.9


def test_a_partition_whose_fetch_goes_unanswered_is_failing_until_a_fetch_is_answered(
        rig_of, caplog):
    # Given a broker that never answers the first two fetches of t-0 at offset 5 (a hung
    # shard), then answers
    rig = rig_of([no_answer, no_answer, answer_with(entry(5, [b"a"]))], fetch_max_wait_ms=0,
                 request_timeout_ms=200)
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 5)
    caplog.set_level(logging.DEBUG, logger="plinth.client.fetcher")
    # When the first fetch goes unanswered for its timeout and is asked again
    rig.pump(lambda: len(rig.broker.requests) == 2)
    # Then the partition is failing, with an error naming it, the offset and the timeout
    assert {tp: str(error) for tp, error in rig.fetcher.fetch_errors().items()} == {
        T0: "no answer to the fetch of t-0 at offset 5 within fetch_max_wait_ms + "
            "request_timeout_ms = 200 ms"}
    # And one warning says so (it was silent: a hung shard looked like an idle log)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["fetch of t-0 at offset 5 failed: PlinthTimeoutError: no answer to the "
                        "fetch of t-0 at offset 5 within fetch_max_wait_ms + request_timeout_ms "
                        "= 200 ms; retrying until it succeeds (the first retry in 0 ms)"]
    # And when a fetch is answered, it is failing no more
    assert rig.take_values(1) == [(5, b"a")]
    assert rig.fetcher.fetch_errors() == {}
    assert caplog.records[-1].getMessage().startswith(
        "fetch of t-0 at offset 5 succeeded again after 2 failed in ")


@pytest.fixture
def clock(monkeypatch) -> ManualClock:
    """The Fetcher's time.monotonic, moved by the test: no waiting for time to pass."""
    clock = ManualClock()
    monkeypatch.setattr(fetcher_module, "time", SimpleNamespace(monotonic=clock))
    return clock


MARGIN_S = limits.CONSUMER_FETCH_OVERDUE_MARGIN_MS / 1000


def test_a_fetch_unanswered_past_its_wait_and_the_margin_is_overdue_and_no_more_once_answered(
        rig_of, clock):
    # Given a fetch of t-0 at offset 5, parked for at most 100 ms, that a hung shard
    # does not answer
    rig = rig_of([no_answer], fetch_max_wait_ms=100, request_timeout_ms=60_000)
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 5)
    rig.fetcher.send_fetches()
    rig.broker.wait_for_requests(1)
    # When its wait and the margin have not quite passed, it is not overdue
    clock.now_s += 0.1 + MARGIN_S - 0.01
    assert rig.fetcher.overdue() == {}
    # Then, once they have, it is, with its offset and how long it has waited; and it
    # is neither failing nor asked again (that waits for the request timeout)
    clock.now_s += 0.51
    assert rig.fetcher.overdue() == {T0: Overdue(5, pytest.approx((0.6 + MARGIN_S) * 1000))}
    assert rig.fetcher.fetch_errors() == {}
    rig.fetcher.send_fetches()
    assert rig.sent_nothing_more(1)
    # And once a fetch of it is answered (a new one: the seek forgets the first), it is
    # overdue no more
    rig.broker.script.append(answer_with(entry(5, [b"a"])))
    rig.fetcher.seek(T0, 5)
    assert rig.take_values(1) == [(5, b"a")]
    assert rig.fetcher.overdue() == {}


def test_a_partition_whose_position_is_not_given_within_the_margin_is_overdue_until_it_is(
        rig_of, clock):
    # Given a partition without a position, whose reset the consumer asked and its
    # shard does not answer
    rig = rig_of([])
    asked: list[TopicPartition] = []
    rig.fetcher = Fetcher(rig.conn, fetch_max_bytes=1024, fetch_max_wait_ms=100,
                          request_timeout_ms=60_000, reset_position=asked.append,
                          reset_out_of_range=True)
    rig.fetcher.assign([T0])
    rig.fetcher.send_fetches()
    assert asked == [T0]
    # When the margin has not quite passed, asked again meanwhile, it is not overdue
    clock.now_s += MARGIN_S - 0.01
    rig.fetcher.send_fetches()
    assert rig.fetcher.overdue() == {}
    # Then once it has (counted from the first ask), it is, with no offset
    clock.now_s += 0.02
    assert rig.fetcher.overdue() == {T0: Overdue(None, pytest.approx((MARGIN_S + 0.01) * 1000))}
    # And once the reset gives it a position, it is not
    rig.fetcher.seek(T0, 0)
    assert rig.fetcher.overdue() == {}


def test_an_entry_whose_crc_does_not_match_raises_corrupt_data(rig_of):
    damaged = bytearray(entry(0, [b"hello"]))
    damaged[-1] ^= 0xFF
    rig = rig_of([answer_with(bytes(damaged))])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    with pytest.raises(CorruptDataError):
        rig.pump(lambda: False)


def test_deserializers_apply_to_keys_and_values_that_are_there(rig_of):
    rig = rig_of([answer_with(entry(0, [b"1", b"2"]))], value_deserializer=int,
                 key_deserializer=bytes.decode)
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    records = []
    rig.pump(lambda: records.extend(rig.fetcher.take(10).get(T0, [])) or len(records) == 2)
    assert [(r.key, r.value) for r in records] == [(None, 1), (None, 2)]


def test_take_hands_out_at_most_max_records_starting_one_partition_further_each_time(rig_of):
    # Given three records buffered in each of two partitions
    rig = rig_of([answer_with(entry(0, [b"a0", b"a1", b"a2"])),
                  answer_with(entry(0, [b"b0", b"b1", b"b2"]))])
    rig.fetcher.assign([T0, T1])
    rig.fetcher.seek(T0, 0)
    rig.fetcher.seek(T1, 0)
    rig.pump(lambda: all(len(rig.fetcher.partitions[tp].records) == 3 for tp in (T0, T1)))
    # When records are taken two at a time
    taken = [rig.fetcher.take(2) for _ in range(4)]
    # Then each take starts one partition further, and fills up from the next
    assert [[(tp.partition, [r.value for r in records]) for tp, records in out.items()]
            for out in taken] == [[(1, [b"b0", b"b1"])], [(0, [b"a0", b"a1"])],
                                  [(1, [b"b2"]), (0, [b"a2"])], []]


# --- A deleted topic ---------------------------------------------------------------------

def test_a_deleted_topic_is_not_raised_but_warned_of_once_and_its_partitions_asked_again_slowly(
        rig_of, monkeypatch, caplog):
    # Given a shortened maximum backoff, and a broker that answers t-0's and t-1's parked
    # fetches "deleted", then t-0's next fetch as the shard that no longer has it does
    # (unavailable: the routers are refreshing), then t-0's as the router does (unknown)
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MAX_MS", 300)
    deleted = UnknownTopicError("topic 't' was deleted")
    rig = rig_of([deleted, deleted,
                  UnavailableError("partition t-0 is not on shard-0; retry (the routers are "
                                   "refreshing their map)"),
                  UnknownTopicError("unknown topic 't'"), no_answer])
    rig.fetcher.assign([T0, T1])
    rig.fetcher.seek(T0, 100)
    rig.fetcher.seek(T1, 7)
    caplog.set_level(logging.DEBUG, logger="plinth.client.fetcher")
    newly = []
    rig.fetcher.on_reply = lambda *got, on_reply=rig.fetcher.on_reply: newly.append(
        on_reply(*got))
    # When the fetcher reads those answers / Then none is raised
    rig.pump(lambda: len(newly) == 4)
    # And only the first said the topic was newly found gone
    assert newly == [True, False, False, False]
    assert rig.fetcher.gone_topics() == {"t"}
    # And one warning says the topic is gone, and that nothing will retry until it works
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        "topic 't' is gone (deleted, or never created): the fetch of t-")
    assert "retrying until it succeeds" not in caplog.text
    # And both partitions stay assigned, failing with the topic's error
    assert {tp: str(e) for tp, e in rig.fetcher.fetch_errors().items()} == {
        T0: "topic 't' was deleted", T1: "topic 't' was deleted"}
    # And each was asked again no sooner than the maximum backoff
    arrivals = [arrived for arrived, request in rig.broker.requests if request.partition == 0]
    assert all(later - earlier >= 0.3 * 0.9 for earlier, later in zip(arrivals, arrivals[1:]))


def test_a_topic_found_gone_is_forgotten_once_a_fetch_of_it_succeeds(rig_of, monkeypatch):
    # Given a topic found deleted, then created again (its fetch answered with a record)
    monkeypatch.setattr(limits, "CLIENT_RETRY_BACKOFF_MAX_MS", 1)
    rig = rig_of([UnknownTopicError("topic 't' was deleted"), answer_with(entry(0, [b"a"]))])
    rig.fetcher.assign([T0])
    rig.fetcher.seek(T0, 0)
    assert rig.take_values(1) == [(0, b"a")]
    # Then it is gone no more, and its partition no longer failing
    assert rig.fetcher.gone_topics() == set()
    assert rig.fetcher.fetch_errors() == {}
