"""Consumer groups end to end: real broker, real consumers (threads and a separate process)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time

import pytest

from plinth import Admin, Consumer, Producer, limits, protocol
from plinth.aio import AIOConsumer
from plinth.client.connection import Connection, broker_address
from plinth.errors import (CommitFailedError, GroupMaxSizeReachedError, TooManyGroupsError, UnknownGroupError,
                           UnknownMemberIdError)
from tests.conftest import Broker
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


def topic_and_group(url: str) -> tuple[str, str]:
    """A new topic of PARTITIONS partitions, and a new group's name."""
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, PARTITIONS)
    return topic, group


def balanced(members, sizes) -> bool:
    return sorted(len(m.owned()) for m in members) == sizes


def test_three_members_share_six_partitions_and_get_every_record_exactly_once(shared_broker):
    topic, group = topic_and_group(shared_broker.url)
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
    topic, group = topic_and_group(shared_broker.url)
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
    topic, group = topic_and_group(shared_broker.url)
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


def a_deleted_topics_offsets_are_forgotten(url: str) -> None:
    """A group's committed offsets of a topic go with the topic: a topic created again
    under its name is read from the start by the same group, and the group's lag
    shows no partition of the old one."""
    topic, group, other = unique_topic("gone"), unique_topic("grp"), unique_topic("kept")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, 1)
        admin.create_topic(other, 1)
    with Producer(broker=url) as producer:
        for value in (b"old0", b"old1"):
            producer.send(topic, value).get(timeout=30)
    # Given a group that committed offset 2 of the topic and 0 of another (no members)
    with Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=SESSION_MS) as consumer:
        wait_until(lambda: consumer.poll(timeout_ms=100) is not None and
                   consumer.assignment() == {(topic, 0)}, timeout_s=30)
        consumer.commit({(topic, 0): 2})
    with Admin(broker=url) as admin:
        admin.reset_group_offsets(group, {(other, 0): 0})
        # When the topic is deleted and created again
        admin.delete_topic(topic)
        # Then the group keeps only the other topic's offset, at once
        assert admin.describe_group(group).committed == {(other, 0): 0}
        assert [row[:2] for row in admin.group_lag(group)] == [(other, 0)]
        admin.create_topic(topic, 1)
    with Producer(broker=url) as producer:
        for value in (b"new0", b"new1", b"new2"):
            producer.send(topic, value).get(timeout=30)
    # And the group reads the new topic from its start, not from the old offset 2
    with Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                  session_timeout_ms=SESSION_MS, consumer_timeout_ms=3_000) as consumer:
        assert [r.value for r in consumer] == [b"new0", b"new1", b"new2"]


def test_deleting_a_topic_deletes_the_groups_committed_offsets_of_it(shared_broker):
    a_deleted_topics_offsets_are_forgotten(shared_broker.url)


def a_groups_deleted_offsets_are_read_again_from_the_reset_policy(url: str) -> None:
    """Kafka's OffsetDelete through Admin: a partition whose offset was deleted is read
    from auto_offset_reset by the group's next member; the others resume where
    committed; while a member subscribes, the offsets are kept."""
    topic, group = unique_topic("del"), unique_topic("grp")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, 2)
    with Producer(broker=url) as producer:
        for n in range(4):
            producer.send(topic, b"%d" % n, partition=n % 2).get(timeout=30)
    # Given a member that committed both partitions to their ends (2 each)
    with Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=SESSION_MS) as consumer:
        wait_until(lambda: consumer.poll(timeout_ms=100) is not None and
                   len(consumer.assignment()) == 2, timeout_s=30)
        consumer.commit({(topic, 0): 2, (topic, 1): 2})
        # Then while it subscribes, its offsets are kept
        with Admin(broker=url) as admin:
            kept = admin.delete_group_offsets(group, [(topic, 0)])
        assert type(kept[(topic, 0)]).__name__ == "GroupSubscribedToTopicError"
    # When, once it left, partition 0's offset is deleted
    with Admin(broker=url) as admin:
        assert admin.delete_group_offsets(group, [(topic, 0)]) == {(topic, 0): None}
        assert admin.describe_group(group).committed == {(topic, 1): 2}
    # Then the next member reads partition 0 from the start and nothing of partition 1
    with Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                  session_timeout_ms=SESSION_MS, consumer_timeout_ms=3_000) as consumer:
        assert sorted((r.partition, r.value) for r in consumer) == [(0, b"0"), (0, b"2")]


