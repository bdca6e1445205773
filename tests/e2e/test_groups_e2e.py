"""Consumer groups end to end: real broker, real consumers (threads and a separate process)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from plinth import Admin, Consumer, Producer
from tests.support import unique_topic, wait_until

SESSION_MS = 3000
PARTITIONS = 6


class Member:
    """A group consumer polling on its own thread, recording what it got."""

    def __init__(self, url: str, topic: str, group: str, **kw):
        self.records = []
        self.revoked: list[set] = []
        self.assigned: list[set] = []
        self._stop = threading.Event()
        self.consumer = Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                                 session_timeout_ms=SESSION_MS, auto_commit_interval_ms=200,
                                 on_assign=self.assigned.append, on_revoke=self.revoked.append, **kw)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                self.records.extend(records)
        self.consumer.close()

    def owned(self) -> set:
        return set(self.consumer.assignment())

    def stop(self):
        self._stop.set()
        self._thread.join(30)


def produce(url: str, topic: str, start: int, count: int) -> None:
    with Producer(broker=url) as producer:
        for n in range(start, start + count):
            producer.send(topic, b"%d" % n, partition=n % PARTITIONS)


def balanced(members, sizes) -> bool:
    return sorted(len(m.owned()) for m in members) == sizes


def test_three_members_share_six_partitions_and_get_every_record_exactly_once(shared_broker):
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    members = [Member(shared_broker.url, topic, group) for _ in range(3)]
    try:
        wait_until(lambda: balanced(members, [2, 2, 2]), timeout_s=30)
        produce(shared_broker.url, topic, 0, 600)
        wait_until(lambda: sum(len(m.records) for m in members) >= 600, timeout_s=30)
        values = sorted(int(r.value) for m in members for r in m.records)
        assert values == list(range(600))
        owners = [m.owned() for m in members]
        assert set().union(*owners) == {(topic, p) for p in range(PARTITIONS)}
    finally:
        for m in members:
            m.stop()


def test_a_joining_member_takes_partitions_without_the_others_dropping_theirs(shared_broker):
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    first = [Member(shared_broker.url, topic, group) for _ in range(2)]
    try:
        wait_until(lambda: balanced(first, [3, 3]), timeout_s=30)
        before = [m.owned() for m in first]
        revocations_before = [len(m.revoked) for m in first]
        produce(shared_broker.url, topic, 0, 300)
        newcomer = Member(shared_broker.url, topic, group)
        first.append(newcomer)
        wait_until(lambda: balanced(first, [2, 2, 2]), timeout_s=30)
        produce(shared_broker.url, topic, 300, 300)
        # The old members kept 2 of their 3 partitions and lost only 1 each
        for member, had, seen in zip(first[:2], before, revocations_before):
            assert member.owned() < had
            assert [len(r) for r in member.revoked[seen:]] == [1]
        # And across the rebalance every record arrived at least once
        wait_until(lambda: {int(r.value) for m in first for r in m.records} >= set(range(600)),
                   timeout_s=30)
    finally:
        for m in first:
            m.stop()


MEMBER_SCRIPT = """
import sys
from plinth import Consumer
c = Consumer(sys.argv[2], broker=sys.argv[1], group=sys.argv[3], session_timeout_ms=%d,
             auto_offset_reset="earliest")
while True:
    c.poll(timeout_ms=100)
    print("owns", len(c.assignment()), flush=True)
""" % SESSION_MS


def test_a_member_killed_with_sigkill_has_its_partitions_taken_over_within_the_session_timeout(shared_broker):
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    # Given a member in another process and one here, sharing the partitions
    proc = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, shared_broker.url, topic, group],
                            stdout=subprocess.PIPE, text=True)
    local = Member(shared_broker.url, topic, group)
    try:
        wait_until(lambda: len(local.owned()) == 3, timeout_s=30)
        # When the other process is SIGKILLed
        proc.kill()
        proc.wait(10)
        killed_at = time.monotonic()
        # Then the survivor owns all six within the session timeout plus a heartbeat
        wait_until(lambda: len(local.owned()) == PARTITIONS, timeout_s=30)
        took_s = time.monotonic() - killed_at
        heartbeat_s = SESSION_MS / 5000
        assert took_s <= SESSION_MS / 1000 + heartbeat_s + 1.0, took_s
        print(f"partitions taken over {took_s:.2f} s after SIGKILL (session {SESSION_MS} ms)")
    finally:
        proc.kill()
        local.stop()


def test_committed_offsets_survive_a_broker_restart_and_lag_counts_what_is_not_committed(broker_factory):
    broker = broker_factory(shards=2)
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 2)
    with Producer(broker=broker.url) as producer:
        for n in range(100):
            producer.send(topic, b"%d" % n, partition=n % 2)
    # Given a member that read 30 records from partition 0 and 0 from partition 1, and committed
    with Consumer(topic, broker=broker.url, group=group, auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=SESSION_MS) as consumer:
        wait_until(lambda: consumer.poll(timeout_ms=100) == {} and len(consumer.assignment()) == 2,
                   timeout_s=30)
        consumer.commit({(topic, 0): 30, (topic, 1): 0})
        assert consumer.committed(topic, 0) == 30
    with Admin(broker=broker.url) as admin:
        rows = {(t, p): (committed, end, lag) for t, p, committed, end, lag in admin.group_lag(group)}
    assert rows == {(topic, 0): (30, 50, 20), (topic, 1): (0, 50, 50)}
    # When the broker restarts
    assert broker.stop() == 0
    broker.restart()
    # Then a new member continues from the committed offsets
    with Consumer(topic, broker=broker.url, group=group, auto_offset_reset="earliest",
                  session_timeout_ms=SESSION_MS) as consumer:
        consumer.consumer_timeout_ms = 3_000
        values = sorted(int(r.value) for r in consumer)
    assert values == sorted(list(range(60, 100, 2)) + list(range(1, 100, 2)))
