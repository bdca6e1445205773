"""router/kafka/backend.py against a real ROUTER socket on loopback: one that has
stopped reading (a hung router), where a call's timeout covers its send, so a Kafka
request is answered REQUEST_TIMED_OUT instead of held for good; and one that sees
changes and queries come from two clients."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
import zmq.asyncio

from plinth import limits, protocol
from plinth.errors import PlinthTimeoutError
from plinth.router.kafka.backend import PlinthBackend, ask, ask_change, change_deadline_s

FILL_MAX = 100_000   # sends tried before the queue to the router must be full


@pytest.mark.timeout(120)
def test_a_call_to_a_router_that_stopped_reading_times_out_instead_of_waiting_to_send():
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.setsockopt(zmq.RCVHWM, 1)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    backend = PlinthBackend(f"tcp://127.0.0.1:{port}")

    async def scenario():
        # Given a queue to the router filled by requests sent past the backend's calls
        # (which would each take a slot of its semaphore)
        payload = b"x" * 65_536
        for request_id in range(1, FILL_MAX):
            try:
                await asyncio.wait_for(backend._socket().send_multipart(
                    [protocol.encode_list_offsets(request_id, "t", 0), payload], copy=False),
                    0.5)
            except asyncio.TimeoutError:
                break
        else:
            raise AssertionError(f"{FILL_MAX} sends and the queue is not full")
        # When a request waits to be sent / Then its timeout ends the wait
        with pytest.raises(PlinthTimeoutError, match="no reply from the router at .* within "
                                                     "300 ms"):
            await backend.call(FILL_MAX, protocol.encode_list_offsets(FILL_MAX, "t", 0),
                               timeout_ms=300)

    try:
        asyncio.run(scenario())
    finally:
        backend.close()
        silent.close()
        context.term()


@pytest.fixture
def backend_and_router():
    """(a PlinthBackend, the asyncio ROUTER on loopback it talks to), closed after."""
    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    backend = PlinthBackend(f"tcp://127.0.0.1:{port}")
    yield backend, router
    backend.close()
    router.close()
    context.term()


def test_changes_reach_the_router_as_a_client_of_their_own(backend_and_router):
    # The router answers each client's admin requests one after another: a Kafka
    # change waiting for a stopped shard must not hold another connection's Metadata.
    backend, router = backend_and_router

    async def scenario():
        # When a change is sent, then a query, and the router answers only the query
        change = asyncio.create_task(ask_change(
            backend, change_deadline_s(), protocol.encode_topic_request, "deleteTopic", "t"))
        query = asyncio.create_task(ask(backend, lambda rid: protocol.encode_metadata(rid, [])))
        received = [await asyncio.wait_for(router.recv_multipart(), 10) for _ in range(2)]
        by_kind = {protocol.decode_request(frames[1]).kind: frames for frames in received}
        # Then they came from two clients, the change carrying its time left
        assert by_kind["deleteTopic"][0] != by_kind["metadata"][0]
        assert 0 < protocol.decode_request(by_kind["deleteTopic"][1]).timeout_ms \
            <= limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS
        # And the query is answered while the change still waits
        identity, header = by_kind["metadata"]
        await router.send_multipart([identity, protocol.encode_ok(
            protocol.decode_request(header).request_id)])
        reply, _ = await asyncio.wait_for(query, 10)
        assert reply.error is None and not change.done()
        change.cancel()

    asyncio.run(scenario())


def test_a_change_not_answered_in_time_is_told_as_a_kafka_user_reads_it(backend_and_router):
    # A router that takes the change and answers nothing (its shard is stopped)
    backend, _ = backend_and_router

    async def scenario():
        reply, _ = await ask_change(backend, time.monotonic() + 0.3,
                                    protocol.encode_topic_request, "deleteTopic", "t")
        return reply.error

    error = asyncio.run(scenario())
    assert isinstance(error, PlinthTimeoutError)
    assert "the change was not answered within" in str(error)
    assert "inproc" not in str(error) and "router at" not in str(error)
