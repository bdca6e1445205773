"""The overview's sampler: the broker's throughput over the last minutes.

Runs on the console's event loop, and only while a browser watches: the first
subscriber (an SSE stream of the overview) starts its task, the last one to
leave stops it, so an idle console asks the broker nothing. Each
``interval_s`` it asks ``Admin.status()`` (in a pool thread: the Admin
blocks) and appends one Sample to a ring buffer of at most
limits.CONSOLE_SAMPLES_MAX, which it keeps across subscriptions so a
browser that comes back sees the recent past.

While the broker does not answer, the page shows the last error each interval,
and the console's log says so once (with the address and the error), and once
more when it answers again: a console left open on a stopped broker must not
fill its log with a line every interval.

Rates in are the shards' produced records/s and bytes/s; rates out
(fetched) appear once ShardStatus has ``records_out_per_s`` and
``bytes_out_per_s`` (None before: the charts then draw no out line).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass

from plinth import limits
from plinth.client.console.broker_calls import page_deadline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    time_s: float              # wall clock, seconds since the epoch
    records_in_per_s: float
    bytes_in_per_s: float
    records_out_per_s: float | None
    bytes_out_per_s: float | None


def sample_of(status, now_s: float) -> Sample:
    """One Sample from a StatusInfo: the sums over its live shards."""
    live = [s for s in status.shards if s.alive]
    outs = [_out(s, "records") for s in live]
    bytes_out = [_out(s, "bytes") for s in live]
    return Sample(now_s, sum(s.records_per_s for s in live), sum(s.bytes_per_s for s in live),
                  None if any(v is None for v in outs) else sum(outs),
                  None if any(v is None for v in bytes_out) else sum(bytes_out))


def _out(shard, what: str):
    # ShardStatus grows these in issue 16 (fetched rates); before, the charts show in only.
    return getattr(shard, f"{what}_out_per_s", getattr(shard, f"{what}OutPerS", None))


class Sampler:
    """Owned by the app; every method runs on the console's event loop."""

    def __init__(self, admin, interval_s: float = limits.CONSOLE_SAMPLE_INTERVAL_S,
                 samples_max: int = limits.CONSOLE_SAMPLES_MAX, *, broker_url: str = ""):
        self.admin = admin
        self.broker_url = broker_url or "(default address)"   # for the log only
        self.interval_s = interval_s
        self.samples: collections.deque[Sample] = collections.deque(maxlen=samples_max)
        self.status = None          # the last StatusInfo
        self.error: str = ""        # the last failure to ask, shown on the page
        self.subscribers = 0
        self.polls = 0              # how many times it asked (tests: idle means none)
        self.failures = 0           # polls failed in a row since the broker last answered
        self._task: asyncio.Task | None = None
        self._changed: asyncio.Condition | None = None

    def subscribe(self) -> None:
        if self.subscribers >= limits.CONSOLE_SSE_CLIENTS_MAX:
            raise ValueError(f"{self.subscribers} browsers already watch the live charts; "
                             f"at most {limits.CONSOLE_SSE_CLIENTS_MAX}")
        self.subscribers += 1
        if self._changed is None:
            self._changed = asyncio.Condition()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self) -> None:
        self.subscribers -= 1
        if self.subscribers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    async def wait_for_change(self, seen: int, timeout_s: float) -> int:
        """Wait until more than ``seen`` polls happened (or ``timeout_s``); returns the count."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.polls > seen),
                                       timeout_s)
            except asyncio.TimeoutError:
                pass
        return self.polls

    async def _run(self) -> None:
        import anyio.to_thread

        while True:
            try:
                # A deadline of its own for each sample (the task began in a page's
                # context, whose deadline has passed).
                with page_deadline():
                    status = await anyio.to_thread.run_sync(self.admin.status)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # the broker is down or refuses: say so, keep trying
                self._failed(exc)
            else:
                self._answered(status)
            self.polls += 1
            async with self._changed:
                self._changed.notify_all()
            await asyncio.sleep(self.interval_s)

    def _failed(self, exc: Exception) -> None:
        """A poll got no status: shown on the page each time, logged on the first
        failure in a row only."""
        self.error = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        if self.failures == 1:
            log.warning("console sampler: the broker at %s is unreachable (%s); asking again "
                        "every %s s, and saying so once it answers", self.broker_url,
                        self.error, self.interval_s)

    def _answered(self, status) -> None:
        if self.failures:
            log.info("console sampler: the broker at %s is reachable again (failed polls: %d)",
                     self.broker_url, self.failures)
        self.status, self.error, self.failures = status, "", 0
        self.samples.append(sample_of(status, time.time()))
