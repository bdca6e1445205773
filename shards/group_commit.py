"""Group commit: append many produces, fsync each written partition once, then acknowledge.

Runs in a shard actor, on its loop thread (shard_server.py). The loop
appends every produce it drains (up to GROUP_COMMIT_REQUESTS_MAX at a time)
and reports it here: ``written(partition)`` marks the partition dirty and
``acknowledge_later(...)`` queues the produce's reply. Then ``commit()``
acts on the fsync policy:

- "always" (the default): fsync every dirty partition, all at the same time,
  then move each one's high watermark to its durable end, then send the
  replies. Produces that arrive during the fsync wait in the socket and share
  the next round's.
- "interval": make what was written readable and reply at once; fsync every
  ``fsync_interval_ms``.
- "never": make what was written readable and reply at once; the OS writes
  when it likes (and a sealed or closing shard fsyncs: ``commit(force_flush)``).

Replicated partitions (replica_server.py, replica_fetcher.py). Their high
watermark is not the durable end: for each one the loop registers a hook
(``replicate``), which commit calls instead of moving the high watermark, with
the partition now durable as the policy says (a leader counts its own log end;
a follower fetches again). An acks="all" produce (wire acks -1) is not answered
after the fsync but waits, in order, until the high watermark passes its last
offset (``high_watermark_moved``), for at most ACKS_ALL_WAIT_MS_MAX; then it is
answered RequestTimedOut, or what ``late_error(partition)`` says (too few in
sync). At most ACKS_ALL_PENDING_MAX wait at once (``acks_all_room``); a
partition that stops being led here answers its waiting ones with an error
(``fail_acks_all``), so no reply is left hanging.

A partition whose fsync fails keeps its high watermark and stays dirty (the
next round tries again); only its own produces of the round fail, with a
StorageError naming it. ``fsync_failed(part, error)`` is told first, and may
cut what the failed fsync may not have written (ShardServer does: the kernel
reports a failed writeback once, so the next fsync would succeed without it).
Replies keep their order: the reply to a retried duplicate, which appends
nothing, waits behind the round's fsync too.

Threads. Only the loop thread calls in. During a commit, pool threads run
``PartitionLog.flush`` of the dirty partitions, one partition each, while the
loop thread flushes one itself and then waits for them: no other code runs
on the loop meanwhile, so the loop still owns every log.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from plinth import limits, protocol
from plinth.errors import BrokerError, RequestTimedOutError, StorageError
from plinth.shards.partition import Partition
from plinth.shards.shard_stats import ShardStats

FSYNC_POLICIES = ("always", "interval", "never")


@dataclass(slots=True)
class PendingAck:
    """A produce appended this round, waiting for its reply."""

    envelope: list           # the router's and the client's identity frames
    request_id: int
    partition: Partition
    base_offset: int
    received_s: float        # time.monotonic() when the request arrived
    # acks="all": the offset the high watermark must pass before the reply; -1 for
    # a reply once the partition is durable here (acks=1).
    last_offset: int = -1


class GroupCommit:
    """The dirty partitions and pending replies of one shard. Loop thread only, every method.

    ``reply(envelope, header)`` sends a reply; ``readable(partition)`` is told
    that a partition's high watermark moved (its parked fetches can be answered).
    """

    def __init__(self, shard_id: str, fsync_policy: str, fsync_interval_ms: int, *,
                 reply: Callable[[list, bytes], None], readable: Callable[[Partition], None],
                 stats: ShardStats, clock_s: Callable[[], float] = time.monotonic,
                 fsync_failed: Callable[[Partition, StorageError], None] | None = None):
        if fsync_policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync_policy {fsync_policy!r} is not one of {FSYNC_POLICIES}")
        self.shard_id = shard_id
        self.fsync_policy = fsync_policy
        self.fsync_interval_ms = fsync_interval_ms
        self._reply = reply
        self._readable = readable
        self._stats = stats
        self._clock_s = clock_s
        self._fsync_failed_hook = fsync_failed
        # Partitions written since their last fsync, in the order first written.
        # At most one entry per partition on the shard, so bounded by them.
        self._dirty: dict[Partition, None] = {}
        # At most GROUP_COMMIT_REQUESTS_MAX: the loop commits after each drain.
        self._acks: list[PendingAck] = []
        # Replicated partitions: what to call once one is durable (see the docstring).
        self._durable_hooks: dict[Partition, Callable[[Partition], None]] = {}
        # acks="all" replies waiting for the high watermark, per partition, in offset
        # order (so also in arrival order); at most ACKS_ALL_PENDING_MAX in all.
        self._acks_all: dict[Partition, deque[PendingAck]] = {}
        self._acks_all_count = 0
        self._late_error: Callable[[Partition], BrokerError | None] = lambda part: None
        self._next_flush_s = 0.0
        self._fsync_pool = concurrent.futures.ThreadPoolExecutor(
            limits.FSYNC_THREADS_MAX, thread_name_prefix=f"{shard_id}-fsync")

    def written(self, part: Partition) -> None:
        """``part`` was appended to: fsync it (as the policy says) in the next commit."""
        self._dirty[part] = None

    def acknowledge_later(self, envelope: list, request_id: int, part: Partition,
                          base_offset: int, received_s: float, last_offset: int = -1) -> None:
        """Reply to this produce at the next commit, once its partition is durable as
        required; with ``last_offset`` (acks="all" on a replicated partition), once the
        high watermark passes it too. The caller checked ``acks_all_room`` first."""
        self._acks.append(PendingAck(envelope, request_id, part, base_offset, received_s,
                                     last_offset))
        if last_offset >= 0:
            self._acks_all_count += 1

    def acks_all_room(self) -> bool:
        """Whether another acks="all" produce may wait (ACKS_ALL_PENDING_MAX)."""
        return self._acks_all_count < limits.ACKS_ALL_PENDING_MAX

    def replicate(self, part: Partition, on_durable: Callable[[Partition], None],
                  late_error: Callable[[Partition], BrokerError | None] | None = None) -> None:
        """``part`` is replicated: once durable, call ``on_durable(part)`` instead of
        moving its high watermark. ``late_error(part)``: the error for an acks="all"
        produce that waited too long (None: RequestTimedOut)."""
        self._durable_hooks[part] = on_durable
        if late_error is not None:
            self._late_error = late_error

    def unreplicate(self, part: Partition) -> None:
        """``part`` has one copy again, or is deleted: commit moves its high watermark."""
        self._durable_hooks.pop(part, None)

    def high_watermark_moved(self, part: Partition) -> None:
        """``part``'s high watermark moved: answer the acks="all" produces it passed."""
        waiting = self._acks_all.get(part)
        if not waiting:
            return
        reply, high_watermark = self._reply, part.high_watermark
        now_s = self._clock_s()
        while waiting and waiting[0].last_offset < high_watermark:
            ack = waiting.popleft()
            reply(ack.envelope, protocol.encode_produce_reply(ack.request_id, ack.base_offset))
            self._stats.observe("produce", now_s - ack.received_s)
            self._acks_all_count -= 1
        if not waiting:
            del self._acks_all[part]

    def fail_acks_all(self, part: Partition, error: BrokerError) -> int:
        """Answer every acks="all" produce waiting on ``part`` with ``error`` (it is not
        led here any more); returns how many."""
        waiting = self._acks_all.pop(part, None)
        if not waiting:
            return 0
        for ack in waiting:
            self._reply(ack.envelope, protocol.encode_error(ack.request_id, error))
        self._acks_all_count -= len(waiting)
        return len(waiting)

    def expire_acks_all(self, now_s: float) -> int:
        """Answer the acks="all" produces that waited ACKS_ALL_WAIT_MS_MAX or more;
        returns how many. Each partition's are in arrival order: only fronts are looked at."""
        if not self._acks_all:
            return 0
        received_s_max = now_s - limits.ACKS_ALL_WAIT_MS_MAX / 1000
        expired = 0
        for part in list(self._acks_all):
            waiting = self._acks_all[part]
            while waiting and waiting[0].received_s <= received_s_max:
                ack = waiting.popleft()
                error = self._late_error(part) or RequestTimedOutError(
                    f"{part.name}: the in-sync replicas did not all have offset "
                    f"{ack.last_offset} within {limits.ACKS_ALL_WAIT_MS_MAX} ms (high "
                    f"watermark {part.high_watermark}); retry")
                self._reply(ack.envelope, protocol.encode_error(ack.request_id, error))
                self._acks_all_count -= 1
                expired += 1
            if not waiting:
                del self._acks_all[part]
        return expired

    def forget(self, part: Partition, error: BrokerError | None = None) -> None:
        """``part`` is being deleted: fsync it no more; its waiting acks="all" produces
        get ``error``."""
        self._dirty.pop(part, None)
        self._durable_hooks.pop(part, None)
        if error is not None:
            self.fail_acks_all(part, error)

    def next_flush_s(self) -> float | None:
        """When the loop must wake to fsync under "interval"; None if nothing waits for it."""
        if self._dirty and self.fsync_policy == "interval":
            return self._next_flush_s
        return None

    def commit(self, force_flush: bool = False) -> None:
        """Make appended batches durable as the policy says (all of them if
        ``force_flush``), make them readable, then reply to every pending produce."""
        if not self._dirty and not self._acks:
            return
        failed = self._flush_dirty(force_flush) if self._dirty else {}
        reply = self._reply
        now_s = self._clock_s()
        for ack in self._acks:
            error = failed.get(ack.partition) if failed else None
            if error is not None:
                reply(ack.envelope, protocol.encode_error(ack.request_id, error))
                self._acks_all_count -= ack.last_offset >= 0
            elif ack.last_offset >= 0:
                self._wait_for_high_watermark(ack)
                continue
            else:
                reply(ack.envelope, protocol.encode_produce_reply(ack.request_id, ack.base_offset))
            self._stats.observe("produce", now_s - ack.received_s)
        self._acks.clear()

    def _wait_for_high_watermark(self, ack: PendingAck) -> None:
        part = ack.partition
        waiting = self._acks_all.get(part)
        if waiting is None:
            waiting = self._acks_all[part] = deque()
        waiting.append(ack)
        if ack.last_offset < part.high_watermark:   # it moved in this very commit
            self.high_watermark_moved(part)

    def close(self) -> None:
        """Stop the fsync threads (after the last commit). Any thread."""
        self._fsync_pool.shutdown(wait=False)

    def _flush_dirty(self, force_flush: bool) -> dict[Partition, StorageError]:
        now_s = self._clock_s()
        flush = force_flush or self.fsync_policy == "always" or (
            self.fsync_policy == "interval" and now_s >= self._next_flush_s)
        failed = self._fsync_all(self._dirty) if flush else {}
        if failed and self._fsync_failed_hook is not None:
            for part, error in failed.items():
                self._fsync_failed_hook(part, error)
        # Without an fsync this round, "interval" and "never" still make the
        # written end readable; "always" flushes every round.
        hooks = self._durable_hooks
        for part in self._dirty:
            if part in failed:
                continue
            hook = hooks.get(part) if hooks else None
            if hook is not None:
                hook(part)
            elif part.advance(part.log.end_offset):
                self._readable(part)
        if flush:
            self._dirty = dict.fromkeys(failed)
            self._next_flush_s = now_s + self.fsync_interval_ms / 1000
        return failed

    def _fsync_all(self, parts: dict[Partition, None]) -> dict[Partition, StorageError]:
        """fsync every partition given, at the same time; returns those that failed.

        The disk serves concurrent fsyncs of different files faster than one
        after another (two partitions: p50 0.32 ms instead of 0.38-0.47 ms,
        p90 0.5 ms instead of 1.1-2.8 ms, measured on the development
        machine). See the module docstring for why the loop still owns the logs.
        """
        if len(parts) == 1:   # the usual case one record at a time: no pool, no lists
            (only,) = parts
            exc = _fsync_error(only.log.flush)
            return {} if exc is None else {only: self._fsync_failed(only, exc)}
        first, *others = parts
        pending = [(part, self._fsync_pool.submit(part.log.flush)) for part in others]
        outcomes = [(first, _fsync_error(first.log.flush))]
        outcomes += [(part, _fsync_error(future.result)) for part, future in pending]
        return {part: self._fsync_failed(part, exc) for part, exc in outcomes if exc is not None}

    def _fsync_failed(self, part: Partition, exc: Exception) -> StorageError:
        return StorageError(f"{self.shard_id}: fsync of {part.name} failed: {exc}")


def _fsync_error(flush: Callable[[], None]) -> Exception | None:
    """Run ``flush`` (a log's fsync, or the result of one in the pool); return how it failed.

    A segment reports a failed fsync as StorageError (naming the file); an
    OSError can come from below it.
    """
    try:
        flush()
    except (OSError, StorageError) as exc:
        return exc
    return None
