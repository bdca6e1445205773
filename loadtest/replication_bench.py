"""Replication's cost and failover time on a 3-node Ray cluster on 127.0.0.1.

    python -m loadtest.replication_bench [--messages 1000000] [--e2e-messages 100000]
        [--kills 20] [--retry-backoff-max-ms MS] [--no-peer]
        [--only throughput|e2e|failover ...] [--json]

One run measures, on the same machine and cluster:
1. ``plinth bench produce`` of keyed 100-byte records: factor 1 with acks=1,
   factor 3 with acks=1, factor 3 with acks="all" (min.insync.replicas=2);
2. end-to-end latency at 10,000 records/s over 4 partitions with acks="all",
   factor 3 (``plinth bench e2e --rate 10000 --linger-ms 1``);
3. failover: SIGKILL of the node (every process of it: Ray's node removal,
   and SIGKILL of its worker processes, which otherwise outlive their raylet
   for seconds and keep leading) holding a factor-3 partition's leader, then
   the time to the first acknowledged acks="all" produce to that partition; the node comes back and the partition is fully
   in sync again before the next kill. p50 and max over ``--kills``, and of
   the time until ``describe`` names the new leader (the controller noticed the
   loss and elected one; the rest of the failover is the routers and the
   producer finding it);
4. Redis Streams (``XADD``, AOF fsync always, pipelines of 100) in the same
   run, so each figure has a ratio to a peer (the VM's speed varies by 2x).

The cluster is ``tests/three_node_cluster.py``'s (head "a", workers "b", "c",
one shard pinned to each); every socket is on 127.0.0.1. A benchmark, not a
test: it prints numbers and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from loadtest import redis_peer
from plinth import Admin, Producer, limits
from plinth.bench import BenchConfig, run_e2e, run_produce
from tests.conftest import Broker
from tests.replication_state import replication_report
from tests.support import unique_topic, wait_until
from tests.three_node_cluster import ThreeNodeCluster

FAILOVER_WAIT_S = 120     # a kill that takes longer than this is reported as failed
ELECTION_POLL_S = 0.05    # how often the watcher asks who leads the partition
FRESH_TOPICS_PER_KILL_MAX = 5   # topics tried for one led on a worker node
PARTS = ("throughput", "e2e", "failover")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--e2e-messages", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--retry-backoff-max-ms", type=int,
                        default=limits.PRODUCER_RETRY_BACKOFF_MAX_MS_DEFAULT,
                        help="the failover producer's (default: the client's)")
    parser.add_argument("--no-peer", action="store_true", help="skip Redis (not installed)")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable; default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.messages, args.e2e_messages, args.kills, peer=not args.no_peer,
                  parts=tuple(args.only or PARTS), retry_backoff_max_ms=args.retry_backoff_max_ms)
    print(json.dumps(results, indent=2) if args.json else format_results(results))


def run(messages: int, e2e_messages: int, kills: int, peer: bool = True,
        parts: tuple[str, ...] = PARTS,
        retry_backoff_max_ms: int = limits.PRODUCER_RETRY_BACKOFF_MAX_MS_DEFAULT) -> dict:
    """The ``parts`` of the bench, each on the same fresh cluster, Redis first (with the
    throughput part only: the peer is of the throughput)."""
    results = {}
    if peer and "throughput" in parts:   # first: a missing redis-server or redis-py stops the run before the long part
        with redis_peer.redis_server("always") as port:
            results["redis_xadd"] = redis_peer.run_produce(port, messages, 16, 100, 100)
    cluster = ThreeNodeCluster().start()
    data_dir = Path(tempfile.mkdtemp(prefix="plinth-replication-bench-"))
    broker = Broker(data_dir / "data", cluster.address, shards=3).start()
    try:
        if "throughput" in parts:
            results["throughput"] = throughput(broker.url, messages)
        if "e2e" in parts:
            results["e2e"] = e2e(broker.url, e2e_messages)
        if "failover" in parts:
            results["failover"] = failover(cluster, broker, data_dir / "data", kills,
                                           retry_backoff_max_ms)
    finally:
        broker.stop()
        cluster.shutdown()
    return results


def throughput(url: str, messages: int) -> dict:
    base = BenchConfig(broker=url, messages=messages, partitions=4, key_bytes=16, value_bytes=100)
    runs = {"factor 1, acks=1": replace(base, replication_factor=1, acks="1"),
            "factor 3, acks=1": replace(base, replication_factor=3, acks="1"),
            "factor 3, acks=all": replace(base, replication_factor=3, acks="all")}
    return {name: run_produce(config, progress=False).to_json() for name, config in runs.items()}


def e2e(url: str, messages: int) -> dict:
    config = BenchConfig(broker=url, messages=messages, partitions=4, replication_factor=3,
                         acks="all", rate=10_000, linger_ms=1, key_bytes=16, value_bytes=100)
    return run_e2e(config, progress=False).to_json()


def failover(cluster: ThreeNodeCluster, broker: Broker, data_dir: Path, kills: int,
             retry_backoff_max_ms: int = limits.PRODUCER_RETRY_BACKOFF_MAX_MS_DEFAULT) -> dict:
    """Seconds from removing the leader's node to the first acks="all" produce it acks."""
    topic, topics = "", 0
    seconds, elected = [], []
    # The producer's timeouts and backoffs are the defaults (Kafka's), what a user's sees,
    # but for the longest backoff if given: a produce answered unavailable while the
    # election runs is retried after 0.1, 0.3, 0.7, 1.5, 2.5, 3.5 s by default.
    with Admin(broker=broker.url) as admin, Producer(
            broker=broker.url, acks="all", linger_ms=0,
            delivery_timeout_ms=FAILOVER_WAIT_S * 1000,
            retry_backoff_ms=min(limits.PRODUCER_RETRY_BACKOFF_MS_DEFAULT, retry_backoff_max_ms),
            retry_backoff_max_ms=retry_backoff_max_ms) as producer:
        pins = json.loads((data_dir / "metadata.json").read_text())["shard_nodes"]
        for _ in range(kills):
            # Leaders move off a lost node and do not move back: once none of the topic's
            # is on a worker node, the next kill takes a fresh topic.
            target = _partition_led_on_a_worker(admin, topic, pins) if topic else None
            for _ in range(FRESH_TOPICS_PER_KILL_MAX):   # placement may lead all on the head
                if target is not None:
                    break
                topic, topics = unique_topic("failover"), topics + 1
                admin.create_topic(topic, 3, replication_factor=3)
                target = _partition_led_on_a_worker(admin, topic, pins)
            if target is None:
                raise AssertionError(f"no partition of the new topic {topic} is led on a worker "
                                     f"node: {admin.describe_topic(topic).partition_info}")
            partition, node = target
            producer.send(topic, b"before", partition=partition).get(FAILOVER_WAIT_S)
            leader = admin.describe_topic(topic).partition_info[partition].shard
            workers = cluster.actor_pids(b"ray::", node)   # the leader's shard among them
            started_s = time.monotonic()
            watcher = ElectionWatcher(broker.url, topic, partition, leader, started_s)
            cluster.remove_node(node)
            _kill_all(workers)
            producer.send(topic, b"after", partition=partition).get(FAILOVER_WAIT_S)
            seconds.append(time.monotonic() - started_s)
            elected.append(watcher.result_s())
            cluster.add_node(node)
            wait_until(lambda: _fully_in_sync(admin, topic), timeout_s=FAILOVER_WAIT_S,
                       explain=lambda: _replication_state(cluster, data_dir, topic))
    known = [e for e in elected if e is not None]
    return {"kills": len(seconds), "topics": topics,
            "p50_s": statistics.median(seconds), "max_s": max(seconds),
            "seconds": [round(s, 3) for s in seconds],
            "elected_p50_s": statistics.median(known) if known else None,
            "elected_max_s": max(known) if known else None,
            "elected_s": [None if e is None else round(e, 3) for e in elected]}


