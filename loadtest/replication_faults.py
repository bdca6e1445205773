"""Replication fault suite (issue 12): a workload on a 3-node loopback Ray cluster while a
seeded schedule of faults runs, then loadtest/fault_checker.py's checks on what it saw.

    python -m loadtest.replication_faults --seed 7 --duration-s 600
    python -m loadtest.replication_faults --seed 7 --duration-s 600 --replication-factor 3 \\
        --faults shard-kill,shard-stop,controller-kill,controller-kill-in-election,node-loss,replica-wipe,all-nodes

Run from the repository's root (it uses the tests' cluster and broker helpers). It starts
three Ray nodes on 127.0.0.1 (tests/three_node_cluster.py), a ``plinth serve`` with one
shard per node, a topic, then:

- producers: idempotent, ``acks="all"``, each writing numbered records (value
  ``<producer>:<sequence>``, keys spread over every partition) at a steady rate, and
  recording every acknowledgement (partition, offset);
- consumers in one group, reading and committing after each poll, recording every
  record they are handed; a sampler recording the group's committed offsets;
- the faults, one kind at a time at seeded moments (every kind asked for at least once);
- then: the final read of every partition, the wait for full replication, the checks.

It prints each fault as it happens, the faults by kind, the records checked and the
violations, and exits 1 on any violation or any fault the broker did not recover from.

Fault kinds (each a function below that names its target and waits, bounded, for what
it needs): ``shard-kill`` SIGKILL of the process of a shard leading a partition (Ray
restarts it); ``shard-stop`` SIGSTOP of a leading shard for ``--stop-s``, then SIGCONT;
``controller-kill`` SIGKILL of the controller; ``controller-kill-in-election`` SIGKILL
of a leading shard then at once of the controller; ``node-loss`` every process of a
worker node killed, the node back after ``--node-down-s``; ``replica-wipe`` a worker
node removed, its shards' data directories deleted, the node back; ``all-nodes`` every
node and the server killed, a new cluster started, the server restarted on its data.

The test suite runs ``shard-kill`` and ``shard-stop``, ``node-loss`` and
``replica-wipe``, and ``controller-kill`` and ``controller-kill-in-election`` on a
factor-3 topic (tests/e2e/test_replication_faults_e2e.py). Ray restarts a killed
controller, which adopts the running (detached) shard actors (control/controller.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from loadtest.fault_checker import (Ack, Commit, History, Read, Replication, check,
                                    record_value, summary)
from plinth import Admin, Consumer, Producer, topics
from plinth.control.nodes import NODE_RESOURCE_PREFIX
from plinth.errors import BrokerError, ClientError
from tests.conftest import Broker
from tests.replication_state import replication_report
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until
from tests.three_node_cluster import ThreeNodeCluster

FAULT_KINDS = ("shard-kill", "shard-stop", "controller-kill", "controller-kill-in-election",
               "node-loss", "replica-wipe", "all-nodes")
# What today's broker survives at replication factor 1.
FAULTS_DEFAULT = ("shard-kill", "shard-stop")
SHARDS = 3                      # one per node
PARTITIONS = 6
KEYS_PER_PRODUCER = 64          # spread over every partition by the key's hash
CHUNK_RECORDS = 50              # sent, then waited for: the producer's pace
PRODUCER_REQUEST_TIMEOUT_MS = 2_000
# Long enough to ride out a node's loss and return (tests/e2e/test_nodes_e2e.py: up to 120 s).
PRODUCER_DELIVERY_TIMEOUT_MS = 180_000
CONSUMER_REQUEST_TIMEOUT_MS = 5_000
POLL_TIMEOUT_MS = 500
COMMIT_SAMPLE_INTERVAL_S = 0.5
CONSUMER_RETRY_BACKOFF_S = 1.0  # before a new consumer, after the broker failed the last one
ADMIN_TIMEOUT_MS = 3_000
GROUP_NAME_TRIES = 30           # names tried for a group coordinated on a worker node
# Bounds of the waits for a condition.
SHARD_RESTART_WAIT_S = 60       # a killed shard serving again (Ray restarts it)
# controller-kill-in-election: the controller dies this long at most after the leader
# (seeded), the time in which it detects the leader's death and elects a new one.
ELECTION_WINDOW_S = 1.5
RECOVERY_WAIT_S = 120           # the broker serving every shard after a fault
REPLICATION_WAIT_S = 60         # every partition fully replicated once the faults stop
FINAL_READ_WAIT_S = 120         # reading every partition to its end
THREAD_STOP_WAIT_S = PRODUCER_DELIVERY_TIMEOUT_MS / 1000 + 30
# No fault in the first and last moments of the run: the workload must be going, and the
# last fault must have had time to be recovered from.
SCHEDULE_MARGIN_FRACTION = 0.1


class NotRecoveredError(Exception):
    """A fault after which the broker did not come back within its bound."""


# --- The run's setting ------------------------------------------------------------------

@dataclass
class Setting:
    """What a fault acts on. Used by the runner's main thread only."""

    cluster: ThreeNodeCluster
    broker: Broker
    topic: str
    partitions: int
    rng: random.Random
    stop_s: float = 12.0          # SIGSTOP: longer than replica.lag.time.max.ms (10 s)
    node_down_s: float = 15.0
    group: str = ""               # the workload's consumer group

    def admin(self) -> Admin:
        return Admin(broker=self.broker.url, request_timeout_ms=ADMIN_TIMEOUT_MS)

    def leaders(self) -> dict[int, str]:
        """partition -> the shard leading it (factor 1: its only shard)."""
        with self.admin() as admin:
            return {p.partition: p.shard for p in admin.describe_topic(self.topic).partition_info}

    def coordinator(self) -> str:
        """The shard coordinating the group: the leader of its slot of the internal topic
        (replicated offsets); "" if the offsets are not replicated or it has none."""
        try:
            with self.admin() as admin:
                slots = admin.describe_topic(topics.OFFSETS_TOPIC).partition_info
        except (BrokerError, ClientError):
            return ""
        return slots[topics.offsets_slot(self.group, len(slots))].shard

    def shard_nodes(self) -> dict[str, str]:
        """shard -> the name of the node it is pinned to (the controller's metadata.json)."""
        pins = json.loads((self.broker.data_dir / "metadata.json").read_text())["shard_nodes"]
        return {shard: pin.removeprefix(NODE_RESOURCE_PREFIX) for shard, pin in pins.items()}

    def shard_pid(self, shard: str) -> int:
        """The pid of the one process serving ``shard``, once there is one."""
        return wait_for(lambda: shard_pids(self.broker.data_dir).get(shard), SHARD_RESTART_WAIT_S,
                        f"a single process serving {shard}")

    def a_leader(self) -> tuple[int, str]:
        """A random partition and the shard leading it."""
        partition = self.rng.randrange(self.partitions)
        return partition, self.leaders()[partition]

    def serves(self) -> bool:
        """Every shard has one process, the controller reports them all up, and every
        partition of the topic answers ``describe`` (its shard has it open)."""
        if len(shard_pids(self.broker.data_dir)) < SHARDS:
            return False
        try:
            with self.admin() as admin:
                shards = admin.status().shards
                admin.describe_topic(self.topic)
        except (BrokerError, ClientError):
            return False
        return len(shards) == SHARDS and all(s.alive for s in shards)

    def wait_until_serving(self, after: str) -> None:
        wait_for(self.serves, RECOVERY_WAIT_S, f"the broker serving every shard after {after}")


