"""What the producer's log says of failing sends: bounded by partitions, not retries.

A partition whose attempt fails with a retriable error (no reply in time, a
shard unavailable, no router reachable) is logged once at WARNING as it starts
failing (the error, and that its batches are retried until
delivery_timeout_ms), each retry at INFO, its first batch that runs out of time
once at WARNING, and once at INFO when a batch of it is acknowledged again,
with how long it failed, how many attempts and how many records it lost. The
consumer's fetcher logs its outages the same way.

Once the producer begins to close (``begin_close``), the records that fail are
counted by why, and one WARNING says so as the driver stops (``closed``): the
close returns, and each record's future raises its own error.

SendOutages is sans-IO and unlocked: only the sender's thread (or task) calls
it, as it calls SenderCore.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from plinth.client.accumulator import OpenBatch
from plinth.errors import ClosedError, OutOfOrderSequenceError, PlinthTimeoutError

log = logging.getLogger("plinth.client.sender")   # the sender's outages, in its log


class _Failing:
    """A partition whose batches fail, since ``since_s``, until one is acknowledged."""

    __slots__ = ("since_s", "attempts_failed", "last_error", "records_failed",
                 "timeout_logged")

    def __init__(self, since_s: float):
        self.since_s = since_s
        self.attempts_failed = 0
        self.last_error: BaseException | None = None
        self.records_failed = 0          # out of time (PlinthTimeoutError)
        self.timeout_logged = False


class SendOutages:
    """The partitions failing now, and the records failed since the close began."""

    def __init__(self, delivery_timeout_ms: float):
        self.delivery_timeout_ms = delivery_timeout_ms
        self._failing: dict[tuple[str, int], _Failing] = {}
        # Records that failed since the producer began to close, by why; None until then.
        self._closing_failures: Counter[str] | None = None

    def retrying(self, batch: OpenBatch, error: BaseException, backoff_s: float) -> None:
        """An attempt of ``batch`` failed with a retriable ``error``; it goes again in
        ``backoff_s``. WARNING when its partition starts failing (a sequence gap is the
        consequence of another batch's failure, or is retried at once: not an outage),
        INFO at each retry."""
        tp = (batch.topic, batch.partition)
        failing = self._failing.get(tp)
        if failing is None and not isinstance(error, OutOfOrderSequenceError):
            failing = self._failing[tp] = _Failing(time.monotonic())
            log.warning("produce to %s-%s failed: %s: %s; retrying its batches until each is "
                        "acknowledged or delivery_timeout_ms=%.0f after it was created (the "
                        "first retry in %.0f ms; retries are logged at INFO)", *tp,
                        type(error).__name__, error, self.delivery_timeout_ms,
                        backoff_s * 1000)
        else:
            log.info("retrying %s-%s in %.0f ms: %s", *tp, backoff_s * 1000, error)
        if failing is not None:
            failing.attempts_failed += 1
            failing.last_error = error

    def recovered(self, batch: OpenBatch) -> None:
        """A batch of a partition was acknowledged: if it was failing, say (once) that it
        delivers again, and what its outage cost."""
        if not self._failing:   # (every acknowledgement comes here)
            return
        failing = self._failing.pop((batch.topic, batch.partition), None)
        if failing is None:
            return
        last = (f" (the last: {type(failing.last_error).__name__}: {failing.last_error})"
                if failing.last_error is not None else "")
        lost = (f"; {failing.records_failed} records failed meanwhile (their futures raise "
                f"why)" if failing.records_failed else "")
        log.info("produce to %s-%s acknowledged again after %.1f s failing: %d attempts "
                 "failed%s%s", batch.topic, batch.partition, time.monotonic() - failing.since_s,
                 failing.attempts_failed, last, lost)

    def failed(self, batch: OpenBatch, error: BaseException) -> None:
        """``batch`` fails for good. Counted for the close's warning once closing; a
        batch out of time is logged at WARNING, once per partition until it is
        acknowledged again (the futures carry every failure)."""
        record_count = batch.builder.record_count
        if self._closing_failures is not None:
            self._closing_failures[self._failure_reason(batch, error)] += record_count
        if not isinstance(error, PlinthTimeoutError):
            return
        tp = (batch.topic, batch.partition)
        failing = self._failing.get(tp)
        if failing is None:
            failing = self._failing[tp] = _Failing(time.monotonic())
        failing.records_failed += record_count
        if not failing.timeout_logged:
            failing.timeout_logged = True
            log.warning("%s; later batches of %s-%s that run out of time before one is "
                        "acknowledged are not logged (each record's future raises its error)",
                        error, *tp)

    def begin_close(self) -> None:
        """The producer begins to close (before its flush): from now on the records that
        fail are counted. A second call does nothing."""
        if self._closing_failures is None:
            self._closing_failures = Counter()

    def closed(self) -> None:
        """The driver stops, every batch failed or acknowledged: one WARNING if records
        failed since the close began."""
        failures = self._closing_failures
        if failures:
            why = ", ".join(f"{count} {reason}" for reason, count in failures.most_common())
            log.warning("producer closed with %d records not delivered: %s; each record's "
                        "future raises its error", sum(failures.values()), why)

    def _failure_reason(self, batch: OpenBatch, error: BaseException) -> str:
        """Why a batch's records failed, in the close's warning: said so that the same
        cause counts once, and whether they may have been stored."""
        stored = ("sent, so they may have been stored" if batch.ever_sent
                  else "never sent, so not stored")
        if isinstance(error, ClosedError):
            return f"unacknowledged when the close ended ({stored})"
        if isinstance(error, PlinthTimeoutError):
            if batch.ever_sent and not batch.maybe_stored:   # as the error says (sender.py)
                stored = "sent, each attempt refused before it was stored"
            return (f"not acknowledged within delivery_timeout_ms="
                    f"{self.delivery_timeout_ms:.0f} ({stored})")
        return f"refused: {type(error).__name__}"
