"""One acks=0 Producer sending as fast as it can, through a real ``plinth serve``
(real Ray, ZeroMQ, disk): its sender keeps each batch in its window of requests in
flight until the shard has answered (client/sender.py), so it never sends past the
bounds the router and shards keep for a client, and a flush returns once every
record it sent is stored. It once sent without bound: past the router's bounds
its produces were refused (tooManyRequests) or dropped and lost: 10,000 to 51,000 of
200,000 records in some 1,400 batches of 16 KiB, and a flush returned before the
shards had stored those they took."""

from __future__ import annotations

import pytest

from plinth import Admin, Producer
from tests.support import unique_topic

RECORDS = 200_000
PARTITIONS = 4
VALUE = b"v" * 100
# Small batches, sent at once: some 1,400 requests (200 times the 22 of 1 MiB batches),
# more than the router takes in flight from one client.
BATCH_BYTES = 16_384
FLUSH_TIMEOUT_S = 120


@pytest.mark.parametrize("direct_to_shards", [False, True], ids=["via-router", "direct"])
def test_a_fast_acks_0_producer_has_every_record_stored_once_its_flush_returns(
        shared_broker, direct_to_shards):
    # Given a topic of 4 partitions and an acks=0 producer of small batches, through
    # the router or straight to the shards
    topic = unique_topic("acks0")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
        with Producer(broker=shared_broker.url, acks=0, linger_ms=0,
                      batch_bytes_max=BATCH_BYTES,
                      direct_to_shards=direct_to_shards) as producer:
            # When it sends 200,000 small records over the 4 partitions as fast as it can,
            # and flushes
            futures = [producer.send(topic, VALUE, partition=i % PARTITIONS)
                       for i in range(RECORDS)]
            producer.flush(FLUSH_TIMEOUT_S)
            # Then every record's future completed with offset -1 (acks=0 promises nothing)
            assert {future.get(0).offset for future in futures[::1000]} == {-1}
            # And every record is stored by the time the flush returned
            end_offsets = [p.end_offset for p in admin.describe_topic(topic).partition_info]
        assert sum(end_offsets) == RECORDS, end_offsets
        assert end_offsets == [RECORDS // PARTITIONS] * PARTITIONS
