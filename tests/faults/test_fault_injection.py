"""Fault injection: random SIGKILLs of shard actors and of the whole server while
producers write; afterwards every acknowledged record is present exactly once, in order.

Marked ``faults``; it runs in CI with the rest (``-m "not faults"`` skips it).
The seed comes from PLINTH_FAULT_SEED (default 1) so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import signal

import pytest
import ray

from plinth import Admin
from plinth.server import CONTROLLER_NAME, namespace_for
from tests.support import (NumberedWriter, check_exactly_once_in_order, read_all, unique_topic,
                           wait_until)

PARTITIONS = 4
FAULTS = 6


def shard_pids(broker) -> dict[str, int]:
    try:
        controller = ray.get_actor(CONTROLLER_NAME, namespace=namespace_for(broker.data_dir))
        return ray.get(controller.shard_pids.remote(), timeout=30)
    except (ray.exceptions.RayError, ValueError):   # between processes
        return {}


def kill_a_shard(broker, rng: random.Random) -> str:
    pids = wait_until(lambda: shard_pids(broker), timeout_s=60)
    shard_id = rng.choice(sorted(pids))
    os.kill(pids[shard_id], signal.SIGKILL)
    wait_until(lambda: shard_pids(broker).get(shard_id, pids[shard_id]) != pids[shard_id],
               timeout_s=60)
    return f"SIGKILL {shard_id} (pid {pids[shard_id]})"


def kill_the_server(broker) -> str:
    broker.kill()
    broker.restart()
    return "SIGKILL the server, restart it"


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_or_duplicated_under_random_kills(broker_factory):
    rng = random.Random(int(os.environ.get("PLINTH_FAULT_SEED", "1")))
    broker = broker_factory(shards=2)
    topic = unique_topic("faults")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    writer = NumberedWriter(broker.url, topic, PARTITIONS, chunk=100)
    injected = []
    for _ in range(FAULTS):
        writer.wait_for_more(rng.randrange(200, 2_000))   # a random moment
        fault = kill_the_server(broker) if rng.random() < 0.34 else kill_a_shard(broker, rng)
        injected.append(fault)
    writer.wait_for_more(1_000)
    writer.stop()
    records = read_all(broker.url, topic)
    acked = writer.acked
    check_exactly_once_in_order(records, acked, PARTITIONS)
    assert not writer.errors, writer.errors[:3]
    print(f"injected {len(injected)} faults: {'; '.join(injected)}")
    print(f"checked {len(acked)} acknowledged records, {len(records)} stored, none lost or duplicated")