def _kill_all(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` still running. Ray's node removal kills the raylet at once,
    but its workers live on until they notice, seconds later, still serving: a lost
    machine's would not."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ElectionWatcher:
    """A thread asking every ELECTION_POLL_S who leads ``partition``, from ``started_s``
    until it is a shard other than ``old_leader`` (or FAILOVER_WAIT_S passed)."""

    def __init__(self, url: str, topic: str, partition: int, old_leader: str, started_s: float):
        self._url, self._topic, self._partition = url, topic, partition
        self._old_leader, self._started_s = old_leader, started_s
        self._elected_s: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def result_s(self) -> float | None:
        """Seconds from ``started_s`` to the first answer naming a new leader (None if
        none came in time); waits for the thread."""
        self._thread.join(FAILOVER_WAIT_S + 5)
        return self._elected_s

    def _watch(self) -> None:
        with Admin(broker=self._url, request_timeout_ms=1_000) as admin:
            while time.monotonic() - self._started_s < FAILOVER_WAIT_S:
                try:
                    info = admin.describe_topic(self._topic).partition_info[self._partition]
                except Exception:   # the router may be refreshing: ask again
                    info = None
                if info is not None and info.shard and info.shard != self._old_leader:
                    self._elected_s = time.monotonic() - self._started_s
                    return
                time.sleep(ELECTION_POLL_S)


def _partition_led_on_a_worker(admin: Admin, topic: str, pins: dict) -> tuple[int, str] | None:
    """A partition whose leader's shard is pinned to a worker node (the head holds the
    GCS and cannot be removed), and that node's name; None if none is."""
    for info in admin.describe_topic(topic).partition_info:
        node = pins.get(info.shard, "").rsplit(":", 1)[-1]
        if node and node != "a":
            return info.partition, node
    return None


def _replication_state(cluster: ThreeNodeCluster, data_dir: Path, topic: str) -> str:
    """tests/replication_state.py's report of ``topic``: why it is not fully in sync."""
    import ray

    # The bench's process is not a driver of the cluster: one for this, and no longer
    # (a driver's node cannot be removed when the cluster shuts down).
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        return replication_report(data_dir, topic)
    finally:
        ray.shutdown()


def _fully_in_sync(admin: Admin, topic: str) -> bool:
    return all(info.shard and len(info.in_sync_replicas) == len(info.replicas)
               for info in admin.describe_topic(topic).partition_info)


def format_results(results: dict) -> str:
    redis = results.get("redis_xadd")
    lines = [] if redis is None else [f"Redis XADD (AOF fsync always, pipelines of 100): "
                                      f"{redis['records_per_s']:,.0f} records/s"]
    for name, report in results.get("throughput", {}).items():
        rate = report["records_per_s"]
        ratio = "" if redis is None else f"  ({rate / redis['records_per_s']:.2f}x Redis)"
        lines.append(f"{name:22s} {rate:12,.0f} records/s{ratio}  "
                     f"p50 {report['latency_us']['p50'] / 1000:.1f} ms  "
                     f"p99 {report['latency_us']['p99'] / 1000:.1f} ms")
    if "e2e" in results:
        latency = results["e2e"]["latency_us"]
        lines.append(f"e2e at 10,000 records/s, acks=all, factor 3: p50 "
                     f"{latency['p50'] / 1000:.1f} ms p99 {latency['p99'] / 1000:.1f} ms")
    if "failover" in results:
        lines += _failover_lines(results["failover"])
    return "\n".join(lines)


def _failover_lines(fail: dict) -> list[str]:
    lines = [f"failover over {fail['kills']} node kills: p50 {fail['p50_s']:.2f} s, "
             f"max {fail['max_s']:.2f} s"]
    if fail.get("elected_p50_s") is not None:
        lines.append(f"  until the controller names the new leader (describe): p50 "
                     f"{fail['elected_p50_s']:.2f} s, max {fail['elected_max_s']:.2f} s; "
                     f"each kill (acked / elected, s): "
                     + ", ".join(f"{a:.2f}/{'-' if e is None else f'{e:.2f}'}"
                                 for a, e in zip(fail["seconds"], fail["elected_s"])))
    return lines


if __name__ == "__main__":
    main()
