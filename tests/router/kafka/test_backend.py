"""router/kafka/backend.py against a real ROUTER socket on loopback that has stopped
reading (a hung router): a call's timeout covers its send, so a Kafka request is
answered REQUEST_TIMED_OUT instead of held for good."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from plinth import protocol
from plinth.errors import PlinthTimeoutError
from plinth.router.kafka.backend import PlinthBackend

FILL_MAX = 100_000   # acks-0 sends tried before the queue to the router must be full


@pytest.mark.timeout(120)
def test_a_call_to_a_router_that_stopped_reading_times_out_instead_of_waiting_to_send():
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.setsockopt(zmq.RCVHWM, 1)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    backend = PlinthBackend(f"tcp://127.0.0.1:{port}")

    async def scenario():
        # Given a queue to the router filled by acks-0 produces (they take no slot)
        payload = b"x" * 65_536
        for request_id in range(1, FILL_MAX):
            try:
                await asyncio.wait_for(backend.send_only(
                    protocol.encode_list_offsets(request_id, "t", 0), payload), 0.5)
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
