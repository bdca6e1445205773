"""What a preferred-leader election costs the writers (control/leader_elections.py).

    python -m loadtest.elect_leaders_bench [--rounds 5] [--partitions 6] [--rate 1000]

On a fresh embedded ``plinth serve --shards 3 --allow-replicas-on-one-node``, a
factor-3 topic is written by one producer (acks="all", linger 0) at ``--rate``
records/s, one record at a time per partition in turn, each acknowledgement
timed. Each round SIGKILLs the shard that is the preferred leader of partition 0
(Ray restarts it; a failover moves its partitions' lead), waits until it is back in
sync everywhere, then runs ``Admin.elect_leaders("preferred")`` and times it: the
hand-overs refuse produces until each preferred replica holds its leader's whole
log. Printed: the election's duration, the acknowledgement latency of the records
sent during elections against all the others, the records refused and retried
(the producer retries ``NotLeaderError`` by itself), and, at the end, whether every
acknowledged record was read back. A benchmark, not a test: it asserts nothing
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


class PacedWriter:
    """One producer thread at ``rate_per_s``; each acknowledgement's latency (ms) and
    send time, and every value acknowledged."""

    def __init__(self, url: str, topic: str, partitions: int, rate_per_s: float):
        self.latencies_ms: list[tuple[float, float]] = []   # (sent at, latency)
        self.acknowledged: set[bytes] = set()
        self._stop = threading.Event()
        self._producer = Producer(broker=url, acks="all", linger_ms=0)
        self._args = (topic, partitions, 1.0 / rate_per_s)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        topic, partitions, interval_s = self._args
        n, next_s = 0, time.monotonic()
        while not self._stop.is_set():
            value = f"v{n}".encode()
            sent_s = time.monotonic()
            self._producer.send(topic, value, partition=n % partitions).get(timeout=120)
            self.latencies_ms.append((sent_s, (time.monotonic() - sent_s) * 1000))
            self.acknowledged.add(value)
            n += 1
            next_s += interval_s
            self._stop.wait(max(0.0, next_s - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=180)
        self._producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s, acks=all")
    parser.add_argument("--plinth", default="plinth", help="the plinth command to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plinth-elect-bench-") as work:
        with fresh_broker(args.plinth, Path(work), "--shards", "3",
                          "--allow-replicas-on-one-node", "--no-auto-leader-rebalance") as (_, url):
            report(run(url, Path(work) / "data", args))


def run(url: str, data_dir: Path, args) -> dict:
    topic = unique_topic("elect-bench")
    windows, durations_s, moved = [], [], []
    with Admin(broker=url) as admin:
        admin.create_topic(topic, args.partitions, replication_factor=3)
        preferred = admin.describe_topic(topic).partition_info[0].replicas[0]
        writer = PacedWriter(url, topic, args.partitions, args.rate)
        try:
            for _ in range(args.rounds):
                os.kill(wait_until(lambda: shard_pids(data_dir).get(preferred), timeout_s=60),
                        signal.SIGKILL)
                wait_until(lambda: _moved_and_in_sync(admin, topic, preferred),
                           timeout_s=IN_SYNC_WAIT_S)
                started_s = time.monotonic()
                results = admin.elect_leaders("preferred", None)
                durations_s.append(time.monotonic() - started_s)
                windows.append((started_s, time.monotonic()))
                moved.append(sum(1 for r in results if r.error is None))
        finally:
            writer.stop()
    lost = len(writer.acknowledged - values_to_high_watermark(url, topic))
    return {"windows": windows, "durations_s": durations_s, "moved": moved,
            "latencies_ms": writer.latencies_ms, "acknowledged": len(writer.acknowledged),
            "lost": lost, "rate": args.rate}


def _moved_and_in_sync(admin: Admin, topic: str, shard: str) -> bool:
    infos = admin.describe_topic(topic).partition_info
    return all(shard in p.in_sync_replicas for p in infos) and \
        any(p.replicas[0] == shard and p.shard != shard for p in infos)


def report(r: dict) -> None:
    during = [ms for sent_s, ms in r["latencies_ms"]
              if any(a - 0.5 <= sent_s <= b for a, b in r["windows"])]
    outside = [ms for sent_s, ms in r["latencies_ms"]
               if not any(a - 0.5 <= sent_s <= b for a, b in r["windows"])]
    print(f"{len(r['durations_s'])} preferred elections, {r['moved']} partitions moved back "
          f"in each; acks=all producer at {r['rate']:.0f} records/s")
    print(f"election (Admin.elect_leaders), s: median {statistics.median(r['durations_s']):.3f}, "
          f"max {max(r['durations_s']):.3f}")
    for name, values in (("during elections", during), ("otherwise", outside)):
        if values:
            p50, p99 = np.percentile(values, [50, 99])
            print(f"ack latency {name} ({len(values)} records), ms: p50 {p50:.2f}, "
                  f"p99 {p99:.2f}, max {max(values):.2f}")
    print(f"acknowledged {r['acknowledged']}, lost {r['lost']}")
    if r["lost"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