def wait_for(predicate, timeout_s: float, what: str):
    """``predicate()``'s first true value, polled within ``timeout_s``; else NotRecoveredError."""
    try:
        return wait_until(predicate, timeout_s=timeout_s, interval_s=0.1)
    except AssertionError:
        raise NotRecoveredError(f"not within {timeout_s} s: {what}") from None


# --- The faults: each names its target, acts, and waits for what it needs -----------------

def kill_leader_shard(s: Setting) -> str:
    partition, shard = s.a_leader()
    pid = s.shard_pid(shard)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: shard_pids(s.broker.data_dir).get(shard, pid) != pid, SHARD_RESTART_WAIT_S,
             f"new process for {shard}")
    s.wait_until_serving(f"SIGKILL of {shard}")
    return f"SIGKILL {shard} (leader of {s.topic}-{partition}, pid {pid})"


def stop_leader_shard(s: Setting) -> str:
    partition, shard = s.a_leader()
    pid = s.shard_pid(shard)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(s.stop_s)   # the fault itself: the leader is frozen this long
    finally:
        os.kill(pid, signal.SIGCONT)
    s.wait_until_serving(f"SIGSTOP of {shard}")
    return f"SIGSTOP {shard} (leader of {s.topic}-{partition}, pid {pid}) for {s.stop_s:g} s, SIGCONT"


