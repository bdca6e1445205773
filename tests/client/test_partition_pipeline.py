"""Specification of plinth.client.partition_pipeline.PartitionPipeline: which batch of
a partition goes next, and what each outcome does to the rest.

The pipeline is driven here as the sender drives it, with real sealed batches
(OpenBatch, with a record each) and the accumulator's own ``complete`` replaced
by a list of the outcomes, which is what the sender would hand to it.
"""

from __future__ import annotations

import pytest

from plinth import limits
from plinth.client.accumulator import OpenBatch
from plinth.client.partition_pipeline import PartitionPipeline
from plinth.errors import OutOfOrderSequenceError, PlinthTimeoutError, UnavailableError
from plinth.format.record_batch import summarize_batch

WINDOW = limits.PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX
NOW_S = 1_000.0
BACKOFF_S = 0.1


class Completed:
    """Stands in for RecordAccumulator.complete: resolves the batch, keeps the outcome."""

    def __init__(self):
        self.numbers: dict[int, int] = {}         # id(batch) -> its number
        self.outcomes: dict[int, tuple] = {}      # number -> (base offset, error)

    def __call__(self, batch: OpenBatch, base_offset, error) -> None:
        batch.result.resolve(base_offset, error)
        self.outcomes[self.numbers[id(batch)]] = (base_offset, error)


def pipeline_with(count: int) -> tuple[PartitionPipeline, list[OpenBatch], Completed]:
    completed = Completed()
    pipeline = PartitionPipeline("t", 0, completed)
    batches = []
    for n in range(count):
        batch = OpenBatch("t", 0)
        batch.builder.append(None, b"%d" % n, 0)
        completed.numbers[id(batch)] = n
        pipeline.add(batch)
        batches.append(batch)
    return pipeline, batches, completed


def send_all(pipeline: PartitionPipeline, now_s: float = NOW_S) -> list[OpenBatch]:
    """Send what the pipeline lets go now, as the sender's loop does; what went."""
    sent = []
    while (batch := pipeline.next_to_send(now_s)) is not None:
        pipeline.encode(batch)
        pipeline.sent(batch)
        sent.append(batch)
    return sent


def confirmed_pipeline_with(count: int):
    """A pipeline whose first batch (not among the ``count`` returned) was acknowledged."""
    pipeline, batches, completed = pipeline_with(count + 1)
    [first] = send_all(pipeline)
    pipeline.acknowledged(first, 0)
    return pipeline, batches[1:], completed


def sequence(batch: OpenBatch) -> tuple[int, int]:
    summary = summarize_batch(batch.encoded)
    return summary.producer_id, summary.base_sequence


def test_a_new_producer_id_has_one_batch_in_flight_until_its_first_is_acknowledged():
    pipeline, batches, _ = pipeline_with(3)
    assert send_all(pipeline) == batches[:1]
    pipeline.acknowledged(batches[0], 0)
    assert send_all(pipeline) == batches[1:]


def test_at_most_a_window_of_batches_is_sent_counting_acknowledged_ones_behind_the_first():
    # Given a window in flight, and more batches waiting
    pipeline, batches, completed = confirmed_pipeline_with(WINDOW + 2)
    assert send_all(pipeline) == batches[:WINDOW]
    assert pipeline.muted()
    # When every batch but the first of the window is acknowledged
    for n, batch in enumerate(batches[1:WINDOW], start=2):
        pipeline.acknowledged(batch, n)
    # Then their futures resolve, and nothing more goes: the shard remembers the
    # producer's last WINDOW batches, and the first must stay among them
    assert sorted(completed.outcomes) == [0] + list(range(2, WINDOW + 1))
    assert send_all(pipeline) == []
    # And once the first is acknowledged the next ones go
    pipeline.acknowledged(batches[0], 1)
    assert send_all(pipeline) == batches[WINDOW:]


