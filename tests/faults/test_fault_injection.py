"""Fault injection: random SIGKILLs of shard actors, of the whole server and of a
standalone ``plinth router`` while producers write through both routers;
afterwards every acknowledged record is present exactly once, in order.

Marked ``faults``; it runs in CI with the rest (``-m "not faults"`` skips it).
The seed comes from PLINTH_FAULT_SEED (default 1) so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter

import pytest

from plinth import Admin
from tests.shard_processes import shard_pids
from tests.support import (NumberedWriter, check_exactly_once_in_order, read_all, unique_topic,
                           wait_until)

PARTITIONS = 4
SHARDS = 2
FAULTS = 8
FAULT_KINDS = ("shard", "server", "router")


def kill_a_shard(broker, rng: random.Random) -> str:
    # Every shard, each in one process (none between processes after an earlier kill).
    pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == SHARDS and found,
                      timeout_s=60)
    shard_id = rng.choice(sorted(pids))
    os.kill(pids[shard_id], signal.SIGKILL)
    wait_until(lambda: shard_pids(broker.data_dir).get(shard_id, pids[shard_id])
               != pids[shard_id], timeout_s=60)
    return f"SIGKILL {shard_id} (pid {pids[shard_id]})"


def kill_the_server(broker) -> str:
    # The standalone router stays up: it finds the restarted server's controller
    # by name, and clients connected to it fail over to the other router meanwhile.
    broker.kill()
    broker.restart()
    return "SIGKILL the server, restart it"


def kill_the_router(router, writer, rng: random.Random) -> str:
    pid = router.proc.pid
    router.kill()
    # While it is down, records are acknowledged through the embedded router alone.
    writer.wait_for_more(rng.randrange(100, 1_000))
    router.restart()
    return f"SIGKILL the standalone router (pid {pid}), restart it"


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_or_duplicated_under_random_kills(broker_factory,
                                                                         router_factory):
    rng = random.Random(int(os.environ.get("PLINTH_FAULT_SEED", "1")))
    cluster_name = unique_topic("faults")
    broker = broker_factory(shards=SHARDS, extra_args=("--cluster-name", cluster_name))
    router = router_factory(cluster_name)
    routers = f"{broker.url},{router.url}"   # clients spread requests over both, and fail over
    topic = unique_topic("faults")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    writer = NumberedWriter(routers, topic, PARTITIONS, chunk=100)
    # Every kind at least once, whatever the seed; the rest at random.
    kinds = list(FAULT_KINDS) + [rng.choice(FAULT_KINDS) for _ in range(FAULTS - len(FAULT_KINDS))]
    rng.shuffle(kinds)
    injected = []
    for kind in kinds:
        writer.wait_for_more(rng.randrange(200, 2_000))   # a random moment
        if kind == "shard":
            injected.append(kill_a_shard(broker, rng))
        elif kind == "server":
            injected.append(kill_the_server(broker))
        else:
            injected.append(kill_the_router(router, writer, rng))
    writer.wait_for_more(1_000)
    writer.stop()
    records = read_all(routers, topic)
    acked = writer.acked
    check_exactly_once_in_order(records, acked, PARTITIONS)
    assert not writer.errors, writer.errors[:3]
    by_kind = ", ".join(f"{count} {kind}" for kind, count in sorted(Counter(kinds).items()))
    print(f"injected {len(injected)} faults ({by_kind}): {'; '.join(injected)}")
    print(f"checked {len(acked)} acknowledged records, {len(records)} stored, none lost or duplicated")