def kill_controller(s: Setting) -> str:
    pid = _controller_pid(s)
    os.kill(pid, signal.SIGKILL)
    _wait_for_a_new_controller(s, pid)
    s.wait_until_serving("SIGKILL of the controller")
    return f"SIGKILL the controller (pid {pid}); Ray restarted it"


def kill_controller_in_election(s: Setting) -> str:
    """SIGKILL of a leading shard, then, a seeded moment later, of the controller: while
    it elects the partition's new leader (a dead leader is replaced at the next leader
    check, or when Ray restarts the shard and it announces itself: within about a
    second), or just before or after."""
    partition, shard = s.a_leader()
    shard_pid, controller_pid = s.shard_pid(shard), _controller_pid(s)
    delay_s = s.rng.uniform(0, ELECTION_WINDOW_S)
    os.kill(shard_pid, signal.SIGKILL)   # the controller now elects a new leader ...
    time.sleep(delay_s)                  # (the fault's timing itself, not a wait)
    os.kill(controller_pid, signal.SIGKILL)   # ... and dies doing it
    _wait_for_a_new_controller(s, controller_pid)
    s.wait_until_serving("SIGKILL of a leader and the controller")
    return (f"SIGKILL {shard} (leader of {s.topic}-{partition}, pid {shard_pid}), "
            f"{delay_s:.2f} s later the controller (pid {controller_pid}); Ray restarted both")


def _wait_for_a_new_controller(s: Setting, killed_pid: int) -> int:
    return wait_for(lambda: (pids := s.cluster.actor_pids(b"ray::Controller")) and
                    pids != [killed_pid] and len(pids) == 1 and pids[0],
                    SHARD_RESTART_WAIT_S, f"a new controller process after pid {killed_pid}")


def lose_node(s: Setting) -> str:
    """The node of the group's coordinator if it is a worker (so that the group's
    offsets must survive the loss), else one with a leader."""
    coordinator = s.coordinator()
    node = s.shard_nodes().get(coordinator, "")
    if node not in s.cluster.workers:
        coordinator, node = "", _worker_node_with_a_leader(s)
    s.cluster.remove_node(node)
    time.sleep(s.node_down_s)   # the fault itself: the node is gone this long
    s.cluster.add_node(node)
    s.wait_until_serving(f"the loss of node {node}")
    held = f" (with {coordinator}, the group's coordinator)" if coordinator else ""
    return f"node {node}{held} lost (every process killed) for {s.node_down_s:g} s, then back"


def wipe_replica(s: Setting) -> str:
    node = _worker_node_with_a_leader(s)
    shards = sorted(shard for shard, on in s.shard_nodes().items() if on == node)
    s.cluster.remove_node(node)
    # A lost machine's disk goes with it; here the shards' processes die a moment after
    # their raylet, and may still write (a manifest) meanwhile: wipe once none is left
    wait_for(lambda: not set(shards) & set(shard_pids(s.broker.data_dir)), SHARD_RESTART_WAIT_S,
             f"the processes of {', '.join(shards)} to end with their node")
    for shard in shards:   # down: nothing holds the files
        shutil.rmtree(s.broker.data_dir / "shards" / shard)
    s.cluster.add_node(node)
    s.wait_until_serving(f"wiping {shards}")
    return f"node {node} removed, the data directories of {', '.join(shards)} deleted, node back"


