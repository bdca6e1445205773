"""A real broker's shard actors run at the data path's niceness, not at Ray's.

Ray starts its worker processes at niceness 15; a shard actor brings its
threads down to limits.DATA_PATH_NICENESS as it starts (plinth/process_tuning.py).
The shard processes are found by the lock each holds in its directory under the
broker's data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plinth import Admin, Producer, limits
from tests.process_tuning_support import may_lower_niceness
from tests.support import unique_topic


def shard_pids(data_dir: Path) -> set[int]:
    """Processes holding a file open under ``data_dir/shards``: the broker's shard actors."""
    shards_dir = str(data_dir.resolve() / "shards")
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(shards_dir):
                    pids.add(int(pid))
                    break
            except OSError:
                continue
    return pids


def niceness_of_threads(pid: int) -> dict[str, int]:
    """Every thread's name and niceness (field 19 of its stat line)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        out[f"{name}/{tid}"] = int(stat[stat.rindex(")") + 2:].split()[16])
    return out


@pytest.mark.skipif(not may_lower_niceness(), reason="needs CAP_SYS_NICE or RLIMIT_NICE >= 20")
def test_every_thread_of_a_shard_actor_runs_at_the_data_path_niceness(broker_factory):
    # Given a broker in a Ray cluster, whose workers Ray starts at niceness 15
    broker = broker_factory(shards=2)
    topic = unique_topic("nice")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 2)
    with Producer(broker=broker.url, linger_ms=0) as producer:
        producer.send(topic, b"x").get(timeout=30)   # the shards' loops and fsync threads ran
    # When we look at its shard processes
    pids = shard_pids(broker.data_dir)
    assert len(pids) == 2, f"expected the 2 shard processes under {broker.data_dir}, found {pids}"
    # Then none of their threads runs above the data path's niceness
    above = {pid: {name: nice for name, nice in niceness_of_threads(pid).items()
                   if nice > limits.DATA_PATH_NICENESS} for pid in pids}
    assert above == {pid: {} for pid in pids}


def oom_score_adj_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_a_shard_goes_to_the_oom_killer_before_the_router_unless_the_router_holds_the_memory(
        broker_factory):
    # Given a running broker: its plinth serve process (the router) and its shard actors
    broker = broker_factory(shards=2)
    pids = shard_pids(broker.data_dir)
    assert len(pids) == 2, f"expected the 2 shard processes under {broker.data_dir}, found {pids}"
    # Then the shards have the OOM score Ray gives its workers, and the router half of it
    # above Ray's daemons' 0: under a memory limit a shard (restarted within a second) is
    # killed first, unless the router holds half the limit more (its death ends the
    # broker; tester T-ext saw a 196 MB router killed as the largest, at 1000)
    assert oom_score_adj_of(broker.proc.pid) == limits.ROUTER_OOM_SCORE_ADJ
    assert {oom_score_adj_of(pid) for pid in pids} == {limits.DATA_PATH_OOM_SCORE_ADJ}