def test_deleting_some_of_a_groups_offsets_makes_its_next_member_read_them_again(shared_broker):
    a_groups_deleted_offsets_are_read_again_from_the_reset_policy(shared_broker.url)


# --- Two tenants with CurveZMQ keys (issue 11, findings 2 and 6) ---------------------------

def keygen(directory, name):
    subprocess.run([sys.executable, "-m", "plinth.cli", "keygen", name, "--out", str(directory)],
                   check=True, capture_output=True)
    return directory / f"{name}.key", directory / f"{name}.key_secret"


@pytest.fixture(scope="module")
def tenants(ray_cluster, tmp_path_factory):
    """A one-shard broker with CurveZMQ on, and client options for tenants A and B."""
    directory = tmp_path_factory.mktemp("tenants")
    keys, authorized = directory / "keys", directory / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    options = {}
    for name in ("a", "b"):
        public, secret = keygen(keys, name)
        (authorized / public.name).write_text(public.read_text())
        options[name] = dict(curve_key_file=str(secret), curve_server_key_file=str(server_public))
    broker = Broker(directory / "data", ray_cluster, shards=1, extra_args=(
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized))).start()
    yield broker, options["a"], options["b"]
    broker.stop()


def connect(broker, options) -> Connection:
    return Connection(broker_address(broker.url, **options))


def heartbeat(conn: Connection, group: str, topic: str, member_id: str = "", epoch: int = 0,
              session_timeout_ms: int = SESSION_MS) -> protocol.HeartbeatView:
    request_id = conn.next_request_id()
    header = protocol.encode_group_heartbeat(request_id, group, member_id, epoch, [topic], set(),
                                             session_timeout_ms, "")
    return conn.request(header, request_id, 30_000)[0].heartbeat


def pipelined(conn: Connection, encode, count: int, window: int = 200) -> list:
    """Send ``count`` requests ``encode(request_id, n)``, ``window`` at a time (within the
    in-flight limit); their replies, in order."""
    replies = []
    for start in range(0, count, window):
        request_ids = []
        for n in range(start, min(count, start + window)):
            request_ids.append(conn.next_request_id())
            conn.send(encode(request_ids[-1], n))
        got = {}
        while len(got) < len(request_ids):
            reply = conn.recv(30_000)
            if reply is None:
                raise AssertionError(f"no reply within 30 s ({len(got)} of {len(request_ids)})")
            got[reply[0].request_id] = reply[0]
        replies += [got[request_id] for request_id in request_ids]
    return replies


# More partitions than a consumer's fetches in flight (256) and than one commit's
# header holds (about 1,160 with these topic names).
WIDE_PARTITIONS = 1500


def test_a_group_consumer_of_1500_partitions_reads_and_commits_every_one(shared_broker):
    url = shared_broker.url
    topic, group = unique_topic("wide"), unique_topic("wide-g")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, WIDE_PARTITIONS)
    try:
        # Given a record in each of 1,500 partitions
        with Producer(broker=url) as producer:
            for partition in range(WIDE_PARTITIONS):
                producer.send(topic, b"%d" % partition, partition=partition)
        # When one group member reads them, commits, then commits again without waiting
        calls = []
        with Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=30_000) as consumer:
            # (it used to re-fetch its first 256 partitions and never read the others)
            read = set()
            for record in consumer:
                read.add(record.partition)
                if len(read) == WIDE_PARTITIONS:
                    break
            # (a commit of them all did not fit a request header)
            consumer.commit()
            committed = dict(committed_of(url, group))
            consumer.commit_async({(topic, p): 0 for p in range(WIDE_PARTITIONS)},
                                  callback=lambda offsets, error: calls.append((len(offsets), error)))
            wait_until(lambda: consumer.poll(timeout_ms=50) == {} and calls, 30)
        # Then it read every partition, and each commit holds every partition: the
        # asynchronous one's callback ran once, for all of them
        assert read == set(range(WIDE_PARTITIONS))
        assert committed == {(topic, p): 1 for p in range(WIDE_PARTITIONS)}
        assert calls == [(WIDE_PARTITIONS, None)]
        assert dict(committed_of(url, group)) == {
            (topic, p): 0 for p in range(WIDE_PARTITIONS)}
        # And an admin's reset of every partition is taken whole too
        with Admin(broker=url) as admin:
            admin.reset_group_offsets(group, {(topic, p): 1 for p in range(WIDE_PARTITIONS)})
        assert dict(committed_of(url, group)) == committed
    finally:
        with Admin(broker=url) as admin:
            admin.delete_topic(topic)


