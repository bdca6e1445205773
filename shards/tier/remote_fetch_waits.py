"""Remote reads waiting for the reader: a bounded wait, and one read per offset (or time).

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

Look-ups by time (``RemoteTimeRead``, remote_time_lookup.py: ListOffsets by
timestamp whose record is in object storage) are bounded and joined alike, in
a RemoteFetchWaits of their own (``for_time_lookups``; one wait per instance
keeps its deadlines in arrival order). A look-up of the same partition,
segment, time and floor offset as one pending joins its read. It waits at
most REMOTE_TIME_LOOKUP_WAIT_MS_MAX (2 s; plinth/limits.py says why), and as
it has no empty answer, the loop then answers it requestTimedOut, retriable
(Kafka's DelayedRemoteListOffsets answers REQUEST_TIMED_OUT, KIP-1075). The
client's retry joins the read still pending, so once the store answers, the
retry waiting gets the record; a result that finds nobody waiting (every wait
ended, no retry yet) answers nobody, and only warmed the reader's indexes and
chunk cache for the next look-up.

    loop thread: a fetch below the local start          reader thread
    (or a look-up by time in a remote segment)
    ------------------------------------------------    --------------------
    RemoteFetchWaits.join(read): a read of that offset
      (and time) pending? the request waits on it; else
    RemoteFetcher.submit(read), RemoteFetchWaits.add  ->  reads (perhaps for
    _run_timers: ``expire(now)``: the requests whose       seconds)
      wait ended are answered: a fetch empty, a
      look-up requestTimedOut; the read goes on       <-  done(result)
    _remote_fetched: ``settle(read)``: the requests
      still waiting get its data, record or error;
      none: the result is dropped
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Hashable

from plinth import limits
from plinth.shards.tier.remote_fetcher import RemoteRead, entries_within
from plinth.shards.tier.remote_time_lookup import RemoteTimeRead

__all__ = ["RemoteFetchWaits", "fit"]

Read = RemoteRead | RemoteTimeRead


def join_key(read: Read) -> Hashable:
    """What makes two requests the same read: partition, topic id, segment and offset
    (for a look-up by time, the floor offset), and a look-up's time."""
    key = read.key, read.segment.topic_id, read.segment.segment_id, read.offset
    return key + (read.timestamp_ms,) if type(read) is RemoteTimeRead else key


class _Pending:
    """One read queued or being read, and the requests waiting for it (by id)."""

    __slots__ = ("read", "submitted_s", "waiting", "settled")

    def __init__(self, read: Read, submitted_s: float):
        self.read = read
        self.submitted_s = submitted_s
        self.waiting: dict[int, Read] = {id(read): read}   # in arrival order
        self.settled = False


class RemoteFetchWaits:
    """The pending remote reads of one shard, of one kind: fetches (the default, each
    waiting REMOTE_FETCH_WAIT_MS_MAX) or look-ups by time (``for_time_lookups``).
    Loop thread only, every method."""

    def __init__(self, wait_s: float | None = None, join_s_max: float | None = None):
        self._wait_s = limits.REMOTE_FETCH_WAIT_MS_MAX / 1000 if wait_s is None else wait_s
        self._join_s_max = limits.REMOTE_FETCH_JOIN_S_MAX if join_s_max is None else join_s_max
        self._pending: dict[Hashable, _Pending] = {}   # join key -> read, oldest first
        # (deadline_s, pending, request) in deadline order (``_wait``): every request
        # waits the same time from when the loop received it.
        self._deadlines: deque[tuple[float, _Pending, Read]] = deque()

    @classmethod
    def for_time_lookups(cls) -> RemoteFetchWaits:
        """The look-ups by time of one shard, each waiting REMOTE_TIME_LOOKUP_WAIT_MS_MAX."""
        return cls(wait_s=limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX / 1000)

    @property
    def wait_ms(self) -> int:
        """How long each request waits for its read, in ms (for error messages)."""
        return round(self._wait_s * 1000)

    def __len__(self) -> int:
        return len(self._pending)

    def join(self, fetch: Read, now_s: float) -> bool:
        """Whether ``fetch`` (a fetch or a look-up) joined a read of its partition,
        segment and offset (and time) already pending (then nothing is to be queued);
        False: the caller submits it and then calls ``add``."""
        pending = self._pending.get(join_key(fetch))
        if pending is None or now_s - pending.submitted_s > self._join_s_max:
            return False
        pending.waiting[id(fetch)] = fetch
        self._wait(fetch, pending)
        return True

    def add(self, read: Read, now_s: float) -> None:
        """``read`` was submitted to the reader; its request waits for it. A pending read
        of the same offset taken as lost (``join`` said False) is forgotten."""
        key = join_key(read)
        lost = self._pending.pop(key, None)
        if lost is not None:
            lost.settled = True   # its result, if it ever comes, answers nobody
        pending = self._pending[key] = _Pending(read, now_s)
        self._wait(read, pending)

    def _wait(self, request: Read, pending: _Pending) -> None:
        """``request`` waits for ``pending`` until its deadline, kept in deadline order.
        Requests come in the order the loop received them, so nearly always at the
        end; a look-up by time that found no record in one segment asks the next one
        within its first wait (its ``received_s``), so it may go further in."""
        deadline = (request.received_s + self._wait_s, pending, request)
        deadlines = self._deadlines
        if not deadlines or deadlines[-1][0] <= deadline[0]:
            deadlines.append(deadline)
        else:
            deadlines.insert(bisect.bisect_right(deadlines, deadline[0], key=_deadline_s),
                             deadline)

    def settle(self, read: Read) -> list[Read]:
        """The reader answered ``read``: the requests still waiting for it, which the
        caller answers with its result (none: their waits ended, or the read was
        taken as lost and replaced)."""
        key = join_key(read)
        pending = self._pending.get(key)
        if pending is None or pending.read is not read:
            return []
        del self._pending[key]
        pending.settled = True
        return list(pending.waiting.values())

    def expire(self, now_s: float) -> list[Read]:
        """The requests whose wait ended by ``now_s``, which the caller answers (a fetch
        empty, a look-up requestTimedOut; their reads go on); and forgets reads
        pending past REMOTE_FETCH_JOIN_S_MAX (lost) that no request waits for."""
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
        """The earliest wait's end (perhaps of a request answered already), or None."""
        return self._deadlines[0][0] if self._deadlines else None


def _deadline_s(deadline: tuple[float, _Pending, Read]) -> float:
    return deadline[0]


def fit(fetch: RemoteRead, data: bytes | memoryview) -> bytes | memoryview:
    """The leading entries of ``data`` (whole, checked, from ``fetch.offset``'s entry)
    that ``fetch`` may be answered with: starting before its ``end_offset_max``, and
    within its ``bytes_max`` (the first entry always, as a read answers)."""
    return entries_within(data, fetch.end_offset_max, fetch.bytes_max)
