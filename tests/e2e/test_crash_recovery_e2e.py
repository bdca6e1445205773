"""kill -9 of the whole server, or of one shard, while producing: no acknowledged record
is lost or duplicated."""

from __future__ import annotations

import os
import signal

from plinth import Admin
from tests.shard_processes import shard_pids
from tests.support import (NumberedWriter, check_exactly_once_in_order, read_all, unique_topic,
                           wait_until)

PARTITIONS = 3


def test_every_acknowledged_record_survives_kill_9_of_the_server_exactly_once_in_order(broker_factory):
    # Given a broker and an idempotent producer writing numbered records as fast as it can
    broker = broker_factory(shards=2)
    topic = unique_topic("crash")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    writer = NumberedWriter(broker.url, topic, PARTITIONS)
    # When the whole server is SIGKILLed once at least 2,000 records were acknowledged
    writer.wait_for_more(2_000)
    broker.kill()
    acked_at_kill = len(writer.acked)
    # And restarted on the same data directory while the producer keeps retrying
    broker.restart()
    writer.wait_for_more(2_000)
    writer.stop()
    # Then every acknowledged record is there exactly once, at its offset, in order
    records = read_all(broker.url, topic)
    check_exactly_once_in_order(records, writer.acked, PARTITIONS)
    # And the retries carried every record across the restart
    assert not writer.errors, writer.errors[:3]
    print(f"checked {len(writer.acked)} acknowledged records ({acked_at_kill} before kill -9) "
          f"of {len(records)} stored")


def test_a_pipelining_producer_keeps_every_acknowledged_record_once_in_order_across_a_shard_kill_9(
        broker_factory):
    # Given an idempotent producer with linger 0 writing numbered records over four
    # partitions in a steady stream: many small batches, several of a partition in
    # flight at once
    broker = broker_factory(shards=2)
    topic = unique_topic("pipeline")
    partitions = 4
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions)
    writer = NumberedWriter(broker.url, topic, partitions, linger_ms=0, chunk=1_000,
                            send_interval_s=0.000_1)
    writer.wait_for_more(2_000)
    # When one shard's process is SIGKILLed, and restarted by its supervisor
    pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 2 and found,
                      timeout_s=60)
    shard_id = sorted(pids)[0]
    os.kill(pids[shard_id], signal.SIGKILL)
    wait_until(lambda: shard_pids(broker.data_dir).get(shard_id, pids[shard_id])
               != pids[shard_id], timeout_s=60)
    writer.wait_for_more(2_000)
    writer.stop()
    # Then every acknowledged record is there exactly once, at its offset, in send
    # order per partition, and none failed
    records = read_all(broker.url, topic)
    check_exactly_once_in_order(records, writer.acked, partitions)
    assert not writer.errors, writer.errors[:3]
    # And the producer did pipeline: batches went while others of their partition
    # were in flight
    assert writer.pipelined_sends > 0
    print(f"checked {len(writer.acked)} acknowledged records of {len(records)} stored; "
          f"{writer.pipelined_sends} batches sent pipelined")


def test_a_consumer_keeps_reading_across_a_kill_9_and_restart_of_the_server(broker_factory):
    from plinth import Consumer, Producer

    broker = broker_factory(shards=1)
    topic = unique_topic("follow")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest", request_timeout_ms=2_000,
                  fetch_max_wait_ms=500) as consumer:
        with Producer(broker=broker.url) as producer:
            producer.send(topic, b"before").get(30)
        assert [r.value for rs in consumer.poll(timeout_ms=10_000).values() for r in rs] == [b"before"]
        consumer.poll(timeout_ms=200)   # a fetch is now parked at the log end
        broker.kill()
        broker.restart()
        with Producer(broker=broker.url) as producer:
            producer.send(topic, b"after").get(30)
        got = []
        for _ in range(30):   # bounded: each poll waits at most 1 s
            got += [r.value for rs in consumer.poll(timeout_ms=1_000).values() for r in rs]
            if got:
                break
    assert got == [b"after"]