def committed_of(url: str, group: str) -> dict:
    with Admin(broker=url) as admin:
        return admin.describe_group(group).committed


def test_a_client_cannot_leave_or_heartbeat_as_another_clients_member(tenants):
    # Given tenant B's consumer owning every partition of its group
    broker, as_a, as_b = tenants
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=broker.url, **as_b) as admin:
        admin.create_topic(topic, PARTITIONS)
    b = Member(broker.url, topic, group, **as_b)
    conn = connect(broker, as_a)
    try:
        wait_until(lambda: len(b.owned()) == PARTITIONS, timeout_s=30)
        with Admin(broker=broker.url, **as_a) as admin:
            victim = admin.describe_group(group).members[0]
        # When tenant A leaves, then heartbeats, with B's member id and epoch
        for epoch in (protocol.LEAVE_EPOCH, victim.member_epoch):
            with pytest.raises(UnknownMemberIdError, match="for this client"):
                heartbeat(conn, group, topic, victim.member_id, epoch)
        # Then B is still the group's member, with its id and every partition
        with Admin(broker=broker.url, **as_a) as admin:
            members = admin.describe_group(group).members
        assert [m.member_id for m in members] == [victim.member_id]
        assert len(b.owned()) == PARTITIONS
    finally:
        conn.close()
        b.stop()


def test_one_client_cannot_fill_a_group_another_client_uses(tenants):
    # Given tenant A with as many members in a group as one client key may have
    broker, as_a, as_b = tenants
    topic, group = unique_topic("g"), unique_topic("grp")
    with Admin(broker=broker.url, **as_a) as admin:
        admin.create_topic(topic, PARTITIONS)
    conn_a, conn_b = connect(broker, as_a), connect(broker, as_b)
    limit = limits.GROUP_MEMBERS_PER_CLIENT_KEY_MAX
    try:
        joins = pipelined(conn_a, lambda rid, n: protocol.encode_group_heartbeat(
            rid, group, "", 0, [topic], set(), limits.SESSION_TIMEOUT_MS_MAX, ""), limit)
        assert [reply.error for reply in joins] == [None] * limit, {str(r.error) for r in joins}
        # When A joins one more / Then it is refused, naming the limit
        with pytest.raises(GroupMaxSizeReachedError, match="limit per client key"):
            heartbeat(conn_a, group, topic)
        # And tenant B still joins the group
        assert heartbeat(conn_b, group, topic).member_id
    finally:
        conn_a.close()
        conn_b.close()


def test_a_shard_refuses_groups_beyond_its_limit_and_takes_new_ones_once_groups_empty(tenants):
    # Given a shard coordinating as many groups as it may (joined by tenant A)
    broker, as_a, as_b = tenants
    topic, prefix = unique_topic("g"), unique_topic("many")
    with Admin(broker=broker.url, **as_a) as admin:
        admin.create_topic(topic, 1)
        room = limits.GROUPS_PER_SHARD_MAX - len(admin.list_groups())
    conn_a, conn_b = connect(broker, as_a), connect(broker, as_b)
    session_ms = limits.SESSION_TIMEOUT_MS_MAX
    try:
        joins = pipelined(conn_a, lambda rid, n: protocol.encode_group_heartbeat(
            rid, f"{prefix}-{n}", "", 0, [topic], set(), session_ms, ""), room)
        assert [reply.error for reply in joins] == [None] * room, {str(r.error) for r in joins}
        # When anyone makes one more group / Then it is refused, naming the limit
        with pytest.raises(TooManyGroupsError, match="GROUPS_PER_SHARD_MAX"):
            heartbeat(conn_b, f"{prefix}-b", topic)
        # And when A's members leave their groups (which never committed)
        leaves = pipelined(conn_a, lambda rid, n: protocol.encode_group_heartbeat(
            rid, f"{prefix}-{n}", joins[n].heartbeat.member_id, protocol.LEAVE_EPOCH, [topic],
            set(), session_ms, ""), room)
        assert [reply.error for reply in leaves] == [None] * room
        # Then those groups are gone, and B's new group is taken
        with Admin(broker=broker.url, **as_b) as admin:
            assert not [name for name in admin.list_groups() if name.startswith(prefix)]
        assert heartbeat(conn_b, f"{prefix}-b", topic).member_id
    finally:
        conn_a.close()
        conn_b.close()


