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

    def __init__(self, directory, fsync_policy="always", fsync_interval_ms=10, fsync_failed=None):
        self.directory = directory
        self.clock = FakeClock()
        self.stats = ShardStats()
        self.replies = []     # (request id, base offset or None, error or None, durable end, readable end)
        self.readable = []    # partitions whose high watermark moved, in order
        self.commit = GroupCommit("shard-gc", fsync_policy, fsync_interval_ms,
                                  reply=self._reply, readable=self.readable.append,
                                  stats=self.stats, clock_s=self.clock, fsync_failed=fsync_failed)
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


def fail_fsync_of(monkeypatch, part: Partition, times: int = 1 << 30) -> list:
    """Make the disk fail the next ``times`` fsyncs of ``part``'s active segment (EIO);
    returns the list of failed attempts."""
    broken_fd = part.log.segments[-1]._fd
    real_fsync = os.fsync
    failed = []

    def fsync(fd):
        if fd == broken_fd and len(failed) < times:
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def test_a_failed_fsync_fails_only_its_own_partitions_produces_and_no_later_fsync_passes_it(
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
    # And a later round with a working disk does not make it readable either: the
    # kernel answers the fsync after a failed writeback without writing what it lost,
    # so every fsync of the segment fails until that is cut
    assert broken.high_watermark == 0
    monkeypatch.undo()
    shard.commit.commit()
    assert broken.high_watermark == 0 and broken.log.flushed_end_offset == 0
    # And once cut back to its last good fsync (as the shard does), it takes produces again
    broken.cut_unflushed()
    shard.produce(1, request_id=3)
    shard.commit.commit()
    assert shard.replies[-1] == (3, 0, None, 1, 1)


def test_a_failed_fsync_of_the_only_written_partition_fails_its_produce_and_is_cut(
        make_shard, monkeypatch):
    # Given one partition, whose disk fails its fsync (a round with one dirty
    # partition fsyncs it on the loop thread, without the pool), and the shard's
    # answer to a failed fsync: cut what it may not have written
    shard = make_shard(fsync_failed=lambda part, error: part.cut_unflushed())
    part = shard.partition(0)
    failed = fail_fsync_of(monkeypatch, part, times=1)
    # When it is produced to
    shard.produce(0, request_id=1)
    shard.commit.commit()
    # Then its produce fails naming the shard, the partition and the file, nothing is readable
    ((_, base_offset, error, _, _),) = shard.replies
    assert type(error).__name__ == "StorageError" and failed and base_offset is None
    assert "shard-gc: fsync of t-0 failed" in str(error) and str(part.log.directory) in str(error)
    # And the batch was cut, so that the next produce, with a working disk, is stored
    # in its place, durable and readable
    assert part.high_watermark == 0 and part.log.end_offset == 0
    monkeypatch.undo()
    shard.produce(0, request_id=2)
    shard.commit.commit()
    assert shard.replies[-1] == (2, 0, None, 1, 1)


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


# --- Replicated partitions: acks="all" waits for the high watermark ---------------------

def produce_acks_all(shard: Shard, number: int, request_id: int, values=(b"v",)) -> int:
    """An acks="all" produce: acknowledged once the high watermark passes its last record."""
    part = shard.partition(number)
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, NOW_MS, None)
    batch = builder.build()
    base_offset = part.append(batch, summarize_batch(batch))
    shard.commit.written(part)
    shard.commit.acknowledge_later([b"router", b"client"], request_id, part, base_offset,
                                   shard.clock.now_s, base_offset + len(values) - 1)
    shard._by_request[request_id] = part
    return base_offset


