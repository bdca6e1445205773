"""Seek by time into object storage end to end (issue 14): a real ``plinth serve
--tier-url`` on moto's S3 server, a tiered topic whose older segments are only in the
store, and kafka-python's and Plinth's offsets_for_times: the exact record and its
timestamp, remote or local (shards/tier/remote_time_lookup.py)."""

from __future__ import annotations

import time

from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from tests.support import free_port, unique_topic, wait_until

RECORDS = 6_000
VALUE = b"x" * 1000   # 6 MB: six segments of 1 MiB, all but the active one in the store
T0_MS = (time.time_ns() // 1_000_000_000 - 3600) * 1000   # an hour ago, whole seconds
TIMEOUT_S = 120


def test_offsets_for_times_in_object_storage_answer_the_exact_record(broker_factory, moto_s3):
    from kafka import KafkaConsumer, TopicPartition

    # Given a tiered topic keeping nothing locally but its active segment, record i
    # stamped T0 + i ms
    port = free_port()
    broker = broker_factory(shards=1, extra_args=(
        "--tier-url", moto_s3.url(), "--kafka-listen", f"127.0.0.1:{port}"))
    topic = unique_topic("tiertime")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1, config={
            "remote.storage.enable": "true", "segment.bytes": str(1 << 20),
            "local.retention.bytes": "0"})
        with Producer(broker=broker.url, linger_ms=50) as producer:
            for i in range(RECORDS):
                producer.send(topic, VALUE, partition=0, timestamp_ms=T0_MS + i)
        local_start = wait_until(lambda: (lambda s: s if s > 3000 else None)(
            admin.list_offsets(topic, 0).local_start_offset), timeout_s=TIMEOUT_S)
    # When kafka-python and Plinth's consumer ask for the times of remote records, a
    # local one, and before every record
    asked = [0, 1500, 2999, local_start + 5]
    tp = TopicPartition(topic, 0)
    kafka = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", enable_auto_commit=False,
                          request_timeout_ms=TIMEOUT_S * 1000)
    try:
        kafka_found = {i: kafka.offsets_for_times({tp: T0_MS + i})[tp] for i in asked}
    finally:
        kafka.close()
    with Consumer(broker=broker.url) as consumer:
        plinth_found = {i: consumer.offsets_for_times({(topic, 0): T0_MS + i})[(topic, 0)]
                        for i in asked}
    # Then each is the record itself with its timestamp, not a segment's start
    assert {i: (f.offset, f.timestamp) for i, f in kafka_found.items()} == \
        {i: (i, T0_MS + i) for i in asked}
    assert {i: (f.offset, f.timestamp) for i, f in plinth_found.items()} == \
        {i: (i, T0_MS + i) for i in asked}
