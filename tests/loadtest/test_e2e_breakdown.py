"""loadtest/e2e_breakdown.py: each record's time cut into stages, joined by partition and
offset. (The timestamps themselves come from a real broker run; here, the join.)"""

from __future__ import annotations

import pytest

from loadtest import e2e_breakdown

MS = 1_000_000


def test_each_record_is_joined_to_its_batch_and_its_fetch_reply_by_offset():
    # Given two batches of partition 0 (offsets 0-1 and 2-4) and one of partition 1,
    acked = [(0, 0, 2, 10 * MS, 14 * MS), (0, 2, 3, 20 * MS, 23 * MS), (1, 0, 1, 11 * MS, 12 * MS)]
    # two fetch replies of partition 0 (offsets 0-2 and 3-4) and one of partition 1,
    replies = [(0, 0, 3, 22 * MS), (0, 3, 2, 24 * MS), (1, 0, 1, 13 * MS)]
    # and three delivered records: (partition, offset, sent, delivered)
    delivered = [(0, 2, 18 * MS, 25 * MS), (0, 4, 19 * MS, 26 * MS), (1, 0, 9 * MS, 13 * MS)]
    # When they are broken down
    stages = e2e_breakdown.breakdown(acked, replies, delivered)
    # Then offset 2 of partition 0 waited for its batch (sent at 20), was acked 3 ms
    # later, fetched by the reply of offsets 0-2 (read at 22), handed out at 25
    assert [stages[s][0] / MS for s in e2e_breakdown.STAGES] == [2, 3, 4, 3, 7, -1]
    # And offset 4 is in the second batch and the second reply
    assert [stages[s][1] / MS for s in e2e_breakdown.STAGES] == [1, 3, 5, 2, 7, 1]
    # And partition 1's record is joined within its own partition
    assert [stages[s][2] / MS for s in e2e_breakdown.STAGES] == [2, 1, 4, 0, 4, 1]


def test_an_offset_outside_every_batch_is_an_error_not_a_wrong_join():
    # Given a batch of offsets 0-1 only
    acked = [(0, 0, 2, 0, 1)]
    replies = [(0, 0, 5, 2)]
    # When offset 3 is delivered, then the breakdown refuses it, naming the offset
    with pytest.raises(AssertionError, match="offset 3"):
        e2e_breakdown.breakdown(acked, replies, [(0, 3, 0, 3)])


def test_the_table_has_a_row_per_stage_in_milliseconds():
    stages = e2e_breakdown.breakdown([(0, 0, 1, 1 * MS, 3 * MS)], [(0, 0, 1, 4 * MS)],
                                     [(0, 0, 0, 5 * MS)])
    lines = e2e_breakdown.format_table(stages).splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(e2e_breakdown.STAGES)
    assert lines[5].split()[1:] == ["5.00"] * 4   # e2e: 5 ms at every percentile