def restart_all_nodes(s: Setting) -> str:
    """Every node and the server killed, a new cluster on the same data, the server
    restarted; says how long each step took (the outage is their sum)."""
    old_address = s.cluster.address
    started_s = time.monotonic()
    s.broker.kill()
    s.cluster.restart()
    cluster_s = time.monotonic()
    s.broker.ray_address = s.cluster.address
    s.broker.restart()   # waits for its "ready" line (bounded)
    ready_s = time.monotonic()
    s.wait_until_serving("restarting every node")
    serving_s = time.monotonic()
    return (f"every node and the server killed ({old_address}), restarted at "
            f"{s.cluster.address}: new cluster in {cluster_s - started_s:.1f} s, server ready "
            f"{ready_s - cluster_s:.1f} s later, every shard serving {serving_s - ready_s:.1f} s "
            f"after that")


FAULTS = {"shard-kill": kill_leader_shard, "shard-stop": stop_leader_shard,
          "controller-kill": kill_controller,
          "controller-kill-in-election": kill_controller_in_election,
          "node-loss": lose_node, "replica-wipe": wipe_replica, "all-nodes": restart_all_nodes}
if set(FAULTS) != set(FAULT_KINDS):
    raise AssertionError(f"fault functions {sorted(FAULTS)} != kinds {sorted(FAULT_KINDS)}")


def _controller_pid(s: Setting) -> int:
    return wait_for(lambda: (pids := s.cluster.actor_pids(b"ray::Controller")) and len(pids) == 1
                    and pids[0], SHARD_RESTART_WAIT_S, "single controller process")


def _worker_node_with_a_leader(s: Setting) -> str:
    """A worker node (the head holds Ray's GCS) whose shard leads a partition, if any does."""
    nodes = s.shard_nodes()
    leading = sorted({nodes[shard] for shard in s.leaders().values()} & set(s.cluster.workers))
    return s.rng.choice(leading or s.cluster.workers)


def fault_schedule(rng: random.Random, kinds: tuple[str, ...], duration_s: float,
                   count: int) -> list[tuple[float, str]]:
    """(seconds from the start, kind) for ``count`` faults, every kind at least once,
    in a seeded order at seeded moments inside the run's margins."""
    if count < len(kinds):
        raise AssertionError(f"{count} faults cannot include each of {len(kinds)} kinds")
    chosen = list(kinds) + [rng.choice(kinds) for _ in range(count - len(kinds))]
    rng.shuffle(chosen)
    first, last = duration_s * SCHEDULE_MARGIN_FRACTION, duration_s * (1 - SCHEDULE_MARGIN_FRACTION)
    moments = sorted(rng.uniform(first, last) for _ in chosen)
    return list(zip(moments, chosen))


# --- The workload ----------------------------------------------------------------------

class Workers:
    """Threads that stop together: each runs its loop until ``stopping`` is set."""

    def __init__(self):
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, name: str, loop) -> None:
        thread = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self.stopping.set()
        deadline = time.monotonic() + THREAD_STOP_WAIT_S
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise AssertionError(f"workload threads {alive} did not stop in {THREAD_STOP_WAIT_S} s")


