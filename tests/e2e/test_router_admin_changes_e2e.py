"""The router's admin bridge through a real ``plinth serve``: changes that wait for a
stopped shard (the controller makes one at a time) hold up no query, no metadata
request and no new producer (router/admin_bridge.py's change threads), and one
queued past its client's timeout is not made."""

from __future__ import annotations

import concurrent.futures
import os
import signal

import pytest

from plinth import Admin, Producer, limits
from plinth.control.controller_handle import ControllerHandle
from plinth.errors import PlinthTimeoutError, UnknownTopicError
from plinth.server import namespace_for
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until

# More changes than the router has query threads: before the change threads, they
# took every one of them.
CHANGES = limits.ROUTER_ADMIN_THREADS + 1


def topic_on(admin: Admin, controller: ControllerHandle, shard: str, wanted: bool) -> str:
    """A new 1-partition topic whose partition is (``wanted``) or is not on ``shard``."""
    for _ in range(32):   # placement spreads names over the shards: a few tries suffice
        name = unique_topic("placed")
        admin.create_topic(name, 1)
        if (controller.routing().owners[name][0] == shard) == wanted:
            return name
    raise AssertionError(f"no topic placed {'on' if wanted else 'off'} {shard} in 32 tries")


def broker_with_topics_on(broker_factory, shards: tuple[str, ...]):
    """(a broker of two shards, a new 1-partition topic on each of ``shards``, the pid
    of shard-0's process)."""
    broker = broker_factory(shards=2)
    controller = ControllerHandle.find(namespace_for(broker.data_dir, None))
    with Admin(broker=broker.url) as admin:
        names = [topic_on(admin, controller, shard, True) for shard in shards]
    return broker, names, wait_until(lambda: shard_pids(broker.data_dir).get("shard-0"),
                                     timeout_s=60)


def test_queries_and_a_new_producer_are_answered_while_changes_wait_for_a_stopped_shard(
        broker_factory):
    # Given a topic on shard-0, and another topic on shard-1
    broker, (stalled, other), pid = broker_with_topics_on(broker_factory, ("shard-0", "shard-1"))
    # (Each change from its own client, as the tester's were: a client's own requests
    # are answered in order, so one client's changes would hold only its own.)
    altering = [Admin(broker=broker.url, request_timeout_ms=180_000) for _ in range(CHANGES)]
    pool = concurrent.futures.ThreadPoolExecutor(CHANGES)
    os.kill(pid, signal.SIGSTOP)
    try:
        # When shard-0 stops and more changes than the router's query threads wait for it
        changes = [pool.submit(a.alter_topic, stalled, {"retention.ms": str(3_600_000 + i)})
                   for i, a in enumerate(altering)]
        # Then topics are listed, the other topic described, and a new producer's first
        # send to it delivered, each within a few seconds
        with Admin(broker=broker.url, request_timeout_ms=10_000) as admin:
            assert {stalled, other} <= set(admin.list_topics())
            assert admin.describe_topic(other).partition_info[0].shard == "shard-1"
        with Producer(broker=broker.url, request_timeout_ms=10_000, max_block_ms=10_000,
                      delivery_timeout_ms=15_000) as producer:
            producer.send(other, b"while changes wait").get(timeout=15)
        # while the changes still wait for the stopped shard
        assert not any(change.done() for change in changes), \
            "a change did not wait for the stopped shard"
    finally:
        os.kill(pid, signal.SIGCONT)
    # And once it runs again, every change is made
    for change in changes:
        change.result(timeout=180)
    pool.shutdown()
    for a in altering:
        a.close()


def test_a_change_queued_past_its_clients_timeout_behind_a_stopped_shard_is_never_made(
        broker_factory):
    # Given a topic on shard-0, and a client that waits 2 s for each answer
    broker, (stalled,), pid = broker_with_topics_on(broker_factory, ("shard-0",))
    late = unique_topic("late")
    with Admin(broker=broker.url, request_timeout_ms=2_000) as impatient:
        os.kill(pid, signal.SIGSTOP)
        try:
            # When its alter waits for shard-0, stopped, and times out
            with pytest.raises(PlinthTimeoutError):
                impatient.alter_topic(stalled, {"retention.ms": "7200000"})
            # And its create, queued in the router behind the alter, times out too
            with pytest.raises(PlinthTimeoutError):
                impatient.create_topic(late, 1)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Then once shard-0 runs again and the alter is made (a client's changes are
        # answered in order, so a change it sends now is made after both)
        impatient.request_timeout_ms = 120_000
        wait_until(lambda: impatient.describe_topic(stalled).config.get("retention.ms")
                   == "7200000", timeout_s=60)
        impatient.create_topic(unique_topic("after"), 1)
        # the create its client gave up on was never made
        with pytest.raises(UnknownTopicError):
            impatient.describe_topic(late)
