"""What a preferred-leader election costs the writers (control/leader_elections.py).

    python -m loadtest.elect_leaders_bench [--rounds 5] [--partitions 6] [--rate 1000]

On a fresh embedded ``plinth serve --shards 3 --allow-replicas-on-one-node``, a
factor-3 topic is written by one producer (``--acks``, linger 0) at ``--rate``
records/s, to each partition in turn, not waiting for acknowledgements, each
timed. Each round SIGKILLs the shard that is the preferred leader of partition 0
(Ray restarts it; a failover moves its partitions' lead), waits until it is back in
sync everywhere, then runs ``Admin.elect_leaders("preferred")`` and times it: the
hand-overs refuse produces until each preferred replica holds its leader's whole
log. Printed: the election's duration, the acknowledgement latency of the records
sent during elections against all the others, the records refused and retried
(the producer retries ``NotLeaderError`` by itself; with ``--acks 1`` it is not
idempotent, as in Kafka, so a retry may be stored twice, which is not counted),
and, at the end, the acknowledged records not read back (status 1 if
any). The writer pauses around each kill until every replica holds every record,
so that the failover loses nothing (with ``--acks 1`` a killed leader would lose what its followers had not
fetched yet, as Kafka's does) and a loss is the election's. A benchmark, not a test: it asserts nothing
about the numbers (but a lost record ends it with status 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from loadtest.fresh_broker import fresh_broker
from plinth import Admin, Producer
from tests.shard_processes import shard_pids
from tests.support import unique_topic, values_to_high_watermark, wait_until

IN_SYNC_WAIT_S = 180.0
KILLS_PER_ROUND_MAX = 4        # a restarted shard may lead again before a failover moved it
STEADY_RECORDS = 500           # before an election, this many acknowledged in a row
STEADY_LATENCY_MS_MAX = 100.0  # each within this
STEADY_WINDOW_S = 0.5          # the baseline: records sent this long before an election
NEAR_S = 1.0                   # a lost record sent this close to an election is its loss


class PacedWriter:
    """One producer at ``rate_per_s`` records/s, not waiting for each acknowledgement (a
    callback times it): each one's send time and latency (ms), and every value
    acknowledged. Callbacks run on the producer's sender thread."""

    def __init__(self, url: str, topic: str, partitions: int, rate_per_s: float, acks):
        self.latencies_ms: list[tuple[float, float]] = []   # (sent at, latency)
        self.acknowledged: dict[bytes, float] = {}   # value -> when it was sent
        self.failed = 0
        self._stop = threading.Event()
        self._writing = threading.Event()
        self._writing.set()
        self._producer = Producer(broker=url, acks=acks, linger_ms=0)
        self._args = (topic, partitions, 1.0 / rate_per_s)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        topic, partitions, interval_s = self._args
        n, next_s = 0, time.monotonic()
        while not self._stop.is_set():
            if not self._writing.is_set():
                self._writing.wait()
                next_s = time.monotonic()
            value = f"v{n}".encode()
            future = self._producer.send(topic, value, partition=n % partitions)
            future.add_callback(self._acknowledged(value, time.monotonic()))
            future.add_errback(self._failed)
            n += 1
            next_s += interval_s
            self._stop.wait(max(0.0, next_s - time.monotonic()))

    def _acknowledged(self, value: bytes, sent_s: float):
        def on_ack(_metadata) -> None:
            self.latencies_ms.append((sent_s, (time.monotonic() - sent_s) * 1000))
            self.acknowledged[value] = sent_s
        return on_ack

    def _failed(self, _error) -> None:
        self.failed += 1

    def steady(self, records: int, latency_ms_max: float) -> bool:
        """The last ``records`` acknowledgements all came within ``latency_ms_max``."""
        last = self.latencies_ms[-records:]
        return len(last) == records and max(ms for _, ms in last) <= latency_ms_max

    def pause(self) -> None:
        """No more sends until ``resume``; returns once every one sent is answered."""
        self._writing.clear()
        self._producer.flush(timeout=180)

    def resume(self) -> None:
        self._writing.set()

    def stop(self) -> None:
        self._stop.set()
        self._writing.set()
        self._thread.join(timeout=180)
        self._producer.flush(timeout=180)
        self._producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s")
    parser.add_argument("--acks", choices=["1", "all"], default="all")
    parser.add_argument("--plinth", default="plinth", help="the plinth command to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plinth-elect-bench-") as work:
        with fresh_broker(args.plinth, Path(work), "--shards", "3",
                          "--allow-replicas-on-one-node", "--no-auto-leader-rebalance") as (_, url):
            report(run(url, Path(work) / "data", args))