def test_a_replicated_partition_calls_its_hook_once_durable_and_keeps_its_high_watermark(
        make_shard):
    # Given a replicated partition whose hook records what it sees
    shard = make_shard()
    part = shard.partition(0)
    seen = []
    shard.commit.replicate(part, lambda p: seen.append((p.log.flushed_end_offset,
                                                        p.high_watermark)))
    # When an acks=1 produce commits
    shard.produce(0, request_id=1, values=[b"a", b"b"])
    shard.commit.commit()
    # Then the hook saw it durable, the high watermark did not move, and acks=1 is answered
    assert seen == [(2, 0)] and part.high_watermark == 0
    assert shard.replies == [(1, 0, None, 2, 0)]


def test_acks_all_is_answered_in_order_only_once_the_high_watermark_passes_its_last_record(
        make_shard):
    # Given a replicated partition and three acks="all" produces, durable
    shard = make_shard()
    part = shard.partition(0)
    shard.commit.replicate(part, lambda p: None)
    produce_acks_all(shard, 0, request_id=1, values=[b"a", b"b"])   # offsets 0..1
    produce_acks_all(shard, 0, request_id=2)                        # offset 2
    produce_acks_all(shard, 0, request_id=3)                        # offset 3
    shard.commit.commit()
    assert shard.replies == []
    # When the high watermark moves to 2, then to 4
    part.advance(2)
    shard.commit.high_watermark_moved(part)
    first = list(shard.replies)
    part.advance(4)
    shard.commit.high_watermark_moved(part)
    # Then only the first is answered at 2, and the others at 4, in order
    assert first == [(1, 0, None, 4, 2)]
    assert shard.replies == [(1, 0, None, 4, 2), (2, 2, None, 4, 4), (3, 3, None, 4, 4)]
    assert shard.commit.acks_all_room()


def test_acks_all_that_waits_too_long_is_answered_with_the_late_error_and_never_hangs(
        make_shard, monkeypatch):
    from plinth import limits
    from plinth.errors import NotEnoughReplicasError, NotLeaderError, RequestTimedOutError

    # Given a 1 s acks="all" wait, two partitions with a produce each waiting
    monkeypatch.setattr(limits, "ACKS_ALL_WAIT_MS_MAX", 1_000)
    shard = make_shard()
    too_few = {0: NotEnoughReplicasError("t-0: in sync ['s0'], min 2")}
    for number in (0, 1):
        shard.commit.replicate(shard.partition(number), lambda p: None,
                               lambda p: too_few.get(p.partition))
        produce_acks_all(shard, number, request_id=10 + number)
    shard.commit.commit()
    # When 0.9 s pass, nothing is answered; when 1 s has passed, both are
    shard.clock.now_s += 0.9
    assert shard.commit.expire_acks_all(shard.clock.now_s) == 0
    shard.clock.now_s += 0.1
    assert shard.commit.expire_acks_all(shard.clock.now_s) == 2
    # Then the one with too few in sync says so, the other timed out
    errors = {request_id: type(error) for request_id, _, error, _, _ in shard.replies}
    assert errors == {10: NotEnoughReplicasError, 11: RequestTimedOutError}
    # And a partition that stops being led answers its waiting produces at once
    produce_acks_all(shard, 0, request_id=20)
    shard.commit.commit()
    assert shard.commit.fail_acks_all(shard.partition(0), NotLeaderError("deposed")) == 1
    assert isinstance(shard.replies[-1][2], NotLeaderError)


def test_acks_all_waiting_is_bounded(make_shard, monkeypatch):
    from plinth import limits

    # Given room for two waiting acks="all" produces
    monkeypatch.setattr(limits, "ACKS_ALL_PENDING_MAX", 2)
    shard = make_shard()
    shard.commit.replicate(shard.partition(0), lambda p: None)
    # When two wait, Then there is no room for a third; once one is answered, there is
    produce_acks_all(shard, 0, request_id=1)
    assert shard.commit.acks_all_room()
    produce_acks_all(shard, 0, request_id=2)
    shard.commit.commit()
    assert not shard.commit.acks_all_room()
    shard.partition(0).advance(1)
    shard.commit.high_watermark_moved(shard.partition(0))
    assert shard.commit.acks_all_room()
