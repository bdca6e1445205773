"""shards/producer_state.py: duplicate and gap checks, snapshots and their file."""

from __future__ import annotations

import json

import pytest

from plinth import limits
from plinth.errors import (TRANSIENT_ERRORS, InvalidProducerEpochError, OutOfOrderSequenceError,
                           TooManyProducersError)
from plinth.shards.producer_state import (
    LEGACY_SNAPSHOT_FILE, ProducerStates, discard_snapshot_after, discard_snapshots_before,
    load_snapshot, recover_snapshot, save_snapshot, snapshot_offsets, snapshot_path)


def states_with(*batches) -> ProducerStates:
    states = ProducerStates()
    for producer_id, sequence, count, offset in batches:
        states.record(producer_id, sequence, count, offset)
    return states


def test_a_snapshot_restores_every_producers_last_batches_and_their_order():
    # Given two producers, one with more batches than are kept
    states = states_with(*[(7, 3 * i, 3, 100 + 3 * i) for i in range(limits.IDEMPOTENT_BATCHES_KEPT + 2)],
                         (9, 0, 1, 500))
    # When it goes through a snapshot
    restored = ProducerStates.from_snapshot(states.snapshot(), seen_ms_default=0)
    # Then exact retries of the kept batches get their offsets, older ones are gaps
    last = limits.IDEMPOTENT_BATCHES_KEPT + 1
    assert restored.check("t-0", 7, 3 * last, 3) == 100 + 3 * last
    assert restored.check("t-0", 9, 0, 1) == 500
    with pytest.raises(OutOfOrderSequenceError, match="expected"):
        restored.check("t-0", 7, 0, 3)
    assert restored.check("t-0", 7, 3 * (last + 1), 3) is None   # the next batch
    assert restored.snapshot() == states.snapshot()


def test_a_retry_of_the_oldest_of_a_window_of_stored_batches_gets_its_original_offsets():
    # Given a producer's window of batches, all stored (a producer pipelines up to
    # this many per partition: PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX)
    window = limits.PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX
    states = states_with(*[(7, 2 * k, 2, 100 + 2 * k) for k in range(window)])
    # When the first is retried (its reply was lost) / Then it gets its offsets
    assert states.check("t-0", 7, 0, 2) == 100
    # And so does every other one of the window
    assert [states.check("t-0", 7, 2 * k, 2) for k in range(window)] == \
        [100 + 2 * k for k in range(window)]


def test_a_batch_after_a_missing_one_is_refused_as_a_gap_naming_the_expected_sequence():
    # Given a producer's batch k stored, and batch k + 1 missing (refused or lost)
    states = states_with((7, 0, 2, 100))
    # When batch k + 2 arrives / Then it is refused, whatever came before it
    with pytest.raises(OutOfOrderSequenceError, match="sent sequence 4, expected 2"):
        states.check("t-0", 7, 4, 2)
    # And batch k + 1, when it comes, is taken
    assert states.check("t-0", 7, 2, 2) is None


def test_a_saved_snapshot_is_used_only_for_the_segment_it_precedes(tmp_path):
    states = states_with((7, 0, 2, 0))
    save_snapshot(tmp_path, 40, states)
    assert load_snapshot(tmp_path, 40) == states.snapshot()
    assert load_snapshot(tmp_path, 80) is None     # the log rolled again since
    assert load_snapshot(tmp_path / "elsewhere", 40) is None


def test_a_damaged_snapshot_file_is_ignored_not_trusted(tmp_path):
    save_snapshot(tmp_path, 40, states_with((7, 0, 2, 0)))
    path = snapshot_path(tmp_path, 40)
    path.write_bytes(path.read_bytes()[:-7])
    assert load_snapshot(tmp_path, 40) is None


# --- Room for producers -----------------------------------------------------------

NOW_MS = 1_800_000_000_000
DAY_MS = 24 * 3600 * 1000


def full_partition(victim_seen_ms: int = NOW_MS) -> ProducerStates:
    """A partition with a victim producer (id 1, one batch at offset 0) seen at
    ``victim_seen_ms``, then co-tenant producers 1000.. filling it, seen at NOW_MS."""
    states = ProducerStates()
    states.record(1, 0, 1, 0, victim_seen_ms)
    for n in range(limits.PRODUCERS_PER_PARTITION_MAX - 1):
        states.check("t-0", 1000 + n, 0, 1, NOW_MS)
        states.record(1000 + n, 0, 1, 1 + n, NOW_MS)
    assert len(states) == limits.PRODUCERS_PER_PARTITION_MAX
    return states


def test_cycling_producer_ids_cannot_make_a_recent_producers_retry_a_duplicate():
    # Given a producer's batch, then a co-tenant filling the partition with new ids
    # (issue 11: the 10,000th new id evicted the producer, whose retry was then stored twice)
    states = full_partition()
    # When the co-tenant sends more new ids / Then each is refused, retriably
    for n in range(3):
        with pytest.raises(TooManyProducersError):
            states.check("t-0", 50_000 + n, 0, 1, NOW_MS + 1000)
    assert TooManyProducersError in TRANSIENT_ERRORS
    # And the producer's retry is still recognised, with its first offset
    assert states.check("t-0", 1, 0, 1, NOW_MS + 1000) == 0


