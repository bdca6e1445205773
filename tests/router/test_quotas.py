"""quotas.py: metering a key's bytes against its rate, and what it holds and for how
long, on a fake clock (the router's use of it, over real sockets, is in test_security.py)."""

from __future__ import annotations

import zmq

from plinth import limits, protocol
from plinth.router import reply_header
from plinth.router.acl import Acl, QuotaRates
from plinth.router.quotas import Quotas

KEY = "A" * 40
RATE = 1_000          # bytes/s
CLIENT = b"client-1"


class Clock:
    def __init__(self):
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def quotas_for(rates: QuotaRates) -> tuple[Quotas, Clock]:
    clock = Clock()
    return Quotas(Acl({KEY: ()}, {KEY: rates}), clock_s=clock), clock


def produce(request_id: int, payload_bytes: int, acks: int = 1) -> tuple[list, protocol.Request]:
    frames = [zmq.Frame(CLIENT), zmq.Frame(protocol.encode_produce(request_id, "t", 0, acks)),
              zmq.Frame(bytes(payload_bytes))]
    return frames, protocol.ProduceRequest(request_id, "t", 0, acks)


def produce_reply(request_id: int) -> list:
    return [zmq.Frame(CLIENT), zmq.Frame(protocol.encode_produce_reply(request_id, 0))]


def throttle_ms_of(frames: list) -> int:
    return protocol.decode_reply(frames[1].buffer).throttle_time_ms


def test_a_producer_within_its_quota_on_average_is_never_held():
    # Given a produce quota of 1,000 bytes/s
    quotas, clock = quotas_for(QuotaRates(producer_byte_rate=RATE))
    # When the client produces 500 bytes every 0.5 s for a minute
    held = 0
    for request_id in range(120):
        assert quotas.on_request(CLIENT, KEY, *produce(request_id, 500))
        held += quotas.on_reply("shard-0", produce_reply(request_id))
        clock.now_s += 0.5
    # Then no reply was held
    assert held == 0 and quotas.wait_ms() is None


def test_a_reply_over_the_quota_is_held_for_exactly_the_excess_and_says_so():
    # Given a client that produced 3 s worth of its quota at once
    quotas, clock = quotas_for(QuotaRates(producer_byte_rate=RATE))
    quotas.on_request(CLIENT, KEY, *produce(1, 3 * RATE))
    # When its reply comes back
    reply = produce_reply(1)
    assert quotas.on_reply("shard-0", reply)
    # Then it is held for its excess over the burst (3 s - 1 s), and says so
    assert throttle_ms_of(reply) == 3_000 - limits.QUOTA_BURST_MS
    clock.now_s += 1.999
    assert quotas.due() == []
    clock.now_s += 0.001
    assert quotas.due() == [("reply", "shard-0", reply)]


def test_no_hold_is_longer_than_the_longest_throttle_time():
    quotas, _ = quotas_for(QuotaRates(producer_byte_rate=RATE))
    quotas.on_request(CLIENT, KEY, *produce(1, 100 * RATE))
    reply = produce_reply(1)
    assert quotas.on_reply("shard-0", reply)
    assert throttle_ms_of(reply) == limits.QUOTA_THROTTLE_MS_MAX


def test_a_reply_never_overtakes_one_held_before_it():
    # Given a held reply
    quotas, clock = quotas_for(QuotaRates(producer_byte_rate=RATE))
    quotas.on_request(CLIENT, KEY, *produce(1, 3 * RATE))
    first = produce_reply(1)
    assert quotas.on_reply("shard-0", first)
    # When the next reply comes when the client is no longer over
    clock.now_s += 2.5
    second = produce_reply(2)
    # Then it is still held, behind the first (due but not yet taken)
    assert quotas.on_reply("shard-0", second)
    assert quotas.due() == [("reply", "shard-0", first), ("reply", "shard-0", second)]


def test_fetched_bytes_count_when_the_reply_passes_and_hold_the_next_fetch():
    # Given a fetch quota, and a fetch reply carrying 3 s worth of it
    quotas, clock = quotas_for(QuotaRates(consumer_byte_rate=RATE))
    fetch = protocol.FetchRequest(1, "t", 0, 0, 1024, 0)
    fetch_frames = [zmq.Frame(CLIENT), zmq.Frame(b"header")]
    assert quotas.on_request(CLIENT, KEY, fetch_frames, fetch)
    reply = [zmq.Frame(CLIENT), zmq.Frame(protocol.encode_fetch_reply(1, 0, 0)),
             zmq.Frame(bytes(3 * RATE))]
    # Then the reply passes at once, saying how long the next fetch waits
    assert not quotas.on_reply("shard-0", reply)
    assert throttle_ms_of(reply) == 2_000
    # And the next fetch is held that long
    assert not quotas.on_request(CLIENT, KEY, fetch_frames, fetch)
    clock.now_s += 2.0
    assert quotas.due() == [("request", fetch_frames, fetch)]


def test_a_fetch_asks_for_at_most_a_bursts_worth_of_the_quota():
    quotas, _ = quotas_for(QuotaRates(consumer_byte_rate=RATE))
    burst_bytes = RATE * limits.QUOTA_BURST_MS // 1000
    for asked, sent in ((4 * 1024 * 1024, burst_bytes), (0, burst_bytes), (100, 100)):
        fetch = protocol.FetchRequest(1, "t", 0, 7, asked, 500)
        frames = [zmq.Frame(CLIENT), zmq.Frame(protocol.encode_fetch(1, "t", 0, 7, asked, 500))]
        assert quotas.on_request(CLIENT, KEY, frames, fetch)
        assert protocol.decode_request(frames[1].buffer) == protocol.FetchRequest(1, "t", 0, 7, sent, 500)


def test_clients_without_a_quota_pass_untouched():
    quotas, _ = quotas_for(QuotaRates(producer_byte_rate=RATE))
    assert quotas.on_request(b"other", "B" * 40, *produce(1, 100 * RATE))
    reply = [zmq.Frame(b"other"), zmq.Frame(protocol.encode_produce_reply(1, 0))]
    assert not quotas.on_reply("shard-0", reply)
    assert throttle_ms_of(reply) == 0


def test_the_throttle_time_is_written_only_into_a_canonical_reply_header():
    # A hand-packed produce reply and a pycapnp one both take it
    for header in (protocol.encode_produce_reply(5, 42),
                   protocol.encode_committed_reply(5, {("t", 0): 1})):
        view = protocol.decode_reply(reply_header.with_throttle_time(header, 1234))
        assert (view.request_id, view.throttle_time_ms) == (5, 1234)
    assert reply_header.kind_code(protocol.encode_committed_reply(5, {})) == reply_header.COMMITTED
    # Any other shape is left alone
    for other in (b"", b"\x01" + bytes(63), protocol.encode_produce_reply(5, 42)[:-8]):
        assert reply_header.with_throttle_time(other, 1) is None
        assert reply_header.kind_code(other) is None
