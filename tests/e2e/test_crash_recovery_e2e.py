"""kill -9 of the whole server while producing: no acknowledged record is lost."""

from __future__ import annotations

import threading

from plinth import Admin, Consumer, Producer
from tests.support import unique_topic, wait_until

PARTITIONS = 3


def produce_until_stopped(url: str, topic: str, acked: dict, stop: threading.Event,
                          errors: list) -> None:
    """Send numbered records; remember each one the broker acknowledged.

    The producer retries through the crash (idempotently), so records sent
    while the server is down are acknowledged once it is back.
    """
    seq = 0
    with Producer(broker=url, linger_ms=1, request_timeout_ms=2_000,
                  delivery_timeout_ms=120_000) as producer:
        while not stop.is_set():
            futures = [(n, producer.send(topic, b"%d" % n, partition=n % PARTITIONS))
                       for n in range(seq, seq + 200)]
            seq += 200
            for n, future in futures:
                try:
                    meta = future.get(timeout=150)
                except Exception as exc:   # not acknowledged: may or may not be stored
                    errors.append(exc)
                    continue
                acked[n] = (meta.partition, meta.offset)


def read_everything(url: str, topic: str) -> list:
    with Consumer(topic, broker=url, auto_offset_reset="earliest", consumer_timeout_ms=5_000) as c:
        return list(c)


def test_every_acknowledged_record_survives_kill_9_of_the_server_exactly_once_in_order(broker_factory):
    # Given a broker and a producer writing numbered records as fast as it can
    broker = broker_factory(shards=2)
    topic = unique_topic("crash")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    acked: dict[int, tuple[int, int]] = {}
    errors: list = []
    stop = threading.Event()
    writer = threading.Thread(target=produce_until_stopped,
                              args=(broker.url, topic, acked, stop, errors))
    writer.start()
    # When the whole server is SIGKILLed once at least 2,000 records were acknowledged
    wait_until(lambda: len(acked) >= 2_000, timeout_s=120)
    broker.kill()
    acked_at_kill = len(acked)
    # And restarted on the same data directory while the producer keeps retrying
    broker.restart()
    wait_until(lambda: len(acked) >= acked_at_kill + 2_000, timeout_s=120)
    stop.set()
    writer.join(180)
    assert not writer.is_alive()
    records = read_everything(broker.url, topic)
    # Then every acknowledged record is there exactly once, at the offset it was given
    seen = {}
    for r in records:
        n = int(r.value)
        assert n not in seen, f"record {n} appears twice"
        seen[n] = (r.partition, r.offset)
    missing = [n for n in acked if n not in seen]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    assert all(seen[n] == acked[n] for n in acked)
    # And within each partition the records are in the order they were sent
    for p in range(PARTITIONS):
        numbers = [int(r.value) for r in records if r.partition == p]
        assert numbers == sorted(numbers)
    assert not errors, errors[:3]   # the retries carried every record across the restart
    print(f"checked {len(acked)} acknowledged records ({acked_at_kill} before kill -9) "
          f"of {len(records)} stored")
