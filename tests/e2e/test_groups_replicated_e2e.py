"""Replicated consumer groups through a real ``plinth serve`` (three shards on the session's
one Ray node, every topic and the committed offsets at factor 3): a group survives the loss
of its coordinator's shard, killed (Ray restarts it) or stopped for good, and its committed
offsets never go backwards."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from plinth import Admin, Consumer, Producer, topics
from plinth.errors import BrokerError, InvalidTopicError, PlinthTimeoutError
from tests.e2e.test_groups_e2e import (
    a_deleted_topics_offsets_are_forgotten,
    a_groups_deleted_offsets_are_read_again_from_the_reset_policy)
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until

REPLICATED = ("--allow-replicas-on-one-node", "--default-replication-factor", "3")
PARTITIONS = 2
SESSION_MS = 3000


class Member:
    """A group consumer polling on its own thread, keeping the values it got."""

    def __init__(self, url: str, topic: str, group: str):
        self.values: set[int] = set()
        self.again: list[int] = []   # values handed out a second time
        self._stop = threading.Event()
        self.consumer = Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                                 session_timeout_ms=SESSION_MS, auto_commit_interval_ms=200)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                got = [int(r.value) for r in records]
                self.again += [v for v in got if v in self.values]
                self.values.update(got)
        self.consumer.close()

    def stop(self):
        self._stop.set()
        self._thread.join(60)


class CommittedWatcher:
    """Reads the group's committed offsets every few tens of ms, as an outsider would."""

    def __init__(self, url: str, group: str):
        self.seen: list[dict] = []
        self._group = group
        self._admin = Admin(broker=url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.seen.append(dict(self._admin.describe_group(self._group).committed))
            except (BrokerError, PlinthTimeoutError):
                pass   # no coordinator for a moment: the failover under test
            self._stop.wait(0.03)

    def stop(self):
        self._stop.set()
        self._thread.join(60)
        self._admin.close()

    def went_backwards(self) -> list[str]:
        highest: dict = {}
        backwards = []
        for index, committed in enumerate(self.seen):
            for tp in set(committed) | set(highest):
                offset = committed.get(tp, -1)   # gone: as far back as it goes
                if offset < highest.get(tp, -1):
                    backwards.append(f"read {index}: {tp} at {offset} after {highest[tp]}")
                highest[tp] = max(highest.get(tp, -1), offset)
        return backwards


def produce(url: str, topic: str, start: int, count: int) -> None:
    with Producer(broker=url) as producer:
        for n in range(start, start + count):
            producer.send(topic, b"%d" % n, partition=n % PARTITIONS)
        producer.flush()


def committed_all(admin: Admin, group: str, topic: str, per_partition: int) -> bool:
    try:
        committed = admin.describe_group(group).committed
    except (BrokerError, PlinthTimeoutError):
        return False
    return all(committed.get((topic, p)) == per_partition for p in range(PARTITIONS))


def coordinator(admin: Admin, group: str):
    """The partition info of the group's slot in the internal topic (shard = its leader)."""
    slots = admin.describe_topic(topics.OFFSETS_TOPIC).partition_info
    return slots[topics.offsets_slot(group, len(slots))]


def group_in_the_same_slot(admin: Admin, group: str) -> str:
    slots = len(admin.describe_topic(topics.OFFSETS_TOPIC).partition_info)
    return next(name for name in (unique_topic("idle") for _ in range(1000))
                if topics.offsets_slot(name, slots) == topics.offsets_slot(group, slots))


def lose_coordinator_and_keep_consuming(broker, how: str) -> None:
    topic, group = unique_topic("rg"), unique_topic("rgrp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
        assert len(admin.describe_topic(topic).partition_info[0].replicas) == 3
        # Given a group without members, whose offsets only the broker keeps (a client's
        # own memory cannot put them back), coordinated by the same shard
        idle = group_in_the_same_slot(admin, group)
        idle_offsets = {(topic, 0): 40, (topic, 1): 60}
        admin.reset_group_offsets(idle, idle_offsets)
        # And a group that consumed and committed 100 records of each partition
        produce(broker.url, topic, 0, 200)
        member = Member(broker.url, topic, group)
        watcher = CommittedWatcher(broker.url, group)
        stopped_pid = None
        try:
            wait_until(lambda: committed_all(admin, group, topic, 100), timeout_s=60)
            before = coordinator(admin, group)
            assert sorted(before.in_sync_replicas) == ["shard-0", "shard-1", "shard-2"]
            pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 3 and found,
                              timeout_s=60)
            # When its coordinator's shard (the leader of its slot) is lost
            if how == "kill":
                os.kill(pids[before.shard], signal.SIGKILL)
            else:   # stopped for good: it neither answers nor restarts
                stopped_pid = pids[before.shard]
                os.kill(stopped_pid, signal.SIGSTOP)
            lost_at = time.monotonic()
            # Then the group goes on consuming at a new coordinator and commits new records
            # (nothing asks the controller meanwhile: a describe would wait on the stopped
            # shard)
            produce(broker.url, topic, 200, 200)
            wait_until(lambda: committed_all(admin, group, topic, 200), timeout_s=90)
            took_s = time.monotonic() - lost_at
            wait_until(lambda: member.values >= set(range(400)), timeout_s=30)
            # And the idle group's offsets are answered by the new coordinator
            assert admin.describe_group(idle).committed == idle_offsets
            # And its slot is in a newer leader epoch, led elsewhere if the old one is stopped
            after = coordinator(admin, group)
            assert after.leader_epoch > before.leader_epoch
            if how == "stop":
                assert after.shard != before.shard
        finally:
            if stopped_pid is not None:
                os.kill(stopped_pid, signal.SIGCONT)
            member.stop()
            watcher.stop()
    # And no read of its committed offsets ever went backwards, and the member, back in
    # the group, went on from them: it was handed no record a second time (it had
    # committed all it read before the loss)
    assert watcher.seen and not watcher.went_backwards(), watcher.went_backwards()[:5]
    assert member.again == [], sorted(member.again)[:10]
    print(f"{how}: slot leader {before.shard} -> {after.shard} (epoch {after.leader_epoch}) "
          f"new commits {took_s:.2f} s after; {len(watcher.seen)} reads of the committed offsets")


def test_a_group_keeps_consuming_and_its_offsets_never_go_back_when_its_coordinator_is_killed(
        broker_factory):
    broker = broker_factory(shards=3, extra_args=REPLICATED)
    lose_coordinator_and_keep_consuming(broker, "kill")


def test_a_group_moves_to_another_shard_when_its_coordinator_is_stopped_for_good(broker_factory):
    broker = broker_factory(shards=3, extra_args=REPLICATED)
    lose_coordinator_and_keep_consuming(broker, "stop")


def test_the_internal_topic_is_hidden_from_lists_described_and_refuses_writes_and_deletes(
        broker_factory):
    # Given a replicated broker
    broker = broker_factory(shards=3, extra_args=REPLICATED)
    with Admin(broker=broker.url) as admin:
        # Then the internal topic is described (a slot per shard, factor 3) but not listed
        info = admin.describe_topic(topics.OFFSETS_TOPIC)
        assert len(info.partition_info) == 3
        assert all(len(p.replicas) == 3 for p in info.partition_info)
        assert topics.OFFSETS_TOPIC not in admin.list_topics()
        # And users may neither delete nor create it, nor produce to it
        with pytest.raises(InvalidTopicError, match="__consumer_offsets' is internal"):
            admin.delete_topic(topics.OFFSETS_TOPIC)
        with pytest.raises(InvalidTopicError, match="is internal"):
            admin.create_topic(topics.OFFSETS_TOPIC, 1)
    with Producer(broker=broker.url) as producer:
        with pytest.raises(InvalidTopicError, match="may not produce to it"):
            producer.send(topics.OFFSETS_TOPIC, b"x", partition=0).get(timeout=60)


def test_deleting_a_topic_deletes_the_groups_committed_offsets_of_it_in_the_replicated_slots(
        broker_factory):
    # The offsets live in __consumer_offsets' partitions here: the tombstones are
    # appended there, replicated, as commits are
    broker = broker_factory(shards=3, extra_args=REPLICATED)
    a_deleted_topics_offsets_are_forgotten(broker.url)


def test_deleting_some_of_a_groups_offsets_in_the_replicated_slots_makes_them_read_again(
        broker_factory):
    # The tombstones are appended to the group's slot of __consumer_offsets, as commits are
    broker = broker_factory(shards=3, extra_args=REPLICATED)
    a_groups_deleted_offsets_are_read_again_from_the_reset_policy(broker.url)
