"""ShardStats: one shard's counters, rates and latency histograms.

Written by the shard's loop thread only; ``snapshot()`` (also on the loop
thread, through ``ShardServer.call``) returns plain values for the
controller, which serves them to ``plinth status`` and the Prometheus
endpoint. Counters only ever grow, as Prometheus expects.

Rates. Once a second (``sample``) the loop records the shard's totals, in and
out; a rate is the change over the last SHARD_STATS_RATE_WINDOW_SAMPLES samples
(~10 s). Out means handed to clients' fetches: the log bytes sent, and the
records in them from the offset asked (a fetch from the middle of a batch gets
the whole batch, but only the records from that offset on are new to it).
Per partition (``partition_rates``, for the console's topic stats) each sample
also keeps how much each partition touched since the last one moved, so that a
rate costs a partition's deltas over the window, and a sample costs only the
partitions that moved: never a pass over every partition.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from dataclasses import dataclass

from plinth.limits import SHARD_STATS_RATE_WINDOW_SAMPLES

# Request latency buckets, seconds (upper bounds): from a fast fsync to a long poll.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0, math.inf)


@dataclass
class PartitionCounters:
    records_in: int = 0
    bytes_in: int = 0
    fetches: int = 0
    bytes_out: int = 0
    records_out: int = 0


# A partition's moves over one sample interval: (records in, bytes in, records out,
# bytes out). Its rates are the sums of these over the window.
Moves = tuple[int, int, int, int]
NO_RATES = (0.0, 0.0, 0.0, 0.0)


@dataclass
class RemoteFetchCounters:
    """Reads from object storage are counted once each, however many requests joined
    one (shards/tier/remote_fetch_waits.py); requests answered by their wait's end,
    each. So the "remote_fetch" latency histogram's count is ``fetches`` plus the
    fetches' share of ``errors``, and "remote_time_lookup"'s is ``time_lookups`` plus
    the look-ups' share (a read refused by a full queue is an error and no latency)."""

    fetches: int = 0        # reads for fetches the reader answered with data (b"" included)
    bytes: int = 0
    errors: int = 0         # reads failed (fetches' and look-ups'), and requests a full
                            # reader queue refused
    time_lookups: int = 0   # reads for look-ups by time the reader answered: a record, or
                            # none in the segment (failed ones are in ``errors``)
    fetch_waits_expired: int = 0         # fetches answered with no records: their wait
                                         # (REMOTE_FETCH_WAIT_MS_MAX) ended before the read
    time_lookup_waits_expired: int = 0   # look-ups answered requestTimedOut: likewise
                                         # (REMOTE_TIME_LOOKUP_WAIT_MS_MAX)
    cache_hits: int = 0     # chunks read from the cache
    cache_misses: int = 0   # ranged gets from the store
    cache_bytes: int = 0    # on disk now


