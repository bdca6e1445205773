"""Specification of plinth.client.sender.Sender: idempotent delivery, retries, close.

The sender runs its real thread against tests/client/produce_broker.py, a real
ZeroMQ socket answering real Cap'n Proto replies and storing batches as a shard
does (idempotent retries answered with their original offsets), scripted to
fail, drop or lose the replies of produce requests. The tests hand it records
through its one neighbour in the process, a real RecordAccumulator.
"""

from __future__ import annotations

import logging
import re
import time

import pytest

from plinth import limits
from plinth.client.accumulator import RecordAccumulator
from plinth.client.partition_counts import PartitionCounts
from plinth.client.sender import Sender
from plinth.errors import (ClosedError, DiskReserveRefusedError, NotEnoughReplicasBeforeWriteError,
                           NotLeaderError,
                           OutOfOrderSequenceError, PartitionOutOfRangeError, PlinthTimeoutError,
                           RecordTooLargeError, StorageError, UnavailableError)
from plinth.format.kafka_batch import summarize_kafka_batch
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2
from plinth.format.record_batch import RECORD_OVERHEAD_BYTES, summarize_batch
from tests.client.produce_broker import DROP, GARBAGE, LOSE_REPLY, ProduceBroker
from tests.format.kafka_batches import header as kafka_header

T0_MS = 1_700_000_000_000
GET_TIMEOUT_S = 10
SENDER_DEFAULTS = dict(acks=1, request_timeout_ms=2_000, in_flight_max=32, idempotent=True,
                       delivery_timeout_ms=20_000, retry_backoff_ms=20, retry_backoff_max_ms=1_000)


@pytest.fixture
def broker():
    broker = ProduceBroker({"t": 2})
    yield broker
    broker.close()


@pytest.fixture
def make_sender(broker):
    """``make_sender(linger_ms=0, **sender options)`` -> (sender, accumulator), started;
    ``url``: the broker's by default."""
    senders = []

    def make(linger_ms: float = 0, batch_bytes_max: int = 1 << 20, url: str | None = None,
             buffer_bytes_max: int = 1 << 26, **options) -> tuple[Sender, RecordAccumulator]:
        settings = {**SENDER_DEFAULTS, **options}
        acks = settings.pop("acks")
        sender = Sender(url or broker.url, acks, **settings)
        accumulator = RecordAccumulator(batch_bytes_max=batch_bytes_max, linger_ms=linger_ms,
                                        buffer_bytes_max=buffer_bytes_max, max_block_ms=5_000,
                                        wake=sender.wake)
        accumulator.add_topic("t", 2)
        sender.start(accumulator)
        senders.append(sender)
        return sender, accumulator

    yield make
    for sender in senders:
        sender.close(5)


def send(accumulator: RecordAccumulator, value: bytes, partition: int = 0):
    return accumulator.append("t", partition, None, value, T0_MS)


def produced(arrival) -> tuple[int, int]:
    """(producer id, base sequence) of a produce request's batch."""
    summary = summarize_batch(arrival.payload)
    return summary.producer_id, summary.base_sequence