@dataclass
class Workload:
    """Producers, consumers and the commit sampler; what they saw goes into ``history``.
    Threads append to the history's lists (one append is atomic); the main thread reads
    them after ``stop``."""

    url: str
    topic: str
    group: str
    producers: int = 2
    consumers: int = 2
    rate_per_producer: float = 300.0          # records/s
    history: History = field(default_factory=History)
    not_acknowledged: list[str] = field(default_factory=list)
    consumer_restarts: int = 0

    def __post_init__(self):
        self._producing, self._consuming = Workers(), Workers()

    def start(self) -> None:
        for n in range(self.producers):
            self._producing.start(f"producer-{n}", lambda n=n: self._produce(f"p{n}"))
        for n in range(self.consumers):
            self._consuming.start(f"consumer-{n}", self._consume)
        self._consuming.start("commit-sampler", self._sample_commits)

    def stop(self) -> None:
        """Stop producing (every send answered), then consuming; a last commit sample."""
        self._producing.stop()
        self._consuming.stop()
        with Admin(broker=self.url, request_timeout_ms=ADMIN_TIMEOUT_MS) as admin:
            self._sample_commits_once(admin)

    def _produce(self, name: str) -> None:
        pause_s = CHUNK_RECORDS / self.rate_per_producer
        sequence = 0
        with Producer(broker=self.url, acks="all", linger_ms=1,
                      request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
                      delivery_timeout_ms=PRODUCER_DELIVERY_TIMEOUT_MS) as producer:
            while not self._producing.stopping.wait(pause_s):   # the pace is the workload
                sent = [(n, producer.send(self.topic, record_value(name, n),
                                          key=b"%s-%d" % (name.encode(), n % KEYS_PER_PRODUCER)))
                        for n in range(sequence, sequence + CHUNK_RECORDS)]
                sequence += CHUNK_RECORDS
                for n, future in sent:
                    self._await_ack(name, n, future)

    def _await_ack(self, name: str, sequence: int, future) -> None:
        try:
            meta = future.get(timeout=PRODUCER_DELIVERY_TIMEOUT_MS / 1000 + 30)
        except Exception as exc:   # not acknowledged: it may or may not be stored
            self.not_acknowledged.append(f"{name}:{sequence}: {exc}")
            return
        self.history.acks.append(Ack(meta.partition, meta.offset, name, sequence))

    def _consume(self) -> None:
        while not self._consuming.stopping.is_set():
            try:
                with Consumer(self.topic, broker=self.url, group=self.group,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              request_timeout_ms=CONSUMER_REQUEST_TIMEOUT_MS) as consumer:
                    self._consume_with(consumer)
            except (BrokerError, ClientError):   # the broker is down: a new consumer, soon
                self.consumer_restarts += 1
                self._consuming.stopping.wait(CONSUMER_RETRY_BACKOFF_S)

    def _consume_with(self, consumer: Consumer) -> None:
        while not self._consuming.stopping.is_set():
            for tp, records in consumer.poll(timeout_ms=POLL_TIMEOUT_MS).items():
                self.history.reads.extend(Read(tp.partition, r.offset, r.value) for r in records)
            try:
                consumer.commit()
            except (BrokerError, ClientError):
                pass   # committed at the next poll; the sampler sees what the broker kept

    def _sample_commits(self) -> None:
        with Admin(broker=self.url, request_timeout_ms=ADMIN_TIMEOUT_MS) as admin:
            while not self._consuming.stopping.wait(COMMIT_SAMPLE_INTERVAL_S):
                self._sample_commits_once(admin)

    def _sample_commits_once(self, admin: Admin) -> None:
        try:
            committed = admin.describe_group(self.group).committed
        except (BrokerError, ClientError):
            return   # the group's shard is down: no sample this time
        self.history.commits.extend(Commit(self.group, partition, offset)
                                    for (topic, partition), offset in sorted(committed.items())
                                    if topic == self.topic)


# --- After the faults ------------------------------------------------------------------

def replication_of(info) -> Replication:
    """A partition's replicas and in-sync replicas from ``describe``. A broker without
    replication reports neither: its one shard is then the one replica, in sync."""
    replicas = tuple(getattr(info, "replicas", ()) or ())
    if not replicas:
        return Replication((info.shard,), (info.shard,))
    return Replication(replicas, tuple(getattr(info, "in_sync_replicas", ())))


def wait_for_full_replication(url: str, topic: str, data_dir: Path | None = None,
                              say=print) -> dict[int, Replication]:
    """Each partition's replication once all are fully replicated, or as it is when
    REPLICATION_WAIT_S ran out (the checker then reports it; and ``say`` is told the
    controller's records and each shard's replication state, read from ``data_dir``
    and the shards: tests/replication_state.py)."""
    deadline = time.monotonic() + REPLICATION_WAIT_S
    while True:
        with Admin(broker=url, request_timeout_ms=ADMIN_TIMEOUT_MS * 10) as admin:
            found = {p.partition: replication_of(p) for p in admin.describe_topic(topic).partition_info}
        if all(sorted(r.in_sync) == sorted(r.replicas) for r in found.values()):
            return found
        if time.monotonic() > deadline:
            if data_dir is not None:
                say(f"not fully replicated after {REPLICATION_WAIT_S} s; the state then:\n"
                    f"{replication_report(data_dir, topic)}")
            return found
        time.sleep(0.5)


