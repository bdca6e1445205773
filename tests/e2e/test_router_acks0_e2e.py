"""acks=0 produces behind a stopped shard, through a real broker's router: the router
holds at most its client's request bytes of them (router/requests_in_flight.py) and
refuses the rest, where it once queued 1,000 per shard (16 GB of maximal batches)."""

from __future__ import annotations

import os
import signal
import time

import zmq

from plinth import Admin, Consumer, Producer, limits, protocol
from plinth.errors import TooManyRequestsError
from plinth.format.record_batch import BatchBuilder
from tests.e2e.test_backpressure_e2e import rss_bytes
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until

PRODUCES = 40
RECORDS_PER_BATCH = 15
RECORD_BYTES = 1024 * 1024 - 200           # a batch of 15 is just under 15 MiB
REPLIES_WAIT_S = 60.0


def batch_of(records: int) -> bytes:
    builder = BatchBuilder()
    for _ in range(records):
        builder.append(None, b"v" * RECORD_BYTES, int(time.time() * 1000), None)
    return builder.build()


def test_acks_zero_produces_to_a_stopped_shard_are_bounded_in_the_router_and_refused_beyond(
        broker_factory):
    # Given a broker reached through its router only, a topic on its one shard, and that
    # shard's process
    broker = broker_factory(shards=1, extra_args=("--direct-clients", "off"))
    topic = unique_topic("acks0")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    pid = wait_until(lambda: shard_pids(broker.data_dir).get("shard-0"), timeout_s=60)
    batch = batch_of(RECORDS_PER_BATCH)
    header_bytes = len(protocol.encode_produce(0, topic, 0, 1))
    fit = limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX // (len(batch) + header_bytes)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(broker.url)
    rss_before = peak = rss_bytes(broker.proc.pid)
    os.kill(pid, signal.SIGSTOP)
    try:
        # When the shard is stopped and a client sends 40 acks=0 produces of 15 MiB (600 MiB)
        for request_id in range(PRODUCES):
            raw.send_multipart([protocol.encode_produce(request_id, topic, 0, 0), batch])
        # Then the router holds no more than its client's request bytes of them (and some
        # working memory), where it queued all 600 MiB for the stopped shard before they
        # were counted
        replies = []
        deadline_s = time.monotonic() + REPLIES_WAIT_S
        while len(replies) < PRODUCES - fit and time.monotonic() < deadline_s:
            peak = max(peak, rss_bytes(broker.proc.pid))
            if raw.poll(20):
                replies.append(protocol.decode_reply(raw.recv_multipart()[0]))
        peak = max(peak, rss_bytes(broker.proc.pid))
        held_bytes = peak - rss_before
        assert held_bytes < limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX + 100 * 1024 * 1024, (
            f"the router's RSS grew from {rss_before} to {peak} bytes")
        # And those beyond that share were refused at once, naming it
        assert [view.request_id for view in replies] == list(range(fit, PRODUCES)), fit
        assert all(isinstance(view.error, TooManyRequestsError) and
                   "bytes of acks=0 produces in flight" in str(view.error) for view in replies)
    finally:
        os.kill(pid, signal.SIGCONT)
        raw.close()
    # When the shard runs again
    # Then the broker serves: a record produced with acks=1 is acknowledged
    with Producer(broker=broker.url, acks=1) as producer:
        producer.send(topic, b"after", partition=0).get(60)
    # And the acks=0 produces the router forwarded were stored, before it
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=10_000) as consumer:
        values = [record.value for record in consumer]
    assert len(values) == fit * RECORDS_PER_BATCH + 1
    assert values[-1] == b"after" and all(len(v) == RECORD_BYTES for v in values[:-1])
