"""Which local segments to upload and which the local disk may drop (shards/tier/tier_policy.py)."""

from __future__ import annotations

import pytest

from plinth.limits import SEGMENT_BYTES_MIN
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.tier.remote_log_view import EMPTY_REMOTE_LOG, RemoteLogView
from plinth.shards.tier.tier_policy import (
    held_remotely, local_segments_past_retention, resolve_local_retention, segments_to_upload)

from tests.shards.tier.test_remote_log_metadata import remote_segment

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_800_000_000_000


def below(end_offset):
    """Uploaded: the segments that end at or below ``end_offset`` (this shard's own
    uploads reached it), with nothing else in the remote log."""
    return held_remotely(EMPTY_REMOTE_LOG, end_offset)


class Clock:
    def __init__(self, now_ms):
        self.now_ms = now_ms

    def __call__(self):
        return self.now_ms


@pytest.fixture
def log(tmp_path):
    """Five segments of 5 entries of 1,000 bytes, each written a day after the last;
    the fifth is active. Entry i has timestamp (and last write) day i // 5."""
    clock = Clock(NOW_MS - 5 * DAY_MS)
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN + 1200),
                            clock_ms=clock)
    for i in range(24):
        clock.now_ms = NOW_MS - 5 * DAY_MS + (i // 5) * DAY_MS
        log.append(b"x" * 1000, 1, clock.now_ms)
    assert [(s.base_offset, s.end_offset) for s in log.segments] == [
        (0, 5), (5, 10), (10, 15), (15, 20), (20, 24)]
    yield log
    log.close()


def test_rolled_segments_below_the_high_watermark_are_uploaded_oldest_first(log):
    segments = log.segments
    assert segments_to_upload(segments, high_watermark=24, uploaded=below(None)) == \
        list(segments[:4])
    # not the one the high watermark is inside, nor any after it
    assert segments_to_upload(segments, high_watermark=12, uploaded=below(None)) == \
        list(segments[:2])
    # not what is already remote
    assert segments_to_upload(segments, high_watermark=24, uploaded=below(10)) == \
        list(segments[2:4])
    # never the active segment
    assert segments_to_upload(segments, high_watermark=24, uploaded=below(20)) == []


def test_only_uploaded_segments_past_local_retention_are_dropped(log):
    segments = log.segments
    # Given local.retention.ms of 2.5 days: segments whose newest record is older go
    dropped = local_segments_past_retention(segments, now_ms=NOW_MS, local_retention_ms=int(2.5 * DAY_MS),
                                            local_retention_bytes=-1, uploaded=below(20))
    assert dropped == list(segments[:3])
    # but only those uploaded: a segment not uploaded stays, and every later one
    assert local_segments_past_retention(segments, now_ms=NOW_MS, local_retention_ms=0,
                                         local_retention_bytes=-1, uploaded=below(10)) == \
        list(segments[:2])
    assert local_segments_past_retention(segments, now_ms=NOW_MS, local_retention_ms=0,
                                         local_retention_bytes=-1, uploaded=below(None)) == []


def test_local_retention_bytes_keep_that_much_on_disk(log):
    segments = log.segments
    segment_bytes = segments[0].size_bytes
    dropped = local_segments_past_retention(segments, now_ms=NOW_MS, local_retention_ms=-1,
                                            local_retention_bytes=2 * segment_bytes,
                                            uploaded=below(20))
    # the log without each dropped segment still holds 2 segments' bytes (4 full + the active)
    remaining = sum(s.size_bytes for s in segments) - sum(s.size_bytes for s in dropped)
    assert dropped == list(segments[:2]) and remaining >= 2 * segment_bytes
    assert remaining - segments[2].size_bytes < 2 * segment_bytes


@pytest.mark.parametrize("local,total,used", [
    (-2, 1000, 1000), (-2, -1, -1), (500, 1000, 500), (-1, 1000, 1000), (2000, 1000, 1000),
    (500, -1, 500), (-1, -1, -1)])
def test_local_retention_minus_two_means_the_total_and_never_exceeds_it(local, total, used):
    assert resolve_local_retention(local, total) == used


def test_a_segment_is_uploaded_only_if_the_remote_log_covers_it_not_if_it_ends_below_its_end(log):
    # Given local segments [0,5) [5,10) [10,15) [15,20) and a remote log that holds
    # [0,5) and, adopted from another shard, [10,20) - but not [5,10)
    segments = log.segments
    view = RemoteLogView.of([remote_segment(0, 5), remote_segment(10, 20)])
    uploaded = held_remotely(view)
    # Then [5,10) is not uploaded, though it ends below the remote end
    assert [uploaded(s) for s in segments[:4]] == [True, False, True, True]
    # And it is the one to upload next
    assert segments_to_upload(segments, high_watermark=24, uploaded=uploaded) == [segments[1]]
    # And local retention may drop [0,5) but stops at [5,10), keeping everything after it
    assert local_segments_past_retention(segments, now_ms=NOW_MS, local_retention_ms=0,
                                         local_retention_bytes=-1, uploaded=uploaded) == \
        [segments[0]]
    # And a remote segment that covers part of a local one does not make it uploaded
    assert not held_remotely(RemoteLogView.of([remote_segment(5, 8)]))(segments[1])
    # But this shard's own mark does (total retention deleted what it uploaded)
    assert held_remotely(view, own_end_offset=10)(segments[1])
