"""AsyncCommits: the commits a consumer sent without waiting, until each ends.

Client side, on the consumer's thread (an AIOConsumer's: its loop's). A commit
sent without waiting (the sync consumer's ``commit_async``, either consumer's
auto-commit) goes in parts (``protocol.commit_offsets_parts``), one request
each; it ends when every part is answered or has expired, and then its callback
runs once with its offsets and the first error of its parts, as kafka-python's
and the Java consumer's ``commitAsync`` complete with the reply or, after
request.timeout.ms, with a timeout. Before, a part whose answer never came (its
broker died with the request) stayed in flight for good: its callback never ran,
and nothing bounded how many such parts the consumer kept.

A part unanswered within request_timeout_ms expires (``expired``): it fails with
PlinthTimeoutError and the connection forgets its request, so a reply that comes
later is dropped. The poll calls ``expired`` in each pass and wakes at
``next_expiry_s``. close() waits for the parts in flight, at most its own
timeout, and ends the rest (``given_up``), so every callback runs, as the Java
consumer's close() waits for its pending async commits. What a part's end does (note the offsets committed, count
down, run the callback or log) is the consumer's (consumer_base.py); this only
keeps the parts in flight and their clocks.
"""

from __future__ import annotations

import time

from plinth.client.connection import Connection
from plinth.errors import BrokerError, PlinthTimeoutError


class AsyncCommit:
    """One commit sent without waiting: its parts' ends count down to its one
    callback (None: a failure is logged). Consumer thread only."""

    __slots__ = ("offsets", "callback", "parts_left", "error")

    def __init__(self, offsets: dict, callback, parts: int):
        assert parts > 0, "a commit with nothing to send is never in flight"
        self.offsets, self.callback, self.parts_left = offsets, callback, parts
        self.error: BrokerError | PlinthTimeoutError | None = None

    @property
    def in_flight(self) -> bool:
        return self.parts_left > 0


class AsyncCommits:
    """The parts in flight, by request id. The consumer's thread (or loop) only."""

    def __init__(self, conn: Connection, *, request_timeout_ms: float):
        self._conn = conn
        self._timeout_s = request_timeout_ms / 1000
        self._parts: dict[int, tuple[dict, AsyncCommit, float]] = {}   # id -> (part, commit, sent_s)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._parts

    def send(self, parts: list[dict], commit: AsyncCommit, encode) -> None:
        """Send each part (``encode(request_id, part)`` makes its request). If a send
        raises, the parts already sent are forgotten (their replies are dropped as a
        stale fetch's) and the error goes to the caller."""
        assert len(parts) == commit.parts_left, (len(parts), commit.parts_left)
        sent = []
        try:
            for part in parts:
                request_id = self._conn.next_request_id()
                self._conn.send(encode(request_id, part))
                sent.append(request_id)
                self._parts[request_id] = (part, commit, time.monotonic())
        except BaseException:
            for request_id in sent:
                del self._parts[request_id]
                self._conn.forget(request_id)
            raise

    def pop(self, request_id: int) -> tuple[dict, AsyncCommit]:
        """The part ``request_id`` answers, no longer in flight."""
        part, commit, _ = self._parts.pop(request_id)
        return part, commit

    def expired(self) -> list[tuple[dict, AsyncCommit, PlinthTimeoutError]]:
        """The parts unanswered within request_timeout_ms, no longer in flight, each
        with the error it ends with."""
        now_s = time.monotonic()
        out = []
        for request_id, (part, commit, sent_s) in list(self._parts.items()):
            if now_s - sent_s >= self._timeout_s:
                del self._parts[request_id]
                self._conn.forget(request_id)
                out.append((part, commit, PlinthTimeoutError(
                    f"no answer to the commit of {len(part)} partition offset(s) within "
                    f"request_timeout_ms={self._timeout_s * 1000:.0f}: the group's "
                    f"coordinator is down, hung or restarting (see plinth status)")))
        return out

    def given_up(self, timeout_ms: float) -> list[tuple[dict, AsyncCommit, PlinthTimeoutError]]:
        """Every part still in flight, no longer in flight, each with the error it ends
        with: the consumer is closing and waited ``timeout_ms`` (close's) for them."""
        out = []
        for request_id, (part, commit, _) in list(self._parts.items()):
            del self._parts[request_id]
            self._conn.forget(request_id)
            out.append((part, commit, PlinthTimeoutError(
                f"the consumer closed before the commit of {len(part)} partition offset(s) "
                f"was answered: close waited timeout_ms={timeout_ms:.0f} for it")))
        return out

    def next_expiry_s(self) -> float | None:
        """When (time.monotonic()) the oldest part expires; None with none in flight."""
        if not self._parts:
            return None
        return min(sent_s for _, _, sent_s in self._parts.values()) + self._timeout_s