def run(url: str, data_dir: Path, args) -> dict:
    topic = unique_topic("elect-bench")
    windows, durations_s, moved, refused = [], [], [], {}
    with Admin(broker=url) as admin:
        admin.create_topic(topic, args.partitions, replication_factor=3)
        preferred = admin.describe_topic(topic).partition_info[0].replicas[0]
        writer = PacedWriter(url, topic, args.partitions, args.rate,
                             "all" if args.acks == "all" else 1)
        try:
            for _ in range(args.rounds * KILLS_PER_ROUND_MAX):
                if len(durations_s) == args.rounds:
                    break
                # No writes around the kill, every record on every replica: a killed
                # leader then loses nothing (with acks=1 it would lose what its followers
                # had not fetched, as Kafka's does), and what is lost is the election's.
                writer.pause()
                wait_until(lambda: _replicated(admin, topic), timeout_s=IN_SYNC_WAIT_S)
                os.kill(wait_until(lambda: shard_pids(data_dir).get(preferred), timeout_s=60),
                        signal.SIGKILL)
                wait_until(lambda: _in_sync(admin, topic, preferred), timeout_s=IN_SYNC_WAIT_S)
                writer.resume()
                if not _led_away(admin, topic, preferred):
                    continue   # it was back before the failover: it leads them again already
                # the failover's retries are over: the writes flow as before the kill
                wait_until(lambda: writer.steady(STEADY_RECORDS, STEADY_LATENCY_MS_MAX),
                           timeout_s=IN_SYNC_WAIT_S)
                started_s = time.monotonic()
                results = admin.elect_leaders("preferred", None)
                durations_s.append(time.monotonic() - started_s)
                windows.append((started_s, time.monotonic()))
                moved.append(sum(1 for r in results if r.error is None))
                for r in results:
                    if r.error is not None:
                        name = type(r.error).__name__
                        count, first = refused.get(name, (0, str(r.error)))
                        refused[name] = (count + 1, first)
        finally:
            writer.stop()
    stored = values_to_high_watermark(url, topic)
    lost = [sent_s for value, sent_s in writer.acknowledged.items() if value not in stored]
    return {"windows": windows, "durations_s": durations_s, "moved": moved, "refused": refused,
            "latencies_ms": writer.latencies_ms, "acknowledged": len(writer.acknowledged),
            "failed": writer.failed, "lost": lost, "rate": args.rate, "acks": args.acks}


def _in_sync(admin: Admin, topic: str, shard: str) -> bool:
    return all(shard in p.in_sync_replicas for p in admin.describe_topic(topic).partition_info)


def _replicated(admin: Admin, topic: str) -> bool:
    return all(p.high_watermark == p.end_offset and len(p.in_sync_replicas) == len(p.replicas)
               for p in admin.describe_topic(topic).partition_info)


def _led_away(admin: Admin, topic: str, shard: str) -> bool:
    return any(p.replicas[0] == shard and p.shard != shard
               for p in admin.describe_topic(topic).partition_info)


def report(r: dict) -> None:
    during = [ms for sent_s, ms in r["latencies_ms"]
              if any(a <= sent_s <= b for a, b in r["windows"])]
    steady = [ms for sent_s, ms in r["latencies_ms"]
              if any(a - STEADY_WINDOW_S <= sent_s < a for a, _ in r["windows"])]
    print(f"{len(r['durations_s'])} preferred elections, {r['moved']} partitions moved back "
          f"in each; acks={r['acks']} producer at {r['rate']:.0f} records/s")
    print(f"election (Admin.elect_leaders), s: median {statistics.median(r['durations_s']):.3f}, "
          f"max {max(r['durations_s']):.3f}")
    for name, values in (("sent during elections", during),
                         (f"sent in the {STEADY_WINDOW_S} s before each", steady)):
        if values:
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            print(f"ack latency {name} ({len(values)} records), ms: p50 {p50:.2f}, "
                  f"p90 {p90:.2f}, p99 {p99:.2f}, max {max(values):.2f}")
    near = [sent_s for sent_s in r["lost"]
            if any(a - NEAR_S <= sent_s <= b + NEAR_S for a, b in r["windows"])]
    for name, (count, first) in r["refused"].items():
        print(f"not elected, {name}: {count} (the first: {first})")
    print(f"acknowledged {r['acknowledged']}, failed {r['failed']}; lost {len(r['lost'])} "
          f"({len(near)} sent within {NEAR_S} s of an election)")
    if r["lost"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
