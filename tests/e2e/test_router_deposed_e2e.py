"""A stopped leader no longer stalls a Kafka client's other partitions (tester T-rk's F1).

A Kafka client sees Plinth as one broker, so all its partitions share one connection,
answered in request order. When a leader shard is SIGSTOPped (alive to Ray, answering
nothing), the controller elects a new leader within seconds; the router then answers
the requests waiting at the stopped shard (router.py ``_answer_deposed``), so the
responses behind them on that connection go out. Before, they all waited for the
stopped shard's requests to time out (30 s) or for the shard to run again."""

from __future__ import annotations

import os
import signal
import threading
import time

from plinth import Admin
from tests.shard_processes import shard_pids
from tests.support import free_port, unique_topic, wait_until

STOP_S = 14.0            # longer than an election and a routing refresh (a few s) by far
WARM_UP_S = 3.0
SEND_INTERVAL_S = 0.02
HEALTHY_GAP_S_MAX = 8.0  # before: the whole stop (or 30 s, librdkafka's request timeout)


def test_a_stopped_leader_holds_a_kafka_producers_other_partitions_only_until_deposed(
        broker_factory):
    from confluent_kafka import Producer

    # Given a broker of three shards with a Kafka listener, a factor-2 topic, and a
    # partition of another topic led by a shard that is not the first topic's leader
    port = free_port()
    broker = broker_factory(shards=3, extra_args=(
        "--allow-replicas-on-one-node", "--kafka-listen", f"127.0.0.1:{port}"))
    replicated, other = unique_topic("dep"), unique_topic("healthy")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(replicated, 1, replication_factor=2)
        admin.create_topic(other, 3)
        leader = admin.describe_topic(replicated).partition_info[0].shard
        healthy = next(info.partition for info in admin.describe_topic(other).partition_info
                       if info.shard != leader)
    pid = wait_until(lambda: shard_pids(broker.data_dir).get(leader), timeout_s=60)
    # And one idempotent acks=all producer sending to both partitions (one connection)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5})
    acked_s: dict[str, list[float]] = {replicated: [], other: []}
    errors: list[str] = []
    lock = threading.Lock()

    def delivered(error, message) -> None:
        with lock:
            if error is not None:
                errors.append(str(error))
            else:
                acked_s[message.topic()].append(time.monotonic())

    def send_for(seconds: float) -> None:
        end_s = time.monotonic() + seconds
        while time.monotonic() < end_s:
            producer.produce(replicated, b"r", partition=0, on_delivery=delivered)
            producer.produce(other, b"h", partition=healthy, on_delivery=delivered)
            producer.poll(SEND_INTERVAL_S)

    send_for(WARM_UP_S)
    assert acked_s[other], "nothing acknowledged before the stop"
    # When the replicated topic's leader shard is stopped for STOP_S while both are sent to
    os.kill(pid, signal.SIGSTOP)
    stopped_s = time.monotonic()
    try:
        send_for(STOP_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert producer.flush(60) == 0
    producer = None   # (librdkafka's threads end now, not when the broker is gone)
    # Then the healthy partition's acknowledgements paused only until the leader was
    # deposed, not for the whole stop
    with lock:
        during = [at_s for at_s in acked_s[other] if at_s >= stopped_s]
        last_before_s = max(at_s for at_s in acked_s[other] if at_s < stopped_s)
    assert during, "the healthy partition had nothing acknowledged after the stop"
    longest_s = max(later - earlier for earlier, later in zip([last_before_s, *during], during))
    print(f"healthy partition: longest gap between acknowledgements {longest_s:.2f} s "
          f"during a {STOP_S} s stop of its producer's other partition's leader")
    assert longest_s < HEALTHY_GAP_S_MAX, f"acknowledgements paused {longest_s:.2f} s"
    # And nothing failed for good: the deposed leader's partition was retried
    assert errors == []