def test_the_refusal_names_the_partition_the_count_the_limit_and_the_expiration():
    states = full_partition()
    with pytest.raises(TooManyProducersError) as caught:
        states.check("orders-3", 77, 0, 1, NOW_MS + 5)
    message = str(caught.value)
    limit = limits.PRODUCERS_PER_PARTITION_MAX
    assert message.startswith(f"orders-3: producer 77 is new and the partition already "
                              f"remembers {limit} idempotent producers, its limit of {limit}")
    assert "producer 1, 5 ms" in message
    assert f"producer.id.expiration.ms={limits.PRODUCER_ID_EXPIRATION_MS}" in message


def test_a_producer_silent_longer_than_the_expiration_makes_room_for_a_new_one():
    # Given a full partition whose least recently seen producer wrote a day and 1 ms ago
    states = full_partition(victim_seen_ms=NOW_MS - limits.PRODUCER_ID_EXPIRATION_MS - 1)
    # When a new producer writes / Then it is taken, and the idle one is forgotten
    assert states.check("t-0", 77, 0, 1, NOW_MS) is None
    states.record(77, 0, 1, 99_999, NOW_MS)
    assert len(states) == limits.PRODUCERS_PER_PARTITION_MAX
    assert states.check("t-0", 77, 0, 1, NOW_MS) == 99_999
    assert 1 not in [entry[0] for entry in states.snapshot()]
    # And the next new one is refused: everyone left was seen just now
    with pytest.raises(TooManyProducersError):
        states.check("t-0", 78, 0, 1, NOW_MS)


def test_a_producer_silent_for_exactly_the_expiration_is_kept():
    states = full_partition(victim_seen_ms=NOW_MS - limits.PRODUCER_ID_EXPIRATION_MS)
    with pytest.raises(TooManyProducersError):
        states.check("t-0", 77, 0, 1, NOW_MS)


def test_writing_again_makes_a_producer_the_most_recently_seen():
    # Given producers 1 then 2, both idle for long, and producer 1 writing again now
    states = ProducerStates()
    states.record(1, 0, 1, 0, NOW_MS - 2 * DAY_MS)
    states.record(2, 0, 1, 1, NOW_MS - 2 * DAY_MS)
    states.record(1, 1, 1, 2, NOW_MS)
    # Then producer 2 is the least recently seen, listed first with its time
    assert [(entry[0], entry[2]) for entry in states.snapshot()] == \
        [(2, NOW_MS - 2 * DAY_MS), (1, NOW_MS)]


def test_a_snapshot_keeps_each_producers_last_seen_time():
    states = ProducerStates()
    states.record(4, 0, 2, 10, NOW_MS - 5)
    states.record(9, 0, 1, 12, NOW_MS)
    restored = ProducerStates.from_snapshot(states.snapshot(), seen_ms_default=0)
    assert restored.snapshot() == [[4, [[0, 2, 10]], NOW_MS - 5, 0], [9, [[0, 1, 12]], NOW_MS, 0]]


def test_a_snapshot_written_before_last_seen_times_is_read_with_the_default_time(tmp_path):
    # Given a producers.json in the format written before issue 11
    (tmp_path / LEGACY_SNAPSHOT_FILE).write_text(
        '{"base_offset": 40, "producers": [[7, [[0, 2, 0]]]]}')
    # When it is loaded / Then its producer is known, seen at the time given for it
    restored = ProducerStates.from_snapshot(load_snapshot(tmp_path, 40), seen_ms_default=NOW_MS)
    assert restored.check("t-0", 7, 0, 2) == 0
    assert restored.snapshot() == [[7, [[0, 2, 0]], NOW_MS]]


def test_each_roll_keeps_its_own_snapshot_until_retention_or_a_truncation_removes_it(tmp_path):
    # Given snapshots saved at three rolls
    saved = {}
    for base_offset, sequence in ((40, 0), (80, 2), (120, 4)):
        saved[base_offset] = states_with((7, sequence, 2, base_offset - 2))
        save_snapshot(tmp_path, base_offset, saved[base_offset])
    # Then each is kept, under its own name, and read for its own segment
    assert snapshot_offsets(tmp_path) == [40, 80, 120]
    assert snapshot_path(tmp_path, 80).name == "00000000000000000080.producers"
    assert load_snapshot(tmp_path, 80) == saved[80].snapshot()
    # When retention deletes the segments before 80 / Then the snapshot at 40 goes, 80 stays
    assert discard_snapshots_before(tmp_path, 80)
    assert snapshot_offsets(tmp_path) == [80, 120]
    # When the log is cut back to end before 120 / Then the snapshot at 120 goes
    assert discard_snapshot_after(tmp_path, 100)
    assert snapshot_offsets(tmp_path) == [80]
    assert not discard_snapshot_after(tmp_path, 100)


