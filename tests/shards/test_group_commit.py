"""Group commit (shards/group_commit.py): real partition logs on disk, a clock the test drives.

The replies go to a list instead of a socket: each is decoded as the router
would, and the test notes what was durable and readable when it was sent.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from plinth import protocol
from plinth.format.record_batch import BatchBuilder, summarize_batch
from plinth.shards.group_commit import GroupCommit
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_stats import ShardStats

NOW_MS = time.time_ns() // 1_000_000


class FakeClock:
    def __init__(self, now_s: float = 100.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class Shard:
    """A group commit with its neighbours: partitions, a reply list, a readable list."""

    def __init__(self, directory, fsync_policy="always", fsync_interval_ms=10):
        self.directory = directory
        self.clock = FakeClock()
        self.stats = ShardStats()
        self.replies = []     # (request id, base offset or None, error or None, durable end, readable end)
        self.readable = []    # partitions whose high watermark moved, in order
        self.commit = GroupCommit("shard-gc", fsync_policy, fsync_interval_ms,
                                  reply=self._reply, readable=self.readable.append,
                                  stats=self.stats, clock_s=self.clock)
        self.parts = {}
        self._by_request = {}

    def partition(self, number: int) -> Partition:
        if number not in self.parts:
            self.parts[number] = Partition.open(self.directory / f"t-{number}", "t", number,
                                                LogConfig())
        return self.parts[number]

    def produce(self, number: int, request_id: int, values=(b"v",)) -> int:
        """Append a batch to partition ``number`` as the loop does; queue its reply."""
        part = self.partition(number)
        builder = BatchBuilder()
        for value in values:
            builder.append(None, value, NOW_MS, None)
        batch = builder.build()
        base_offset = part.append(batch, summarize_batch(batch))
        self.commit.written(part)
        self.commit.acknowledge_later([b"router", b"client"], request_id, part, base_offset,
                                      self.clock.now_s)
        self._by_request[request_id] = part
        return base_offset

    def _reply(self, envelope, header):
        assert envelope == [b"router", b"client"]
        view = protocol.decode_reply(header)
        part = self._by_request[view.request_id]
        self.replies.append((view.request_id, None if view.error else view.base_offset,
                             view.error, part.log.flushed_end_offset, part.high_watermark))

    def close(self):
        self.commit.close()
        for part in self.parts.values():
            part.log.close()


@pytest.fixture
def make_shard(tmp_path):
    shards = []

    def make(**options) -> Shard:
        shards.append(Shard(tmp_path / f"shard-{len(shards)}", **options))
        return shards[-1]
    yield make
    for shard in shards:
        shard.close()


def test_under_always_a_produce_is_acknowledged_only_once_durable_and_readable(make_shard):
    # Given produces to two partitions, appended in one round
    shard = make_shard(fsync_policy="always")
    shard.produce(0, request_id=1, values=[b"a", b"b"])
    shard.produce(1, request_id=2)
    shard.produce(0, request_id=3)
    # Then nothing is readable or acknowledged before the commit
    assert shard.replies == [] and shard.readable == []
    assert shard.partition(0).high_watermark == 0
    # When the round commits
    shard.commit.commit()
    # Then each reply, in order, was sent with its batch on disk and readable
    assert shard.replies == [(1, 0, None, 3, 3), (2, 0, None, 1, 1), (3, 2, None, 3, 3)]
    assert shard.readable == [shard.partition(0), shard.partition(1)]


def test_under_interval_a_produce_is_readable_and_acknowledged_at_once_and_fsynced_when_the_interval_ends(
        make_shard):
    # Given the "interval" policy, 250 ms, and a first round (which fsyncs: none happened yet)
    shard = make_shard(fsync_policy="interval", fsync_interval_ms=250)
    shard.produce(0, request_id=1)
    shard.commit.commit()
    part = shard.partition(0)
    assert part.log.flushed_end_offset == 1
    # When a produce commits 125 ms later
    shard.clock.now_s += 0.125
    shard.produce(0, request_id=2)
    shard.commit.commit()
    # Then it is acknowledged and readable, but not yet on disk
    assert shard.replies[-1] == (2, 1, None, 1, 2)
    assert shard.commit.next_flush_s() == shard.clock.now_s + 0.125
    # When the interval ends and the loop commits / Then it is fsynced
    shard.clock.now_s += 0.125
    shard.commit.commit()
    assert part.log.flushed_end_offset == 2 and shard.commit.next_flush_s() is None


def test_under_never_nothing_is_fsynced_until_a_forced_commit(make_shard):
    # Given the "never" policy / When produces commit, however much time passes
    shard = make_shard(fsync_policy="never")
    shard.produce(0, request_id=1)
    shard.commit.commit()
    shard.clock.now_s += 3600
    shard.commit.commit()
    part = shard.partition(0)
    # Then they are acknowledged and readable but not fsynced
    assert shard.replies == [(1, 0, None, 0, 1)] and part.log.flushed_end_offset == 0
    assert shard.commit.next_flush_s() is None
    # When a seal or a close forces it / Then it is fsynced
    shard.commit.commit(force_flush=True)
    assert part.log.flushed_end_offset == 1


def test_the_dirty_partitions_of_a_round_are_fsynced_at_the_same_time(make_shard):
    # Given two partitions with unflushed appends, whose fsyncs each wait for the other
    shard = make_shard()
    shard.produce(0, request_id=1)
    shard.produce(1, request_id=2)
    both_flushing = threading.Barrier(2)
    for part in shard.parts.values():
        real_flush = part.log.flush

        def flush_when_both_are_flushing(real_flush=real_flush):
            both_flushing.wait(timeout=10)   # raises BrokenBarrierError if they run in turn
            real_flush()
        part.log.flush = flush_when_both_are_flushing
    # When the round commits, they meet at the barrier: one did not wait for the other
    try:
        shard.commit.commit()
    finally:
        for part in shard.parts.values():
            del part.log.flush   # the real one again, for closing
    assert [error for _, _, error, _, _ in shard.replies] == [None, None]
    assert all(p.log.flushed_end_offset == 1 for p in shard.parts.values())


def fail_fsync_of(monkeypatch, part: Partition) -> list:
    """Make the disk fail every fsync of ``part``'s active segment (EIO); returns the
    list of failed attempts."""
    broken_fd = part.log.segments[-1]._fd
    real_fsync = os.fsync
    failed = []

    def fsync(fd):
        if fd == broken_fd:
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def test_a_failed_fsync_fails_only_its_own_partitions_produces_and_is_tried_again(
        make_shard, monkeypatch):
    # Given partition 1, whose disk fails its fsync, and partition 0, whose disk works
    shard = make_shard()
    broken = shard.partition(1)
    failed = fail_fsync_of(monkeypatch, broken)
    # When both are produced to in one round
    shard.produce(1, request_id=1)
    shard.produce(0, request_id=2)
    shard.commit.commit()
    # Then only partition 1's produce fails, naming the shard, the partition and the file
    (_, _, error, _, _), good = shard.replies
    assert type(error).__name__ == "StorageError" and failed
    assert "shard-gc: fsync of t-1 failed" in str(error) and str(broken.log.directory) in str(error)
    assert good == (2, 0, None, 1, 1)
    # And its record is not readable, until an fsync works in a later round
    assert broken.high_watermark == 0
    monkeypatch.undo()
    shard.commit.commit()
    assert broken.high_watermark == 1 and broken.log.flushed_end_offset == 1


def test_a_reply_to_a_duplicate_waits_behind_the_rounds_fsync(make_shard):
    # Given a round with a new batch, then a retry that appends nothing (the same offset)
    shard = make_shard()
    shard.produce(0, request_id=1)
    part = shard.partition(0)
    shard.commit.acknowledge_later([b"router", b"client"], 2, part, 0, shard.clock.now_s)
    shard._by_request[2] = part
    # When the round commits / Then both are answered after the fsync, in order
    shard.commit.commit()
    assert shard.replies == [(1, 0, None, 1, 1), (2, 0, None, 1, 1)]


def test_a_deleted_partition_is_not_fsynced(make_shard):
    # Given a partition written this round, then deleted (its log closed and removed)
    shard = make_shard()
    shard.produce(0, request_id=1)
    part = shard.parts.pop(0)
    shard.commit.forget(part)
    part.log.delete()
    # When the round commits / Then its closed log is left alone
    shard.commit.commit()   # a flush of a closed log would raise AssertionError
    assert part.high_watermark == 0


def test_every_acknowledged_produce_is_counted_in_the_latency_histogram(make_shard):
    shard = make_shard()
    for request_id in range(5):
        shard.produce(request_id % 2, request_id)
    shard.clock.now_s += 0.002
    shard.commit.commit()
    assert sum(shard.stats.latency_counts["produce"]) == 5
    assert shard.stats.latency_sum_s["produce"] == pytest.approx(5 * 0.002)


def test_an_unknown_fsync_policy_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"'sometimes' is not one of \('always', 'interval', 'never'\)"):
        GroupCommit("shard-gc", "sometimes", 10, reply=print, readable=print, stats=ShardStats())
