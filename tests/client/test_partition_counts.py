"""Specification of plinth.client.partition_counts: when a producer asks a topic's
partition count again, and what it places records with meanwhile.

A clock the test moves stands in for time.monotonic; the accumulator is a real one
(the counts learnt reach it)."""

import pytest

from plinth import limits
from plinth.client.accumulator import RecordAccumulator
from plinth.client.partition_counts import PartitionCounts
from plinth.errors import PartitionOutOfRangeError, PlinthTimeoutError, UnknownTopicError
from tests.support import ManualClock

REFRESH_S_MIN = limits.PRODUCER_METADATA_REFRESH_MS_MIN / 1000
MAX_AGE_MS = 60_000
T0_MS = 1_700_000_000_000


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def accumulator():
    return RecordAccumulator(batch_bytes_max=1 << 20, linger_ms=1_000_000,
                             buffer_bytes_max=1 << 26, max_block_ms=0, wake=lambda: None)


@pytest.fixture
def counts(accumulator, clock):
    return PartitionCounts(accumulator, metadata_max_age_ms=MAX_AGE_MS, clock=clock)


def test_a_topic_never_learnt_is_due_and_its_count_is_not_known(counts):
    assert counts.due("t")
    with pytest.raises(KeyError):
        counts.known("t")


def test_a_learnt_count_is_not_due_again_until_something_says_so(counts, clock):
    counts.learned("t", 4)
    clock.now_s += MAX_AGE_MS / 1000 - 0.001
    assert not counts.due("t")
    assert counts.known("t") == 4 and counts.current == {"t": 4}


def test_a_missing_partition_makes_a_count_learnt_at_the_first_send_due_at_once(counts):
    # Given a count learnt at the first send
    counts.learned("t", 4)
    # When the sender finds a partition missing at once
    counts.missing("t")
    # Then the count is due, and leaves the counts the asyncio producer places with
    assert counts.due("t")
    assert counts.current == {}
    assert counts.known("t") == 4   # what a record placed meanwhile is placed with


def test_a_refreshed_count_is_asked_again_no_sooner_than_the_refresh_minimum(counts, clock):
    # Given a count learnt, found missing, and asked again
    counts.learned("t", 4)
    counts.missing("t")
    counts.learned("t", 2)
    # When a partition is found missing again at once
    clock.now_s += 0.001
    counts.missing("t")
    # Then it is not asked again before PRODUCER_METADATA_REFRESH_MS_MIN (no storm)
    assert not counts.due("t") and counts.current == {"t": 2}
    # And it is, and leaves the counts records are placed with, once that has passed
    clock.now_s += REFRESH_S_MIN
    assert counts.due("t")
    assert counts.current == {}


def test_a_batch_placed_before_the_count_was_learnt_does_not_make_it_due(counts, clock):
    # Given a batch placed with a count of 4, then a count of 1 learnt
    counts.learned("t", 4)
    placed_s = clock.now_s
    clock.now_s += 0.001
    counts.learned("t", 1)
    # When that batch is refused for its partition
    counts.missing("t", placed_s)
    # Then the count just learnt stands
    clock.now_s += REFRESH_S_MIN
    assert not counts.due("t") and counts.current == {"t": 1}
    # But a batch placed with it and refused makes it due
    counts.missing("t", clock.now_s)
    assert counts.due("t")


def test_a_count_metadata_max_age_ms_old_is_due(counts, clock):
    counts.learned("t", 4)
    clock.now_s += MAX_AGE_MS / 1000
    assert counts.due("t")


def test_a_max_age_of_zero_still_asks_again_at_most_once_per_refresh_minimum(accumulator, clock):
    counts = PartitionCounts(accumulator, metadata_max_age_ms=0, clock=clock)
    counts.learned("t", 4)
    clock.now_s += REFRESH_S_MIN
    assert counts.due("t")
    counts.learned("t", 4)
    clock.now_s += REFRESH_S_MIN * 0.5
    assert not counts.due("t")
    clock.now_s += REFRESH_S_MIN * 0.6
    assert counts.due("t")


def test_an_answer_clears_the_missing_partition_and_restarts_the_clocks(counts, clock):
    counts.learned("t", 4)
    counts.missing("t")
    counts.learned("t", 1)
    assert not counts.due("t")
    assert counts.known("t") == 1 and counts.current == {"t": 1}
    clock.now_s += REFRESH_S_MIN
    assert not counts.due("t")   # nothing is missing since


def test_a_new_count_places_the_records_sent_after_it_within_the_topic(counts, accumulator):
    # Given a topic learnt with 4 partitions, then re-created with 1
    counts.learned("t", 4)
    counts.learned("t", 1)
    # When records are sent to it with keys and without
    placed = {accumulator.append("t", None, key, b"v", T0_MS).batch.partition
              for key in (None, b"a", b"b", b"c", b"d", b"e")}
    # Then each goes to partition 0, and a record for partition 3 is refused naming the count
    assert placed == {0}
    with pytest.raises(PartitionOutOfRangeError, match="it has 1 partitions"):
        accumulator.append("t", 3, None, b"v", T0_MS)


def test_a_failed_question_about_a_topic_never_learnt_raises_its_error(counts):
    with pytest.raises(UnknownTopicError):
        counts.not_learned("t", UnknownTopicError("unknown topic 't'"))
    assert counts.due("t")


def test_a_failed_question_keeps_the_count_known_and_is_asked_again_after_the_minimum(
        counts, clock):
    # Given a topic whose partition was found missing, and whose question failed
    counts.learned("t", 4)
    counts.missing("t")
    assert counts.due("t")
    counts.not_learned("t", PlinthTimeoutError("no answer"))
    # Then records are placed with the count known, and it is not asked again at once
    assert counts.known("t") == 4 and counts.current == {"t": 4}
    assert not counts.due("t")
    # But is, still missing, once the minimum has passed since the failed question
    clock.now_s += REFRESH_S_MIN
    assert counts.due("t")


def test_a_missing_partition_of_a_topic_never_learnt_changes_nothing(counts):
    counts.missing("t")
    assert counts.due("t") and counts.current == {}
