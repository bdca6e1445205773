"""client/position_resets.py through the sync Consumer, against a scripted broker
(tests/client/scripted_broker.py) whose answers to listOffsets the test holds back:
a poll does not wait for a partition's position reset, which is asked again after a
timeout or a transient error, and says it is failing meanwhile."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from plinth import limits, protocol
from plinth.client.consumer import Consumer
from plinth.client.fetcher import TopicPartition
from plinth.errors import PlinthTimeoutError, UnavailableError, UnknownTopicError
from tests.client.scripted_broker import entry
from tests.support import wait_until

T0 = TopicPartition("t", 0)
REQUEST_TIMEOUT_MS = 2_000


class Shard:
    """Answers fetches of t-0 at offset 5 with one record, and listOffsets (start 5,
    end 6) only once ``answer_resets`` is set; before that, each listOffsets takes the
    next of ``reset_errors`` (a BrokerError answered) or, with none left, no answer."""

    def __init__(self, reset_errors=()):
        self.answer_resets = threading.Event()
        self.reset_errors = list(reset_errors)
        self.resets_asked = 0
        self.require_listed: list[bool] = []   # each listOffsets' requireListed

    def __call__(self, request):
        if request.kind == "listOffsets":
            self.resets_asked += 1
            self.require_listed.append(request.require_listed)
            if self.answer_resets.is_set():
                return [protocol.encode_offsets_reply(request.request_id, protocol.PartitionInfo(
                    0, "shard-0", start_offset=5, end_offset=6))]
            if self.reset_errors:
                return [protocol.encode_error(request.request_id, self.reset_errors.pop(0))]
            return None
        if request.kind == "fetch" and request.offset == 5:
            return [protocol.encode_fetch_reply(request.request_id, 6, 0), entry(5, [b"a"])]
        return None   # a fetch at the log end: parked, never answered here


@pytest.fixture
def consumer_of(scripted):
    consumers = []

    def make(shard: Shard, partitions: int = 1, auto_offset_reset: str = "earliest") -> Consumer:
        broker = scripted([shard] * 10_000)
        consumers.append(Consumer(broker=broker.url, auto_offset_reset=auto_offset_reset,
                                  request_timeout_ms=REQUEST_TIMEOUT_MS))
        consumers[-1].assign([("t", p) for p in range(partitions)])
        return consumers[-1]

    yield make
    for consumer in consumers:
        consumer.close()


def poll_until(consumer: Consumer, predicate, timeout_s: float = 15.0) -> list:
    """Poll in 100 ms slices until ``predicate()``; the records polled meanwhile."""
    polled = []

    def polled_and_met():
        polled.extend(r for rs in consumer.poll(timeout_ms=100).values() for r in rs)
        return predicate()
    wait_until(polled_and_met, timeout_s=timeout_s, interval_s=0)
    return polled


def test_a_poll_returns_within_its_timeout_while_a_position_reset_goes_unanswered(
        consumer_of, caplog):
    # Given a partition without a position whose shard does not answer its listOffsets
    shard = Shard()
    consumer = consumer_of(shard)
    caplog.set_level(logging.INFO, logger="plinth.client.position_resets")
    # When it is polled for 200 ms / Then the poll returns nothing in about that time
    # (it waited request_timeout_ms for the reset, then raised PlinthTimeoutError)
    started_s = time.monotonic()
    assert consumer.poll(timeout_ms=200) == {}
    assert time.monotonic() - started_s < REQUEST_TIMEOUT_MS / 1000 / 2
    # And once the reset is unanswered for request_timeout_ms, the partition is failing,
    # named with the timeout, and one warning says so
    poll_until(consumer, lambda: T0 in consumer.fetch_errors())
    error = consumer.fetch_errors()[T0]
    assert isinstance(error, PlinthTimeoutError)
    assert str(error) == ("no answer to the position reset (listOffsets) of t-0 within "
                          f"request_timeout_ms={REQUEST_TIMEOUT_MS}")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    # And when the shard answers again, the reset is asked again and the record read
    shard.answer_resets.set()
    polled = poll_until(consumer, lambda: consumer.fetch_errors() == {} and consumer.position(
        "t", 0) == 6)
    assert [(r.offset, r.value) for r in polled] == [(5, b"a")]
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage().startswith(
        "reset of t-0's position succeeded after failing")


def test_a_reset_answered_with_a_transient_error_is_asked_again_after_a_backoff(consumer_of):
    # Given a shard that answers the first two resets "unavailable", then the offsets
    shard = Shard(reset_errors=[UnavailableError("shard-0 is restarting")] * 2)
    consumer = consumer_of(shard)
    # When the consumer polls / Then it is failing with that error meanwhile
    poll_until(consumer, lambda: T0 in consumer.fetch_errors())
    assert str(consumer.fetch_errors()[T0]) == "shard-0 is restarting"
    # And the third reset's answer gives the position; the record is read
    shard.answer_resets.set()
    polled = poll_until(consumer, lambda: consumer.position("t", 0) == 6)
    assert [r.value for r in polled] == [b"a"] and shard.resets_asked >= 3
    assert consumer.fetch_errors() == {}


@pytest.mark.parametrize("auto_offset_reset, require_listed", [("earliest", True),
                                                                ("latest", False)])
def test_only_a_reset_to_the_earliest_offset_needs_a_tiered_shards_remote_log_listed(
        consumer_of, auto_offset_reset, require_listed):
    # Given a shard that answers resets
    shard = Shard()
    shard.answer_resets.set()
    consumer = consumer_of(shard, auto_offset_reset=auto_offset_reset)
    # When the consumer polls until its partition has a position
    poll_until(consumer, lambda: shard.require_listed)
    # Then its reset asked that the shard has listed object storage only for the start:
    # a start from an incomplete remote log would skip the records below it, and the
    # end needs nothing from the store (the shard answers unavailable until it has)
    assert set(shard.require_listed) == {require_listed}


def test_the_beginning_offsets_need_the_remote_log_listed_and_the_end_offsets_do_not(
        consumer_of):
    # Given a shard that answers listOffsets with the offsets 5..6
    shard = Shard()
    shard.answer_resets.set()
    consumer = consumer_of(shard, partitions=0)
    # When the consumer asks for the beginning offsets, then the end offsets
    assert consumer.beginning_offsets([("t", 0)]) == {T0: 5}
    beginning = shard.require_listed[-1]
    assert consumer.end_offsets([("t", 0)]) == {T0: 6}
    # Then only the beginning asked for a listed remote log
    assert (beginning, shard.require_listed[-1]) == (True, False)


def test_a_reset_refused_for_good_is_raised_by_the_poll(consumer_of):
    # Given a shard whose answer to the reset is an error no retry changes
    shard = Shard(reset_errors=[UnknownTopicError("unknown topic 't'")])
    consumer = consumer_of(shard)
    # When the consumer polls / Then the poll raises it, as the blocking reset did
    with pytest.raises(UnknownTopicError, match="unknown topic 't'"):
        poll_until(consumer, lambda: False)


def test_a_seek_while_a_reset_is_unanswered_wins_over_its_late_answer(consumer_of):
    # Given a reset of t-0 not answered yet
    shard = Shard()
    consumer = consumer_of(shard)
    assert consumer.poll(timeout_ms=50) == {}
    # When the application seeks to 5, and the reset's answer (also 5) comes later
    consumer.seek("t", 0, 5)
    polled = poll_until(consumer, lambda: consumer.position("t", 0) == 6)
    # Then the record is read once, from the seek, and nothing is failing
    assert [(r.offset, r.value) for r in polled] == [(5, b"a")]
    assert consumer.fetch_errors() == {}


def test_no_more_resets_than_the_bound_are_asked_at_once_and_the_rest_follow_the_answers(
        consumer_of):
    # Given 100 partitions without a position, whose shard leaves the resets unanswered
    partitions = 100
    shard = Shard()
    consumer = consumer_of(shard, partitions)
    # When the consumer polls for a while (many passes, within request_timeout_ms)
    for _ in range(5):
        consumer.poll(timeout_ms=50)
    wait_until(lambda: shard.resets_asked >= limits.CONSUMER_POSITION_RESETS_IN_FLIGHT_MAX)
    consumer.poll(timeout_ms=100)
    # Then only the bound's worth was asked (1 request each, none for the rest yet)
    assert shard.resets_asked == limits.CONSUMER_POSITION_RESETS_IN_FLIGHT_MAX
    # And once the shard answers, every partition gets its position and its record
    shard.answer_resets.set()
    read = set()

    def all_read():
        read.update(r.partition for rs in consumer.poll(timeout_ms=100).values() for r in rs)
        return len(read) == partitions
    wait_until(all_read, timeout_s=30, interval_s=0)
    assert consumer.fetch_errors() == {}