class ShardStats:
    """One shard's counters. Loop thread only, every method."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionCounters] = {}
        self.errors: Counter[str] = Counter()
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sum_s: Counter[str] = Counter()
        # (time_s, records in, bytes in, records out, bytes out) samples, for rates;
        # beside each, {partition: Moves since the sample before} of the partitions
        # that moved (rates per partition).
        self._samples: deque = deque(maxlen=SHARD_STATS_RATE_WINDOW_SAMPLES + 1)
        self._partition_moves: deque = deque(maxlen=SHARD_STATS_RATE_WINDOW_SAMPLES + 1)
        self._records_in = 0
        self._bytes_in = 0
        self._records_out = 0
        self._bytes_out = 0
        # Partitions touched since the last sample, and each one's counters as the
        # last sample that saw it move left them.
        self._moved: set[tuple[str, int]] = set()
        self._sampled: dict[tuple[str, int], Moves] = {}
        # Requests by the socket they came on (the loop increments them directly).
        self.requests_via_router = 0
        self.requests_direct = 0
        # Fetches read from object storage (shards/tier/remote_fetcher.py), and its
        # reader's chunk cache as the last remote fetch left it.
        self.remote = RemoteFetchCounters()

    def _counters(self, key: tuple[str, int]) -> PartitionCounters:
        # get() first: setdefault would build a PartitionCounters on every request.
        counters = self.partitions.get(key)
        if counters is None:
            counters = self.partitions[key] = PartitionCounters()
        return counters

    def produced(self, key: tuple[str, int], records: int, nbytes: int) -> None:
        counters = self._counters(key)
        counters.records_in += records
        counters.bytes_in += nbytes
        self._records_in += records
        self._bytes_in += nbytes
        self._moved.add(key)

    def fetched(self, key: tuple[str, int], nbytes: int, records: int) -> None:
        """A fetch answered with ``nbytes`` of log entries holding ``records`` records
        from the offset asked on (log_entry.records_from)."""
        counters = self._counters(key)
        counters.fetches += 1
        counters.bytes_out += nbytes
        counters.records_out += records
        self._records_out += records
        self._bytes_out += nbytes
        self._moved.add(key)

    def remote_fetched(self, nbytes: int, failed: bool, latency_s: float, cache_hits: int,
                       cache_misses: int, cache_bytes: int) -> None:
        """The reader answered a read for a remote fetch (once, however many fetches
        joined it; its latency goes to the "remote_fetch" histogram), and its reader's
        cache counters after it."""
        remote = self.remote
        if failed:
            remote.errors += 1
        else:
            remote.fetches += 1
            remote.bytes += nbytes
        remote.cache_hits, remote.cache_misses, remote.cache_bytes = (
            cache_hits, cache_misses, cache_bytes)
        self.observe("remote_fetch", latency_s)

    def remote_time_found(self, failed: bool, latency_s: float) -> None:
        """The reader answered a read for a look-up by time in a remote segment (once,
        however many look-ups joined it): ``time_lookups`` or ``errors`` counts it, and
        its latency goes to the "remote_time_lookup" histogram."""
        if failed:
            self.remote.errors += 1
        else:
            self.remote.time_lookups += 1
        self.observe("remote_time_lookup", latency_s)

    def error(self, code_name: str) -> None:
        self.errors[code_name] += 1

    def observe(self, kind: str, seconds: float) -> None:
        counts = self.latency_counts.setdefault(kind, [0] * len(LATENCY_BUCKETS_S))
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s[kind] += seconds

    def forget(self, key: tuple[str, int]) -> None:
        self.partitions.pop(key, None)
        self._moved.discard(key)
        self._sampled.pop(key, None)

    def sample(self, now_s: float) -> None:
        """Once a second: remember the totals and each moved partition's moves, for rates."""
        self._samples.append((now_s, self._records_in, self._bytes_in, self._records_out,
                              self._bytes_out))
        moves: dict[tuple[str, int], Moves] = {}
        for key in self._moved:
            c = self.partitions.get(key)
            if c is None:
                continue
            now = (c.records_in, c.bytes_in, c.records_out, c.bytes_out)
            before = self._sampled.get(key, (0, 0, 0, 0))
            moves[key] = tuple(n - b for n, b in zip(now, before))
            self._sampled[key] = now
        self._moved.clear()
        self._partition_moves.append(moves)

    def rates(self) -> tuple[float, float, float, float]:
        """(records/s, bytes/s) produced and (records/s, bytes/s) fetched, over the
        last ~10 s."""
        if len(self._samples) < 2:
            return NO_RATES
        first, last = self._samples[0], self._samples[-1]
        elapsed_s = max(last[0] - first[0], 1e-9)
        return tuple((b - a) / elapsed_s for a, b in zip(first[1:], last[1:]))

    def partition_rates(self, key: tuple[str, int]) -> tuple[float, float, float, float]:
        """One partition's rates, as ``rates`` (records and bytes in, then out)."""
        if len(self._samples) < 2:
            return NO_RATES
        elapsed_s = max(self._samples[-1][0] - self._samples[0][0], 1e-9)
        totals = [0, 0, 0, 0]
        # The oldest sample's moves happened before the window began.
        for i in range(1, len(self._partition_moves)):
            moves = self._partition_moves[i].get(key)
            if moves is not None:
                for j in range(4):
                    totals[j] += moves[j]
        return tuple(total / elapsed_s for total in totals)

    def snapshot(self) -> dict:
        records_per_s, bytes_per_s, records_out_per_s, bytes_out_per_s = self.rates()
        return {
            "partitions": {key: vars(c).copy() for key, c in self.partitions.items()},
            "errors": dict(self.errors),
            "latency_buckets_s": LATENCY_BUCKETS_S,
            "latency_counts": {k: list(v) for k, v in self.latency_counts.items()},
            "latency_sum_s": dict(self.latency_sum_s),
            "records_per_s": records_per_s,
            "bytes_per_s": bytes_per_s,
            "records_out_per_s": records_out_per_s,
            "bytes_out_per_s": bytes_out_per_s,
            "requests_by_socket": {"router": self.requests_via_router,
                                   "direct": self.requests_direct},
            "remote_fetch": vars(self.remote).copy(),
        }
