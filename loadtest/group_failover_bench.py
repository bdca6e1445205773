"""How soon a consumer group commits and reads again after its coordinator's shard dies.

    python -m loadtest.group_failover_bench [--kills 8] [--session-timeout-ms 10000]
        [--commit-interval-ms 200] [--with-data-leader] [--stop] [--json]

On a three-node loopback cluster (``tests/three_node_cluster.py``, one shard
pinned to each node, every topic and ``__consumer_offsets`` at factor 3), each
kill takes a fresh two-partition topic and a group whose slot of the internal
topic is led by a shard that leads neither of the topic's partitions (none in
five topics tried: the kill is counted as ``shared``, a data partition fails
over too); with ``--with-data-leader``, by a shard that leads one of them (the
member's fetches then wait for that partition's failover too). A producer
thread writes about 200 records/s; one member of the group polls on its own
thread and commits what it has read every
``--commit-interval-ms``, as auto-commit does (``commit_async``, whose callback
times the answers). Once it owns both partitions and has committed, the
coordinator's shard process is SIGKILLed (Ray restarts it; with ``--stop``,
SIGSTOPped instead: it neither answers nor drops its connections, as a shard on
a machine that vanished, and gets SIGCONT once the kill is measured), and the
bench prints, from the kill, p50 and max over the kills of:

- ``elected``: the slot's new leader saved in the controller's metadata.json
  (read from disk: asking the controller would delay its elections);
- ``committed``: the member's first acknowledged commit (necessarily at the new
  coordinator, in a newer leader epoch);
- ``reading``: the end of the longest pause in the member's records.

The kill's shard restarts and the slots are fully in sync again before the next
kill (if not within 90 s, the kill says so and the next one goes ahead). A benchmark, not a test: it prints numbers and asserts nothing about them.
There is no peer: Redis has no consumer-group failover to compare with.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from plinth import Admin, Consumer, Producer, limits, topics
from tests.conftest import Broker
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until
from tests.three_node_cluster import ThreeNodeCluster

KILL_WAIT_S = 90            # a kill whose commits take longer than this is reported as None
SETTLED_S = 1.0             # the member commits steadily this long before a kill
PRODUCE_GAP_S = 0.005       # between the producer thread's records
METADATA_POLL_S = 0.02      # how often metadata.json and the member's times are looked at
GROUPS_TRIED_MAX = 1000     # names tried for a group in a given slot
TOPICS_PER_KILL_MAX = 5     # topics tried for one whose leaders are (not) a slot's leader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--session-timeout-ms", type=int,
                        default=limits.SESSION_TIMEOUT_MS_DEFAULT)
    parser.add_argument("--commit-interval-ms", type=int, default=200)
    parser.add_argument("--with-data-leader", action="store_true",
                        help="kill a shard that also leads one of the topic's partitions")
    parser.add_argument("--stop", action="store_true",
                        help="SIGSTOP the coordinator's shard instead of SIGKILL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.kills, args.session_timeout_ms, args.commit_interval_ms,
                  args.with_data_leader, args.stop)
    print(json.dumps(results, indent=2) if args.json else format_results(results))


def run(kills: int, session_timeout_ms: int, commit_interval_ms: int,
        with_data_leader: bool = False, stop: bool = False) -> dict:
    cluster = ThreeNodeCluster().start()
    data_dir = Path(tempfile.mkdtemp(prefix="plinth-group-failover-")) / "data"
    broker = Broker(data_dir, cluster.address, shards=3).start()
    per_kill = []
    try:
        with Admin(broker=broker.url) as admin:
            for _ in range(kills):
                per_kill.append(one_kill(admin, broker.url, data_dir, session_timeout_ms,
                                         commit_interval_ms, with_data_leader, stop))
    finally:
        broker.stop()
        cluster.shutdown()
    return summarize(per_kill, session_timeout_ms, commit_interval_ms, stop)


def one_kill(admin: Admin, url: str, data_dir: Path, session_timeout_ms: int,
             commit_interval_ms: int, with_data_leader: bool, stop: bool) -> dict:
    """One coordinator kill under a fresh topic and group; seconds from the kill."""
    for _ in range(TOPICS_PER_KILL_MAX):   # placement decides whom a new topic's leaders are
        topic = unique_topic("group-failover")
        admin.create_topic(topic, 2)
        slot, shared = _slot_to_kill(admin, topic, with_data_leader)
        if shared == with_data_leader:
            break
    group = _group_in_slot(slot.partition, len(_slots(admin)))
    with Member(url, topic, group, session_timeout_ms, commit_interval_ms) as member:
        wait_until(lambda: member.settled(SETTLED_S), timeout_s=KILL_WAIT_S)
        before = _slot_record(data_dir, slot.partition)
        pid = wait_until(lambda: shard_pids(data_dir).get(slot.shard), timeout_s=KILL_WAIT_S)
        killed_s = time.monotonic()
        os.kill(pid, signal.SIGSTOP if stop else signal.SIGKILL)
        try:
            elected_s = _within(lambda: _new_leader(data_dir, slot.partition, before), killed_s)
            committed_s = _within(lambda: member.committed_after(killed_s), killed_s)
            reading_s = _within(lambda: member.reading_after(killed_s), killed_s)
        finally:
            if stop:
                os.kill(pid, signal.SIGCONT)
    in_sync = _within(lambda: all(len(p.in_sync_replicas) == len(p.replicas)
                                  for p in _slots(admin)) or None, time.monotonic())
    result = {"shared": shared, "elected_s": None if elected_s is None else elected_s - killed_s,
              "committed_s": None if committed_s is None else committed_s - killed_s,
              "reading_s": None if reading_s is None else reading_s - killed_s,
              "in_sync_again": bool(in_sync)}
    print(f"kill: {result}", file=sys.stderr, flush=True)   # progress, and what a crash keeps
    return result


def _within(found, killed_s: float):
    """Poll ``found()`` every METADATA_POLL_S until it gives a value (returned) or
    KILL_WAIT_S passed since the kill (None)."""
    while time.monotonic() - killed_s < KILL_WAIT_S:
        value = found()
        if value is not None:
            return value
        time.sleep(METADATA_POLL_S)
    return None


class Member:
    """A producer thread and a group member's polling thread, timing what the member
    gets. Its lists are appended by its threads and read by the bench's (a list's
    append and a copy of it are atomic in CPython)."""

    def __init__(self, url: str, topic: str, group: str, session_timeout_ms: int,
                 commit_interval_ms: int):
        self.commits_s: list[float] = []       # acknowledged commits
        self.received_s: list[float] = []      # polls that returned records
        self._url, self._topic = url, topic
        self._commit_interval_s = commit_interval_ms / 1000
        self._stop = threading.Event()
        self._consumer = Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                                  enable_auto_commit=False,
                                  session_timeout_ms=session_timeout_ms)
        self._threads = [threading.Thread(target=self._produce, daemon=True),
                         threading.Thread(target=self._consume, daemon=True)]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> "Member":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(KILL_WAIT_S)
        self._consumer.close()

    def settled(self, for_s: float) -> bool:
        """Whether it owns both partitions and has committed for ``for_s``."""
        commits = list(self.commits_s)
        return len(self._consumer.assignment()) == 2 and bool(commits) and \
            commits[-1] - commits[0] >= for_s

    def committed_after(self, at_s: float) -> float | None:
        return next((t for t in list(self.commits_s) if t > at_s), None)

    def reading_after(self, at_s: float) -> float | None:
        """The end of the longest pause in records after ``at_s``, once records came
        after it for a second (None before)."""
        received = [t for t in list(self.received_s) if t > at_s]
        if not received or received[-1] - received[0] < 1.0:
            return None
        gaps = [(end - start, end) for start, end in zip([at_s, *received], received)]
        return max(gaps)[1]

    def _produce(self) -> None:
        with Producer(broker=self._url, linger_ms=5) as producer:
            n = 0
            while not self._stop.is_set():
                producer.send(self._topic, b"%d" % n, partition=n % 2)
                n += 1
                self._stop.wait(PRODUCE_GAP_S)

    def _consume(self) -> None:
        next_commit_s = time.monotonic()
        while not self._stop.is_set():
            if self._consumer.poll(timeout_ms=100):
                self.received_s.append(time.monotonic())
            if time.monotonic() >= next_commit_s:
                next_commit_s = time.monotonic() + self._commit_interval_s
                if self._consumer.assignment():
                    self._consumer.commit_async(callback=self._on_commit)

    def _on_commit(self, offsets, error) -> None:
        if error is None:
            self.commits_s.append(time.monotonic())


def _slots(admin: Admin) -> list:
    return admin.describe_topic(topics.OFFSETS_TOPIC).partition_info


def _slot_to_kill(admin: Admin, topic: str, with_data_leader: bool) -> tuple:
    """A slot led by a shard that leads no partition of ``topic`` (``with_data_leader``:
    one of them), else any slot; and whether the kill takes a data leader too."""
    data_leaders = {p.shard for p in admin.describe_topic(topic).partition_info}
    slots = _slots(admin)
    chosen = [slot for slot in slots if (slot.shard in data_leaders) == with_data_leader]
    slot = chosen[0] if chosen else slots[0]
    return slot, slot.shard in data_leaders


def _group_in_slot(slot: int, slots: int) -> str:
    return next(name for name in (unique_topic("group-failover") for _ in range(GROUPS_TRIED_MAX))
                if topics.offsets_slot(name, slots) == slot)


def _slot_record(data_dir: Path, slot: int) -> dict | None:
    """The controller's leadership record of the slot, as saved (None mid-write)."""
    try:
        metadata = json.loads((data_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    return metadata["topics"][topics.OFFSETS_TOPIC]["leadership"][str(slot)]


def _new_leader(data_dir: Path, slot: int, before: dict) -> float | None:
    """Now (monotonic), if the slot has a leader in a newer epoch than ``before``'s."""
    record = _slot_record(data_dir, slot)
    if record and record["leader"] and record["leader_epoch"] > before["leader_epoch"]:
        return time.monotonic()
    return None


def summarize(per_kill: list[dict], session_timeout_ms: int, commit_interval_ms: int,
              stop: bool = False) -> dict:
    results = {"kills": len(per_kill), "signal": "SIGSTOP" if stop else "SIGKILL", "shared": sum(k["shared"] for k in per_kill),
               "not_in_sync_again": sum(not k["in_sync_again"] for k in per_kill),
               "session_timeout_ms": session_timeout_ms, "commit_interval_ms": commit_interval_ms,
               "per_kill": per_kill}
    for key in ("elected_s", "committed_s", "reading_s"):
        known = [k[key] for k in per_kill if k[key] is not None]
        results[key] = {"p50": statistics.median(known) if known else None,
                        "max": max(known) if known else None,
                        "missing": len(per_kill) - len(known)}
    return results


def format_results(results: dict) -> str:
    lines = [f"group coordinator kills ({results['signal']}): {results['kills']} "
             f"({results['shared']} also took a data "
             f"partition's leader, after {results['not_in_sync_again']} the slots were not all "
             f"in sync again within {KILL_WAIT_S} s), session {results['session_timeout_ms']} ms, commits every "
             f"{results['commit_interval_ms']} ms; seconds from the kill:"]
    for key, name in (("elected_s", "slot's new leader"), ("committed_s", "first commit"),
                      ("reading_s", "records again")):
        stats = results[key]
        missing = f" ({stats['missing']} never)" if stats["missing"] else ""
        lines.append(f"  {name:18s} p50 {_s(stats['p50'])}  max {_s(stats['max'])}{missing}")
    lines.append("  each kill (elected / committed / reading): " + ", ".join(
        "/".join(_s(k[key]) for key in ("elected_s", "committed_s", "reading_s"))
        for k in results["per_kill"]))
    return "\n".join(lines)


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


if __name__ == "__main__":
    main()
