"""Bounded memory on the client: a producer faster than the broker blocks up to
max_block_ms once buffer_memory is full, then raises; it never buffers without bound."""

from __future__ import annotations

import time

import pytest

from plinth import Admin, Producer
from plinth.errors import PlinthTimeoutError
from tests.support import unique_topic


def test_a_producer_blocks_for_max_block_ms_when_its_buffer_is_full_then_raises(broker_factory):
    # Through the router only: killing `plinth serve` ends the router at once, while
    # a shard the client could reach directly lives on until Ray notices its owner
    # died, and went on acknowledging the 1 MB below on a slow CI day.
    broker = broker_factory(shards=1, extra_args=("--direct-clients", "off"))
    topic = unique_topic("bp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    producer = Producer(broker=broker.url, buffer_memory=100_000, max_block_ms=300,
                        request_timeout_ms=60_000, delivery_timeout_ms=120_000)
    try:
        producer.send(topic, b"first").get(30)   # metadata cached, broker known to work
        broker.kill()                            # now nothing is acknowledged any more
        value = b"v" * 1_000
        with pytest.raises(PlinthTimeoutError, match="buffer_memory=100000"):
            for _ in range(1_000):               # 1 MB: ten times the buffer
                started = time.monotonic()
                producer.send(topic, value)
        blocked_s = time.monotonic() - started
        assert 0.3 <= blocked_s < 5, blocked_s
    finally:
        producer.close(timeout=0.5)   # the broker is gone: don't wait for it


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_client_that_never_reads_its_fetch_replies_cannot_make_the_router_hold_them(broker_factory):
    import zmq

    from plinth import Consumer, limits, protocol

    # Given a partition holding 4 MiB, so each fetch from offset 0 answers 4 MiB
    broker = broker_factory(shards=1)
    topic = unique_topic("bp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=broker.url, batch_bytes_max=1 << 20, linger_ms=50) as producer:
        for _ in range(4):
            producer.send(topic, b"v" * 1_000_000, partition=0)
    reply_bytes = 4 * 1_000_000
    # And a client whose connection stops draining: a one-message receive queue, a
    # small kernel buffer, and it never calls recv while it sends 150 fetches
    stalled = zmq.Context.instance().socket(zmq.DEALER)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 64 * 1024)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.connect(broker.url)
    rss_before = rss_bytes(broker.proc.pid)
    fetches = 150
    for request_id in range(fetches):
        stalled.send(protocol.encode_fetch(request_id, topic, 0, 0, reply_bytes + 1024, 0))
    try:
        # Then another client is served as usual meanwhile (after the stalled one's
        # fetches are answered: this consumer reads the same partition)
        with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=3_000) as consumer:
            assert sum(1 for _ in consumer) == 4
        # And the router holds at most its per-client budget (plus one reply) for the
        # stalled client, where it would otherwise hold all 150 replies (600 MB)
        held_bytes = rss_bytes(broker.proc.pid) - rss_before
        assert held_bytes < limits.CLIENT_REPLY_BYTES_UNSENT_MAX + 100 * 1024 * 1024, held_bytes
        # And when the client reads at last, the fetches past its fetch bytes in flight
        # and the replies over its unsent budget are errors saying why, the rest data
        data, refused = 0, []
        while stalled.poll(3_000):
            frames = stalled.recv_multipart()
            reply = protocol.decode_reply(frames[0])
            if reply.error is None:
                data += 1
            else:
                refused.append(str(reply.error))
        assert data + len(refused) == fetches
        assert data <= limits.CLIENT_REPLY_BYTES_UNSENT_MAX // reply_bytes + 4, data
        assert any("not reading them" in why and "per client" in why for why in refused)
        assert any("fetches asking for" in why and
                   str(limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX) in why for why in refused)
    finally:
        stalled.close()


def test_a_producer_at_its_largest_batches_and_buffer_never_meets_the_router_s_bytes_bound(
        broker_factory):
    import urllib.request

    from plinth import limits
    from tests.support import free_port

    # Given a broker reached through its router only, its metrics on
    port = free_port()
    broker = broker_factory(shards=1, extra_args=("--direct-clients", "off",
                                                  "--metrics-port", str(port)))
    topic = unique_topic("bp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    # When a producer at the largest batches, buffer and in-flight window sends
    # 160 MiB, more than its client's request bytes in flight at the router
    value = b"v" * (1024 * 1024)
    with Producer(broker=broker.url, batch_bytes_max=limits.BATCH_BYTES_MAX,
                  buffer_memory=limits.PRODUCER_BUFFER_BYTES_MAX, linger_ms=1_000,
                  max_in_flight_requests_per_connection=limits.PRODUCER_REQUESTS_IN_FLIGHT_MAX
                  ) as producer:
        futures = [producer.send(topic, value, partition=0) for _ in range(160)]
        producer.flush()
        assert [f.get(60).offset for f in futures] == list(range(160))
    # Then the router refused none of its requests for their bytes (nor their count)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    refused = [line for line in text.splitlines()
               if line.startswith("plinth_errors_total{") and 'code="tooManyRequests"' in line]
    assert refused == [] or all(line.endswith(" 0.0") for line in refused), refused


def test_a_client_that_sends_large_produces_and_never_reads_cannot_make_the_router_hold_them(
        broker_factory):
    import zmq

    from plinth import limits, protocol
    from plinth.format.record_batch import BatchBuilder

    # Given a broker reached through its router only, and a batch of 15 MiB
    broker = broker_factory(shards=1, extra_args=("--direct-clients", "off"))
    topic = unique_topic("bp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    builder = BatchBuilder()
    for _ in range(15):
        builder.append(None, b"v" * (1024 * 1024 - 200), int(time.time() * 1000), None)
    batch = builder.build()
    # When a raw client sends 64 produces of it (960 MiB; its 256 requests in
    # flight would allow them all) and reads no reply meanwhile
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.RCVHWM, 1)
    raw.setsockopt(zmq.RCVBUF, 64 * 1024)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(broker.url)
    try:
        rss_before = peak = rss_bytes(broker.proc.pid)
        for request_id in range(64):
            raw.send_multipart([protocol.encode_produce(request_id, topic, 0, 1), batch])
            peak = max(peak, rss_bytes(broker.proc.pid))
        settle_until_s = time.monotonic() + 5
        while time.monotonic() < settle_until_s:
            peak = max(peak, rss_bytes(broker.proc.pid))
            time.sleep(0.02)
        # Then the router held at most its client's request bytes in flight (and
        # some working memory), where it held 500 MiB before the bound
        held_bytes = peak - rss_before
        assert held_bytes < limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX + 100 * 1024 * 1024, held_bytes
        # And the produces over that bound were refused at once, naming it
        stored, refused = 0, []
        while raw.poll(3_000):
            reply = protocol.decode_reply(raw.recv_multipart()[0])
            if reply.error is None:
                stored += 1
            else:
                refused.append(str(reply.error))
        assert stored + len(refused) == 64 and refused, (stored, refused[:1])
        assert all("bytes of requests in flight" in why and
                   f"limit of {limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX} bytes" in why
                   for why in refused), refused[:1]
    finally:
        raw.close()
