"""An immutable snapshot of a partition's remote segments (shards/tier/remote_log_view.py)."""

from __future__ import annotations

import pytest

from plinth.shards.tier.remote_log_view import EMPTY_REMOTE_LOG, RemoteLogView

from tests.shards.tier.test_remote_log_metadata import remote_segment


def test_an_empty_view_holds_no_offsets_and_no_bytes():
    assert EMPTY_REMOTE_LOG.is_empty
    assert EMPTY_REMOTE_LOG.log_start_offset is None and EMPTY_REMOTE_LOG.end_offset is None
    assert EMPTY_REMOTE_LOG.remote_bytes == 0
    assert EMPTY_REMOTE_LOG.segment_for_offset(0) is None


def test_a_view_finds_the_segment_that_holds_each_offset():
    # Given three contiguous segments, handed over out of order
    a, b, c = (remote_segment(0, 100), remote_segment(100, 250), remote_segment(250, 300))
    view = RemoteLogView.of([c, a, b])
    # Then it spans them, and each offset maps to its own segment
    assert (view.log_start_offset, view.end_offset) == (0, 300)
    assert view.remote_bytes == 3000
    assert [view.segment_for_offset(o) for o in (0, 99, 100, 249, 250, 299)] == [a, a, b, b, c, c]
    assert view.segment_for_offset(300) is None


def test_where_uploads_overlap_the_later_leaders_segment_wins():
    # Given an old leader's segment [0, 200) and a new leader's [100, 180) and a
    # newer upload of the same range
    old = remote_segment(0, 200, created_ms=1)
    new = remote_segment(100, 180, created_ms=2)
    newer = remote_segment(100, 180, created_ms=3)
    view = RemoteLogView.of([old, new, newer])
    # Then the larger base offset wins, then the newer upload; past its end the old one serves
    assert view.segment_for_offset(50) is old
    assert view.segment_for_offset(150) is newer
    assert view.segment_for_offset(190) is old


def test_a_view_refuses_segments_out_of_order():
    with pytest.raises(AssertionError, match="out of order"):
        RemoteLogView((remote_segment(100, 200), remote_segment(0, 100)))


def test_a_view_covers_a_range_only_if_no_offset_of_it_is_missing():
    view = RemoteLogView.of([remote_segment(0, 100), remote_segment(100, 150),
                             remote_segment(200, 300)])
    assert view.covers(0, 150) and view.covers(20, 120) and view.covers(200, 300)
    assert not view.covers(140, 210)      # the hole [150, 200)
    assert not view.covers(250, 301)      # past the end
    assert EMPTY_REMOTE_LOG.covers(5, 5)  # an empty range needs nothing
    assert not EMPTY_REMOTE_LOG.covers(0, 1)
