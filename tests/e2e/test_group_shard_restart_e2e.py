"""A consumer group whose coordinating shard actor is SIGKILLed and restarted by Ray:
real Ray, real sockets, real disks.

The broker is embedded (its own Ray), so its shards listen on ipc:// (the default
internal hop), as a user's ``plinth serve`` does: a restarted shard binds its old
address, and the router reconnects within ZeroMQ's reconnect interval (100 ms) and
forwards requests to it while its partitions are still reopening (shard_server.py,
"Restarts"; before, ~100 of the probe's commits were refused as "unknown topic"
there in this test). On a broker
joined to the tests' Ray the hop is TCP on a new port, which routers learn only
once the shard has recovered, so that window cannot be seen there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from plinth import Admin, Consumer, Producer, protocol
from plinth.client.connection import Connection, broker_address
from plinth.errors import PlinthError, UnavailableError
from tests.conftest import Broker
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until

PARTITIONS = 6
RECORDS_PER_PARTITION = 50
# Partitions of another topic: each takes its restarted shard a millisecond or more to
# reopen, so that its recovery outlasts a router's reconnection (ZeroMQ retries every
# 100 ms) many times over, and the probe's commits reach it during the recovery.
BULK_PARTITIONS = 1000
RESTART_WAIT_S = 60
PROBE_TIMEOUT_MS = 5_000
PROBE_PACE_S = 0.005


def produce(url: str, topic: str, tag: bytes) -> None:
    with Producer(broker=url) as producer:
        futures = [producer.send(topic, tag, partition=p)
                   for p in range(PARTITIONS) for _ in range(RECORDS_PER_PARTITION)]
        for future in futures:
            future.get(timeout=30)


class CommitProbe:
    """Commits offsets of a group without members (as a member's commit of its lost
    partitions is), one request at a time with no retry, every few ms, from a thread
    of its own, and keeps every answer: None for a commit taken, else the error."""

    def __init__(self, url: str, group: str, topic: str):
        self._conn = Connection(broker_address(url))
        self._group, self._topic = group, topic
        self._stop = threading.Event()
        self.answers: list[PlinthError | None] = []
        self._thread = threading.Thread(target=self._run, name="commit-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        while not self._stop.is_set():
            offset += 1
            request_id = self._conn.next_request_id()
            header = protocol.encode_commit_offsets(request_id, "resetOffsets", self._group,
                                                    "", 0, {(self._topic, 0): offset})
            try:
                self._conn.request(header, request_id, PROBE_TIMEOUT_MS)
                self.answers.append(None)
            except PlinthError as exc:
                self.answers.append(exc)
            self._stop.wait(PROBE_PACE_S)   # pacing: the shard recovering needs the CPU

    def taken_after(self, answers_seen: int) -> bool:
        return None in self.answers[answers_seen:]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT_MS / 1000 + 5)
        self._conn.close()


def committed(consumer: Consumer, topic: str) -> list[int | None]:
    return [consumer.committed(topic, p) for p in range(PARTITIONS)]


def test_commits_reaching_a_restarted_coordinator_before_it_recovered_are_told_to_retry_not_unknown_topic(
        tmp_path, caplog):
    # Given an embedded one-shard broker (the shard coordinates every group), a topic
    # with records, and a member of group g that has read and committed them all
    broker = Broker(tmp_path / "data", None, shards=1).start()
    caplog.set_level(logging.WARNING, logger="plinth.client")
    probe = None
    try:
        topic, group = unique_topic("grp-restart"), unique_topic("g")
        with Admin(broker=broker.url) as admin:
            admin.create_topic(topic, PARTITIONS)
            admin.create_topic(unique_topic("bulk"), BULK_PARTITIONS)
        produce(broker.url, topic, b"before")
        with Consumer(topic, group=group, broker=broker.url, auto_offset_reset="earliest",
                      enable_auto_commit=True, auto_commit_interval_ms=100,
                      request_timeout_ms=30_000, fetch_max_wait_ms=200) as consumer:
            values: list[bytes] = []

            def poll() -> None:
                values.extend(r.value for rs in consumer.poll(100).values() for r in rs)

            wait_until(lambda: poll() or len(values) >= PARTITIONS * RECORDS_PER_PARTITION,
                       timeout_s=RESTART_WAIT_S)
            wait_until(lambda: poll() or all(committed(consumer, topic)), timeout_s=30)
            before = committed(consumer, topic)
            # And commits of a group without members, one after the other
            probe = CommitProbe(broker.url, unique_topic("probe"), topic)
            wait_until(lambda: probe.taken_after(0), timeout_s=30)
            # When the shard's process is SIGKILLed and Ray restarts it
            pid = wait_until(lambda: shard_pids(broker.data_dir).get("shard-0"), timeout_s=30)
            answers_before_kill = len(probe.answers)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: poll() or shard_pids(broker.data_dir).get("shard-0", pid) != pid,
                       timeout_s=RESTART_WAIT_S)
            # Then the commits are taken again once it has recovered
            wait_until(lambda: poll() or probe.taken_after(answers_before_kill),
                       timeout_s=RESTART_WAIT_S)
            probe.stop()
            refused = [a for a in probe.answers[answers_before_kill:] if a is not None]
            # And those that reached it before were told to retry, naming the shard
            # and its recovery; none was refused as an unknown topic
            assert [str(a) for a in refused if not isinstance(a, UnavailableError)] == []
            assert any("shard-0 is recovering after a restart" in str(a) for a in refused), \
                [str(a) for a in refused]
            # And the member reads what is written after the restart, and commits it,
            # its committed offsets never going back
            produce(broker.url, topic, b"after")
            wait_until(lambda: poll() or values.count(b"after") >= PARTITIONS *
                       RECORDS_PER_PARTITION, timeout_s=RESTART_WAIT_S)
            end = 2 * RECORDS_PER_PARTITION
            wait_until(lambda: poll() or committed(consumer, topic) == [end] * PARTITIONS,
                       timeout_s=30)
        assert all(offset >= RECORDS_PER_PARTITION for offset in before), before
        # And no commit of the member's was refused as an unknown topic
        assert [r.getMessage() for r in caplog.records if "unknown topic" in r.getMessage()] == []
    finally:
        if probe is not None:
            probe.stop()
        broker.stop()
