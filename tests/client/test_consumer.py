"""The consumer against a scripted broker (tests/client/scripted_broker.py), so its
handling of each answer is checked exactly (no Ray, no shards)."""

from __future__ import annotations

import time

import pytest

from plinth import Consumer, limits, protocol
from plinth.client.record_batch import BatchBuilder
from plinth.errors import CorruptDataError, TooManyRequestsError, UnavailableError
from plinth.shards.log_entry import build_entry_header


def fetched(base_offset: int, values: list[bytes], high_watermark: int):
    """A script step: answer the fetch with one log entry holding ``values``."""
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, 1_700_000_000_000, None)
    batch = builder.build()
    entry = build_entry_header(base_offset, 1_700_000_000_000, len(values), batch) + batch
    return lambda view: [protocol.encode_fetch_reply(view.request_id, high_watermark, 0), entry]


def consumer_of(broker) -> Consumer:
    consumer = Consumer(broker=broker.url, fetch_max_wait_ms=100, request_timeout_ms=5_000)
    consumer.assign([("t", 0)])
    consumer.seek("t", 0, 0)
    return consumer


def poll_until(consumer: Consumer, count: int, timeout_s: float = 10) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records += [r for rs in consumer.poll(200).values() for r in rs]
    return records


def test_transient_fetch_errors_are_retried_after_a_backoff_and_never_raised(scripted):
    # Given a broker whose first answers are "unavailable" and "too many requests"
    broker = scripted([UnavailableError("shard-0 is restarting"),
                       TooManyRequestsError("queue full"),
                       fetched(0, [b"a", b"b"], 2)])
    with consumer_of(broker) as consumer:
        # When the consumer polls / Then it gets the records, without an error
        assert [r.value for r in poll_until(consumer, 2)] == [b"a", b"b"]
    # And it asked again each time, from the same offset, after at least the backoff
    arrivals = [t for t, _ in broker.requests[:3]]
    assert [view.offset for _, view in broker.requests[:3]] == [0, 0, 0]
    backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
    assert all(later - earlier >= backoff_s * 0.9 for earlier, later in zip(arrivals, arrivals[1:]))


def test_a_non_transient_fetch_error_is_raised_to_the_application(scripted):
    broker = scripted([CorruptDataError("entry at offset 0 fails its CRC")])
    with consumer_of(broker) as consumer:
        with pytest.raises(CorruptDataError, match="fails its CRC"):
            poll_until(consumer, 1)


def test_the_retry_backoff_doubles_while_transient_errors_go_on(scripted):
    # Given a broker that answers "unavailable" five times, then with records
    broker = scripted([UnavailableError("shard-0 is down")] * 5 + [fetched(0, [b"a"], 1)])
    with consumer_of(broker) as consumer:
        assert [r.value for r in poll_until(consumer, 1)] == [b"a"]
    # Then the gaps between its fetches grow (50, 100, 200, 400, 800 ms, within bounds)
    arrivals = [t for t, _ in broker.requests[:6]]
    gaps_s = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    base_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
    assert all(gap >= base_s * 2 ** i * 0.9 for i, gap in enumerate(gaps_s)), gaps_s
    assert max(gaps_s) < limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000 + 0.5, gaps_s
