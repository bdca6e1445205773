"""A shard actor that dies is restarted by Ray and served again without a broker restart."""

from __future__ import annotations

import os
import signal

from plinth import Admin, Consumer, Producer
from plinth.errors import PlinthError
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until


def pids_of_both_shards(broker) -> dict[str, int]:
    return wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 2 and found,
                      timeout_s=60)


def restarted(broker, shard_id: str, old_pid: int) -> bool:
    # Missing while the shard is between processes.
    return shard_pids(broker.data_dir).get(shard_id, old_pid) != old_pid


def produce_one_to_each(url, topic, partitions, tag) -> bool:
    try:
        with Producer(broker=url, request_timeout_ms=2_000) as producer:
            for f in [producer.send(topic, tag, partition=p) for p in range(partitions)]:
                f.get(timeout=5)
        return True
    except PlinthError:
        return False


def broker_with_records(broker_factory):
    """A two-shard broker and a 4-partition topic with one record b"before" in each."""
    broker = broker_factory(shards=2)
    topic = unique_topic("sup")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 4)
    assert produce_one_to_each(broker.url, topic, 4, b"before")
    return broker, topic


def test_a_killed_shard_actor_is_restarted_recovers_its_logs_and_serves_again(broker_factory):
    # Given a broker whose two shards hold acknowledged records
    broker, topic = broker_with_records(broker_factory)
    pids = pids_of_both_shards(broker)
    # When one shard actor's process is SIGKILLed
    os.kill(pids["shard-0"], signal.SIGKILL)
    # Then Ray restarts it under a new process, and every partition takes writes again
    wait_until(lambda: restarted(broker, "shard-0", pids["shard-0"]), timeout_s=60)
    wait_until(lambda: produce_one_to_each(broker.url, topic, 4, b"after"), timeout_s=60)
    # And the records acknowledged before the kill are all still there
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=3_000) as consumer:
        values = [r.value for r in consumer]
    assert values.count(b"before") == 4 and values.count(b"after") >= 4


def test_a_consumer_reading_through_a_shard_restart_keeps_going_without_an_error(broker_factory):
    # Given a consumer that has read every record of a topic on two shards
    broker, topic = broker_with_records(broker_factory)
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  request_timeout_ms=2_000, fetch_max_wait_ms=500) as consumer:
        values = []
        wait_until(lambda: values.extend(r.value for rs in consumer.poll(200).values() for r in rs)
                   or len(values) == 4, timeout_s=30)
        # When a shard is killed while the consumer keeps polling (its fetches are lost
        # and asked again; whether the router answers "unavailable" in between depends
        # on timing, so tests/client/test_consumer.py checks that answer exactly)
        pids = pids_of_both_shards(broker)
        os.kill(pids["shard-0"], signal.SIGKILL)
        wait_until(lambda: consumer.poll(100) == {} and restarted(broker, "shard-0", pids["shard-0"]),
                   timeout_s=60)
        wait_until(lambda: produce_one_to_each(broker.url, topic, 4, b"after"), timeout_s=60)
        # Then the consumer, which never raised, gets the records written after the restart
        wait_until(lambda: values.extend(r.value for rs in consumer.poll(200).values() for r in rs)
                   or values.count(b"after") >= 4, timeout_s=60)
    assert values.count(b"before") == 4
