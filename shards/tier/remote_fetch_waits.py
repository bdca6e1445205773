"""Remote fetches waiting for the reader: a bounded wait, and one read per offset.

Runs in a shard actor, on its loop thread only (shard_server.py); no locks.

Kafka's DelayedRemoteFetch. A fetch below the local log start is read by the
reader thread (remote_fetcher.py), and a store that hangs holds that read for
its timeouts (REMOTE_FETCH_*_TIMEOUT_S, seconds). The fetch's client must not
wait that long: a consumer's fetch of several partitions is answered when
every partition is, so one hung remote read held up the records of the local
partitions in the same fetch (a tester measured p50 2.1 s instead of 3 ms).
So each remote fetch waits at most REMOTE_FETCH_WAIT_MS_MAX (Kafka's
``remote.fetch.max.wait.ms``, 500 ms) from when the loop received it; then it
is answered with no records, the partition's high watermark and log start, as
an empty fetch is, and its client fetches again. The read is not interrupted:
it goes on, and its late result warms the chunk cache (the reader reads through
it) but answers nobody a second time.

One read per offset. The client's next fetch of the same offset comes while
the first read may still be stuck on the store. Queued again, every retry
would take a place in the reader's bounded queue (REMOTE_FETCHES_QUEUED_MAX)
for the same bytes, until other partitions' fetches were refused. So a fetch
of a partition, segment and offset already being read (queued, or in the
reader's hands) joins that read: it is answered with the read's result if it
arrives within its own wait, else empty when its wait ends. A read is
"being read" from its ``submit`` until its result is settled here, or for at
most REMOTE_FETCH_JOIN_S_MAX: a result lost on the way back (the loop's
queue full: remote_fetcher.py logs it) must not make its offset answered
empty for ever, so past that a fetch of it queues a new read, and the old
read, if it ever answers, answers nobody.

A joined fetch may ask for fewer bytes than the read it joined, or (after a
leader change) have a lower high watermark: ``fit`` trims the read's entries
to what it may be answered with.

    loop thread: a fetch below the local start          reader thread
    ------------------------------------------------    --------------------
    RemoteFetchWaits.join(read): a read of that offset
      pending? the fetch waits on it; else
    RemoteFetcher.submit(read), RemoteFetchWaits.add  ->  reads (perhaps for
    _run_timers: ``expire(now)``: the fetches whose        seconds)
      wait ended are answered empty                   <-  done(result)
    _remote_fetched: ``settle(read)``: the fetches
      still waiting get the data or the error; none: dropped
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from plinth import limits
from plinth.shards.tier.remote_fetcher import RemoteRead, entries_within

__all__ = ["RemoteFetchWaits", "fit"]


def join_key(read: RemoteRead) -> Hashable:
    """What makes two fetches the same read: partition, topic id, segment and offset."""
    return read.key, read.segment.topic_id, read.segment.segment_id, read.offset


class _Pending:
    """One read queued or being read, and the fetches waiting for it (by id)."""

    __slots__ = ("read", "submitted_s", "waiting", "settled")

    def __init__(self, read: RemoteRead, submitted_s: float):
        self.read = read
        self.submitted_s = submitted_s
        self.waiting: dict[int, RemoteRead] = {id(read): read}   # in arrival order
        self.settled = False


class RemoteFetchWaits:
    """The pending remote reads of one shard. Loop thread only, every method."""

    def __init__(self, wait_s: float | None = None, join_s_max: float | None = None):
        self._wait_s = limits.REMOTE_FETCH_WAIT_MS_MAX / 1000 if wait_s is None else wait_s
        self._join_s_max = limits.REMOTE_FETCH_JOIN_S_MAX if join_s_max is None else join_s_max
        self._pending: dict[Hashable, _Pending] = {}   # join key -> read, oldest first
        # (deadline_s, pending, fetch) in deadline order: every fetch waits the same
        # time from when the loop received it, and the loop receives them in order.
        self._deadlines: deque[tuple[float, _Pending, RemoteRead]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def join(self, fetch: RemoteRead, now_s: float) -> bool:
        """Whether ``fetch`` joined a read of its partition, segment and offset already
        pending (then nothing is to be queued); False: the caller submits it and then
        calls ``add``."""
        pending = self._pending.get(join_key(fetch))
        if pending is None or now_s - pending.submitted_s > self._join_s_max:
            return False
        pending.waiting[id(fetch)] = fetch
        self._deadlines.append((fetch.received_s + self._wait_s, pending, fetch))
        return True

    def add(self, read: RemoteRead, now_s: float) -> None:
        """``read`` was submitted to the reader; its fetch waits for it. A pending read
        of the same offset taken as lost (``join`` said False) is forgotten."""
        key = join_key(read)
        lost = self._pending.pop(key, None)
        if lost is not None:
            lost.settled = True   # its result, if it ever comes, answers nobody
        pending = self._pending[key] = _Pending(read, now_s)
        self._deadlines.append((read.received_s + self._wait_s, pending, read))

    def settle(self, read: RemoteRead) -> list[RemoteRead]:
        """The reader answered ``read``: the fetches still waiting for it, which the
        caller answers with its result (none: their waits ended, or the read was
        taken as lost and replaced)."""
        key = join_key(read)
        pending = self._pending.get(key)
        if pending is None or pending.read is not read:
            return []
        del self._pending[key]
        pending.settled = True
        return list(pending.waiting.values())

    def expire(self, now_s: float) -> list[RemoteRead]:
        """The fetches whose wait ended by ``now_s``, which the caller answers empty
        (their reads go on); and forgets reads pending past REMOTE_FETCH_JOIN_S_MAX
        (lost) that no fetch waits for."""
        expired = []
        deadlines = self._deadlines
        while deadlines and (deadlines[0][1].settled or deadlines[0][0] <= now_s):
            _, pending, fetch = deadlines.popleft()
            if not pending.settled and pending.waiting.pop(id(fetch), None) is not None:
                expired.append(fetch)
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if pending.waiting or now_s - pending.submitted_s <= self._join_s_max:
                break
            del self._pending[key]
            pending.settled = True
        return expired

    def next_deadline_s(self) -> float | None:
        """The earliest wait's end (perhaps of a fetch answered already), or None."""
        return self._deadlines[0][0] if self._deadlines else None


def fit(fetch: RemoteRead, data: bytes | memoryview) -> bytes | memoryview:
    """The leading entries of ``data`` (whole, checked, from ``fetch.offset``'s entry)
    that ``fetch`` may be answered with: starting before its ``end_offset_max``, and
    within its ``bytes_max`` (the first entry always, as a read answers)."""
    return entries_within(data, fetch.end_offset_max, fetch.bytes_max)
