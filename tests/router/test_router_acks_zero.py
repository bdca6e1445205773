"""router/router.py and router/requests_in_flight.py: acks=0 produces are counted.

A real Router between real client DEALERs and fake shards (tests/router/fakes.py).
The router sends an acks=0 produce to its shard as acks=1, with its client's
identity marked, and counts it under the marked identity until the shard answers:
its bytes are bounded as every other request's, its answer reaches the client
only if it is an error, and it never takes or frees a place in the client's own
count."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace

from plinth import limits, protocol
from plinth.errors import InvalidBatchError, TooManyRequestsError, UnavailableError
from plinth.router.requests_in_flight import is_marked
from tests.router.fakes import (answer, holding_shard_under_a_router_budget_of_three_batches,
                                send_one_maximal_produce_too_many)
from tests.support import wait_until


def fetch(request_id: int, topic: str = "t", partition: int = 0) -> bytes:
    return protocol.encode_fetch(request_id, topic, partition, 0, 1024, 0)


def in_flight_bytes(rig) -> int:
    return rig.router.memory_bytes()["requests_in_flight"][0]


def test_an_acks_zero_produce_goes_to_its_shard_as_acks_one_and_is_counted_until_answered(
        router_rig):
    # Given a shard that holds every request unanswered
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client, batch = rig.client(), bytes(1_000_000)
    # When a client sends an acks=0 produce of a 1 MB batch
    client.send(protocol.encode_produce(1, "t", 0, 0, 2), batch)
    # Then the shard gets it as acks=1 (so that it answers), its batch format kept,
    # under the client's marked identity
    [request] = shard.wait_for_requests(1)
    assert (request.request_id, request.acks, request.batch_format) == (1, 1, 2)
    assert is_marked(shard.received[0][0])
    # And the router holds its bytes against its budget until the shard answers (it
    # counts them on its loop thread just after sending: the test thread may look first)
    held = wait_until(lambda: in_flight_bytes(rig) or None, timeout_s=10)
    assert len(batch) < held < len(batch) + limits.HEADER_BYTES_MAX
    shard.release(1)
    wait_until(lambda: in_flight_bytes(rig) == 0, timeout_s=10)


def test_the_answer_to_an_acks_zero_produce_reaches_its_client_only_if_it_is_an_error(
        router_rig):
    # Given a shard that refuses produce 1's batch as corrupt and stores the others
    def handler(request):
        if request.request_id == 1:
            return [protocol.encode_error(1, InvalidBatchError("produce 1: not a batch"))]
        return answer(request, "shard-0")

    rig = router_rig(shards={"shard-0": {"handler": handler}}, topics={"t": 1})
    client = rig.client()
    # When a client sends acks=0 produces 1 (refused) and 2 (stored), then acks=1 produce 3
    client.send(protocol.encode_produce(1, "t", 0, 0), b"not a batch")
    client.send(protocol.encode_produce(2, "t", 0, 0), b"batch")
    client.send(protocol.encode_produce(3, "t", 0, 1), b"batch")
    # Then it hears of 1's error, and next of 3: the shard answered all three in order,
    # and 2's success, which an acks=0 producer does not wait for, was not relayed
    first, _ = client.recv()
    assert first.request_id == 1 and isinstance(first.error, InvalidBatchError)
    assert "produce 1: not a batch" in str(first.error)
    second, _ = client.recv()
    assert (second.request_id, second.error) == (3, None)
    assert [r.request_id for r in rig.shards["shard-0"].wait_for_requests(3)] == [1, 2, 3]


def test_acks_zero_produces_over_their_clients_request_bytes_are_refused_naming_the_limit(
        router_rig):
    # Given a shard that holds every request unanswered
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client, limit = rig.client(), limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX
    # When a client sends one maximal acks=0 produce more than fit its request bytes
    fit, batch, view = send_one_maximal_produce_too_many(client, acks=0)
    # Then the last one is refused at once, retriable, naming acks=0 produces and the limit
    assert view.request_id == fit + 1 and isinstance(view.error, TooManyRequestsError)
    assert "bytes of acks=0 produces in flight; with this one" in str(view.error)
    assert f"over its limit of {limit} bytes" in str(view.error)
    assert [r.request_id for r in shard.wait_for_requests(fit)] == list(range(1, fit + 1))
    # And once the shard has stored one, the client may send one more
    shard.release(1)
    wait_until(lambda: in_flight_bytes(rig) <= (fit - 1) * (len(batch) + limits.HEADER_BYTES_MAX),
               timeout_s=10)
    client.send(protocol.encode_produce(fit + 2, "t", 0, 0), batch)
    assert shard.wait_for_requests(fit + 1)[-1].request_id == fit + 2


def test_acks_zero_produces_count_toward_the_routers_request_bytes_of_every_client(
        router_rig, monkeypatch):
    # Given a router budget of three maximal batches (with their headers), and a shard
    # that holds every request unanswered
    rig, shard, batch, limit = holding_shard_under_a_router_budget_of_three_batches(
        router_rig, monkeypatch)
    producer, other = rig.client(), rig.client()
    # When one client has two maximal acks=0 produces at the shard
    for request_id in (1, 2):
        producer.send(protocol.encode_produce(request_id, "t", 0, 0), batch)
    shard.wait_for_requests(2)
    # Then another client's second maximal produce is refused, naming the router's limit
    for request_id in (1, 2):
        other.send(protocol.encode_produce(request_id, "t", 0, 1), batch)
    view, _ = other.recv()
    assert view.request_id == 2 and isinstance(view.error, TooManyRequestsError)
    assert "the router has" in str(view.error) and f"over its limit of {limit} bytes" in str(
        view.error)
    assert len(shard.wait_for_requests(3)) == 3


def test_acks_zero_produces_have_a_count_of_their_own_which_their_answers_free(router_rig):
    # Given two shards that hold every request unanswered: partition 0 on shard-0, 1 on shard-1
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "shard-1")})
    for shard in rig.shards.values():
        shard.holding = True
    counted, uncounted = rig.shards["shard-0"], rig.shards["shard-1"]
    client, limit = rig.client(), limits.CLIENT_REQUESTS_IN_FLIGHT_MAX
    # And a client with the most requests in flight, at shard-0
    for request_id in range(1, limit + 1):
        client.send(protocol.encode_produce(request_id, "t", 0, 1), b"batch")
    counted.wait_for_requests(limit)
    counted_bytes = in_flight_bytes(rig)
    # When it sends as many acks=0 produces to shard-1, and one more
    for request_id in range(limit + 1, 2 * limit + 2):
        client.send(protocol.encode_produce(request_id, "t", 1, 0), b"batch")
    # Then they all go but the last, which is refused, naming the acks=0 produces' count
    view, _ = client.recv()
    assert view.request_id == 2 * limit + 1 and isinstance(view.error, TooManyRequestsError)
    assert f"client has {limit} acks=0 produces in flight, the limit is {limit}" in str(view.error)
    assert len(uncounted.wait_for_requests(limit)) == limit
    # When shard-1 has stored them all
    uncounted.release(limit)
    wait_until(lambda: in_flight_bytes(rig) == counted_bytes, timeout_s=10)
    # Then the client's own count is still full: a fetch is refused, naming it
    view = client.request(fetch(2 * limit + 2, partition=1))
    assert isinstance(view.error, TooManyRequestsError)
    assert f"client has {limit} requests in flight, the limit is {limit}" in str(view.error)
    # And one reply to its own requests frees a place
    counted.release(1)
    assert client.recv()[0].request_id == 1
    client.send(fetch(2 * limit + 3, partition=1))
    assert uncounted.wait_for_requests(limit + 1)[-1].request_id == 2 * limit + 3


def test_acks_zero_produces_at_a_shard_whose_connection_drops_are_answered_unavailable(
        router_rig):
    # Given a shard holding a client's acks=0 produce and acks=1 produce unanswered
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client = rig.client()
    client.send(protocol.encode_produce(1, "t", 0, 0), b"batch")
    client.send(protocol.encode_produce(2, "t", 0, 1), b"batch")
    shard.wait_for_requests(2)
    # When the shard's process dies (its connection drops)
    shard.close()
    # Then both are answered unavailable at once, in order: the acks=0 one may be lost
    views = [client.recv()[0] for _ in range(2)]
    assert [view.request_id for view in views] == [1, 2]
    assert all(isinstance(view.error, UnavailableError) and
               "may or may not have been applied" in str(view.error) for view in views)
    # And the router holds none of their bytes any more
    assert in_flight_bytes(rig) == 0


def kafka_batch(body_bytes: int) -> bytes:
    """A frame the listener takes as one Kafka RecordBatch: its batchLength matches."""
    return bytes(8) + struct.pack(">i", body_bytes) + bytes(body_bytes)


def test_a_kafka_acks_zero_produce_is_asked_as_acks_one_awaited_and_gets_no_response(router_rig):
    from plinth.router.kafka.api_produce import produce
    from plinth.router.kafka.backend import PlinthBackend

    # Given a shard that holds every request unanswered, and the Kafka listener's backend
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    records = kafka_batch(1_000_000)
    body = {"acks": 0, "topic_data": [{"name": "t", "partition_data": [
        {"index": 0, "records": records}]}]}

    async def produce_acks_zero():
        backend = PlinthBackend(rig.url)
        try:
            producing = asyncio.ensure_future(produce(
                SimpleNamespace(backend=backend), SimpleNamespace(api_version=9, client_id="k"),
                body, None))
            # The shard gets it as acks=1 under the backend's own identity (not marked:
            # the listener's bounds on the connection hold its next requests back), and
            # the handler waits for its answer
            [request] = await asyncio.to_thread(shard.wait_for_requests, 1)
            assert request.acks == 1 and not is_marked(shard.received[0][0])
            assert len(records) < in_flight_bytes(rig) < len(records) + limits.HEADER_BYTES_MAX
            assert not producing.done()
            shard.release(1)
            return await asyncio.wait_for(producing, 10)
        finally:
            backend.close()

    # When a Kafka client produces with acks=0 / Then the listener gives it no response,
    # once the shard has stored it, and the router holds nothing more
    assert asyncio.run(produce_acks_zero()) is None
    wait_until(lambda: in_flight_bytes(rig) == 0, timeout_s=10)
