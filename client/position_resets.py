"""PositionResets: a consumer's position resets, asked without waiting.

Client side, on the consumer's thread (an AIOConsumer's: its loop's). A partition without a position (new to the
consumer, or after offsetOutOfRange) starts where ``auto_offset_reset`` says:
the start or the end of its log, which only its shard knows (a listOffsets
request; for the start, one with ``require_listed``: a tiered partition whose
shard has not listed object storage yet answers unavailable, retried as below,
rather than a start that skips records in the store). The Consumer asked it
with a blocking call inside ``poll()``, so a shard that hangs held every poll
for request_timeout_ms, whatever its timeout_ms, then raised PlinthTimeoutError
out of it: one hung shard stopped the reading of every partition. kafka-python's
and the Java consumer's poll(timeout) bound the reset by the poll's timeout.

Here the request goes on the consumer's own connection and its reply comes back
with the fetch replies (``on_reply``); until then the Fetcher skips the
partition (its position is None). A reset not answered within
request_timeout_ms, or answered with a transient error (TRANSIENT_ERRORS), is
asked again after a backoff that doubles from CLIENT_RETRY_BACKOFF_MS up to
CLIENT_RETRY_BACKOFF_MAX_MS; meanwhile the partition is failing (``errors``,
which the Consumer's ``fetch_errors`` includes), logged once at WARNING when it
starts and once at INFO when a reset succeeds again; each reset applied is logged
at INFO with the offset it found. Any other error is raised
out of the poll that reads it, as the blocking call raised it. At most one
reset per partition is in flight, and at most CONSUMER_POSITION_RESETS_IN_FLIGHT_MAX
in all: the Fetcher asks for a partition's reset in every poll's pass while it
has no position, so the rest are sent as answers free room. A request the
connection cannot take now (no router connected, its queue full) fails the
partition as a transient error would.

Both consumers use it: the asyncio one on its AIOConnection, whose ``send``
never waits, and whose getmany wakes at ``next_event_s`` as the sync poll does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from plinth import limits, protocol
from plinth.client.connection import Connection
from plinth.client.fetcher import TopicPartition
from plinth.errors import TRANSIENT_ERRORS, PlinthTimeoutError

log = logging.getLogger(__name__)


class _Failing:
    """A partition whose reset failed: the last error, when to ask again, the backoff."""

    __slots__ = ("error", "retry_at_s", "backoff_s")

    def __init__(self, error: Exception, retry_at_s: float, backoff_s: float):
        self.error, self.retry_at_s, self.backoff_s = error, retry_at_s, backoff_s


class PositionResets:
    """The consumer's thread (or loop) only. ``waiting(tp)``: whether ``tp`` is assigned and still has no
    position (a reset's answer for any other is dropped: it was seek()ed, or is no
    longer assigned); ``seek(tp, offset)`` gives it the offset its reset found."""

    def __init__(self, conn: Connection, *, request_timeout_ms: float, earliest: bool,
                 waiting: Callable[[TopicPartition], bool],
                 seek: Callable[[TopicPartition, int], None]):
        self._conn = conn
        self._timeout_s = request_timeout_ms / 1000
        self._earliest = earliest
        self._waiting = waiting
        self._seek = seek
        self._in_flight: dict[int, tuple[TopicPartition, float]] = {}   # id -> (tp, sent)
        self._asked: dict[TopicPartition, int] = {}                      # tp -> id in flight
        self._failing: dict[TopicPartition, _Failing] = {}

    def ask(self, tp: TopicPartition) -> None:
        """Send ``tp``'s reset unless one is in flight, its backoff runs, or the
        resets in flight are at their bound (a later pass asks it)."""
        failing = self._failing.get(tp)
        if (tp in self._asked or (failing is not None and time.monotonic() < failing.retry_at_s)
                or len(self._in_flight) >= limits.CONSUMER_POSITION_RESETS_IN_FLIGHT_MAX):
            return
        request_id = self._conn.next_request_id()
        try:
            self._conn.send(protocol.encode_list_offsets(request_id, tp.topic, tp.partition,
                                                         protocol.NO_TIME_LOOKUP, self._earliest))
        except TRANSIENT_ERRORS as exc:
            self._failed(tp, exc)
            return
        self._in_flight[request_id] = (tp, time.monotonic())
        self._asked[tp] = request_id

    def on_reply(self, view: protocol.ReplyView) -> bool:
        """Whether ``view`` answers a reset (then it is applied, or raised: see the
        module)."""
        asked = self._in_flight.pop(view.request_id, None)
        if asked is None:
            return False
        tp = asked[0]
        del self._asked[tp]
        if isinstance(view.error, TRANSIENT_ERRORS):
            self._failed(tp, view.error)
        elif view.error is not None:
            self._failing.pop(tp, None)
            raise view.error
        else:
            self._succeeded(tp, view.offsets)
        return True

    def expire(self) -> None:
        """Give up on the resets unanswered within request_timeout_ms: each is failing,
        asked again after its backoff. The poll calls it in each pass."""
        now_s = time.monotonic()
        for request_id, (tp, sent_s) in list(self._in_flight.items()):
            if now_s - sent_s >= self._timeout_s:
                del self._in_flight[request_id], self._asked[tp]
                self._conn.forget(request_id)
                self._failed(tp, PlinthTimeoutError(
                    f"no answer to the position reset (listOffsets) of {tp.topic}-"
                    f"{tp.partition} within request_timeout_ms={self._timeout_s * 1000:.0f}"))

    def next_event_s(self) -> float | None:
        """When (time.monotonic()) a reset times out or its backoff ends, the earliest;
        None if neither can happen: the poll wakes then."""
        times = [sent_s + self._timeout_s for _, sent_s in self._in_flight.values()]
        times += [failing.retry_at_s for tp, failing in self._failing.items()
                  if tp not in self._asked]
        return min(times, default=None)

    def errors(self) -> dict[TopicPartition, Exception]:
        """The partitions whose reset is failing now (still without a position), each
        with its last error."""
        for tp in [tp for tp in self._failing if not self._waiting(tp)]:
            del self._failing[tp]   # seek()ed, or no longer assigned
        return {tp: failing.error for tp, failing in self._failing.items()}

    def _failed(self, tp: TopicPartition, error: Exception) -> None:
        failing = self._failing.get(tp)
        backoff_s = (limits.CLIENT_RETRY_BACKOFF_MS / 1000 if failing is None else
                     min(2 * failing.backoff_s, limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000))
        if failing is None:
            log.warning("reset of %s-%d's position failed: %s: %s; retrying until it "
                        "succeeds (the first retry in %.0f ms)", tp.topic, tp.partition,
                        type(error).__name__, error, backoff_s * 1000)
        else:
            log.debug("reset of %s-%d's position failed again: %s: %s; retrying in %.0f ms",
                      tp.topic, tp.partition, type(error).__name__, error, backoff_s * 1000)
        self._failing[tp] = _Failing(error, time.monotonic() + backoff_s, backoff_s)

    def _succeeded(self, tp: TopicPartition, info: protocol.PartitionInfo) -> None:
        """Seek ``tp`` to the offset its reset found, saying so at INFO (one line, with
        the last error if it had failed), as Kafka's consumer does: a committed offset
        that retention deleted jumps to the log's end by default, skipping records."""
        failing = self._failing.pop(tp, None)
        offset = None
        if self._waiting(tp):
            offset = info.start_offset if self._earliest else info.end_offset
        to = "" if offset is None else (
            f"offset {offset} (auto_offset_reset={'earliest' if self._earliest else 'latest'}: "
            f"the {'start' if self._earliest else 'end'} of its log, "
            f"[{info.start_offset}, {info.end_offset}])")
        if failing is not None:
            log.info("reset of %s-%d's position succeeded after failing (the last error: "
                     "%s: %s)%s", tp.topic, tp.partition, type(failing.error).__name__,
                     failing.error, f": {to}" if to else "")
        elif to:
            log.info("resetting the position of %s-%d to %s", tp.topic, tp.partition, to)
        if offset is not None:
            self._seek(tp, offset)