def poll_until_owns(consumer: Consumer, count: int) -> set:
    """Poll (dropping what comes) until the member owns ``count`` partitions."""
    wait_until(lambda: consumer.poll(timeout_ms=100) is not None
               and len(consumer.assignment()) == count, timeout_s=30)
    return consumer.assignment()


def test_a_paused_partition_the_group_revokes_forgets_its_pause_and_those_kept_stay_paused(
        shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    consumer = Consumer(topic, broker=shared_broker.url, group=group, auto_offset_reset="earliest",
                        session_timeout_ms=SESSION_MS)
    newcomer = None
    try:
        # Given a member alone in its group, with all six partitions paused
        consumer.pause(*poll_until_owns(consumer, PARTITIONS))
        # When a second member joins and takes three of them
        newcomer = Member(shared_broker.url, topic, group)
        kept = poll_until_owns(consumer, PARTITIONS // 2)
        # Then the three it kept are still paused, and the three revoked are forgotten
        assert consumer.paused() == kept
        # And when the newcomer leaves, they come back unpaused: read, the others not
        newcomer.stop()
        poll_until_owns(consumer, PARTITIONS)
        assert consumer.paused() == kept
        produce(shared_broker.url, topic, 0, 60)
        got = []
        wait_until(lambda: got.extend(r for rs in consumer.poll(timeout_ms=100).values()
                                      for r in rs) or len(got) >= 30, timeout_s=30)
        assert {(topic, r.partition) for r in got} == consumer.assignment() - kept
    finally:
        consumer.close()
        if newcomer is not None:
            newcomer.stop()


class Recorder:
    """A rebalance listener (kafka-python's methods), recording each call's partitions."""

    def __init__(self):
        self.calls: list[tuple[str, set]] = []

    def on_partitions_revoked(self, revoked):
        self.calls.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned):
        self.calls.append(("assigned", set(assigned)))


def test_a_listener_given_to_subscribe_is_called_as_the_group_assigns_and_revokes(shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    # Given a group consumer made without topics, that subscribes with a listener
    listener = Recorder()
    consumer = Consumer(broker=shared_broker.url, group=group, session_timeout_ms=SESSION_MS)
    newcomer = None
    try:
        consumer.subscribe([topic], listener=listener)
        everything = poll_until_owns(consumer, PARTITIONS)
        # When a second member joins and takes half
        newcomer = Member(shared_broker.url, topic, group)
        kept = poll_until_owns(consumer, PARTITIONS // 2)
        # Then the listener heard of all six coming, then of the three going
        assert listener.calls == [("assigned", everything), ("revoked", everything - kept)]
    finally:
        consumer.close()
        if newcomer is not None:
            newcomer.stop()


def polled_values(consumer: Consumer, count: int) -> list[int]:
    """The values of the records polled until ``count`` came (bounded by wait_until)."""
    got = []
    wait_until(lambda: got.extend(int(r.value) for rs in consumer.poll(timeout_ms=100).values()
                                  for r in rs) or len(got) >= count, timeout_s=30)
    return got


def polled_values_of(consumer: Consumer, count: int, timeout_s: float = 30) -> list[bytes]:
    """The values of the next ``count`` records polled (within ``timeout_s``)."""
    values, deadline_s = [], time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline_s:
        values += [r.value for rs in consumer.poll(timeout_ms=100).values() for r in rs]
    return values


def test_unsubscribe_commits_revokes_and_leaves_and_a_later_subscribe_joins_again(shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    produce(shared_broker.url, topic, 0, 60)
    listener = Recorder()
    consumer = Consumer(broker=shared_broker.url, group=group, session_timeout_ms=SESSION_MS,
                        auto_offset_reset="earliest")
    try:
        # Given a member alone in its group that has read all 60 records
        consumer.subscribe([topic], listener=listener)
        assert sorted(polled_values(consumer, 60)) == list(range(60))
        everything = consumer.assignment()
        # When it unsubscribes
        consumer.unsubscribe()
        # Then it owns nothing, has no subscription, and heard its six partitions go
        assert (consumer.assignment(), consumer.subscription()) == (set(), None)
        assert listener.calls[-1] == ("revoked", everything)
        # And it committed what it read, and left: the group has no member
        assert sum(committed_of(shared_broker.url, group).values()) == 60
        with Admin(broker=shared_broker.url) as admin:
            assert admin.describe_group(group).members == []
        # And subscribing again, it joins anew and reads on from its commits
        consumer.subscribe([topic])
        produce(shared_broker.url, topic, 60, 6)
        assert sorted(polled_values(consumer, 6)) == list(range(60, 66))
        assert consumer.assignment() == everything
    finally:
        consumer.close()


def test_subscribing_again_to_other_topics_leaves_and_joins_with_them(shared_broker):
    first, second, group = unique_topic("g"), unique_topic("g"), unique_topic("grp")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(first, PARTITIONS)
        admin.create_topic(second, PARTITIONS)
    produce(shared_broker.url, first, 0, 12)
    produce(shared_broker.url, second, 100, 12)
    old, new = Recorder(), Recorder()
    consumer = Consumer(broker=shared_broker.url, group=group, session_timeout_ms=SESSION_MS,
                        auto_offset_reset="earliest")
    try:
        # Given a member that read the first topic's 12 records
        consumer.subscribe([first], listener=old)
        assert sorted(polled_values(consumer, 12)) == list(range(12))
        owned_first = consumer.assignment()
        # When it subscribes again, to both topics, with another listener
        consumer.subscribe([first, second], listener=new)
        # Then its old listener heard the first topic's partitions go, its reads committed
        assert old.calls[-1] == ("revoked", owned_first)
        assert sum(committed_of(shared_broker.url, group).values()) == 12
        # And it reads the second topic's records, and none of the first's again
        assert sorted(polled_values(consumer, 12)) == list(range(100, 112))
        assert consumer.subscription() == {first, second}
        assert {tp.topic for tp in consumer.assignment()} == {first, second}
        assert new.calls and new.calls[-1][0] == "assigned"
    finally:
        consumer.close()


def test_a_listener_that_unsubscribes_while_assigned_ends_the_rebalance_without_an_error(
        shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    consumer = Consumer(broker=shared_broker.url, group=group, session_timeout_ms=SESSION_MS,
                        auto_offset_reset="earliest")
    heard = Recorder()

    class Unsubscribing(Recorder):
        def on_partitions_assigned(self, assigned):
            heard.on_partitions_assigned(assigned)
            consumer.unsubscribe()

        def on_partitions_revoked(self, revoked):
            heard.on_partitions_revoked(revoked)

    try:
        # Given a member whose listener unsubscribes as soon as it is given partitions
        consumer.subscribe([topic], listener=Unsubscribing())
        # When it polls until it was given them / Then no poll raises
        wait_until(lambda: consumer.poll(timeout_ms=100) == {} and heard.calls, timeout_s=30)
        assert consumer.poll(timeout_ms=100) == {}
        # And it heard them come, then go, once; it owns nothing and left its group
        assert [what for what, _ in heard.calls] == ["assigned", "revoked"]
        assert heard.calls[0][1] == heard.calls[1][1] and len(heard.calls[0][1]) == PARTITIONS
        assert consumer.assignment() == set() and consumer.subscription() is None
        with Admin(broker=shared_broker.url) as admin:
            with pytest.raises(UnknownGroupError):   # no members, and nothing committed
                admin.describe_group(group)
    finally:
        consumer.close()


POLL_INTERVAL_MS = 1500   # max_poll_interval_ms of the member that stops polling
STUCK = (r"cannot commit: this consumer left the group after \d+ ms without a poll\(\), "
         r"over max_poll_interval_ms=1500")


def test_a_member_that_stops_polling_leaves_after_max_poll_interval_ms_and_rejoins_at_its_poll(
        shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    produce(shared_broker.url, topic, 0, 600)
    # Given two members sharing the partitions; the second's application will stall
    # (its heartbeat thread runs on: the session never ends)
    polling = Member(shared_broker.url, topic, group)
    stalled = Consumer(topic, broker=shared_broker.url, group=group, auto_offset_reset="earliest",
                       session_timeout_ms=SESSION_MS, max_poll_interval_ms=POLL_INTERVAL_MS)
    stalled_got = []
    try:
        wait_until(lambda: stalled_got.extend(
            r for rs in stalled.poll(timeout_ms=100).values() for r in rs) or
            len(stalled.assignment()) == 3 and len(polling.owned()) == 3, timeout_s=30)
        stalled_got += [r for rs in stalled.poll(timeout_ms=500).values() for r in rs]
        # When it does not poll for max_poll_interval_ms
        stalled_s = time.monotonic()
        # Then the polling member takes every partition, as from a member gone
        wait_until(lambda: len(polling.owned()) == PARTITIONS, timeout_s=30)
        assert time.monotonic() - stalled_s >= POLL_INTERVAL_MS / 1000
        # And the stalled member's commit is refused, saying why
        with pytest.raises(CommitFailedError, match=STUCK):
            stalled.commit()
        # And every record was read, none lost (those it read after its last commit
        # are read again by the member that took its partitions)
        wait_until(lambda: {int(r.value) for r in polling.records + stalled_got}
                   >= set(range(600)), timeout_s=30)
        # When it polls again, Then it rejoins and the two share the partitions again
        wait_until(lambda: stalled.poll(timeout_ms=100) is not None and
                   len(stalled.assignment()) == 3 and len(polling.owned()) == 3, timeout_s=30)
        stalled.commit()
    finally:
        stalled.close()
        polling.stop()


def test_an_aio_member_that_stops_calling_getmany_leaves_after_max_poll_interval_ms(
        shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    polling = Member(shared_broker.url, topic, group)

    async def scenario():
        async with AIOConsumer(topic, broker=shared_broker.url, group=group,
                               session_timeout_ms=SESSION_MS,
                               max_poll_interval_ms=POLL_INTERVAL_MS) as stalled:
            while not (len(stalled.assignment()) == 3 and len(polling.owned()) == 3):
                await stalled.getmany(timeout_ms=100)
            # When its application awaits something else for longer than the interval
            # (its heartbeat task runs on), Then the polling member takes every partition
            await asyncio.to_thread(
                wait_until, lambda: len(polling.owned()) == PARTITIONS, timeout_s=30)
            with pytest.raises(CommitFailedError, match=STUCK):
                await stalled.commit()
            # And its next getmany rejoins
            while not (len(stalled.assignment()) == 3 and len(polling.owned()) == 3):
                await stalled.getmany(timeout_ms=100)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        polling.stop()


def test_an_iterating_member_that_left_for_want_of_a_poll_hands_out_none_of_its_lost_records(
        shared_broker):
    topic, group = topic_and_group(shared_broker.url)
    polling = Member(shared_broker.url, topic, group)
    revoked = []
    stalled = Consumer(topic, broker=shared_broker.url, group=group, auto_offset_reset="earliest",
                       session_timeout_ms=SESSION_MS, max_poll_interval_ms=POLL_INTERVAL_MS,
                       on_revoke=revoked.append, consumer_timeout_ms=10_000)
    try:
        wait_until(lambda: stalled.poll(timeout_ms=100) == {} and
                   len(stalled.assignment()) == 3 and len(polling.owned()) == 3, timeout_s=30)
        # Given an iterating member holding records polled but not yet iterated
        produce(shared_broker.url, topic, 0, 600)
        iterated = iter(stalled)
        first = next(iterated)
        # When it iterates no further for max_poll_interval_ms: the other takes everything
        wait_until(lambda: len(polling.owned()) == PARTITIONS, timeout_s=30)
        lost = set(stalled.assignment())
        produce(shared_broker.url, topic, 600, 600)   # (for the partitions it gets back)
        # Then its next record comes only after its partitions were dropped as lost
        # (on_revoke heard), and from a partition it holds then, not from its buffer
        after = next(iterated, None)
        assert revoked and revoked[-1] == lost
        assert after is None or (after.topic, after.partition) in stalled.assignment()
        assert after is None or int(after.value) >= 600, (first, after)
    finally:
        stalled.close()
        polling.stop()


# --- A topic deleted while a group reads it (tester G) ------------------------------------

def topics_to_delete(url: str) -> tuple[str, str, str]:
    """A topic of two partitions holding four records (to be deleted), another of one
    partition, and a new group's name."""
    gone, kept, group = unique_topic("gone"), unique_topic("kept"), unique_topic("grp")
    with Admin(broker=url) as admin:
        admin.create_topic(gone, 2)
        admin.create_topic(kept, 1)
    with Producer(broker=url) as producer:
        for n in range(4):
            producer.send(gone, b"g%d" % n, partition=n % 2).get(timeout=30)
    return gone, kept, group


def gone_warnings(caplog, topic: str) -> tuple[list[str], list[str]]:
    """(the warnings saying ``topic`` is gone, the warnings retrying a fetch of it)."""
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return ([m for m in warnings if m.startswith(f"topic {topic!r} is gone")],
            [m for m in warnings if m.startswith(f"fetch of {topic}-") and "retrying" in m])


def test_a_member_whose_topic_is_deleted_drops_its_partitions_and_reads_on_without_an_error(
        shared_broker, caplog):
    url = shared_broker.url
    gone, kept, group = topics_to_delete(url)
    caplog.set_level(logging.WARNING, logger="plinth.client")
    revoked = []
    with Consumer(gone, kept, broker=url, group=group, auto_offset_reset="earliest",
                  session_timeout_ms=SESSION_MS, auto_commit_interval_ms=200,
                  on_revoke=revoked.append) as consumer, Admin(broker=url) as admin:
        # Given a member of both topics that read and committed the one to be deleted
        assert sorted(polled_values_of(consumer, 4)) == [b"g0", b"g1", b"g2", b"g3"]
        wait_until(lambda: consumer.poll(timeout_ms=100) == {} and len(consumer.assignment()) == 3)
        consumer.commit()
        # When the topic is deleted / Then no poll raises, and its partitions go from
        # the member, revoked, by the coordinator's next assignment
        admin.delete_topic(gone)
        wait_until(lambda: consumer.poll(timeout_ms=100) == {} and
                   consumer.assignment() == {(kept, 0)}, timeout_s=30)
        assert revoked == [{(gone, 0), (gone, 1)}]
        assert [m.assignment for m in admin.describe_group(group).members] == [{(kept, 0)}]
        # And the member reads and commits its other topic on
        with Producer(broker=url) as producer:
            producer.send(kept, b"k0").get(timeout=30)
        assert polled_values_of(consumer, 1) == [b"k0"]
        consumer.commit()
        assert admin.describe_group(group).committed == {(kept, 0): 1}
        # And when the topic is created again, the member, still subscribed to it, reads
        # it from auto_offset_reset (the old offsets went with the old topic)
        admin.create_topic(gone, 2)
        with Producer(broker=url) as producer:
            for n in range(2):
                producer.send(gone, b"new%d" % n, partition=n).get(timeout=30)
        assert sorted(polled_values_of(consumer, 2)) == [b"new0", b"new1"]
        assert consumer.assignment() == {(gone, 0), (gone, 1), (kept, 0)}
    # And the deletion was warned of once, and no fetch of it was "retried until it succeeds"
    said_gone, retried = gone_warnings(caplog, gone)
    assert len(said_gone) == 1 and retried == []


def test_an_aio_member_whose_topic_is_deleted_drops_its_partitions_without_an_error(
        shared_broker, caplog):
    url = shared_broker.url
    gone, kept, group = topics_to_delete(url)
    caplog.set_level(logging.WARNING, logger="plinth.client")

    async def scenario():
        consumer = AIOConsumer(gone, kept, broker=url, group=group, auto_offset_reset="earliest",
                               session_timeout_ms=SESSION_MS)
        await consumer.start()
        try:
            got = []
            while len(got) < 4:
                got += [r for rs in (await consumer.getmany(timeout_ms=100)).values() for r in rs]
            with Admin(broker=url) as admin:
                admin.delete_topic(gone)
            deadline_s = time.monotonic() + 30
            while consumer.assignment() != {(kept, 0)} and time.monotonic() < deadline_s:
                await consumer.getmany(timeout_ms=100)   # never raises
            return consumer.assignment()
        finally:
            await consumer.stop()

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == {(kept, 0)}
    said_gone, retried = gone_warnings(caplog, gone)
    assert len(said_gone) == 1 and retried == []


def test_an_assigned_partition_of_a_deleted_topic_stays_assigned_without_an_error(
        shared_broker):
    url = shared_broker.url
    gone, _, _ = topics_to_delete(url)
    with Consumer(broker=url, auto_offset_reset="earliest") as consumer:
        # Given a consumer that assign()ed a partition and read it
        consumer.assign([(gone, 0)])
        assert polled_values_of(consumer, 2) == [b"g0", b"g2"]
        # When its topic is deleted / Then its polls raise nothing, and it stays
        # assigned, failing with the deletion (as kafka-python keeps it)
        with Admin(broker=url) as admin:
            admin.delete_topic(gone)
        wait_until(lambda: consumer.poll(timeout_ms=100) == {} and
                   type(consumer.fetch_errors().get((gone, 0))).__name__ == "UnknownTopicError")
        assert consumer.assignment() == {(gone, 0)} and consumer.position(gone, 0) == 2


def sole_member(url: str, topic: str, group: str) -> Consumer:
    """A member without auto-commit, once it owns every partition of ``topic``; the
    caller closes it."""
    consumer = Consumer(topic, broker=url, group=group, enable_auto_commit=False,
                        session_timeout_ms=SESSION_MS)
    try:
        wait_until(lambda: consumer.poll(timeout_ms=100) == {} and
                   len(consumer.assignment()) == PARTITIONS)
    except BaseException:
        consumer.close()
        raise
    return consumer


def test_a_commit_of_kafka_pythons_offset_and_metadata_stores_the_metadata_with_the_offset(
        shared_broker):
    from kafka.structs import OffsetAndMetadata, TopicPartition as KafkaTopicPartition
    url = shared_broker.url
    topic, group = topic_and_group(url)
    with sole_member(url, topic, group) as consumer:
        # When a member commits as kafka-python's and aiokafka's commit() are called
        consumer.commit({KafkaTopicPartition(topic, 0): OffsetAndMetadata(0, "note", -1),
                         (topic, 1): (0, None)})
    # Then the coordinator stored both offsets, and the metadata given, as a Kafka
    # client's OffsetFetch reads them
    conn = Connection(url)
    try:
        view, _ = conn.request_retrying(
            lambda request_id: protocol.encode_group_request(request_id, "fetchOffsets", group),
            30_000)
    finally:
        conn.close()
    assert view.committed == {(topic, 0): 0, (topic, 1): 0}
    assert view.committed_metadata == {(topic, 0): "note"}


def test_committed_with_metadata_answers_kafka_pythons_offset_and_metadata(shared_broker):
    from kafka.structs import TopicPartition as KafkaTopicPartition

    from plinth import OffsetAndMetadata
    url = shared_broker.url
    topic, group = topic_and_group(url)
    with sole_member(url, topic, group) as consumer:
        # Given a commit of partition 0 with metadata and of partition 1 without
        consumer.commit({(topic, 0): OffsetAndMetadata(0, "checkpoint 7"), (topic, 1): 0})
        tp0, tp1 = KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)
        # When committed() is asked as kafka-python asks it, by keyword and positionally
        # Then metadata=True answers the offset with its metadata (leader epoch not
        # stored), the default the offset alone, and a partition never committed None
        assert consumer.committed(tp0, metadata=True) == (0, "checkpoint 7", -1)
        assert consumer.committed(tp0, True).metadata == "checkpoint 7"
        assert consumer.committed(tp1, metadata=True, timeout_ms=10_000) == (0, "", -1)
        assert consumer.committed(tp0) == consumer.committed(topic, 0) == 0
        assert consumer.committed(KafkaTopicPartition(topic, 2), metadata=True) is None
        # And a wrong call is named
        with pytest.raises(TypeError, match="committed metadata"):
            consumer.committed(tp0, metadata="yes")
        with pytest.raises(ValueError, match="committed timeout_ms"):
            consumer.committed(tp0, timeout_ms=-5)
