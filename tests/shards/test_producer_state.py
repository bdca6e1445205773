"""shards/producer_state.py: duplicate and gap checks, snapshots and their file."""

from __future__ import annotations

import pytest

from plinth import limits
from plinth.errors import OutOfOrderSequenceError
from plinth.shards.producer_state import (SNAPSHOT_FILE, ProducerStates, load_snapshot,
                                          save_snapshot)


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
    restored = ProducerStates.from_snapshot(states.snapshot())
    # Then exact retries of the kept batches get their offsets, older ones are gaps
    last = limits.IDEMPOTENT_BATCHES_KEPT + 1
    assert restored.check("t-0", 7, 3 * last, 3) == 100 + 3 * last
    assert restored.check("t-0", 9, 0, 1) == 500
    with pytest.raises(OutOfOrderSequenceError, match="expected"):
        restored.check("t-0", 7, 0, 3)
    assert restored.check("t-0", 7, 3 * (last + 1), 3) is None   # the next batch
    assert restored.snapshot() == states.snapshot()


def test_a_saved_snapshot_is_used_only_for_the_segment_it_precedes(tmp_path):
    states = states_with((7, 0, 2, 0))
    save_snapshot(tmp_path, 40, states)
    assert load_snapshot(tmp_path, 40) == states.snapshot()
    assert load_snapshot(tmp_path, 80) is None     # the log rolled again since
    assert load_snapshot(tmp_path / "elsewhere", 40) is None


def test_a_damaged_snapshot_file_is_ignored_not_trusted(tmp_path):
    save_snapshot(tmp_path, 40, states_with((7, 0, 2, 0)))
    path = tmp_path / SNAPSHOT_FILE
    path.write_bytes(path.read_bytes()[:-7])
    assert load_snapshot(tmp_path, 40) is None