def test_the_single_snapshot_file_of_an_older_partition_is_read_then_replaced_at_the_next_roll(
        tmp_path):
    # Given a producers.json from before per-roll snapshots, preceding the segment at 40
    states = states_with((7, 0, 2, 0))
    (tmp_path / LEGACY_SNAPSHOT_FILE).write_text(
        '{"base_offset": 40, "producers": %s}' % json.dumps(states.snapshot()))
    # Then it seeds that segment
    assert load_snapshot(tmp_path, 40) == states.snapshot()
    # When the log rolls again / Then the new snapshot is a per-roll file, and the old one is gone
    save_snapshot(tmp_path, 80, states)
    assert not (tmp_path / LEGACY_SNAPSHOT_FILE).exists()
    assert snapshot_offsets(tmp_path) == [80]


# --- Epochs (a Kafka producer's producerEpoch) ------------------------------------------

def test_a_new_epoch_starts_the_sequence_again_and_is_not_taken_for_a_retry():
    # Given a producer that stored batches at sequences 0 and 1 in epoch 0
    states = ProducerStates()
    states.record(7, 0, 1, 10, producer_epoch=0)
    states.record(7, 1, 1, 11, producer_epoch=0)
    # When it bumps its epoch (librdkafka does, after a batch failed for good) and sends
    # its next batch at sequence 0
    # Then that batch is new, not a retry of the epoch-0 batch at sequence 0
    assert states.check("t-0", 7, 0, 1, producer_epoch=1) is None
    states.record(7, 0, 1, 12, producer_epoch=1)
    # And from then on retries and order are checked within epoch 1
    assert states.check("t-0", 7, 0, 1, producer_epoch=1) == 12
    assert states.check("t-0", 7, 1, 1, producer_epoch=1) is None
    with pytest.raises(OutOfOrderSequenceError, match="expected 1"):
        states.check("t-0", 7, 2, 1, producer_epoch=1)


def test_a_new_epoch_must_start_at_sequence_0_and_an_older_epoch_is_fenced():
    states = ProducerStates()
    states.record(7, 0, 5, 10, producer_epoch=3)
    with pytest.raises(OutOfOrderSequenceError,
                       match="producer 7 began epoch 4 \\(after 3\\) at sequence 5"):
        states.check("t-0", 7, 5, 1, producer_epoch=4)
    with pytest.raises(InvalidProducerEpochError,
                       match="t-0: producer 7 sent epoch 2, older than its epoch 3"):
        states.check("t-0", 7, 5, 1, producer_epoch=2)


def test_the_epoch_goes_through_a_snapshot_and_one_without_it_takes_the_next_batchs():
    # Given a producer in epoch 2, through a snapshot
    states = ProducerStates()
    states.record(7, 0, 1, 10, producer_epoch=2)
    restored = ProducerStates.from_snapshot(states.snapshot(), seen_ms_default=0)
    # Then its epoch is kept: an older one is fenced
    with pytest.raises(InvalidProducerEpochError, match="epoch 1, older than its epoch 2"):
        restored.check("t-0", 7, 1, 1, producer_epoch=1)
    # And a snapshot written before epochs were kept ([id, batches, seen]) takes the
    # epoch of the next batch and checks its sequence as before
    old = ProducerStates.from_snapshot([[7, [[0, 1, 10]], 5]], seen_ms_default=0)
    assert old.check("t-0", 7, 0, 1, producer_epoch=4) == 10
    with pytest.raises(OutOfOrderSequenceError, match="expected 1"):
        old.check("t-0", 7, 3, 1, producer_epoch=4)
    old.record(7, 1, 1, 11, producer_epoch=4)
    assert old.snapshot()[0][3] == 4


@pytest.mark.parametrize("damage", [
    lambda data: data[:20] + b"\x01\x02\x03" + data[23:],                       # the tester's dd
    lambda data: json.dumps({"base_offset": 40, "producers": [[7, [[0, "2", 4]], 1]]}).encode(),
    lambda data: json.dumps({"base_offset": 41, "producers": []}).encode(),
])
def test_recovering_a_damaged_snapshot_sets_it_aside_and_says_what_and_where(tmp_path, damage):
    save_snapshot(tmp_path, 40, states_with((7, 0, 2, 0)))
    path = snapshot_path(tmp_path, 40)
    bad = damage(path.read_bytes())
    path.write_bytes(bad)
    saved, problem = recover_snapshot(tmp_path, 40)
    assert saved is None
    assert problem.startswith(f"producers snapshot {path} ({len(bad)} bytes) is damaged: ")
    assert problem.endswith(f"kept as {path.name}.corrupt")
    assert not path.exists() and snapshot_offsets(tmp_path) == []
    assert (tmp_path / f"{path.name}.corrupt").read_bytes() == bad


def test_recovering_a_sound_snapshot_or_none_is_loading_it(tmp_path):
    states = states_with((7, 0, 2, 0))
    save_snapshot(tmp_path, 40, states)
    assert recover_snapshot(tmp_path, 40) == (states.snapshot(), None)
    assert recover_snapshot(tmp_path, 80) == (None, None)