def read_every_partition(url: str, topic: str, partitions: int) -> list[Read]:
    """Every record of every partition, from its start to its end as listed now."""
    with Admin(broker=url, request_timeout_ms=ADMIN_TIMEOUT_MS * 10) as admin:
        ends = {p: admin.list_offsets(topic, p).end_offset for p in range(partitions)}
    reads: list[Read] = []
    positions = {p: 0 for p in range(partitions)}
    deadline = time.monotonic() + FINAL_READ_WAIT_S
    with Consumer(broker=url, auto_offset_reset="earliest",
                  request_timeout_ms=CONSUMER_REQUEST_TIMEOUT_MS) as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        while any(positions[p] < ends[p] for p in positions):
            if time.monotonic() > deadline:
                raise NotRecoveredError(f"read only {positions} of {ends} in {FINAL_READ_WAIT_S} s")
            for tp, records in consumer.poll(timeout_ms=POLL_TIMEOUT_MS).items():
                reads.extend(Read(tp.partition, r.offset, r.value) for r in records)
                positions[tp.partition] = records[-1].offset + 1
    return reads


def non_loopback_addresses(url: str) -> list[str]:
    """Every address ``plinth status`` reports for the broker at ``url`` that is not on
    127.0.0.0/8."""
    with Admin(broker=url, request_timeout_ms=ADMIN_TIMEOUT_MS * 10) as admin:
        return addresses_outside_loopback(admin.status())


def addresses_outside_loopback(status) -> list[str]:
    """The addresses in a ``StatusInfo`` (nodes, shards, routers' listen and node
    addresses) that are not on 127.0.0.0/8 (nor a Unix socket). A shard that is down
    may have no address: it is left out."""
    addresses = ([address for _, address, _ in status.nodes]
                 + [shard.address for shard in status.shards]
                 + [a for listen, node in status.routers for a in (listen, node)])
    return [a for a in addresses if a and not _on_this_machine(a)]


def _on_this_machine(address: str) -> bool:
    """A loopback host (bare, or in a tcp:// URL), or a Unix socket (ipc://)."""
    return address.startswith("ipc://") or address.removeprefix("tcp://").startswith("127.")


# --- The run ---------------------------------------------------------------------------

@dataclass
class RunReport:
    faults: list[tuple[str, str]]             # (kind, what was done)
    not_recovered: list[str]                  # faults the broker did not come back from
    history: History
    violations: list
    not_acknowledged: list[str]
    consumer_restarts: int = 0                # consumers the broker failed, replaced

    @property
    def ok(self) -> bool:
        return not self.violations and not self.not_recovered

    def lines(self) -> list[str]:
        kinds = Counter(kind for kind, _ in self.faults)
        h = self.history
        return [f"faults by kind: {', '.join(f'{k} {c}' for k, c in sorted(kinds.items())) or 'none'}",
                f"records checked: {len(h.acks)} acknowledged, {len(h.final)} stored, "
                f"{len(h.reads)} read by the group, {len(h.commits)} commit samples, "
                f"{len(h.replication)} partitions' replication; not acknowledged "
                f"(gave up): {len(self.not_acknowledged)}; consumers replaced: "
                f"{self.consumer_restarts}",
                f"not recovered: {'; '.join(self.not_recovered) or 'none'}",
                f"violations: {summary(self.violations)}"]


def run_faults(setting: Setting, workload: Workload, schedule: list[tuple[float, str]],
               duration_s: float, say=print) -> RunReport:
    """Run ``workload`` for ``duration_s`` with the faults of ``schedule``, then check.
    A fault the broker does not recover from ends the schedule (the rest would only
    pile on); the workload still stops and the history is still checked."""
    started = time.monotonic()
    faults, not_recovered = [], []
    workload.start()
    for at_s, kind in schedule:
        time.sleep(max(0.0, started + at_s - time.monotonic()))   # the seeded moment
        try:
            done = FAULTS[kind](setting)
        except (NotRecoveredError, BrokerError, ClientError) as exc:   # e.g. no controller
            not_recovered.append(f"{kind}: {exc}")
            say(f"{time.monotonic() - started:7.1f} s  {kind}: NOT RECOVERED: {exc}")
            break
        faults.append((kind, done))
        say(f"{time.monotonic() - started:7.1f} s  {kind}: {done}")
    # The rest of the run, and at least the margin after the last fault: the workload
    # must go on after the broker recovered.
    tail_s = duration_s * SCHEDULE_MARGIN_FRACTION
    time.sleep(max(0.0, started + duration_s - time.monotonic(), tail_s if schedule else 0.0))
    workload.stop()
    history = workload.history
    try:
        history.final = read_every_partition(setting.broker.url, setting.topic, setting.partitions)
        history.replication = wait_for_full_replication(setting.broker.url, setting.topic,
                                                        setting.broker.data_dir, say)
    except (NotRecoveredError, BrokerError, ClientError) as exc:
        not_recovered.append(f"the final read: {exc}")
        # Without the log, every acknowledged record would count as lost: check the rest.
        return RunReport(faults, not_recovered, history, check(replace(history, acks=[])),
                         workload.not_acknowledged, workload.consumer_restarts)
    return RunReport(faults, not_recovered, history, check(history), workload.not_acknowledged,
                     workload.consumer_restarts)