def test_a_retriable_error_rewinds_once_every_batch_in_flight_settled_same_bytes_in_order():
    # Given a window in flight; the first fails (unavailable), the others are
    # refused as gaps
    pipeline, batches, completed = confirmed_pipeline_with(WINDOW)
    send_all(pipeline)
    first_bytes = [batch.encoded for batch in batches]
    pipeline.refused(batches[0], UnavailableError("down"), BACKOFF_S, NOW_S)
    for batch in batches[1:-1]:
        pipeline.refused(batch, OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    # Then nothing goes while one is still in flight, nor before the first's backoff
    assert pipeline.muted() and send_all(pipeline, NOW_S + 1) == []
    pipeline.refused(batches[-1], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    assert send_all(pipeline, NOW_S) == []
    # And after it the window goes again, in order, with the same bytes
    assert send_all(pipeline, NOW_S + BACKOFF_S) == batches
    assert [batch.encoded for batch in batches] == first_bytes
    assert completed.outcomes.keys() == {0}


def test_a_gap_at_the_first_unacknowledged_batch_takes_a_new_id_from_sequence_0():
    pipeline, batches, _ = confirmed_pipeline_with(3)
    send_all(pipeline)
    old_id = pipeline.producer_id
    pipeline.refused(batches[0], OutOfOrderSequenceError("lost state"), BACKOFF_S, NOW_S)
    pipeline.refused(batches[1], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    # While one batch of the old id is in flight, nothing goes
    assert send_all(pipeline) == []
    pipeline.refused(batches[2], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    # Then the batches go again under a new id, one at first
    assert send_all(pipeline) == batches[:1]
    assert sequence(batches[0]) == (pipeline.producer_id, 0) and pipeline.producer_id != old_id


def test_a_gap_answered_to_a_batch_sent_behind_an_unacknowledged_one_keeps_the_id():
    # Given two batches in flight that overtook each other on the way: the second
    # is refused as a gap, then the first acknowledged
    pipeline, batches, completed = confirmed_pipeline_with(2)
    send_all(pipeline)
    old_id = pipeline.producer_id
    pipeline.refused(batches[1], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    pipeline.acknowledged(batches[0], 1)
    # Then the second goes again, unchanged, at once
    assert send_all(pipeline) == batches[1:]
    assert sequence(batches[1]) == (old_id, 2)


def test_a_batch_that_fails_for_good_leaves_and_the_next_go_under_a_new_id():
    pipeline, batches, completed = confirmed_pipeline_with(3)
    send_all(pipeline)
    old_id = pipeline.producer_id
    error = PlinthTimeoutError("delivery timeout")
    pipeline.failed(batches[0], error, OutOfOrderSequenceError("refused"), was_in_flight=True)
    pipeline.refused(batches[1], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    pipeline.refused(batches[2], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    assert completed.outcomes[1] == (None, error)
    assert send_all(pipeline) == batches[1:2]
    assert sequence(batches[1]) == (pipeline.producer_id, 0) and pipeline.producer_id != old_id


def pieces_of(batch: OpenBatch, values: list[bytes]) -> list[OpenBatch]:
    """Two batches carrying ``batch``'s records, as RecordAccumulator.split makes them."""
    pieces = []
    for part in (values[:len(values) // 2], values[len(values) // 2:]):
        piece = OpenBatch("t", 0)
        for value in part:
            piece.builder.append(None, value, 0)
        pieces.append(piece)
    return pieces


def test_the_pieces_of_a_batch_refused_as_too_large_take_its_place_and_its_sequences():
    # Given a window in flight whose second batch (sequence 2) has 4 records
    pipeline, batches, completed = confirmed_pipeline_with(3)
    values = [b"a", b"b", b"c", b"d"]
    for value in values[1:]:
        batches[1].builder.append(None, value, 0)
    send_all(pipeline)
    producer_id = pipeline.producer_id
    later_sequence = sequence(batches[2])
    # When the shard refuses it as too large, and the batch after it as a gap
    pieces = pieces_of(batches[1], values)
    pipeline.split(batches[1], pieces)
    assert send_all(pipeline) == []   # nothing goes while a batch is in flight
    pipeline.refused(batches[2], OutOfOrderSequenceError("gap"), BACKOFF_S, NOW_S)
    assert send_all(pipeline) == []   # nor while the first is
    pipeline.acknowledged(batches[0], 1)
    # Then once settled the pieces and the later batch go, in order, the pieces under
    # the refused batch's sequences and the later batch under its own
    assert send_all(pipeline) == [*pieces, batches[2]]
    assert [sequence(p) for p in pieces] == [(producer_id, 2), (producer_id, 4)]
    assert sequence(batches[2]) == later_sequence == (producer_id, 6)
    assert completed.outcomes == {0: (0, None), 1: (1, None)}   # only the acknowledged


@pytest.mark.parametrize("later_error, later_fails", [
    (PlinthTimeoutError("no reply"), True), (OutOfOrderSequenceError("gap"), False)])
def test_after_a_maybe_stored_batch_fails_later_ones_without_an_answer_fail_too(
        later_error, later_fails):
    # Given a window in flight whose first fails for good after no answer
    pipeline, batches, completed = confirmed_pipeline_with(2)
    send_all(pipeline)
    pipeline.failed(batches[0], PlinthTimeoutError("delivery timeout"),
                    PlinthTimeoutError("no reply"), was_in_flight=True)
    # When the second settles without an answer (it may be stored) or refused (it is not)
    pipeline.refused(batches[1], later_error, BACKOFF_S, NOW_S)
    # Then it fails, or goes again under the new producer id
    if later_fails:
        assert isinstance(completed.outcomes[2][1], PlinthTimeoutError)
        assert send_all(pipeline, NOW_S + 1) == []
    else:
        assert 2 not in completed.outcomes
        assert send_all(pipeline, NOW_S + 1) == batches[1:]


def test_a_batch_not_yet_sent_under_the_new_id_does_not_fail_for_an_old_ids_lost_answer():
    # Given a real gap at the first batch, while the second got no answer (it was
    # not stored: the shard refuses every batch after a gap)
    pipeline, batches, completed = confirmed_pipeline_with(2)
    send_all(pipeline)
    pipeline.refused(batches[0], OutOfOrderSequenceError("lost state"), BACKOFF_S, NOW_S)
    pipeline.refused(batches[1], PlinthTimeoutError("no reply"), BACKOFF_S, NOW_S)
    # And the first, alone in flight under the new id, fails for good after no answer
    assert send_all(pipeline, NOW_S + 1) == batches[:1]
    pipeline.failed(batches[0], PlinthTimeoutError("delivery timeout"),
                    PlinthTimeoutError("no reply"), was_in_flight=True)
    # Then the second, never sent under that id, goes under the next one
    assert 2 not in completed.outcomes
    assert send_all(pipeline, NOW_S + 1) == batches[1:]