def wait_until(condition, timeout_s: float = GET_TIMEOUT_S) -> None:
    """Poll a real condition until it holds, at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- Delivery ------------------------------------------------------------------------

def test_each_batch_is_stored_once_and_its_futures_resolve_to_the_offsets_it_got(
        broker, make_sender):
    # Given a sender
    _, accumulator = make_sender()
    # When records go to both partitions
    futures = [(value, partition, send(accumulator, value, partition))
               for value, partition in [(b"a", 0), (b"b", 1), (b"c", 0), (b"d", 0), (b"e", 1)]]
    # Then each future names the offset where the broker stored its record, once
    for value, partition, future in futures:
        metadata = future.get(GET_TIMEOUT_S)
        assert (metadata.topic, metadata.partition) == ("t", partition)
        assert broker.records("t", partition)[metadata.offset].value == value
    assert broker.record_count() == 5


def test_a_retriable_error_is_retried_with_a_backoff_that_doubles_up_to_its_max(
        broker, make_sender):
    # Given a broker that answers the first three produces "unavailable"
    broker.faults.extend([UnavailableError("shard restarting")] * 3)
    _, accumulator = make_sender(retry_backoff_ms=60, retry_backoff_max_ms=150)
    # When a record is sent
    assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    # Then it was sent four times, unchanged, 60, 120 and 150 ms (at least) apart
    arrivals = broker.produces()
    assert len(arrivals) == 4 and len({a.payload for a in arrivals}) == 1
    gaps_ms = [(b.at_s - a.at_s) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    assert [gap >= minimum for gap, minimum in zip(gaps_ms, [60, 120, 150])] == [True] * 3, \
        gaps_ms
    assert broker.record_count() == 1


def test_a_lost_reply_is_retried_and_the_shard_answers_the_duplicate_with_the_first_offset(
        broker, make_sender):
    # Given a broker that stores the first produce but loses its reply
    broker.faults.append(LOSE_REPLY)
    _, accumulator = make_sender(request_timeout_ms=300)
    # When a record is sent, and another after it
    first = send(accumulator, b"a")
    assert first.get(GET_TIMEOUT_S).offset == 0
    assert send(accumulator, b"b").get(GET_TIMEOUT_S).offset == 1
    # Then the retry was the same bytes (same producer id and sequence), and the
    # record is stored once
    arrivals = broker.produces()
    assert arrivals[0].payload == arrivals[1].payload
    assert [r.value for r in broker.records("t", 0)] == [b"a", b"b"]


def test_out_of_order_sequence_is_retried_under_a_new_producer_id_from_sequence_0(
        broker, make_sender):
    # Given a record stored by the producer, and a broker that refuses the next
    # produce as a sequence gap
    _, accumulator = make_sender()
    assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    broker.faults.append(OutOfOrderSequenceError("expected 7"))
    # When another record is sent
    assert send(accumulator, b"b").get(GET_TIMEOUT_S).offset == 1
    # Then its retry carries a new producer id and starts its sequence at 0
    (first_id, first_seq), (refused_id, refused_seq), (retry_id, retry_seq) = map(
        produced, broker.produces())
    assert (first_seq, refused_id, refused_seq) == (0, first_id, 1)
    assert retry_id != first_id and retry_seq == 0
    assert [r.value for r in broker.records("t", 0)] == [b"a", b"b"]


def test_a_batch_not_acknowledged_within_delivery_timeout_fails_and_the_next_gets_a_new_id(
        broker, make_sender):
    # Given a broker that loses every produce request for now
    broker.faults.extend([DROP] * 1000)
    _, accumulator = make_sender(request_timeout_ms=150, delivery_timeout_ms=500)
    started_s = time.monotonic()
    # When a record is sent / Then it fails after delivery_timeout_ms, retried meanwhile
    with pytest.raises(PlinthTimeoutError, match="delivery_timeout_ms=500"):
        send(accumulator, b"lost").get(GET_TIMEOUT_S)
    assert time.monotonic() - started_s >= 0.5
    attempts = broker.produces()
    assert len(attempts) >= 2 and len({produced(a) for a in attempts}) == 1
    # And when the broker answers again, the next record goes under a new producer
    # id, from sequence 0, and is the partition's first record
    broker.faults.clear()
    assert send(accumulator, b"next").get(GET_TIMEOUT_S).offset == 0
    next_id, next_seq = produced(broker.produces()[-1])
    assert next_id != produced(attempts[0])[0] and next_seq == 0


def test_acks_0_sends_each_batch_once_and_resolves_without_waiting_for_a_reply(
        broker, make_sender):
    # Given a sender with acks=0
    _, accumulator = make_sender(acks=0)
    # When records are sent / Then their futures resolve to offset -1
    futures = [send(accumulator, b"%d" % i) for i in range(3)]
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == [-1, -1, -1]
    # And every record reaches the broker once, without a producer id
    wait_until(lambda: broker.record_count() == 3)
    assert [r.value for r in broker.records("t", 0)] == [b"0", b"1", b"2"]
    assert {produced(a) for a in broker.produces()} == {(-1, -1)}


# --- acks=0: futures complete once sent; requests stay in the window until answered ------

ACKS0_RECORD_VALUE = b"x" * 200   # fills a batch of batch_bytes_max 100 on its own


def produces_answered(broker) -> int:
    return sum(a.request.request_id in broker.answered_at_s for a in broker.produces())


def most_outstanding_at_the_broker(broker) -> int:
    """The most produce requests the broker had received and not yet answered at once
    (each arrival against the answers sent before it): at most what the client had in
    flight, as a client counts a request from before it arrives until after its answer."""
    arrivals = broker.produces()
    return max(sum(1 for other in arrivals[:i + 1]
                   if broker.answered_at_s.get(other.request.request_id, float("inf"))
                   > arrival.at_s)
               for i, arrival in enumerate(arrivals))


def test_acks_0_requests_go_as_acks_1_and_at_most_in_flight_max_await_their_answer(
        broker, make_sender):
    # Given an acks=0 sender of at most 3 requests in flight, and a broker that holds
    # its answers
    _, accumulator = make_sender(acks=0, in_flight_max=3, batch_bytes_max=100)
    broker.hold()
    # When 10 records are sent, each its own batch
    futures = [send(accumulator, ACKS0_RECORD_VALUE) for _ in range(10)]
    # Then 3 requests go, and their records' futures complete at once, with offset -1,
    # while the shard has answered none of them
    wait_until(lambda: len(broker.produces()) == 3)
    assert [f.get(GET_TIMEOUT_S).offset for f in futures[:3]] == [-1, -1, -1]
    assert produces_answered(broker) == 0
    # And the fourth waits for an answer (its future too: it was not sent)
    assert not futures[3].done()
    # When the broker answers
    broker.release()
    # Then every record is sent and stored, never more than 3 awaiting an answer at once
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == [-1] * 10
    wait_until(lambda: produces_answered(broker) == 10)
    assert broker.record_count() == 10
    assert most_outstanding_at_the_broker(broker) == 3
    # And every request asked for an answer: acks=1 on the wire
    assert {arrival.request.acks for arrival in broker.produces()} == {1}


def test_acks_0_batches_awaiting_an_answer_count_at_most_buffer_memory(broker, make_sender):
    # Given an acks=0 sender whose buffer_memory holds three and a half records, 32
    # requests in flight allowed, and a broker that holds its answers
    record_bytes = len(ACKS0_RECORD_VALUE) + RECORD_OVERHEAD_BYTES
    _, accumulator = make_sender(acks=0, batch_bytes_max=100,
                                 buffer_bytes_max=record_bytes * 7 // 2)
    broker.hold()
    # When 6 records are sent, each its own batch
    futures = [send(accumulator, ACKS0_RECORD_VALUE) for _ in range(6)]
    # Then 3 go (their futures complete) and the fourth waits: 4 would be over
    # buffer_memory, though their futures freed their buffer bytes once sent
    wait_until(lambda: len(broker.produces()) == 3)
    assert [f.get(GET_TIMEOUT_S).offset for f in futures[:3]] == [-1, -1, -1]
    assert not futures[3].done()
    # When the broker answers / Then all go, never more than 3 at once
    broker.release()
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == [-1] * 6
    wait_until(lambda: produces_answered(broker) == 6)
    assert most_outstanding_at_the_broker(broker) == 3


def test_an_acks_0_request_answered_with_an_error_is_not_retried_and_is_logged_once_a_streak(
        broker, make_sender, caplog):
    # Given an acks=0 sender, and a broker that refuses the next two produces with an
    # error a producer with acks 1 or "all" retries
    sender, accumulator = make_sender(acks=0)
    broker.faults.extend([NotLeaderError("moved"), NotLeaderError("moved again")])
    with caplog.at_level(logging.INFO, logger="plinth.client.sender"):
        # When three records are sent, one at a time, each once the last was answered
        for i, value in enumerate([b"a", b"b", b"c"]):
            assert send(accumulator, value).get(GET_TIMEOUT_S).offset == -1
            wait_until(lambda: sender.acks0_requests_settled == i + 1)
    # Then each was sent once: the two refused were not sent again, and only the third
    # is stored
    assert len(broker.produces()) == 3
    assert [r.value for r in broker.records("t", 0)] == [b"c"]
    assert sender.acks0_records_unconfirmed == 2
    # And the log said so once as t-0 started failing, and once as it was stored again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NotLeaderError: moved" in warnings[0], warnings
    assert "not retried" in warnings[0]
    assert "acks=0 produce to t-0 stored again; 2 records of 2 batches were not confirmed" \
        in caplog.text


def test_an_acks_0_request_without_an_answer_leaves_the_window_at_request_timeout_unretried(
        broker, make_sender):
    # Given an acks=0 sender of one request in flight, and a broker that loses the next
    # produce
    sender, accumulator = make_sender(acks=0, in_flight_max=1, request_timeout_ms=200)
    broker.faults.append(DROP)
    # When two records are sent, each its own batch
    lost = send(accumulator, b"lost")
    assert lost.get(GET_TIMEOUT_S).offset == -1
    wait_until(lambda: len(broker.produces()) == 1)
    after = send(accumulator, b"after")
    # Then the second goes once the first waited request_timeout_ms, which is not
    # sent again
    assert after.get(GET_TIMEOUT_S).offset == -1
    wait_until(lambda: broker.record_count() == 1)
    first, second = broker.produces()
    assert second.at_s - first.at_s >= 0.2
    assert [r.value for r in broker.records("t", 0)] == [b"after"]
    assert sender.acks0_records_unconfirmed == 1


# --- Several batches in flight per partition ------------------------------------------

WINDOW = limits.PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX
# Each record of RECORD_VALUE fills a batch of BATCH_BYTES_ONE_RECORD on its own.
RECORD_VALUE_BYTES = 200
BATCH_BYTES_ONE_RECORD = 100


def send_while_held(broker, accumulator, count: int, faults: list) -> list:
    """One record acknowledged (the partition's producer id is then known to the
    broker), then ``count`` records of one batch each sent while the broker holds
    its answers, until a full window of them arrived; returns their futures. The
    held requests meet ``faults``, in order."""
    assert send(accumulator, b"first").get(GET_TIMEOUT_S).offset == 0
    broker.faults.extend(faults)
    broker.hold()
    futures = [send(accumulator, b"%d" % i + b"." * RECORD_VALUE_BYTES) for i in range(count)]
    wait_until(lambda: len(broker.produces()) >= 1 + min(count, WINDOW))
    return futures


def stored_values(broker) -> list[bytes]:
    return [r.value.rstrip(b".") for r in broker.records("t", 0)]


def test_a_window_of_batches_refused_after_a_failed_first_is_resent_in_order_under_one_id(
        broker, make_sender):
    # Given a partition with a full window of one-record batches in flight, more
    # waiting, and a broker that refuses the first of the window as unavailable
    # (so it refuses the rest as sequence gaps)
    _, accumulator = make_sender(batch_bytes_max=BATCH_BYTES_ONE_RECORD)
    futures = send_while_held(broker, accumulator, WINDOW + 3,
                              [UnavailableError("shard restarting")])
    # When the broker answers
    broker.release()
    # Then every future gets the offset its record was stored at, each record once, in order
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == list(range(1, WINDOW + 4))
    assert stored_values(broker) == [b"first"] + [b"%d" % i for i in range(WINDOW + 3)]
    # And the window went out whole before any answer, and was resent in order with
    # the same bytes (same producer id, same sequences), before the batches after it
    payloads = [a.payload for a in broker.produces()]
    window = payloads[1:1 + WINDOW]
    assert [produced_seq(p) for p in window] == list(range(1, WINDOW + 1))
    assert payloads[1 + WINDOW:1 + 2 * WINDOW] == window
    assert len({summarize_batch(p).producer_id for p in payloads}) == 1


def test_a_lost_reply_while_later_batches_were_stored_is_answered_with_its_offsets_not_stored_twice(
        broker, make_sender):
    # Given a full window of batches in flight, more waiting, and a broker that
    # stores the first of the window but loses its reply (it stores the others)
    _, accumulator = make_sender(batch_bytes_max=BATCH_BYTES_ONE_RECORD, request_timeout_ms=300)
    futures = send_while_held(broker, accumulator, WINDOW + 3, [LOSE_REPLY])
    # When the broker answers
    broker.release()
    # Then the first batch's retry gets its original offset and every record is
    # stored once, in order (the batches after the window waited for the first:
    # the broker remembers only the producer's last WINDOW batches)
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == list(range(1, WINDOW + 4))
    assert stored_values(broker) == [b"first"] + [b"%d" % i for i in range(WINDOW + 3)]
    payloads = [a.payload for a in broker.produces()]
    assert payloads.count(payloads[1]) == 2


def test_a_real_gap_at_the_first_batch_takes_a_new_id_once_the_old_ids_batches_settled(
        broker, make_sender):
    # Given a full window in flight; the broker refuses the first as a sequence gap
    # (it lost the producer's state) and loses the others
    _, accumulator = make_sender(batch_bytes_max=BATCH_BYTES_ONE_RECORD, request_timeout_ms=400)
    futures = send_while_held(broker, accumulator, WINDOW,
                              [OutOfOrderSequenceError("expected 0")] + [DROP] * (WINDOW - 1))
    # When the broker answers
    broker.release()
    # Then every record is stored once, in order, the window's under a new producer
    # id from sequence 0
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == list(range(1, WINDOW + 1))
    assert stored_values(broker) == [b"first"] + [b"%d" % i for i in range(WINDOW)]
    arrivals = broker.produces()
    old_id = summarize_batch(arrivals[0].payload).producer_id
    first_new = next(i for i, a in enumerate(arrivals)
                     if summarize_batch(a.payload).producer_id != old_id)
    assert first_new == 1 + WINDOW
    new_ids = {produced(a) for a in arrivals[first_new:]}
    assert sorted(seq for _, seq in new_ids) == list(range(WINDOW))
    assert len({producer_id for producer_id, _ in new_ids}) == 1
    # And no batch under the new id went out while one under the old id was in
    # flight: each old one was answered, or timed out at the sender, before
    request_timeout_s = 0.4
    for old in arrivals[:first_new]:
        settled_s = broker.answered_at_s.get(old.request.request_id,
                                             old.at_s + request_timeout_s)
        assert settled_s <= arrivals[first_new].at_s


def test_a_new_producer_ids_second_batch_waits_for_its_first_to_be_acknowledged(
        broker, make_sender):
    # Given a partition's first batches under a producer id the broker does not
    # know, the first refused as unavailable (a broker takes a producer's first
    # batch at any sequence, so the second, sent at once, would be stored first)
    _, accumulator = make_sender(batch_bytes_max=BATCH_BYTES_ONE_RECORD)
    broker.faults.append(UnavailableError("shard restarting"))
    broker.hold()
    futures = [send(accumulator, b"%d" % i + b"." * RECORD_VALUE_BYTES) for i in range(3)]
    wait_until(lambda: broker.produces())
    # When the broker answers
    broker.release()
    # Then the records are stored once each, in order, at the offsets their futures say
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == [0, 1, 2]
    assert stored_values(broker) == [b"0", b"1", b"2"]


def test_after_a_batch_fails_for_good_unanswered_later_ones_fail_too_rather_than_be_stored_twice(
        broker, make_sender):
    # Given an oldest batch, and a second later the rest of a window; the broker
    # stores each but loses every answer
    _, accumulator = make_sender(batch_bytes_max=BATCH_BYTES_ONE_RECORD, request_timeout_ms=150,
                                 delivery_timeout_ms=1_500, retry_backoff_max_ms=100)
    assert send(accumulator, b"first").get(GET_TIMEOUT_S).offset == 0
    broker.faults.extend([LOSE_REPLY] * 10_000)
    oldest = send(accumulator, b"0" + b"." * RECORD_VALUE_BYTES)
    time.sleep(1.0)   # not a synchronisation: the later batches outlive the oldest's delivery timeout
    later = [send(accumulator, b"%d" % i + b"." * RECORD_VALUE_BYTES) for i in range(1, WINDOW)]
    # When the oldest fails for good, and the broker answers again
    with pytest.raises(PlinthTimeoutError, match="delivery_timeout_ms=1500"):
        oldest.get(GET_TIMEOUT_S)
    broker.faults.clear()
    # Then the later ones, whose last attempts got no answer either, fail as maybe
    # stored, rather than be sent again under a new producer id, naming the error of
    # that attempt as such (not "no answer" before an answer that said maybe stored)
    for future in later:
        with pytest.raises(PlinthTimeoutError, match=r"may or may not have been stored under "
                                                     r"producer id \d+: its last attempt's "
                                                     r"outcome is unknown \(PlinthTimeoutError: "):
            future.get(GET_TIMEOUT_S)
    # And nothing was stored twice
    assert stored_values(broker) == [b"first"] + [b"%d" % i for i in range(WINDOW)]
    # And the partition goes on under a new producer id, from sequence 0
    assert send(accumulator, b"next").get(GET_TIMEOUT_S).offset == 1 + WINDOW
    next_id, next_seq = produced(broker.produces()[-1])
    assert next_id != produced(broker.produces()[0])[0] and next_seq == 0


def produced_seq(payload: bytes) -> int:
    return summarize_batch(payload).base_sequence


# --- Without idempotence (acks=0 or 1, or enable_idempotence=False) ---------------------

def test_acks_1_without_idempotence_retries_a_batch_refused_with_not_leader_and_delivers_it(
        broker, make_sender):
    # Given a partition whose shard refuses the first produce: it no longer leads it
    broker.faults.append(NotLeaderError("t-0: this shard no longer leads it"))
    _, accumulator = make_sender(acks=1, idempotent=False)
    # When a sender without idempotence sends a record
    # Then it is retried, unchanged and without a producer id, and stored once
    assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    arrivals = broker.produces()
    assert len(arrivals) == 2 and arrivals[0].payload == arrivals[1].payload
    assert produced(arrivals[0]) == (-1, -1)
    assert [r.value for r in broker.records("t", 0)] == [b"a"]


def test_without_idempotence_an_error_that_is_not_retriable_fails_the_batch_at_once(
        broker, make_sender):
    # Given a shard that refuses a produce for a passing reason, then its retry for
    # one that lasts (the batch is over its limit)
    broker.faults.extend([NotLeaderError("t-0: this shard no longer leads it"),
                          RecordTooLargeError("batch of 9 bytes over the limit of 8 bytes"),
                          NotLeaderError("never reached")])
    _, accumulator = make_sender(acks=1, idempotent=False)
    # When a sender without idempotence sends a record
    # Then it fails with the lasting error, after the one retry, not retried again
    with pytest.raises(RecordTooLargeError, match="over the limit of 8 bytes"):
        send(accumulator, b"a").get(GET_TIMEOUT_S)
    assert len(broker.produces()) == 2 and broker.record_count() == 0


# --- A batch refused as too large is split ---------------------------------------

def send_batch_held(broker, accumulator, values: list[bytes]) -> list:
    """Send ``values`` to t-0 as one batch: the first request is held until all are in."""
    broker.hold()
    futures = [send(accumulator, value) for value in values]
    accumulator.begin_flush()
    wait_until(lambda: broker.produces())
    broker.release()
    accumulator.end_flush()
    return futures


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_batch_refused_as_too_large_is_split_until_its_pieces_fit_and_every_record_is_stored_once(
        broker, make_sender, idempotent):
    # Given a topic that takes batches of at most 400 bytes, and a producer whose first
    # batch, of 16 records of 50 bytes, encodes to more
    broker.batch_bytes_max = 400
    _, accumulator = make_sender(linger_ms=10_000, acks=-1 if idempotent else 1,
                                 idempotent=idempotent)
    values = [b"%02d" % n + b"v" * 48 for n in range(16)]
    futures = [send(accumulator, value) for value in values]
    # When it is sent (a flush), refused, and sent again in pieces
    accumulator.begin_flush()
    offsets = [f.get(GET_TIMEOUT_S).offset for f in futures]
    accumulator.end_flush()
    # Then every record was stored once, in order, each future naming its own offset
    stored = broker.records("t", 0)
    assert [r.value for r in stored] == values
    assert offsets == [r.offset for r in stored] == list(range(16))
    # And no batch stored is over the limit, after refusals of the halves too large
    sizes = [len(a.payload) for a in broker.produces()]
    assert sizes[0] > 400 and sum(size <= 400 for size in sizes) >= 2
    if idempotent:   # the pieces took the first batch's sequence numbers, in order
        sequences = sorted(produced(a)[1] for a in broker.produces() if len(a.payload) <= 400)
        counts = [summarize_batch(a.payload).record_count
                  for a in sorted(broker.produces(), key=lambda a: produced(a)[1])
                  if len(a.payload) <= 400]
        assert sequences[0] == 0
        assert all(b - a == n for a, b, n in zip(sequences, sequences[1:], counts))


def test_the_batches_after_a_split_one_keep_their_sequences_and_are_stored_after_its_pieces(
        broker, make_sender):
    # Given a topic taking batches of at most 300 bytes, an idempotent producer, and a
    # batch of 8 records that is too large followed by small batches in flight with it
    broker.batch_bytes_max = 300
    _, accumulator = make_sender(acks=-1, batch_bytes_max=800)
    first = [send(accumulator, b"%02d" % n + b"x" * 48) for n in range(8)]
    assert [f.get(GET_TIMEOUT_S).offset for f in first] == list(range(8))
    producer_id = produced(broker.produces()[-1])[0]
    # When a too-large batch goes with later ones in flight behind it
    big = [b"b%02d" % n + b"y" * 47 for n in range(8)]
    futures = send_batch_held(broker, accumulator, big)
    later = [send(accumulator, b"later%d" % n) for n in range(3)]
    # Then every record is stored once, the later ones after the big batch's
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == list(range(8, 16))
    assert [f.get(GET_TIMEOUT_S).offset for f in later] == [16, 17, 18]
    assert [r.value for r in broker.records("t", 0)][8:] == big + [b"later%d" % n
                                                                  for n in range(3)]
    # And under one producer id: the split took no new one
    assert {produced(a)[0] for a in broker.produces()} == {producer_id}


def test_a_record_too_large_alone_fails_and_the_rest_of_its_batch_is_stored(broker, make_sender):
    # Given a topic taking batches of at most 300 bytes
    broker.batch_bytes_max = 300
    _, accumulator = make_sender(acks=-1, linger_ms=10_000)
    # When one batch holds small records and one that is too large alone
    values = [b"a" * 10, b"b" * 10, b"c" * 400, b"d" * 10]
    futures = [send(accumulator, value) for value in values]
    accumulator.begin_flush()
    # Then that record fails with the shard's refusal, and the others are stored
    with pytest.raises(RecordTooLargeError, match="max.message.bytes=300"):
        futures[2].get(GET_TIMEOUT_S)
    accumulator.end_flush()
    assert [r.value for r in broker.records("t", 0)] == [b"a" * 10, b"b" * 10, b"d" * 10]
    assert [futures[i].get(GET_TIMEOUT_S).offset for i in (0, 1, 3)] == [0, 1, 2]
    # And the batch's result counts the records acknowledged, for `plinth produce`
    assert futures[0].batch.records_acknowledged(4) == 3
    assert isinstance(futures[0].batch.error, RecordTooLargeError)


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_batch_refused_for_a_partition_that_does_not_exist_fails_and_has_the_count_asked_again(
        broker, make_sender, idempotent):
    # Given a sender whose producer learnt that the topic has 2 partitions, a while ago
    sender, accumulator = make_sender(acks=-1 if idempotent else 1, idempotent=idempotent)
    clock_s = [0.0]
    counts = PartitionCounts(accumulator, metadata_max_age_ms=60_000, clock=lambda: clock_s[0])
    counts.learned("t", 2)
    sender.partition_counts = counts
    clock_s[0] += limits.PRODUCER_METADATA_REFRESH_MS_MIN / 1000
    # When the topic is re-created with 1, and a batch of partition 1 is sent
    broker.topics["t"] = 1
    # Then the batch fails with the broker's error, once, not retried nor placed again
    with pytest.raises(PartitionOutOfRangeError, match=r"t\[1\] does not exist"):
        send(accumulator, b"a", partition=1).get(GET_TIMEOUT_S)
    assert len(broker.produces()) == 1 and broker.record_count() == 0
    # And the topic's count is due to be asked before the next record is placed
    assert counts.current == {} and counts.due("t")


def test_without_idempotence_retries_stop_at_delivery_timeout_naming_the_attempts_and_last_error(
        broker, make_sender):
    # Given a partition whose shard keeps refusing produces: it no longer leads it
    broker.faults.extend([NotLeaderError("t-0: this shard no longer leads it")] * 1000)
    _, accumulator = make_sender(acks=1, idempotent=False, request_timeout_ms=150,
                                 delivery_timeout_ms=500, retry_backoff_ms=20,
                                 retry_backoff_max_ms=100)
    started_s = time.monotonic()
    # When a sender without idempotence sends a record
    # Then it fails at its delivery deadline, naming how many attempts went out and
    # the refusal that ended the last one
    with pytest.raises(PlinthTimeoutError,
                       match=r"delivery_timeout_ms=500.* (\d+) attempts.*last error: "
                             r"t-0: this shard no longer leads it") as failure:
        send(accumulator, b"lost").get(GET_TIMEOUT_S)
    assert time.monotonic() - started_s >= 0.5
    attempts = int(re.search(r"(\d+) attempts", str(failure.value)).group(1))
    assert attempts == len(broker.produces()) >= 3 and broker.record_count() == 0


def test_without_idempotence_a_lost_reply_is_retried_and_the_batch_may_be_stored_twice(
        broker, make_sender):
    # Given a shard that stores the first produce but loses its reply
    broker.faults.append(LOSE_REPLY)
    _, accumulator = make_sender(acks=1, idempotent=False, request_timeout_ms=300)
    # When a sender without idempotence sends a record
    # Then its retry is acknowledged, and, as with Kafka's producer without
    # idempotence, the shard could not tell it from a new batch: it is stored twice
    assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 1
    assert [r.value for r in broker.records("t", 0)] == [b"a", b"a"]


def test_without_idempotence_and_one_request_in_flight_a_retried_batch_keeps_its_order(
        broker, make_sender):
    # Given one request in flight at most, one-record batches, and a shard that
    # refuses the first produce as unavailable
    broker.faults.append(UnavailableError("shard restarting"))
    _, accumulator = make_sender(acks=1, idempotent=False, in_flight_max=1,
                                 batch_bytes_max=BATCH_BYTES_ONE_RECORD)
    # When three records are sent, one batch each
    futures = [send(accumulator, b"%d" % i + b"." * RECORD_VALUE_BYTES) for i in range(3)]
    # Then the refused one is retried before the batches after it: stored in order
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == [0, 1, 2]
    assert stored_values(broker) == [b"0", b"1", b"2"]
    assert len(broker.produces()) == 4


def test_without_idempotence_a_retried_batch_may_be_stored_after_a_later_one_in_flight(
        broker, make_sender):
    # Given one-record batches, three in flight at once, and a shard that refuses the
    # first as unavailable and stores the two after it
    broker.faults.append(UnavailableError("shard restarting"))
    broker.hold()
    _, accumulator = make_sender(acks=1, idempotent=False, batch_bytes_max=BATCH_BYTES_ONE_RECORD)
    futures = [send(accumulator, b"%d" % i + b"." * RECORD_VALUE_BYTES) for i in range(3)]
    wait_until(lambda: len(broker.produces()) == 3)
    # When the shard answers
    broker.release()
    # Then the refused batch is retried and stored after the later ones, as a retry
    # without idempotence may be in Kafka (max.in.flight.requests.per.connection > 1)
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == [2, 0, 1]
    assert stored_values(broker) == [b"1", b"2", b"0"]


def test_without_idempotence_records_arriving_while_a_request_is_in_flight_go_in_a_few_batches(
        broker, make_sender):
    # Given one request in flight at most, a linger of 1 ms, and a first batch whose
    # answer the shard holds
    _, accumulator = make_sender(acks=1, idempotent=False, in_flight_max=1, linger_ms=1)
    broker.hold()
    first = send(accumulator, b"first")
    wait_until(lambda: len(broker.produces()) == 1)
    # When 50 records arrive while it is in flight, one every 5 ms (the arrival
    # rate: many lingers pass between records)
    futures = []
    for i in range(50):
        futures.append(send(accumulator, b"%d" % i))
        time.sleep(0.005)
    # And a flush begins before the shard answers
    pending = accumulator.begin_flush()
    broker.release()
    # Then the flush ends, all 50 are stored after the first, and in a few produce
    # requests (the open batch grew while one sealed batch waited), not one per linger
    try:
        assert all(result.wait(GET_TIMEOUT_S) for result in pending)
    finally:
        accumulator.end_flush()
    assert first.get(0).offset == 0
    assert [f.get(0).offset for f in futures] == list(range(1, 51))
    assert len(broker.produces()) - 1 <= 3


def test_acks_0_retries_a_batch_it_could_not_send_and_delivers_it_once_a_router_is_back(
        broker, make_sender, caplog):
    # Given a sender with acks=0 and two routers, both gone (with several routers a
    # request waits only for one that is up: client/connection.py)
    gone = ProduceBroker({"t": 2})
    gone.close()
    broker.close()
    _, accumulator = make_sender(acks=0, idempotent=False, retry_backoff_ms=50,
                                 url=f"{broker.url},{gone.url}")
    with caplog.at_level(logging.INFO, logger="plinth.client.sender"):
        # When a record is sent, and its send fails: no router is reachable
        future = send(accumulator, b"a")
        wait_until(lambda: "retrying t-0" in caplog.text)
        assert "none of the routers" in caplog.text
        # Then it is sent again until a router answers at one of the addresses, and
        # stored once
        back = ProduceBroker({"t": 2}, broker.url)
        try:
            assert future.get(GET_TIMEOUT_S).offset == -1
            wait_until(lambda: back.record_count() == 1)
            assert [r.value for r in back.records("t", 0)] == [b"a"]
        finally:
            back.close()


# --- Failures stay with their batch ----------------------------------------------------

def test_a_batch_that_cannot_be_encoded_fails_alone_and_the_sender_goes_on(
        broker, make_sender, monkeypatch):
    # Given a sender whose accumulator took a 5,000-byte record, and then a batch
    # limit of 2,000 bytes, so that its batch cannot be encoded
    sender, accumulator = make_sender(linger_ms=60_000)
    big = send(accumulator, b"x" * 5_000, partition=0)
    small = send(accumulator, b"small", partition=1)
    monkeypatch.setattr(limits, "BATCH_BYTES_MAX", 2_000)
    # When both batches are flushed
    accumulator.begin_flush()
    # Then only the big one fails, with the encoder's error, and nothing of it is stored
    with pytest.raises(RecordTooLargeError, match="over the limit of 2000 bytes"):
        big.get(GET_TIMEOUT_S)
    assert small.get(GET_TIMEOUT_S).offset == 0
    # And the sender goes on: the partition takes the next record at offset 0
    assert send(accumulator, b"after", partition=0).get(GET_TIMEOUT_S).offset == 0
    assert sender._thread.is_alive()


def test_a_reply_that_does_not_decode_is_dropped_and_its_request_retried(
        broker, make_sender, caplog):
    # Given a broker whose first answer is not a Reply
    broker.faults.append(GARBAGE)
    _, accumulator = make_sender(request_timeout_ms=300)
    # When a record is sent / Then it is stored once after a retry, and the
    # dropped reply is logged
    with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
        assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    assert len(broker.produces()) == 2 and broker.record_count() == 1
    assert f"dropped a reply from {broker.url}" in caplog.text


def test_a_callback_that_raises_is_logged_and_every_other_callback_still_runs(
        broker, make_sender, caplog):
    # Given a sender that holds a batch open, with two callbacks on its record:
    # the first raises
    _, accumulator = make_sender(linger_ms=60_000)
    future = send(accumulator, b"a")
    later = []
    future.add_callback(lambda metadata: 1 / 0)
    future.add_callback(later.append)
    # When the batch is acknowledged
    with caplog.at_level(logging.ERROR, logger="plinth.client.futures"):
        accumulator.begin_flush()
        future.get(GET_TIMEOUT_S)
        wait_until(lambda: accumulator.empty())
    # Then the second callback ran, the error was logged, and the batch's bytes
    # went back to the buffer
    assert [m.offset for m in later] == [0]
    assert "ZeroDivisionError" in caplog.text
    assert accumulator.appender.buffered_bytes == 0
    # And the next record is delivered
    assert send(accumulator, b"b").get(GET_TIMEOUT_S).offset == 1


# --- Close ----------------------------------------------------------------------------

def test_close_sends_what_is_pending_before_it_stops(broker, make_sender):
    # Given records waiting in an open batch (linger 200 ms)
    sender, accumulator = make_sender(linger_ms=200)
    futures = [send(accumulator, b"%d" % i) for i in range(5)]
    # When the sender is closed without a timeout
    sender.close(None)
    # Then every record was stored and acknowledged, and the thread is gone
    assert [f.get(0).offset for f in futures] == [0, 1, 2, 3, 4]
    assert broker.record_count() == 5 and not sender._thread.is_alive()


def test_close_with_a_timeout_fails_what_was_not_acknowledged_with_closed_error(
        broker, make_sender):
    # Given a broker that loses every produce request
    broker.faults.extend([DROP] * 1000)
    sender, accumulator = make_sender()
    future = send(accumulator, b"a")
    wait_until(lambda: broker.produces())
    # When the sender is closed with a timeout of 300 ms
    started_s = time.monotonic()
    sender.close(0.3)
    # Then it returns soon after, and the record's future fails with ClosedError
    # saying it was sent: the broker may have stored it
    assert time.monotonic() - started_s < 3 and not sender._thread.is_alive()
    with pytest.raises(ClosedError, match="it was sent, so it may have been stored"):
        future.get(0)


def test_close_with_a_timeout_says_a_batch_waiting_to_be_retried_may_be_stored_and_a_later_was_not(
        broker, make_sender, caplog):
    # Given a sender without idempotence whose first batch was refused, waiting a
    # long backoff to be retried, and a record sent after it
    broker.faults.append(NotLeaderError("t-0: this shard no longer leads it"))
    sender, accumulator = make_sender(acks=1, idempotent=False, retry_backoff_ms=60_000,
                                      retry_backoff_max_ms=60_000)
    with caplog.at_level(logging.INFO, logger="plinth.client.sender"):
        retried = send(accumulator, b"a")
        wait_until(lambda: "produce to t-0 failed" in caplog.text)
    later = send(accumulator, b"b")
    # When the sender is closed with a timeout
    sender.close(0.3)
    # Then the batch that was sent once fails saying it may have been stored (its
    # first attempt's outcome could have been unknown), the later one saying it
    # was never sent
    with pytest.raises(ClosedError, match="before the record was acknowledged; it was sent"):
        retried.get(0)
    with pytest.raises(ClosedError, match="before the record was sent"):
        later.get(0)


def test_close_with_nothing_pending_returns_at_once(make_sender):
    sender, _ = make_sender()
    started_s = time.monotonic()
    sender.close(5)
    assert time.monotonic() - started_s < 2 and not sender._thread.is_alive()


# --- Compression (client/compression.py) ---------------------------------------------

@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_with_compression_each_batch_goes_as_a_kafka_batch_of_the_codec_and_reads_back(
        broker, make_sender, codec):
    # Given a sender that compresses with the codec
    _, accumulator = make_sender(compression=codec, linger_ms=50)
    # When records go to a partition
    values = [b'{"event": "click", "user": %d}' % i for i in range(200)]
    futures = [send(accumulator, value) for value in values]
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == list(range(200))
    # Then every produce said Kafka's format and carried a batch of that codec
    arrivals = broker.produces()
    assert {a.request.batch_format for a in arrivals} == {BATCH_FORMAT_KAFKA_V2}
    assert {kafka_header(a.payload)["attributes"] & 7 for a in arrivals} == {codec}
    # And the records read back as sent
    assert [r.value for r in broker.records("t", 0)] == values


def test_a_lost_reply_of_a_compressed_batch_is_retried_with_the_same_bytes_and_stored_once(
        broker, make_sender):
    # Given a broker that stores the first produce but loses its reply
    broker.faults.append(LOSE_REPLY)
    _, accumulator = make_sender(compression=4, request_timeout_ms=300)
    # When a record is sent, and another after it
    assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    assert send(accumulator, b"b").get(GET_TIMEOUT_S).offset == 1
    # Then the retry was the same compressed bytes (same producer id and sequence,
    # which the Kafka batch keeps), and the shard's check stored the record once
    arrivals = broker.produces()
    assert arrivals[0].payload == arrivals[1].payload
    summary = summarize_kafka_batch(arrivals[0].payload)
    assert summary.producer_id >= 0 and summary.base_sequence == 0
    assert [r.value for r in broker.records("t", 0)] == [b"a", b"b"]


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_batch_that_waits_to_be_sent_past_delivery_timeout_fails_though_it_never_went_out(
        broker, make_sender, idempotent):
    # Given a sender that can send nothing (no request may be in flight), so that a
    # batch waits in its partition's queue (or pipeline) and never leaves it
    _, accumulator = make_sender(in_flight_max=0, idempotent=idempotent, request_timeout_ms=200,
                                 delivery_timeout_ms=400)
    # When a record is sent / Then it fails at its delivery deadline, saying that it
    # was never sent, so not stored
    with pytest.raises(PlinthTimeoutError, match=r"within delivery_timeout_ms=400 and was not "
                                                 r"stored \(it was never sent\): it waited "
                                                 r"\d+ ms$"):
        send(accumulator, b"stuck").get(5)
    assert broker.produces() == []


def test_a_request_in_flight_waits_at_most_until_its_batch_s_delivery_deadline(
        broker, make_sender):
    # Given a broker that loses every produce request, and a delivery timeout only a
    # little longer than a request's: a retry goes out before the deadline
    broker.faults.extend([DROP] * 1000)
    _, accumulator = make_sender(request_timeout_ms=2_000, delivery_timeout_ms=2_400)
    started_s = time.monotonic()
    # When a record is sent / Then it fails at its delivery deadline, its retry cut
    # short, not a whole request_timeout_ms after it, said as a batch that expired
    # while waiting is (one message for one condition, whichever path saw it), and
    # saying first that it was sent, so that it may have been stored
    with pytest.raises(PlinthTimeoutError,
                       match=r"t-0: a batch of 1 records was not acknowledged within "
                             r"delivery_timeout_ms=2400 and may have been stored \(it was "
                             r"sent, 2 attempts: its outcome is unknown\): it waited \d+ ms; "
                             r"last error: "):
        send(accumulator, b"lost").get(GET_TIMEOUT_S)
    took_s = time.monotonic() - started_s
    assert len(broker.produces()) == 2
    assert 2.4 <= took_s < 3.4   # was 4 s: the retry waited a whole request_timeout_ms


RESERVE_REFUSAL = "/data/shards/shard-0's file system has 100 bytes free: below the reserve"
FAILED_WRITE = "cannot append to /data/shards/shard-0/t-0/00000000000000000000.log: EIO"


NOT_ENOUGH_REPLICAS = "t-0: 1 in-sync replicas ['s0'], fewer than min.insync.replicas 2"


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("refusal", [DiskReserveRefusedError(RESERVE_REFUSAL),
                                     NotEnoughReplicasBeforeWriteError(NOT_ENOUGH_REPLICAS)])
def test_a_batch_refused_before_the_append_at_every_attempt_fails_saying_it_was_not_stored(
        broker, make_sender, idempotent, refusal):
    # Given a shard that refuses every produce before the append (its disk reserve, or
    # an in-sync set already below min.insync.replicas), so answered with beforeWrite set
    broker.faults.extend([refusal] * 1000)
    _, accumulator = make_sender(idempotent=idempotent, request_timeout_ms=200,
                                 delivery_timeout_ms=400)
    # When a record is sent / Then it fails at its delivery deadline saying that it was
    # sent but not stored, as each attempt was refused before the append
    with pytest.raises(PlinthTimeoutError,
                       match=r"delivery_timeout_ms=400 and was not stored \(it was sent, \d+ "
                             r"attempts, each refused before it was stored\): it waited \d+ ms; "
                             r"last error: " + re.escape(str(refusal))):
        send(accumulator, b"no room").get(GET_TIMEOUT_S)
    assert len(broker.produces()) >= 2 and broker.record_count() == 0


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_batch_whose_write_failed_once_fails_saying_it_may_have_been_stored_despite_later_refusals(
        broker, make_sender, idempotent):
    # Given a shard whose first append fails (a write or an fsync: bytes may be in the
    # log), and whose disk reserve refuses every retry
    broker.faults.extend([StorageError(FAILED_WRITE)]
                         + [DiskReserveRefusedError(RESERVE_REFUSAL)] * 1000)
    _, accumulator = make_sender(idempotent=idempotent, request_timeout_ms=200,
                                 delivery_timeout_ms=400)
    # When a record is sent / Then it fails at its delivery deadline saying that it may
    # have been stored: the later refusals do not undo what the first attempt did
    with pytest.raises(PlinthTimeoutError,
                       match=r"delivery_timeout_ms=400 and may have been stored \(it was sent, "
                             r"\d+ attempts: its outcome is unknown\)"):
        send(accumulator, b"maybe").get(GET_TIMEOUT_S)
    assert len(broker.produces()) >= 2


# --- What an outage logs (once per partition, not per retry) ----------------------------

def sender_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "plinth.client.sender" and r.levelno == logging.WARNING]


def test_a_partition_that_starts_failing_is_warned_of_once_and_its_recovery_logged_once(
        broker, make_sender, caplog):
    # Given a broker that answers the first three produces "unavailable"
    broker.faults.extend([UnavailableError("shard restarting")] * 3)
    _, accumulator = make_sender(delivery_timeout_ms=20_000)
    # When a record is sent and acknowledged after three retries
    with caplog.at_level(logging.INFO, logger="plinth.client.sender"):
        assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    # Then one WARNING named the partition, the error and how long it is retried
    assert sender_warnings(caplog) == [
        "produce to t-0 failed: UnavailableError: shard restarting; retrying its batches "
        "until each is acknowledged or delivery_timeout_ms=20000 after it was created (the "
        "first retry in 20 ms; retries are logged at INFO)"]
    # And one INFO line said it delivers again, after how many failed attempts
    recovered = [r.getMessage() for r in caplog.records if "acknowledged again" in r.getMessage()]
    assert len(recovered) == 1 and caplog.records[-1].levelno == logging.INFO
    assert re.fullmatch(r"produce to t-0 acknowledged again after \d+\.\d s failing: 3 attempts "
                        r"failed \(the last: UnavailableError: shard restarting\)", recovered[0])


def test_batches_out_of_time_in_an_outage_are_warned_of_once_per_partition(
        broker, make_sender, caplog):
    # Given a broker that loses every produce request
    broker.faults.extend([DROP] * 1000)
    _, accumulator = make_sender(request_timeout_ms=100, delivery_timeout_ms=300)
    # When two records fail, one after the other, out of time
    with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
        for value in (b"a", b"b"):
            with pytest.raises(PlinthTimeoutError):
                send(accumulator, value).get(GET_TIMEOUT_S)
    # Then the partition's failing and its first batch out of time were warned of, once
    # each, though both batches were retried and failed
    warnings = sender_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("produce to t-0 failed: PlinthTimeoutError: no "
                                  "acknowledgement from ")
    assert warnings[1].startswith("t-0: a batch of 1 records was not acknowledged within "
                                  "delivery_timeout_ms=300 and may have been stored")
    assert warnings[1].endswith("; later batches of t-0 that run out of time before one is "
                                "acknowledged are not logged (each record's future raises "
                                "its error)")


def test_a_close_whose_timeout_fails_records_warns_once_saying_how_many_and_why(
        broker, make_sender, caplog):
    # Given a broker that loses every produce request, a record sent, and two more
    # that wait behind it (never sent: the partition waits for its first batch)
    broker.faults.extend([DROP] * 1000)
    sender, accumulator = make_sender()
    sent = send(accumulator, b"a")
    wait_until(lambda: broker.produces())
    unsent = [send(accumulator, b"b"), send(accumulator, b"c")]
    # When the sender is closed with a timeout of 300 ms
    with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
        sender.close(0.3)
    # Then one WARNING says how many records were not delivered, and why
    assert sender_warnings(caplog)[-1] == (
        "producer closed with 3 records not delivered: 2 unacknowledged when the close ended "
        "(never sent, so not stored), 1 unacknowledged when the close ended (sent, so they "
        "may have been stored); each record's future raises its error")
    # And each future still raises its own error
    with pytest.raises(ClosedError, match="it was sent"):
        sent.get(0)
    for future in unsent:
        with pytest.raises(ClosedError, match="before the record was sent"):
            future.get(0)


def test_a_close_that_waited_out_delivery_timeouts_warns_once_saying_how_many_and_why(
        broker, make_sender, caplog):
    # Given a broker that loses every produce request, and a record sent
    broker.faults.extend([DROP] * 1000)
    sender, accumulator = make_sender(request_timeout_ms=100, delivery_timeout_ms=300)
    future = send(accumulator, b"a")
    # When the sender is closed without a timeout: it waits for the record's deadline
    with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
        sender.close(None)
    # Then the close's warning says the record ran out of time, and may be stored
    assert sender_warnings(caplog)[-1] == (
        "producer closed with 1 records not delivered: 1 not acknowledged within "
        "delivery_timeout_ms=300 (sent, so they may have been stored); each record's future "
        "raises its error")
    with pytest.raises(PlinthTimeoutError, match="may have been stored"):
        future.get(0)


def test_a_close_with_every_record_delivered_warns_of_nothing(broker, make_sender, caplog):
    sender, accumulator = make_sender()
    assert send(accumulator, b"a").get(GET_TIMEOUT_S).offset == 0
    with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
        sender.close(5)
    assert sender_warnings(caplog) == []