def group_coordinated_on_a_worker(s: Setting) -> str:
    """A name for the workload's group whose coordinator (its slot's leader) runs on a
    worker node, so that node-loss takes it, if one is found in a few tries (the
    offsets replicated and a slot led on a worker); else any name."""
    for _ in range(GROUP_NAME_TRIES):
        s.group = unique_topic("group")
        if s.shard_nodes().get(s.coordinator(), "") in s.cluster.workers:
            break
    return s.group


def create_topic(url: str, topic: str, partitions: int, replication_factor: int,
                 min_insync: int | None) -> None:
    """The run's topic, with ``replication_factor`` copies."""
    with Admin(broker=url, request_timeout_ms=ADMIN_TIMEOUT_MS * 10) as admin:
        config = {} if min_insync is None else {"min.insync.replicas": str(min_insync)}
        admin.create_topic(topic, partitions, replication_factor=replication_factor,
                           config=config)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    kinds = tuple(args.faults.split(","))
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown:
        raise SystemExit(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
    rng = random.Random(args.seed)
    schedule = fault_schedule(rng, kinds, args.duration_s,
                              max(len(kinds), round(args.duration_s / args.fault_every_s)))
    work_dir = Path(tempfile.mkdtemp(prefix="plinth-faults-"))
    cluster = ThreeNodeCluster().start()
    broker = Broker(work_dir / "data", cluster.address, shards=SHARDS)
    try:
        broker.start()
        report = _run(args, rng, schedule, cluster, broker)
    finally:
        broker.stop()
        cluster.shutdown()
        if not args.keep_data:
            shutil.rmtree(work_dir, ignore_errors=True)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _run(args, rng, schedule, cluster, broker) -> RunReport:
    outside = non_loopback_addresses(broker.url)
    if outside:
        raise AssertionError(f"the broker reports addresses outside loopback: {outside}")
    topic = unique_topic("faults")
    create_topic(broker.url, topic, PARTITIONS, args.replication_factor, args.min_insync)
    setting = Setting(cluster, broker, topic, PARTITIONS, rng, stop_s=args.stop_s,
                      node_down_s=args.node_down_s)
    group = setting.group = group_coordinated_on_a_worker(setting)
    workload = Workload(broker.url, topic, group, producers=args.producers,
                        consumers=args.consumers, rate_per_producer=args.rate)
    print(f"seed {args.seed}: {len(schedule)} faults in {args.duration_s:g} s on topic {topic} "
          f"(factor {args.replication_factor}), cluster {cluster.address}", flush=True)
    return run_faults(setting, workload, schedule, args.duration_s,
                      say=lambda line: print(line, flush=True))


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=300)
    parser.add_argument("--faults", default=",".join(FAULTS_DEFAULT),
                        help=f"comma-separated, from {','.join(FAULT_KINDS)}")
    parser.add_argument("--fault-every-s", type=float, default=30,
                        help="the number of faults is the duration over this (at least one per kind)")
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--min-insync", type=int, default=None,
                        help="the topic's min.insync.replicas (default: the broker's)")
    parser.add_argument("--stop-s", type=float, default=12.0, help="how long SIGSTOP lasts")
    parser.add_argument("--node-down-s", type=float, default=15.0)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=300.0, help="records/s per producer")
    parser.add_argument("--keep-data", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
